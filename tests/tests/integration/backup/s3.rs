//! The S3 target through the whole stack: a real S3-protocol server (moto's,
//! started by the test on a free port) holds the chunks and manifests.

use scoria_tests::{
    fixtures::s3::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY},
    stack::{DbKind, Stack},
};

use super::{assert_chunk, backup_of, delete_backup, delete_volume, fill_chunk, restore};
use crate::support::{new_volume, sized};

#[tokio::test]
async fn bytes_survive_backup_delete_restore_through_s3() {
    let server = S3Server::start().unwrap_or_else(|e| panic!("{e}"));
    server
        .create_bucket("scoria-stack")
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = server.endpoint();
    let env = [
        ("SCORIA_BACKUP_TARGET", "s3://scoria-stack/backups"),
        ("SCORIA_BACKUP_S3_ENDPOINT", endpoint.as_str()),
        ("SCORIA_BACKUP_S3_REGION", REGION),
        ("SCORIA_BACKUP_S3_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("SCORIA_BACKUP_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("SCORIA_BACKUP_S3_ALLOW_HTTP", "true"),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let volume = new_volume(&stack, sized(1)).await;
    fill_chunk(&stack, &volume, 2, 0x5a);
    fill_chunk(&stack, &volume, 200, 0xa5);
    let full = backup_of(&stack, &volume, false).await;
    assert_eq!(full.object_count, 2, "{full:?}");
    fill_chunk(&stack, &volume, 3, 0x66);
    let incremental = backup_of(&stack, &volume, true).await;
    assert_eq!(incremental.object_count, 1, "{incremental:?}");
    assert!(
        stack.backup_chunk_files().is_empty(),
        "nothing went to the default directory"
    );
    delete_volume(&stack, &volume).await;

    let restored = restore(&stack, &incremental.id, "").await;
    assert_chunk(&stack, &restored, 2, 0x5a);
    assert_chunk(&stack, &restored, 3, 0x66);
    assert_chunk(&stack, &restored, 200, 0xa5);
    delete_backup(&stack, &incremental.id).await;
    delete_backup(&stack, &full.id).await;
    assert_eq!(stack.db.chunk_index_counts().await.expect("index"), (0, 0));
    stack.assert_quota_exact().await;
}
