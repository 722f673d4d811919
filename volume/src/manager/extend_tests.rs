//! Tests of the extend handler (and of a clone's create) against SQLite, the real
//! `file` driver and recording fakes of the scheduler and the notifier.

use std::sync::Arc;

use scoria_common::{
    db::{Db, WorkerEntry, WorkerKind},
    model::Volume,
    ops::VolumeOps,
};
use scoria_proto::bus::{CreateVolume, ExtendVolume};

use super::*;
use crate::testing::Recorder;
use crate::{
    driver::{FileDriver, VolumeDriver},
    manager::ManagerSettings,
};

const HOST: &str = "node1@file";

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    file: FileDriver,
    recorder: Arc<Recorder>,
    manager: VolumeManager,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("scoria.db").display()
    ))
    .await
    .expect("db");
    let file = FileDriver::new(dir.path().join("file"), Some(100)).expect("driver");
    let recorder = Recorder::following(&["volume."]);
    let settings = ManagerSettings {
        host: HOST.into(),
        backend: "file".into(),
        availability_zone: "az1".into(),
        reserved_percentage: 0,
        max_over_subscription_ratio: 1.0,
    };
    let manager = VolumeManager::new(
        db.clone(),
        Arc::new(file.clone()),
        recorder.scheduler.clone(),
        recorder.notifier.clone(),
        settings,
    );
    Fixture {
        _dir: dir,
        db,
        file,
        recorder,
        manager,
    }
}

/// A volume row of 1 GiB in `status` on `host`, with a worker entry of that host.
async fn insert(f: &Fixture, status: VolumeStatus, host: &str, source: Option<&str>) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib: 1,
        status,
        volume_type: "__DEFAULT__".into(),
        availability_zone: "az1".into(),
        host: Some(host.to_owned()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: source.map(str::to_owned),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: status.as_str().into(),
        service: host.into(),
        deadline_ms: now + 60_000,
    };
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

fn extend(volume: &Volume, new_size_gib: u64) -> ExtendVolume {
    ExtendVolume {
        volume_id: volume.id.clone(),
        new_size_gib,
        previous_status: "available".into(),
    }
}

fn ctx() -> RequestContext {
    RequestContext::internal("test")
}

async fn row(f: &Fixture, id: &str) -> Volume {
    f.db.get_volume(id).await.expect("db").expect("row")
}

#[tokio::test]
async fn extend_grows_the_object_and_settles_once() {
    let f = fixture().await;
    let volume = insert(&f, VolumeStatus::Extending, HOST, None).await;
    f.file.create_volume(&volume.id, 1).await.expect("object");

    f.manager
        .extend_volume(&ctx(), HOST, extend(&volume, 3))
        .await
        .expect("extend");
    let now = row(&f, &volume.id).await;
    assert_eq!(
        (now.status, now.size_gib, now.error_message.as_str()),
        (VolumeStatus::Available, 3, "")
    );
    assert!(
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("db")
            .is_none(),
        "the worker entry goes with the transient status"
    );
    let path = f.file.volume_path(&volume.id).expect("path");
    assert_eq!(std::fs::metadata(path).expect("object").len(), 3 << 30);
    assert_eq!(
        f.recorder.event_types(),
        ["volume.resize.start", "volume.resize.end"]
    );
    // The event's copy is the settled row: available with the new size.
    let events = f.recorder.announced();
    let settled = row(&f, &volume.id).await;
    assert_eq!(
        (settled.size_gib, events[1].status.as_str()),
        (3, VolumeStatus::Available.as_str())
    );

    // Redelivered: nothing more happens.
    f.manager
        .extend_volume(&ctx(), HOST, extend(&volume, 3))
        .await
        .expect("again");
    assert_eq!(f.recorder.event_types().len(), 2);
    assert_eq!(row(&f, &volume.id).await.size_gib, 3);
}

#[tokio::test]
async fn extend_ignores_casts_it_should_not_act_on() {
    let f = fixture().await;
    // Row gone.
    let gone = ExtendVolume {
        volume_id: uuid::Uuid::new_v4().to_string(),
        new_size_gib: 2,
        previous_status: "available".into(),
    };
    f.manager
        .extend_volume(&ctx(), HOST, gone)
        .await
        .expect("gone");
    // Not extending (and not a redelivery).
    let available = insert(&f, VolumeStatus::Available, HOST, None).await;
    f.manager
        .extend_volume(&ctx(), HOST, extend(&available, 2))
        .await
        .expect("available");
    assert_eq!(row(&f, &available.id).await.size_gib, 1);
    // Another backend's volume.
    let foreign = insert(&f, VolumeStatus::Extending, "node2@file", None).await;
    f.manager
        .extend_volume(&ctx(), HOST, extend(&foreign, 2))
        .await
        .expect("foreign");
    assert_eq!(row(&f, &foreign.id).await.status, VolumeStatus::Extending);
    assert!(f.recorder.event_types().is_empty());
}

#[tokio::test]
async fn a_failed_extend_is_error_extending_with_the_reason() {
    let f = fixture().await;
    // No backend object: the driver cannot grow it.
    let volume = insert(&f, VolumeStatus::Extending, HOST, None).await;
    f.manager
        .extend_volume(&ctx(), HOST, extend(&volume, 2))
        .await
        .expect("handled");
    let now = row(&f, &volume.id).await;
    assert_eq!(
        (now.status, now.size_gib),
        (VolumeStatus::ErrorExtending, 1)
    );
    assert!(
        now.error_message.contains(&volume.id) && now.error_message.contains("2 GiB"),
        "{}",
        now.error_message
    );
    assert!(
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("db")
            .is_none()
    );
    assert_eq!(
        f.recorder.event_types(),
        ["volume.resize.start", "volume.resize.error"]
    );
}

#[tokio::test]
async fn a_clone_is_made_from_its_source_object() {
    let f = fixture().await;
    let source = insert(&f, VolumeStatus::Available, HOST, None).await;
    f.file.create_volume(&source.id, 1).await.expect("object");
    let path = f.file.volume_path(&source.id).expect("path");
    std::fs::write(&path, b"hello").expect("write");
    f.file.extend_volume(&source.id, 1).await.ok();

    let clone = insert(&f, VolumeStatus::Creating, HOST, Some(&source.id)).await;
    let request = CreateVolume {
        volume_id: clone.id.clone(),
        size_gib: 1,
        pool: format!("{HOST}#file"),
        attempt: 1,
        source_volume_id: source.id.clone(),
        ..Default::default()
    };
    f.manager
        .create_volume(&ctx(), HOST, request)
        .await
        .expect("create");
    assert_eq!(row(&f, &clone.id).await.status, VolumeStatus::Available);
    let copy = std::fs::read(f.file.volume_path(&clone.id).expect("path")).expect("clone object");
    assert_eq!(&copy[..5], b"hello", "the clone holds the source's bytes");
}

#[tokio::test]
async fn a_failed_clone_is_rescheduled_to_its_source_host_only() {
    let f = fixture().await;
    // The source has no backend object: the clone fails.
    let source = insert(&f, VolumeStatus::Available, HOST, None).await;
    let clone = insert(&f, VolumeStatus::Creating, HOST, Some(&source.id)).await;
    let request = CreateVolume {
        volume_id: clone.id.clone(),
        size_gib: 1,
        pool: format!("{HOST}#file"),
        attempt: 1,
        source_volume_id: source.id.clone(),
        ..Default::default()
    };
    f.manager
        .create_volume(&ctx(), HOST, request)
        .await
        .expect("handled");
    let scheduled = f.recorder.scheduler.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(
        (
            scheduled[0].required_host.as_str(),
            scheduled[0].source_volume_id.as_str(),
            scheduled[0].attempt
        ),
        (HOST, source.id.as_str(), 2)
    );
}

#[tokio::test]
async fn a_stale_smaller_extend_never_shrinks_a_larger_finished_one() {
    let f = fixture().await;
    let volume = insert(&f, VolumeStatus::Extending, HOST, None).await;
    f.file.create_volume(&volume.id, 1).await.expect("object");
    // The larger extend (to 3 GiB) finishes first...
    f.manager
        .extend_volume(&ctx(), HOST, extend(&volume, 3))
        .await
        .expect("extend to 3");
    // ... and the volume is being extended again when the stale cast (to 2 GiB,
    // asked for while the row still said 1) arrives.
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Available],
            VolumeStatus::Extending,
            None,
            None,
            None,
        )
        .await
        .expect("db")
    );
    f.manager
        .extend_volume(&ctx(), HOST, extend(&volume, 2))
        .await
        .expect("stale extend");
    let now = row(&f, &volume.id).await;
    assert_eq!(
        (now.size_gib, now.status),
        (3, VolumeStatus::Extending),
        "a stale extend neither shrinks nor fails the newer one"
    );
    let path = f.file.volume_path(&volume.id).expect("path");
    assert_eq!(std::fs::metadata(path).expect("object").len(), 3 << 30);
}
