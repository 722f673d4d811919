//! Quotas through the real processes: limits that hold exactly under hundreds
//! of concurrent requests (one API on SQLite, two on PostgreSQL), usage that
//! follows every create, extend, snapshot, attachment, failure and delete, the
//! per-type, per-volume and attachment limits, and the QuotaService's rules.
//! Every test ends with `CheckQuotaUsage` finding the recorded usage equal to
//! a recount of the rows.

mod concurrency;
mod gigabytes;
mod limits;
mod service;

use scoria_tests::stack::{Clients, Stack};
use tonic::{Code, Response, Status};
use tonic_types::{QuotaViolation, StatusExt};

use crate::support::{pb, sized};

/// Asserts `err` is a quota refusal of project `project` (RESOURCE_EXHAUSTED,
/// ErrorInfo reason `QUOTA_EXCEEDED`, a `QuotaFailure`) with a violation of
/// `resource`, which its message names too; returns that violation.
fn assert_over_quota(err: &Status, project: &str, resource: &str) -> QuotaViolation {
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let info = err
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {err:?}"));
    assert_eq!(info.reason, "QUOTA_EXCEEDED", "{err:?}");
    let failure = err
        .get_details_quota_failure()
        .unwrap_or_else(|| panic!("no QuotaFailure in {err:?}"));
    let violation = failure
        .violations
        .iter()
        .find(|v| v.quota_id == resource)
        .unwrap_or_else(|| panic!("no violation of {resource} in {failure:?}"))
        .clone();
    assert_eq!(violation.subject, project, "{violation:?}");
    assert_eq!(violation.quota_metric, resource, "{violation:?}");
    assert_eq!(
        violation
            .quota_dimensions
            .get("project_id")
            .map(String::as_str),
        Some(project),
        "{violation:?}"
    );
    assert!(
        err.message()
            .contains(&format!("project {project} would exceed its quota")),
        "{err:?}"
    );
    assert!(err.message().contains(resource), "{err:?}");
    violation
}

/// The resources a quota refusal names.
fn refused_resources(err: &Status) -> Vec<String> {
    err.get_details_quota_failure()
        .map(|f| f.violations.into_iter().map(|v| v.quota_id).collect())
        .unwrap_or_default()
}

/// A `dimension` of `violation` as a number.
fn dimension(violation: &QuotaViolation, dimension: &str) -> i64 {
    violation
        .quota_dimensions
        .get(dimension)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {dimension} in {violation:?}"))
}

/// CreateVolume through `clients`.
async fn try_create(
    clients: &Clients,
    request: pb::CreateVolumeRequest,
) -> Result<pb::Volume, Status> {
    clients
        .volumes()
        .create_volume(request)
        .await
        .map(Response::into_inner)
}

/// A CreateVolume request of `size_gib` of volume type `volume_type`.
fn typed(volume_type: &str, size_gib: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        volume_type: volume_type.to_owned(),
        ..sized(size_gib)
    }
}

/// Creates a volume of `request` in `project` and waits until it is
/// available; its id.
async fn available(stack: &Stack, project: &str, request: pb::CreateVolumeRequest) -> String {
    let id = try_create(&stack.as_member(project), request.clone())
        .await
        .unwrap_or_else(|e| panic!("create {request:?}: {e:?}\n{}", stack.logs()))
        .id;
    stack
        .wait_status(project, &id, pb::VolumeStatus::Available)
        .await;
    id
}

/// Deletes volume `id` of `project` and waits until it is gone.
async fn delete_volume(stack: &Stack, project: &str, id: &str) {
    stack
        .volumes(project)
        .delete_volume(pb::DeleteVolumeRequest { id: id.to_owned() })
        .await
        .unwrap_or_else(|e| panic!("delete {id}: {e:?}\n{}", stack.logs()));
    stack.wait_volume_gone(project, id).await;
}

/// Creates volume type `name` with `extra_specs` (as an admin).
async fn create_type(stack: &Stack, name: &str, extra_specs: &[(&str, &str)]) {
    stack
        .types_admin("admin-project")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: name.to_owned(),
            extra_specs: extra_specs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create volume type {name}: {e:?}"));
}

/// `(in_use, reserved)` of `resource` in `project`'s quota.
async fn held(stack: &Stack, project: &str, resource: &str) -> (i64, i64) {
    let (in_use, reserved, _) = stack.quota_usage(project, resource).await;
    (in_use, reserved)
}
