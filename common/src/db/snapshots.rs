//! The `snapshots` table, and the guards that keep snapshots and their volumes
//! consistent under races.
//!
//! Two pairs of operations race, and each pair is settled in the database:
//!
//! | this | against | settled by |
//! | --- | --- | --- |
//! | create a snapshot of volume V | delete volume V | both lock V's row; the delete re-counts V's snapshots after its CAS |
//! | create a volume from snapshot S | delete snapshot S | both lock S's row; the delete re-counts volumes being made from S after its CAS |
//!
//! The re-count after the CAS, in the same transaction, matters on PostgreSQL: a
//! CAS that waited for the other side's row lock re-checks only the row it
//! updates, with its subqueries seeing the statement's old snapshot; a new
//! statement sees what the other side committed. (SQLite runs one writer at a time,
//! so there the `NOT EXISTS` in the CAS already suffices.)

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Db, DbResult, WorkerEntry, WorkerKind,
    keyset::Keyset,
    placeholders,
    quota::{self, Demand},
    row::RowReader,
    workers::remove_worker,
};
use crate::{
    changes::ChangeKind,
    model::{AttachmentStatus, Snapshot, SnapshotStatus, VolumeStatus, now_ms},
};

const COLUMNS: &str = "id, project_id, user_id, volume_id, name, description, size_gib, status, \
    host, error_message, created_at, updated_at";

/// Which snapshots [`Db::list_snapshots`] returns: `(created_at, id)` order, keyset-paged.
#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    /// Only this project's (None: all projects).
    pub project_id: Option<String>,
    /// Only of this volume.
    pub volume_id: Option<String>,
    /// Only in this status.
    pub status: Option<SnapshotStatus>,
    /// Only after this `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: u32,
}

/// The outcome of [`Db::start_volume_delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeDeleteStart {
    /// The volume is `deleting` now.
    Started,
    /// The volume is gone or not in a deletable status (any more).
    WrongStatus,
    /// The volume has snapshots (their ids, oldest first): nothing changed.
    HasSnapshots(Vec<String>),
}

/// The outcome of [`Db::start_snapshot_delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDeleteStart {
    /// The snapshot is `deleting` now.
    Started,
    /// The snapshot is gone or not in a deletable status (any more).
    WrongStatus,
    /// Volumes are being created from the snapshot (their ids): nothing changed.
    InUse(Vec<String>),
}

impl Db {
    /// Inserts `snapshot` and its worker entry in one transaction, if volume
    /// `snapshot.volume_id` is in one of `volume_statuses`. The check is a
    /// compare-and-set on the volume's row (it changes only `updated_at`), so a
    /// racing [`Db::start_volume_delete`] either waits for this insert and sees the
    /// snapshot, or wins and makes this return `false` with nothing written. The
    /// snapshot must fit its project's quota
    /// ([`DbError::OverQuota`](super::DbError::OverQuota) otherwise, nothing written).
    pub async fn create_snapshot(
        &self,
        snapshot: &Snapshot,
        volume_statuses: &[VolumeStatus],
        worker: &WorkerEntry,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let volume_type: Option<String> =
            sqlx::query_scalar("SELECT volume_type FROM volumes WHERE id = $1")
                .bind(&snapshot.volume_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(volume_type) = volume_type else {
            return Ok(false);
        };
        let demand = Demand::snapshot(&snapshot.project_id, &volume_type, snapshot.size_gib);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let sql = format!(
            "UPDATE volumes SET updated_at = $1 WHERE id = $2 AND status IN ({})",
            placeholders(3, volume_statuses.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(&snapshot.volume_id);
        for status in volume_statuses {
            q = q.bind(status.as_str());
        }
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, size_gib, \
             status, host, error_message, created_at, updated_at, volume_type) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&snapshot.id)
        .bind(&snapshot.project_id)
        .bind(&snapshot.user_id)
        .bind(&snapshot.volume_id)
        .bind(&snapshot.name)
        .bind(&snapshot.description)
        .bind(snapshot.size_gib as i64)
        .bind(snapshot.status.as_str())
        .bind(snapshot.host.clone())
        .bind(&snapshot.error_message)
        .bind(snapshot.created_at_ms)
        .bind(snapshot.updated_at_ms)
        .bind(volume_type)
        .execute(&mut *tx)
        .await?;
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Snapshot, &snapshot.id);
        // Its volume's `updated_at` moved too.
        self.changed(ChangeKind::Volume, &snapshot.volume_id);
        Ok(true)
    }

    /// The snapshot `id`, of any project.
    pub async fn get_snapshot(&self, id: &str) -> DbResult<Option<Snapshot>> {
        self.get_by_id("snapshots", COLUMNS, id, snapshot_from_row)
            .await
    }

    /// Snapshots matching `query`, oldest first.
    pub async fn list_snapshots(&self, query: &SnapshotQuery) -> DbResult<Vec<Snapshot>> {
        let rows = Keyset::new("snapshots", COLUMNS)
            .eq("project_id", query.project_id.as_deref())
            .eq("volume_id", query.volume_id.as_deref())
            .eq("status", query.status.map(SnapshotStatus::as_str))
            .after(query.after.as_ref())
            .limit(Some(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// Compare-and-set: moves snapshot `id` to `to` if its status is one of `from`,
    /// setting `error_message` when given, and changes its worker entry in the same
    /// transaction: `Some(entry)` records the owner of the new transient status,
    /// `None` removes the entry (the status is settled). Returns whether it won.
    pub async fn transition_snapshot(
        &self,
        id: &str,
        from: &[SnapshotStatus],
        to: SnapshotStatus,
        error_message: Option<&str>,
        worker: Option<&WorkerEntry>,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        if !cas_snapshot(&mut tx, id, from, to, error_message, "").await? {
            return Ok(false);
        }
        match worker {
            Some(entry) => entry.upsert(&mut *tx).await?,
            None => remove_worker(&mut *tx, WorkerKind::Snapshot, id).await?,
        }
        tx.commit().await?;
        self.changed(ChangeKind::Snapshot, id);
        Ok(true)
    }

    /// Moves snapshot `id` from a deletable status to `deleting` (recording
    /// `worker`, or removing the entry when `None`), unless a volume is being
    /// created from it: see the module's notes on races.
    pub async fn start_snapshot_delete(
        &self,
        id: &str,
        worker: Option<&WorkerEntry>,
    ) -> DbResult<SnapshotDeleteStart> {
        let mut tx = self.pool.begin().await?;
        let guard = " AND NOT EXISTS (SELECT 1 FROM volumes WHERE snapshot_id = $4 AND status = 'creating')";
        let won = cas_snapshot(
            &mut tx,
            id,
            &SnapshotStatus::DELETABLE,
            SnapshotStatus::Deleting,
            None,
            guard,
        )
        .await?;
        let users = creating_from(&mut tx, id).await?;
        if !users.is_empty() {
            return Ok(SnapshotDeleteStart::InUse(users));
        }
        if !won {
            return Ok(SnapshotDeleteStart::WrongStatus);
        }
        match worker {
            Some(entry) => entry.upsert(&mut *tx).await?,
            None => remove_worker(&mut *tx, WorkerKind::Snapshot, id).await?,
        }
        tx.commit().await?;
        self.changed(ChangeKind::Snapshot, id);
        Ok(SnapshotDeleteStart::Started)
    }

    /// Whether snapshot `id` is `available`, asked as a compare-and-set that
    /// changes only `updated_at`, so it waits for (or blocks) a racing
    /// [`Db::start_snapshot_delete`]. Called after a volume from the snapshot was
    /// inserted: `false` means the snapshot went away and the volume must be undone.
    pub async fn confirm_snapshot_available(&self, id: &str) -> DbResult<bool> {
        let result =
            sqlx::query("UPDATE snapshots SET updated_at = $1 WHERE id = $2 AND status = $3")
                .bind(now_ms())
                .bind(id)
                .bind(SnapshotStatus::Available.as_str())
                .execute(&self.pool)
                .await?;
        let confirmed = result.rows_affected() == 1;
        if confirmed {
            self.changed(ChangeKind::Snapshot, id);
        }
        Ok(confirmed)
    }

    /// Removes snapshot `id` and its worker entry; whether a row was removed.
    pub async fn delete_snapshot_row(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        remove_worker(&mut *tx, WorkerKind::Snapshot, id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Snapshot, id);
        Ok(removed.rows_affected() == 1)
    }

    /// How many snapshots volume `volume_id` has (all statuses).
    pub async fn count_volume_snapshots(&self, volume_id: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM snapshots WHERE volume_id = $1")
            .bind(volume_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The ids of volume `volume_id`'s snapshots (all statuses), oldest first.
    pub async fn volume_snapshot_ids(&self, volume_id: &str) -> DbResult<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        snapshots_of(&mut conn, volume_id).await
    }

    /// Moves volume `id` from a deletable status to `deleting` (recording `worker`,
    /// or removing the volume's entry when `None`), unless it has snapshots. This is
    /// DeleteVolume's compare-and-set: see the module's notes on races.
    pub async fn start_volume_delete(
        &self,
        id: &str,
        worker: Option<&WorkerEntry>,
    ) -> DbResult<VolumeDeleteStart> {
        let mut tx = self.pool.begin().await?;
        // An attachment holds its volume even after an operator reset its status.
        let active = AttachmentStatus::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE volumes SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM snapshots WHERE volume_id = $3) \
             AND NOT EXISTS (SELECT 1 FROM attachments WHERE volume_id = $3 AND status IN ({active}))",
            placeholders(4, VolumeStatus::DELETABLE.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(VolumeStatus::Deleting.as_str())
            .bind(now_ms())
            .bind(id);
        for status in VolumeStatus::DELETABLE {
            q = q.bind(status.as_str());
        }
        let won = q.execute(&mut *tx).await?.rows_affected() == 1;
        // Re-counted after the CAS (see above); dropping `tx` rolls the CAS back.
        let snapshots = snapshots_of(&mut tx, id).await?;
        if !snapshots.is_empty() {
            return Ok(VolumeDeleteStart::HasSnapshots(snapshots));
        }
        if !won {
            return Ok(VolumeDeleteStart::WrongStatus);
        }
        match worker {
            Some(entry) => entry.upsert(&mut *tx).await?,
            None => remove_worker(&mut *tx, WorkerKind::Volume, id).await?,
        }
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(VolumeDeleteStart::Started)
    }
}

/// The snapshot CAS inside `tx`, with an extra `guard` condition that may use `$4`
/// (the id). Sets `error_message` when given, and `create_failed` (what the
/// snapshot holds of its quota depends on it).
async fn cas_snapshot(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    from: &[SnapshotStatus],
    to: SnapshotStatus,
    error_message: Option<&str>,
    guard: &str,
) -> DbResult<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let set = format!(", create_failed = {}", quota::create_failed("$1"));
    super::cas_status(
        tx,
        "snapshots",
        id,
        &from,
        to.as_str(),
        error_message,
        &set,
        guard,
    )
    .await
}

/// The ids of `volume_id`'s snapshots, oldest first.
async fn snapshots_of(conn: &mut sqlx::AnyConnection, volume_id: &str) -> DbResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM snapshots WHERE volume_id = $1 ORDER BY created_at, id")
        .bind(volume_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>("id")?))
        .collect()
}

/// The ids of the volumes being created from snapshot `snapshot_id`.
pub(super) async fn creating_from(
    conn: &mut sqlx::AnyConnection,
    snapshot_id: &str,
) -> DbResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM volumes WHERE snapshot_id = $1 AND status = $2 ORDER BY created_at, id",
    )
    .bind(snapshot_id)
    .bind(VolumeStatus::Creating.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>("id")?))
        .collect()
}

fn snapshot_from_row(row: &AnyRow) -> DbResult<Snapshot> {
    let read = RowReader::new(row, "snapshots")?;
    Ok(Snapshot {
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        volume_id: row.try_get("volume_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        size_gib: read.size_gib()?,
        status: read.parse("status")?,
        host: row.try_get("host")?,
        error_message: row.try_get("error_message")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        id: read.into_id(),
    })
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;
