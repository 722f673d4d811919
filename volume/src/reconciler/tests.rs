//! Tests of the reconciler against SQLite, the real `file` driver in a temp dir
//! an idle scheduler and a recording notifier.

use std::time::Duration;

use scoria_common::{
    db::Db,
    model::{AttachmentStatus, Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms},
};

use super::*;
use crate::testing::Recorder;
use crate::{
    driver::{FileDriver, VolumeDriver},
    manager::{IdleScheduler, ManagerSettings, VolumeManager},
};

const HOST: &str = "node1@file";

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    file: FileDriver,
    recorder: Arc<Recorder>,
    manager: Arc<VolumeManager>,
    reconciler: Reconciler,
}

impl Fixture {
    fn events(&self) -> Vec<String> {
        self.recorder.event_types()
    }
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
    let recorder = Recorder::following(&[
        "volume.create.",
        "volume.delete.",
        "volume.resize.",
        "volume.manage_existing.",
        "snapshot.",
    ]);
    let settings = ManagerSettings {
        host: HOST.into(),
        backend: "file".into(),
        availability_zone: "az1".into(),
        reserved_percentage: 0,
        max_over_subscription_ratio: 1.0,
    };
    let manager = Arc::new(
        VolumeManager::new(
            db.clone(),
            Arc::new(file.clone()),
            Arc::new(IdleScheduler),
            recorder.notifier.clone(),
            settings,
        )
        .with_operation_deadline(Duration::from_secs(7)),
    );
    Fixture {
        _dir: dir,
        db,
        file,
        recorder,
        reconciler: Reconciler::new(manager.shared(), manager.clone()),
        manager,
    }
}

/// A 1 GiB volume in `status` whose worker entry is owned by `owner` and due at
/// `deadline_ms`.
async fn volume(f: &Fixture, status: VolumeStatus, owner: &str, deadline_ms: i64) -> Volume {
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
        host: Some(HOST.to_owned()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: status.as_str().into(),
        service: owner.into(),
        deadline_ms,
    };
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

/// A snapshot of a new available volume, in `status`, owned by this host and
/// overdue.
async fn snapshot(f: &Fixture, status: SnapshotStatus) -> Snapshot {
    let parent = volume(f, VolumeStatus::Available, HOST, i64::MAX).await;
    f.db.transition_volume_with_worker(
        &parent.id,
        &[VolumeStatus::Available],
        VolumeStatus::Available,
        None,
        None,
        None,
    )
    .await
    .expect("drop the parent's entry");
    f.file.create_volume(&parent.id, 1).await.expect("parent");
    let now = now_ms();
    let snapshot = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: parent.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib: 1,
        status,
        host: Some(HOST.into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: snapshot.id.clone(),
        status: status.as_str().into(),
        service: HOST.into(),
        deadline_ms: now - 1,
    };
    assert!(
        f.db.create_snapshot(&snapshot, &[VolumeStatus::Available], &worker)
            .await
            .expect("insert")
    );
    snapshot
}

async fn worker(f: &Fixture, kind: WorkerKind, id: &str) -> Option<WorkerEntry> {
    f.db.get_worker(kind, id).await.expect("worker")
}

#[tokio::test]
async fn an_overdue_create_fails_with_the_reason_and_leaves_no_object() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Creating, HOST, now_ms() - 1).await;
    // The process that was creating it died after the object was made.
    f.file.create_volume(&stuck.id, 1).await.expect("object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![stuck.id.clone()]);
    let now = f.db.get_volume(&stuck.id).await.expect("get").expect("row");
    assert_eq!(now.status, VolumeStatus::Error);
    assert!(
        now.error_message
            .contains("creation did not finish by its deadline"),
        "{}",
        now.error_message
    );
    assert!(now.error_message.contains(HOST), "{}", now.error_message);
    assert!(!f.file.volume_exists(&stuck.id).await.expect("exists"));
    assert_eq!(worker(&f, WorkerKind::Volume, &stuck.id).await, None);
    assert_eq!(f.events(), ["volume.create.error"]);
}

#[tokio::test]
async fn work_not_overdue_or_of_another_owner_is_left_alone() {
    let f = fixture().await;
    let due = volume(&f, VolumeStatus::Creating, HOST, now_ms() + 60_000).await;
    let elsewhere = volume(&f, VolumeStatus::Creating, "node2@file", now_ms() - 1).await;
    let scheduling = volume(&f, VolumeStatus::Creating, "scoria-scheduler", 0).await;

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report, ReconcileReport::default());
    for id in [&due.id, &elsewhere.id, &scheduling.id] {
        let now = f.db.get_volume(id).await.expect("get").expect("row");
        assert_eq!(now.status, VolumeStatus::Creating);
        assert!(worker(&f, WorkerKind::Volume, id).await.is_some());
    }
}

#[tokio::test]
async fn work_in_flight_is_left_alone_whatever_its_deadline() {
    let f = fixture().await;
    let busy = volume(&f, VolumeStatus::Creating, HOST, now_ms() - 1).await;
    let guard = f.manager.shared().in_flight.enter(&busy.id);

    let report = f.reconciler.run_once().await.expect("run");
    assert_eq!(report.skipped, vec![busy.id.clone()]);
    let now = f.db.get_volume(&busy.id).await.expect("get").expect("row");
    assert_eq!(now.status, VolumeStatus::Creating);

    drop(guard);
    let report = f.reconciler.run_once().await.expect("run");
    assert_eq!(report.failed, vec![busy.id.clone()]);
}

#[tokio::test]
async fn an_overdue_delete_is_run_again() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Deleting, HOST, now_ms() - 1).await;
    f.file.create_volume(&stuck.id, 1).await.expect("object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.redone, vec![stuck.id.clone()]);
    assert_eq!(f.db.get_volume(&stuck.id).await.expect("get"), None);
    assert!(!f.file.volume_exists(&stuck.id).await.expect("exists"));
    assert_eq!(worker(&f, WorkerKind::Volume, &stuck.id).await, None);
    assert_eq!(f.events(), ["volume.delete.start", "volume.delete.end"]);
}

#[tokio::test]
async fn an_overdue_extend_done_on_the_backend_is_recorded() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Extending, HOST, now_ms() - 1).await;
    f.file.create_volume(&stuck.id, 1).await.expect("object");
    // The extend ran; the process died before recording it.
    f.file.extend_volume(&stuck.id, 3).await.expect("extend");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.finished, vec![stuck.id.clone()]);
    let now = f.db.get_volume(&stuck.id).await.expect("get").expect("row");
    assert_eq!((now.status, now.size_gib), (VolumeStatus::Available, 3));
    assert_eq!(worker(&f, WorkerKind::Volume, &stuck.id).await, None);
    assert_eq!(f.events(), ["volume.resize.end"]);
}

#[tokio::test]
async fn an_overdue_extend_not_done_goes_to_error_extending() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Extending, HOST, now_ms() - 1).await;
    f.file.create_volume(&stuck.id, 1).await.expect("object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![stuck.id.clone()]);
    let now = f.db.get_volume(&stuck.id).await.expect("get").expect("row");
    assert_eq!(
        (now.status, now.size_gib),
        (VolumeStatus::ErrorExtending, 1)
    );
    assert!(
        now.error_message.contains("did not finish by its deadline"),
        "{}",
        now.error_message
    );
    assert!(f.file.volume_exists(&stuck.id).await.expect("exists"));
}

#[tokio::test]
async fn an_overdue_snapshot_create_fails_and_its_object_goes() {
    let f = fixture().await;
    let stuck = snapshot(&f, SnapshotStatus::Creating).await;
    f.file
        .create_snapshot(&stuck.id, &stuck.volume_id)
        .await
        .expect("object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![stuck.id.clone()]);
    let now =
        f.db.get_snapshot(&stuck.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(now.status, SnapshotStatus::Error);
    assert!(
        now.error_message
            .contains("creation did not finish by its deadline"),
        "{}",
        now.error_message
    );
    assert!(!f.file.snapshot_exists(&stuck.id).await.expect("exists"));
    assert_eq!(worker(&f, WorkerKind::Snapshot, &stuck.id).await, None);
    assert_eq!(f.events(), ["snapshot.create.error"]);
}

#[tokio::test]
async fn an_overdue_snapshot_delete_is_run_again() {
    let f = fixture().await;
    let stuck = snapshot(&f, SnapshotStatus::Deleting).await;
    f.file
        .create_snapshot(&stuck.id, &stuck.volume_id)
        .await
        .expect("object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.redone, vec![stuck.id.clone()]);
    assert_eq!(f.db.get_snapshot(&stuck.id).await.expect("get"), None);
    assert!(!f.file.snapshot_exists(&stuck.id).await.expect("exists"));
}

#[tokio::test]
async fn stale_entries_are_removed_and_a_gone_volumes_leftover_too() {
    let f = fixture().await;
    let settled = volume(&f, VolumeStatus::Creating, HOST, now_ms() - 1).await;
    f.file.create_volume(&settled.id, 1).await.expect("object");
    // Settled by someone who forgot the entry.
    f.db.transition_volume(
        &settled.id,
        &[VolumeStatus::Creating],
        VolumeStatus::Available,
        None,
        None,
    )
    .await
    .expect("settle");
    let gone = volume(&f, VolumeStatus::Creating, HOST, now_ms() - 1).await;
    f.file.create_volume(&gone.id, 1).await.expect("object");
    // The row went, its entry and object stayed (a crash between the steps).
    let entry = worker(&f, WorkerKind::Volume, &gone.id)
        .await
        .expect("entry");
    assert!(
        f.db.delete_volume_row(&gone.id)
            .await
            .expect("remove the row")
    );
    f.db.upsert_worker(&entry).await.expect("entry back");

    let mut report = f.reconciler.run_once().await.expect("run");
    report.stale.sort();
    let mut expected = vec![settled.id.clone(), gone.id.clone()];
    expected.sort();
    assert_eq!(report.stale, expected);

    let now =
        f.db.get_volume(&settled.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(now.status, VolumeStatus::Available);
    assert!(
        f.file.volume_exists(&settled.id).await.expect("exists"),
        "a live volume's object stays"
    );
    assert!(!f.file.volume_exists(&gone.id).await.expect("exists"));
    assert_eq!(worker(&f, WorkerKind::Volume, &settled.id).await, None);
    assert_eq!(worker(&f, WorkerKind::Volume, &gone.id).await, None);
}

#[tokio::test]
async fn a_claim_gives_the_work_this_services_deadline() {
    let f = fixture().await;
    let before = now_ms();
    let deleting = volume(&f, VolumeStatus::Deleting, "node0@file", before + 600_000).await;
    f.manager
        .claim(WorkerKind::Volume, &deleting.id, "deleting")
        .await
        .expect("claim");
    let entry = worker(&f, WorkerKind::Volume, &deleting.id)
        .await
        .expect("entry");
    assert_eq!(entry.service, HOST);
    assert!(
        entry.deadline_ms >= before + 7_000 && entry.deadline_ms <= now_ms() + 7_000,
        "the configured 7 s, not the API's 10 min: {}",
        entry.deadline_ms - before
    );
}

#[tokio::test]
async fn an_overdue_attach_without_an_export_is_settled_through_the_manager() {
    use scoria_common::model::{AttachMode, Attachment, Connector};
    let f = fixture().await;
    let target = volume(&f, VolumeStatus::Available, HOST, i64::MAX).await;
    f.db.transition_volume_with_worker(
        &target.id,
        &[VolumeStatus::Available],
        VolumeStatus::Available,
        None,
        None,
        None,
    )
    .await
    .expect("drop the volume's entry");
    let now = now_ms();
    let attachment = Attachment {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: target.id.clone(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        status: AttachmentStatus::Attaching,
        instance_id: "vm-1".into(),
        connector: Connector {
            host: "compute-1".into(),
            ..Default::default()
        },
        mode: AttachMode::ReadWrite,
        volume_host: HOST.into(),
        connection_info: None,
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        attached_at_ms: None,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Attachment,
        resource_id: attachment.id.clone(),
        status: "attaching".into(),
        service: HOST.into(),
        deadline_ms: now - 1,
    };
    f.db.reserve_attachment(&attachment, false, &entry)
        .await
        .expect("reserve");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![attachment.id.clone()]);
    let stored =
        f.db.get_attachment(&attachment.id)
            .await
            .expect("get")
            .expect("attachment");
    assert_eq!(stored.status, AttachmentStatus::ErrorAttaching);
    let volume =
        f.db.get_volume(&target.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(
        volume.status,
        VolumeStatus::Available,
        "the volume settles back"
    );
}

#[tokio::test]
async fn an_overdue_revert_is_done_again() {
    let f = fixture().await;
    let parent = volume(&f, VolumeStatus::Available, HOST, i64::MAX).await;
    f.db.transition_volume_with_worker(
        &parent.id,
        &[VolumeStatus::Available],
        VolumeStatus::Available,
        None,
        None,
        None,
    )
    .await
    .expect("drop the volume's entry");
    f.file.create_volume(&parent.id, 1).await.expect("volume");
    let now = now_ms();
    let snap = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: parent.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib: 1,
        status: SnapshotStatus::Creating,
        host: Some(HOST.into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = WorkerEntry::snapshot(
        &snap.id,
        SnapshotStatus::Creating,
        scoria_common::db::Owner::Service(HOST.into()),
        i64::MAX,
    );
    assert!(
        f.db.create_snapshot(&snap, &[VolumeStatus::Available], &entry)
            .await
            .expect("snapshot row")
    );
    f.db.transition_snapshot(
        &snap.id,
        &[SnapshotStatus::Creating],
        SnapshotStatus::Available,
        None,
        None,
    )
    .await
    .expect("available");
    f.db.remove_worker_entry(&entry)
        .await
        .expect("drop its entry");
    f.file
        .create_snapshot(&snap.id, &parent.id)
        .await
        .expect("snapshot object");
    // The API's intent is written; the cast was lost (or the service died).
    let overdue = WorkerEntry::volume(
        &parent.id,
        VolumeStatus::Reverting,
        scoria_common::db::Owner::Service(HOST.into()),
        now_ms() - 1,
    );
    let started =
        f.db.start_revert(&parent.id, &snap.id, &overdue)
            .await
            .expect("start");
    assert_eq!(started, scoria_common::db::RevertStart::Started);

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.redone, vec![parent.id.clone()]);
    let volume =
        f.db.get_volume(&parent.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(volume.status, VolumeStatus::Available);
    let snapshot =
        f.db.get_snapshot(&snap.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(snapshot.status, SnapshotStatus::Available);
    assert_eq!(worker(&f, WorkerKind::Volume, &parent.id).await, None);
}

#[tokio::test]
async fn an_overdue_adoption_done_on_the_backend_is_recorded() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Managing, HOST, now_ms() - 1).await;
    std::fs::write(f.file.dir().join("legacy"), vec![7u8; 4096]).expect("foreign object");
    // The rename ran; the process died before recording it.
    f.file
        .manage_existing(ObjectKind::Volume, &stuck.id, "legacy", 1)
        .await
        .expect("adopt");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.finished, vec![stuck.id.clone()]);
    let now = f.db.get_volume(&stuck.id).await.expect("get").expect("row");
    assert_eq!(now.status, VolumeStatus::Available);
    assert_eq!(worker(&f, WorkerKind::Volume, &stuck.id).await, None);
    assert_eq!(f.events(), ["volume.manage_existing.end"]);
}

#[tokio::test]
async fn an_overdue_adoption_not_done_fails_and_leaves_the_object_alone() {
    let f = fixture().await;
    let stuck = volume(&f, VolumeStatus::Managing, HOST, now_ms() - 1).await;
    let legacy = f.file.dir().join("legacy");
    std::fs::write(&legacy, vec![7u8; 4096]).expect("foreign object");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![stuck.id.clone()]);
    let now = f.db.get_volume(&stuck.id).await.expect("get").expect("row");
    assert_eq!(now.status, VolumeStatus::ErrorManaging);
    assert!(
        now.error_message.contains("keeps its name"),
        "{}",
        now.error_message
    );
    assert_eq!(std::fs::read(&legacy).expect("kept"), vec![7u8; 4096]);
    assert!(!f.file.volume_exists(&stuck.id).await.expect("exists"));
    assert_eq!(f.events(), ["volume.manage_existing.error"]);

    // Deletable, and deleting it removes the row only.
    assert!(VolumeStatus::DELETABLE.contains(&now.status));
}

#[tokio::test]
async fn an_overdue_snapshot_adoption_is_settled_either_way() {
    let f = fixture().await;
    let done = snapshot(&f, SnapshotStatus::Managing).await;
    let stuck = snapshot(&f, SnapshotStatus::Managing).await;
    std::fs::write(f.file.dir().join("snap-a"), vec![1u8; 4096]).expect("foreign object");
    std::fs::write(f.file.dir().join("snap-b"), vec![2u8; 4096]).expect("foreign object");
    f.file
        .manage_existing(ObjectKind::Snapshot, &done.id, "snap-a", 1)
        .await
        .expect("adopt");

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.finished, vec![done.id.clone()]);
    assert_eq!(report.failed, vec![stuck.id.clone()]);
    let status = |id: String| {
        let db = f.db.clone();
        async move {
            db.get_snapshot(&id)
                .await
                .expect("get")
                .expect("row")
                .status
        }
    };
    assert_eq!(status(done.id.clone()).await, SnapshotStatus::Available);
    assert_eq!(
        status(stuck.id.clone()).await,
        SnapshotStatus::ErrorManaging
    );
    assert!(f.file.dir().join("snap-b").exists(), "left as it was");
    assert_eq!(worker(&f, WorkerKind::Snapshot, &stuck.id).await, None);
}
