//! The `services` table: who runs where, and their heartbeats. (The `workers`
//! table is in `workers.rs`.)

use sqlx::Row;

use super::{Db, DbResult};
use crate::model::{Service, now_ms};

// Kept for `volumes.rs`, whose callers are being edited elsewhere: the helper
// lives in `workers.rs`.
pub(super) use super::workers::remove_worker;

impl Db {
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

    /// Records that the service `binary` on `host` is a member of the cluster
    /// it serves as `cluster` (`cluster@backend`; empty: of none). Whether the
    /// service exists.
    pub async fn set_service_cluster(
        &self,
        binary: &str,
        host: &str,
        cluster: &str,
    ) -> DbResult<bool> {
        let updated =
            sqlx::query("UPDATE services SET cluster = $1 WHERE binary_name = $2 AND host = $3")
                .bind(cluster)
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
            "SELECT binary_name, host, availability_zone, disabled, disabled_reason, last_heartbeat, cluster \
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
                    cluster: row.try_get("cluster")?,
                })
            })
            .collect()
    }
}
