//! `MigrateVolume`: an available, unattached volume without snapshots goes
//! `available` -> `maintenance` with `migration_status` migrating (one
//! compare-and-set with its `migrations` row and a worker entry owned by the
//! destination), then a cast to the destination volume service, which copies
//! the bytes from an NBD export of the source and switches the volume (see
//! the volume service's `manager/migrate.rs`). An empty `host` asks a
//! scheduler for one (a call), filtered as a create, never the volume's own.

use scoria_common::{
    RequestContext,
    db::{MigrationStart, Owner, SnapshotQuery, WorkerEntry, deadlines},
    events::Event,
    model::{MigrationStatus, Volume, VolumeStatus, is_service_host, now_ms},
};
use scoria_proto::{
    bus::{FindMigrationHost, MigrateVolume},
    v1 as pb,
};
use tonic::Status;

use super::AdminApi;
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    validate,
    volume_type::require_admin,
};

/// The volume service's binary name in `services`.
const VOLUME_BINARY: &str = "scoria-volume";

/// `host` of a MigrateVolume request, checked: `host@backend`, a `#pool`
/// suffix dropped. `None`: the scheduler picks.
pub(crate) fn destination(host: &str) -> ApiResult<Option<String>> {
    if host.is_empty() {
        return Ok(None);
    }
    let backend = host.split_once('#').map_or(host, |(backend, _)| backend);
    if !is_service_host(backend) {
        return Err(ApiError::invalid(
            "host",
            format!(
                "must be host@backend or host@backend#pool, got {}",
                validate::shown(host)
            ),
        ));
    }
    Ok(Some(backend.to_owned()))
}

impl AdminApi {
    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, host = %req.host))]
    pub(super) async fn migrate(
        &self,
        ctx: &RequestContext,
        req: &pb::MigrateVolumeRequest,
    ) -> ApiResult<Volume> {
        require_admin(ctx, "MigrateVolume")?;
        let id = validate::uuid("volume_id", &req.volume_id)?;
        let asked = destination(&req.host)?;
        let volume = self
            .db
            .get_volume(&id)
            .await
            .map_err(ApiError::db(format!("get volume {id}")))?
            .ok_or_else(|| ApiError::volume_not_found(&id))?;
        let Some(source) = volume.host.clone() else {
            return Err(ApiError::NoBackend { kind: "volume", id });
        };
        if asked.as_deref() == Some(source.as_str()) {
            return Err(ApiError::invalid(
                "host",
                format!("the volume is on {source} already: name another backend"),
            ));
        }
        if volume.status != VolumeStatus::Available {
            return Err(ApiError::not_available(&volume, "migrated"));
        }
        self.refuse_snapshots(&id).await?;
        let dest = match asked {
            Some(dest) => {
                self.require_up(&dest).await?;
                dest
            }
            None => self.pick(ctx, &volume, &source).await?,
        };
        let intent = Intent::cast(&self.ports, format!("migrate volume {id} to {dest}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Maintenance,
            Owner::Service(dest.clone()),
            deadlines::from_now(deadlines::OPERATION),
        );
        let start = MigrationStart {
            volume_id: &id,
            from: VolumeStatus::Available,
            to: VolumeStatus::Maintenance,
            source_host: &source,
            dest_host: &dest,
            new_type: None,
            worker: &worker,
        };
        let won = self
            .db
            .start_migration(&start)
            .await
            .map_err(ApiError::db(format!("mark volume {id} maintenance")))?;
        if !won {
            return Err(self.lost(&id).await);
        }
        let moving = Volume {
            status: VolumeStatus::Maintenance,
            migration_status: MigrationStatus::Migrating,
            migration_error: String::new(),
            updated_at_ms: now_ms(),
            ..volume
        };
        let settler = self.ports.settler(&self.db);
        settler.announce(ctx, Event::VolumeMigrateStart, &moving);
        let db = self.db.clone();
        let mut failed = moving.clone();
        let request = MigrateVolume {
            volume_id: id.clone(),
        };
        let to = dest.clone();
        intent
            .send(
                self.ports.volumes.migrate_volume(ctx, &to, request),
                |why| async move {
                    tracing::warn!(volume_id = %failed.id, error = %why, "migration not sent");
                    let message = format!("the migration could not be sent to {dest}: {why}");
                    let volume_id = failed.id.clone();
                    let fail = db.fail_migration(&volume_id, &message);
                    let apply = |v: &mut Volume| {
                        v.status = VolumeStatus::Available;
                        v.migration_status = MigrationStatus::Error;
                        v.migration_error = message.clone();
                    };
                    settler
                        .settle(
                            ctx,
                            &mut failed,
                            fail,
                            apply,
                            Some(Event::VolumeMigrateError),
                        )
                        .await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, from = %source, "volume migration requested");
        Ok(moving)
    }

    /// VOLUME_HAS_SNAPSHOTS if volume `id` has any (a snapshot cannot follow).
    async fn refuse_snapshots(&self, id: &str) -> ApiResult<()> {
        let snapshots = self
            .db
            .list_snapshots(&SnapshotQuery {
                volume_id: Some(id.to_owned()),
                limit: 5,
                ..Default::default()
            })
            .await
            .map_err(ApiError::db(format!("list the snapshots of volume {id}")))?;
        if snapshots.is_empty() {
            return Ok(());
        }
        Err(ApiError::HasSnapshots {
            id: id.to_owned(),
            snapshots: snapshots.into_iter().map(|s| s.id).collect(),
            then: "delete them first (a snapshot cannot follow its volume)",
        })
    }

    /// The volume service `host`, if it is registered, enabled and up, else
    /// INVALID_ARGUMENT naming `host`.
    pub(super) async fn require_up(&self, host: &str) -> ApiResult<scoria_common::model::Service> {
        let service = self
            .db
            .get_service(VOLUME_BINARY, host)
            .await
            .map_err(ApiError::db(format!("get service {host}")))?;
        let why = match service {
            None => format!("no volume service {host} is registered"),
            Some(s) if s.disabled => format!("volume service {host} is disabled"),
            Some(s) if !s.is_up(now_ms(), self.service_down_ms) => {
                format!("volume service {host} is down")
            }
            Some(service) => return Ok(service),
        };
        Err(ApiError::invalid("host", why))
    }

    /// A scheduler's pick of a destination for `volume` (never `source`).
    async fn pick(&self, ctx: &RequestContext, volume: &Volume, source: &str) -> ApiResult<String> {
        let extra_specs = if volume.volume_type.is_empty() {
            Default::default()
        } else {
            self.db
                .get_volume_type(&volume.volume_type)
                .await
                .map_err(ApiError::db(format!(
                    "get volume type {}",
                    volume.volume_type
                )))?
                .map(|t| t.extra_specs.into_iter().collect())
                .unwrap_or_default()
        };
        let request = FindMigrationHost {
            volume_id: volume.id.clone(),
            size_gib: volume.size_gib,
            volume_type: volume.volume_type.clone(),
            extra_specs,
            availability_zone: volume.availability_zone.clone(),
            exclude_host: source.to_owned(),
        };
        let found = self
            .ports
            .scheduler
            .find_migration_host(ctx, request)
            .await
            .map_err(Status::from)
            .map_err(|status| ApiError::Call {
                action: format!("find a destination for volume {}", volume.id),
                status,
            })?;
        Ok(found.host)
    }

    /// Why the compare-and-set starting a migration of `id` lost.
    async fn lost(&self, id: &str) -> ApiError {
        match self.db.get_volume(id).await {
            Ok(Some(now)) if now.status == VolumeStatus::Available => {
                match self.refuse_snapshots(id).await {
                    Err(err) => err,
                    Ok(()) => ApiError::WrongStatus {
                        kind: "volume",
                        id: id.to_owned(),
                        status: now.status.to_string(),
                        detail: ": it changed while the request was checked (or its last \
                                 migration's source is still being cleaned up); try again"
                            .into(),
                    },
                }
            }
            Ok(Some(now)) => ApiError::not_available(&now, "migrated"),
            Ok(None) => ApiError::volume_not_found(id),
            Err(err) => ApiError::db(format!("get volume {id}"))(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_a_backend_and_a_bad_one_names_the_host_field() {
        assert_eq!(destination("").expect("empty"), None);
        assert_eq!(
            destination("node2@qcow2").expect("backend"),
            Some("node2@qcow2".to_owned())
        );
        assert_eq!(
            destination("node2@qcow2#qcow2").expect("pool"),
            Some("node2@qcow2".to_owned()),
            "a pool part is dropped"
        );
        for bad in ["node2", "@qcow2", "node2@", "a@b@c", "node 2@x"] {
            let err = destination(bad).expect_err(bad);
            assert!(
                matches!(&err, ApiError::InvalidField { field, .. } if field == "host"),
                "{bad}: {err:?}"
            );
        }
    }
}
