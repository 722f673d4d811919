//! `ManageVolume` / `ManageSnapshot` (Cinder's os-volume-manage and
//! os-snapshot-manage): adopt an object a backend holds but Scoria does not;
//! `UnmanageVolume` / `UnmanageSnapshot`: give one up without deleting it.
//!
//! ```text
//!  Manage:   checks (the volume type's extra specs against the backend's
//!            pools: a call to a scheduler, check_host_fits)
//!            ─▶ inspect_existing (a call to the backend: the object's
//!            size, or NOT_FOUND / INVALID_ARGUMENT naming `reference`)
//!            ─▶ row `managing`, size rounded up to whole GiB, quota charged,
//!               worker entry owned by the backend (one transaction)
//!            ─▶ cast manage_existing (the backend grows and renames the
//!               object, then settles: available | error_managing)
//!            a cast that cannot be sent: the row goes to error_managing
//!  Unmanage: one conditional delete of the row (available, nothing depending
//!            on it); the object stays under its name, `volume-<id>` /
//!            `snapshot-<id>` plus the format's extension, ready to be managed
//!            again by that reference
//! ```

use scoria_common::{
    RequestContext,
    db::{Owner, Unmanaged, WorkerEntry, deadlines},
    events::Event,
    model::{
        MigrationStatus, Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms, reference_problem,
    },
    settle::{SnapshotChange, VolumeChange},
};
use scoria_proto::{
    bus::{CheckHostFits, InspectExisting, ManageExisting, ManagedKind},
    v1 as pb,
};
use tonic::{Code, Status};

use super::{AdminApi, migrate::destination};
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    validate::{self, text},
    volume::placement::resolve_volume_type,
    volume_type::require_admin,
};

/// Bytes in a GiB.
const GIB: u64 = 1 << 30;

/// What a Manage request adopts, checked.
struct Adoption<'a> {
    kind: ManagedKind,
    /// `host@backend`.
    host: String,
    reference: &'a str,
}

impl AdminApi {
    #[tracing::instrument(skip_all, fields(host = %req.host, reference = %req.reference))]
    pub(super) async fn manage_volume(
        &self,
        ctx: &RequestContext,
        req: &pb::ManageVolumeRequest,
    ) -> ApiResult<Volume> {
        require_admin(ctx, "ManageVolume")?;
        if req.host.is_empty() {
            return Err(ApiError::invalid(
                "host",
                "is required: the backend holding the object, host@backend",
            ));
        }
        let host = destination(&req.host)?.unwrap_or_default();
        reference(&req.reference)?;
        text::line("name", &req.name)?;
        text::description("description", &req.description)?;
        text::line("volume_type", &req.volume_type)?;
        validate::metadata(&req.metadata)?;
        text::line("project_id", &req.project_id)?;
        let volume_type = resolve_volume_type(&self.db, &req.volume_type).await?;
        let service = self.require_up(&host).await?;
        self.refuse_managed(&req.reference).await?;
        let fits = CheckHostFits {
            host: host.clone(),
            volume_type: volume_type.name.clone(),
            extra_specs: volume_type.extra_specs.clone().into_iter().collect(),
        };
        let fits = self
            .ports
            .scheduler
            .check_host_fits(ctx, fits)
            .await
            .map_err(Status::from)
            .map_err(|status| ApiError::Call {
                action: format!("ask a scheduler whether {host} satisfies the volume type"),
                status,
            })?;
        if !fits.fits {
            return Err(ApiError::invalid("volume_type", fits.reason));
        }
        let adoption = Adoption {
            kind: ManagedKind::Volume,
            host: host.clone(),
            reference: &req.reference,
        };
        let size_bytes = self.inspect(ctx, &adoption).await?;
        let now = now_ms();
        let project_id = if req.project_id.is_empty() {
            ctx.project_id.clone()
        } else {
            req.project_id.clone()
        };
        let volume = Volume {
            id: uuid::Uuid::new_v4().to_string(),
            project_id,
            user_id: ctx.user_id.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            size_gib: size_bytes.div_ceil(GIB),
            status: VolumeStatus::Managing,
            volume_type: volume_type.name,
            availability_zone: service.availability_zone,
            host: Some(host.clone()),
            metadata: req.metadata.clone(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: now,
            updated_at_ms: now,
            migration_status: MigrationStatus::default(),
            migration_error: String::new(),
        };
        let id = volume.id.clone();
        let intent = Intent::cast(&self.ports, format!("manage volume {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Managing,
            Owner::Service(host.clone()),
            deadlines::at(now, deadlines::OPERATION),
        );
        self.db
            .create_volume(&volume, None, &worker)
            .await
            .map_err(ApiError::db(format!("create volume {id}")))?;
        let settler = self.ports.settler(&self.db);
        let mut failed = volume.clone();
        let request = ManageExisting {
            kind: ManagedKind::Volume.into(),
            id: id.clone(),
            reference: req.reference.clone(),
        };
        intent
            .send(
                self.ports.volumes.manage_existing(ctx, &host, request),
                |why| async move {
                    // Nothing will adopt it: the row says so, the object is untouched.
                    tracing::warn!(volume_id = %failed.id, error = %why, "manage not sent");
                    let message = format!("the adoption could not be sent to the backend: {why}");
                    let from = [VolumeStatus::Managing];
                    let change =
                        VolumeChange::new(&from, VolumeStatus::ErrorManaging).error(&message);
                    let event = Some(Event::VolumeManageError);
                    settler.volume(ctx, &mut failed, change, event).await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, size_gib = volume.size_gib, "volume manage requested");
        Ok(volume)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, reference = %req.reference))]
    pub(super) async fn manage_snapshot(
        &self,
        ctx: &RequestContext,
        req: &pb::ManageSnapshotRequest,
    ) -> ApiResult<Snapshot> {
        require_admin(ctx, "ManageSnapshot")?;
        let volume_id = validate::uuid("volume_id", &req.volume_id)?;
        reference(&req.reference)?;
        text::line("name", &req.name)?;
        text::description("description", &req.description)?;
        let volume = self
            .db
            .get_volume(&volume_id)
            .await
            .map_err(ApiError::db(format!("get volume {volume_id}")))?
            .ok_or_else(|| ApiError::volume_not_found(&volume_id))?;
        let Some(host) = volume.host.clone() else {
            return Err(ApiError::NoBackend {
                kind: "volume",
                id: volume_id,
            });
        };
        if !MANAGE_SNAPSHOT_OF.contains(&volume.status) {
            return Err(ApiError::WrongStatus {
                kind: "volume",
                id: volume_id,
                status: volume.status.to_string(),
                detail: ": a snapshot is managed for an available or in-use volume".into(),
            });
        }
        self.require_up(&host).await?;
        self.refuse_managed(&req.reference).await?;
        let adoption = Adoption {
            kind: ManagedKind::Snapshot,
            host: host.clone(),
            reference: &req.reference,
        };
        let size_bytes = self.inspect(ctx, &adoption).await?;
        let now = now_ms();
        let snapshot = Snapshot {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: volume.project_id.clone(),
            user_id: ctx.user_id.clone(),
            volume_id: volume_id.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            size_gib: size_bytes.div_ceil(GIB),
            status: SnapshotStatus::Managing,
            host: Some(host.clone()),
            error_message: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let id = snapshot.id.clone();
        let intent = Intent::cast(&self.ports, format!("manage snapshot {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::snapshot(
            &id,
            SnapshotStatus::Managing,
            Owner::Service(host.clone()),
            deadlines::at(now, deadlines::OPERATION),
        );
        let created = self
            .db
            .create_snapshot(&snapshot, &MANAGE_SNAPSHOT_OF, &worker)
            .await
            .map_err(ApiError::db(format!("create snapshot {id}")))?;
        if !created {
            return Err(ApiError::WrongStatus {
                kind: "volume",
                id: volume_id,
                status: "changed".into(),
                detail: ": it changed while the request was checked; try again".into(),
            });
        }
        let settler = self.ports.settler(&self.db);
        let mut failed = snapshot.clone();
        let request = ManageExisting {
            kind: ManagedKind::Snapshot.into(),
            id: id.clone(),
            reference: req.reference.clone(),
        };
        intent
            .send(
                self.ports.volumes.manage_existing(ctx, &host, request),
                |why| async move {
                    tracing::warn!(snapshot_id = %failed.id, error = %why, "manage not sent");
                    let message = format!("the adoption could not be sent to the backend: {why}");
                    let from = [SnapshotStatus::Managing];
                    let change =
                        SnapshotChange::new(&from, SnapshotStatus::ErrorManaging).error(&message);
                    let event = Some(Event::SnapshotManageError);
                    settler.snapshot(ctx, &mut failed, change, event).await
                },
            )
            .await?;
        tracing::info!(snapshot_id = %id, size_gib = snapshot.size_gib, "snapshot manage requested");
        Ok(snapshot)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id))]
    pub(super) async fn unmanage_volume(
        &self,
        ctx: &RequestContext,
        req: &pb::UnmanageVolumeRequest,
    ) -> ApiResult<Volume> {
        require_admin(ctx, "UnmanageVolume")?;
        let id = validate::uuid("volume_id", &req.volume_id)?;
        let volume = self
            .db
            .get_volume(&id)
            .await
            .map_err(ApiError::db(format!("get volume {id}")))?
            .ok_or_else(|| ApiError::volume_not_found(&id))?;
        if volume.status != VolumeStatus::Available {
            return Err(ApiError::not_available(&volume, "unmanaged"));
        }
        let settler = self.ports.settler(&self.db);
        settler.announce(ctx, Event::VolumeUnmanageStart, &volume);
        let outcome = self
            .db
            .unmanage_volume(&id)
            .await
            .map_err(ApiError::db(format!("unmanage volume {id}")))?;
        match outcome {
            Unmanaged::Removed => {}
            Unmanaged::InUse(snapshots) => {
                return Err(ApiError::HasSnapshots {
                    id,
                    snapshots,
                    then: "unmanage (or delete) them first",
                });
            }
            Unmanaged::Moving => {
                return Err(ApiError::WrongStatus {
                    kind: "volume",
                    id,
                    status: volume.status.to_string(),
                    detail: ": it is being migrated, or its last migration's source is still \
                             being cleaned up; try again"
                        .into(),
                });
            }
            Unmanaged::WrongStatus => {
                return Err(match self.db.get_volume(&id).await {
                    Ok(Some(now)) => ApiError::not_available(&now, "unmanaged"),
                    Ok(None) => ApiError::volume_not_found(&id),
                    Err(err) => ApiError::db(format!("get volume {id}"))(err),
                });
            }
        }
        settler.announce(ctx, Event::VolumeUnmanageEnd, &volume);
        tracing::info!(volume_id = %id, host = ?volume.host, "volume unmanaged: its object stays on the backend");
        Ok(volume)
    }

    #[tracing::instrument(skip_all, fields(snapshot_id = %req.snapshot_id))]
    pub(super) async fn unmanage_snapshot(
        &self,
        ctx: &RequestContext,
        req: &pb::UnmanageSnapshotRequest,
    ) -> ApiResult<Snapshot> {
        require_admin(ctx, "UnmanageSnapshot")?;
        let id = validate::uuid("snapshot_id", &req.snapshot_id)?;
        let snapshot = self
            .db
            .get_snapshot(&id)
            .await
            .map_err(ApiError::db(format!("get snapshot {id}")))?
            .ok_or_else(|| ApiError::snapshot_not_found(&id))?;
        let wrong = |status: SnapshotStatus| ApiError::WrongStatus {
            kind: "snapshot",
            id: id.clone(),
            status: status.to_string(),
            detail: ": only an available snapshot can be unmanaged".into(),
        };
        if snapshot.status != SnapshotStatus::Available {
            return Err(wrong(snapshot.status));
        }
        let settler = self.ports.settler(&self.db);
        settler.announce(ctx, Event::SnapshotUnmanageStart, &snapshot);
        let outcome = self
            .db
            .unmanage_snapshot(&id)
            .await
            .map_err(ApiError::db(format!("unmanage snapshot {id}")))?;
        match outcome {
            Unmanaged::Removed => {}
            Unmanaged::InUse(volumes) => return Err(ApiError::SnapshotInUse { id, volumes }),
            Unmanaged::Moving | Unmanaged::WrongStatus => {
                return Err(match self.db.get_snapshot(&id).await {
                    Ok(Some(now)) => wrong(now.status),
                    Ok(None) => ApiError::snapshot_not_found(&id),
                    Err(err) => ApiError::db(format!("get snapshot {id}"))(err),
                });
            }
        }
        settler.announce(ctx, Event::SnapshotUnmanageEnd, &snapshot);
        tracing::info!(snapshot_id = %id, "snapshot unmanaged: its object stays on the backend");
        Ok(snapshot)
    }

    /// The size of the object to adopt, asked of its backend (a call):
    /// NOT_FOUND or INVALID_ARGUMENT naming `reference` when it cannot be.
    async fn inspect(&self, ctx: &RequestContext, adoption: &Adoption<'_>) -> ApiResult<u64> {
        let request = InspectExisting {
            reference: adoption.reference.to_owned(),
            kind: adoption.kind.into(),
        };
        let host = &adoption.host;
        let found = self
            .ports
            .volumes
            .inspect_existing(ctx, host, request)
            .await
            .map_err(Status::from);
        match found {
            Ok(found) => Ok(found.size_bytes),
            Err(status) if status.code() == Code::NotFound => Err(ApiError::NotFound {
                kind: "reference: backend object",
                id: format!("{:?} on {host}", adoption.reference),
            }),
            Err(status) if status.code() == Code::InvalidArgument => {
                Err(ApiError::invalid("reference", status.message().to_owned()))
            }
            Err(status) => Err(ApiError::Call {
                action: format!("inspect object {:?} on {host}", adoption.reference),
                status,
            }),
        }
    }

    /// ALREADY_EXISTS if `reference` is the object of a volume or snapshot
    /// Scoria manages (`volume-<id>` / `snapshot-<id>`, any extension).
    async fn refuse_managed(&self, reference: &str) -> ApiResult<()> {
        let Some((kind, id)) = managed_name(reference) else {
            return Ok(());
        };
        let exists = match kind {
            "volume" => self.db.get_volume(&id).await.map(|v| v.is_some()),
            _ => self.db.get_snapshot(&id).await.map(|s| s.is_some()),
        }
        .map_err(ApiError::db(format!("get {kind} {id}")))?;
        if exists {
            return Err(ApiError::AlreadyExists {
                kind: "managed object",
                name: format!("{reference} (the object of {kind} {id})"),
            });
        }
        Ok(())
    }
}

/// The statuses of a volume a snapshot can be managed for.
const MANAGE_SNAPSHOT_OF: [VolumeStatus; 2] = [VolumeStatus::Available, VolumeStatus::InUse];

/// `reference`, checked: INVALID_ARGUMENT naming it.
fn reference(reference: &str) -> ApiResult<()> {
    match reference_problem(reference) {
        Some(reason) => Err(ApiError::invalid(
            "reference",
            format!("{reason}, got {}", validate::shown(reference)),
        )),
        None => Ok(()),
    }
}

/// `("volume" | "snapshot", id)` if `reference` is named as Scoria names its
/// objects: `volume-<uuid>` or `snapshot-<uuid>`, an extension allowed.
fn managed_name(reference: &str) -> Option<(&'static str, String)> {
    let (kind, rest) = if let Some(rest) = reference.strip_prefix("volume-") {
        ("volume", rest)
    } else {
        ("snapshot", reference.strip_prefix("snapshot-")?)
    };
    let stem = rest.split_once('.').map_or(rest, |(stem, _)| stem);
    let id = uuid::Uuid::parse_str(stem).ok()?;
    Some((kind, id.hyphenated().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoria_object_names_are_recognised_whatever_the_extension() {
        let id = "0b4e7f7a-3d3c-4c1e-9f0e-2a9d6a1f5b11";
        assert_eq!(
            managed_name(&format!("volume-{id}")),
            Some(("volume", id.to_owned()))
        );
        assert_eq!(
            managed_name(&format!("volume-{id}.qcow2")),
            Some(("volume", id.to_owned()))
        );
        assert_eq!(
            managed_name(&format!("snapshot-{}.qcow2", id.to_uppercase())),
            Some(("snapshot", id.to_owned())),
            "one id, one name"
        );
        for other in ["legacy.img", "volume-x", "volumes-1", "snapshot-", id] {
            assert_eq!(managed_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_bad_reference_names_the_field() {
        for bad in ["", "a/b", "..", ".volume-x.tmp-1", "x\ny", &"x".repeat(256)] {
            let err = reference(bad).expect_err(bad);
            assert!(
                matches!(&err, ApiError::InvalidField { field, .. } if field == "reference"),
                "{bad:?}: {err:?}"
            );
        }
        reference("legacy disk.img").expect("a plain name");
    }
}
