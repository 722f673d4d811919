//! The reconciler: at start and every `reconcile_interval`, this volume service
//! resolves the work it owns (its `workers` entries) whose deadline passed — the
//! process that started it died, or a cast was lost — so no status stays
//! transient for ever:
//!
//! ```text
//!  entry owned by me, overdue, no handler on it right now
//!    resource gone ─────────────▶ entry removed (+ leftover object of a create/delete)
//!    not in the entry's status ─▶ entry removed (stale)
//!    volume creating ───────────▶ error "did not finish by its deadline", object removed
//!    volume deleting ───────────▶ the delete handler again (object, then row)
//!    volume extending ──────────▶ object bigger already: finished (available / in-use)
//!                                 else error_extending "did not finish by its deadline"
//!    snapshot creating ─────────▶ error, snapshot object removed
//!    snapshot deleting ─────────▶ the snapshot delete handler again
//!    attachment entries ────────▶ VolumeManager::reconcile_attachments (settled from
//!                                 what really runs)
//! ```
//!
//! Every change is a compare-and-set on the entry as read (see
//! `scoria_common::db::workers`), so a scheduler's reaper acting at once cannot
//! fail the same work twice. Work a handler of this process is doing right now
//! ([`InFlight`]) is left alone whatever its deadline: its owner is alive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use scoria_common::{
    RequestContext,
    db::{AttachmentQuery, DbError, WorkerEntry, WorkerKind, WorkerOutcome},
    model::{AttachmentStatus, SnapshotStatus, VolumeStatus},
    rpc::Priority,
};
use scoria_proto::bus::{DeleteSnapshot, DeleteVolume};

use crate::{
    BINARY,
    driver::{GIB, VolumeDriver},
    manager::VolumeManager,
};

/// The resources handlers of this process work on right now (counted: a
/// redelivered cast may run beside the first delivery).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, usize>>>);

/// Marks a resource in flight until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    set: InFlight,
    id: String,
}

impl InFlight {
    /// Marks `id` in flight until the guard is dropped.
    pub fn enter(&self, id: &str) -> InFlightGuard {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(id.to_owned()).or_insert(0) += 1;
        }
        InFlightGuard {
            set: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Whether a handler works on `id` right now.
    pub fn contains(&self, id: &str) -> bool {
        self.0
            .lock()
            .map(|map| map.contains_key(id))
            .unwrap_or(false)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.set.0.lock()
            && let Some(count) = map.get_mut(&self.id)
        {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// What one run did, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Work failed (moved to an error status).
    pub failed: Vec<String>,
    /// Work run again (deletes).
    pub redone: Vec<String>,
    /// Work found done on the backend and recorded (extends).
    pub finished: Vec<String>,
    /// Stale entries removed.
    pub stale: Vec<String>,
    /// Entries left alone (in flight, changed meanwhile, or not ours to settle).
    pub skipped: Vec<String>,
}

/// Resolves this service's overdue work.
pub struct Reconciler {
    manager: Arc<VolumeManager>,
}

impl Reconciler {
    /// A reconciler of `manager`'s backend.
    pub fn new(manager: Arc<VolumeManager>) -> Self {
        Self { manager }
    }

    /// Resolves every entry this service owns that is overdue now. A database
    /// error listing the entries fails the run; one resolving an entry is logged
    /// and the entry is tried again next run.
    #[tracing::instrument(skip_all, err, fields(host = %self.manager.settings().host))]
    pub async fn run_once(&self) -> Result<ReconcileReport, DbError> {
        let host = self.manager.settings().host.clone();
        let overdue = self
            .manager
            .db()
            .overdue_workers(&host, scoria_common::model::now_ms())
            .await?;
        let mut report = ReconcileReport::default();
        let mut attachments = Vec::new();
        for entry in overdue {
            let id = entry.resource_id.clone();
            if self.manager.in_flight().contains(&id) {
                tracing::debug!(resource_id = %id, "overdue but in flight: left alone");
                report.skipped.push(id);
                continue;
            }
            let outcome = match entry.kind {
                WorkerKind::Volume => self.volume(&entry).await,
                WorkerKind::Snapshot => self.snapshot(&entry).await,
                WorkerKind::Attachment => {
                    attachments.push(entry);
                    continue;
                }
            };
            match outcome {
                Ok(outcome) => {
                    let list = match outcome {
                        Resolved::Failed => &mut report.failed,
                        Resolved::Redone => &mut report.redone,
                        Resolved::Finished => &mut report.finished,
                        Resolved::Stale => &mut report.stale,
                        Resolved::Skipped => &mut report.skipped,
                    };
                    list.push(id);
                }
                Err(err) => {
                    tracing::warn!(resource_id = %id, %err, "cannot resolve overdue work now");
                    report.skipped.push(id);
                }
            }
        }
        if !attachments.is_empty() {
            self.attachments(&attachments, &mut report).await;
        }
        if report != ReconcileReport::default() {
            tracing::info!(
                failed = report.failed.len(),
                redone = report.redone.len(),
                finished = report.finished.len(),
                stale = report.stale.len(),
                skipped = report.skipped.len(),
                "reconciled overdue work"
            );
        }
        Ok(report)
    }

    fn ctx() -> RequestContext {
        RequestContext::internal(BINARY)
    }

    /// Removes a stale entry (if still as read).
    async fn stale(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        self.manager.db().remove_worker_entry(entry).await?;
        tracing::info!(resource_id = %entry.resource_id, status = %entry.status, "stale worker entry removed");
        Ok(Resolved::Stale)
    }

    async fn volume(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = self.manager.db();
        let Some(volume) = db.get_volume(id).await? else {
            if matches!(entry.status.as_str(), "creating" | "deleting") {
                self.manager.remove_leftover(id).await;
            }
            return self.stale(entry).await;
        };
        if volume.status.as_str() != entry.status {
            return self.stale(entry).await;
        }
        let host = &self.manager.settings().host;
        match volume.status {
            VolumeStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (volume {id} on {host})");
                match db
                    .fail_volume_worker(entry, VolumeStatus::Error, &message)
                    .await?
                {
                    WorkerOutcome::Done => {
                        tracing::warn!(volume_id = %id, "creation overdue: volume set to error");
                        self.manager.remove_leftover(id).await;
                        let mut failed = volume;
                        failed.status = VolumeStatus::Error;
                        failed.error_message = message;
                        self.manager
                            .notify(
                                &Self::ctx(),
                                Priority::Error,
                                "volume.create.error",
                                &failed,
                            )
                            .await;
                        Ok(Resolved::Failed)
                    }
                    WorkerOutcome::Stale => Ok(Resolved::Stale),
                    WorkerOutcome::Lost => Ok(Resolved::Skipped),
                }
            }
            VolumeStatus::Deleting => {
                tracing::info!(volume_id = %id, "deletion overdue: deleting again");
                self.manager
                    .delete(
                        &Self::ctx(),
                        DeleteVolume {
                            volume_id: id.to_owned(),
                        },
                    )
                    .await?;
                Ok(Resolved::Redone)
            }
            VolumeStatus::Extending => self.extending(entry, volume.size_gib).await,
            other => {
                tracing::warn!(volume_id = %id, status = %other, "overdue volume entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }

    /// An overdue extend: finished if the backend object is bigger than the row
    /// says (the extend ran, its record did not), else `error_extending`.
    async fn extending(
        &self,
        entry: &WorkerEntry,
        size_gib: u64,
    ) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = self.manager.db();
        let bytes = object_bytes(self.manager.driver().as_ref(), id).await;
        if let Some(bytes) = bytes
            && bytes % GIB == 0
            && bytes / GIB > size_gib
        {
            let attached = db
                .list_attachments(&AttachmentQuery {
                    volume_id: Some(id.to_owned()),
                    statuses: AttachmentStatus::ACTIVE.to_vec(),
                    ..Default::default()
                })
                .await?;
            let back_to = if attached.is_empty() {
                VolumeStatus::Available
            } else {
                VolumeStatus::InUse
            };
            let new_size = bytes / GIB;
            if db.finish_extend(id, new_size, back_to).await? {
                tracing::info!(volume_id = %id, new_size_gib = new_size, "overdue extend was done on the backend: recorded");
                if let Some(volume) = db.get_volume(id).await? {
                    self.manager
                        .notify(&Self::ctx(), Priority::Info, "volume.resize.end", &volume)
                        .await;
                }
                return Ok(Resolved::Finished);
            }
            return Ok(Resolved::Skipped);
        }
        let host = &self.manager.settings().host;
        let message = format!(
            "extending volume {id} did not finish by its deadline on {host}; the volume keeps {size_gib} GiB"
        );
        match db
            .fail_volume_worker(entry, VolumeStatus::ErrorExtending, &message)
            .await?
        {
            WorkerOutcome::Done => {
                tracing::warn!(volume_id = %id, "extend overdue: volume set to error_extending");
                if let Some(volume) = db.get_volume(id).await? {
                    self.manager
                        .notify(
                            &Self::ctx(),
                            Priority::Error,
                            "volume.resize.error",
                            &volume,
                        )
                        .await;
                }
                Ok(Resolved::Failed)
            }
            WorkerOutcome::Stale => Ok(Resolved::Stale),
            WorkerOutcome::Lost => Ok(Resolved::Skipped),
        }
    }

    async fn snapshot(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = self.manager.db();
        let Some(snapshot) = db.get_snapshot(id).await? else {
            if matches!(entry.status.as_str(), "creating" | "deleting") {
                self.manager.remove_leftover_snapshot(id).await;
            }
            return self.stale(entry).await;
        };
        if snapshot.status.as_str() != entry.status {
            return self.stale(entry).await;
        }
        let host = &self.manager.settings().host;
        match snapshot.status {
            SnapshotStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (snapshot {id} on {host})");
                match db
                    .fail_snapshot_worker(entry, SnapshotStatus::Error, &message)
                    .await?
                {
                    WorkerOutcome::Done => {
                        tracing::warn!(snapshot_id = %id, "snapshot overdue: set to error");
                        self.manager.remove_leftover_snapshot(id).await;
                        let mut failed = snapshot;
                        failed.status = SnapshotStatus::Error;
                        failed.error_message = message;
                        self.manager
                            .notify_snapshot(
                                &Self::ctx(),
                                Priority::Error,
                                "snapshot.create.error",
                                &failed,
                            )
                            .await;
                        Ok(Resolved::Failed)
                    }
                    WorkerOutcome::Stale => Ok(Resolved::Stale),
                    WorkerOutcome::Lost => Ok(Resolved::Skipped),
                }
            }
            SnapshotStatus::Deleting => {
                tracing::info!(snapshot_id = %id, "snapshot deletion overdue: deleting again");
                self.manager
                    .snapshot_delete(
                        &Self::ctx(),
                        DeleteSnapshot {
                            snapshot_id: id.to_owned(),
                        },
                    )
                    .await?;
                Ok(Resolved::Redone)
            }
            other => {
                tracing::warn!(snapshot_id = %id, status = %other, "overdue snapshot entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }

    /// Overdue attachment entries: stale ones go here; the rest are settled
    /// from what really runs by [`VolumeManager::reconcile_attachments`].
    async fn attachments(&self, entries: &[WorkerEntry], report: &mut ReconcileReport) {
        let mut live = Vec::new();
        for entry in entries {
            match self.manager.db().worker_is_stale(entry).await {
                Ok(true) => match self.stale(entry).await {
                    Ok(_) => report.stale.push(entry.resource_id.clone()),
                    Err(err) => {
                        tracing::warn!(attachment_id = %entry.resource_id, %err, "cannot remove stale entry now");
                        report.skipped.push(entry.resource_id.clone());
                    }
                },
                Ok(false) => live.push(entry.resource_id.clone()),
                Err(err) => {
                    tracing::warn!(attachment_id = %entry.resource_id, %err, "cannot check attachment now");
                    report.skipped.push(entry.resource_id.clone());
                }
            }
        }
        if live.is_empty() {
            return;
        }
        // Settled from the exports that really run by the manager's attachment
        // code (it owns the export manager).
        match self.manager.reconcile_attachments().await {
            Ok(settled) => {
                for id in live {
                    if settled.failed.contains(&id) || settled.failed_detach.contains(&id) {
                        report.failed.push(id);
                    } else if settled.attached.contains(&id) || settled.detached.contains(&id) {
                        report.finished.push(id);
                    } else {
                        report.skipped.push(id);
                    }
                }
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "cannot settle overdue attachments now");
                report.skipped.extend(live);
            }
        }
    }
}

/// How one entry was resolved.
enum Resolved {
    Failed,
    Redone,
    Finished,
    Stale,
    Skipped,
}

/// Why an entry could not be resolved this run.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{}", .0.message())]
    Handler(#[from] tonic::Status),
}

/// The virtual size of volume `id`'s backend object in bytes, if it can be read
/// (a raw file's length, a qcow2 header's size field).
async fn object_bytes(driver: &dyn VolumeDriver, id: &str) -> Option<u64> {
    let path = driver.volume_path(id).ok()?;
    match driver.format() {
        "raw" => tokio::fs::metadata(&path).await.ok().map(|m| m.len()),
        "qcow2" => {
            use tokio::io::AsyncReadExt;
            let mut header = [0u8; 32];
            let mut file = tokio::fs::File::open(&path).await.ok()?;
            file.read_exact(&mut header).await.ok()?;
            if &header[..4] != b"QFI\xfb" {
                return None;
            }
            let mut size = [0u8; 8];
            size.copy_from_slice(&header[24..32]);
            Some(u64::from_be_bytes(size))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
