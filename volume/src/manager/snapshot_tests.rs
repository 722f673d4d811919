//! Tests of the snapshot handlers (and create-volume-from-snapshot) against a
//! SQLite database, an in-memory driver that records what it is asked, and a
//! recording notifier.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use scoria_common::{
    db::{Db, WorkerEntry, WorkerKind},
    model::{Volume, VolumeStatus, now_ms},
    ops::VolumeOps,
};
use scoria_proto::bus::CreateVolume;

use scoria_common::{
    events::Event,
    model::{Snapshot, SnapshotStatus},
    rpc::Priority,
};
use scoria_proto::bus::{CreateSnapshot, DeleteSnapshot};

use super::*;
use crate::testing::Recorder;
use crate::{
    driver::{BackendStats, DriverError, DriverResult, VolumeDriver},
    manager::ManagerSettings,
};

const HOST: &str = "node1@file";

/// Backend objects by name (`volume-<id>`, `snapshot-<id>`), and every call made.
#[derive(Default)]
struct MemDriver {
    objects: Mutex<BTreeSet<String>>,
    calls: Mutex<Vec<String>>,
    fail: AtomicBool,
}

impl MemDriver {
    fn op(&self, call: String, add: Option<String>, remove: Option<String>) -> DriverResult<()> {
        self.calls.lock().expect("lock").push(call);
        if self.fail.load(Ordering::SeqCst) {
            return Err(DriverError::Task("disk on fire".into()));
        }
        let mut objects = self.objects.lock().expect("lock");
        if let Some(name) = add {
            objects.insert(name);
        }
        if let Some(name) = remove {
            objects.remove(&name);
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.objects.lock().expect("lock").contains(name)
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl VolumeDriver for MemDriver {
    fn name(&self) -> &'static str {
        "mem"
    }
    async fn create_volume(&self, id: &str, _size_gib: u64) -> DriverResult<()> {
        self.op(
            format!("create_volume {id}"),
            Some(format!("volume-{id}")),
            None,
        )
    }
    async fn delete_volume(&self, id: &str) -> DriverResult<()> {
        self.op(
            format!("delete_volume {id}"),
            None,
            Some(format!("volume-{id}")),
        )
    }
    async fn volume_exists(&self, id: &str) -> DriverResult<bool> {
        Ok(self.has(&format!("volume-{id}")))
    }
    async fn stats(&self) -> DriverResult<BackendStats> {
        // Room for every volume of these tests (a create checks it).
        Ok(BackendStats {
            total_gib: 100.0,
            free_gib: 100.0,
            allocated_gib: 0.0,
        })
    }
    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> DriverResult<()> {
        self.op(
            format!("create_snapshot {snapshot_id} {volume_id}"),
            Some(format!("snapshot-{snapshot_id}")),
            None,
        )
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> DriverResult<()> {
        self.op(
            format!("delete_snapshot {snapshot_id}"),
            None,
            Some(format!("snapshot-{snapshot_id}")),
        )
    }
    async fn snapshot_exists(&self, snapshot_id: &str) -> DriverResult<bool> {
        Ok(self.has(&format!("snapshot-{snapshot_id}")))
    }
    async fn create_volume_from_snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        size_gib: u64,
    ) -> DriverResult<()> {
        self.op(
            format!("create_volume_from_snapshot {volume_id} {snapshot_id} {size_gib}"),
            Some(format!("volume-{volume_id}")),
            None,
        )
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    driver: Arc<MemDriver>,
    recorder: Arc<Recorder>,
    manager: VolumeManager,
    ctx: RequestContext,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("scoria.db").display()
    ))
    .await
    .expect("db");
    let driver = Arc::new(MemDriver::default());
    let recorder = Recorder::following(&["snapshot."]);
    let settings = ManagerSettings {
        host: HOST.into(),
        backend: "file".into(),
        availability_zone: "az1".into(),
        reserved_percentage: 5,
        max_over_subscription_ratio: 1.0,
    };
    let manager = VolumeManager::new(
        db.clone(),
        driver.clone(),
        recorder.scheduler.clone(),
        recorder.notifier.clone(),
        settings,
    );
    Fixture {
        _dir: dir,
        db,
        driver,
        recorder,
        manager,
        ctx: RequestContext::internal("test"),
    }
}

fn worker(kind: WorkerKind, id: &str, status: &str) -> WorkerEntry {
    WorkerEntry {
        kind,
        resource_id: id.to_owned(),
        status: status.to_owned(),
        service: HOST.into(),
        deadline_ms: now_ms() + 60_000,
    }
}

async fn volume(db: &Db, status: VolumeStatus, snapshot_id: Option<&str>) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib: 2,
        status,
        volume_type: String::new(),
        availability_zone: "az1".into(),
        host: Some(HOST.into()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: snapshot_id.map(str::to_owned),
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    db.create_volume(
        &volume,
        None,
        &worker(WorkerKind::Volume, &volume.id, "creating"),
    )
    .await
    .expect("insert");
    volume
}

/// A `creating` snapshot row of `volume`, as the API writes it.
async fn snapshot_row(db: &Db, volume: &Volume, host: &str) -> Snapshot {
    let now = now_ms();
    let snapshot = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: volume.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib: volume.size_gib,
        status: SnapshotStatus::Creating,
        host: Some(host.into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = worker(WorkerKind::Snapshot, &snapshot.id, "creating");
    assert!(
        db.create_snapshot(&snapshot, &[volume.status], &entry)
            .await
            .expect("insert")
    );
    snapshot
}

fn create_req(snapshot: &Snapshot) -> CreateSnapshot {
    CreateSnapshot {
        snapshot_id: snapshot.id.clone(),
        volume_id: snapshot.volume_id.clone(),
    }
}

fn delete_req(id: &str) -> DeleteSnapshot {
    DeleteSnapshot {
        snapshot_id: id.to_owned(),
    }
}

async fn get(f: &Fixture, id: &str) -> Option<Snapshot> {
    f.db.get_snapshot(id).await.expect("db")
}

async fn worker_of(f: &Fixture, id: &str) -> Option<WorkerEntry> {
    f.db.get_worker(WorkerKind::Snapshot, id).await.expect("db")
}

#[tokio::test]
async fn create_makes_the_snapshot_and_is_idempotent() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let s = snapshot_row(&f.db, &v, HOST).await;
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("create");
    let row = get(&f, &s.id).await.expect("row");
    assert_eq!(row.status, SnapshotStatus::Available);
    assert!(f.driver.has(&format!("snapshot-{}", s.id)));
    assert_eq!(worker_of(&f, &s.id).await, None, "settled: no worker entry");
    assert_eq!(
        f.recorder.event_types(),
        ["snapshot.create.start", "snapshot.create.end"]
    );
    let payload = f.recorder.announced()[1].clone();
    assert_eq!(payload.status, SnapshotStatus::Available.as_str());

    // Redelivered: nothing more is done.
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("again");
    assert_eq!(f.driver.calls().len(), 1);
    assert_eq!(f.recorder.event_types().len(), 2);
}

#[tokio::test]
async fn create_failure_marks_error_and_removes_leftovers() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let s = snapshot_row(&f.db, &v, HOST).await;
    f.driver.fail.store(true, Ordering::SeqCst);
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("acked");
    let row = get(&f, &s.id).await.expect("row");
    assert_eq!(row.status, SnapshotStatus::Error);
    assert!(
        row.error_message.contains("disk on fire"),
        "{}",
        row.error_message
    );
    assert_eq!(worker_of(&f, &s.id).await, None);
    assert_eq!(
        f.driver.calls(),
        [
            format!("create_snapshot {} {}", s.id, v.id),
            format!("delete_snapshot {}", s.id)
        ]
    );
    assert_eq!(
        f.recorder.event_types(),
        ["snapshot.create.start", "snapshot.create.error"]
    );
    assert_eq!(f.recorder.announced()[1].event.priority(), Priority::Error);
}

#[tokio::test]
async fn create_of_a_vanished_row_removes_the_leftover() {
    let f = fixture().await;
    let id = uuid::Uuid::new_v4().to_string();
    f.manager
        .create_snapshot(
            &f.ctx,
            HOST,
            CreateSnapshot {
                snapshot_id: id.clone(),
                volume_id: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await
        .expect("acked");
    assert_eq!(f.driver.calls(), [format!("delete_snapshot {id}")]);
    assert!(f.recorder.event_types().is_empty());
}

#[tokio::test]
async fn create_ignores_other_statuses_and_other_hosts() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let elsewhere = snapshot_row(&f.db, &v, "node2@file").await;
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&elsewhere))
        .await
        .expect("acked");
    assert_eq!(
        get(&f, &elsewhere.id).await.expect("row").status,
        SnapshotStatus::Creating
    );
    let s = snapshot_row(&f.db, &v, HOST).await;
    f.db.transition_snapshot(
        &s.id,
        &[SnapshotStatus::Creating],
        SnapshotStatus::Error,
        None,
        None,
    )
    .await
    .expect("db");
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("acked");
    assert_eq!(
        get(&f, &s.id).await.expect("row").status,
        SnapshotStatus::Error
    );
    assert!(f.driver.calls().is_empty());
}

#[tokio::test]
async fn delete_removes_object_and_row_and_is_idempotent() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let s = snapshot_row(&f.db, &v, HOST).await;
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("create");
    // Not deleting yet: ignored.
    f.manager
        .delete_snapshot(&f.ctx, HOST, delete_req(&s.id))
        .await
        .expect("acked");
    assert!(get(&f, &s.id).await.is_some());
    let entry = worker(WorkerKind::Snapshot, &s.id, "deleting");
    assert_eq!(
        f.db.start_snapshot_delete(&s.id, Some(&entry))
            .await
            .expect("db"),
        scoria_common::db::SnapshotDeleteStart::Started
    );
    f.manager
        .delete_snapshot(&f.ctx, HOST, delete_req(&s.id))
        .await
        .expect("delete");
    assert_eq!(get(&f, &s.id).await, None);
    assert_eq!(worker_of(&f, &s.id).await, None);
    assert!(!f.driver.has(&format!("snapshot-{}", s.id)));
    assert_eq!(
        f.recorder.event_types()[2..],
        ["snapshot.delete.start", "snapshot.delete.end"]
    );
    // Redelivered after the row is gone: the (absent) object is removed again.
    f.manager
        .delete_snapshot(&f.ctx, HOST, delete_req(&s.id))
        .await
        .expect("again");
    assert_eq!(f.recorder.event_types().len(), 4);
}

#[tokio::test]
async fn delete_failure_marks_error_deleting() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let s = snapshot_row(&f.db, &v, HOST).await;
    let entry = worker(WorkerKind::Snapshot, &s.id, "deleting");
    f.db.transition_snapshot(
        &s.id,
        &[SnapshotStatus::Creating],
        SnapshotStatus::Deleting,
        None,
        Some(&entry),
    )
    .await
    .expect("db");
    f.driver.fail.store(true, Ordering::SeqCst);
    f.manager
        .delete_snapshot(&f.ctx, HOST, delete_req(&s.id))
        .await
        .expect("acked");
    let row = get(&f, &s.id).await.expect("row");
    assert_eq!(row.status, SnapshotStatus::ErrorDeleting);
    assert!(
        row.error_message.contains("disk on fire"),
        "{}",
        row.error_message
    );
    assert_eq!(worker_of(&f, &s.id).await, None);
    assert_eq!(
        f.recorder.event_types(),
        ["snapshot.delete.start", "snapshot.delete.error"]
    );
}

#[tokio::test]
async fn a_volume_with_snapshot_id_is_made_from_the_snapshot() {
    let f = fixture().await;
    let v = volume(&f.db, VolumeStatus::Available, None).await;
    let s = snapshot_row(&f.db, &v, HOST).await;
    f.manager
        .create_snapshot(&f.ctx, HOST, create_req(&s))
        .await
        .expect("snapshot");
    let child = volume(&f.db, VolumeStatus::Creating, Some(&s.id)).await;
    f.manager
        .create_volume(
            &f.ctx,
            HOST,
            CreateVolume {
                volume_id: child.id.clone(),
                size_gib: child.size_gib,
                pool: format!("{HOST}#file"),
                attempt: 1,
                snapshot_id: s.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let row = f.db.get_volume(&child.id).await.expect("db").expect("row");
    assert_eq!(row.status, VolumeStatus::Available);
    assert_eq!(
        f.driver.calls().last().cloned(),
        Some(format!(
            "create_volume_from_snapshot {} {} 2",
            child.id, s.id
        ))
    );
}

/// A backend whose snapshot create races another delivery: that delivery makes
/// the object and settles the row `available`, then this copy fails.
struct RacedSnapshots {
    db: Db,
    mem: Arc<MemDriver>,
}

#[async_trait]
impl VolumeDriver for RacedSnapshots {
    fn name(&self) -> &'static str {
        "raced"
    }
    async fn create_volume(&self, id: &str, size_gib: u64) -> DriverResult<()> {
        self.mem.create_volume(id, size_gib).await
    }
    async fn delete_volume(&self, id: &str) -> DriverResult<()> {
        self.mem.delete_volume(id).await
    }
    async fn volume_exists(&self, id: &str) -> DriverResult<bool> {
        self.mem.volume_exists(id).await
    }
    async fn stats(&self) -> DriverResult<BackendStats> {
        self.mem.stats().await
    }
    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> DriverResult<()> {
        self.mem.create_snapshot(snapshot_id, volume_id).await?;
        let won = self
            .db
            .transition_snapshot(
                snapshot_id,
                &[SnapshotStatus::Creating],
                SnapshotStatus::Available,
                Some(""),
                None,
            )
            .await
            .expect("db");
        assert!(won, "the other delivery settles the row");
        Err(DriverError::Task(
            "snapshot exists (the other delivery)".into(),
        ))
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> DriverResult<()> {
        self.mem.delete_snapshot(snapshot_id).await
    }
    async fn snapshot_exists(&self, snapshot_id: &str) -> DriverResult<bool> {
        self.mem.snapshot_exists(snapshot_id).await
    }
}

/// Defect 3 for snapshots: the create-failure path compares-and-sets before it
/// removes the object, so a redelivered copy that fails never removes the object
/// of a snapshot another copy made `available`.
#[tokio::test]
async fn a_failed_redelivery_never_removes_the_object_of_an_available_snapshot() {
    let f = fixture().await;
    let raced = VolumeManager::new(
        f.db.clone(),
        Arc::new(RacedSnapshots {
            db: f.db.clone(),
            mem: f.driver.clone(),
        }),
        f.recorder.scheduler.clone(),
        f.recorder.notifier.clone(),
        f.manager.settings().clone(),
    );
    let volume = volume(&f.db, VolumeStatus::Available, None).await;
    let snapshot = snapshot_row(&f.db, &volume, HOST).await;
    raced
        .create_snapshot(&f.ctx, HOST, create_req(&snapshot))
        .await
        .expect("create");
    let row = get(&f, &snapshot.id).await.expect("row");
    assert_eq!(row.status, SnapshotStatus::Available);
    assert!(
        f.driver.has(&format!("snapshot-{}", snapshot.id)),
        "an available snapshot keeps its object: {:?}",
        f.driver.calls()
    );
    assert!(
        !f.recorder.events().contains(&Event::SnapshotCreateError),
        "{:?}",
        f.recorder.event_types()
    );
}
