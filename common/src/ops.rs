//! The operations each service offers the others, as transport-free traits (as
//! Mayastor's `PoolOperations`): the real manager implements them, and so does the
//! AMQP client, so a caller never knows which side of the broker it is on.
//! [`scheduler_dispatcher`] / [`volume_dispatcher`] serve any implementation on the bus.
//!
//! | topic | method | message | kind |
//! | --- | --- | --- | --- |
//! | `scheduler` | `create_volume` | `ScheduleCreateVolume` | cast |
//! | `scheduler` (fanout) | `update_service_capabilities` | `Capabilities` | fanout |
//! | `volume.<host@backend>` | `create_volume` | `CreateVolume` | cast |
//! | `volume.<host@backend>` | `delete_volume` | `DeleteVolume` | cast |
//! | `volume.<host@backend>` | `extend_volume` | `ExtendVolume` | cast |
//! | `volume.<host@backend>` | `create_snapshot` | `CreateSnapshot` | cast |
//! | `volume.<host@backend>` | `delete_snapshot` | `DeleteSnapshot` | cast |
//! | `volume.<host@backend>` | `attach_volume` | `AttachVolume` -> `AttachResult` | call |
//! | `volume.<host@backend>` | `detach_volume` | `DetachVolume` -> `DetachResult` | call |
//! | `volume` (fanout) | `publish_service_capabilities` | `PublishCapabilities` | fanout |
//! | `scheduler` | `get_pools` | `GetPools` -> `PoolList` | call |

use std::sync::Arc;

use async_trait::async_trait;
use scoria_proto::bus::{
    AttachResult, AttachVolume, Capabilities, CreateSnapshot, CreateVolume, DeleteSnapshot,
    DeleteVolume, DetachResult, DetachVolume, ExtendVolume, GetPools, PoolList,
    PublishCapabilities, ScheduleCreateVolume,
};
use tonic::Status;

use crate::{
    context::RequestContext,
    rpc::{Dispatcher, RpcClient, RpcResult, Target},
};

/// The scheduler's topic.
pub const SCHEDULER_TOPIC: &str = "scheduler";
/// The topic whose fanout reaches every volume service.
pub const VOLUME_TOPIC: &str = "volume";

/// The topic of the volume service owning `host` (`host@backend`).
pub fn volume_topic(host: &str) -> String {
    format!("{VOLUME_TOPIC}.{host}")
}

/// What the scheduler does for others.
#[async_trait]
pub trait SchedulerOps: Send + Sync {
    /// Places a new volume on a backend (or fails it with the reason).
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> Result<(), Status>;
    /// Takes a volume service's capability report.
    async fn update_service_capabilities(
        &self,
        ctx: &RequestContext,
        report: Capabilities,
    ) -> Result<(), Status>;
    /// The pools this scheduler knows, with their capacity (a call). The default,
    /// for fakes that only take casts, answers UNIMPLEMENTED.
    async fn get_pools(
        &self,
        _ctx: &RequestContext,
        _request: GetPools,
    ) -> Result<PoolList, Status> {
        Err(Status::unimplemented("get_pools is not served here"))
    }
}

/// What a volume service does for others.
#[async_trait]
pub trait VolumeOps: Send + Sync {
    /// Creates a volume on this backend.
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: CreateVolume,
    ) -> Result<(), Status>;
    /// Deletes a volume from this backend.
    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        request: DeleteVolume,
    ) -> Result<(), Status>;
    /// Grows a volume on this backend (its status is `extending`).
    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        request: ExtendVolume,
    ) -> Result<(), Status>;
    /// Snapshots a volume on this backend (the snapshot row is `creating`).
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        request: CreateSnapshot,
    ) -> Result<(), Status>;
    /// Deletes a snapshot from this backend (the snapshot row is `deleting`).
    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        request: DeleteSnapshot,
    ) -> Result<(), Status>;
    /// Reports capabilities now (a scheduler started and asks).
    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        request: PublishCapabilities,
    ) -> Result<(), Status>;
    /// Exports a volume for an `attaching` attachment and marks it `attached` (a
    /// call: the API waits for the connection info). The default, for fakes that
    /// only take casts, answers UNIMPLEMENTED.
    async fn attach_volume(
        &self,
        _ctx: &RequestContext,
        _request: AttachVolume,
    ) -> Result<AttachResult, Status> {
        Err(Status::unimplemented("attach_volume is not served here"))
    }
    /// Detaches a `detaching` attachment: stops the export when no other
    /// attachment uses it, removes the attachment (a call). The default, for
    /// fakes that only take casts, answers UNIMPLEMENTED.
    async fn detach_volume(
        &self,
        _ctx: &RequestContext,
        _request: DetachVolume,
    ) -> Result<DetachResult, Status> {
        Err(Status::unimplemented("detach_volume is not served here"))
    }
}

// === over the bus: clients ===

/// [`SchedulerOps`] over the bus.
#[derive(Clone)]
pub struct SchedulerClient {
    rpc: RpcClient,
}

impl SchedulerClient {
    /// A client casting through `rpc`.
    pub fn new(rpc: RpcClient) -> Self {
        Self { rpc }
    }
}

#[async_trait]
impl SchedulerOps for SchedulerClient {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> Result<(), Status> {
        let target = Target::topic(SCHEDULER_TOPIC)?;
        Ok(self
            .rpc
            .cast(ctx, &target, "create_volume", &request)
            .await?)
    }

    async fn update_service_capabilities(
        &self,
        ctx: &RequestContext,
        report: Capabilities,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .fanout_cast(ctx, SCHEDULER_TOPIC, "update_service_capabilities", &report)
            .await?)
    }

    async fn get_pools(&self, ctx: &RequestContext, request: GetPools) -> Result<PoolList, Status> {
        let target = Target::topic(SCHEDULER_TOPIC)?;
        Ok(self.rpc.call(ctx, &target, "get_pools", &request).await?)
    }
}

/// [`VolumeOps`] of one volume service (`host@backend`) over the bus.
#[derive(Clone)]
pub struct VolumeClient {
    rpc: RpcClient,
    target: Target,
}

impl VolumeClient {
    /// A client of the volume service owning `host`.
    pub fn new(rpc: RpcClient, host: &str) -> RpcResult<Self> {
        Ok(Self {
            rpc,
            target: Target::topic(volume_topic(host))?,
        })
    }

    /// Asks every volume service to report capabilities (no particular host).
    pub async fn publish_to_all(
        rpc: &RpcClient,
        ctx: &RequestContext,
        requester: &str,
    ) -> Result<(), Status> {
        let request = PublishCapabilities {
            requester: requester.to_owned(),
        };
        Ok(rpc
            .fanout_cast(ctx, VOLUME_TOPIC, "publish_service_capabilities", &request)
            .await?)
    }
}

#[async_trait]
impl VolumeOps for VolumeClient {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: CreateVolume,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .cast(ctx, &self.target, "create_volume", &request)
            .await?)
    }

    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        request: DeleteVolume,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .cast(ctx, &self.target, "delete_volume", &request)
            .await?)
    }

    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        request: ExtendVolume,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .cast(ctx, &self.target, "extend_volume", &request)
            .await?)
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        request: CreateSnapshot,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .cast(ctx, &self.target, "create_snapshot", &request)
            .await?)
    }

    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        request: DeleteSnapshot,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .cast(ctx, &self.target, "delete_snapshot", &request)
            .await?)
    }

    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        request: PublishCapabilities,
    ) -> Result<(), Status> {
        Ok(self
            .rpc
            .fanout_cast(ctx, VOLUME_TOPIC, "publish_service_capabilities", &request)
            .await?)
    }

    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        request: AttachVolume,
    ) -> Result<AttachResult, Status> {
        Ok(self
            .rpc
            .call(ctx, &self.target, "attach_volume", &request)
            .await?)
    }

    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        request: DetachVolume,
    ) -> Result<DetachResult, Status> {
        Ok(self
            .rpc
            .call(ctx, &self.target, "detach_volume", &request)
            .await?)
    }
}

// === over the bus: servers ===

/// The dispatcher serving `ops` as the scheduler (`create_volume`,
/// `update_service_capabilities`, `get_pools`).
pub fn scheduler_dispatcher(ops: Arc<dyn SchedulerOps>) -> Dispatcher {
    let create = ops.clone();
    Dispatcher::new()
        .method(
            "create_volume",
            move |ctx: RequestContext, req: ScheduleCreateVolume| {
                let ops = create.clone();
                async move { ops.create_volume(&ctx, req).await }
            },
        )
        .method("update_service_capabilities", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: Capabilities| {
                let ops = ops.clone();
                async move { ops.update_service_capabilities(&ctx, req).await }
            }
        })
        .method("get_pools", move |ctx: RequestContext, req: GetPools| {
            let ops = ops.clone();
            async move { ops.get_pools(&ctx, req).await }
        })
}

/// The dispatcher serving `ops` as a volume service (`create_volume`,
/// `delete_volume`, `extend_volume`, `create_snapshot`, `delete_snapshot`,
/// `attach_volume`, `detach_volume`, `publish_service_capabilities`).
pub fn volume_dispatcher(ops: Arc<dyn VolumeOps>) -> Dispatcher {
    let (create, delete) = (ops.clone(), ops.clone());
    Dispatcher::new()
        .method(
            "create_volume",
            move |ctx: RequestContext, req: CreateVolume| {
                let ops = create.clone();
                async move { ops.create_volume(&ctx, req).await }
            },
        )
        .method(
            "delete_volume",
            move |ctx: RequestContext, req: DeleteVolume| {
                let ops = delete.clone();
                async move { ops.delete_volume(&ctx, req).await }
            },
        )
        .method("extend_volume", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: ExtendVolume| {
                let ops = ops.clone();
                async move { ops.extend_volume(&ctx, req).await }
            }
        })
        .method("create_snapshot", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: CreateSnapshot| {
                let ops = ops.clone();
                async move { ops.create_snapshot(&ctx, req).await }
            }
        })
        .method("delete_snapshot", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: DeleteSnapshot| {
                let ops = ops.clone();
                async move { ops.delete_snapshot(&ctx, req).await }
            }
        })
        .method("attach_volume", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: AttachVolume| {
                let ops = ops.clone();
                async move { ops.attach_volume(&ctx, req).await }
            }
        })
        .method("detach_volume", {
            let ops = ops.clone();
            move |ctx: RequestContext, req: DetachVolume| {
                let ops = ops.clone();
                async move { ops.detach_volume(&ctx, req).await }
            }
        })
        .method(
            "publish_service_capabilities",
            move |ctx: RequestContext, req: PublishCapabilities| {
                let ops = ops.clone();
                async move { ops.publish_service_capabilities(&ctx, req).await }
            },
        )
}
