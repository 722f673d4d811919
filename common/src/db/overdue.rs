//! Queries of the `workers` table for whoever finishes or fails work that did not
//! finish in time: a volume service's reconciler (its own overdue entries) and the
//! scheduler's reaper (entries whose owner is down, or the scheduler's own).
//!
//! Every change here is a compare-and-set on the whole entry (kind, id, status,
//! owner, deadline): whoever acts on an entry acts on the entry it read, so two
//! reapers (or a reaper and a reconciler) cannot both move or fail it, and an
//! entry rewritten meanwhile (a new operation, a new owner) is left alone.
//!
//! An entry is *stale* when its resource is gone or no longer in the entry's
//! status (a settle that forgot it, an operator's reset): it is removed.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Db, DbError, DbResult, WorkerEntry, WorkerKind};
use crate::{
    changes::ChangeKind,
    model::{SnapshotStatus, VolumeStatus, now_ms},
};

const COLUMNS: &str = "w.resource_type, w.resource_id, w.status, w.service, w.deadline";

/// The outcome of failing the resource of a worker entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// The resource moved to the new status; the entry is gone.
    Done,
    /// The resource was gone or no longer in the entry's status: the (stale)
    /// entry is gone, nothing else changed.
    Stale,
    /// The entry changed since it was read (someone else acted): nothing changed.
    Lost,
}

fn entry_from_row(row: &AnyRow) -> DbResult<WorkerEntry> {
    let kind: String = row.try_get("resource_type")?;
    let resource_id: String = row.try_get("resource_id")?;
    let Some(kind) = WorkerKind::parse(&kind) else {
        return Err(DbError::Corrupt {
            table: "workers",
            id: resource_id,
            reason: format!("unknown resource type {kind:?}"),
        });
    };
    Ok(WorkerEntry {
        kind,
        resource_id,
        status: row.try_get("status")?,
        service: row.try_get("service")?,
        deadline_ms: row.try_get("deadline")?,
    })
}

/// `WHERE` of the exact entry, its placeholders from `$first` (5 of them).
fn exact(first: usize) -> String {
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| format!("${}", first + i));
    format!(
        "resource_type = {a} AND resource_id = {b} AND status = {c} AND service = {d} AND deadline = {e}"
    )
}

/// Binds the entry's five fields in [`exact`]'s order.
fn bind_exact<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    entry: &WorkerEntry,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(entry.kind.as_str())
        .bind(entry.resource_id.clone())
        .bind(entry.status.clone())
        .bind(entry.service.clone())
        .bind(entry.deadline_ms)
}

impl Db {
    /// The entries owned by `service` whose deadline passed before `now_ms`,
    /// the most overdue first.
    pub async fn overdue_workers(&self, service: &str, now_ms: i64) -> DbResult<Vec<WorkerEntry>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workers w WHERE w.service = $1 AND w.deadline < $2 \
             ORDER BY w.deadline, w.resource_id"
        )))
        .bind(service)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// The entries overdue at `now_ms` whose owner is a `binary` service that is
    /// down: its last heartbeat is older than `down_before_ms`, or it has no
    /// `services` row at all. An owner that is a cluster (`cluster@backend`, the
    /// `services.cluster` of its members) is down only when every member is.
    /// Entries owned by `except` (the scheduler's own name) are not listed. The
    /// most overdue first.
    pub async fn orphaned_workers(
        &self,
        binary: &str,
        except: &str,
        down_before_ms: i64,
        now_ms: i64,
    ) -> DbResult<Vec<WorkerEntry>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workers w \
             WHERE w.deadline < $2 AND w.service <> $3 \
             AND NOT EXISTS (SELECT 1 FROM services s WHERE s.binary_name = $1 \
             AND (s.host = w.service OR s.cluster = w.service) AND s.last_heartbeat >= $4) \
             ORDER BY w.deadline, w.resource_id"
        )))
        .bind(binary)
        .bind(now_ms)
        .bind(except)
        .bind(down_before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Removes `entry` if it is still exactly as read; whether it did.
    pub async fn remove_worker_entry(&self, entry: &WorkerEntry) -> DbResult<bool> {
        let sql = format!("DELETE FROM workers WHERE {}", exact(1));
        let q = bind_exact(sqlx::query(AssertSqlSafe(sql)), entry);
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// Hands `entry`, if it is still exactly as read, to `service` with a new
    /// deadline; whether it did.
    pub async fn move_worker(
        &self,
        entry: &WorkerEntry,
        service: &str,
        deadline_ms: i64,
    ) -> DbResult<bool> {
        let sql = format!(
            "UPDATE workers SET service = $1, deadline = $2 WHERE {}",
            exact(3)
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(service.to_owned())
            .bind(deadline_ms);
        let q = bind_exact(q, entry);
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// A service starting work on resource `id` in `status` takes its entry
    /// (whoever held it) with its own deadline. Whether there was such an entry
    /// (none: the resource settled meanwhile, or it was never recorded).
    pub async fn claim_worker(
        &self,
        kind: WorkerKind,
        id: &str,
        status: &str,
        service: &str,
        deadline_ms: i64,
    ) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE workers SET service = $1, deadline = $2 \
             WHERE resource_type = $3 AND resource_id = $4 AND status = $5",
        )
        .bind(service)
        .bind(deadline_ms)
        .bind(kind.as_str())
        .bind(id)
        .bind(status)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails the volume of `entry` (a volume entry): if the entry is still exactly
    /// as read, removes it and moves the volume from the entry's status to `to`
    /// with `error_message`, in one transaction. A volume gone or in another
    /// status makes the entry stale (removed).
    pub async fn fail_volume_worker(
        &self,
        entry: &WorkerEntry,
        to: VolumeStatus,
        error_message: &str,
    ) -> DbResult<WorkerOutcome> {
        self.fail_worker(entry, WorkerKind::Volume, to.as_str(), error_message)
            .await
    }

    /// [`Db::fail_volume_worker`] for a snapshot entry.
    pub async fn fail_snapshot_worker(
        &self,
        entry: &WorkerEntry,
        to: SnapshotStatus,
        error_message: &str,
    ) -> DbResult<WorkerOutcome> {
        self.fail_worker(entry, WorkerKind::Snapshot, to.as_str(), error_message)
            .await
    }

    /// [`Db::fail_volume_worker`] for a backup entry.
    pub async fn fail_backup_worker(
        &self,
        entry: &WorkerEntry,
        to: crate::model::BackupStatus,
        error_message: &str,
    ) -> DbResult<WorkerOutcome> {
        self.fail_worker(entry, WorkerKind::Backup, to.as_str(), error_message)
            .await
    }

    async fn fail_worker(
        &self,
        entry: &WorkerEntry,
        kind: WorkerKind,
        to: &str,
        error_message: &str,
    ) -> DbResult<WorkerOutcome> {
        if entry.kind != kind {
            return Ok(WorkerOutcome::Lost);
        }
        let mut tx = self.pool.begin().await?;
        let sql = format!("DELETE FROM workers WHERE {}", exact(1));
        let removed = bind_exact(sqlx::query(AssertSqlSafe(sql)), entry)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed != 1 {
            return Ok(WorkerOutcome::Lost);
        }
        let sql = format!(
            "UPDATE {} SET status = $1, error_message = $2, updated_at = $3 \
             WHERE id = $4 AND status = $5",
            kind.table()
        );
        let moved = sqlx::query(AssertSqlSafe(sql))
            .bind(to.to_owned())
            .bind(error_message.to_owned())
            .bind(now_ms())
            .bind(entry.resource_id.clone())
            .bind(entry.status.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if moved == 1 {
            // Backups have no change feed (nothing watches them).
            let kind = match kind {
                WorkerKind::Volume => Some(ChangeKind::Volume),
                WorkerKind::Snapshot => Some(ChangeKind::Snapshot),
                WorkerKind::Attachment => Some(ChangeKind::Attachment),
                WorkerKind::Backup => None,
            };
            if let Some(kind) = kind {
                self.changed(kind, &entry.resource_id);
            }
        }
        Ok(if moved == 1 {
            WorkerOutcome::Done
        } else {
            WorkerOutcome::Stale
        })
    }

    /// Whether the resource of `entry` is gone or no longer in the entry's
    /// status (the entry is stale then).
    pub async fn worker_is_stale(&self, entry: &WorkerEntry) -> DbResult<bool> {
        let sql = format!("SELECT status FROM {} WHERE id = $1", entry.kind.table());
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(entry.resource_id.clone())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => true,
            Some(row) => row.try_get::<String, _>("status")? != entry.status,
        })
    }

    /// Records that a volume owned by the scheduler is being scheduled once more
    /// (its first cast was lost): if `entry` is still exactly as read, gives it
    /// `deadline_ms` and sets the `creating` volume's `error_message` to `note`,
    /// in one transaction. Whether it did (false: someone else acted, or the
    /// volume is no longer `creating`).
    pub async fn note_rescheduled(
        &self,
        entry: &WorkerEntry,
        note: &str,
        deadline_ms: i64,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("UPDATE workers SET deadline = $1 WHERE {}", exact(2));
        let moved = bind_exact(sqlx::query(AssertSqlSafe(sql)).bind(deadline_ms), entry)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 || entry.kind != WorkerKind::Volume {
            return Ok(false);
        }
        let noted = sqlx::query(
            "UPDATE volumes SET error_message = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(note)
        .bind(now_ms())
        .bind(entry.resource_id.clone())
        .bind(VolumeStatus::Creating.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if noted != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &entry.resource_id);
        Ok(true)
    }
}
