//! The scheduler's handlers ([`SchedulerOps`]): take capability reports, and
//! place each new volume: filters -> weigher -> virtual consumption -> cast to
//! the chosen volume service (the next best if that cast cannot be delivered),
//! or the volume goes to `error` with the reason (through the [`Settler`], which
//! announces `volume.create.error`).
//!
//! The hot path touches no database: host state lives in memory behind a lock
//! that is never held across an await. Only a volume that cannot be placed
//! costs a read and a (compare-and-set) write.

use std::sync::Arc;

use async_trait::async_trait;
use scoria_common::{
    RequestContext,
    events::Event,
    model::{VolumeStatus, now_ms},
    ops::{OpsResult, SchedulerOps, VolumeOps},
    settle::{Settler, VolumeChange},
};
use scoria_proto::bus::{Capabilities, CreateVolume, GetPools, PoolList, ScheduleCreateVolume};
use tokio::sync::Notify;
use tonic::Status;

use crate::{
    config::SchedulerSection,
    error::{Result, SchedulerError},
    filters::{FilterPipeline, RequestSpec},
    host_state::{HostManager, ReportOutcome},
    weighers::CapacityWeigher,
};

/// The filter scheduler: implements [`SchedulerOps`].
pub struct SchedulerManager {
    hosts: Arc<HostManager>,
    pipeline: FilterPipeline,
    weigher: CapacityWeigher,
    volumes: Arc<dyn VolumeOps>,
    settler: Settler,
    max_attempts: u32,
    services_changed: Arc<Notify>,
}

impl SchedulerManager {
    /// A manager placing volumes on `hosts` as `settings` say, casting to the
    /// chosen volume service through `volumes`, failing the volumes it cannot
    /// place through `settler`. `Err` names an unknown filter.
    pub fn new(
        settings: &SchedulerSection,
        hosts: Arc<HostManager>,
        volumes: Arc<dyn VolumeOps>,
        settler: Settler,
    ) -> std::result::Result<Self, String> {
        Ok(Self {
            hosts,
            pipeline: FilterPipeline::from_names(&settings.enabled_filters)?,
            weigher: CapacityWeigher::new(settings.capacity_weight_multiplier),
            volumes,
            settler,
            max_attempts: settings.max_attempts.max(1),
            services_changed: Arc::new(Notify::new()),
        })
    }

    /// Notified when a report arrives from a host the `services` snapshot does
    /// not know yet: the refresher should re-read the table now.
    pub fn services_changed(&self) -> Arc<Notify> {
        self.services_changed.clone()
    }

    /// Moves the volume from `creating` to `error`, `why` its error message,
    /// through the settler: a win announces `volume.create.error`.
    async fn fail(&self, ctx: &RequestContext, volume_id: &str, why: SchedulerError) -> Result<()> {
        let message = why.to_string();
        let volume = self
            .settler
            .db()
            .get_volume(volume_id)
            .await
            .map_err(SchedulerError::db("read", volume_id))?;
        let Some(mut volume) = volume else {
            tracing::info!(%volume_id, error = %message, "volume could not be scheduled but is gone: nothing to fail");
            return Ok(());
        };
        let change =
            VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::Error).error(&message);
        let won = self
            .settler
            .volume(ctx, &mut volume, change, Some(Event::VolumeCreateError))
            .await
            .map_err(SchedulerError::db("fail", volume_id))?;
        if won {
            tracing::warn!(%volume_id, error = %message, "volume could not be scheduled: set to error");
        } else {
            tracing::info!(%volume_id, error = %message, "volume could not be scheduled but is no longer creating: left as is");
        }
        Ok(())
    }
}

/// Checks a `get_pools` host filter: empty (every host) or `host@backend`.
fn host_filter(host: &str) -> Result<()> {
    if host.is_empty() {
        return Ok(());
    }
    let well_formed = scoria_common::model::is_service_host(host);
    if well_formed {
        Ok(())
    } else {
        Err(SchedulerError::BadHostFilter {
            host: host.to_owned(),
        })
    }
}

/// `; last error: ...` when a reschedule carries one.
fn last_error_suffix(last_error: &str) -> String {
    if last_error.is_empty() {
        String::new()
    } else {
        format!("; last error: {last_error}")
    }
}

#[async_trait]
impl SchedulerOps for SchedulerManager {
    #[tracing::instrument(
        name = "scheduler.create_volume",
        skip_all,
        fields(volume_id = %request.volume_id, attempt = request.attempt, request_id = %ctx.request_id)
    )]
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> OpsResult<()> {
        let attempt = request.attempt.max(1);
        if attempt > self.max_attempts {
            let why = SchedulerError::TooManyAttempts {
                volume_id: request.volume_id.clone(),
                max_attempts: self.max_attempts,
                last_error: last_error_suffix(&request.last_error),
            };
            return Ok(self.fail(ctx, &request.volume_id, why).await?);
        }
        let mut spec = RequestSpec::new(&request);
        let mut tried = request.tried_hosts.clone();
        let mut undeliverable: Vec<String> = Vec::new();
        for _ in 0..self.max_attempts {
            let chosen = self
                .hosts
                .choose(now_ms(), spec.size_gib, |usable, skipped| {
                    let outcome = self.pipeline.run(usable, skipped, &spec);
                    self.weigher
                        .best(&outcome.passed, &spec)
                        .ok_or_else(|| outcome.explain())
                });
            let chosen = match chosen {
                Ok(chosen) => chosen,
                Err(explain) => {
                    let mut detail = explain;
                    if !undeliverable.is_empty() {
                        detail.push_str(&format!("; could not reach {}", undeliverable.join(", ")));
                    }
                    detail.push_str(&last_error_suffix(&request.last_error));
                    let why = SchedulerError::NoValidBackend { detail };
                    return Ok(self.fail(ctx, &request.volume_id, why).await?);
                }
            };
            tried.push(chosen.pool_key.clone());
            let availability_zone = if request.availability_zone.is_empty() {
                chosen.availability_zone.clone()
            } else {
                request.availability_zone.clone()
            };
            let cast = CreateVolume {
                volume_id: request.volume_id.clone(),
                size_gib: request.size_gib,
                pool: chosen.pool_key.clone(),
                tried_hosts: tried.clone(),
                attempt,
                volume_type: request.volume_type.clone(),
                availability_zone,
                extra_specs: request.extra_specs.clone(),
                snapshot_id: request.snapshot_id.clone(),
                source_volume_id: request.source_volume_id.clone(),
            };
            match self.volumes.create_volume(ctx, &chosen.host, cast).await {
                Ok(()) => {
                    tracing::info!(pool = %chosen.pool_key, size_gib = request.size_gib, "volume scheduled");
                    return Ok(());
                }
                Err(err) => {
                    let status = Status::from(err);
                    tracing::warn!(pool = %chosen.pool_key, error = %status.message(), "cast to the chosen backend failed; trying the next");
                    self.hosts.release(&chosen);
                    spec.tried_hosts.insert(chosen.pool_key.clone());
                    undeliverable.push(format!("{} ({})", chosen.pool_key, status.message()));
                }
            }
        }
        let why = SchedulerError::NoValidBackend {
            detail: format!(
                "could not reach {}{}",
                undeliverable.join(", "),
                last_error_suffix(&request.last_error)
            ),
        };
        Ok(self.fail(ctx, &request.volume_id, why).await?)
    }

    #[tracing::instrument(name = "scheduler.update_service_capabilities", skip_all, fields(host = %report.host))]
    async fn update_service_capabilities(
        &self,
        _ctx: &RequestContext,
        report: Capabilities,
    ) -> OpsResult<()> {
        if report.host.is_empty() {
            tracing::warn!("capability report without a host: ignored");
            return Ok(());
        }
        match self.hosts.update(&report, now_ms()) {
            ReportOutcome::Applied { known_service } => {
                tracing::debug!(pools = report.pools.len(), "capabilities updated");
                if !known_service {
                    self.services_changed.notify_one();
                }
            }
            ReportOutcome::Outdated => tracing::debug!("outdated capability report ignored"),
        }
        Ok(())
    }

    /// Every pool with a fresh report (see [`HostManager::pools`]), capacity
    /// as this scheduler sees it (virtual consumption included).
    #[tracing::instrument(name = "scheduler.get_pools", skip_all, fields(host = %request.host))]
    async fn get_pools(&self, _ctx: &RequestContext, request: GetPools) -> OpsResult<PoolList> {
        host_filter(&request.host)?;
        let pools = self
            .hosts
            .pools(&request.host, now_ms())
            .iter()
            .map(|p| p.to_storage_pool())
            .collect();
        Ok(PoolList { pools })
    }

    #[tracing::instrument(name = "scheduler.retype_volume", skip_all, fields(volume_id = %request.volume_id, new_type = %request.new_type, request_id = %ctx.request_id))]
    async fn retype_volume(
        &self,
        ctx: &RequestContext,
        request: scoria_proto::bus::RetypeVolume,
    ) -> OpsResult<()> {
        Ok(self.retype(ctx, request).await?)
    }

    #[tracing::instrument(name = "scheduler.find_migration_host", skip_all, fields(volume_id = %request.volume_id))]
    async fn find_migration_host(
        &self,
        _ctx: &RequestContext,
        request: scoria_proto::bus::FindMigrationHost,
    ) -> OpsResult<scoria_proto::bus::MigrationHost> {
        Ok(self.migration_host(&request)?)
    }

    #[tracing::instrument(name = "scheduler.check_host_fits", skip_all, fields(host = %request.host, volume_type = %request.volume_type))]
    async fn check_host_fits(
        &self,
        _ctx: &RequestContext,
        request: scoria_proto::bus::CheckHostFits,
    ) -> OpsResult<scoria_proto::bus::HostFits> {
        Ok(self.host_fits(&request))
    }
}

mod retype;

#[cfg(test)]
mod tests;
