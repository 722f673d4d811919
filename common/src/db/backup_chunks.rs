//! The chunk index of the backup target: who references each chunk object, so
//! a deleted backup removes exactly the chunks no other backup shares, and a
//! backup never counts on an object a concurrent delete is removing.
//!
//! `backup_chunk_refs` holds one row per (backup, digest); `backup_chunks` one
//! per digest: `refs` (how many backups reference it), `stored` (its object was
//! written) and `state`:
//!
//! ```text
//!  acquire(backup, digest)   ref inserted?  no ─▶ answer !stored (idempotent)
//!                            yes: live row  ─▶ refs + 1, answer !stored
//!                                 no row    ─▶ new row (refs 1, not stored), answer true
//!                                 deleting  ─▶ roll back, wait, retry (a delete is removing
//!                                              the object; once forgotten it starts afresh)
//!  release(backup)           its refs removed, their chunks' refs - 1; chunks at 0 refs
//!                            move to `deleting` (since now) and are returned, with
//!                            those an interrupted delete left `deleting` long ago: the
//!                            caller deletes their objects, then forgets them
//!  forget(digest)            the `deleting` row removed
//! ```
//!
//! Each step is one transaction. On PostgreSQL the `refs + 1` of an acquire
//! waits for a release's row lock and then re-checks `state = 'live'` on the
//! committed row, so the two never both win; SQLite has one writer anyway.

use std::time::Duration;

use sqlx::Row;

use super::{Db, DbError, DbResult};
use crate::model::now_ms;

/// How long an acquire waits between tries while a delete removes the chunk.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a chunk stays `deleting` before a release takes it for a leftover
/// of an interrupted delete (and deletes its object again).
const STALE_DELETING: Duration = Duration::from_secs(10 * 60);
/// How many tries an acquire makes before giving up (about a minute).
const MAX_TRIES: u32 = 1200;

impl Db {
    /// Records that backup `backup_id` references chunk `digest`; whether the
    /// chunk's object must still be written. Idempotent per (backup, digest).
    pub async fn acquire_chunk(&self, backup_id: &str, digest: &str) -> DbResult<bool> {
        for _ in 0..MAX_TRIES {
            if let Some(must_write) = self.try_acquire_chunk(backup_id, digest).await? {
                return Ok(must_write);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(DbError::Corrupt {
            table: "backup_chunks",
            id: digest.to_owned(),
            reason: format!("chunk stayed `deleting` while backup {backup_id} waited for it"),
        })
    }

    /// One try of [`Db::acquire_chunk`]; `None`: the chunk is being deleted.
    async fn try_acquire_chunk(&self, backup_id: &str, digest: &str) -> DbResult<Option<bool>> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO backup_chunk_refs (backup_id, digest) VALUES ($1, $2) \
             ON CONFLICT (backup_id, digest) DO NOTHING",
        )
        .bind(backup_id)
        .bind(digest)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            let counted = sqlx::query(
                "UPDATE backup_chunks SET refs = refs + 1 WHERE digest = $1 AND state = 'live'",
            )
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if counted == 0 {
                let created = sqlx::query(
                    "INSERT INTO backup_chunks (digest, refs, state, stored) VALUES ($1, 1, 'live', 0) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(digest)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if created == 0 {
                    // A `deleting` row: dropping `tx` rolls the ref back.
                    return Ok(None);
                }
                tx.commit().await?;
                return Ok(Some(true));
            }
        }
        let row = sqlx::query("SELECT stored FROM backup_chunks WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
        let stored = match row {
            Some(row) => row.try_get::<i64, _>("stored")? != 0,
            None => false,
        };
        tx.commit().await?;
        Ok(Some(!stored))
    }

    /// Records that chunk `digest`'s object is written.
    pub async fn chunk_stored(&self, digest: &str) -> DbResult<()> {
        sqlx::query("UPDATE backup_chunks SET stored = 1 WHERE digest = $1")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops every reference of backup `backup_id`; the digests no backup
    /// references any more, now `deleting` (their objects are to be deleted,
    /// then [`Db::forget_chunk`]). Idempotent: a second call returns nothing.
    pub async fn release_chunks(&self, backup_id: &str) -> DbResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE backup_chunks SET refs = refs - 1 \
             WHERE digest IN (SELECT digest FROM backup_chunk_refs WHERE backup_id = $1)",
        )
        .bind(backup_id)
        .execute(&mut *tx)
        .await?;
        // This backup's chunks now unreferenced, and those an interrupted delete
        // left `deleting` long ago (a delete running now is not that old).
        let unreferenced: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM backup_chunks WHERE (refs <= 0 AND state = 'live' \
             AND digest IN (SELECT digest FROM backup_chunk_refs WHERE backup_id = $1)) \
             OR (state = 'deleting' AND deleting_since < $2) ORDER BY digest",
        )
        .bind(backup_id)
        .bind(now_ms().saturating_sub(STALE_DELETING.as_millis() as i64))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE backup_chunks SET state = 'deleting', deleting_since = $1 \
             WHERE refs <= 0 AND state = 'live' \
             AND digest IN (SELECT digest FROM backup_chunk_refs WHERE backup_id = $2)",
        )
        .bind(now_ms())
        .bind(backup_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM backup_chunk_refs WHERE backup_id = $1")
            .bind(backup_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(unreferenced)
    }

    /// Removes the index row of chunk `digest` once its object is deleted (only
    /// a `deleting` row).
    pub async fn forget_chunk(&self, digest: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM backup_chunks WHERE digest = $1 AND state = 'deleting'")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `(chunks, references)` the index holds in total, for tests and checks.
    pub async fn chunk_index_counts(&self) -> DbResult<(i64, i64)> {
        let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backup_chunks")
            .fetch_one(&self.pool)
            .await?;
        let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backup_chunk_refs")
            .fetch_one(&self.pool)
            .await?;
        Ok((chunks, refs))
    }
}
