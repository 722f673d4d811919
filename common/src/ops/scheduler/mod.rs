//! The scheduler's port: what it does for the API and the volume services.

mod client;
mod server;

use async_trait::async_trait;
use scoria_proto::bus::{Capabilities, GetPools, PoolList, ScheduleCreateVolume};

pub use client::SchedulerClient;
pub use server::scheduler_dispatcher;

use super::OpsResult;
use crate::context::RequestContext;

/// The scheduler's topic.
pub const SCHEDULER_TOPIC: &str = "scheduler";

/// The scheduler's bus methods, each declared once.
pub mod methods {
    use scoria_proto::bus::{Capabilities, GetPools, PoolList, ScheduleCreateVolume};

    use crate::ops::method::{Call, Cast, Fanout};

    /// Place a new volume.
    pub const CREATE_VOLUME: Cast<ScheduleCreateVolume> = Cast::new("create_volume");
    /// A volume service's capability report.
    pub const UPDATE_SERVICE_CAPABILITIES: Fanout<Capabilities> =
        Fanout::new("update_service_capabilities");
    /// The pools a scheduler knows.
    pub const GET_POOLS: Call<GetPools, PoolList> = Call::new("get_pools");

    /// Every method name the scheduler serves.
    pub const ALL: [&str; 3] = [
        CREATE_VOLUME.name(),
        UPDATE_SERVICE_CAPABILITIES.name(),
        GET_POOLS.name(),
    ];
}

/// What the scheduler does for others.
#[async_trait]
pub trait SchedulerOps: Send + Sync {
    /// Places a new volume on a backend (or fails it with the reason).
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> OpsResult<()>;

    /// Takes a volume service's capability report (a fanout).
    async fn update_service_capabilities(
        &self,
        ctx: &RequestContext,
        report: Capabilities,
    ) -> OpsResult<()>;

    /// The pools this scheduler knows, with their capacity (a call).
    async fn get_pools(&self, ctx: &RequestContext, request: GetPools) -> OpsResult<PoolList>;
}
