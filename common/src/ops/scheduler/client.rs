//! [`SchedulerOps`] over the bus.

use async_trait::async_trait;
use scoria_proto::bus::{Capabilities, GetPools, PoolList, ScheduleCreateVolume};

use super::{SCHEDULER_TOPIC, SchedulerOps, methods};
use crate::{
    context::RequestContext,
    ops::OpsResult,
    rpc::{RpcClient, Target},
};

/// [`SchedulerOps`] over the bus: casts and calls to the `scheduler` topic,
/// where the schedulers compete for the work.
#[derive(Clone)]
pub struct SchedulerClient {
    rpc: RpcClient,
}

impl SchedulerClient {
    /// A client sending through `rpc`.
    pub fn new(rpc: RpcClient) -> Self {
        Self { rpc }
    }

    fn target() -> OpsResult<Target> {
        Ok(Target::topic(SCHEDULER_TOPIC)?)
    }
}

#[async_trait]
impl SchedulerOps for SchedulerClient {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> OpsResult<()> {
        methods::CREATE_VOLUME
            .send(&self.rpc, ctx, &Self::target()?, &request)
            .await
    }

    async fn update_service_capabilities(
        &self,
        ctx: &RequestContext,
        report: Capabilities,
    ) -> OpsResult<()> {
        methods::UPDATE_SERVICE_CAPABILITIES
            .send(&self.rpc, ctx, SCHEDULER_TOPIC, &report)
            .await
    }

    async fn get_pools(&self, ctx: &RequestContext, request: GetPools) -> OpsResult<PoolList> {
        methods::GET_POOLS
            .send(&self.rpc, ctx, &Self::target()?, &request)
            .await
    }

    async fn retype_volume(
        &self,
        ctx: &RequestContext,
        request: scoria_proto::bus::RetypeVolume,
    ) -> OpsResult<()> {
        methods::RETYPE_VOLUME
            .send(&self.rpc, ctx, &Self::target()?, &request)
            .await
    }

    async fn find_migration_host(
        &self,
        ctx: &RequestContext,
        request: scoria_proto::bus::FindMigrationHost,
    ) -> OpsResult<scoria_proto::bus::MigrationHost> {
        methods::FIND_MIGRATION_HOST
            .send(&self.rpc, ctx, &Self::target()?, &request)
            .await
    }

    async fn check_host_fits(
        &self,
        ctx: &RequestContext,
        request: scoria_proto::bus::CheckHostFits,
    ) -> OpsResult<scoria_proto::bus::HostFits> {
        methods::CHECK_HOST_FITS
            .send(&self.rpc, ctx, &Self::target()?, &request)
            .await
    }
}
