//! Tests of the manager against a SQLite database, the real `file` driver (or a
//! failing one), and recording fakes of the scheduler and the notifier.

use scoria_common::{db::Db, events::Event, model::Volume, rpc::Priority};

use super::*;
use crate::driver::{BackendStats, DriverError, DriverResult, FileDriver};
use crate::testing::Recorder;

/// A backend whose every operation fails.
struct BrokenDriver;

#[async_trait]
impl VolumeDriver for BrokenDriver {
    fn name(&self) -> &'static str {
        "broken"
    }
    async fn create_volume(&self, _id: &str, _size_gib: u64) -> DriverResult<()> {
        Err(DriverError::Task("disk on fire".into()))
    }
    async fn delete_volume(&self, _id: &str) -> DriverResult<()> {
        Err(DriverError::Task("disk on fire".into()))
    }
    async fn volume_exists(&self, _id: &str) -> DriverResult<bool> {
        Ok(false)
    }
    async fn stats(&self) -> DriverResult<BackendStats> {
        Ok(BackendStats {
            total_gib: 1.0,
            free_gib: 1.0,
            allocated_gib: 0.0,
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    file: FileDriver,
    recorder: Arc<Recorder>,
    manager: VolumeManager,
}

const HOST: &str = "node1@file";

async fn fixture(broken: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("scoria.db").display()
    ))
    .await
    .expect("db");
    let file = FileDriver::new(dir.path().join("file"), Some(10)).expect("driver");
    let driver: Arc<dyn VolumeDriver> = if broken {
        Arc::new(BrokenDriver)
    } else {
        Arc::new(file.clone())
    };
    let recorder = Recorder::following(&["volume."]);
    let settings = ManagerSettings {
        host: HOST.into(),
        backend: "file".into(),
        availability_zone: "az1".into(),
        reserved_percentage: 5,
        max_over_subscription_ratio: 1.0,
    };
    let manager = VolumeManager::new(
        db.clone(),
        driver,
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

async fn insert(db: &Db, status: VolumeStatus, host: Option<&str>) -> Volume {
    insert_with(db, status, host, 1).await
}

async fn insert_with(db: &Db, status: VolumeStatus, host: Option<&str>, size_gib: u64) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib,
        status,
        volume_type: String::new(),
        availability_zone: "az1".into(),
        host: host.map(str::to_owned),
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
        service: SCHEDULER_SERVICE.into(),
        deadline_ms: now + 60_000,
    };
    db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

fn create_request(volume: &Volume, attempt: u32) -> CreateVolume {
    CreateVolume {
        volume_id: volume.id.clone(),
        size_gib: volume.size_gib,
        pool: format!("{HOST}#file"),
        attempt,
        ..Default::default()
    }
}

fn ctx() -> RequestContext {
    RequestContext::internal("test")
}

#[tokio::test]
async fn create_makes_the_volume_available_once() {
    let f = fixture(false).await;
    let volume = insert(&f.db, VolumeStatus::Creating, None).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 1))
        .await
        .expect("create");
    let row =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(row.status, VolumeStatus::Available);
    assert_eq!(row.host.as_deref(), Some(HOST));
    assert!(f.file.volume_exists(&volume.id).await.expect("exists"));
    assert!(
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("worker")
            .is_none()
    );
    // Redelivered: nothing happens.
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 1))
        .await
        .expect("again");
    assert_eq!(
        f.recorder.event_types(),
        ["volume.create.start", "volume.create.end"]
    );
}

#[tokio::test]
async fn create_of_a_deleted_volume_leaves_nothing() {
    let f = fixture(false).await;
    let id = uuid::Uuid::new_v4().to_string();
    f.file.create_volume(&id, 1).await.expect("leftover");
    let request = CreateVolume {
        volume_id: id.clone(),
        size_gib: 1,
        ..Default::default()
    };
    f.manager
        .create_volume(&ctx(), HOST, request)
        .await
        .expect("create");
    assert!(!f.file.volume_exists(&id).await.expect("exists"));
}

#[tokio::test]
async fn create_owned_by_another_backend_is_ignored() {
    let f = fixture(false).await;
    let volume = insert(&f.db, VolumeStatus::Creating, Some("node2@file")).await;
    let mut worker = f.manager.worker(&volume.id, "node2@file");
    f.db.upsert_worker(&worker).await.expect("owner");
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 1))
        .await
        .expect("create");
    assert!(!f.file.volume_exists(&volume.id).await.expect("exists"));
    let row =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(row.status, VolumeStatus::Creating);
    // Rescheduled here after that backend failed: the scheduler owns it again.
    worker.service = SCHEDULER_SERVICE.into();
    f.db.upsert_worker(&worker).await.expect("owner");
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 2))
        .await
        .expect("create");
    let row =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(
        (row.status, row.host.as_deref()),
        (VolumeStatus::Available, Some(HOST))
    );
}

#[tokio::test]
async fn failed_create_is_rescheduled_then_fails() {
    let f = fixture(true).await;
    let volume = insert(&f.db, VolumeStatus::Creating, None).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 1))
        .await
        .expect("create");
    let scheduled = f.recorder.scheduler.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].attempt, 2);
    assert_eq!(scheduled[0].tried_hosts, [format!("{HOST}#file")]);
    assert!(scheduled[0].last_error.contains("disk on fire"));
    let worker =
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("worker")
            .expect("entry");
    assert_eq!(worker.service, SCHEDULER_SERVICE);

    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 3))
        .await
        .expect("last attempt");
    let row =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(row.status, VolumeStatus::Error);
    assert!(row.error_message.starts_with(&format!(
        "creating volume {} failed after 3 attempts",
        volume.id
    )));
    assert_eq!(f.recorder.scheduler.scheduled().len(), 1);
    let events = f.recorder.announced();
    let last = events.last().expect("event");
    assert_eq!(
        (last.event.priority(), last.event),
        (Priority::Error, Event::VolumeCreateError)
    );
}

#[tokio::test]
async fn delete_removes_object_and_row_idempotently() {
    let f = fixture(false).await;
    let volume = insert(&f.db, VolumeStatus::Creating, None).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&volume, 1))
        .await
        .expect("create");
    // Not deleting yet: ignored.
    let request = DeleteVolume {
        volume_id: volume.id.clone(),
    };
    f.manager
        .delete_volume(&ctx(), HOST, request.clone())
        .await
        .expect("ignored");
    assert!(f.file.volume_exists(&volume.id).await.expect("exists"));

    assert!(
        f.db.transition_volume(
            &volume.id,
            &[VolumeStatus::Available],
            VolumeStatus::Deleting,
            None,
            None
        )
        .await
        .expect("cas")
    );
    f.manager
        .delete_volume(&ctx(), HOST, request.clone())
        .await
        .expect("delete");
    assert!(f.db.get_volume(&volume.id).await.expect("get").is_none());
    assert!(!f.file.volume_exists(&volume.id).await.expect("exists"));
    f.manager
        .delete_volume(&ctx(), HOST, request)
        .await
        .expect("redelivered");
}

#[tokio::test]
async fn failed_delete_is_error_deleting() {
    let f = fixture(true).await;
    let volume = insert(&f.db, VolumeStatus::Deleting, Some(HOST)).await;
    f.manager
        .delete_volume(
            &ctx(),
            HOST,
            DeleteVolume {
                volume_id: volume.id.clone(),
            },
        )
        .await
        .expect("delete");
    let row =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(row.status, VolumeStatus::ErrorDeleting);
    assert!(
        row.error_message.contains("disk on fire"),
        "{}",
        row.error_message
    );
}

#[tokio::test]
async fn capability_report_describes_the_pool() {
    let f = fixture(false).await;
    f.manager
        .publish_service_capabilities(&ctx(), PublishCapabilities::default())
        .await
        .expect("report");
    let reports = f.recorder.scheduler.reports();
    let report = &reports[0];
    assert_eq!(
        (
            report.host.as_str(),
            report.backend_name.as_str(),
            report.driver.as_str()
        ),
        (HOST, "file", "file")
    );
    assert_eq!(report.availability_zone, "az1");
    let pool = &report.pools[0];
    assert_eq!(pool.name, "file");
    assert_eq!(pool.total_capacity_gib, 10.0);
    assert_eq!(pool.reserved_percentage, 5);
    assert!(pool.thin_provisioning_support && !pool.thick_provisioning_support);
    assert_eq!(
        pool.capabilities
            .get("storage_protocol")
            .map(String::as_str),
        Some("nbd")
    );
    assert_eq!(
        pool.capabilities
            .get("volume_backend_name")
            .map(String::as_str),
        Some("file")
    );
    assert!(report.reported_at.is_some());
}

/// A backend that loses a race: while it fails this delivery's create, another
/// delivery of the same cast made the object and settled the row `available`.
struct RacedDriver {
    db: Db,
    file: FileDriver,
}

#[async_trait]
impl VolumeDriver for RacedDriver {
    fn name(&self) -> &'static str {
        "raced"
    }
    async fn create_volume(&self, id: &str, size_gib: u64) -> DriverResult<()> {
        self.file.create_volume(id, size_gib).await?;
        let won = self
            .db
            .transition_volume_with_worker(
                id,
                &[VolumeStatus::Creating],
                VolumeStatus::Available,
                Some(HOST),
                Some(""),
                None,
            )
            .await
            .expect("db");
        assert!(won, "the other delivery settles the row");
        Err(DriverError::Task(
            "object exists (the other delivery)".into(),
        ))
    }
    async fn delete_volume(&self, id: &str) -> DriverResult<()> {
        self.file.delete_volume(id).await
    }
    async fn volume_exists(&self, id: &str) -> DriverResult<bool> {
        self.file.volume_exists(id).await
    }
    async fn stats(&self) -> DriverResult<BackendStats> {
        self.file.stats().await
    }
}

#[tokio::test]
async fn a_failed_redelivery_never_removes_the_object_of_an_available_volume() {
    for attempt in [1, MAX_CREATE_ATTEMPTS] {
        let f = fixture(false).await;
        let raced = VolumeManager::new(
            f.db.clone(),
            Arc::new(RacedDriver {
                db: f.db.clone(),
                file: f.file.clone(),
            }),
            f.recorder.scheduler.clone(),
            f.recorder.notifier.clone(),
            f.manager.settings().clone(),
        );
        let volume = insert(&f.db, VolumeStatus::Creating, None).await;
        raced
            .create_volume(&ctx(), HOST, create_request(&volume, attempt))
            .await
            .expect("create");
        let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
        assert_eq!(row.status, VolumeStatus::Available, "attempt {attempt}");
        assert!(
            f.file.volume_exists(&volume.id).await.expect("exists"),
            "attempt {attempt}: an available volume keeps its object"
        );
        assert!(
            f.recorder.scheduler.scheduled().is_empty(),
            "attempt {attempt}: an available volume is not rescheduled"
        );
        assert!(
            !f.recorder.events().contains(&Event::VolumeCreateError),
            "attempt {attempt}"
        );
    }
}

#[tokio::test]
async fn a_create_beyond_the_capacity_is_refused_and_rescheduled_then_fails() {
    // 10 GiB, ratio 1, 5% reserved (floor 0.5 = 0): 10 GiB fit.
    let f = fixture(false).await;
    let big = insert_sized(&f.db, 9).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&big, 1))
        .await
        .expect("create");
    let row = f.db.get_volume(&big.id).await.expect("get").expect("row");
    assert_eq!(row.status, VolumeStatus::Available);
    // A redelivery of a volume already made needs no new space.
    f.manager
        .create_volume(&ctx(), HOST, create_request(&big, 1))
        .await
        .expect("redelivered");

    let over = insert_sized(&f.db, 2).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&over, 1))
        .await
        .expect("refused create");
    assert!(
        !f.file.volume_exists(&over.id).await.expect("exists"),
        "a refused create made its object"
    );
    let scheduled = f.recorder.scheduler.scheduled();
    assert_eq!(scheduled.len(), 1, "refused once, rescheduled once");
    assert_eq!(scheduled[0].volume_id, over.id);
    assert_eq!(scheduled[0].attempt, 2);
    assert_eq!(scheduled[0].tried_hosts, [format!("{HOST}#file")]);
    assert!(
        scheduled[0].last_error.contains("has no space for volume")
            && scheduled[0]
                .last_error
                .contains("2 GiB asked, 1.0 GiB left"),
        "{}",
        scheduled[0].last_error
    );
    let worker =
        f.db.get_worker(WorkerKind::Volume, &over.id)
            .await
            .expect("worker")
            .expect("entry");
    assert_eq!(worker.service, SCHEDULER_SERVICE);

    // On its last attempt the volume ends in error, saying why.
    f.manager
        .create_volume(&ctx(), HOST, create_request(&over, 3))
        .await
        .expect("last attempt");
    let row = f.db.get_volume(&over.id).await.expect("get").expect("row");
    assert_eq!(row.status, VolumeStatus::Error);
    assert!(
        row.error_message.contains("has no space for volume"),
        "{}",
        row.error_message
    );

    // What is left still fits.
    let fits = insert_sized(&f.db, 1).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&fits, 1))
        .await
        .expect("create");
    let row = f.db.get_volume(&fits.id).await.expect("get").expect("row");
    assert_eq!(row.status, VolumeStatus::Available);
}

#[tokio::test]
async fn racing_creates_for_the_last_space_have_one_winner() {
    let f = fixture(false).await;
    let filler = insert_sized(&f.db, 6).await;
    f.manager
        .create_volume(&ctx(), HOST, create_request(&filler, 1))
        .await
        .expect("create");
    // 4 GiB left; two creates of 3 GiB at once.
    let a = insert_sized(&f.db, 3).await;
    let b = insert_sized(&f.db, 3).await;
    let ctx = ctx();
    let (ra, rb) = tokio::join!(
        f.manager.create_volume(&ctx, HOST, create_request(&a, 1)),
        f.manager.create_volume(&ctx, HOST, create_request(&b, 1)),
    );
    ra.expect("a");
    rb.expect("b");
    let mut available = 0;
    for v in [&a, &b] {
        let row = f.db.get_volume(&v.id).await.expect("get").expect("row");
        if row.status == VolumeStatus::Available {
            available += 1;
        }
    }
    assert_eq!(available, 1, "exactly one of the two fits");
    assert_eq!(f.recorder.scheduler.scheduled().len(), 1);
}

async fn insert_sized(db: &Db, size_gib: u64) -> Volume {
    insert_with(db, VolumeStatus::Creating, None, size_gib).await
}
