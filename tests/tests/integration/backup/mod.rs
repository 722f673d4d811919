//! Backups through the real processes: bytes written into a volume with
//! `qemu-io` come back after backup -> delete -> restore, on the `file` and the
//! `qcow2` drivers, through incremental chains, onto another backend, from the
//! directory target and from S3; and the refusals, quotas, damaged chunks and
//! chunk accounting a user relies on.

mod chain;
mod rules;
mod s3;
mod storage;

use scoria_tests::stack::{DbKind, Stack, qemu_io_file};
use tonic::Response;

use crate::support::{new_volume, pb, sized};

/// One chunk of the backup engine (4 MiB), in bytes.
const CHUNK: u64 = 4 << 20;

/// A stack on SQLite whose volume service runs `driver` (its backend named
/// after it).
async fn stack_on(driver: &str) -> Stack {
    stack_on_db(DbKind::Sqlite, driver).await
}

/// As [`stack_on`], on the database `kind`.
async fn stack_on_db(kind: DbKind, driver: &str) -> Stack {
    let env = [
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    Stack::start_with(kind, &env).await
}

/// `qemu-io -c <command>` on volume `id`'s object on the stack's backend.
fn qemu(stack: &Stack, id: &str, command: &str) -> Result<(), String> {
    qemu_io_file(&stack.backend_object("volume", id), command)
}

/// Writes `pattern` over chunk `index` of volume `id` (all 4 MiB of it).
fn fill_chunk(stack: &Stack, id: &str, index: u64, pattern: u8) {
    let command = format!("write -P {pattern:#x} {} {CHUNK}", index * CHUNK);
    qemu(stack, id, &command).unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts chunk `index` of volume `id` holds `pattern` throughout.
fn assert_chunk(stack: &Stack, id: &str, index: u64, pattern: u8) {
    let command = format!("read -P {pattern:#x} {} {CHUNK}", index * CHUNK);
    qemu(stack, id, &command).unwrap_or_else(|e| panic!("chunk {index} of {id}: {e}"));
}

/// A CreateBackup request of volume `volume_id`.
fn backup_req(volume_id: &str, incremental: bool) -> pb::CreateBackupRequest {
    pb::CreateBackupRequest {
        volume_id: volume_id.to_owned(),
        name: "b".into(),
        incremental,
        ..Default::default()
    }
}

/// Backs volume `volume_id` up (as a member of `p1`) and waits until the backup
/// is available; the volume is available again by then.
async fn backup_of(stack: &Stack, volume_id: &str, incremental: bool) -> pb::Backup {
    let created = stack
        .backups("p1")
        .create_backup(backup_req(volume_id, incremental))
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("CreateBackup of {volume_id}: {e:?}\n{}", stack.logs()));
    assert_eq!(created.status(), pb::BackupStatus::Creating, "{created:?}");
    let backup = stack
        .wait_backup_status("p1", &created.id, pb::BackupStatus::Available)
        .await;
    let volume = stack.get_volume("p1", volume_id).await.expect("the volume");
    assert_eq!(volume.status(), pb::VolumeStatus::Available, "{volume:?}");
    backup
}

/// Sends RestoreBackup of `backup_id` (into `volume_id`, empty: a new volume);
/// returns the target volume's id, once the restore finished (the volume is
/// available and the backup available again).
async fn restore(stack: &Stack, backup_id: &str, volume_id: &str) -> String {
    let request = pb::RestoreBackupRequest {
        id: backup_id.to_owned(),
        volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    let restoring = stack
        .backups("p1")
        .restore_backup(request)
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("RestoreBackup {backup_id}: {e:?}\n{}", stack.logs()));
    assert_eq!(
        restoring.status(),
        pb::BackupStatus::Restoring,
        "{restoring:?}"
    );
    let target = restoring.restore_volume_id.clone();
    assert!(!target.is_empty(), "{restoring:?}");
    if !volume_id.is_empty() {
        assert_eq!(target, volume_id);
    }
    stack
        .wait_status("p1", &target, pb::VolumeStatus::Available)
        .await;
    let backup = stack
        .wait_backup_status("p1", backup_id, pb::BackupStatus::Available)
        .await;
    assert!(backup.restore_volume_id.is_empty(), "{backup:?}");
    target
}

/// Deletes volume `id` (as a member of `p1`) and waits until it is gone.
async fn delete_volume(stack: &Stack, id: &str) {
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: id.to_owned() })
        .await
        .unwrap_or_else(|e| panic!("delete volume {id}: {e:?}"));
    stack.wait_volume_gone("p1", id).await;
}

/// Deletes backup `id` (as a member of `p1`) and waits until it is gone.
async fn delete_backup(stack: &Stack, id: &str) {
    let deleting = stack
        .backups("p1")
        .delete_backup(pb::DeleteBackupRequest { id: id.to_owned() })
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("DeleteBackup {id}: {e:?}\n{}", stack.logs()));
    assert_eq!(deleting.status(), pb::BackupStatus::Deleting);
    stack.wait_backup_gone("p1", id).await;
}

/// Backup -> delete the volume -> restore into a new volume: the bytes are
/// back, the zeros stay zeros, and the backup stored only the chunks written.
async fn bytes_survive_backup_delete_restore(driver: &str) {
    let stack = stack_on(driver).await;
    let source = new_volume(&stack, sized(1)).await;
    fill_chunk(&stack, &source, 0, 0xab);
    fill_chunk(&stack, &source, 128, 0xcd);
    let backup = backup_of(&stack, &source, false).await;
    assert_eq!(backup.size_gib, 1);
    assert_eq!(backup.object_count, 2, "two chunks hold data: {backup:?}");
    assert!(backup.stored_bytes > 0, "{backup:?}");
    assert!(!backup.incremental && backup.parent_id.is_empty());
    assert_eq!(stack.backup_chunk_files().len(), 2);

    delete_volume(&stack, &source).await;
    let restored = restore(&stack, &backup.id, "").await;
    assert_ne!(restored, source);
    let volume = stack.get_volume("p1", &restored).await.expect("restored");
    assert_eq!(volume.size_gib, 1);
    assert_chunk(&stack, &restored, 0, 0xab);
    assert_chunk(&stack, &restored, 128, 0xcd);
    assert_chunk(&stack, &restored, 1, 0);
    assert_chunk(&stack, &restored, 255, 0);
    stack.assert_quota_exact().await;
}

#[tokio::test]
async fn bytes_survive_backup_delete_restore_on_file() {
    bytes_survive_backup_delete_restore("file").await;
}

#[tokio::test]
async fn bytes_survive_backup_delete_restore_on_qcow2() {
    bytes_survive_backup_delete_restore("qcow2").await;
}
