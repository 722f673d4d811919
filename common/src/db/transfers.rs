//! The `transfers` table: pending offers of a volume to another project, and
//! the transactions that move the volume with them.
//!
//! | this | against | settled by |
//! | --- | --- | --- |
//! | offer volume V | another offer, a delete, an attach, a snapshot of V | V moves `available` -> `awaiting-transfer` by compare-and-set in the offer's transaction; the others need V available (or in-use) |
//! | accept offer T | a second accept, a withdrawal, the expiry sweep of T | each removes T's row (`DELETE ... WHERE id`) in its transaction: exactly one removes it |
//!
//! An accept moves the volume's and its snapshots' `project_id`: the quota
//! triggers move their usage from the giver to the receiver in that same
//! transaction, after the receiver's quota was checked in it.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Db, DbResult,
    keyset::Keyset,
    quota::{self, Demand},
    row::RowReader,
    volumes::{Transition, get_volume_in},
};
use crate::{
    changes::ChangeKind,
    model::{Transfer, Volume, VolumeStatus},
};

const COLUMNS: &str = "id, volume_id, name, source_project_id, user_id, salt, key_hash, \
    no_snapshots, failed_attempts, created_at, expires_at";

/// Which transfers [`Db::list_transfers`] returns: `(created_at, id)` order,
/// keyset-paged.
#[derive(Debug, Clone, Default)]
pub struct TransferQuery {
    /// Only this project's offers (None: all projects).
    pub project_id: Option<String>,
    /// Only the offer of this volume.
    pub volume_id: Option<String>,
    /// Only offers that lapse after this time (ms): the pending ones.
    pub pending_at_ms: Option<i64>,
    /// Only after this `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: u32,
}

/// The outcome of [`Db::create_transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCreate {
    /// The transfer is recorded and the volume `awaiting-transfer`.
    Created,
    /// The volume is gone or not `available` (any more): nothing written.
    WrongStatus,
    /// The offer is `no_snapshots` but the volume has these snapshots: nothing
    /// written.
    HasSnapshots(Vec<String>),
}

/// The outcome of [`Db::accept_transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferAccept {
    /// The volume (and its snapshots) are the receiver's: the offer as it was,
    /// and the volume now.
    Accepted(Box<(Transfer, Volume)>),
    /// No such pending offer (unknown, expired, accepted or withdrawn already).
    NotFound,
    /// The offer is the receiver's own project's.
    OwnProject,
    /// The key is wrong: the attempt is counted (committed), nothing moved.
    WrongKey,
}

impl Db {
    /// Records `transfer` and moves its volume `available` -> `awaiting-transfer`
    /// in one transaction (see the module's notes on races).
    pub async fn create_transfer(&self, transfer: &Transfer) -> DbResult<TransferCreate> {
        let mut tx = self.begin_write().await?;
        let cas = Transition {
            id: &transfer.volume_id,
            from: &[VolumeStatus::Available],
            to: VolumeStatus::AwaitingTransfer,
            host: None,
            error_message: None,
        };
        if !cas.run(&mut *tx).await? {
            return Ok(TransferCreate::WrongStatus);
        }
        if transfer.no_snapshots {
            let snapshots: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM snapshots WHERE volume_id = $1 ORDER BY created_at, id",
            )
            .bind(&transfer.volume_id)
            .fetch_all(&mut *tx)
            .await?;
            if !snapshots.is_empty() {
                return Ok(TransferCreate::HasSnapshots(snapshots));
            }
        }
        sqlx::query(
            "INSERT INTO transfers (id, volume_id, name, source_project_id, user_id, salt, \
             key_hash, no_snapshots, failed_attempts, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&transfer.id)
        .bind(&transfer.volume_id)
        .bind(&transfer.name)
        .bind(&transfer.source_project_id)
        .bind(&transfer.user_id)
        .bind(&transfer.salt)
        .bind(&transfer.key_hash)
        .bind(i64::from(transfer.no_snapshots))
        .bind(i64::try_from(transfer.failed_attempts).unwrap_or(i64::MAX))
        .bind(transfer.created_at_ms)
        .bind(transfer.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &transfer.volume_id);
        Ok(TransferCreate::Created)
    }

    /// The transfer `id`, of any project, expired or not.
    pub async fn get_transfer(&self, id: &str) -> DbResult<Option<Transfer>> {
        self.get_by_id("transfers", COLUMNS, id, transfer_from_row)
            .await
    }

    /// Transfers matching `query`, oldest first.
    pub async fn list_transfers(&self, query: &TransferQuery) -> DbResult<Vec<Transfer>> {
        let mut keyset = Keyset::new("transfers", COLUMNS)
            .eq("source_project_id", query.project_id.as_deref())
            .eq("volume_id", query.volume_id.as_deref());
        if let Some(at) = query.pending_at_ms {
            keyset = keyset.later("expires_at", at);
        }
        let rows = keyset
            .after(query.after.as_ref())
            .limit(Some(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(transfer_from_row).collect()
    }

    /// Withdraws transfer `id`: its row removed and its volume
    /// `awaiting-transfer` -> `available`, in one transaction. The transfer as
    /// it was; `None`: there was no such row (nothing changed).
    pub async fn delete_transfer(&self, id: &str) -> DbResult<Option<Transfer>> {
        let mut tx = self.begin_write().await?;
        let Some(transfer) = take_transfer(&mut tx, id).await? else {
            return Ok(None);
        };
        let back = release_volume(&mut tx, &transfer.volume_id).await?;
        tx.commit().await?;
        if back {
            self.changed(ChangeKind::Volume, &transfer.volume_id);
        }
        Ok(Some(transfer))
    }

    /// Accepts transfer `id` for project `project_id` (user `user_id`) at
    /// `now_ms` if `key_matches` says the presented key is the offer's: in one
    /// transaction the offer is removed, the receiver's quota checked for the
    /// volume and its snapshots ([`DbError::OverQuota`](super::DbError::OverQuota):
    /// nothing written), and the volume (back to `available`) and its snapshots
    /// become the receiver's, their usage moving with them by the triggers. A
    /// wrong key is counted in its own committed write.
    pub async fn accept_transfer(
        &self,
        id: &str,
        project_id: &str,
        user_id: &str,
        now_ms: i64,
        key_matches: impl FnOnce(&Transfer) -> bool,
    ) -> DbResult<TransferAccept> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transfers WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(transfer) = row.as_ref().map(transfer_from_row).transpose()? else {
            return Ok(TransferAccept::NotFound);
        };
        if transfer.expires_at_ms <= now_ms {
            return Ok(TransferAccept::NotFound);
        }
        if !key_matches(&transfer) {
            sqlx::query("UPDATE transfers SET failed_attempts = failed_attempts + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(TransferAccept::WrongKey);
        }
        if transfer.source_project_id == project_id {
            return Ok(TransferAccept::OwnProject);
        }
        // Removing the row is the accept's claim: of racing accepts (and a
        // withdrawal, the sweep) exactly one removes it.
        if take_transfer(&mut tx, id).await?.is_none() {
            return Ok(TransferAccept::NotFound);
        }
        let Some(volume) = get_volume_in(&mut tx, &transfer.volume_id).await? else {
            return Ok(TransferAccept::NotFound);
        };
        if volume.status != VolumeStatus::AwaitingTransfer {
            // An operator reset it meanwhile: the offer no longer holds.
            return Ok(TransferAccept::NotFound);
        }
        // What the snapshots hold of the giver's quota, as the triggers count it.
        let held = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_gib), 0) AS BIGINT) AS gib \
             FROM snapshots WHERE volume_id = $1 AND create_failed = 0",
        )
        .bind(&volume.id)
        .fetch_one(&mut *tx)
        .await?;
        let (snapshots, snapshot_gib): (i64, i64) = (held.try_get("n")?, held.try_get("gib")?);
        let demand = Demand::transfer(
            project_id,
            &volume.volume_type,
            volume.size_gib,
            u64::try_from(snapshots).unwrap_or_default(),
            u64::try_from(snapshot_gib).unwrap_or_default(),
        );
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let at = crate::model::now_ms();
        let moved = sqlx::query(
            "UPDATE volumes SET project_id = $1, user_id = $2, status = $3, updated_at = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(VolumeStatus::Available.as_str())
        .bind(at)
        .bind(&volume.id)
        .bind(VolumeStatus::AwaitingTransfer.as_str())
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(TransferAccept::NotFound);
        }
        let snapshot_ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM snapshots WHERE volume_id = $1")
                .bind(&volume.id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE snapshots SET project_id = $1, user_id = $2, updated_at = $3 WHERE volume_id = $4",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(at)
        .bind(&volume.id)
        .execute(&mut *tx)
        .await?;
        let now = get_volume_in(&mut tx, &volume.id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &volume.id);
        for snapshot in &snapshot_ids {
            self.changed(ChangeKind::Snapshot, snapshot);
        }
        let transfer = Transfer {
            destination_project_id: Some(project_id.to_owned()),
            ..transfer
        };
        Ok(TransferAccept::Accepted(Box::new((
            transfer,
            now.unwrap_or(volume),
        ))))
    }

    /// Ends every transfer that lapsed by `now_ms`: its row removed and its
    /// volume back to `available`, one transaction each (racing sweeps of other
    /// API instances remove each row once). The transfers ended.
    pub async fn expire_transfers(&self, now_ms: i64, limit: u32) -> DbResult<Vec<Transfer>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM transfers WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut ended = Vec::new();
        for id in ids {
            let mut tx = self.begin_write().await?;
            let Some(transfer) = take_transfer(&mut tx, &id).await? else {
                continue;
            };
            if transfer.expires_at_ms > now_ms {
                continue;
            }
            let back = release_volume(&mut tx, &transfer.volume_id).await?;
            tx.commit().await?;
            if back {
                self.changed(ChangeKind::Volume, &transfer.volume_id);
            }
            ended.push(transfer);
        }
        Ok(ended)
    }
}

/// Removes transfer `id` inside `tx`: the row as it was, if this removed it.
async fn take_transfer(tx: &mut sqlx::AnyConnection, id: &str) -> DbResult<Option<Transfer>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transfers WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(transfer) = row.as_ref().map(transfer_from_row).transpose()? else {
        return Ok(None);
    };
    let removed = sqlx::query("DELETE FROM transfers WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok((removed.rows_affected() == 1).then_some(transfer))
}

/// Volume `id` `awaiting-transfer` -> `available` inside `tx`; whether it moved.
async fn release_volume(tx: &mut sqlx::AnyConnection, id: &str) -> DbResult<bool> {
    let cas = Transition {
        id,
        from: &[VolumeStatus::AwaitingTransfer],
        to: VolumeStatus::Available,
        host: None,
        error_message: None,
    };
    cas.run(&mut *tx).await
}

fn transfer_from_row(row: &AnyRow) -> DbResult<Transfer> {
    let read = RowReader::new(row, "transfers")?;
    let failed: i64 = row.try_get("failed_attempts")?;
    let no_snapshots: i64 = row.try_get("no_snapshots")?;
    Ok(Transfer {
        volume_id: row.try_get("volume_id")?,
        name: row.try_get("name")?,
        source_project_id: row.try_get("source_project_id")?,
        user_id: row.try_get("user_id")?,
        salt: row.try_get("salt")?,
        key_hash: row.try_get("key_hash")?,
        no_snapshots: no_snapshots != 0,
        failed_attempts: u64::try_from(failed).unwrap_or_default(),
        created_at_ms: row.try_get("created_at")?,
        expires_at_ms: row.try_get("expires_at")?,
        destination_project_id: None,
        id: read.into_id(),
    })
}
