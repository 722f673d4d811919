//! The bus as the API uses it: casts for work that runs on (create, delete,
//! extend, snapshots), calls where the client waits for the answer (attach, detach,
//! pools). A trait, so the handlers can be tested without a broker.

use scoria_common::{
    RequestContext,
    ops::{SchedulerClient, SchedulerOps, VolumeClient, VolumeOps},
    rpc::RpcClient,
};
use scoria_proto::bus::{
    AttachResult, AttachVolume, CreateSnapshot, DeleteSnapshot, DeleteVolume, DetachResult,
    DetachVolume, ExtendVolume, GetPools, PoolList, ScheduleCreateVolume,
};
use tonic::Status;

/// The bus as the API uses it.
#[tonic::async_trait]
pub trait Bus: Send + Sync {
    /// Whether the broker connection is up (nothing is written while it is down).
    fn is_connected(&self) -> bool;
    /// Casts `create_volume` to the scheduler.
    async fn schedule_create(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> Result<(), Status>;
    /// Casts `delete_volume` to the volume service owning `host`.
    async fn delete_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteVolume,
    ) -> Result<(), Status>;
    /// Casts `extend_volume` to the volume service owning `host`.
    async fn extend_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: ExtendVolume,
    ) -> Result<(), Status>;
    /// Casts `create_snapshot` to the volume service owning `host`.
    async fn create_snapshot_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateSnapshot,
    ) -> Result<(), Status>;
    /// Casts `delete_snapshot` to the volume service owning `host`.
    async fn delete_snapshot_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteSnapshot,
    ) -> Result<(), Status>;
    /// Calls `attach_volume` on the volume service owning `host`.
    async fn attach_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> Result<AttachResult, Status>;
    /// Calls `detach_volume` on the volume service owning `host`.
    async fn detach_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> Result<DetachResult, Status>;
    /// Calls `get_pools` on a scheduler.
    async fn get_pools(&self, ctx: &RequestContext, request: GetPools) -> Result<PoolList, Status>;
}

/// [`Bus`] over AMQP.
#[derive(Clone)]
pub struct AmqpBus {
    rpc: RpcClient,
    scheduler: SchedulerClient,
}

impl AmqpBus {
    /// The bus reached through `rpc`.
    pub fn new(rpc: RpcClient) -> Self {
        Self {
            scheduler: SchedulerClient::new(rpc.clone()),
            rpc,
        }
    }
}

#[tonic::async_trait]
impl Bus for AmqpBus {
    fn is_connected(&self) -> bool {
        self.rpc.broker().is_connected()
    }

    async fn schedule_create(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> Result<(), Status> {
        Ok(self.scheduler.create_volume(ctx, request).await?)
    }

    async fn delete_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteVolume,
    ) -> Result<(), Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .delete_volume(ctx, host, request)
            .await?)
    }

    async fn extend_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: ExtendVolume,
    ) -> Result<(), Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .extend_volume(ctx, host, request)
            .await?)
    }

    async fn create_snapshot_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateSnapshot,
    ) -> Result<(), Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .create_snapshot(ctx, host, request)
            .await?)
    }

    async fn delete_snapshot_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteSnapshot,
    ) -> Result<(), Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .delete_snapshot(ctx, host, request)
            .await?)
    }

    async fn attach_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> Result<AttachResult, Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .attach_volume(ctx, host, request)
            .await?)
    }

    async fn detach_on_host(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> Result<DetachResult, Status> {
        Ok(VolumeClient::new(self.rpc.clone())
            .detach_volume(ctx, host, request)
            .await?)
    }

    async fn get_pools(&self, ctx: &RequestContext, request: GetPools) -> Result<PoolList, Status> {
        Ok(self.scheduler.get_pools(ctx, request).await?)
    }
}
