//! The `volumes` table, with its `idempotency` keys and `workers` entries.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{
    Db, DbResult, WorkerEntry,
    keyset::Keyset,
    placeholders,
    quota::{self, Demand},
    row::RowReader,
};
use crate::{
    changes::ChangeKind,
    model::{Volume, VolumeStatus, now_ms},
};

const COLUMNS: &str = "id, project_id, user_id, name, description, size_gib, status, volume_type, \
    availability_zone, host, metadata, error_message, snapshot_id, source_volume_id, created_at, updated_at, \
    migration_status, migration_error";

/// An idempotency key of a create request: the key and a digest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's `request_id`.
    pub request_id: String,
    /// A digest of the request's fields, to tell a retry from a different request.
    pub request_hash: String,
}

/// The outcome of [`Db::create_volume`].
// Returned once per create and moved straight out: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The volume was inserted.
    New(Volume),
    /// The idempotency key was used before, for this volume id and request digest.
    Existing {
        /// The volume the key created.
        volume_id: String,
        /// The digest of the request that used the key.
        request_hash: String,
    },
}

/// Which volumes [`Db::list_volumes`] returns: `(created_at, id)` order, keyset-paged.
#[derive(Debug, Clone, Default)]
pub struct VolumeQuery {
    /// Only this project's (None: all projects).
    pub project_id: Option<String>,
    /// Only in this status.
    pub status: Option<VolumeStatus>,
    /// Only with exactly this name.
    pub name: Option<String>,
    /// Only after this `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: u32,
}

/// Changes of [`Db::update_volume`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct VolumeChanges {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New metadata (replaces all).
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Db {
    /// Inserts `volume`, its idempotency key and its worker entry in one
    /// transaction: intent is persisted before anything is published. The volume
    /// must fit its project's quota ([`DbError::OverQuota`](super::DbError::OverQuota)
    /// otherwise, nothing written); a reused key answers before the check.
    #[tracing::instrument(name = "db.create_volume", level = "debug", skip_all, fields(volume_id = %volume.id))]
    pub async fn create_volume(
        &self,
        volume: &Volume,
        key: Option<&IdempotencyKey>,
        worker: &WorkerEntry,
    ) -> DbResult<Created> {
        let mut tx = self.begin_write().await?;
        if let Some(key) = key {
            let inserted = sqlx::query(
                "INSERT INTO idempotency (project_id, request_id, request_hash, resource_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, request_id) DO NOTHING",
            )
            .bind(&volume.project_id)
            .bind(&key.request_id)
            .bind(&key.request_hash)
            .bind(&volume.id)
            .bind(volume.created_at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let row = sqlx::query(
                    "SELECT resource_id, request_hash FROM idempotency WHERE project_id = $1 AND request_id = $2",
                )
                .bind(&volume.project_id)
                .bind(&key.request_id)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Created::Existing {
                    volume_id: row.try_get("resource_id")?,
                    request_hash: row.try_get("request_hash")?,
                });
            }
        }
        let demand = Demand::volume(&volume.project_id, &volume.volume_type, volume.size_gib);
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        sqlx::query(
            "INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, volume_type, \
             availability_zone, host, metadata, error_message, snapshot_id, source_volume_id, created_at, updated_at, \
             migration_status, migration_error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&volume.id)
        .bind(&volume.project_id)
        .bind(&volume.user_id)
        .bind(&volume.name)
        .bind(&volume.description)
        .bind(volume.size_gib as i64)
        .bind(volume.status.as_str())
        .bind(&volume.volume_type)
        .bind(&volume.availability_zone)
        .bind(volume.host.clone())
        .bind(metadata_json(&volume.metadata))
        .bind(&volume.error_message)
        .bind(volume.snapshot_id.clone())
        .bind(volume.source_volume_id.clone())
        .bind(volume.created_at_ms)
        .bind(volume.updated_at_ms)
        .bind(volume.migration_status.as_str())
        .bind(&volume.migration_error)
        .execute(&mut *tx)
        .await?;
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &volume.id);
        Ok(Created::New(volume.clone()))
    }

    /// The volume `id`, of any project.
    #[tracing::instrument(name = "db.get_volume", level = "trace", skip_all, fields(volume_id = %id))]
    pub async fn get_volume(&self, id: &str) -> DbResult<Option<Volume>> {
        let mut conn = self.pool.acquire().await?;
        get_volume_in(&mut conn, id).await
    }

    /// Volumes matching `query`, oldest first.
    pub async fn list_volumes(&self, query: &VolumeQuery) -> DbResult<Vec<Volume>> {
        let rows = Keyset::new("volumes", COLUMNS)
            .eq("project_id", query.project_id.as_deref())
            .eq("status", query.status.map(VolumeStatus::as_str))
            .eq("name", query.name.as_deref())
            .after(query.after.as_ref())
            .limit(Some(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(volume_from_row).collect()
    }

    /// Applies `changes` to volume `id` of `project_id`; `None` if there is none.
    pub async fn update_volume(
        &self,
        id: &str,
        project_id: &str,
        changes: &VolumeChanges,
    ) -> DbResult<Option<Volume>> {
        let result = sqlx::query(
            "UPDATE volumes SET name = COALESCE($1, name), description = COALESCE($2, description), \
             metadata = COALESCE($3, metadata), updated_at = $4 WHERE id = $5 AND project_id = $6",
        )
        .bind(changes.name.clone())
        .bind(changes.description.clone())
        .bind(changes.metadata.as_ref().map(metadata_json))
        .bind(now_ms())
        .bind(id)
        .bind(project_id)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        self.changed(ChangeKind::Volume, id);
        self.get_volume(id).await
    }

    /// Compare-and-set: moves volume `id` to `to` if its status is one of `from`.
    /// Sets `host` and `error_message` when given. Returns whether it won.
    #[tracing::instrument(name = "db.transition_volume", level = "debug", skip_all, fields(volume_id = %id, to = ?to))]
    pub async fn transition_volume(
        &self,
        id: &str,
        from: &[VolumeStatus],
        to: VolumeStatus,
        host: Option<&str>,
        error_message: Option<&str>,
    ) -> DbResult<bool> {
        let cas = Transition {
            id,
            from,
            to,
            host,
            error_message,
        };
        let won = cas.run(&self.pool).await?;
        if won {
            self.changed(ChangeKind::Volume, id);
        }
        Ok(won)
    }

    /// [`Db::transition_volume`] and a worker entry change in one transaction:
    /// `Some(entry)` records the new transient status's owner and deadline, `None`
    /// removes the volume's entry (the status is settled).
    #[tracing::instrument(name = "db.transition_volume_with_worker", level = "debug", skip_all, fields(volume_id = %id, to = ?to))]
    pub async fn transition_volume_with_worker(
        &self,
        id: &str,
        from: &[VolumeStatus],
        to: VolumeStatus,
        host: Option<&str>,
        error_message: Option<&str>,
        worker: Option<&WorkerEntry>,
    ) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let cas = Transition {
            id,
            from,
            to,
            host,
            error_message,
        };
        if !cas.run(&mut *tx).await? {
            return Ok(false);
        }
        match worker {
            Some(entry) => entry.upsert(&mut *tx).await?,
            None => super::services::remove_worker(&mut *tx, super::WorkerKind::Volume, id).await?,
        }
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(true)
    }

    /// Removes volume `id` and its worker entry; whether a row was removed.
    pub async fn delete_volume_row(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let attachments: Vec<String> =
            sqlx::query_scalar("SELECT id FROM attachments WHERE volume_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        let removed = sqlx::query("DELETE FROM volumes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Failed attachments (`error_attaching`) do not hold a volume; they go with it.
        sqlx::query("DELETE FROM attachments WHERE volume_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::services::remove_worker(&mut *tx, super::WorkerKind::Volume, id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        for attachment in &attachments {
            self.changed(ChangeKind::Attachment, attachment);
        }
        Ok(removed.rows_affected() == 1)
    }

    /// Undoes [`Db::create_volume`] in one transaction: removes the volume row, its
    /// worker entry and (if given) the idempotency key that points at it, so a retry
    /// with the same `request_id` can succeed. Used when the first cast failed.
    pub async fn discard_created_volume(
        &self,
        volume: &Volume,
        key: Option<&IdempotencyKey>,
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key {
            sqlx::query(
                "DELETE FROM idempotency \
                 WHERE project_id = $1 AND request_id = $2 AND resource_id = $3",
            )
            .bind(&volume.project_id)
            .bind(&key.request_id)
            .bind(&volume.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM volumes WHERE id = $1")
            .bind(&volume.id)
            .execute(&mut *tx)
            .await?;
        super::services::remove_worker(&mut *tx, super::WorkerKind::Volume, &volume.id).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, &volume.id);
        Ok(())
    }

    /// How many volumes `project_id` has (all statuses).
    pub async fn count_volumes(&self, project_id: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM volumes WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Sets volume `id`'s status to `status` whatever it was (an admin's reset,
    /// any project) and removes its worker entry, in one transaction. A status
    /// that is not an error status clears `error_message`. Returns the volume as
    /// it is now, or `None` when there is no such volume.
    pub async fn reset_volume_status(
        &self,
        id: &str,
        status: VolumeStatus,
    ) -> DbResult<Option<Volume>> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(AssertSqlSafe(format!(
            "UPDATE volumes SET status = $1, updated_at = $2, create_failed = {}, \
             error_message = CASE WHEN $3 = 1 THEN error_message ELSE '' END WHERE id = $4",
            quota::create_failed("$1")
        )))
        .bind(status.as_str())
        .bind(now_ms())
        .bind(i64::from(status.is_error()))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(None);
        }
        super::services::remove_worker(&mut *tx, super::WorkerKind::Volume, id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM volumes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let volume = row.as_ref().map(volume_from_row).transpose()?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(volume)
    }

    /// Compare-and-set starting an extend to `new_size_gib`: `available` ->
    /// `extending` only while the volume still has `size_gib` (the size the
    /// request was checked against), with its worker entry, in one transaction.
    /// The growth must fit the project's quota (it is reserved until the extend
    /// ends; [`DbError::OverQuota`](super::DbError::OverQuota) otherwise, nothing
    /// written). A request checked against a stale size loses. Returns whether
    /// it won.
    pub async fn start_extend(
        &self,
        id: &str,
        size_gib: u64,
        new_size_gib: u64,
        worker: &WorkerEntry,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(volume) = get_volume_in(&mut tx, id).await? else {
            return Ok(false);
        };
        let demand = Demand::extend(
            &volume.project_id,
            &volume.volume_type,
            size_gib,
            new_size_gib,
        );
        quota::enforce(&mut tx, &self.quota_defaults, &demand).await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, updated_at = $2, extend_to = $6 \
             WHERE id = $3 AND status = $4 AND size_gib = $5",
        )
        .bind(VolumeStatus::Extending.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(VolumeStatus::Available.as_str())
        .bind(size_gib as i64)
        .bind(new_size_gib as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        worker.upsert(&mut *tx).await?;
        tx.commit().await?;
        self.changed(ChangeKind::Volume, id);
        Ok(true)
    }
}

/// One compare-and-set of a volume's status, in or out of a transaction.
pub(super) struct Transition<'a> {
    pub(super) id: &'a str,
    pub(super) from: &'a [VolumeStatus],
    pub(super) to: VolumeStatus,
    pub(super) host: Option<&'a str>,
    pub(super) error_message: Option<&'a str>,
}

impl Transition<'_> {
    /// Whether the row was in one of `from` (and so moved to `to`).
    pub(super) async fn run<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
        &self,
        executor: E,
    ) -> DbResult<bool> {
        let sql = format!(
            "UPDATE volumes SET status = $1, updated_at = $2, host = COALESCE($3, host), \
             error_message = COALESCE($4, error_message), create_failed = {} \
             WHERE id = $5 AND status IN ({})",
            quota::create_failed("$1"),
            placeholders(6, self.from.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(self.to.as_str())
            .bind(now_ms())
            .bind(self.host.map(str::to_owned))
            .bind(self.error_message.map(str::to_owned))
            .bind(self.id);
        for status in self.from {
            q = q.bind(status.as_str());
        }
        Ok(q.execute(executor).await?.rows_affected() == 1)
    }
}

/// The volume `id` as `conn` sees it (inside a transaction, say).
pub(crate) async fn get_volume_in(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> DbResult<Option<Volume>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM volumes WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(volume_from_row).transpose()
}

fn metadata_json(metadata: &BTreeMap<String, String>) -> String {
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

pub(super) fn volume_from_row(row: &AnyRow) -> DbResult<Volume> {
    let read = RowReader::new(row, "volumes")?;
    Ok(Volume {
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        size_gib: read.size_gib()?,
        status: read.parse("status")?,
        volume_type: row.try_get("volume_type")?,
        availability_zone: row.try_get("availability_zone")?,
        host: row.try_get("host")?,
        metadata: read.json("metadata")?,
        error_message: row.try_get("error_message")?,
        snapshot_id: row.try_get("snapshot_id")?,
        source_volume_id: row.try_get("source_volume_id")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        migration_status: read.parse("migration_status")?,
        migration_error: row.try_get("migration_error")?,
        id: read.into_id(),
    })
}
