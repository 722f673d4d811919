//! The reaper: every `reaper_interval`, a scheduler settles work whose owner will
//! not finish it, so no status stays transient for ever when a process is gone
//! for good. (A volume service resolves its own overdue work with its
//! reconciler; the reaper covers what no live volume service owns.)
//!
//! ```text
//!  owned by scoria-scheduler, overdue (the cast was lost, a scheduler died)
//!    volume gone / not creating ─▶ entry removed (stale)
//!    not retried yet ────────────▶ scheduled once more (last attempt), noted
//!                                  on the volume, new deadline
//!    retried already ────────────▶ error "no volume service took it in time"
//!  owned by a volume service that is down (no heartbeat for service_down_time), overdue
//!    resource gone / status moved ─▶ entry removed (stale)
//!    another up, enabled service of the same backend name can do it
//!      (a plain create; a delete on a shared backend) ─▶ entry moved, work cast there
//!    else ─▶ creating -> error, deleting -> error_deleting, extending ->
//!            error_extending, snapshots likewise, attaching -> error_attaching,
//!            detaching -> error_detaching; the message names the dead owner
//! ```
//!
//! Several schedulers may run: every change is a compare-and-set on the worker
//! entry as read (`scoria_common::db::workers`), so two reapers never both
//! reschedule, move or fail the same work.

mod orphans;

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    db::{Db, DbError, WorkerEntry, WorkerKind, WorkerOutcome},
    events::Event,
    model::{Volume, VolumeStatus, now_ms},
    ops::{SchedulerOps, VolumeOps},
    service::{
        SCHEDULER_OWNER,
        overdue::{self, Failure, Overdue},
    },
    settle::Settler,
};
use scoria_proto::bus::ScheduleCreateVolume;

use crate::BINARY;

/// The binary whose services own backend work.
const VOLUME_BINARY: &str = "scoria-volume";
/// The `error_message` of a `creating` volume the reaper scheduled once more.
pub const RESCHEDULED_NOTE: &str = "scheduling did not finish by its deadline: scheduled once more";

/// How the reaper decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ReaperSettings {
    /// A service whose last heartbeat is older than this is down.
    pub service_down_time: Duration,
    /// The attempt number a volume scheduled once more gets (the last allowed).
    pub max_attempts: u32,
    /// The deadline of work scheduled once more or handed over.
    pub deadline: Duration,
    /// Backends whose objects every service of that name reaches.
    pub shared_backends: Vec<String>,
}

impl ReaperSettings {
    /// The settings of `section`.
    pub fn from_section(section: &crate::config::SchedulerSection) -> Self {
        Self {
            service_down_time: section.service_down_time(),
            max_attempts: section.max_attempts.max(1),
            deadline: section.reaper_deadline(),
            shared_backends: section.shared_backends.clone(),
        }
    }
}

/// What one run did (resource ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Volumes scheduled once more.
    pub rescheduled: Vec<String>,
    /// Work handed to another service.
    pub taken_over: Vec<String>,
    /// Work failed.
    pub failed: Vec<String>,
    /// Stale entries removed.
    pub stale: Vec<String>,
    /// Entries left alone (someone else acted, or an error; tried next run).
    pub skipped: Vec<String>,
}

/// Settles work whose owner is gone.
pub struct Reaper {
    db: Db,
    settler: Settler,
    scheduler: Arc<dyn SchedulerOps>,
    volumes: Arc<dyn VolumeOps>,
    settings: ReaperSettings,
}

/// What became of one entry.
enum Reaped {
    Rescheduled,
    TakenOver,
    Failed,
    Stale,
    Skipped,
}

impl Reaper {
    /// A reaper changing statuses through `settler` (so failures announce their
    /// `.error` event), scheduling volumes once more through `scheduler` and
    /// handing work over to other volume services through `volumes`.
    pub fn new(
        settler: Settler,
        scheduler: Arc<dyn SchedulerOps>,
        volumes: Arc<dyn VolumeOps>,
        settings: ReaperSettings,
    ) -> Self {
        Self {
            db: settler.db().clone(),
            settler,
            scheduler,
            volumes,
            settings,
        }
    }

    /// One pass over the overdue entries of the scheduler and of down services.
    #[tracing::instrument(name = "scheduler.reap", skip_all, err)]
    pub async fn run_once(&self) -> Result<ReapReport, DbError> {
        let now = now_ms();
        let mut report = ReapReport::default();
        let mine = self.db.overdue_workers(SCHEDULER_OWNER, now).await?;
        let down_before = now - self.settings.service_down_time.as_millis() as i64;
        let orphans = self
            .db
            .orphaned_workers(VOLUME_BINARY, SCHEDULER_OWNER, down_before, now)
            .await?;
        for (entry, orphan) in mine
            .into_iter()
            .map(|e| (e, false))
            .chain(orphans.into_iter().map(|e| (e, true)))
        {
            let outcome = if orphan {
                self.orphan(&entry).await
            } else {
                self.unscheduled(&entry).await
            };
            let id = entry.resource_id.clone();
            match outcome {
                Ok(Reaped::Rescheduled) => report.rescheduled.push(id),
                Ok(Reaped::TakenOver) => report.taken_over.push(id),
                Ok(Reaped::Failed) => report.failed.push(id),
                Ok(Reaped::Stale) => report.stale.push(id),
                Ok(Reaped::Skipped) => report.skipped.push(id),
                Err(err) => {
                    tracing::warn!(resource_id = %id, %err, "cannot settle orphaned work now");
                    report.skipped.push(id);
                }
            }
        }
        let metrics = &scoria_common::metrics::global().service;
        metrics.reaped("rescheduled", report.rescheduled.len());
        metrics.reaped("taken_over", report.taken_over.len());
        metrics.reaped("failed", report.failed.len());
        metrics.reaped("stale", report.stale.len());
        metrics.reaped("skipped", report.skipped.len());
        if report != ReapReport::default() {
            tracing::info!(
                rescheduled = report.rescheduled.len(),
                taken_over = report.taken_over.len(),
                failed = report.failed.len(),
                stale = report.stale.len(),
                skipped = report.skipped.len(),
                "reaped overdue work"
            );
        }
        Ok(report)
    }

    async fn stale(&self, entry: &WorkerEntry) -> Result<Reaped, DbError> {
        self.db.remove_worker_entry(entry).await?;
        tracing::info!(resource_id = %entry.resource_id, status = %entry.status, owner = %entry.service, "stale worker entry removed");
        Ok(Reaped::Stale)
    }

    fn from_outcome(outcome: WorkerOutcome) -> Reaped {
        match outcome {
            WorkerOutcome::Done => Reaped::Failed,
            WorkerOutcome::Stale => Reaped::Stale,
            WorkerOutcome::Lost => Reaped::Skipped,
        }
    }

    // === retypes no scheduler handled ===

    /// A retype still owned by the scheduler past its deadline (its cast was
    /// lost): failed, the volume available with its old type.
    async fn overdue_retype(
        &self,
        entry: &WorkerEntry,
        volume: &mut scoria_common::model::Volume,
    ) -> Result<Reaped, DbError> {
        let id = volume.id.clone();
        let why = format!("the retype of volume {id} was not handled by its deadline");
        let db = self.db.clone();
        let apply = |v: &mut scoria_common::model::Volume| {
            v.status = VolumeStatus::Available;
            v.migration_status = scoria_common::model::MigrationStatus::Error;
            v.migration_error = why.clone();
            v.updated_at_ms = now_ms();
        };
        let ctx = RequestContext::internal(BINARY);
        let won = self
            .settler
            .settle(
                &ctx,
                volume,
                db.fail_migration(&id, &why),
                apply,
                Some(Event::VolumeRetypeError),
            )
            .await?;
        tracing::warn!(volume_id = %id, owner = %entry.service, won, "overdue retype failed");
        Ok(if won { Reaped::Failed } else { Reaped::Skipped })
    }

    // === volumes waiting to be scheduled ===

    async fn unscheduled(&self, entry: &WorkerEntry) -> Result<Reaped, DbError> {
        let volume = match entry.kind {
            WorkerKind::Volume => self.db.get_volume(&entry.resource_id).await?,
            _ => None,
        };
        if let Some(mut retyping) = volume.clone().filter(|v| {
            v.status == VolumeStatus::Retyping && entry.status == VolumeStatus::Retyping.as_str()
        }) {
            return self.overdue_retype(entry, &mut retyping).await;
        }
        let Some(mut volume) = volume.filter(|v| {
            v.status == VolumeStatus::Creating && entry.status == VolumeStatus::Creating.as_str()
        }) else {
            if self.db.worker_is_stale(entry).await? {
                return self.stale(entry).await;
            }
            tracing::warn!(resource_id = %entry.resource_id, status = %entry.status, "scheduler entry of an unexpected kind: left alone");
            return Ok(Reaped::Skipped);
        };
        let id = volume.id.clone();
        if volume.error_message == RESCHEDULED_NOTE {
            let message = format!(
                "No valid backend was found in time: volume {id} was not taken by any volume service, \
                 even after it was scheduled once more"
            );
            let failed = (VolumeStatus::Error, Event::VolumeCreateError);
            let outcome = self.fail(entry, &mut volume, failed, &message).await?;
            if outcome == WorkerOutcome::Done {
                tracing::warn!(volume_id = %id, "scheduling overdue twice: volume set to error");
            }
            return Ok(Self::from_outcome(outcome));
        }
        let request = self.schedule_request(&volume).await?;
        let deadline = now_ms() + self.settings.deadline.as_millis() as i64;
        let ctx = RequestContext::internal(BINARY);
        // Still `creating`, not a failure: noted on the volume, nothing announced.
        let noted = self.settler.settle(
            &ctx,
            &mut volume,
            self.db.note_rescheduled(entry, RESCHEDULED_NOTE, deadline),
            |v| {
                v.error_message = RESCHEDULED_NOTE.to_owned();
                v.updated_at_ms = now_ms();
            },
            None,
        );
        if !noted.await? {
            return Ok(Reaped::Skipped);
        }
        tracing::warn!(volume_id = %id, "scheduling overdue: scheduling the volume once more");
        if let Err(err) = self.scheduler.create_volume(&ctx, request).await {
            // The entry is overdue again at the new deadline, and then failed.
            tracing::warn!(volume_id = %id, error = %err, "cannot schedule the volume once more");
        }
        Ok(Reaped::Rescheduled)
    }

    /// Fails `resource` (the one `entry` names) into `to` with `message`,
    /// announcing `event` if the compare-and-set on the entry won.
    async fn fail<T: Overdue>(
        &self,
        entry: &WorkerEntry,
        resource: &mut T,
        (to, event): (T::Status, Event),
        message: &str,
    ) -> Result<WorkerOutcome, DbError> {
        let ctx = RequestContext::internal(BINARY);
        let failure = Failure { to, message, event };
        overdue::fail(&self.settler, &ctx, entry, resource, failure).await
    }

    /// The scheduling request of `volume`, rebuilt from the database.
    async fn schedule_request(&self, volume: &Volume) -> Result<ScheduleCreateVolume, DbError> {
        let extra_specs = match self.db.get_volume_type(&volume.volume_type).await? {
            Some(volume_type) => volume_type.extra_specs,
            None => Default::default(),
        };
        let required_host = if let Some(source) = volume.source_volume_id.as_deref() {
            self.db
                .get_volume(source)
                .await?
                .and_then(|v| v.host)
                .unwrap_or_default()
        } else if let Some(snapshot) = volume.snapshot_id.as_deref() {
            self.db
                .get_snapshot(snapshot)
                .await?
                .and_then(|s| s.host)
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ScheduleCreateVolume {
            volume_id: volume.id.clone(),
            size_gib: volume.size_gib,
            volume_type: volume.volume_type.clone(),
            availability_zone: volume.availability_zone.clone(),
            extra_specs,
            tried_hosts: Vec::new(),
            attempt: self.settings.max_attempts,
            last_error: RESCHEDULED_NOTE.to_owned(),
            snapshot_id: volume.snapshot_id.clone().unwrap_or_default(),
            source_volume_id: volume.source_volume_id.clone().unwrap_or_default(),
            required_host: required_host
                .split('#')
                .next()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
