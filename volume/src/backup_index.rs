//! [`DbChunkIndex`]: the backup engine's [`ChunkIndex`] kept in the database
//! (`backup_chunks`, `backup_chunk_refs`), so every volume service sharing a
//! backup target shares one reference count per chunk, race-safe on SQLite and
//! PostgreSQL (see `scoria_common::db::backup_chunks`).

use async_trait::async_trait;
use scoria_common::db::{Db, DbError};

use crate::backup::{BackupError, ChunkIndex, Result};

/// The chunk index in the database.
#[derive(Clone)]
pub struct DbChunkIndex {
    db: Db,
}

impl DbChunkIndex {
    /// The index in `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn index_error(err: DbError) -> BackupError {
    BackupError::Index(Box::new(err))
}

#[async_trait]
impl ChunkIndex for DbChunkIndex {
    async fn acquire(&self, backup_id: &str, digest: &str) -> Result<bool> {
        self.db
            .acquire_chunk(backup_id, digest)
            .await
            .map_err(index_error)
    }

    async fn stored(&self, digest: &str) -> Result<()> {
        self.db.chunk_stored(digest).await.map_err(index_error)
    }

    async fn release(&self, backup_id: &str) -> Result<Vec<String>> {
        self.db.release_chunks(backup_id).await.map_err(index_error)
    }

    async fn forget(&self, digest: &str) -> Result<()> {
        self.db.forget_chunk(digest).await.map_err(index_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's contract, on the real index: written once, freed with the
    /// last backup that references it, idempotent per (backup, digest).
    async fn follows_the_contract(db: Db) {
        let index = DbChunkIndex::new(db.clone());
        assert!(index.acquire("a", "d1").await.expect("acquire"));
        index.stored("d1").await.expect("stored");
        assert!(
            !index.acquire("a", "d1").await.expect("again"),
            "idempotent"
        );
        assert!(!index.acquire("b", "d1").await.expect("shared"));
        assert!(index.acquire("b", "d2").await.expect("new"));
        index.stored("d2").await.expect("stored");
        assert!(
            index.release("a").await.expect("release").is_empty(),
            "b holds d1"
        );
        assert_eq!(index.release("b").await.expect("release"), ["d1", "d2"]);
        assert!(
            index.release("b").await.expect("again").is_empty(),
            "idempotent"
        );
        index.forget("d1").await.expect("forget");
        index.forget("d2").await.expect("forget");
        assert_eq!(db.chunk_index_counts().await.expect("counts"), (0, 0));
        // A forgotten chunk starts afresh.
        assert!(index.acquire("c", "d1").await.expect("afresh"));
        assert_eq!(db.chunk_index_counts().await.expect("counts"), (1, 1));
    }

    #[tokio::test]
    async fn the_index_follows_the_contract_on_sqlite() {
        let db = scoria_common::testing::TempDb::new().await;
        follows_the_contract(db.db().clone()).await;
    }

    #[tokio::test]
    async fn an_acquire_waits_for_a_delete_in_progress() {
        let db = scoria_common::testing::TempDb::new().await;
        let index = DbChunkIndex::new(db.db().clone());
        assert!(index.acquire("a", "d1").await.expect("acquire"));
        index.stored("d1").await.expect("stored");
        assert_eq!(index.release("a").await.expect("release"), ["d1"]);
        // The object is being deleted: a new backup must wait, then write it.
        let waiting = {
            let index = index.clone();
            tokio::spawn(async move { index.acquire("b", "d1").await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "acquired a chunk being deleted");
        index.forget("d1").await.expect("forget");
        let must_write = waiting.await.expect("task").expect("acquire");
        assert!(
            must_write,
            "the object was deleted: it must be written again"
        );
    }
}
