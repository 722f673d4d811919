//! A fake of the volume services where some hosts cannot be reached.

use std::collections::HashSet;

use async_trait::async_trait;
use scoria_common::{
    RequestContext,
    ops::{OpsError, OpsResult, VolumeOps},
    testing::{RecordingVolumes, VolumeCall},
};
use scoria_proto::bus::{
    AttachResult, AttachVolume, CreateSnapshot, CreateVolume, DeleteSnapshot, DeleteVolume,
    DetachResult, DetachVolume, ExtendVolume, PublishCapabilities,
};
use tonic::Status;

/// [`RecordingVolumes`] with some hosts whose queue is not bound: a create cast
/// to them is recorded, then refused as undeliverable.
pub(super) struct PartlyReachable {
    pub(super) volumes: RecordingVolumes,
    pub(super) unreachable: HashSet<String>,
}

impl PartlyReachable {
    /// The creates cast so far (to reachable hosts or not), with their host.
    pub(super) fn casts(&self) -> Vec<(String, CreateVolume)> {
        self.volumes
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                VolumeCall::Create(host, request) => Some((host, request)),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl VolumeOps for PartlyReachable {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateVolume,
    ) -> OpsResult<()> {
        self.volumes.create_volume(ctx, host, request).await?;
        if self.unreachable.contains(host) {
            return Err(OpsError::Failed(Status::unavailable(format!(
                "no queue is bound for volume.{host}"
            ))));
        }
        Ok(())
    }

    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: DeleteVolume,
    ) -> OpsResult<()> {
        self.volumes.delete_volume(ctx, host, r).await
    }

    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: ExtendVolume,
    ) -> OpsResult<()> {
        self.volumes.extend_volume(ctx, host, r).await
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: CreateSnapshot,
    ) -> OpsResult<()> {
        self.volumes.create_snapshot(ctx, host, r).await
    }

    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: DeleteSnapshot,
    ) -> OpsResult<()> {
        self.volumes.delete_snapshot(ctx, host, r).await
    }

    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: AttachVolume,
    ) -> OpsResult<AttachResult> {
        self.volumes.attach_volume(ctx, host, r).await
    }

    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: DetachVolume,
    ) -> OpsResult<DetachResult> {
        self.volumes.detach_volume(ctx, host, r).await
    }

    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        r: PublishCapabilities,
    ) -> OpsResult<()> {
        self.volumes.publish_service_capabilities(ctx, r).await
    }
}
