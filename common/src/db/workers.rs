//! The `workers` table: every transient status has an owner and a deadline.
//!
//! A [`WorkerEntry`] names a resource in a transient status (`creating`,
//! `deleting`, `attaching`, ...), its [`Owner`] (the scheduler, or the volume
//! service `host@backend` that must finish it) and its deadline. The entry is
//! written in the same transaction as the status it is about, and removed in the
//! transaction that settles it.
//!
//! Past the deadline, whoever finishes or fails the work steps in: a volume
//! service's reconciler and the scheduler's reaper, through the compare-and-set
//! queries in `overdue.rs`.

use std::fmt;

use sqlx::{Any, Executor, Row};

use super::{Db, DbError, DbResult};
use crate::model::{AttachmentStatus, BackupStatus, SnapshotStatus, VolumeStatus, now_ms};

/// The owner name of a volume waiting for the scheduler (stored in
/// `workers.service`); every other owner is a volume service's `host@backend`.
pub const SCHEDULER_OWNER: &str = "scoria-scheduler";

/// The default deadlines of worker entries, each from the moment the entry is
/// written. Callers turn one into a deadline with [`deadlines::from_now`].
pub mod deadlines {
    use std::time::Duration;

    /// A volume the API created, owned by the scheduler until a backend claims it
    /// (the API's `CreateVolume`).
    pub const VOLUME_CREATE: Duration = Duration::from_secs(5 * 60);
    /// A volume the API moved to `deleting`, owned by its backend (the API's
    /// `DeleteVolume`).
    pub const VOLUME_DELETE: Duration = Duration::from_secs(10 * 60);
    /// A volume the API moved to `extending`, owned by its backend (the API's
    /// `ExtendVolume`).
    pub const VOLUME_EXTEND: Duration = Duration::from_secs(10 * 60);
    /// A volume the API moved to `reverting`, owned by its backend (the API's
    /// `RevertVolumeToSnapshot`: a full copy of the snapshot).
    pub const VOLUME_REVERT: Duration = Duration::from_secs(30 * 60);
    /// A snapshot the API created, owned by its volume's backend (the API's
    /// `CreateSnapshot`).
    pub const SNAPSHOT_CREATE: Duration = Duration::from_secs(10 * 60);
    /// A snapshot the API moved to `deleting`, owned by its backend (the API's
    /// `DeleteSnapshot`).
    pub const SNAPSHOT_DELETE: Duration = Duration::from_secs(10 * 60);
    /// A backup the API created, or moved to `deleting` or `restoring`, owned by
    /// the volume service that must do it (the API's BackupService); the data
    /// work of a large volume takes a while.
    pub const BACKUP: Duration = Duration::from_secs(60 * 60);
    /// How much longer than the bus's call timeout an attach or detach may stay
    /// in flight before the backend's reconciler takes it over (the API's
    /// attachment service adds it to `bus.call_timeout`).
    pub const ATTACH_MARGIN: Duration = Duration::from_secs(60);
    /// Work a volume service starts or claims (a create, a clone, a delete),
    /// owned by that service: the volume service's default
    /// `volume.operation_deadline_secs`.
    pub const OPERATION: Duration = Duration::from_secs(10 * 60);
    /// Work the scheduler's reaper schedules once more or hands to another
    /// backend: its default `scheduler.reaper_deadline_secs`.
    pub const REAPER: Duration = Duration::from_secs(5 * 60);

    /// The deadline `after` from `now_ms` (ms since the epoch), saturating.
    pub fn at(now_ms: i64, after: Duration) -> i64 {
        now_ms.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
    }

    /// The deadline `after` from now (ms since the epoch).
    pub fn from_now(after: Duration) -> i64 {
        at(crate::model::now_ms(), after)
    }
}

/// The kind of resource a worker entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// A volume.
    Volume,
    /// A snapshot.
    Snapshot,
    /// An attachment.
    Attachment,
    /// A backup.
    Backup,
}

impl WorkerKind {
    /// The name stored in `workers.resource_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Volume => "volume",
            WorkerKind::Snapshot => "snapshot",
            WorkerKind::Attachment => "attachment",
            WorkerKind::Backup => "backup",
        }
    }

    /// The table of the resources of this kind.
    pub(super) fn table(self) -> &'static str {
        match self {
            WorkerKind::Volume => "volumes",
            WorkerKind::Snapshot => "snapshots",
            WorkerKind::Attachment => "attachments",
            WorkerKind::Backup => "backups",
        }
    }

    /// The kind `workers.resource_type` names.
    pub(super) fn parse(s: &str) -> Option<Self> {
        [Self::Volume, Self::Snapshot, Self::Attachment, Self::Backup]
            .into_iter()
            .find(|kind| kind.as_str() == s)
    }
}

/// Who must finish the work of a worker entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The scheduler (a volume waiting to be placed), stored as
    /// [`SCHEDULER_OWNER`].
    Scheduler,
    /// A volume service, by its `host@backend`.
    Service(String),
}

impl Owner {
    /// The owner a stored `workers.service` names.
    pub fn parse(service: &str) -> Self {
        if service == SCHEDULER_OWNER {
            Owner::Scheduler
        } else {
            Owner::Service(service.to_owned())
        }
    }

    /// The name stored in `workers.service`.
    pub fn as_str(&self) -> &str {
        match self {
            Owner::Scheduler => SCHEDULER_OWNER,
            Owner::Service(host) => host,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transient status of a worker entry, typed by its resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientStatus {
    /// A volume's.
    Volume(VolumeStatus),
    /// A snapshot's.
    Snapshot(SnapshotStatus),
    /// An attachment's.
    Attachment(AttachmentStatus),
    /// A backup's.
    Backup(BackupStatus),
}

/// An operation in flight: a resource in a transient status, the service that
/// must finish it, and by when.
///
/// Build one with [`WorkerEntry::volume`], [`WorkerEntry::snapshot`] or
/// [`WorkerEntry::attachment`]; the fields stay public for existing callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    /// The resource kind.
    pub kind: WorkerKind,
    /// The resource id.
    pub resource_id: String,
    /// The transient status (`creating`, `deleting`, ...).
    pub status: String,
    /// The owning service ([`SCHEDULER_OWNER`], or a volume service's `host@backend`).
    pub service: String,
    /// Deadline, ms since the epoch.
    pub deadline_ms: i64,
}

// === impl WorkerEntry ===

impl WorkerEntry {
    /// The entry of volume `id` in `status`, owned by `owner` until
    /// `deadline_ms` (ms since the epoch; see [`deadlines`]).
    pub fn volume(id: &str, status: VolumeStatus, owner: Owner, deadline_ms: i64) -> Self {
        Self::new(WorkerKind::Volume, id, status.as_str(), owner, deadline_ms)
    }

    /// The entry of snapshot `id` in `status`; see [`WorkerEntry::volume`].
    pub fn snapshot(id: &str, status: SnapshotStatus, owner: Owner, deadline_ms: i64) -> Self {
        Self::new(
            WorkerKind::Snapshot,
            id,
            status.as_str(),
            owner,
            deadline_ms,
        )
    }

    /// The entry of backup `id` in `status`; see [`WorkerEntry::volume`].
    pub fn backup(id: &str, status: BackupStatus, owner: Owner, deadline_ms: i64) -> Self {
        Self::new(WorkerKind::Backup, id, status.as_str(), owner, deadline_ms)
    }

    /// The entry of attachment `id` in `status`; see [`WorkerEntry::volume`].
    pub fn attachment(id: &str, status: AttachmentStatus, owner: Owner, deadline_ms: i64) -> Self {
        Self::new(
            WorkerKind::Attachment,
            id,
            status.as_str(),
            owner,
            deadline_ms,
        )
    }

    fn new(kind: WorkerKind, id: &str, status: &str, owner: Owner, deadline_ms: i64) -> Self {
        let service = match owner {
            Owner::Scheduler => SCHEDULER_OWNER.to_owned(),
            Owner::Service(host) => host,
        };
        Self {
            kind,
            resource_id: id.to_owned(),
            status: status.to_owned(),
            service,
            deadline_ms,
        }
    }

    /// Who must finish the work.
    pub fn owner(&self) -> Owner {
        Owner::parse(&self.service)
    }

    /// The status, parsed by the entry's kind; a status no resource of that kind
    /// has is a corrupt row.
    pub fn transient_status(&self) -> DbResult<TransientStatus> {
        let parsed = match self.kind {
            WorkerKind::Volume => self.status.parse().map(TransientStatus::Volume),
            WorkerKind::Snapshot => self.status.parse().map(TransientStatus::Snapshot),
            WorkerKind::Attachment => self.status.parse().map(TransientStatus::Attachment),
            WorkerKind::Backup => self.status.parse().map(TransientStatus::Backup),
        };
        parsed.map_err(|reason| DbError::Corrupt {
            table: "workers",
            id: self.resource_id.clone(),
            reason,
        })
    }

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

/// Removes the entry of resource `id` of `kind`, whatever it holds (the
/// transaction that settles the resource calls it).
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
    #[tracing::instrument(name = "db.upsert_worker", level = "debug", skip_all, fields(resource_id = %entry.resource_id))]
    pub async fn upsert_worker(&self, entry: &WorkerEntry) -> DbResult<()> {
        entry.upsert(&self.pool).await
    }

    /// The worker entry of a resource, if any.
    #[tracing::instrument(name = "db.get_worker", level = "trace", skip_all, fields(resource_id = %id))]
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
}

#[cfg(test)]
#[path = "workers_tests.rs"]
mod tests;
