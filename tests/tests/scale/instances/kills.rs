//! SIGKILL of one scheduler and one API instance in the middle of a create
//! burst through both APIs: every create an API confirmed ends available or
//! error, none stuck, and none made twice. A create through the killed API that
//! fails to reach it is retried (same request id) through the other.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{APIS, Clients, Fleet, FleetOptions, SCHEDULERS};
use tonic::Code;

use super::{assert_settled, create, request_id};

const PROJECT: &str = "kills";
const CREATES: usize = 40;
/// Confirmed creates before the kills.
const KILL_AFTER: usize = 12;

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_scheduler_and_an_api_mid_burst_loses_nothing() {
    let mut fleet = Fleet::start(FleetOptions {
        env: vec![("SCORIA_REAPER_INTERVAL_SECS".into(), "1".into())],
        ..FleetOptions::default()
    })
    .await;
    let apis = [fleet.member(0, PROJECT), fleet.member(1, PROJECT)];
    let confirmed = Arc::new(AtomicUsize::new(0));
    let burst = {
        let confirmed = confirmed.clone();
        let apis = apis.clone();
        async move {
            stream::iter(0..CREATES)
                .map(|n| {
                    let apis = apis.clone();
                    let confirmed = confirmed.clone();
                    async move {
                        let id = create_failing_over(&apis, n % 2, &request_id("kill", n)).await;
                        confirmed.fetch_add(1, Ordering::SeqCst);
                        id
                    }
                })
                .buffer_unordered(6)
                .collect::<Vec<String>>()
                .await
        }
    };
    let kills = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while confirmed.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(Instant::now() < deadline, "the burst never got going");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fleet.stack.kill_service(SCHEDULERS[1]).await;
        fleet.stack.kill_service(APIS[1]).await;
        confirmed.load(Ordering::SeqCst)
    };
    let (ids, at_kill) = tokio::join!(burst, kills);
    assert!(
        at_kill < CREATES,
        "the kills came after the burst ({at_kill})"
    );
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), CREATES, "a confirmed id twice: {ids:?}");

    // A create whose API died after its row was committed but before its cast
    // was published (or whose retry through the other API found the row: an
    // idempotent replay does not cast again) waits for its scheduling deadline
    // (5 min), then a reaper schedules it once more. Those past the others'
    // settling are made overdue now, as that much time passing would.
    let waited = Instant::now() + Duration::from_secs(30);
    while Instant::now() < waited && !settled(&fleet).await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let advanced = sqlx::query("UPDATE workers SET deadline = 0 WHERE service = $1")
        .bind(scoria_common::db::SCHEDULER_OWNER)
        .execute(fleet.stack.db.pool())
        .await
        .expect("advance deadlines")
        .rows_affected();
    let volumes = assert_settled(&fleet).await;
    eprintln!("{advanced} creates were left to the reapers (their cast lost with the API)");
    assert_eq!(
        volumes.len(),
        CREATES,
        "one volume per request id, nothing made twice"
    );
    for v in &volumes {
        assert!(unique.contains(&v.id), "a volume nobody confirmed: {v:?}");
    }
    let available = volumes
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
        .count();
    let errors: Vec<&str> = volumes
        .iter()
        .filter(|v| v.status == VolumeStatus::Error)
        .map(|v| v.error_message.as_str())
        .collect();
    eprintln!("killed after {at_kill} confirmed: {available} available, errors {errors:?}");
    // The survivors keep serving: one more create through the surviving API.
    let after = create(&apis[0], 1, &request_id("after", 0))
        .await
        .expect("create after");
    super::wait_status(
        &fleet,
        &apis[0],
        &after.id,
        scoria_proto::v1::VolumeStatus::Available,
    )
    .await;
}

/// Creates through `apis[first]`; when that API cannot be reached
/// (UNAVAILABLE, a cut connection), again through the other with the same
/// request id, until one confirms. Returns the id.
async fn create_failing_over(apis: &[Clients; 2], first: usize, request_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut which = first;
    loop {
        match create(&apis[which], 1, request_id).await {
            Ok(v) => return v.id,
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) && Instant::now() < deadline =>
            {
                which = 1 - which;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("create {request_id}: {s:?}"),
        }
    }
}

/// Whether no volume of the fleet is in a transient status.
async fn settled(fleet: &Fleet) -> bool {
    super::rows(fleet)
        .await
        .iter()
        .all(|v| matches!(v.status, VolumeStatus::Available | VolumeStatus::Error))
}
