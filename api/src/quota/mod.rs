//! `scoria.v1.QuotaService`: per-project limits and usage (Cinder's
//! os-quota-sets). Reads come from the database (`quota_usages`, kept by the
//! database itself in the transaction of every change); the checks happen where
//! resources are written (`scoria_common::db::quota`), not here.
//!
//! - `GetQuota`: members and readers see their own project (another is
//!   NOT_FOUND, as other projects' resources are); admins any.
//! - `UpdateQuota`, `DeleteQuota`: admins. A limit is -1 (none) or a count;
//!   names are Cinder's (`volumes`, `gigabytes_<type>`, ...), a per-type one of
//!   a type that exists.
//! - `GetDefaultQuota`: the configured defaults, for every resource.

use scoria_common::{
    RequestContext,
    db::{
        Db,
        quota::{QuotaLine, Resource, UNLIMITED, is_valid_limit},
    },
};
use scoria_proto::v1::{self as pb, quota_service_server::QuotaService};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    request::handle,
    validate::{shown, text},
    volume_type::require_admin,
};

/// The `QuotaService` implementation.
#[derive(Clone)]
pub struct QuotaApi {
    db: Db,
}

impl QuotaApi {
    /// The service over `db` (whose quota defaults are the configured ones).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    #[tracing::instrument(skip_all, fields(project_id = %req.project_id))]
    async fn get(&self, ctx: &RequestContext, req: &pb::GetQuotaRequest) -> ApiResult<pb::Quota> {
        let project = if req.project_id.is_empty() {
            ctx.project_id.clone()
        } else {
            project_id(&req.project_id)?
        };
        if project != ctx.project_id && !ctx.is_admin() {
            return Err(ApiError::NotFound {
                kind: "quota of project",
                id: project,
            });
        }
        self.quota(&project).await
    }

    #[tracing::instrument(skip_all, fields(project_id = %req.project_id))]
    async fn update(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateQuotaRequest,
    ) -> ApiResult<pb::Quota> {
        require_admin(ctx, "UpdateQuota")?;
        let project = project_id(&req.project_id)?;
        if req.limits.is_empty() {
            return Err(ApiError::invalid(
                "limits",
                "must name at least one resource (volumes, gigabytes, snapshots, ...)",
            ));
        }
        let known = self
            .db
            .quota_resources()
            .await
            .map_err(ApiError::db("list quota resources"))?;
        let mut limits = Vec::with_capacity(req.limits.len());
        for (name, limit) in &req.limits {
            limits.push((resource(name, &known)?, limit_of(name, *limit)?));
        }
        self.db
            .set_project_quota(&project, &limits)
            .await
            .map_err(ApiError::db(format!("set the quota of project {project}")))?;
        tracing::warn!(project_id = %project, admin = %ctx.user_id, limits = ?req.limits, "quota updated");
        self.quota(&project).await
    }

    #[tracing::instrument(skip_all, fields(project_id = %req.project_id))]
    async fn delete(
        &self,
        ctx: &RequestContext,
        req: &pb::DeleteQuotaRequest,
    ) -> ApiResult<pb::Quota> {
        require_admin(ctx, "DeleteQuota")?;
        let project = project_id(&req.project_id)?;
        self.db
            .delete_project_quota(&project)
            .await
            .map_err(ApiError::db(format!(
                "delete the quota of project {project}"
            )))?;
        tracing::warn!(project_id = %project, admin = %ctx.user_id, "quota back to the defaults");
        self.quota(&project).await
    }

    async fn defaults(&self) -> ApiResult<pb::Quota> {
        let defaults = self.db.quota_defaults();
        let resources = self
            .db
            .quota_resources()
            .await
            .map_err(ApiError::db("list quota resources"))?;
        Ok(pb::Quota {
            project_id: String::new(),
            usages: resources
                .iter()
                .map(|r| pb::QuotaUsage {
                    resource: r.name(),
                    limit: defaults.of(r),
                    in_use: 0,
                    reserved: 0,
                })
                .collect(),
        })
    }

    async fn quota(&self, project: &str) -> ApiResult<pb::Quota> {
        let lines = self
            .db
            .project_quota(project)
            .await
            .map_err(ApiError::db(format!("get the quota of project {project}")))?;
        Ok(pb::Quota {
            project_id: project.to_owned(),
            usages: lines.iter().map(usage).collect(),
        })
    }
}

fn usage(line: &QuotaLine) -> pb::QuotaUsage {
    pb::QuotaUsage {
        resource: line.resource.name(),
        limit: line.limit,
        in_use: line.in_use,
        reserved: line.reserved,
    }
}

/// A `project_id` field: not empty, at most the usual text length.
fn project_id(value: &str) -> ApiResult<String> {
    text::required_line("project_id", value)?;
    Ok(value.to_owned())
}

/// The resource `name` of an `UpdateQuotaRequest`, among `known` (the base ones
/// and the per-type ones of existing types).
fn resource(name: &str, known: &[Resource]) -> ApiResult<Resource> {
    let field = || text::entry_name("limits", name);
    let parsed = Resource::parse(name).ok_or_else(|| {
        ApiError::invalid(
            field(),
            "unknown resource: use volumes, gigabytes, snapshots, attachments, \
             per_volume_gigabytes, or volumes_<type>, gigabytes_<type>, snapshots_<type>",
        )
    })?;
    if !known.contains(&parsed) {
        let volume_type = parsed.volume_type().unwrap_or_default();
        return Err(ApiError::invalid(
            field(),
            format!("there is no volume type {}", shown(volume_type)),
        ));
    }
    Ok(parsed)
}

/// The limit `limit` of resource `name`: -1 or a count.
fn limit_of(name: &str, limit: i64) -> ApiResult<i64> {
    if !is_valid_limit(limit) {
        return Err(ApiError::invalid(
            text::entry_name("limits", name),
            format!("{limit} is not a limit: use {UNLIMITED} (no limit) or 0 and more"),
        ));
    }
    Ok(limit)
}

#[tonic::async_trait]
impl QuotaService for QuotaApi {
    async fn get_quota(
        &self,
        request: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        handle(request, async |ctx, req| self.get(ctx, &req).await).await
    }

    async fn update_quota(
        &self,
        request: Request<pb::UpdateQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        handle(request, async |ctx, req| self.update(ctx, &req).await).await
    }

    async fn delete_quota(
        &self,
        request: Request<pb::DeleteQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        handle(request, async |ctx, req| self.delete(ctx, &req).await).await
    }

    async fn get_default_quota(
        &self,
        request: Request<pb::GetDefaultQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        handle(request, async |_ctx, _req| self.defaults().await).await
    }
}

#[cfg(test)]
mod tests;
