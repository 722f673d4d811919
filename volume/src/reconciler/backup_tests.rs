//! The reconciler on backup work whose volume service died mid-way (a kill -9
//! leaves the rows and the target as they were), against SQLite, the real
//! `file` driver, a directory target and the database chunk index.

use std::{sync::Arc, time::Duration};

use scoria_common::{
    db::{BackupChange, Db, Owner, WorkerEntry, deadlines},
    model::{Backup, BackupStatus, Volume, VolumeStatus, now_ms},
};

use super::Reconciler;
use crate::{
    backup::{BackupEngine, BackupTarget, DirTarget},
    backup_index::DbChunkIndex,
    driver::{FileDriver, VolumeDriver},
    manager::{IdleScheduler, ManagerSettings, VolumeManager},
    testing::Recorder,
};

const HOST: &str = "node1@file";

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    file: FileDriver,
    engine: Arc<BackupEngine>,
    target: Arc<DirTarget>,
    recorder: Arc<Recorder>,
    reconciler: Reconciler,
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
    let target = Arc::new(DirTarget::open(dir.path().join("backups")).expect("target"));
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let index = Arc::new(DbChunkIndex::new(db.clone()));
    let engine = Arc::new(BackupEngine::new(target.clone(), index, scratch));
    let recorder = Recorder::following(&["backup."]);
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
        .with_operation_deadline(Duration::from_secs(7))
        .with_backups(engine.clone()),
    );
    Fixture {
        _dir: dir,
        db,
        file,
        engine,
        target,
        recorder,
        reconciler: Reconciler::new(manager.shared(), manager.clone()),
    }
}

/// An available 1 GiB volume on this host with one chunk of data.
async fn volume(f: &Fixture) -> Volume {
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
        status: VolumeStatus::Creating,
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
    let worker = WorkerEntry::volume(&volume.id, VolumeStatus::Creating, Owner::Scheduler, now);
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    f.db.transition_volume_with_worker(
        &volume.id,
        &[VolumeStatus::Creating],
        VolumeStatus::Available,
        None,
        None,
        None,
    )
    .await
    .expect("available");
    f.file.create_volume(&volume.id, 1).await.expect("object");
    let path = f
        ._dir
        .path()
        .join("file")
        .join(format!("volume-{}", volume.id));
    let mut bytes = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    std::io::Write::write_all(&mut bytes, &[0x5a; 1 << 20]).expect("write");
    volume
}

/// A backup of `volume` in `creating`, the volume `backing-up`, owned by this
/// host and overdue: what a kill -9 mid-backup leaves.
async fn creating_backup(f: &Fixture, volume: &Volume) -> Backup {
    let now = now_ms();
    let backup = Backup {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: volume.id.clone(),
        parent_id: None,
        name: "b".into(),
        description: String::new(),
        size_gib: 1,
        status: BackupStatus::Creating,
        error_message: String::new(),
        host: Some(HOST.into()),
        incremental: false,
        has_dependents: false,
        object_count: 0,
        stored_bytes: 0,
        restore_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry::backup(
        &backup.id,
        BackupStatus::Creating,
        Owner::Service(HOST.into()),
        now - 1,
    );
    let created =
        f.db.create_backup(
            &backup,
            &[VolumeStatus::Available],
            Some(VolumeStatus::BackingUp),
            &worker,
        )
        .await
        .expect("insert");
    assert!(created);
    backup
}

#[tokio::test]
async fn a_backup_killed_mid_way_ends_in_error_with_nothing_orphaned() {
    let f = fixture().await;
    let volume = volume(&f).await;
    let backup = creating_backup(&f, &volume).await;
    // The dead process had stored the chunks (and even the manifest).
    let path = f
        ._dir
        .path()
        .join("file")
        .join(format!("volume-{}", volume.id));
    f.engine
        .backup(&backup.id, &volume.id, &path, None)
        .await
        .expect("the chunks stored before the kill");
    assert_eq!(f.target.list_chunks().await.expect("list").len(), 1);

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![backup.id.clone()]);
    let now =
        f.db.get_backup(&backup.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(now.status, BackupStatus::Error);
    assert!(
        now.error_message.contains("did not finish by its deadline"),
        "{now:?}"
    );
    let volume =
        f.db.get_volume(&volume.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(
        volume.status,
        VolumeStatus::Available,
        "the volume is usable again"
    );
    assert!(
        f.target.list_chunks().await.expect("list").is_empty(),
        "no orphan chunk"
    );
    assert_eq!(f.db.chunk_index_counts().await.expect("counts"), (0, 0));
    assert_eq!(f.recorder.event_types(), ["backup.create.error"]);
    // Settled: a second run finds nothing to do.
    let again = f.reconciler.run_once().await.expect("run");
    assert!(
        again.failed.is_empty() && again.skipped.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_restore_killed_mid_way_fails_the_volume_and_frees_the_backup() {
    let f = fixture().await;
    let source = volume(&f).await;
    let backup = creating_backup(&f, &source).await;
    let path = f
        ._dir
        .path()
        .join("file")
        .join(format!("volume-{}", source.id));
    let stats = f
        .engine
        .backup(&backup.id, &source.id, &path, None)
        .await
        .expect("backup");
    let mut done = backup.clone();
    let finish = BackupChange::new(&[BackupStatus::Creating], BackupStatus::Available)
        .stats(stats.written_chunks, stats.stored_bytes);
    assert!(
        f.db.transition_backup(&done.id, &finish)
            .await
            .expect("available")
    );
    done.status = BackupStatus::Available;
    let target = volume(&f).await;
    // The restore started, then its volume service died.
    let worker = WorkerEntry::backup(
        &done.id,
        BackupStatus::Restoring,
        Owner::Service(HOST.into()),
        deadlines::at(now_ms(), Duration::ZERO) - 1,
    );
    let started =
        f.db.start_backup_restore(
            &done.id,
            &target.id,
            Some(&[VolumeStatus::Available]),
            &worker,
        )
        .await
        .expect("restore");
    assert!(started);

    let report = f.reconciler.run_once().await.expect("run");

    assert_eq!(report.failed, vec![done.id.clone()]);
    let volume =
        f.db.get_volume(&target.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(volume.status, VolumeStatus::Error);
    assert!(volume.error_message.contains(&done.id), "{volume:?}");
    let now = f.db.get_backup(&done.id).await.expect("get").expect("row");
    assert_eq!(
        now.status,
        BackupStatus::Available,
        "the backup itself is intact"
    );
    assert_eq!(now.restore_volume_id, None);
    assert_eq!(f.recorder.event_types(), ["backup.restore.error"]);
}
