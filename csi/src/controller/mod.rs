//! The Controller service: CSI volumes, publications and snapshots as Scoria
//! volumes, attachments and snapshots of the plugin's project.
//!
//! ```text
//!  CreateVolume ── names: CO name → Scoria name + request id ──▶ VolumeService.CreateVolume ─watch─▶ available
//!  ControllerPublishVolume ── connector{host: node_id} ──▶ AttachmentService.CreateAttachment ─watch─▶ attached
//!                             └─ publish_context = its NBD connection info
//!  CreateSnapshot ──▶ SnapshotService.CreateSnapshot (force: in-use volumes too) ─watch─▶ available
//!  GetCapacity ──▶ AdminService.ListPools (zone, type)      ListVolumes/ListSnapshots ── paging (ABORTED on a stranger's token)
//! ```
//!
//! Files: `volumes` (create, delete, expand, get, list), `publish`,
//! `snapshots`, `capability` (access modes, ValidateVolumeCapabilities),
//! `capacity` (sizes, GetCapacity), `names`, `paging`, `wait` (Watch*
//! streams, polling as the fallback), `locks` (one call per volume or name at a time).

mod capability;
mod capacity;
mod inspect;
mod locks;
mod names;
mod paging;
mod publish;
mod snapshots;
mod volumes;
mod wait;

use std::sync::Arc;

use scoria_cli::connect::Api;
use tonic::{Request, Response, Status};

pub use self::{
    names::{CREATED_BY_KEY, NAME_KEY},
    publish::keys as publish_context_keys,
    volumes::{TYPE_PARAMETER, ZONE_PARAMETER},
};
use crate::{
    error::{Error, Result},
    proto::{controller_service_capability::rpc::Type as Rpc, *},
    scoria::Scoria,
};

/// What ControllerGetCapabilities lists: exactly what is implemented.
pub const CAPABILITIES: &[Rpc] = &[
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::PublishReadonly,
    Rpc::ExpandVolume,
    Rpc::ListVolumesPublishedNodes,
    Rpc::VolumeCondition,
    Rpc::GetVolume,
    Rpc::GetSnapshot,
];

/// The Controller service.
#[derive(Debug, Clone)]
pub struct Controller {
    scoria: Arc<Scoria>,
    locks: Arc<locks::Locks>,
}

impl Controller {
    /// A controller acting on the API behind `scoria`.
    pub fn new(scoria: Arc<Scoria>) -> Self {
        Self {
            scoria,
            locks: Arc::default(),
        }
    }

    async fn api(&self) -> Result<&Api> {
        self.scoria.api().await
    }
}

/// A handler's result as tonic wants it.
fn answer<T>(result: Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl controller_server::Controller for Controller {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        answer(volumes::create(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        answer(
            volumes::delete(self, request.into_inner())
                .await
                .map(|()| DeleteVolumeResponse {}),
        )
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id, node_id = %request.get_ref().node_id))]
    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        answer(publish::publish(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id, node_id = %request.get_ref().node_id))]
    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        answer(
            publish::unpublish(self, request.into_inner())
                .await
                .map(|()| ControllerUnpublishVolumeResponse {}),
        )
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        answer(
            async {
                if request.volume_id.is_empty() {
                    return Err(Error::Missing("volume_id"));
                }
                if request.volume_capabilities.is_empty() {
                    return Err(Error::Missing("volume_capabilities"));
                }
                let api = self.api().await?;
                let volume = volumes::get(api, &request.volume_id).await?;
                capability::validate(api, &volume, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        answer(inspect::list(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let request = request.into_inner();
        answer(async { capacity::get(self.api().await?, request).await }.await)
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|rpc| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc {
                        r#type: *rpc as i32,
                    },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name, volume_id = %request.get_ref().source_volume_id))]
    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        answer(snapshots::create(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(snapshot_id = %request.get_ref().snapshot_id))]
    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        answer(
            snapshots::delete(self, request.into_inner())
                .await
                .map(|()| DeleteSnapshotResponse {}),
        )
    }

    #[tracing::instrument(skip_all)]
    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        answer(snapshots::list(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(snapshot_id = %request.get_ref().snapshot_id))]
    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        answer(snapshots::get_one(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        answer(volumes::expand(self, request.into_inner()).await)
    }

    #[tracing::instrument(skip_all, fields(volume_id = %request.get_ref().volume_id))]
    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        answer(inspect::controller_get(self, request.into_inner()).await)
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume is not supported (no MODIFY_VOLUME capability)",
        ))
    }
}
