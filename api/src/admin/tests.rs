//! Tests of [`super`]: admin-only (auth layer and handlers), services up/down and
//! enable/disable, volume status resets.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http::Request as HttpRequest;
use scoria_common::{
    db::{WorkerEntry, WorkerKind},
    model::VolumeStatus,
};
use scoria_common::{
    ops::{OpsError, OpsResult, SchedulerOps},
    testing::RecordingScheduler,
};
use scoria_proto::bus::{Capabilities, PoolList, ScheduleCreateVolume};
use scoria_proto::v1::admin_service_server::AdminServiceServer;
use tonic::{Code, body::Body};
use tower::{Layer, Service as _, ServiceExt};

use super::*;
use crate::{
    auth::{AuthLayer, Authenticator, authorize, path_of},
    ports::Ports,
    test_support::Harness,
};

const METHODS: [&str; 4] = [
    "ListServices",
    "SetServiceEnabled",
    "ResetVolumeStatus",
    "ListPools",
];

/// A scheduler that knows `pools` (or fails with `failure`) and records the
/// `get_pools` requests: `RecordingScheduler` answers the same pools whatever the
/// host filter, and ListPools is about that filter. Its other methods are the
/// recording scheduler's (AdminService casts nothing).
#[derive(Default)]
struct PoolScheduler {
    recording: RecordingScheduler,
    failure: Mutex<Option<Status>>,
    pools: Vec<pb::StoragePool>,
    asked: Mutex<Vec<GetPools>>,
}

#[tonic::async_trait]
impl SchedulerOps for PoolScheduler {
    async fn create_volume(&self, ctx: &RequestContext, r: ScheduleCreateVolume) -> OpsResult<()> {
        self.recording.create_volume(ctx, r).await
    }

    async fn update_service_capabilities(
        &self,
        ctx: &RequestContext,
        r: Capabilities,
    ) -> OpsResult<()> {
        self.recording.update_service_capabilities(ctx, r).await
    }

    async fn get_pools(&self, _: &RequestContext, request: GetPools) -> OpsResult<PoolList> {
        self.asked.lock().expect("lock").push(request.clone());
        if let Some(status) = self.failure.lock().expect("lock").clone() {
            return Err(OpsError::Failed(status));
        }
        Ok(PoolList {
            pools: self
                .pools
                .iter()
                .filter(|p| request.host.is_empty() || p.host == request.host)
                .cloned()
                .collect(),
        })
    }
}

/// The admin API over `scheduler` and the fakes of `h`.
fn api_with(h: &Harness, service_down_ms: i64, scheduler: Arc<PoolScheduler>) -> AdminApi {
    let ports = Ports {
        scheduler,
        ..h.ports()
    };
    AdminApi::new(h.db.db().clone(), service_down_ms, ports)
}

fn api(h: &Harness, service_down_ms: i64) -> AdminApi {
    api_with(h, service_down_ms, Arc::default())
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
        migration_status: Default::default(),
        migration_error: String::new(),
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
        authorize(&admin(), path_of(method)).expect(method);
        for roles in [vec!["member"], vec!["reader"], vec!["member", "reader"]] {
            let ctx = RequestContext::new("p1", "u", roles.iter().map(|r| r.to_string()).collect());
            let err = authorize(&ctx, path_of(method)).expect_err(method);
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
    let t = Harness::new().await;
    let mut service =
        AuthLayer::new(Authenticator::noauth()).layer(AdminServiceServer::new(api(&t, 60_000)));
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
    let t = Harness::new().await;
    let api = api(&t, 60_000);
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
    let t = Harness::new().await;
    t.db.heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");
    t.db.heartbeat("scoria-volume", "n2@file", "az2")
        .await
        .expect("beat");
    t.db.heartbeat("scoria-scheduler", "n1", "nova")
        .await
        .expect("beat");

    let fresh = api(&t, 60_000);
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
    let strict = api(&t, 1);
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
    let t = Harness::new().await;
    t.db.heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");
    let api = api(&t, 60_000);

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
    let t = Harness::new().await;
    let api = api(&t, 60_000);
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

fn pool(name: &str, free: f64) -> pb::StoragePool {
    pb::StoragePool {
        name: name.into(),
        host: name.split('#').next().unwrap_or_default().into(),
        backend_name: "file".into(),
        availability_zone: "az1".into(),
        driver: "file".into(),
        total_capacity_gib: 100.0,
        free_capacity_gib: free,
        allocated_capacity_gib: 100.0 - free,
        ..Default::default()
    }
}

fn list_pools_request(host: &str) -> pb::ListPoolsRequest {
    pb::ListPoolsRequest { host: host.into() }
}

#[tokio::test]
async fn list_pools_asks_a_scheduler_with_the_host_filter() {
    let t = Harness::new().await;
    let bus = Arc::new(PoolScheduler {
        pools: vec![pool("n1@file#pool", 60.0), pool("n2@qcow#pool", 10.0)],
        ..PoolScheduler::default()
    });
    let api = api_with(&t, 60_000, bus.clone());
    let all = api
        .list_pools(request(admin(), list_pools_request("")))
        .await
        .expect("list")
        .into_inner()
        .pools;
    assert_eq!(all, bus.pools);
    let one = api
        .list_pools(request(admin(), list_pools_request("n2@qcow")))
        .await
        .expect("list")
        .into_inner()
        .pools;
    assert_eq!(one, [pool("n2@qcow#pool", 10.0)]);
    let hosts: Vec<String> = bus
        .asked
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(hosts, ["", "n2@qcow"]);
}

#[tokio::test]
async fn list_pools_validates_host_and_role_before_asking() {
    let t = Harness::new().await;
    let bus = Arc::new(PoolScheduler::default());
    let api = api_with(&t, 60_000, bus.clone());
    let err = api
        .list_pools(request(member(), list_pools_request("")))
        .await
        .expect_err("member");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("ListPools"), "{}", err.message());
    let long = format!("{}@file", "h".repeat(251));
    for bad in [
        "n1",
        "@file",
        "n1@",
        "n1@file@x",
        "n1@file#pool",
        "n1 @file",
        "n1@fi\nle",
        long.as_str(),
    ] {
        let err = api
            .list_pools(request(admin(), list_pools_request(bad)))
            .await
            .expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(field_of(&err), "host", "{bad:?}");
        assert!(err.message().contains("host"), "{}", err.message());
    }
    assert!(
        bus.asked.lock().expect("lock").is_empty(),
        "nothing was asked"
    );
    let longest = format!("{}@file", "h".repeat(250));
    api.list_pools(request(admin(), list_pools_request(&longest)))
        .await
        .expect("255 characters are fine");
}

#[tokio::test]
async fn list_pools_is_unavailable_without_broker_or_scheduler() {
    let t = Harness::new().await;
    let bus = Arc::new(PoolScheduler::default());
    let api = api_with(&t, 60_000, bus.clone());
    t.link.set_down(true);
    let err = api
        .list_pools(request(admin(), list_pools_request("")))
        .await
        .expect_err("broker down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("broker"), "{}", err.message());
    assert!(bus.asked.lock().expect("lock").is_empty());

    t.link.set_down(false);
    for status in [
        Status::unavailable("queue scoria.scheduler has no consumer"),
        Status::deadline_exceeded("get_pools timed out after 5s"),
    ] {
        *bus.failure.lock().expect("lock") = Some(status.clone());
        let err = api
            .list_pools(request(admin(), list_pools_request("")))
            .await
            .expect_err("no scheduler");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("scheduler"), "{}", err.message());
        assert!(
            err.message().contains(status.message()),
            "{}",
            err.message()
        );
    }
}
