//! The manager's `create_volume` handler.

use scoria_common::{
    RequestContext,
    db::WorkerKind,
    events::Event,
    model::{Volume, VolumeStatus, now_ms},
    settle::VolumeChange,
};
use scoria_proto::bus::{CreateVolume, ScheduleCreateVolume};

use super::{MAX_CREATE_ATTEMPTS, SCHEDULER_SERVICE, VolumeManager};
use crate::error::Result;

impl VolumeManager {
    pub(super) async fn create(&self, ctx: &RequestContext, request: CreateVolume) -> Result<()> {
        let id = request.volume_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let host = self.settings.host.as_str();
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!("volume was deleted before it was created: removing any leftover");
            self.shared.remove_leftover(id).await;
            return Ok(());
        };
        let here = volume
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h));
        if volume.status == VolumeStatus::RestoringBackup
            && here
            && self.resume_restore(ctx, id).await?
        {
            return Ok(());
        }
        if volume.status != VolumeStatus::Creating {
            if volume.status == VolumeStatus::Available
                && volume
                    .host
                    .as_deref()
                    .is_some_and(|h| self.settings.is_mine(h))
            {
                tracing::info!("volume already created here: redelivered cast ignored");
            } else {
                tracing::warn!(status = %volume.status, host = ?volume.host, "volume is not creating: cast ignored");
            }
            return Ok(());
        }
        // A stale delivery (this backend failed and the volume was rescheduled) must
        // not race the backend now creating it: the worker entry names the owner.
        let owner = self.shared.db.get_worker(WorkerKind::Volume, id).await?;
        if let Some(owner) = owner.filter(|w| {
            w.service.contains('@')
                && !self.settings.is_mine(&w.service)
                && w.deadline_ms > now_ms()
        }) {
            tracing::warn!(owner = %owner.service, "another backend is creating the volume: cast ignored");
            return Ok(());
        }
        if request.size_gib != volume.size_gib {
            tracing::warn!(
                requested = request.size_gib,
                row = volume.size_gib,
                "sizes differ: the row wins"
            );
        }
        let owner = self.worker(id, host);
        let claimed = self
            .shared
            .settler
            .volume(
                ctx,
                &mut volume,
                VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::Creating)
                    .host(host)
                    .worker(&owner),
                Some(Event::VolumeCreateStart),
            )
            .await?;
        if !claimed {
            tracing::info!("volume changed before it was claimed: cast ignored");
            return Ok(());
        }
        // The check and the make under one lock: schedulers each consume a
        // backend's space only in their own view, so two of them may both place
        // the last of it here; the second create finds it taken.
        let _space = self.space.lock().await;
        if let Some(refusal) = self.no_room_for(id, volume.size_gib).await {
            tracing::warn!(reason = %refusal, "no space for the volume: refused");
            drop(_space);
            return self.create_failed(ctx, request, volume, refusal).await;
        }
        let made = match volume.source_volume_id.as_deref() {
            Some(source) => {
                self.shared
                    .driver
                    .create_cloned_volume(id, source, volume.size_gib)
                    .await
            }
            None => match volume.snapshot_id.as_deref() {
                Some(snapshot) => {
                    self.shared
                        .driver
                        .create_volume_from_snapshot(id, snapshot, volume.size_gib)
                        .await
                }
                None => self.shared.driver.create_volume(id, volume.size_gib).await,
            },
        };
        match made {
            // A volume made for a restore gets the backup's bytes first.
            Ok(()) => match self.shared.db.backup_restoring_into(id).await? {
                Some(backup) => self.restore_created(ctx, volume, backup).await,
                None => self.create_done(ctx, volume).await,
            },
            Err(err) => {
                self.create_failed(ctx, request, volume, err.to_string())
                    .await
            }
        }
    }

    /// Why the backend cannot hold a new volume `id` of `size_gib` GiB (None: it
    /// can): its provisioned sizes plus this one above its capacity times the
    /// over-subscription ratio, less the reserved share (the scheduler's
    /// CapacityFilter for a thin pool). A volume already made is no new space; a
    /// backend that cannot tell its capacity is trusted (the scheduler checked).
    async fn no_room_for(&self, id: &str, size_gib: u64) -> Option<String> {
        let driver = &self.shared.driver;
        if driver.volume_exists(id).await.unwrap_or(false) {
            return None;
        }
        let stats = match driver.stats().await {
            Ok(stats) => stats,
            Err(err) => {
                tracing::warn!(%err, "backend capacity unknown: the create goes ahead");
                return None;
            }
        };
        let s = &self.settings;
        let reserved = (stats.total_gib * f64::from(s.reserved_percentage) / 100.0).floor();
        let room = stats.total_gib * s.max_over_subscription_ratio - stats.allocated_gib - reserved;
        (size_gib as f64 > room).then(|| {
            format!(
                "backend {} has no space for volume {id}: {size_gib} GiB asked, {:.1} GiB left \
                 ({:.1} GiB provisioned of {:.1} GiB, over-subscription ratio {}, {}% reserved)",
                s.host,
                room.max(0.0),
                stats.allocated_gib,
                stats.total_gib,
                s.max_over_subscription_ratio,
                s.reserved_percentage,
            )
        })
    }

    async fn create_done(&self, ctx: &RequestContext, mut volume: Volume) -> Result<()> {
        let id = volume.id.clone();
        let host = self.settings.host.as_str();
        let won = self
            .shared
            .settler
            .volume(
                ctx,
                &mut volume,
                VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::Available)
                    .host(host)
                    .error(""),
                Some(Event::VolumeCreateEnd),
            )
            .await?;
        if won {
            tracing::info!(size_gib = volume.size_gib, "volume created");
            return Ok(());
        }
        match self.shared.db.get_volume(&id).await? {
            Some(now)
                if now.status == VolumeStatus::Available
                    && now
                        .host
                        .as_deref()
                        .is_some_and(|h| self.settings.is_mine(h)) =>
            {
                tracing::info!("a concurrent delivery finished the volume first");
            }
            now => {
                tracing::warn!(status = ?now.map(|v| v.status), "volume changed while being created: removing the backend object");
                self.shared.remove_leftover(&id).await;
            }
        }
        Ok(())
    }

    async fn create_failed(
        &self,
        ctx: &RequestContext,
        request: CreateVolume,
        mut volume: Volume,
        reason: String,
    ) -> Result<()> {
        let id = volume.id.clone();
        let attempt = request.attempt.max(1);
        tracing::error!(attempt, reason, "backend failed to create the volume");
        // Compare-and-set first, the object removed only if it won: a redelivered
        // copy may have made the volume available meanwhile, and its object stays.
        if attempt < MAX_CREATE_ATTEMPTS {
            let mut tried_hosts = request.tried_hosts;
            let pool = if request.pool.is_empty() {
                self.settings.pool_key()
            } else {
                request.pool
            };
            if !tried_hosts.contains(&pool) {
                tried_hosts.push(pool);
            }
            // The scheduler owns the volume again before it hears of it, if the
            // volume still is `creating`.
            let scheduler = self.worker(&id, SCHEDULER_SERVICE);
            let handed_back = self
                .shared
                .settler
                .volume(
                    ctx,
                    &mut volume,
                    VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::Creating)
                        .worker(&scheduler),
                    // The reschedule is quiet: the next attempt announces its start.
                    None,
                )
                .await?;
            if !handed_back {
                tracing::info!("volume changed while failing: left as it is, not rescheduled");
                return Ok(());
            }
            self.shared.remove_leftover(&id).await;
            let reschedule = ScheduleCreateVolume {
                volume_id: id.clone(),
                size_gib: volume.size_gib,
                volume_type: request.volume_type,
                availability_zone: request.availability_zone,
                extra_specs: request.extra_specs,
                tried_hosts,
                attempt: attempt + 1,
                last_error: reason,
                // A copy can only be made where its source is.
                required_host: if request.snapshot_id.is_empty()
                    && request.source_volume_id.is_empty()
                {
                    String::new()
                } else {
                    self.settings.host.clone()
                },
                snapshot_id: request.snapshot_id,
                source_volume_id: request.source_volume_id,
            };
            tracing::info!(next_attempt = attempt + 1, "rescheduling the volume");
            return Ok(self.scheduler.create_volume(ctx, reschedule).await?);
        }
        let message = format!("creating volume {id} failed after {attempt} attempts: {reason}");
        let host = self.settings.host.as_str();
        let won = self
            .shared
            .settler
            .volume(
                ctx,
                &mut volume,
                VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::Error)
                    .host(host)
                    .error(&message),
                Some(Event::VolumeCreateError),
            )
            .await?;
        if won {
            self.shared.remove_leftover(&id).await;
            self.restore_target_failed(ctx, &id, &message).await?;
        } else {
            tracing::info!("volume changed while failing: left as it is");
        }
        Ok(())
    }
}
