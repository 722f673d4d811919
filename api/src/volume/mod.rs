//! `scoria.v1.VolumeService`: reads from the database; writes persist their intent
//! (row + worker entry) first, then cast to the scheduler or the volume's host and
//! return at once. The API never waits for the scheduler or a backend.

use prost::Message;
use scoria_common::{
    RequestContext,
    db::{
        AttachmentQuery, Created, Db, IdempotencyKey, Owner, VolumeDeleteStart, VolumeQuery,
        WorkerEntry, deadlines,
    },
    events::Event,
    model::{AttachmentStatus, Volume, VolumeStatus, now_ms},
    settle::VolumeChange,
};
use scoria_proto::{
    bus::{DeleteVolume, ScheduleCreateVolume},
    v1::{self as pb, volume_service_server::VolumeService},
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    page_token::{PageToken, filter_digest, finish_page},
    ports::Ports,
    request::{context, handle, handle_as, reply},
    scope, validate,
    watch::{self, WatchStream, Watches},
};

/// The `VolumeService` implementation.
#[derive(Clone)]
pub struct VolumeApi {
    db: Db,
    ports: Ports,
    max_size_gib: u64,
    watches: Option<Watches>,
}

impl VolumeApi {
    /// The service over `db` and `ports`, refusing volumes above `max_size_gib`.
    pub fn new(db: Db, ports: Ports, max_size_gib: u64) -> Self {
        Self {
            db,
            ports,
            max_size_gib,
            watches: None,
        }
    }

    /// This service serving WatchVolume from `watches`.
    pub fn with_watches(mut self, watches: Watches) -> Self {
        self.watches = Some(watches);
        self
    }

    /// The volume `id` if the caller may see it (its project's, or any for admins).
    async fn load(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        scope::load(ctx, "volume", id, self.db.get_volume(id)).await
    }

    /// GetVolume: the volume `id` (checked) if the caller may see it.
    async fn get(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        self.load(ctx, &validate::uuid("id", id)?).await
    }

    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateVolumeRequest,
    ) -> ApiResult<Volume> {
        self.create_as(ctx, req, uuid::Uuid::new_v4().to_string())
            .await
    }

    /// CreateVolume, the new volume's id chosen by the caller (RestoreBackup
    /// names its target before the volume exists).
    #[tracing::instrument(skip_all, fields(volume_id))]
    pub(crate) async fn create_as(
        &self,
        ctx: &RequestContext,
        req: pb::CreateVolumeRequest,
        id: String,
    ) -> ApiResult<Volume> {
        let valid = validate::create_volume(&req, self.max_size_gib)?;
        let placement = self.placement(ctx, &req, valid.source.as_ref()).await?;
        let now = now_ms();
        let volume = Volume {
            migration_status: Default::default(),
            migration_error: String::new(),
            id,
            project_id: ctx.project_id.clone(),
            user_id: ctx.user_id.clone(),
            name: req.name.clone(),
            description: req.description.clone(),
            size_gib: placement.size_gib,
            status: VolumeStatus::Creating,
            volume_type: placement.volume_type.clone(),
            availability_zone: placement.availability_zone.clone(),
            host: None,
            metadata: req.metadata.clone(),
            error_message: String::new(),
            snapshot_id: from_snapshot::snapshot_id(valid.source.as_ref()),
            source_volume_id: placement.source_volume_id.clone(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        tracing::Span::current().record("volume_id", volume.id.as_str());
        let intent = Intent::cast(&self.ports, format!("schedule volume {}", volume.id));
        intent.ready().await?;
        let key = valid.request_id.map(|request_id| IdempotencyKey {
            request_id,
            request_hash: request_hash(&req),
        });
        let worker = WorkerEntry::volume(
            &volume.id,
            VolumeStatus::Creating,
            Owner::Scheduler,
            deadlines::at(now, deadlines::VOLUME_CREATE),
        );
        let created = self
            .db
            .create_volume(&volume, key.as_ref(), &worker)
            .await
            .map_err(ApiError::db(format!("create volume {}", volume.id)))?;
        let volume = match (created, &key) {
            (Created::New(volume), _) => volume,
            (
                Created::Existing {
                    volume_id,
                    request_hash,
                },
                Some(key),
            ) => {
                if request_hash != key.request_hash {
                    return Err(ApiError::RequestIdReused {
                        request_id: key.request_id.clone(),
                        volume_id,
                    });
                }
                // A retry: answer as GetVolume would.
                tracing::info!(volume_id = %volume_id, request_id = %key.request_id, "create retried");
                return self.load(ctx, &volume_id).await;
            }
            (Created::Existing { volume_id, .. }, None) => {
                return Err(ApiError::Internal(format!(
                    "create of volume {volume_id} matched a key it did not use"
                )));
            }
        };
        self.confirm_snapshot(&volume, key.as_ref()).await?;
        let request = ScheduleCreateVolume {
            volume_id: volume.id.clone(),
            size_gib: volume.size_gib,
            volume_type: volume.volume_type.clone(),
            availability_zone: volume.availability_zone.clone(),
            extra_specs: placement.extra_specs,
            tried_hosts: Vec::new(),
            attempt: 1,
            last_error: String::new(),
            snapshot_id: volume.snapshot_id.clone().unwrap_or_default(),
            source_volume_id: placement.source_volume_id.unwrap_or_default(),
            required_host: placement.required_host,
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = volume.clone();
        intent
            .send(
                self.ports.scheduler.create_volume(ctx, request),
                |why| async move {
                    // Nothing will ever schedule it: take the row (and the key) back
                    // so a retry with the same request_id starts afresh.
                    let discarded = self
                        .db
                        .discard_created_volume(&failed, key.as_ref())
                        .await
                        .map(|()| true);
                    let apply = |v: &mut Volume| {
                        v.status = VolumeStatus::Error;
                        v.error_message = format!("cannot schedule the volume: {why}");
                    };
                    let event = Some(Event::VolumeCreateError);
                    settler
                        .settle(ctx, &mut failed, async { discarded }, apply, event)
                        .await
                },
            )
            .await?;
        tracing::info!(volume_id = %volume.id, size_gib = volume.size_gib, "volume creation requested");
        Ok(volume)
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        ctx: &RequestContext,
        req: pb::ListVolumesRequest,
    ) -> ApiResult<pb::ListVolumesResponse> {
        let limit = validate::page_size(req.page_size)?;
        let status = validate::status_filter(req.status)?;
        validate::text::line("name", &req.name)?;
        if req.all_projects {
            crate::volume_type::require_admin(ctx, "ListVolumes with all_projects")?;
        }
        let digest = filter_digest(&[
            status.map(VolumeStatus::as_str).unwrap_or_default(),
            &req.name,
            if req.all_projects { "all" } else { "" },
        ]);
        let after = PageToken::decode(&req.page_token, &ctx.project_id, &digest)?;
        let query = VolumeQuery {
            project_id: if req.all_projects {
                None
            } else {
                scope::list_project(ctx)
            },
            status,
            name: (!req.name.is_empty()).then(|| req.name.clone()),
            after: after.map(|token| (token.created_at_ms, token.id)),
            limit: limit + 1,
        };
        let mut volumes = self
            .db
            .list_volumes(&query)
            .await
            .map_err(ApiError::db("list volumes"))?;
        let next_page_token = finish_page(
            &mut volumes,
            limit,
            |last| (last.created_at_ms, last.id.clone()),
            &ctx.project_id,
            &digest,
        );
        Ok(pb::ListVolumesResponse {
            volumes: volumes.iter().map(pb::Volume::from).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.id))]
    async fn update(
        &self,
        ctx: &RequestContext,
        req: pb::UpdateVolumeRequest,
    ) -> ApiResult<Volume> {
        let (id, changes) = validate::update_volume(&req)?;
        let volume = self.load(ctx, &id).await?;
        if changes.name.is_none() && changes.description.is_none() && changes.metadata.is_none() {
            return Ok(volume);
        }
        self.db
            .update_volume(&id, &volume.project_id, &changes)
            .await
            .map_err(ApiError::db(format!("update volume {id}")))?
            .ok_or_else(|| ApiError::volume_not_found(&id))
    }

    #[tracing::instrument(skip_all, fields(volume_id = %id))]
    async fn delete(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        let id = validate::uuid("id", id)?;
        let mut volume = self.load(ctx, &id).await?;
        if !VolumeStatus::DELETABLE.contains(&volume.status) {
            return Err(not_deletable(&volume));
        }
        self.refuse_attached(&id).await?;
        let Some(host) = volume.host.clone() else {
            // It never reached a backend: nothing to clean up but the row.
            self.start_delete(ctx, &id, None).await?;
            self.db
                .delete_volume_row(&id)
                .await
                .map_err(ApiError::db(format!("delete volume {id}")))?;
            tracing::info!(volume_id = %id, "unscheduled volume deleted");
            return Ok(deleting(volume));
        };
        let intent = Intent::cast(&self.ports, format!("delete volume {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Deleting,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::VOLUME_DELETE),
        );
        self.start_delete(ctx, &id, Some(&worker)).await?;
        volume = deleting(volume);
        let settler = self.ports.settler(&self.db);
        let request = DeleteVolume {
            volume_id: id.clone(),
        };
        let mut failed = volume.clone();
        let at = host.as_str();
        intent
            .send(
                self.ports.volumes.delete_volume(ctx, &host, request),
                |why| async move {
                    let reason = format!("cannot reach {at} to delete the volume: {why}");
                    let change =
                        VolumeChange::new(&[VolumeStatus::Deleting], VolumeStatus::ErrorDeleting)
                            .error(&reason);
                    settler
                        .volume(ctx, &mut failed, change, Some(Event::VolumeDeleteError))
                        .await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, host = %host, "volume deletion requested");
        Ok(volume)
    }

    /// Refuses to delete volume `id` while attachments hold it, whatever its
    /// status says (an operator may have reset an attached volume's status).
    async fn refuse_attached(&self, id: &str) -> ApiResult<()> {
        let query = AttachmentQuery {
            volume_id: Some(id.to_owned()),
            statuses: AttachmentStatus::ACTIVE.to_vec(),
            limit: 1,
            ..AttachmentQuery::default()
        };
        let held = self
            .db
            .list_attachments(&query)
            .await
            .map_err(ApiError::db(format!("list attachments of volume {id}")))?;
        match held.first() {
            Some(attachment) => Err(ApiError::HasAttachments {
                id: id.to_owned(),
                attachment_id: attachment.id.clone(),
                status: attachment.status.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// DeleteVolume's compare-and-set (refused while the volume has snapshots),
    /// with the error of a lost one.
    async fn start_delete(
        &self,
        ctx: &RequestContext,
        id: &str,
        worker: Option<&WorkerEntry>,
    ) -> ApiResult<()> {
        let start = self
            .db
            .start_volume_delete(id, worker)
            .await
            .map_err(ApiError::db(format!("mark volume {id} deleting")))?;
        match start {
            VolumeDeleteStart::Started => Ok(()),
            VolumeDeleteStart::HasSnapshots(snapshots) => Err(ApiError::HasSnapshots {
                id: id.to_owned(),
                snapshots,
                then: "delete them first",
            }),
            // The volume changed under us: say what it is now.
            VolumeDeleteStart::WrongStatus => Err(match self.load(ctx, id).await {
                Ok(volume) => not_deletable(&volume),
                Err(err) => err,
            }),
        }
    }
}

fn not_deletable(volume: &Volume) -> ApiError {
    let hint = if ATTACHED.contains(&volume.status) {
        ": delete its attachments first"
    } else {
        ": only available or error volumes can be deleted"
    };
    ApiError::volume_refused(volume, ATTACHED.contains(&volume.status), hint)
}

/// The statuses of a volume that has (or is getting, or losing) attachments.
const ATTACHED: [VolumeStatus; 4] = [
    VolumeStatus::Reserved,
    VolumeStatus::Attaching,
    VolumeStatus::InUse,
    VolumeStatus::Detaching,
];

fn deleting(volume: Volume) -> Volume {
    Volume {
        status: VolumeStatus::Deleting,
        updated_at_ms: now_ms(),
        ..volume
    }
}

/// The hex SHA-256 of a create request without its `request_id`: equal for a
/// retry, different for another request under the same key. Maps are ordered
/// (`BTreeMap`), so the encoding is deterministic.
pub fn request_hash(req: &pb::CreateVolumeRequest) -> String {
    let unkeyed = pb::CreateVolumeRequest {
        request_id: String::new(),
        ..req.clone()
    };
    Sha256::digest(unkeyed.encode_to_vec())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tonic::async_trait]
impl VolumeService for VolumeApi {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn get_volume(
        &self,
        request: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.get(ctx, &req.id).await).await
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        handle(request, async |ctx, req| self.list(ctx, req).await).await
    }

    async fn update_volume(
        &self,
        request: Request<pb::UpdateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.update(ctx, req).await).await
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.delete(ctx, &req.id).await).await
    }

    async fn extend_volume(
        &self,
        request: Request<pb::ExtendVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.extend(ctx, req).await).await
    }

    type WatchVolumeStream = WatchStream<pb::WatchVolumeResponse>;

    async fn watch_volume(
        &self,
        request: Request<pb::WatchVolumeRequest>,
    ) -> Result<Response<Self::WatchVolumeStream>, Status> {
        let hub = self.watches.as_ref().ok_or_else(watch::unimplemented)?;
        let ctx = context(&request)?;
        let id = &request.get_ref().id;
        let volume = reply(self.get(&ctx, id).await)?.into_inner();
        watch::respond(
            Some(&hub.volumes),
            &volume.id,
            pb::Volume::from(&volume),
            |volume, deleted| pb::WatchVolumeResponse {
                volume: Some(volume),
                deleted,
            },
        )
    }
    async fn retype_volume(
        &self,
        request: Request<pb::RetypeVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.retype(ctx, req).await).await
    }

    async fn revert_volume_to_snapshot(
        &self,
        request: Request<pb::RevertVolumeToSnapshotRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.revert(ctx, req).await).await
    }
}

mod extend;
mod from_snapshot;
pub(crate) mod placement;
mod retype;
mod revert;

#[cfg(test)]
mod tests;
