//! The QuotaService's rules: who may read and write which quota, which limits
//! are valid, the defaults from the configuration, and DeleteQuota bringing
//! them back.

use std::collections::HashMap;

use scoria_tests::stack::{DbKind, Stack};
use tonic::{Code, Response};

use super::{assert_over_quota, available, try_create};
use crate::support::{pb, sized};

/// `resource` -> `(limit, in_use, reserved)` of `quota`.
fn lines(quota: &pb::Quota) -> HashMap<String, (i64, i64, i64)> {
    quota
        .usages
        .iter()
        .map(|u| (u.resource.clone(), (u.limit, u.in_use, u.reserved)))
        .collect()
}

fn update(project: &str, limits: &[(&str, i64)]) -> pb::UpdateQuotaRequest {
    pb::UpdateQuotaRequest {
        project_id: project.to_owned(),
        limits: limits.iter().map(|(r, l)| ((*r).to_owned(), *l)).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_service_reads_writes_and_defaults() {
    let env = [
        ("SCORIA_QUOTA_VOLUMES", "7"),
        ("SCORIA_QUOTA_GIGABYTES", "70"),
        ("SCORIA_QUOTA_SNAPSHOTS", "3"),
        ("SCORIA_QUOTA_PER_VOLUME_GIGABYTES", "20"),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let member = stack.as_member("p1");
    let mut admin = stack.quotas_admin("admin-project");

    // The defaults are the configured ones.
    let defaults = member
        .quotas()
        .get_default_quota(pb::GetDefaultQuotaRequest {})
        .await
        .map(Response::into_inner)
        .expect("defaults");
    let got = lines(&defaults);
    assert_eq!(got["volumes"].0, 7, "{defaults:?}");
    assert_eq!(got["gigabytes"].0, 70, "{defaults:?}");
    assert_eq!(got["snapshots"].0, 3, "{defaults:?}");
    assert_eq!(got["per_volume_gigabytes"].0, 20, "{defaults:?}");
    assert_eq!(got["attachments"].0, -1, "{defaults:?}");
    assert_eq!(got["volumes___DEFAULT__"].0, -1, "{defaults:?}");

    // A member reads its own quota, not another project's; an admin reads any.
    let own = member
        .quotas()
        .get_quota(pb::GetQuotaRequest::default())
        .await
        .map(Response::into_inner)
        .expect("own quota");
    assert_eq!(own.project_id, "p1");
    assert_eq!(lines(&own)["volumes"], (7, 0, 0), "{own:?}");
    let other = pb::GetQuotaRequest {
        project_id: "p2".into(),
    };
    let err = member
        .quotas()
        .get_quota(other.clone())
        .await
        .expect_err("another project");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let seen = admin
        .get_quota(other)
        .await
        .map(Response::into_inner)
        .expect("admin reads p2");
    assert_eq!(seen.project_id, "p2");
    assert_eq!(lines(&seen)["volumes"], (7, 0, 0));

    // Only admins write.
    let err = member
        .quotas()
        .update_quota(update("p1", &[("volumes", 100)]))
        .await
        .expect_err("member update");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = member
        .quotas()
        .delete_quota(pb::DeleteQuotaRequest {
            project_id: "p1".into(),
        })
        .await
        .expect_err("member delete");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Invalid limits and resources are refused by name, and change nothing.
    let err = admin
        .update_quota(update("p1", &[("gigabytes", 5), ("snapshots", -2)]))
        .await
        .expect_err("-2");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("snapshots"), "{err:?}");
    assert!(err.message().contains("-2"), "{err:?}");
    for unknown in ["groups", "volumes_nosuchtype"] {
        let err = admin
            .update_quota(update("p1", &[(unknown, 5)]))
            .await
            .expect_err("unknown resource");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(unknown), "{err:?}");
    }
    assert_eq!(stack.quota_usage("p1", "gigabytes").await.2, 70);
    assert_eq!(stack.quota_usage("p1", "snapshots").await.2, 3);

    // An override binds, -1 lifts a limit, DeleteQuota brings the defaults back.
    let set = admin
        .update_quota(update(
            "p1",
            &[("volumes", 1), ("per_volume_gigabytes", -1)],
        ))
        .await
        .map(Response::into_inner)
        .expect("update");
    assert_eq!(lines(&set)["volumes"].0, 1);
    assert_eq!(lines(&set)["gigabytes"].0, 70, "others stay");
    available(&stack, "p1", sized(21)).await;
    let err = try_create(&member, sized(1)).await.expect_err("limit 1");
    assert_over_quota(&err, "p1", "volumes");
    let back = admin
        .delete_quota(pb::DeleteQuotaRequest {
            project_id: "p1".into(),
        })
        .await
        .map(Response::into_inner)
        .expect("delete quota");
    assert_eq!(lines(&back)["volumes"], (7, 1, 0), "{back:?}");
    assert_eq!(lines(&back)["per_volume_gigabytes"].0, 20, "{back:?}");
    let err = try_create(&member, sized(21))
        .await
        .expect_err("per-volume default again");
    assert_over_quota(&err, "p1", "per_volume_gigabytes");
    available(&stack, "p1", sized(1)).await;
    assert_eq!(stack.quota_usage("p1", "volumes").await, (2, 0, 7));
    // p1's overrides were its own: p2 never had any.
    assert_eq!(stack.quota_usage("p2", "volumes").await, (0, 0, 7));
    stack.assert_quota_exact().await;
}
