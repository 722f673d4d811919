//! Reverting a volume to its latest snapshot: both rows move together.
//!
//! | this | against | settled by |
//! | --- | --- | --- |
//! | revert V to S | a new snapshot of V, a delete of S, an attach, extend or delete of V | one transaction: V `available` -> `reverting` and S `available` -> `restoring` by compare-and-set, S re-checked as V's newest snapshot after both CASes |
//!
//! The worker entry is the volume's (`reverting`, owned by its host); the
//! settle moves both rows back in one transaction and removes it.

use sqlx::Row;

use super::{
    Db, DbResult, WorkerEntry, WorkerKind, cas_status, volumes::Transition, workers::remove_worker,
};
use crate::{
    changes::ChangeKind,
    model::{SnapshotStatus, VolumeStatus},
};

/// The outcome of [`Db::start_revert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertStart {
    /// The volume is `reverting`, the snapshot `restoring`.
    Started,
    /// The volume is not `available` (any more): nothing changed.
    VolumeMoved,
    /// The snapshot is not `available` (any more): nothing changed.
    SnapshotMoved,
    /// A newer snapshot of the volume exists now (its id): nothing changed.
    NotLatest(String),
}

impl Db {
    /// Moves volume `volume_id` `available` -> `reverting` (recording `worker`)
    /// and its snapshot `snapshot_id` `available` -> `restoring`, in one
    /// transaction, if that snapshot is still the volume's newest.
    pub async fn start_revert(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        worker: &WorkerEntry,
    ) -> DbResult<RevertStart> {
        let mut tx = self.begin_write().await?;
        let volume = Transition {
            id: volume_id,
            from: &[VolumeStatus::Available],
            to: VolumeStatus::Reverting,
            host: None,
            error_message: None,
        };
        if !volume.run(&mut *tx).await? {
            return Ok(RevertStart::VolumeMoved);
        }
        let snapshot = cas_status(
            &mut tx,
            "snapshots",
            snapshot_id,
            &[SnapshotStatus::Available.as_str()],
            SnapshotStatus::Restoring.as_str(),
            None,
            "",
            "",
        )
        .await?;
        if !snapshot {
            return Ok(RevertStart::SnapshotMoved);
        }
        // After both CASes (see the table above): a snapshot created meanwhile
        // either committed before (seen here) or waits for the volume's row.
        if let Some(newest) = newest_snapshot_in(&mut tx, volume_id).await?
            && newest != snapshot_id
        {
            return Ok(RevertStart::NotLatest(newest));
        }
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, volume_id);
        self.changed(ChangeKind::Snapshot, snapshot_id);
        Ok(RevertStart::Started)
    }

    /// The id of volume `volume_id`'s newest snapshot (any status), if any.
    pub async fn newest_snapshot(&self, volume_id: &str) -> DbResult<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        newest_snapshot_in(&mut conn, volume_id).await
    }

    /// Settles a revert in one transaction: volume `volume_id` `reverting` ->
    /// `available` (or `error` with `error`), snapshot `snapshot_id`
    /// `restoring` -> `available` either way, the worker entry removed.
    /// Whether the volume moved.
    pub async fn finish_revert(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        error: Option<&str>,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let to = if error.is_some() {
            VolumeStatus::Error
        } else {
            VolumeStatus::Available
        };
        let volume = Transition {
            id: volume_id,
            from: &[VolumeStatus::Reverting],
            to,
            host: None,
            error_message: Some(error.unwrap_or("")),
        };
        let won = volume.run(&mut *tx).await?;
        let snapshot = cas_status(
            &mut tx,
            "snapshots",
            snapshot_id,
            &[SnapshotStatus::Restoring.as_str()],
            SnapshotStatus::Available.as_str(),
            None,
            "",
            "",
        )
        .await?;
        if won {
            remove_worker(&mut *tx, WorkerKind::Volume, volume_id).await?;
        }
        tx.commit().await?;
        if won {
            self.changed(ChangeKind::Volume, volume_id);
        }
        if snapshot {
            self.changed(ChangeKind::Snapshot, snapshot_id);
        }
        Ok(won)
    }

    /// The snapshot of volume `volume_id` being restored into it (`restoring`), if any.
    pub async fn snapshot_restoring_into(&self, volume_id: &str) -> DbResult<Option<String>> {
        let row = sqlx::query(
            "SELECT id FROM snapshots WHERE volume_id = $1 AND status = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(volume_id)
        .bind(SnapshotStatus::Restoring.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("id")).transpose().map_err(Into::into)
    }
}

async fn newest_snapshot_in(
    conn: &mut sqlx::AnyConnection,
    volume_id: &str,
) -> DbResult<Option<String>> {
    let row = sqlx::query(
        "SELECT id FROM snapshots WHERE volume_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(volume_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("id")).transpose().map_err(Into::into)
}
