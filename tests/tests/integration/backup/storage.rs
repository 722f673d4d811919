//! The backup target itself: a deleted backup takes exactly its unshared
//! chunks, a damaged chunk fails its restore clearly, and a backup restores
//! onto another backend than its volume's.

use std::collections::BTreeMap;

use scoria_tests::stack::qemu_io_file;
use tonic::Response;

use super::{CHUNK, backup_of, delete_backup, fill_chunk, stack_on};
use crate::support::{new_volume, pb, sized};

#[tokio::test]
async fn a_deleted_backup_removes_its_unshared_chunks_and_keeps_shared_ones() {
    let stack = stack_on("file").await;
    let a = new_volume(&stack, sized(1)).await;
    let b = new_volume(&stack, sized(1)).await;
    // Chunk 0 is the same in both volumes; chunk 1 differs.
    fill_chunk(&stack, &a, 0, 0x01);
    fill_chunk(&stack, &a, 1, 0x02);
    fill_chunk(&stack, &b, 0, 0x01);
    fill_chunk(&stack, &b, 1, 0x03);
    let of_a = backup_of(&stack, &a, false).await;
    let after_a = stack.backup_chunk_files();
    assert_eq!(after_a.len(), 2);
    let of_b = backup_of(&stack, &b, false).await;
    assert_eq!(
        of_b.object_count, 1,
        "the shared chunk was not stored again"
    );
    let after_b = stack.backup_chunk_files();
    assert_eq!(after_b.len(), 3);

    delete_backup(&stack, &of_a.id).await;
    let left = stack.backup_chunk_files();
    assert_eq!(left.len(), 2, "a's own chunk went: {left:?}");
    let gone: Vec<_> = after_a.iter().filter(|f| !left.contains(f)).collect();
    assert_eq!(gone.len(), 1, "exactly one of a's chunks went: {gone:?}");
    assert!(left.iter().all(|f| after_b.contains(f)));

    // b still restores whole (its shared chunk stayed).
    let restored = super::restore(&stack, &of_b.id, "").await;
    super::assert_chunk(&stack, &restored, 0, 0x01);
    super::assert_chunk(&stack, &restored, 1, 0x03);
    delete_backup(&stack, &of_b.id).await;
    assert!(stack.backup_chunk_files().is_empty());
    assert_eq!(stack.db.chunk_index_counts().await.expect("index"), (0, 0));
}

#[tokio::test]
async fn a_corrupted_chunk_fails_the_restore_naming_it() {
    let stack = stack_on("file").await;
    let volume = new_volume(&stack, sized(1)).await;
    fill_chunk(&stack, &volume, 5, 0x42);
    let backup = backup_of(&stack, &volume, false).await;
    let chunks = stack.backup_chunk_files();
    assert_eq!(chunks.len(), 1);
    // Flip a byte in the middle of the chunk's object.
    let mut bytes = std::fs::read(&chunks[0]).expect("read chunk");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&chunks[0], &bytes).expect("write chunk");
    let digest = chunks[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a digest")
        .to_owned();

    let restoring = stack
        .backups("p1")
        .restore_backup(pb::RestoreBackupRequest {
            id: backup.id.clone(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("restore accepted");
    let target = restoring.restore_volume_id;
    let failed = stack
        .wait_status("p1", &target, pb::VolumeStatus::Error)
        .await;
    assert!(
        failed.error_message.contains(&digest),
        "the volume says which chunk: {}",
        failed.error_message
    );
    // The backup is damaged: it says so (error), not available again.
    let damaged = stack
        .wait_backup_status("p1", &backup.id, pb::BackupStatus::Error)
        .await;
    assert!(damaged.error_message.contains(&digest), "{damaged:?}");
    assert!(damaged.restore_volume_id.is_empty());
    // Nothing stuck: the failed volume and the damaged backup can be deleted.
    super::delete_volume(&stack, &target).await;
    delete_backup(&stack, &backup.id).await;
    assert!(stack.backup_chunk_files().is_empty());
}

#[tokio::test]
async fn a_backup_restores_onto_another_backend() {
    let mut stack = stack_on("file").await;
    let qcow2_host = stack
        .start_volume_service("qcow2", &[("SCORIA_VOLUME_DRIVER", "qcow2")])
        .await;
    // A scheduler (re)started now waits for both backends' reports before it
    // takes work: one already running may still count the new backend as down.
    stack.stop_service("scoria-scheduler").await;
    stack.start_service("scoria-scheduler").await;
    let source = new_volume(&stack, sized(1)).await;
    fill_chunk(&stack, &source, 9, 0x3c);
    let backup = backup_of(&stack, &source, false).await;
    assert_ne!(backup.host, qcow2_host);

    let specs: BTreeMap<String, String> =
        [("volume_backend_name".to_owned(), "qcow2".to_owned())].into();
    stack
        .types_admin("p1")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "on-qcow2".into(),
            extra_specs: specs,
            ..Default::default()
        })
        .await
        .expect("volume type");
    let target = new_volume(
        &stack,
        pb::CreateVolumeRequest {
            volume_type: "on-qcow2".into(),
            ..sized(1)
        },
    )
    .await;
    let placed = stack.get_volume("p1", &target).await.expect("target");
    assert_eq!(placed.host, qcow2_host);
    super::restore(&stack, &backup.id, &target).await;
    let object = stack.backend_object_in("qcow2", "volume", &target);
    let read = |command: String| qemu_io_file(&object, &command);
    read(format!("read -P 0x3c {} {CHUNK}", 9 * CHUNK)).expect("the bytes, on qcow2");
    read(format!("read -P 0 0 {CHUNK}")).expect("zeros");
}

/// A directory target on a full filesystem (an 8 MiB tmpfs the test mounts,
/// as root): the backup of 12 MiB that do not compress ends in `error` naming
/// the full target, its volume is available again, and nothing it stored is
/// left behind (chunk files and index rows alike).
#[tokio::test]
async fn a_full_target_fails_the_backup_cleanly() {
    let fs = scoria_volume::backup::testkit::Tmpfs::mount("8m");
    let repo = fs.mount.join("repo").display().to_string();
    let mut stack = scoria_tests::stack::Stack::start_with(
        scoria_tests::stack::DbKind::Sqlite,
        &[("SCORIA_BACKUP_TARGET", repo.as_str())],
    )
    .await;
    let volume = new_volume(&stack, sized(1)).await;
    scoria_volume::backup::testkit::write_chunks(
        &stack.backend_object("volume", &volume),
        CHUNK,
        0..3,
        7,
    );
    let created = stack
        .backups("p1")
        .create_backup(super::backup_req(&volume, false))
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("CreateBackup: {e:?}\n{}", stack.logs()));
    let failed = stack
        .wait_backup_status("p1", &created.id, pb::BackupStatus::Error)
        .await;
    assert!(
        failed.error_message.contains("is full"),
        "the reason names the full target: {failed:?}"
    );
    let again = stack.get_volume("p1", &volume).await.expect("the volume");
    assert_eq!(again.status(), pb::VolumeStatus::Available, "{again:?}");
    assert_eq!(stack.backup_chunk_files(), Vec::<std::path::PathBuf>::new());
    assert_eq!(stack.db.chunk_index_counts().await.expect("index"), (0, 0));
    // The failed backup can be deleted, and takes nothing else with it.
    delete_backup(&stack, &created.id).await;
    stack.terminate().await;
}
