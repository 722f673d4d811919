//! Who may see a resource: the one visibility rule of every Get, List, Update and
//! Delete, and of the sources a create names (a snapshot, a volume to clone).
//!
//! A resource is visible to its own project; an admin sees every project's. A
//! resource the caller may not see is NOT_FOUND, never PERMISSION_DENIED, so ids
//! of other projects do not leak.

use std::future::Future;

use scoria_common::{
    RequestContext,
    db::DbResult,
    model::{Attachment, Snapshot, Volume},
};

use crate::error::{ApiError, ApiResult};

/// A resource that belongs to a project.
pub trait Owned {
    /// The project it belongs to.
    fn project_id(&self) -> &str;
}

impl Owned for Volume {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl Owned for Snapshot {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl Owned for scoria_common::model::Backup {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

impl Owned for Attachment {
    fn project_id(&self) -> &str {
        &self.project_id
    }
}

/// Whether `ctx` may see `resource`.
pub fn visible<T: Owned>(ctx: &RequestContext, resource: &T) -> bool {
    ctx.is_admin() || resource.project_id() == ctx.project_id
}

/// `resource` if `ctx` may see it (the filter of a loaded row).
pub fn filter<T: Owned>(ctx: &RequestContext, resource: Option<T>) -> Option<T> {
    resource.filter(|r| visible(ctx, r))
}

/// The row `read` finds for the `kind` `id` (`volume`, `snapshot`, ...) if `ctx`
/// may see it, else NOT_FOUND.
pub(crate) async fn load<T: Owned>(
    ctx: &RequestContext,
    kind: &'static str,
    id: &str,
    read: impl Future<Output = DbResult<Option<T>>>,
) -> ApiResult<T> {
    load_source(ctx, kind, &format!("{kind} {id}"), id, read).await
}

/// [`load`] for what a create names in `field` (`snapshot_id`, ...): NOT_FOUND
/// names the field; `what` (`source volume <id>`) names the read.
pub(crate) async fn load_source<T: Owned>(
    ctx: &RequestContext,
    field: &'static str,
    what: &str,
    id: &str,
    read: impl Future<Output = DbResult<Option<T>>>,
) -> ApiResult<T> {
    let found = read.await.map_err(ApiError::db(format!("get {what}")))?;
    filter(ctx, found).ok_or_else(|| ApiError::NotFound {
        kind: field,
        id: id.to_owned(),
    })
}

/// The project a list shows: the caller's own (an admin lists its own project
/// too, as Cinder without `all_tenants`; it reads any other by id).
pub fn list_project(ctx: &RequestContext) -> Option<String> {
    Some(ctx.project_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, roles: &[&str]) -> RequestContext {
        RequestContext::new(
            project,
            "u",
            roles.iter().map(|r| (*r).to_owned()).collect(),
        )
    }

    #[test]
    fn own_project_or_admin() {
        struct Row;
        impl Owned for Row {
            fn project_id(&self) -> &str {
                "p1"
            }
        }
        let volume = Row;
        assert!(visible(&ctx("p1", &["member"]), &volume));
        assert!(!visible(&ctx("p2", &["member"]), &volume));
        assert!(!visible(&ctx("p2", &["reader"]), &volume));
        assert!(visible(&ctx("p2", &["admin"]), &volume));
    }
}
