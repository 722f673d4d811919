//! `kill -9` of the volume service in the middle of a backup and of a restore,
//! then a restart: the unacked cast comes again (or the reconciler settles the
//! overdue work), each ends in a clear status, nothing stays transient, and
//! the target holds exactly the chunks the index references (no orphan).

use std::time::{Duration, Instant};

use scoria_common::model::{BackupStatus, VolumeStatus};
use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};
use tonic::Response;

use crate::support::{CHAOS_ENV, PROJECT, assert_settled, enforce_quota, serial};

/// The volume's size: 256 chunks of random bytes, each stored on its own.
const SIZE_GIB: u64 = 1;
const CHUNKS: usize = 256;
const WAIT: Duration = Duration::from_secs(120);

/// Polls `done` every 20 ms until it holds; fails with the logs after [`WAIT`].
async fn wait_for(stack: &Stack, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An available volume of [`PROJECT`] full of random bytes; its id.
async fn random_volume(stack: &Stack) -> String {
    let created = stack
        .volumes(PROJECT)
        .create_volume(pb::CreateVolumeRequest {
            size_gib: SIZE_GIB,
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("create");
    stack
        .wait_status(PROJECT, &created.id, pb::VolumeStatus::Available)
        .await;
    let object = stack.backend_object("volume", &created.id);
    let dd = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=4M", "conv=notrunc", "status=none"])
        .arg(format!("count={CHUNKS}"))
        .arg(format!("of={}", object.display()))
        .status()
        .expect("dd");
    assert!(dd.success());
    created.id
}

async fn backup_status(stack: &Stack, id: &str) -> Option<BackupStatus> {
    stack.db.get_backup(id).await.expect("db").map(|b| b.status)
}

/// The chunk files of the target equal the chunks the index counts.
async fn assert_no_orphan_chunk(stack: &Stack) {
    let (chunks, _) = stack.db.chunk_index_counts().await.expect("index");
    let files = stack.backup_chunk_files().len() as i64;
    assert_eq!(files, chunks, "chunk files vs. index\n{}", stack.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_service_killed_mid_backup_and_mid_restore_settles_without_orphans() {
    let _serial = serial().await;
    let mut stack = Stack::start_with(DbKind::Sqlite, CHAOS_ENV).await;
    enforce_quota(&stack).await;
    let volume = random_volume(&stack).await;
    let backups = stack.as_member(PROJECT).backups();

    // Mid-backup: killed once the first chunks are stored.
    let backup = backups
        .clone()
        .create_backup(pb::CreateBackupRequest {
            volume_id: volume.clone(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("create backup")
        .id;
    wait_for(&stack, "the first chunks stored", async || {
        stack.backup_chunk_files().len() >= 2
    })
    .await;
    stack.kill_service("scoria-volume").await;
    let stored = stack.backup_chunk_files().len();
    assert_eq!(
        backup_status(&stack, &backup).await,
        Some(BackupStatus::Creating)
    );
    assert!(stored < CHUNKS, "the backup had finished before the kill");
    stack.start_service("scoria-volume").await;
    wait_for(&stack, "the backup settled", async || {
        backup_status(&stack, &backup).await != Some(BackupStatus::Creating)
    })
    .await;
    let settled = backup_status(&stack, &backup).await;
    eprintln!("killed with {stored} of {CHUNKS} chunks stored; the backup ended {settled:?}");
    assert!(
        matches!(settled, Some(BackupStatus::Available | BackupStatus::Error)),
        "{settled:?}"
    );
    assert_no_orphan_chunk(&stack).await;
    let source = stack
        .db
        .get_volume(&volume)
        .await
        .expect("db")
        .expect("row");
    assert_eq!(source.status, VolumeStatus::Available);
    assert_eq!(
        settled,
        Some(BackupStatus::Available),
        "the redelivered cast finished it"
    );

    // Mid-restore: killed once the new volume has taken some bytes.
    let restoring = backups
        .clone()
        .restore_backup(pb::RestoreBackupRequest {
            id: backup.clone(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("restore");
    let target = restoring.restore_volume_id;
    wait_for(&stack, "the restore under way", async || {
        let volume = stack.db.get_volume(&target).await.expect("db");
        let object = stack.backend_object("volume", &target);
        volume.is_some_and(|v| v.status == VolumeStatus::RestoringBackup)
            && std::fs::metadata(&object)
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::blocks(&m) > 8 * 1024)
    })
    .await;
    stack.kill_service("scoria-volume").await;
    stack.start_service("scoria-volume").await;
    wait_for(&stack, "the restore settled", async || {
        backup_status(&stack, &backup).await != Some(BackupStatus::Restoring)
    })
    .await;
    assert_settled(&stack).await;
    let target = stack
        .db
        .get_volume(&target)
        .await
        .expect("db")
        .expect("row");
    assert!(
        matches!(target.status, VolumeStatus::Available | VolumeStatus::Error),
        "{target:?}"
    );
    assert_eq!(
        backup_status(&stack, &backup).await,
        Some(BackupStatus::Available)
    );

    // And the backup still goes whole.
    backups
        .clone()
        .delete_backup(pb::DeleteBackupRequest { id: backup.clone() })
        .await
        .expect("delete");
    wait_for(&stack, "the backup deleted", async || {
        backup_status(&stack, &backup).await.is_none()
    })
    .await;
    assert!(stack.backup_chunk_files().is_empty(), "no orphan chunk");
    assert_eq!(stack.db.chunk_index_counts().await.expect("index"), (0, 0));
}
