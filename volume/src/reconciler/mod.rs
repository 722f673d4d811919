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
//!    backup creating ───────────▶ its chunks released, error; volume back to available
//!    backup deleting ───────────▶ the backup delete handler again
//!    backup restoring ──────────▶ target volume error, backup available (a new
//!                                 volume still creating: left to its create)
//!    attachment entries ────────▶ VolumeManager::reconcile_attachments (settled from
//!                                 what really runs)
//! ```
//!
//! Every change is a compare-and-set on the entry as read (see
//! `scoria_common::db::workers`), so a scheduler's reaper acting at once cannot
//! fail the same work twice. Work a handler of this process is doing right now
//! ([`InFlight`]) is left alone whatever its deadline: its owner is alive. The
//! folder's `README.md` has the full diagram, attachments included, and says how
//! every change goes through the `Settler`.

use std::sync::Arc;

use scoria_common::{
    RequestContext,
    db::{DbError, WorkerEntry, WorkerKind, WorkerOutcome},
    ops::{OpsError, VolumeOps},
    service::overdue::{self, Failure, Overdue},
};

use crate::{BINARY, driver::ObjectKind, shared::Shared};

mod attachment;
mod backup;
mod snapshot;
mod volume;

pub use attachment::{AttachmentReconcile, PEER_DOWN_MS};

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
    /// The state it shares with the manager.
    shared: Shared,
    /// Where work is run again (deletes): the manager, through its port.
    ops: Arc<dyn VolumeOps>,
}

// === impl Reconciler ===

impl Reconciler {
    /// A reconciler acting through `shared` (the manager's state) that runs
    /// deletes again through `ops` (the manager, served on this host).
    pub fn new(shared: Shared, ops: Arc<dyn VolumeOps>) -> Self {
        Self { shared, ops }
    }

    /// Resolves every entry this service owns that is overdue now. A database
    /// error listing the entries fails the run; one resolving an entry is logged
    /// and the entry is tried again next run.
    #[tracing::instrument(skip_all, err, fields(host = %self.shared.host))]
    pub async fn run_once(&self) -> Result<ReconcileReport, DbError> {
        let host = self.shared.host.clone();
        let now = scoria_common::model::now_ms();
        let mut overdue = self.shared.db.overdue_workers(&host, now).await?;
        // Restores into new volumes no volume service claimed yet: anyone's.
        let unclaimed = self
            .shared
            .db
            .overdue_workers(scoria_common::db::SCHEDULER_OWNER, now)
            .await?;
        overdue.extend(
            unclaimed
                .into_iter()
                .filter(|e| e.kind == WorkerKind::Backup),
        );
        let mut report = ReconcileReport::default();
        let mut attachments = Vec::new();
        for entry in overdue {
            let id = entry.resource_id.clone();
            if self.shared.in_flight.contains(&id) {
                tracing::debug!(resource_id = %id, "overdue but in flight: left alone");
                report.skipped.push(id);
                continue;
            }
            let outcome = match entry.kind {
                WorkerKind::Volume => self.volume(&entry).await,
                WorkerKind::Snapshot => self.snapshot(&entry).await,
                WorkerKind::Backup => self.backup(&entry).await,
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
        self.migrated_away(now, &mut report).await;
        let metrics = &scoria_common::metrics::global().service;
        metrics.reconciled("failed", report.failed.len());
        metrics.reconciled("redone", report.redone.len());
        metrics.reconciled("finished", report.finished.len());
        metrics.reconciled("stale", report.stale.len());
        metrics.reconciled("skipped", report.skipped.len());
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

    /// Removes the old objects of volumes that migrated away from this
    /// backend whose cleanup cast did not do it by its deadline.
    async fn migrated_away(&self, now: i64, report: &mut ReconcileReport) {
        let rows = match self.shared.db.migrations_to_clean(&self.shared.host).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(%err, "cannot list the migrations to clean up");
                return;
            }
        };
        for migration in rows.into_iter().filter(|m| m.deadline_ms <= now) {
            let id = migration.volume_id.clone();
            if self.shared.in_flight.contains(&id) {
                continue;
            }
            match self.shared.clean_source(&migration).await {
                Ok(true) => report.finished.push(id),
                Ok(false) => report.skipped.push(id),
                Err(err) => {
                    tracing::warn!(volume_id = %id, %err, "cannot clean up a migrated volume's old object now");
                    report.skipped.push(id);
                }
            }
        }
    }

    pub(super) fn ctx() -> RequestContext {
        RequestContext::internal(BINARY)
    }

    /// `row`, the resource of `entry`, if it still is in the entry's status
    /// (`status` reads it). `None`: the entry is stale, the row moved on or gone
    /// (and then a create's or delete's leftover `kind` object goes too).
    pub(super) async fn current<T>(
        &self,
        entry: &WorkerEntry,
        kind: ObjectKind,
        row: Option<T>,
        status: impl FnOnce(&T) -> &'static str,
    ) -> Option<T> {
        let Some(row) = row else {
            if matches!(entry.status.as_str(), "creating" | "deleting") {
                let id = entry.resource_id.as_str();
                self.shared.remove_leftover_object(kind, id).await;
            }
            return None;
        };
        (status(&row) == entry.status).then_some(row)
    }

    /// Fails `resource` (the one `entry` names) as `failure` says.
    pub(super) async fn fail<T: Overdue>(
        &self,
        entry: &WorkerEntry,
        resource: &mut T,
        failure: Failure<'_, T::Status>,
    ) -> Result<WorkerOutcome, DbError> {
        let settler = &self.shared.settler;
        overdue::fail(settler, &Self::ctx(), entry, resource, failure).await
    }

    /// Removes a stale entry (if still as read).
    pub(super) async fn stale(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        self.shared.db.remove_worker_entry(entry).await?;
        tracing::info!(resource_id = %entry.resource_id, status = %entry.status, "stale worker entry removed");
        Ok(Resolved::Stale)
    }
}

/// How one entry was resolved.
pub(super) enum Resolved {
    Failed,
    Redone,
    Finished,
    Stale,
    Skipped,
}

impl From<WorkerOutcome> for Resolved {
    fn from(outcome: WorkerOutcome) -> Self {
        match outcome {
            WorkerOutcome::Done => Resolved::Failed,
            WorkerOutcome::Stale => Resolved::Stale,
            WorkerOutcome::Lost => Resolved::Skipped,
        }
    }
}

/// Why an entry could not be resolved this run.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResolveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Handler(#[from] crate::error::VolumeError),
    #[error(transparent)]
    Ops(#[from] OpsError),
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod tests;
