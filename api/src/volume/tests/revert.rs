//! RevertVolumeToSnapshot: bad fields named with nothing written, Cinder's
//! rules (newest snapshot, same size, not attached), the cast to the volume's
//! host, and both rows put back when the cast cannot be sent.

use scoria_common::{
    db::{Owner, WorkerEntry},
    model::{Snapshot, SnapshotStatus},
};
use tonic_types::StatusExt;

use super::*;

async fn volume_row(f: &Fixture, status: VolumeStatus, size_gib: u64) -> Volume {
    let now = now_ms();
    let v = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib,
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
    let w = WorkerEntry::volume(&v.id, status, Owner::Scheduler, now + 60_000);
    f.db.create_volume(&v, None, &w).await.expect("insert");
    v
}

async fn snapshot_row(f: &Fixture, v: &Volume, size_gib: u64) -> Snapshot {
    let now = now_ms();
    let s = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: v.project_id.clone(),
        user_id: "u1".into(),
        volume_id: v.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib,
        status: SnapshotStatus::Creating,
        host: v.host.clone(),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let w = WorkerEntry::snapshot(
        &s.id,
        SnapshotStatus::Creating,
        Owner::Service("n1@file".into()),
        now + 60_000,
    );
    assert!(
        f.db.create_snapshot(&s, &[v.status], &w)
            .await
            .expect("snapshot")
    );
    assert!(
        f.db.transition_snapshot(
            &s.id,
            &[SnapshotStatus::Creating],
            SnapshotStatus::Available,
            None,
            None
        )
        .await
        .expect("available")
    );
    s
}

async fn revert(f: &Fixture, id: &str, snapshot_id: &str) -> Result<pb::Volume, Status> {
    f.api
        .revert_volume_to_snapshot(request(
            &member("p1"),
            pb::RevertVolumeToSnapshotRequest {
                id: id.to_owned(),
                snapshot_id: snapshot_id.to_owned(),
            },
        ))
        .await
        .map(Response::into_inner)
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

fn reverts(f: &Fixture) -> usize {
    f.h.volumes
        .calls()
        .iter()
        .filter(|c| matches!(c, VolumeCall::Revert(..)))
        .count()
}

async fn statuses(f: &Fixture, v: &str, s: &str) -> (VolumeStatus, SnapshotStatus) {
    let volume = f.db.get_volume(v).await.expect("get").expect("volume");
    let snap = f.db.get_snapshot(s).await.expect("get").expect("snapshot");
    (volume.status, snap.status)
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field_and_write_nothing() {
    let f = fixture().await;
    let v = volume_row(&f, VolumeStatus::Available, 1).await;
    let s = snapshot_row(&f, &v, 1).await;
    let other = volume_row(&f, VolumeStatus::Available, 1).await;
    let theirs = snapshot_row(&f, &other, 1).await;
    for (field, id, snap) in [
        ("id", "x".to_owned(), s.id.clone()),
        ("snapshot_id", v.id.clone(), "y".to_owned()),
        ("snapshot_id", v.id.clone(), theirs.id.clone()),
    ] {
        let err = revert(&f, &id, &snap).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(field_of(&err), field);
    }
    // An unknown snapshot is NOT_FOUND naming the field.
    let err = revert(&f, &v.id, &uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("snapshot_id"), "{err:?}");
    assert_eq!(
        statuses(&f, &v.id, &s.id).await,
        (VolumeStatus::Available, SnapshotStatus::Available)
    );
    assert_eq!(reverts(&f), 0);
}

#[tokio::test]
async fn only_the_newest_snapshot_of_the_same_size_of_a_detached_volume() {
    let f = fixture().await;
    let attached = volume_row(&f, VolumeStatus::InUse, 1).await;
    let s = snapshot_row(&f, &attached, 1).await;
    let err = revert(&f, &attached.id, &s.id).await.expect_err("in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&err), "VOLUME_IN_USE");

    let v = volume_row(&f, VolumeStatus::Available, 1).await;
    let old = snapshot_row(&f, &v, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newest = snapshot_row(&f, &v, 1).await;
    let err = revert(&f, &v.id, &old.id).await.expect_err("not newest");
    assert_eq!(reason_of(&err), "WRONG_STATUS");
    assert!(err.message().contains(&newest.id), "{err:?}");

    let grown = volume_row(&f, VolumeStatus::Available, 2).await;
    let small = snapshot_row(&f, &grown, 1).await;
    let err = revert(&f, &grown.id, &small.id).await.expect_err("sizes");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reverts(&f), 0);

    let reverting = revert(&f, &v.id, &newest.id).await.expect("revert");
    assert_eq!(reverting.status(), pb::VolumeStatus::Reverting);
    assert_eq!(
        statuses(&f, &v.id, &newest.id).await,
        (VolumeStatus::Reverting, SnapshotStatus::Restoring)
    );
    let calls = f.h.volumes.calls();
    let sent = calls.iter().find_map(|c| match c {
        VolumeCall::Revert(host, r) => Some((host.clone(), r.clone())),
        _ => None,
    });
    let (host, r) = sent.expect("a revert cast");
    assert_eq!(host, "n1@file");
    assert_eq!(
        (r.volume_id, r.snapshot_id),
        (v.id.clone(), newest.id.clone())
    );
    let worker =
        f.db.get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("get")
            .expect("worker entry");
    assert_eq!(
        (worker.status.as_str(), worker.service.as_str()),
        ("reverting", "n1@file")
    );
    // A second revert while reverting is refused.
    let err = revert(&f, &v.id, &newest.id).await.expect_err("twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_cast_that_cannot_be_sent_puts_both_back() {
    let f = fixture().await;
    let v = volume_row(&f, VolumeStatus::Available, 1).await;
    let s = snapshot_row(&f, &v, 1).await;
    f.fail_casts(true);
    let err = revert(&f, &v.id, &s.id).await.expect_err("not sent");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        statuses(&f, &v.id, &s.id).await,
        (VolumeStatus::Available, SnapshotStatus::Available)
    );
}
