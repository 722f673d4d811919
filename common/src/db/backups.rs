//! The `backups` table, and the guards that keep backups, their volumes and
//! their incremental children consistent under races.
//!
//! | this | against | settled by |
//! | --- | --- | --- |
//! | back volume V up | delete volume V | the backup moves V out of `available` (`backing-up`) by compare-and-set, or checks V in-use by one that changes only `updated_at` |
//! | restore into volume V | delete volume V | V moves to `restoring-backup` by compare-and-set in the restore's transaction |
//! | an incremental backup of B's volume | delete backup B | both lock B's row (the create's parent check is a compare-and-set on it); the delete re-counts B's children after its CAS |
//!
//! A backup's chunks are counted in the chunk index (`backup_chunks.rs`); the
//! rows here only say what each backup is.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Db, DbResult, WorkerEntry, WorkerKind,
    keyset::Keyset,
    placeholders,
    quota::{self, Demand},
    row::RowReader,
    volumes::Transition,
    workers::remove_worker,
};
use crate::{
    changes::ChangeKind,
    model::{Backup, BackupStatus, VolumeStatus, now_ms},
};

const COLUMNS: &str = "id, project_id, user_id, volume_id, parent_id, name, description, size_gib, \
    status, error_message, host, incremental, object_count, stored_bytes, restore_volume_id, \
    created_at, updated_at, \
    (SELECT COUNT(*) FROM backups c WHERE c.parent_id = backups.id) AS dependents";

/// Which backups [`Db::list_backups`] returns: `(created_at, id)` order, keyset-paged.
#[derive(Debug, Clone, Default)]
pub struct BackupQuery {
    /// Only this project's (None: all projects).
    pub project_id: Option<String>,
    /// Only of this volume.
    pub volume_id: Option<String>,
    /// Only in this status.
    pub status: Option<BackupStatus>,
    /// Only after this `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: u32,
}

/// The outcome of [`Db::start_backup_delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupDeleteStart {
    /// The backup is `deleting` now.
    Started,
    /// The backup is gone or not in a deletable status (any more).
    WrongStatus,
    /// Incremental backups build on it (their ids, oldest first): nothing changed.
    HasDependents(Vec<String>),
}

/// A volume's compare-and-set made in the transaction of a backup's.
#[derive(Debug, Clone, Copy)]
pub struct VolumeMove<'a> {
    /// The volume.
    pub id: &'a str,
    /// The statuses it may be in.
    pub from: &'a [VolumeStatus],
    /// Its new status.
    pub to: VolumeStatus,
    /// Why (for an error status).
    pub error_message: Option<&'a str>,
}

/// A backup's compare-and-set: from one of `from` to `to`, with what else
/// changes in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct BackupChange<'a> {
    /// The statuses the backup may be in.
    pub from: &'a [BackupStatus],
    /// The new status.
    pub to: BackupStatus,
    /// Why (for error statuses; `Some("")` clears it).
    pub error_message: Option<&'a str>,
    /// `(object_count, stored_bytes)` of a finished backup.
    pub stats: Option<(u64, u64)>,
    /// `Some(v)` sets `restore_volume_id` to `v` (`None` inside: cleared).
    pub restore_volume: Option<Option<&'a str>>,
    /// The worker entry of the new status (`None`: removed, the status is settled).
    pub worker: Option<&'a WorkerEntry>,
    /// A volume moved in the same transaction (best effort: a volume gone or in
    /// another status does not stop the backup's change).
    pub volume: Option<VolumeMove<'a>>,
}

impl<'a> BackupChange<'a> {
    /// From one of `from` to `to`, nothing else set, the worker entry removed.
    pub fn new(from: &'a [BackupStatus], to: BackupStatus) -> Self {
        Self {
            from,
            to,
            error_message: None,
            stats: None,
            restore_volume: None,
            worker: None,
            volume: None,
        }
    }

    /// Records why.
    pub fn error(mut self, message: &'a str) -> Self {
        self.error_message = Some(message);
        self
    }

    /// Records the owner of the new transient status.
    pub fn worker(mut self, entry: &'a WorkerEntry) -> Self {
        self.worker = Some(entry);
        self
    }

    /// Records what a finished backup stored.
    pub fn stats(mut self, object_count: u64, stored_bytes: u64) -> Self {
        self.stats = Some((object_count, stored_bytes));
        self
    }

    /// Sets (`Some`) or clears (`None`) the volume being restored into.
    pub fn restore_volume(mut self, volume_id: Option<&'a str>) -> Self {
        self.restore_volume = Some(volume_id);
        self
    }

    /// Moves a volume too, in the same transaction.
    pub fn volume(mut self, volume: VolumeMove<'a>) -> Self {
        self.volume = Some(volume);
        self
    }
}

impl Db {
    /// Inserts `backup` (`creating`) and its worker entry in one transaction, if
    /// volume `backup.volume_id` is in one of `volume_from`, moving it to
    /// `volume_to` (`None`: its status stays, only `updated_at` changes) by
    /// compare-and-set, and, for an incremental one, if its parent is still
    /// `available` (a compare-and-set changing only `updated_at`, so a racing
    /// [`Db::start_backup_delete`] of the parent either waits and sees the child,
    /// or wins and makes this return `false`). `false`: nothing written. The
    /// backup must fit its project's quota
    /// ([`DbError::OverQuota`](super::DbError::OverQuota) otherwise, nothing written).
    pub async fn create_backup(
        &self,
        backup: &Backup,
        volume_from: &[VolumeStatus],
        volume_to: Option<VolumeStatus>,
        worker: &WorkerEntry,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let demand = Demand::backup(&backup.project_id, backup.size_gib);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let sql = format!(
            "UPDATE volumes SET status = COALESCE($1, status), updated_at = $2 \
             WHERE id = $3 AND status IN ({})",
            placeholders(4, volume_from.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(volume_to.map(|s| s.as_str().to_owned()))
            .bind(now_ms())
            .bind(&backup.volume_id);
        for status in volume_from {
            q = q.bind(status.as_str());
        }
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(parent) = &backup.parent_id {
            let held =
                sqlx::query("UPDATE backups SET updated_at = $1 WHERE id = $2 AND status = $3")
                    .bind(now_ms())
                    .bind(parent)
                    .bind(BackupStatus::Available.as_str())
                    .execute(&mut *tx)
                    .await?;
            if held.rows_affected() != 1 {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO backups (id, project_id, user_id, volume_id, parent_id, name, description, \
             size_gib, status, error_message, host, incremental, object_count, stored_bytes, \
             restore_volume_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&backup.id)
        .bind(&backup.project_id)
        .bind(&backup.user_id)
        .bind(&backup.volume_id)
        .bind(backup.parent_id.clone())
        .bind(&backup.name)
        .bind(&backup.description)
        .bind(backup.size_gib as i64)
        .bind(backup.status.as_str())
        .bind(&backup.error_message)
        .bind(backup.host.clone())
        .bind(i64::from(backup.incremental))
        .bind(backup.object_count as i64)
        .bind(backup.stored_bytes as i64)
        .bind(backup.restore_volume_id.clone())
        .bind(backup.created_at_ms)
        .bind(backup.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &backup.volume_id);
        Ok(true)
    }

    /// The backup `id`, of any project.
    pub async fn get_backup(&self, id: &str) -> DbResult<Option<Backup>> {
        self.get_by_id("backups", COLUMNS, id, backup_from_row)
            .await
    }

    /// Backups matching `query`, oldest first.
    pub async fn list_backups(&self, query: &BackupQuery) -> DbResult<Vec<Backup>> {
        let rows = Keyset::new("backups", COLUMNS)
            .eq("project_id", query.project_id.as_deref())
            .eq("volume_id", query.volume_id.as_deref())
            .eq("status", query.status.map(BackupStatus::as_str))
            .after(query.after.as_ref())
            .limit(Some(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(backup_from_row).collect()
    }

    /// The latest `available` backup of volume `volume_id` (the parent of an
    /// incremental one), if any.
    pub async fn latest_available_backup(&self, volume_id: &str) -> DbResult<Option<Backup>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM backups WHERE volume_id = $1 AND status = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        )))
        .bind(volume_id)
        .bind(BackupStatus::Available.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(backup_from_row).transpose()
    }

    /// The `restoring` backup whose target is volume `volume_id`, if any.
    pub async fn backup_restoring_into(&self, volume_id: &str) -> DbResult<Option<Backup>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM backups WHERE restore_volume_id = $1 AND status = $2 LIMIT 1"
        )))
        .bind(volume_id)
        .bind(BackupStatus::Restoring.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(backup_from_row).transpose()
    }

    /// Compare-and-set: moves backup `id` as `change` says, with its worker entry
    /// and (best effort) its volume in the same transaction. Whether it won.
    pub async fn transition_backup(&self, id: &str, change: &BackupChange<'_>) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let won = cas_backup(&mut tx, id, change).await?;
        if !won {
            return Ok(false);
        }
        match change.worker {
            Some(entry) => entry.upsert(&mut *tx).await?,
            None => remove_worker(&mut *tx, WorkerKind::Backup, id).await?,
        }
        let mut volume_moved = None;
        if let Some(volume) = change.volume {
            let cas = Transition {
                id: volume.id,
                from: volume.from,
                to: volume.to,
                host: None,
                error_message: volume.error_message,
            };
            if cas.run(&mut *tx).await? {
                volume_moved = Some(volume.id);
            }
        }
        tx.commit().await?;
        if let Some(volume) = volume_moved {
            self.changed(ChangeKind::Volume, volume);
        }
        Ok(true)
    }

    /// Moves backup `id` from a deletable status to `deleting` (recording
    /// `worker`), unless incremental backups build on it: see the module's notes
    /// on races.
    pub async fn start_backup_delete(
        &self,
        id: &str,
        worker: &WorkerEntry,
    ) -> DbResult<BackupDeleteStart> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE backups SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM backups c WHERE c.parent_id = $3)",
            placeholders(4, BackupStatus::DELETABLE.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(BackupStatus::Deleting.as_str())
            .bind(now_ms())
            .bind(id);
        for status in BackupStatus::DELETABLE {
            q = q.bind(status.as_str());
        }
        let won = q.execute(&mut *tx).await?.rows_affected() == 1;
        // Re-counted after the CAS (see above); dropping `tx` rolls the CAS back.
        let children: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM backups WHERE parent_id = $1 ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !children.is_empty() {
            return Ok(BackupDeleteStart::HasDependents(children));
        }
        if !won {
            return Ok(BackupDeleteStart::WrongStatus);
        }
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        Ok(BackupDeleteStart::Started)
    }

    /// Moves backup `id` from `available` to `restoring` into volume
    /// `volume_id` (recording `worker`), and, when `volume_from` is given, that
    /// existing volume from one of those statuses to `restoring-backup`, in one
    /// transaction. Whether both moved (`false`: nothing changed).
    pub async fn start_backup_restore(
        &self,
        id: &str,
        volume_id: &str,
        volume_from: Option<&[VolumeStatus]>,
        worker: &WorkerEntry,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE backups SET status = $1, restore_volume_id = $2, updated_at = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(BackupStatus::Restoring.as_str())
        .bind(volume_id)
        .bind(now_ms())
        .bind(id)
        .bind(BackupStatus::Available.as_str())
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(from) = volume_from {
            let cas = Transition {
                id: volume_id,
                from,
                to: VolumeStatus::RestoringBackup,
                host: None,
                error_message: None,
            };
            if !cas.run(&mut *tx).await? {
                return Ok(false);
            }
        }
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        if volume_from.is_some() {
            self.changed(ChangeKind::Volume, volume_id);
        }
        Ok(true)
    }

    /// Removes backup `id` and its worker entry; whether a row was removed. Its
    /// chunk references must have been released first (see `backup_chunks.rs`).
    pub async fn delete_backup_row(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM backups WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        remove_worker(&mut *tx, WorkerKind::Backup, id).await?;
        tx.commit().await?;
        Ok(removed.rows_affected() == 1)
    }
}

/// The backup compare-and-set of `change` inside `tx`: status, `updated_at`,
/// and the error message, stats and restore target it sets.
async fn cas_backup(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    change: &BackupChange<'_>,
) -> DbResult<bool> {
    let sql = format!(
        "UPDATE backups SET status = $1, updated_at = $2, error_message = COALESCE($3, error_message), \
         object_count = COALESCE($4, object_count), stored_bytes = COALESCE($5, stored_bytes), \
         restore_volume_id = CASE WHEN $6 = 1 THEN $7 ELSE restore_volume_id END \
         WHERE id = $8 AND status IN ({})",
        placeholders(9, change.from.len())
    );
    let (count, bytes) = change
        .stats
        .map(|(c, b)| (Some(c as i64), Some(b as i64)))
        .unwrap_or_default();
    let (set_restore, restore) = match change.restore_volume {
        Some(v) => (1_i64, v.map(str::to_owned)),
        None => (0, None),
    };
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(change.to.as_str().to_owned())
        .bind(now_ms())
        .bind(change.error_message.map(str::to_owned))
        .bind(count)
        .bind(bytes)
        .bind(set_restore)
        .bind(restore)
        .bind(id.to_owned());
    for status in change.from {
        q = q.bind(status.as_str().to_owned());
    }
    Ok(q.execute(&mut *tx).await?.rows_affected() == 1)
}

fn backup_from_row(row: &AnyRow) -> DbResult<Backup> {
    let read = RowReader::new(row, "backups")?;
    let count = |column: &str| -> DbResult<u64> {
        let n: i64 = row.try_get(column)?;
        u64::try_from(n).map_err(|_| read.corrupt(format!("negative {column} {n}")))
    };
    Ok(Backup {
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        volume_id: row.try_get("volume_id")?,
        parent_id: row.try_get("parent_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        size_gib: read.size_gib()?,
        status: read.parse("status")?,
        error_message: row.try_get("error_message")?,
        host: row.try_get("host")?,
        incremental: row.try_get::<i64, _>("incremental")? != 0,
        has_dependents: row.try_get::<i64, _>("dependents")? > 0,
        object_count: count("object_count")?,
        stored_bytes: count("stored_bytes")?,
        restore_volume_id: row.try_get("restore_volume_id")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        id: read.into_id(),
    })
}

#[cfg(test)]
#[path = "backups_tests.rs"]
mod tests;
