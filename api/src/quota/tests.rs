//! Tests of [`super::QuotaApi`] (and of quota refusals through the VolumeService)
//! over a real SQLite database.

use scoria_common::{
    db::{Db, quota::QuotaDefaults},
    model::VolumeType,
    status::reason_of,
};
use scoria_proto::v1::volume_service_server::VolumeService;
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::{
    test_support::{Harness, ctx, request},
    volume::VolumeApi,
};

struct Fixture {
    api: QuotaApi,
    volumes: VolumeApi,
    db: Db,
    _h: Harness,
}

async fn fixture() -> Fixture {
    let h = Harness::new().await;
    let db = h.db.db().clone().with_quota_defaults(QuotaDefaults::CINDER);
    Fixture {
        api: QuotaApi::new(db.clone()),
        volumes: VolumeApi::new(db.clone(), h.ports(), 100),
        db,
        _h: h,
    }
}

fn member(project: &str) -> RequestContext {
    ctx(project, &["member"])
}

fn admin() -> RequestContext {
    ctx("admin-project", &["admin", "member"])
}

fn line(quota: &pb::Quota, resource: &str) -> (i64, i64, i64) {
    quota
        .usages
        .iter()
        .find(|u| u.resource == resource)
        .map(|u| (u.limit, u.in_use, u.reserved))
        .unwrap_or_else(|| panic!("no {resource} in {quota:?}"))
}

async fn get(f: &Fixture, ctx: &RequestContext, project: &str) -> Result<pb::Quota, Status> {
    f.api
        .get_quota(request(
            ctx,
            pb::GetQuotaRequest {
                project_id: project.into(),
            },
        ))
        .await
        .map(Response::into_inner)
}

async fn update(
    f: &Fixture,
    ctx: &RequestContext,
    project: &str,
    limits: &[(&str, i64)],
) -> Result<pb::Quota, Status> {
    let req = pb::UpdateQuotaRequest {
        project_id: project.into(),
        limits: limits.iter().map(|(r, l)| ((*r).to_owned(), *l)).collect(),
    };
    f.api
        .update_quota(request(ctx, req))
        .await
        .map(Response::into_inner)
}

async fn create_volume(
    f: &Fixture,
    ctx: &RequestContext,
    size_gib: u64,
) -> Result<pb::Volume, Status> {
    let req = pb::CreateVolumeRequest {
        name: "v".into(),
        size_gib,
        ..Default::default()
    };
    f.volumes
        .create_volume(request(ctx, req))
        .await
        .map(Response::into_inner)
}

#[tokio::test]
async fn members_see_their_own_quota_only_admins_any() {
    let f = fixture().await;
    let own = get(&f, &member("p1"), "").await.expect("own");
    assert_eq!(own.project_id, "p1");
    assert_eq!(line(&own, "volumes"), (10, 0, 0));
    assert_eq!(line(&own, "gigabytes"), (1000, 0, 0));
    assert_eq!(line(&own, "snapshots"), (10, 0, 0));
    assert_eq!(line(&own, "attachments"), (-1, 0, 0));
    assert_eq!(line(&own, "per_volume_gigabytes"), (-1, 0, 0));
    // The default type's per-type lines are there too.
    assert_eq!(line(&own, "volumes___DEFAULT__"), (-1, 0, 0));
    assert_eq!(
        get(&f, &member("p1"), "p1")
            .await
            .expect("by id")
            .project_id,
        "p1"
    );

    let other = get(&f, &member("p1"), "p2")
        .await
        .expect_err("another project");
    assert_eq!(other.code(), Code::NotFound);
    assert!(other.message().contains("p2"), "{}", other.message());
    let reader = get(&f, &ctx("p1", &["reader"]), "p2")
        .await
        .expect_err("reader");
    assert_eq!(reader.code(), Code::NotFound);
    assert_eq!(
        get(&f, &admin(), "p2").await.expect("admin").project_id,
        "p2"
    );
}

#[tokio::test]
async fn usage_shows_what_volumes_hold() {
    let f = fixture().await;
    let p1 = member("p1");
    create_volume(&f, &p1, 3).await.expect("create");
    let quota = get(&f, &p1, "").await.expect("quota");
    assert_eq!(
        line(&quota, "volumes"),
        (10, 0, 1),
        "reserved while creating"
    );
    assert_eq!(line(&quota, "gigabytes"), (1000, 0, 3));
}

#[tokio::test]
async fn only_admins_change_quotas_and_limits_are_checked() {
    let f = fixture().await;
    let denied = update(&f, &member("p1"), "p1", &[("volumes", 100)])
        .await
        .expect_err("member");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = f
        .api
        .delete_quota(request(
            &member("p1"),
            pb::DeleteQuotaRequest {
                project_id: "p1".into(),
            },
        ))
        .await
        .expect_err("member delete");
    assert_eq!(denied.code(), Code::PermissionDenied);

    for (limits, names) in [
        (vec![("gigabytes", -2)], "gigabytes"),
        (vec![("groups", 3)], "groups"),
        (vec![("volumes_gold", 3)], "gold"),
        (vec![("volumes", 5), ("snapshots", -7)], "snapshots"),
    ] {
        let err = update(&f, &admin(), "p1", &limits)
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{limits:?}");
        assert!(
            err.message().contains(names),
            "{limits:?}: {}",
            err.message()
        );
        let bad = err.get_details_bad_request().expect("bad request");
        let field = &bad.field_violations[0].field;
        assert!(
            field.starts_with("limits[") && field.contains(names),
            "{limits:?}: {field}"
        );
    }
    let err = update(&f, &admin(), "", &[("volumes", 1)])
        .await
        .expect_err("no project");
    assert!(err.message().contains("project_id"), "{}", err.message());
    let err = update(&f, &admin(), "p1", &[])
        .await
        .expect_err("no limits");
    assert!(err.message().contains("limits"), "{}", err.message());
    // Nothing of the refused updates was kept.
    assert_eq!(
        line(&get(&f, &admin(), "p1").await.expect("quota"), "volumes").0,
        10
    );

    f.db.create_volume_type(&VolumeType {
        id: uuid::Uuid::new_v4().to_string(),
        name: "gold".into(),
        description: String::new(),
        extra_specs: Default::default(),
        is_default: false,
        created_at_ms: 0,
        updated_at_ms: 0,
    })
    .await
    .expect("type");
    let quota = update(
        &f,
        &admin(),
        "p1",
        &[("volumes", 1), ("gigabytes_gold", -1), ("volumes_gold", 0)],
    )
    .await
    .expect("update");
    assert_eq!(line(&quota, "volumes"), (1, 0, 0));
    assert_eq!(line(&quota, "volumes_gold"), (0, 0, 0));
    assert_eq!(line(&quota, "snapshots"), (10, 0, 0), "others stay");
}

#[tokio::test]
async fn a_limit_below_usage_is_kept_and_refuses_more_and_delete_restores_defaults() {
    let f = fixture().await;
    let p1 = member("p1");
    for _ in 0..3 {
        create_volume(&f, &p1, 1).await.expect("create");
    }
    let quota = update(&f, &admin(), "p1", &[("volumes", 2)])
        .await
        .expect("below usage");
    assert_eq!(line(&quota, "volumes"), (2, 0, 3));

    let refused = create_volume(&f, &p1, 1).await.expect_err("over quota");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        reason_of(&refused),
        Some(scoria_common::status::Reason::QuotaExceeded)
    );
    let failure = refused.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(failure.violations.len(), 1);
    let v = &failure.violations[0];
    assert_eq!(
        (v.subject.as_str(), v.quota_id.as_str(), v.quota_value),
        ("p1", "volumes", 2)
    );
    assert_eq!(
        v.quota_dimensions.get("reserved").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        v.quota_dimensions.get("requested").map(String::as_str),
        Some("1")
    );
    assert!(
        refused
            .message()
            .contains("volumes limit 2, 0 in use and 3 reserved, 1 more requested"),
        "{}",
        refused.message()
    );
    // Another project is not held back.
    create_volume(&f, &member("p2"), 1)
        .await
        .expect("other project");

    let quota = f
        .api
        .delete_quota(request(
            &admin(),
            pb::DeleteQuotaRequest {
                project_id: "p1".into(),
            },
        ))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(line(&quota, "volumes"), (10, 0, 3));
    create_volume(&f, &p1, 1)
        .await
        .expect("under the default again");
}

#[tokio::test]
async fn every_exceeded_resource_is_named() {
    let f = fixture().await;
    update(
        &f,
        &admin(),
        "p1",
        &[("gigabytes", 5), ("per_volume_gigabytes", 4)],
    )
    .await
    .expect("update");
    let refused = create_volume(&f, &member("p1"), 6)
        .await
        .expect_err("too big");
    let failure = refused.get_details_quota_failure().expect("QuotaFailure");
    let named: Vec<&str> = failure
        .violations
        .iter()
        .map(|v| v.quota_id.as_str())
        .collect();
    assert_eq!(named, ["gigabytes", "per_volume_gigabytes"]);
    assert!(
        refused.message().contains("at most 4 GiB"),
        "{}",
        refused.message()
    );
    assert!(
        f.db.list_volumes(&Default::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn defaults_list_every_resource() {
    let f = fixture().await;
    let defaults = f
        .api
        .get_default_quota(request(&member("p1"), pb::GetDefaultQuotaRequest {}))
        .await
        .expect("defaults")
        .into_inner();
    assert_eq!(defaults.project_id, "");
    let names: Vec<&str> = defaults
        .usages
        .iter()
        .map(|u| u.resource.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "volumes",
            "gigabytes",
            "snapshots",
            "attachments",
            "per_volume_gigabytes",
            "backups",
            "backup_gigabytes",
            "volumes___DEFAULT__",
            "gigabytes___DEFAULT__",
            "snapshots___DEFAULT__"
        ]
    );
    assert_eq!(line(&defaults, "volumes"), (10, 0, 0));
}
