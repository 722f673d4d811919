//! `scoria.v1.AdminService`: operator actions on services and volumes, for admins
//! only (the auth layer refuses other callers first, by method name; the handlers
//! check again, so the rule holds whatever wraps them).
//!
//! - `ListServices`: the `services` table, each row up or down by its last
//!   heartbeat against `api.service_down_time_secs`.
//! - `SetServiceEnabled`: the scheduler drops disabled services on its next
//!   `services` refresh.
//! - `ResetVolumeStatus`: an unconditional status override of any project's volume.
//! - `ListPools`: a call to a scheduler (`get_pools`), which answers from its host
//!   state: every pool with a fresh capability report, whatever its service's
//!   state, capacity including the virtual consumption since the report.
//!   UNAVAILABLE when the broker is down or no scheduler answers.
//! - `CheckQuotaUsage`: a recount of what the rows hold against `quota_usages`
//!   (see `scoria_common::db::quota`); a difference is logged as an error.

use scoria_common::{
    RequestContext,
    db::Db,
    model::{Volume, now_ms},
    translation::service_to_proto,
};
use scoria_proto::{
    bus::GetPools,
    v1::{self as pb, admin_service_server::AdminService},
};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    ports::Ports,
    request::{handle, handle_as},
    validate::{MAX_TEXT_CHARS, status_filter, text},
    volume_type::require_admin,
};

/// The `AdminService` implementation.
#[derive(Clone)]
pub struct AdminApi {
    db: Db,
    /// A service whose last heartbeat is older than this (ms) is down.
    service_down_ms: i64,
    /// Where `ListPools` asks a scheduler.
    ports: Ports,
}

impl AdminApi {
    /// The service over `db` and `ports`; `service_down_ms` from
    /// `api.service_down_time_secs`.
    pub fn new(db: Db, service_down_ms: i64, ports: Ports) -> Self {
        Self {
            db,
            service_down_ms,
            ports,
        }
    }

    #[tracing::instrument(skip_all, fields(host = %req.host))]
    async fn pools(
        &self,
        ctx: &RequestContext,
        req: &pb::ListPoolsRequest,
    ) -> ApiResult<pb::ListPoolsResponse> {
        require_admin(ctx, "ListPools")?;
        pool_host(&req.host)?;
        if self.ports.broker.unavailable().is_some() {
            return Err(ApiError::BrokerDown(
                "cannot ask a scheduler for its pools".into(),
            ));
        }
        let list = self
            .ports
            .scheduler
            .get_pools(
                ctx,
                GetPools {
                    host: req.host.clone(),
                },
            )
            .await
            .map_err(Status::from)
            .map_err(|status| ApiError::Bus {
                action: "list pools: no scheduler answered".into(),
                status,
            })?;
        Ok(pb::ListPoolsResponse { pools: list.pools })
    }

    #[tracing::instrument(skip_all, fields(project_id = %req.project_id))]
    async fn check_usage(
        &self,
        ctx: &RequestContext,
        req: &pb::CheckQuotaUsageRequest,
    ) -> ApiResult<pb::CheckQuotaUsageResponse> {
        require_admin(ctx, "CheckQuotaUsage")?;
        text::line("project_id", &req.project_id)?;
        let project = (!req.project_id.is_empty()).then_some(req.project_id.as_str());
        let differences = self
            .db
            .check_quota_usage(project)
            .await
            .map_err(ApiError::db("recount quota usage"))?;
        if !differences.is_empty() {
            tracing::error!(
                ?differences,
                "quota usage differs from a recount of the rows"
            );
        }
        Ok(pb::CheckQuotaUsageResponse {
            differences: differences
                .into_iter()
                .map(|d| pb::QuotaUsageDifference {
                    project_id: d.project_id,
                    resource: d.resource,
                    recorded_in_use: d.recorded.0,
                    recorded_reserved: d.recorded.1,
                    counted_in_use: d.counted.0,
                    counted_reserved: d.counted.1,
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(binary = %req.binary))]
    async fn services(
        &self,
        ctx: &RequestContext,
        req: &pb::ListServicesRequest,
    ) -> ApiResult<pb::ListServicesResponse> {
        require_admin(ctx, "ListServices")?;
        text::line("binary", &req.binary)?;
        let services = self
            .db
            .list_services()
            .await
            .map_err(ApiError::db("list services"))?;
        let now = now_ms();
        Ok(pb::ListServicesResponse {
            services: services
                .iter()
                .filter(|s| req.binary.is_empty() || s.binary == req.binary)
                .map(|s| service_to_proto(s, now, self.service_down_ms))
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(binary = %req.binary, host = %req.host, enabled = req.enabled))]
    async fn set_enabled(
        &self,
        ctx: &RequestContext,
        req: &pb::SetServiceEnabledRequest,
    ) -> ApiResult<pb::Service> {
        require_admin(ctx, "SetServiceEnabled")?;
        text::required_line("binary", &req.binary)?;
        text::required_line("host", &req.host)?;
        if !req.enabled {
            disable_reason(&req.reason)?;
        }
        let found = self
            .db
            .set_service_enabled(&req.binary, &req.host, req.enabled, &req.reason)
            .await
            .map_err(ApiError::db(format!(
                "set service {} on {} enabled={}",
                req.binary, req.host, req.enabled
            )))?;
        let service = if found {
            self.db
                .get_service(&req.binary, &req.host)
                .await
                .map_err(ApiError::db(format!(
                    "get service {} on {}",
                    req.binary, req.host
                )))?
        } else {
            None
        };
        let service = service.ok_or_else(|| ApiError::NotFound {
            kind: "service",
            id: format!("binary={:?} host={:?}", req.binary, req.host),
        })?;
        tracing::info!(
            binary = %service.binary,
            host = %service.host,
            enabled = !service.disabled,
            reason = %service.disabled_reason,
            "service {}",
            if service.disabled { "disabled" } else { "enabled" }
        );
        Ok(service_to_proto(&service, now_ms(), self.service_down_ms))
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id))]
    async fn reset_status(
        &self,
        ctx: &RequestContext,
        req: &pb::ResetVolumeStatusRequest,
    ) -> ApiResult<Volume> {
        require_admin(ctx, "ResetVolumeStatus")?;
        let volume_id = crate::validate::uuid("volume_id", &req.volume_id)?;
        let status = status_filter(req.status)?
            .ok_or_else(|| ApiError::invalid("status", "must be set (not UNSPECIFIED)"))?;
        let volume = self
            .db
            .reset_volume_status(&volume_id, status)
            .await
            .map_err(ApiError::db(format!("reset status of volume {volume_id}")))?
            .ok_or_else(|| ApiError::volume_not_found(&volume_id))?;
        tracing::warn!(
            volume_id = %volume.id,
            project_id = %volume.project_id,
            status = %volume.status,
            admin = %ctx.user_id,
            "volume status reset by an admin"
        );
        Ok(volume)
    }
}

/// The `host` filter of `ListPools`: empty, or `host@backend` of at most
/// [`MAX_TEXT_CHARS`] characters (no pool part, no spaces).
pub fn pool_host(host: &str) -> ApiResult<()> {
    if host.is_empty() {
        return Ok(());
    }
    text::line("host", host)?;
    let well_formed = scoria_common::model::is_service_host(host);
    if !well_formed {
        return Err(ApiError::invalid(
            "host",
            format!(
                "must be empty or host@backend (up to {MAX_TEXT_CHARS} characters, no pool part, no spaces), got {host:?}"
            ),
        ));
    }
    Ok(())
}

/// The reason of a disable: 1 to [`crate::validate::MAX_TEXT_CHARS`] characters, not only spaces.
pub fn disable_reason(reason: &str) -> ApiResult<()> {
    if reason.trim().is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "must not be empty when disabling a service",
        ));
    }
    text::line("reason", reason)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        handle(request, async |ctx, req| self.services(ctx, &req).await).await
    }

    async fn set_service_enabled(
        &self,
        request: Request<pb::SetServiceEnabledRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        handle(request, async |ctx, req| self.set_enabled(ctx, &req).await).await
    }

    async fn reset_volume_status(
        &self,
        request: Request<pb::ResetVolumeStatusRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.reset_status(ctx, &req).await).await
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        handle(request, async |ctx, req| self.pools(ctx, &req).await).await
    }

    async fn check_quota_usage(
        &self,
        request: Request<pb::CheckQuotaUsageRequest>,
    ) -> Result<Response<pb::CheckQuotaUsageResponse>, Status> {
        handle(request, async |ctx, req| self.check_usage(ctx, &req).await).await
    }

    async fn migrate_volume(
        &self,
        request: Request<pb::MigrateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| self.migrate(ctx, &req).await).await
    }

    async fn manage_volume(
        &self,
        request: Request<pb::ManageVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| {
            self.manage_volume(ctx, &req).await
        })
        .await
    }

    async fn unmanage_volume(
        &self,
        request: Request<pb::UnmanageVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        handle_as(request, async |ctx, req| {
            self.unmanage_volume(ctx, &req).await
        })
        .await
    }

    async fn manage_snapshot(
        &self,
        request: Request<pb::ManageSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        handle_as(request, async |ctx, req| {
            self.manage_snapshot(ctx, &req).await
        })
        .await
    }

    async fn unmanage_snapshot(
        &self,
        request: Request<pb::UnmanageSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        handle_as(request, async |ctx, req| {
            self.unmanage_snapshot(ctx, &req).await
        })
        .await
    }
}

mod manage;
mod migrate;

#[cfg(test)]
mod tests;
