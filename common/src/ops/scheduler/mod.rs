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
    /// Change a `retyping` volume's type, in place or by a migration.
    pub const RETYPE_VOLUME: Cast<scoria_proto::bus::RetypeVolume> = Cast::new("retype_volume");
    /// Pick the destination of a migration.
    pub const FIND_MIGRATION_HOST: Call<
        scoria_proto::bus::FindMigrationHost,
        scoria_proto::bus::MigrationHost,
    > = Call::new("find_migration_host");
    /// Whether a backend's pools pass the capability filter for a type.
    pub const CHECK_HOST_FITS: Call<scoria_proto::bus::CheckHostFits, scoria_proto::bus::HostFits> =
        Call::new("check_host_fits");

    /// Every method name the scheduler serves.
    pub const ALL: [&str; 6] = [
        CREATE_VOLUME.name(),
        UPDATE_SERVICE_CAPABILITIES.name(),
        GET_POOLS.name(),
        RETYPE_VOLUME.name(),
        FIND_MIGRATION_HOST.name(),
        CHECK_HOST_FITS.name(),
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

    /// Changes a `retyping` volume's type: in place, by a migration, or fails
    /// the retype (the default refuses: a test fake does not retype).
    async fn retype_volume(
        &self,
        _ctx: &RequestContext,
        request: scoria_proto::bus::RetypeVolume,
    ) -> OpsResult<()> {
        Err(not_served("retype_volume", &request.volume_id))
    }

    /// The destination of a migration, filtered as a create, never the
    /// volume's own backend (a call; NOT_FOUND-like `NoValidBackend` otherwise).
    async fn find_migration_host(
        &self,
        _ctx: &RequestContext,
        request: scoria_proto::bus::FindMigrationHost,
    ) -> OpsResult<scoria_proto::bus::MigrationHost> {
        Err(not_served("find_migration_host", &request.volume_id))
    }

    /// Whether a fresh pool of `request.host` passes the capability filter
    /// for `request.volume_type` (a call).
    async fn check_host_fits(
        &self,
        _ctx: &RequestContext,
        request: scoria_proto::bus::CheckHostFits,
    ) -> OpsResult<scoria_proto::bus::HostFits> {
        Err(super::OpsError::Failed(crate::status::error(
            tonic::Code::Unimplemented,
            crate::status::Reason::Unimplemented,
            format!("check_host_fits of {} is not served here", request.host),
        )))
    }
}

/// The error of a method an implementation does not serve.
fn not_served(method: &str, volume_id: &str) -> super::OpsError {
    super::OpsError::Failed(crate::status::error(
        tonic::Code::Unimplemented,
        crate::status::Reason::Unimplemented,
        format!("{method} of volume {volume_id} is not served here"),
    ))
}
