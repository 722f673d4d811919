//! Defect 9 (scheduler side): a volume the scheduler cannot place is failed
//! through the settler, which announces `volume.create.error` with the reason;
//! and `get_pools` refuses a malformed host filter with its reason.

use super::*;

#[tokio::test]
async fn a_malformed_host_filter_is_refused_with_its_reason() {
    let f = fixture(&[], SchedulerSection::default()).await;
    let ctx = RequestContext::internal("test");
    for host in ["a", "a@file#pool", "@file", "a@", "a b@file"] {
        let err = f
            .manager
            .get_pools(&ctx, GetPools { host: host.into() })
            .await
            .expect_err(host);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{host}");
        assert_eq!(
            err.reason(),
            Some(scoria_common::status::Reason::InvalidField),
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_volume_that_cannot_be_placed_announces_create_error_with_the_reason() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 5.0)]);
    let id = f.creating_volume(10).await;
    f.schedule(request(&id, 10)).await;

    let announced = f.notifier.announced();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].event, Event::VolumeCreateError);
    assert_eq!(announced[0].id, id);
    assert_eq!(announced[0].status, "error");
    assert_eq!(
        announced[0].error_message,
        f.volume(&id).await.error_message
    );
    assert!(
        announced[0]
            .error_message
            .starts_with("No valid backend was found: 1 hosts known;"),
        "{}",
        announced[0].error_message
    );

    // Too many attempts: the same event, its own reason.
    let id = f.creating_volume(1).await;
    let mut r = request(&id, 1);
    r.attempt = 4;
    f.schedule(r).await;
    let last = f.notifier.announced().pop().expect("announced");
    assert_eq!(
        (last.event, last.id.as_str()),
        (Event::VolumeCreateError, id.as_str())
    );
    assert!(
        last.error_message
            .contains("maximum number of scheduling attempts"),
        "{}",
        last.error_message
    );
}

#[tokio::test]
async fn a_volume_no_longer_creating_is_not_announced() {
    let f = fixture(&[], SchedulerSection::default()).await;
    let id = f.creating_volume(1).await;
    f.db.transition_volume(
        &id,
        &[VolumeStatus::Creating],
        VolumeStatus::Deleting,
        None,
        None,
    )
    .await
    .expect("cas");
    f.schedule(request(&id, 1)).await;
    assert!(
        f.notifier.announced().is_empty(),
        "the CAS lost: nothing announced"
    );
}
