//! Tests of [`super`]: bad fields named with nothing written, the key shown
//! once and checked, who sees and accepts what, notifications and the sweep.

use std::time::Duration;

use scoria_common::{
    db::{Owner, WorkerEntry},
    events::Event,
    model::Volume,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::{
    auth::authorize,
    test_support::{Harness, ctx, request},
};

fn api(h: &Harness) -> TransferApi {
    TransferApi::new(
        h.db.db().clone(),
        h.notifier.clone(),
        Duration::from_secs(3600),
    )
}

fn field_of(status: &Status) -> String {
    status
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations[0]
        .field
        .clone()
}

fn reason_of(status: &Status) -> String {
    status.get_details_error_info().expect("error info").reason
}

/// A volume of `project` in `status`.
async fn volume(h: &Harness, project: &str, status: VolumeStatus) -> Volume {
    let now = now_ms();
    let volume = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib: 2,
        status,
        volume_type: String::new(),
        availability_zone: "az1".into(),
        host: Some("n1@file".into()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
        migration_status: Default::default(),
        migration_error: String::new(),
    };
    let worker = WorkerEntry::volume(&volume.id, status, Owner::Scheduler, now + 60_000);
    h.db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

async fn status_of(h: &Harness, id: &str) -> VolumeStatus {
    h.db.get_volume(id)
        .await
        .expect("get")
        .expect("volume")
        .status
}

async fn offer(api: &TransferApi, project: &str, volume: &Volume) -> pb::CreateTransferResponse {
    api.create_transfer(request(
        &ctx(project, &["member"]),
        pb::CreateTransferRequest {
            volume_id: volume.id.clone(),
            name: "gift".into(),
            no_snapshots: false,
        },
    ))
    .await
    .expect("offer")
    .into_inner()
}

#[tokio::test]
async fn bad_fields_are_named_and_nothing_is_written() {
    let h = Harness::new().await;
    let api = api(&h);
    let v = volume(&h, "p1", VolumeStatus::Available).await;
    let member = ctx("p1", &["member"]);
    let creates = [
        ("volume_id", "not-a-uuid".to_owned(), "x".to_owned()),
        ("name", v.id.clone(), "bad\u{1}name".to_owned()),
        ("name", v.id.clone(), "n".repeat(256)),
    ];
    for (field, volume_id, name) in creates {
        let err = api
            .create_transfer(request(
                &member,
                pb::CreateTransferRequest {
                    volume_id,
                    name,
                    no_snapshots: false,
                },
            ))
            .await
            .expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(field_of(&err), field);
    }
    assert_eq!(status_of(&h, &v.id).await, VolumeStatus::Available);

    let made = offer(&api, "p1", &v).await;
    let id = made.transfer.expect("transfer").id;
    let accepts = [
        ("id", "nope".to_owned(), made.auth_key.clone()),
        ("auth_key", id.clone(), String::new()),
        ("auth_key", id.clone(), "k".repeat(300)),
    ];
    for (field, id, auth_key) in accepts {
        let err = api
            .accept_transfer(request(
                &ctx("p2", &["member"]),
                pb::AcceptTransferRequest { id, auth_key },
            ))
            .await
            .expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(field_of(&err), field);
    }
    let kept = h.db.get_transfer(&id).await.expect("get").expect("kept");
    assert_eq!(
        kept.failed_attempts, 0,
        "a refused request counts no attempt"
    );
    for (field, req) in [
        (
            "page_size",
            pb::ListTransfersRequest {
                page_size: -1,
                ..Default::default()
            },
        ),
        (
            "volume_id",
            pb::ListTransfersRequest {
                volume_id: "x".into(),
                ..Default::default()
            },
        ),
        (
            "page_token",
            pb::ListTransfersRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
        ),
    ] {
        let err = api
            .list_transfers(request(&member, req))
            .await
            .expect_err(field);
        assert_eq!(field_of(&err), field);
    }
}

#[tokio::test]
async fn the_key_is_shown_once_checked_and_a_wrong_one_counted() {
    let h = Harness::new().await;
    let api = api(&h);
    let v = volume(&h, "p1", VolumeStatus::Available).await;
    let made = offer(&api, "p1", &v).await;
    let transfer = made.transfer.expect("transfer");
    assert_eq!(made.auth_key.len(), 32);
    assert_eq!(transfer.source_project_id, "p1");
    assert!(!transfer.accepted);
    assert_eq!(status_of(&h, &v.id).await, VolumeStatus::AwaitingTransfer);
    let stored =
        h.db.get_transfer(&transfer.id)
            .await
            .expect("get")
            .expect("row");
    assert!(!stored.key_hash.contains(&made.auth_key));
    assert!(!stored.salt.contains(&made.auth_key));

    let receiver = ctx("p2", &["member"]);
    let before = crate::metrics::transfer_key_rejections().get();
    let err = api
        .accept_transfer(request(
            &receiver,
            pb::AcceptTransferRequest {
                id: transfer.id.clone(),
                auth_key: "0".repeat(32),
            },
        ))
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(crate::metrics::transfer_key_rejections().get() > before);
    let stored =
        h.db.get_transfer(&transfer.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(stored.failed_attempts, 1);
    assert_eq!(
        h.db.get_volume(&v.id)
            .await
            .expect("get")
            .expect("v")
            .project_id,
        "p1"
    );

    // The giver's own project cannot take it back so.
    let err = api
        .accept_transfer(request(
            &ctx("p1", &["member"]),
            pb::AcceptTransferRequest {
                id: transfer.id.clone(),
                auth_key: made.auth_key.clone(),
            },
        ))
        .await
        .expect_err("own project");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let accepted = api
        .accept_transfer(request(
            &receiver,
            pb::AcceptTransferRequest {
                id: transfer.id.clone(),
                auth_key: made.auth_key.clone(),
            },
        ))
        .await
        .expect("accept")
        .into_inner();
    assert!(accepted.accepted);
    assert_eq!(accepted.destination_project_id, "p2");
    let moved = h.db.get_volume(&v.id).await.expect("get").expect("v");
    assert_eq!(
        (moved.project_id.as_str(), moved.status),
        ("p2", VolumeStatus::Available)
    );
    // Accepted once.
    let err = api
        .accept_transfer(request(
            &receiver,
            pb::AcceptTransferRequest {
                id: transfer.id.clone(),
                auth_key: made.auth_key,
            },
        ))
        .await
        .expect_err("again");
    assert_eq!(err.code(), Code::NotFound);
    let events: Vec<Event> = h.notifier.announced().iter().map(|a| a.event).collect();
    for event in [
        Event::TransferCreateStart,
        Event::TransferCreateEnd,
        Event::TransferAcceptError,
        Event::TransferAcceptEnd,
    ] {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
}

#[tokio::test]
async fn only_available_volumes_are_offered_and_offers_are_the_givers() {
    let h = Harness::new().await;
    let api = api(&h);
    let attached = volume(&h, "p1", VolumeStatus::InUse).await;
    let err = api
        .create_transfer(request(
            &ctx("p1", &["member"]),
            pb::CreateTransferRequest {
                volume_id: attached.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&err), "VOLUME_IN_USE");
    // Another project's volume is not found.
    let theirs = volume(&h, "p3", VolumeStatus::Available).await;
    let err = api
        .create_transfer(request(
            &ctx("p1", &["member"]),
            pb::CreateTransferRequest {
                volume_id: theirs.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), Code::NotFound);

    let v = volume(&h, "p1", VolumeStatus::Available).await;
    let made = offer(&api, "p1", &v).await;
    let id = made.transfer.expect("transfer").id;
    // An offered volume is not offered twice.
    let err = api
        .create_transfer(request(
            &ctx("p1", &["member"]),
            pb::CreateTransferRequest {
                volume_id: v.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("twice");
    assert_eq!(reason_of(&err), "WRONG_STATUS");
    // The receiver does not see the offer; the giver does.
    let err = api
        .get_transfer(request(
            &ctx("p2", &["member"]),
            pb::GetTransferRequest { id: id.clone() },
        ))
        .await
        .expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
    let listed = api
        .list_transfers(request(
            &ctx("p1", &["reader"]),
            pb::ListTransfersRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.transfers.len(), 1);
    let deleted = api
        .delete_transfer(request(
            &ctx("p1", &["member"]),
            pb::DeleteTransferRequest { id: id.clone() },
        ))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.id, id);
    assert_eq!(status_of(&h, &v.id).await, VolumeStatus::Available);
}

#[tokio::test]
async fn the_sweep_ends_lapsed_offers() {
    let h = Harness::new().await;
    let api = TransferApi::new(
        h.db.db().clone(),
        h.notifier.clone(),
        Duration::from_millis(200),
    );
    let v = volume(&h, "p1", VolumeStatus::Available).await;
    let made = offer(&api, "p1", &v).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sweep = tokio::spawn(sweep_expired(
        h.db.db().clone(),
        h.notifier.clone(),
        Duration::from_millis(100),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status_of(&h, &v.id).await != VolumeStatus::Available {
        assert!(tokio::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    sweep.await.expect("sweep task");
    let id = made.transfer.expect("transfer").id;
    assert!(h.db.get_transfer(&id).await.expect("get").is_none());
}

#[test]
fn the_policy_lets_members_offer_and_accept_and_readers_read() {
    let member = ctx("p1", &["member"]);
    let reader = ctx("p1", &["reader"]);
    for method in ["CreateTransfer", "AcceptTransfer", "DeleteTransfer"] {
        let path = format!("/scoria.v1.TransferService/{method}");
        authorize(&member, &path).expect(method);
        assert!(authorize(&reader, &path).is_err(), "{method}");
    }
    for method in ["GetTransfer", "ListTransfers"] {
        let path = format!("/scoria.v1.TransferService/{method}");
        authorize(&reader, &path).expect(method);
    }
}
