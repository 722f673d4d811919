//! Giving volumes and snapshots up without deleting their data (AdminService
//! UnmanageVolume / UnmanageSnapshot): the row goes, the backend object stays.
//! (Adopting one writes an ordinary `managing` row: [`Db::create_volume`],
//! [`Db::create_snapshot`].) Quota usage follows the rows (the triggers).
//!
//! | this | against | settled by |
//! | --- | --- | --- |
//! | unmanage volume V | a snapshot of V, an attach, a migration of V | one transaction: the delete of V's row is conditional on `available`, no snapshot and no `migrations` row; V's snapshots are re-counted after it (see `snapshots.rs` on PostgreSQL) |
//! | unmanage snapshot S | a volume being made from S, a revert to S | the delete of S's row is conditional on `available`; volumes `creating` from S are re-counted after it |

use super::{Db, DbResult, WorkerKind, snapshots::creating_from, workers::remove_worker};
use crate::{
    changes::ChangeKind,
    model::{SnapshotStatus, VolumeStatus},
};

/// The outcome of [`Db::unmanage_volume`] and [`Db::unmanage_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmanaged {
    /// The row is gone (its object stays on the backend).
    Removed,
    /// The row is gone already or not `available` (any more): nothing changed.
    WrongStatus,
    /// The volume has snapshots (their ids), or volumes are being created from
    /// the snapshot (their ids): nothing changed.
    InUse(Vec<String>),
    /// The volume is being moved, or its last migration's source object is
    /// still being removed: nothing changed.
    Moving,
}

impl Db {
    /// Removes volume `id`'s row if it is `available`, has no snapshots and
    /// is not being moved, with its failed attachments and worker entry.
    pub async fn unmanage_volume(&self, id: &str) -> DbResult<Unmanaged> {
        let mut tx = self.begin_write().await?;
        let moving: Option<String> =
            sqlx::query_scalar("SELECT volume_id FROM migrations WHERE volume_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if moving.is_some() {
            return Ok(Unmanaged::Moving);
        }
        let removed = sqlx::query(
            "DELETE FROM volumes WHERE id = $1 AND status = $2 \
             AND NOT EXISTS (SELECT 1 FROM snapshots WHERE volume_id = $1)",
        )
        .bind(id)
        .bind(VolumeStatus::Available.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let snapshots: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM snapshots WHERE volume_id = $1 ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !snapshots.is_empty() {
            return Ok(Unmanaged::InUse(snapshots));
        }
        if removed != 1 {
            return Ok(Unmanaged::WrongStatus);
        }
        let attachments: Vec<String> =
            sqlx::query_scalar("SELECT id FROM attachments WHERE volume_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM attachments WHERE volume_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        remove_worker(&mut *tx, WorkerKind::Volume, id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        for attachment in &attachments {
            self.changed(ChangeKind::Attachment, attachment);
        }
        Ok(Unmanaged::Removed)
    }

    /// Removes snapshot `id`'s row if it is `available` and no volume is
    /// being created from it, with its worker entry.
    pub async fn unmanage_snapshot(&self, id: &str) -> DbResult<Unmanaged> {
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query(
            "DELETE FROM snapshots WHERE id = $1 AND status = $2 \
             AND NOT EXISTS (SELECT 1 FROM volumes WHERE snapshot_id = $1 AND status = $3)",
        )
        .bind(id)
        .bind(SnapshotStatus::Available.as_str())
        .bind(VolumeStatus::Creating.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let users = creating_from(&mut tx, id).await?;
        if !users.is_empty() {
            return Ok(Unmanaged::InUse(users));
        }
        if removed != 1 {
            return Ok(Unmanaged::WrongStatus);
        }
        remove_worker(&mut *tx, WorkerKind::Snapshot, id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Snapshot, id);
        Ok(Unmanaged::Removed)
    }
}
