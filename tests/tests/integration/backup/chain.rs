//! Incremental chains: each link stores only the chunks changed since its
//! parent and restores its own state; a backup with children cannot go.

use tonic::Code;

use scoria_tests::stack::DbKind;

use super::{assert_chunk, backup_of, delete_backup, fill_chunk, restore, stack_on_db};
use crate::support::{new_volume, pb, sized};

#[tokio::test]
async fn each_link_of_an_incremental_chain_restores_its_own_state() {
    chain(DbKind::Sqlite).await;
}

/// The same on PostgreSQL: the chunk index's references and counts there.
#[tokio::test]
async fn each_link_of_an_incremental_chain_restores_its_own_state_on_postgres() {
    chain(DbKind::Postgres).await;
}

async fn chain(kind: DbKind) {
    let stack = stack_on_db(kind, "file").await;
    let volume = new_volume(&stack, sized(1)).await;
    // The full backup: eight chunks of data, each its own pattern.
    for index in 0..8 {
        fill_chunk(&stack, &volume, index, 0x10 + index as u8);
    }
    let full = backup_of(&stack, &volume, false).await;
    assert_eq!(full.object_count, 8, "{full:?}");

    // One new chunk.
    fill_chunk(&stack, &volume, 100, 0xb2);
    let second = backup_of(&stack, &volume, true).await;
    assert!(second.incremental);
    assert_eq!(second.parent_id, full.id);
    assert_eq!(second.object_count, 1, "only the changed chunk: {second:?}");
    assert!(
        second.stored_bytes * 4 < full.stored_bytes,
        "an incremental backup stores about the changed chunks only: {} vs {}",
        second.stored_bytes,
        full.stored_bytes
    );

    // One chunk overwritten.
    fill_chunk(&stack, &volume, 0, 0xc3);
    let third = backup_of(&stack, &volume, true).await;
    assert_eq!(third.parent_id, second.id, "the latest available backup");
    assert_eq!(third.object_count, 1, "{third:?}");
    assert_eq!(stack.backup_chunk_files().len(), 10);

    let first_state = restore(&stack, &full.id, "").await;
    assert_chunk(&stack, &first_state, 0, 0x10);
    assert_chunk(&stack, &first_state, 7, 0x17);
    assert_chunk(&stack, &first_state, 100, 0);
    let second_state = restore(&stack, &second.id, "").await;
    assert_chunk(&stack, &second_state, 0, 0x10);
    assert_chunk(&stack, &second_state, 100, 0xb2);
    let third_state = restore(&stack, &third.id, "").await;
    assert_chunk(&stack, &third_state, 0, 0xc3);
    assert_chunk(&stack, &third_state, 3, 0x13);
    assert_chunk(&stack, &third_state, 100, 0xb2);

    // Parents go only after their children, newest first.
    let mut backups = stack.backups("p1");
    let full_now = stack
        .as_member("p1")
        .get_backup(&full.id)
        .await
        .expect("get");
    assert!(full_now.has_dependent_backups, "{full_now:?}");
    for parent in [&full.id, &second.id] {
        let refused = backups
            .delete_backup(pb::DeleteBackupRequest { id: parent.clone() })
            .await
            .expect_err("a backup with children");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().contains("dependent"),
            "{}",
            refused.message()
        );
        let still = stack.as_member("p1").get_backup(parent).await.expect("get");
        assert_eq!(
            still.status(),
            pb::BackupStatus::Available,
            "nothing changed"
        );
    }
    delete_backup(&stack, &third.id).await;
    delete_backup(&stack, &second.id).await;
    delete_backup(&stack, &full.id).await;
    assert!(
        stack.backup_chunk_files().is_empty(),
        "every chunk went with the last backup"
    );
    let (chunks, refs) = stack.db.chunk_index_counts().await.expect("index");
    assert_eq!((chunks, refs), (0, 0), "the chunk index is empty");
    stack.assert_quota_exact().await;
}
