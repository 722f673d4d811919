//! `RetypeVolume`: `available` -> `retyping` (compare-and-set, with the new
//! type's per-type quota checked and a worker entry owned by the scheduler),
//! then a cast to the scheduler, which changes the type in place when the
//! volume's pool passes its filters for the new type, or (policy on demand)
//! starts a migration to a pool that does, or fails the retype (the volume
//! available again, old type, `migration_error` saying why). A cast that cannot
//! be sent puts the volume back.

use scoria_common::{
    RequestContext,
    db::{Owner, WorkerEntry, deadlines},
    events::Event,
    model::{Volume, VolumeStatus, now_ms},
};
use scoria_proto::{bus::RetypeVolume, v1 as pb};

use super::VolumeApi;
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    validate,
};

/// How long the scheduler (then a destination) has to finish a retype.
const RETYPE_DEADLINE: std::time::Duration = deadlines::OPERATION;

/// The policy a request asks for, checked.
pub(crate) fn migration_policy(value: i32) -> ApiResult<pb::MigrationPolicy> {
    match pb::MigrationPolicy::try_from(value) {
        Ok(pb::MigrationPolicy::Unspecified) => Ok(pb::MigrationPolicy::Never),
        Ok(policy) => Ok(policy),
        Err(_) => Err(ApiError::invalid(
            "migration_policy",
            format!("unknown migration policy {value}"),
        )),
    }
}

impl VolumeApi {
    #[tracing::instrument(skip_all, fields(volume_id = %req.id, new_volume_type = %req.new_volume_type))]
    pub(super) async fn retype(
        &self,
        ctx: &RequestContext,
        req: pb::RetypeVolumeRequest,
    ) -> ApiResult<Volume> {
        let id = validate::uuid("id", &req.id)?;
        if req.new_volume_type.trim().is_empty() {
            return Err(ApiError::invalid(
                "new_volume_type",
                "must name a volume type",
            ));
        }
        validate::text::line("new_volume_type", &req.new_volume_type)?;
        let policy = migration_policy(req.migration_policy)?;
        let new_type = match self.volume_type(&req.new_volume_type).await {
            Ok(found) => found,
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::invalid(
                    "new_volume_type",
                    format!("no volume type {:?}", req.new_volume_type),
                ));
            }
            Err(err) => return Err(err),
        };
        let volume = self.load(ctx, &id).await?;
        if new_type.name == volume.volume_type {
            return Err(ApiError::invalid(
                "new_volume_type",
                format!("the volume is of type {:?} already", new_type.name),
            ));
        }
        if volume.status != VolumeStatus::Available {
            return Err(ApiError::not_available(&volume, "retyped"));
        }
        let Some(host) = volume.host.clone() else {
            return Err(ApiError::Internal(format!(
                "available volume {id} has no host"
            )));
        };
        let intent = Intent::cast(&self.ports, format!("retype volume {id}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Retyping,
            Owner::Scheduler,
            deadlines::from_now(RETYPE_DEADLINE),
        );
        let won = self
            .db
            .start_retype(&id, &host, &new_type.name, &worker)
            .await
            .map_err(ApiError::db(format!("mark volume {id} retyping")))?;
        if !won {
            return Err(match self.load(ctx, &id).await {
                Ok(now) if now.status == VolumeStatus::Available => ApiError::WrongStatus {
                    kind: "volume",
                    id,
                    status: now.status.to_string(),
                    detail: ": it changed while the request was checked (or a migration \
                             of it is still being cleaned up); try again"
                        .into(),
                },
                Ok(now) => ApiError::not_available(&now, "retyped"),
                Err(err) => err,
            });
        }
        let retyping = Volume {
            status: VolumeStatus::Retyping,
            migration_error: String::new(),
            updated_at_ms: now_ms(),
            ..volume
        };
        let settler = self.ports.settler(&self.db);
        settler.announce(ctx, Event::VolumeRetypeStart, &retyping);
        let request = RetypeVolume {
            volume_id: id.clone(),
            new_type: new_type.name.clone(),
            extra_specs: new_type.extra_specs.clone().into_iter().collect(),
            host: host.clone(),
            policy: policy as i32,
            size_gib: retyping.size_gib,
            availability_zone: retyping.availability_zone.clone(),
        };
        let db = self.db.clone();
        let mut failed = retyping.clone();
        intent
            .send(
                self.ports.scheduler.retype_volume(ctx, request),
                |why| async move {
                    tracing::warn!(volume_id = %failed.id, error = %why, "retype not sent");
                    let message = format!("the retype could not be sent to a scheduler: {why}");
                    let volume_id = failed.id.clone();
                    let fail = db.fail_migration(&volume_id, &message);
                    let apply = |v: &mut Volume| {
                        v.status = VolumeStatus::Available;
                        v.migration_status = scoria_common::model::MigrationStatus::Error;
                        v.migration_error = message.clone();
                    };
                    settler
                        .settle(
                            ctx,
                            &mut failed,
                            fail,
                            apply,
                            Some(Event::VolumeRetypeError),
                        )
                        .await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, new_type = %new_type.name, ?policy, "volume retype requested");
        Ok(retyping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_defaults_to_never_and_an_unknown_one_names_its_field() {
        assert_eq!(
            migration_policy(0).expect("unspecified"),
            pb::MigrationPolicy::Never
        );
        assert_eq!(
            migration_policy(pb::MigrationPolicy::OnDemand as i32).expect("on demand"),
            pb::MigrationPolicy::OnDemand
        );
        let err = migration_policy(42).expect_err("unknown");
        assert!(
            matches!(&err, ApiError::InvalidField { field, .. } if field == "migration_policy"),
            "{err:?}"
        );
    }
}
