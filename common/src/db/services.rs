//! The `services` table (heartbeats) and the `workers` table (who owns which
//! transient status, until when).

use sqlx::{Any, Executor, Row};

use super::{Db, DbResult};
use crate::model::{Service, now_ms};

/// The kind of resource a worker entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// A volume.
    Volume,
    /// A snapshot.
    Snapshot,
    /// An attachment.
    Attachment,
}

impl WorkerKind {
    fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Volume => "volume",
            WorkerKind::Snapshot => "snapshot",
            WorkerKind::Attachment => "attachment",
        }
    }
}

/// An operation in flight: a resource in a transient status, the service that
/// must finish it, and by when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    /// The resource kind.
    pub kind: WorkerKind,
    /// The resource id.
    pub resource_id: String,
    /// The transient status (`creating`, `deleting`, ...).
    pub status: String,
    /// The owning service (`scoria-scheduler`, or a volume service's `host@backend`).
    pub service: String,
    /// Deadline, ms since the epoch.
    pub deadline_ms: i64,
}

impl WorkerEntry {
    pub(crate) async fn upsert<'e, E: Executor<'e, Database = Any>>(
        &self,
        executor: E,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO workers (resource_type, resource_id, status, service, deadline, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (resource_type, resource_id) DO UPDATE SET \
             status = excluded.status, service = excluded.service, deadline = excluded.deadline",
        )
        .bind(self.kind.as_str())
        .bind(&self.resource_id)
        .bind(&self.status)
        .bind(&self.service)
        .bind(self.deadline_ms)
        .bind(now_ms())
        .execute(executor)
        .await?;
        Ok(())
    }
}

pub(crate) async fn remove_worker<'e, E: Executor<'e, Database = Any>>(
    executor: E,
    kind: WorkerKind,
    id: &str,
) -> DbResult<()> {
    sqlx::query("DELETE FROM workers WHERE resource_type = $1 AND resource_id = $2")
        .bind(kind.as_str())
        .bind(id)
        .execute(executor)
        .await?;
    Ok(())
}

impl Db {
    /// Records or moves a worker entry.
    pub async fn upsert_worker(&self, entry: &WorkerEntry) -> DbResult<()> {
        entry.upsert(&self.pool).await
    }

    /// The worker entry of a resource, if any.
    pub async fn get_worker(&self, kind: WorkerKind, id: &str) -> DbResult<Option<WorkerEntry>> {
        let row = sqlx::query(
            "SELECT status, service, deadline FROM workers WHERE resource_type = $1 AND resource_id = $2",
        )
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(WorkerEntry {
                kind,
                resource_id: id.to_owned(),
                status: row.try_get("status")?,
                service: row.try_get("service")?,
                deadline_ms: row.try_get("deadline")?,
            })
        })
        .transpose()
    }

    /// Records a heartbeat of `binary` on `host` (registering it on first beat).
    pub async fn heartbeat(
        &self,
        binary: &str,
        host: &str,
        availability_zone: &str,
    ) -> DbResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO services (binary_name, host, availability_zone, disabled, disabled_reason, last_heartbeat, created_at) \
             VALUES ($1, $2, $3, 0, '', $4, $5) ON CONFLICT (binary_name, host) DO UPDATE SET \
             last_heartbeat = excluded.last_heartbeat, availability_zone = excluded.availability_zone",
        )
        .bind(binary)
        .bind(host)
        .bind(availability_zone)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Enables or disables the service `binary` on `host`. Disabling records
    /// `reason`; enabling clears it (the reason given is ignored). Returns whether
    /// the service exists.
    pub async fn set_service_enabled(
        &self,
        binary: &str,
        host: &str,
        enabled: bool,
        reason: &str,
    ) -> DbResult<bool> {
        let reason = if enabled { "" } else { reason };
        let updated = sqlx::query(
            "UPDATE services SET disabled = $1, disabled_reason = $2 \
             WHERE binary_name = $3 AND host = $4",
        )
        .bind(i64::from(!enabled))
        .bind(reason)
        .bind(binary)
        .bind(host)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// The service `binary` on `host`, if registered.
    pub async fn get_service(&self, binary: &str, host: &str) -> DbResult<Option<Service>> {
        Ok(self
            .list_services()
            .await?
            .into_iter()
            .find(|s| s.binary == binary && s.host == host))
    }

    /// Every registered service.
    pub async fn list_services(&self) -> DbResult<Vec<Service>> {
        let rows = sqlx::query(
            "SELECT binary_name, host, availability_zone, disabled, disabled_reason, last_heartbeat \
             FROM services ORDER BY binary_name, host",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Service {
                    binary: row.try_get("binary_name")?,
                    host: row.try_get("host")?,
                    availability_zone: row.try_get("availability_zone")?,
                    disabled: row.try_get::<i64, _>("disabled")? != 0,
                    disabled_reason: row.try_get("disabled_reason")?,
                    last_heartbeat_ms: row.try_get("last_heartbeat")?,
                })
            })
            .collect()
    }
}
