//! Retype and migration placement.
//!
//! ```text
//!  retype_volume: row gone / not `retyping` on that host ─▶ ack (redelivered)
//!                 the volume's pool passes CapabilitiesFilter for the new type
//!                     ──▶ retyping -> available, new type (quota checked)   volume.retype.end
//!                 else, policy never ──▶ available, old type, migration_error  volume.retype.error
//!                 else, on demand: filters as a create, never the volume's backend
//!                     none ──▶ available, old type, migration_error          volume.retype.error
//!                     one  ──▶ migration started (row `copying`, entry owned by
//!                              the destination), cast migrate_volume to it
//!  find_migration_host: filters as a create, never `exclude_host` (a call)
//!  check_host_fits: a fresh pool of the host passes CapabilitiesFilter for
//!                   the type (a call; ManageVolume asks before adopting)
//! ```

use scoria_common::{
    RequestContext,
    db::{DbError, MigrationStart, Owner, WorkerEntry, deadlines},
    events::Event,
    model::{MigrationStatus, Volume, VolumeStatus, now_ms},
};
use scoria_proto::{
    bus::{
        CheckHostFits, FindMigrationHost, HostFits, MigrateVolume, MigrationHost, RetypeVolume,
        ScheduleCreateVolume,
    },
    v1 as pb,
};
use tonic::Status;

use super::SchedulerManager;
use crate::{
    error::{Result, SchedulerError},
    filters::{CapabilitiesFilter, HostFilter, RequestSpec},
    host_state::Chosen,
};

impl SchedulerManager {
    /// The spec of placing volume `volume_id` elsewhere than `exclude_host`.
    fn elsewhere(
        volume_id: &str,
        size_gib: u64,
        volume_type: &str,
        extra_specs: std::collections::BTreeMap<String, String>,
        availability_zone: &str,
        exclude_host: &str,
    ) -> RequestSpec {
        RequestSpec::new(&ScheduleCreateVolume {
            volume_id: volume_id.to_owned(),
            size_gib,
            volume_type: volume_type.to_owned(),
            availability_zone: availability_zone.to_owned(),
            extra_specs,
            tried_hosts: vec![exclude_host.to_owned()],
            attempt: 1,
            ..Default::default()
        })
    }

    /// The best pool for `spec` (its size consumed), or why there is none.
    fn pick(&self, spec: &RequestSpec) -> std::result::Result<Chosen, String> {
        self.hosts
            .choose(now_ms(), spec.size_gib, |usable, skipped| {
                let outcome = self.pipeline.run(usable, skipped, spec);
                self.weigher
                    .best(&outcome.passed, spec)
                    .ok_or_else(|| outcome.explain())
            })
    }

    /// Whether a fresh pool of `host` passes the CapabilitiesFilter for `spec`.
    fn fits_in_place(&self, host: &str, spec: &RequestSpec) -> bool {
        self.hosts
            .pools(host, now_ms())
            .iter()
            .any(|pool| CapabilitiesFilter.passes(pool, spec))
    }

    /// The retype of `volume` failed: available again, old type, `why`.
    async fn fail_retype(
        &self,
        ctx: &RequestContext,
        volume: &mut Volume,
        why: &str,
    ) -> Result<()> {
        let db = self.settler.db().clone();
        let id = volume.id.clone();
        let apply = |v: &mut Volume| {
            v.status = VolumeStatus::Available;
            v.migration_status = MigrationStatus::Error;
            v.migration_error = why.to_owned();
            v.updated_at_ms = now_ms();
        };
        let won = self
            .settler
            .settle(
                ctx,
                volume,
                db.fail_migration(&id, why),
                apply,
                Some(Event::VolumeRetypeError),
            )
            .await
            .map_err(SchedulerError::db("fail the retype of", &id))?;
        if won {
            tracing::warn!(volume_id = %id, error = %why, "retype failed: volume available with its old type");
        }
        Ok(())
    }

    pub(super) async fn retype(&self, ctx: &RequestContext, request: RetypeVolume) -> Result<()> {
        let id = request.volume_id.as_str();
        let db = self.settler.db().clone();
        let volume = db
            .get_volume(id)
            .await
            .map_err(SchedulerError::db("read", id))?;
        let Some(mut volume) = volume else {
            tracing::info!(volume_id = %id, "volume gone: retype ignored");
            return Ok(());
        };
        if volume.status != VolumeStatus::Retyping
            || volume.host.as_deref() != Some(request.host.as_str())
        {
            tracing::info!(volume_id = %id, status = %volume.status, "volume not retyping on that host: retype cast ignored");
            return Ok(());
        }
        let spec = Self::elsewhere(
            id,
            request.size_gib,
            &request.new_type,
            request.extra_specs.clone(),
            &request.availability_zone,
            &request.host,
        );
        if self.fits_in_place(&request.host, &spec) {
            let new_type = request.new_type.clone();
            let apply = |v: &mut Volume| {
                v.status = VolumeStatus::Available;
                v.volume_type = new_type.clone();
                v.migration_error.clear();
                v.updated_at_ms = now_ms();
            };
            let finish = db.finish_retype(id, &request.host, &request.new_type);
            match self
                .settler
                .settle(
                    ctx,
                    &mut volume,
                    finish,
                    apply,
                    Some(Event::VolumeRetypeEnd),
                )
                .await
            {
                Ok(true) => {
                    tracing::info!(volume_id = %id, new_type = %request.new_type, "volume retyped in place");
                    return Ok(());
                }
                Ok(false) => {
                    tracing::info!(volume_id = %id, "volume changed meanwhile: retype left");
                    return Ok(());
                }
                Err(DbError::OverQuota(over)) => {
                    return self.fail_retype(ctx, &mut volume, &over.to_string()).await;
                }
                Err(err) => return Err(SchedulerError::db("retype", id)(err)),
            }
        }
        let policy = pb::MigrationPolicy::try_from(request.policy).unwrap_or_default();
        if policy != pb::MigrationPolicy::OnDemand {
            let why = format!(
                "backend {} does not satisfy the extra specs of volume type {:?} and the \
                 migration policy is never: retype with MIGRATION_POLICY_ON_DEMAND to move it",
                request.host, request.new_type
            );
            return self.fail_retype(ctx, &mut volume, &why).await;
        }
        let chosen = match self.pick(&spec) {
            Ok(chosen) => chosen,
            Err(explain) => {
                let why = format!(
                    "no other backend satisfies volume type {:?}: {explain}",
                    request.new_type
                );
                return self.fail_retype(ctx, &mut volume, &why).await;
            }
        };
        let dest = chosen.host.clone();
        let worker = WorkerEntry::volume(
            id,
            VolumeStatus::Retyping,
            Owner::Service(dest.clone()),
            deadlines::from_now(deadlines::OPERATION),
        );
        let start = MigrationStart {
            volume_id: id,
            from: VolumeStatus::Retyping,
            to: VolumeStatus::Retyping,
            source_host: &request.host,
            dest_host: &dest,
            new_type: Some(&request.new_type),
            worker: &worker,
        };
        match db.start_migration(&start).await {
            Ok(true) => {}
            Ok(false) => {
                self.hosts.release(&chosen);
                let why = "the volume has snapshots, or an earlier migration of it is still \
                           being cleaned up: it cannot move";
                return self.fail_retype(ctx, &mut volume, why).await;
            }
            Err(DbError::OverQuota(over)) => {
                self.hosts.release(&chosen);
                return self.fail_retype(ctx, &mut volume, &over.to_string()).await;
            }
            Err(err) => return Err(SchedulerError::db("start the migration of", id)(err)),
        }
        volume.migration_status = MigrationStatus::Migrating;
        self.settler
            .announce(ctx, Event::VolumeMigrateStart, &volume);
        let cast = MigrateVolume {
            volume_id: id.to_owned(),
        };
        if let Err(err) = self.volumes.migrate_volume(ctx, &dest, cast).await {
            self.hosts.release(&chosen);
            let why = format!(
                "the migration to {dest} could not be sent: {}",
                Status::from(err).message()
            );
            return self.fail_retype(ctx, &mut volume, &why).await;
        }
        tracing::info!(volume_id = %id, to = %chosen.pool_key, new_type = %request.new_type, "retype migrates the volume");
        Ok(())
    }

    pub(super) fn migration_host(&self, request: &FindMigrationHost) -> Result<MigrationHost> {
        let spec = Self::elsewhere(
            &request.volume_id,
            request.size_gib,
            &request.volume_type,
            request.extra_specs.clone(),
            &request.availability_zone,
            &request.exclude_host,
        );
        let chosen = self
            .pick(&spec)
            .map_err(|explain| SchedulerError::NoValidBackend {
                detail: format!(
                    "no backend other than {} can take volume {}: {explain}",
                    request.exclude_host, request.volume_id
                ),
            })?;
        tracing::info!(volume_id = %request.volume_id, pool = %chosen.pool_key, "migration destination picked");
        Ok(MigrationHost {
            host: chosen.host,
            pool: chosen.pool_key,
        })
    }

    /// Whether a fresh pool of `request.host` passes the CapabilitiesFilter
    /// for the type, and why not.
    pub(super) fn host_fits(&self, request: &CheckHostFits) -> HostFits {
        let now = now_ms();
        if self.hosts.pools(&request.host, now).is_empty() {
            return HostFits {
                fits: false,
                reason: format!(
                    "the scheduler has no fresh capability report of {} (is it up?)",
                    request.host
                ),
            };
        }
        let spec = Self::elsewhere(
            "",
            0,
            &request.volume_type,
            request.extra_specs.clone(),
            "",
            "",
        );
        if self.fits_in_place(&request.host, &spec) {
            return HostFits {
                fits: true,
                reason: String::new(),
            };
        }
        HostFits {
            fits: false,
            reason: format!(
                "no pool of {} satisfies the extra specs of volume type {}",
                request.host, request.volume_type
            ),
        }
    }
}
