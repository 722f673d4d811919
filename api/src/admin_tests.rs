//! Tests of [`super`]: admin-only (auth layer and handlers), services up/down and
//! enable/disable, volume status resets.

use std::convert::Infallible;

use http::Request as HttpRequest;
use scoria_common::{
    db::{WorkerEntry, WorkerKind},
    model::VolumeStatus,
};
use scoria_proto::v1::admin_service_server::AdminServiceServer;
use tonic::{Code, body::Body};
use tower::{Layer, Service as _, ServiceExt};

use super::*;
use crate::auth::{AuthLayer, Authenticator, authorize};

const METHODS: [&str; 3] = ["ListServices", "SetServiceEnabled", "ResetVolumeStatus"];

struct TempDb {
    db: Db,
    dir: std::path::PathBuf,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn temp_db() -> TempDb {
    let dir = std::env::temp_dir().join(format!("scoria-admin-test-{}", uuid::Uuid::new_v4()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
        .await
        .expect("db");
    TempDb { db, dir }
}

fn admin() -> RequestContext {
    RequestContext::new("admin-project", "root", vec!["admin".into()])
}

fn member() -> RequestContext {
    RequestContext::new("p1", "alice", vec!["member".into(), "reader".into()])
}

fn request<T>(ctx: RequestContext, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ctx);
    request
}

fn field_of(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .expect("bad request details")
        .field_violations[0]
        .field
        .clone()
}

/// A volume of project `p2` in `status`, with an error message and a worker entry.
async fn volume(db: &Db, status: VolumeStatus) -> Volume {
    let now = now_ms();
    let volume = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p2".into(),
        user_id: "bob".into(),
        name: "stuck".into(),
        description: String::new(),
        size_gib: 1,
        status,
        volume_type: String::new(),
        availability_zone: "az1".into(),
        host: Some("n1@file".into()),
        metadata: Default::default(),
        error_message: "backend failed".into(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: status.as_str().into(),
        service: "n1@file".into(),
        deadline_ms: now + 60_000,
    };
    db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

#[test]
fn the_role_table_keeps_every_method_for_admins() {
    for method in METHODS {
        authorize(&admin(), method).expect(method);
        for roles in [vec!["member"], vec!["reader"], vec!["member", "reader"]] {
            let ctx = RequestContext::new("p1", "u", roles.iter().map(|r| r.to_string()).collect());
            let err = authorize(&ctx, method).expect_err(method);
            assert_eq!(
                err.into_status().code(),
                Code::PermissionDenied,
                "{method} {roles:?}"
            );
        }
    }
}

/// Through the auth layer around the real server: a member is refused before
/// the handler runs.
#[tokio::test]
async fn the_auth_layer_refuses_members() {
    let t = temp_db().await;
    let mut service = AuthLayer::new(Authenticator::noauth())
        .layer(AdminServiceServer::new(AdminApi::new(t.db.clone(), 60_000)));
    for method in METHODS {
        let request = HttpRequest::builder()
            .method("POST")
            .uri(format!("/scoria.v1.AdminService/{method}"))
            .header("content-type", "application/grpc")
            .header("x-project-id", "p1")
            .header("x-roles", "member")
            .body(Body::empty())
            .expect("request");
        let response: http::Response<Body> = ServiceExt::<HttpRequest<Body>>::ready(&mut service)
            .await
            .unwrap_or_else(|e: Infallible| match e {})
            .call(request)
            .await
            .expect("response");
        let status = Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), Code::PermissionDenied, "{method}");
        assert!(status.message().contains(method), "{}", status.message());
    }
}

/// The handlers check the role too, whatever wraps them.
#[tokio::test]
async fn handlers_refuse_non_admins() {
    let t = temp_db().await;
    let api = AdminApi::new(t.db.clone(), 60_000);
    let err = api
        .list_services(request(member(), pb::ListServicesRequest::default()))
        .await
        .expect_err("list");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = api
        .set_service_enabled(request(
            member(),
            pb::SetServiceEnabledRequest {
                binary: "scoria-volume".into(),
                host: "n1@file".into(),
                enabled: false,
                reason: "mine".into(),
            },
        ))
        .await
        .expect_err("set");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = api
        .reset_volume_status(request(
            member(),
            pb::ResetVolumeStatusRequest {
                volume_id: "v".into(),
                status: pb::VolumeStatus::Available as i32,
            },
        ))
        .await
        .expect_err("reset");
    assert_eq!(err.code(), Code::PermissionDenied);
}

async fn list(api: &AdminApi, binary: &str) -> Vec<pb::Service> {
    api.list_services(request(
        admin(),
        pb::ListServicesRequest {
            binary: binary.into(),
        },
    ))
    .await
    .expect("list")
    .into_inner()
    .services
}

#[tokio::test]
async fn list_services_filters_and_computes_up_and_down() {
    let t = temp_db().await;
    t.db.heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");
    t.db.heartbeat("scoria-volume", "n2@file", "az2")
        .await
        .expect("beat");
    t.db.heartbeat("scoria-scheduler", "n1", "nova")
        .await
        .expect("beat");

    let fresh = AdminApi::new(t.db.clone(), 60_000);
    let all = list(&fresh, "").await;
    let got: Vec<(&str, &str, &str, bool, i32)> = all
        .iter()
        .map(|s| {
            (
                s.binary.as_str(),
                s.host.as_str(),
                s.availability_zone.as_str(),
                s.enabled,
                s.state,
            )
        })
        .collect();
    let up = pb::ServiceState::Up as i32;
    assert_eq!(
        got,
        [
            ("scoria-scheduler", "n1", "nova", true, up),
            ("scoria-volume", "n1@file", "az1", true, up),
            ("scoria-volume", "n2@file", "az2", true, up),
        ]
    );
    assert!(all.iter().all(|s| s.last_heartbeat.is_some()));

    let volumes = list(&fresh, "scoria-volume").await;
    assert_eq!(volumes.len(), 2);
    assert!(list(&fresh, "scoria-backup").await.is_empty());

    // With a 1 ms down time, heartbeats 20 ms old are down.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let strict = AdminApi::new(t.db.clone(), 1);
    let states: Vec<i32> = list(&strict, "").await.iter().map(|s| s.state).collect();
    assert_eq!(states, [pb::ServiceState::Down as i32; 3]);
}

fn set(binary: &str, host: &str, enabled: bool, reason: &str) -> pb::SetServiceEnabledRequest {
    pb::SetServiceEnabledRequest {
        binary: binary.into(),
        host: host.into(),
        enabled,
        reason: reason.into(),
    }
}

#[tokio::test]
async fn set_service_enabled_needs_a_reason_to_disable_and_clears_it_to_enable() {
    let t = temp_db().await;
    t.db.heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");
    let api = AdminApi::new(t.db.clone(), 60_000);

    for reason in ["", "   ", &"x".repeat(256)] {
        let err = api
            .set_service_enabled(request(
                admin(),
                set("scoria-volume", "n1@file", false, reason),
            ))
            .await
            .expect_err("bad reason");
        assert_eq!(err.code(), Code::InvalidArgument, "{reason:?}");
        assert_eq!(field_of(&err), "reason");
    }
    let err = api
        .set_service_enabled(request(admin(), set("", "n1@file", true, "")))
        .await
        .expect_err("no binary");
    assert_eq!(field_of(&err), "binary");
    let err = api
        .set_service_enabled(request(admin(), set("scoria-volume", "", true, "")))
        .await
        .expect_err("no host");
    assert_eq!(field_of(&err), "host");

    let longest = "é".repeat(255);
    let disabled = api
        .set_service_enabled(request(
            admin(),
            set("scoria-volume", "n1@file", false, &longest),
        ))
        .await
        .expect("disable")
        .into_inner();
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, longest);
    assert_eq!(disabled.state, pb::ServiceState::Up as i32);
    let stored = t.db.list_services().await.expect("list");
    assert!(stored[0].disabled, "the scheduler reads this flag");

    let listed = list(&api, "scoria-volume").await;
    assert!(!listed[0].enabled);

    let enabled = api
        .set_service_enabled(request(
            admin(),
            set("scoria-volume", "n1@file", true, "ignored"),
        ))
        .await
        .expect("enable")
        .into_inner();
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, "");

    for (binary, host) in [("scoria-volume", "n9@file"), ("scoria-backup", "n1@file")] {
        let err = api
            .set_service_enabled(request(admin(), set(binary, host, false, "maintenance")))
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains(binary), "{}", err.message());
        assert!(err.message().contains(host), "{}", err.message());
    }
}

fn reset(volume_id: &str, status: pb::VolumeStatus) -> pb::ResetVolumeStatusRequest {
    pb::ResetVolumeStatusRequest {
        volume_id: volume_id.into(),
        status: status as i32,
    }
}

#[tokio::test]
async fn reset_volume_status_overrides_any_projects_volume() {
    let t = temp_db().await;
    let api = AdminApi::new(t.db.clone(), 60_000);
    // Project p2's volume, stuck deleting; the admin is in another project.
    let stuck = volume(&t.db, VolumeStatus::Deleting).await;

    let err = api
        .reset_volume_status(request(
            admin(),
            reset(&stuck.id, pb::VolumeStatus::Unspecified),
        ))
        .await
        .expect_err("unspecified");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_of(&err), "status");
    let err = api
        .reset_volume_status(request(
            admin(),
            pb::ResetVolumeStatusRequest {
                volume_id: stuck.id.clone(),
                status: 999,
            },
        ))
        .await
        .expect_err("unknown status");
    assert_eq!(field_of(&err), "status");
    let err = api
        .reset_volume_status(request(admin(), reset("", pb::VolumeStatus::Available)))
        .await
        .expect_err("no id");
    assert_eq!(field_of(&err), "volume_id");
    let unchanged =
        t.db.get_volume(&stuck.id)
            .await
            .expect("get")
            .expect("there");
    assert_eq!(unchanged.status, VolumeStatus::Deleting);

    let err = api
        .reset_volume_status(request(
            admin(),
            reset(
                "0b5c8f3e-0000-4000-8000-000000000000",
                pb::VolumeStatus::Available,
            ),
        ))
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message()
            .contains("0b5c8f3e-0000-4000-8000-000000000000")
    );

    let errored = api
        .reset_volume_status(request(admin(), reset(&stuck.id, pb::VolumeStatus::Error)))
        .await
        .expect("to error")
        .into_inner();
    assert_eq!(errored.status, pb::VolumeStatus::Error as i32);
    assert_eq!(errored.project_id, "p2");
    assert_eq!(
        errored.error_message, "backend failed",
        "an error status keeps it"
    );
    assert!(
        t.db.get_worker(WorkerKind::Volume, &stuck.id)
            .await
            .expect("worker")
            .is_none(),
        "the operation in flight is forgotten"
    );

    let available = api
        .reset_volume_status(request(
            admin(),
            reset(&stuck.id, pb::VolumeStatus::Available),
        ))
        .await
        .expect("to available")
        .into_inner();
    assert_eq!(available.status, pb::VolumeStatus::Available as i32);
    assert_eq!(available.error_message, "");

    let in_use = api
        .reset_volume_status(request(admin(), reset(&stuck.id, pb::VolumeStatus::InUse)))
        .await
        .expect("to in-use")
        .into_inner();
    assert_eq!(in_use.status, pb::VolumeStatus::InUse as i32);
    let stored =
        t.db.get_volume(&stuck.id)
            .await
            .expect("get")
            .expect("there");
    assert_eq!(stored.status, VolumeStatus::InUse);
}
