//! The whole API in-process: every service behind the auth layer on a free port,
//! over the fakes of `scoria_common::testing`, reached by the generated clients.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use scoria_common::{
    RequestContext,
    events::Event,
    ops::{OpsResult, SchedulerOps},
    status::{DOMAIN, Reason, reason_of},
};
use scoria_proto::bus::{Capabilities, GetPools, PoolList, ScheduleCreateVolume};
use scoria_proto::v1::volume_service_server::VolumeService;
use scoria_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient,
    attachment_service_client::AttachmentServiceClient,
    availability_zone_service_client::AvailabilityZoneServiceClient,
    snapshot_service_client::SnapshotServiceClient, volume_service_client::VolumeServiceClient,
    volume_type_service_client::VolumeTypeServiceClient,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};
use tonic_types::StatusExt;

use crate::{
    Config,
    auth::Authenticator,
    ports::Ports,
    test_support::{self, Harness},
    volume::VolumeApi,
};

/// The API serving on a free port until dropped.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) h: Harness,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Running {
    /// Serves over `h`'s fakes (noauth mode).
    pub(crate) async fn start(h: Harness) -> Self {
        let ports = h.ports();
        Self::start_with(h, ports).await
    }

    /// Serves over `h`'s database and `ports` (noauth mode).
    pub(crate) async fn start_with(h: Harness, ports: Ports) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::load_from(None, &HashMap::new()).expect("default config");
        let shutdown = CancellationToken::new();
        let db = h.db.db().clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = crate::serve_with(
                &config,
                crate::Listener {
                    tcp: listener,
                    tls: None,
                },
                stop,
                db,
                ports,
                crate::auth::AuthLayer::new(Authenticator::noauth()),
                None,
            )
            .await;
            served.expect("serve");
        });
        Self {
            addr,
            h,
            shutdown,
            task: Some(task),
        }
    }

    /// A channel to it.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

/// `message` from project `p1` with `roles`.
fn req<T>(message: T, roles: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let headers = request.metadata_mut();
    headers.insert("x-project-id", "p1".parse().expect("value"));
    headers.insert("x-roles", roles.parse().expect("value"));
    request
}

fn assert_reason(what: &str, status: &Status, code: Code, reason: Reason) {
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, DOMAIN, "{what}");
    assert_eq!(reason_of(status), Some(reason), "{what}: {status:?}");
}

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

#[tokio::test]
async fn an_error_of_every_service_and_kind_carries_error_info() {
    let api = Running::start(Harness::new().await).await;
    let channel = api.channel().await;
    let mut volumes = VolumeServiceClient::new(channel.clone());
    let mut snapshots = SnapshotServiceClient::new(channel.clone());
    let mut attachments = AttachmentServiceClient::new(channel.clone());
    let mut types = VolumeTypeServiceClient::new(channel.clone());
    let mut zones = AvailabilityZoneServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    let m = "member";

    // Handlers: a bad field, an unknown id, a wrong status, a broker that is down.
    let status = volumes
        .get_volume(req(pb::GetVolumeRequest { id: "x".into() }, m))
        .await
        .expect_err("bad id");
    assert_reason(
        "GetVolume",
        &status,
        Code::InvalidArgument,
        Reason::InvalidField,
    );
    assert!(status.get_details_bad_request().is_some());
    let status = volumes
        .list_volumes(req(
            pb::ListVolumesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            m,
        ))
        .await
        .expect_err("bad token");
    assert_reason(
        "ListVolumes",
        &status,
        Code::InvalidArgument,
        Reason::InvalidPageToken,
    );
    let delete = pb::DeleteVolumeRequest {
        id: UNKNOWN_ID.into(),
    };
    let status = volumes
        .delete_volume(req(delete, m))
        .await
        .expect_err("gone");
    assert_reason("DeleteVolume", &status, Code::NotFound, Reason::NotFound);
    let get = pb::GetSnapshotRequest {
        id: UNKNOWN_ID.into(),
    };
    let status = snapshots.get_snapshot(req(get, m)).await.expect_err("gone");
    assert_reason("GetSnapshot", &status, Code::NotFound, Reason::NotFound);
    let get = pb::GetAttachmentRequest {
        id: UNKNOWN_ID.into(),
    };
    let status = attachments
        .get_attachment(req(get, m))
        .await
        .expect_err("gone");
    assert_reason("GetAttachment", &status, Code::NotFound, Reason::NotFound);
    let delete = pb::DeleteVolumeTypeRequest {
        id_or_name: "no-such-type".into(),
    };
    let status = types
        .delete_volume_type(req(delete, "admin"))
        .await
        .expect_err("gone");
    assert_reason(
        "DeleteVolumeType",
        &status,
        Code::NotFound,
        Reason::NotFound,
    );
    api.h.link.set_down(true);
    let create = pb::CreateVolumeRequest {
        name: "v".into(),
        size_gib: 1,
        ..Default::default()
    };
    let status = volumes
        .create_volume(req(create, m))
        .await
        .expect_err("broker down");
    assert_reason(
        "CreateVolume",
        &status,
        Code::Unavailable,
        Reason::BrokerUnavailable,
    );
    api.h.link.set_down(false);

    // The auth layer: no project, a role that may not.
    let status = zones
        .list_availability_zones(tonic::Request::new(Default::default()))
        .await
        .expect_err("no project");
    assert_reason(
        "auth",
        &status,
        Code::Unauthenticated,
        Reason::Unauthenticated,
    );
    let status = admin
        .list_services(req(pb::ListServicesRequest::default(), m))
        .await
        .expect_err("member");
    assert_reason(
        "ListServices",
        &status,
        Code::PermissionDenied,
        Reason::PermissionDenied,
    );

    // tonic itself: a body that does not decode as the request.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/scoria.v1.VolumeService/GetVolume");
    let wrong = prost_types::Duration {
        seconds: 5,
        nanos: 0,
    };
    let status = grpc
        .unary::<_, pb::Volume, _>(req(wrong, m), path, tonic_prost::ProstCodec::default())
        .await
        .expect_err("undecodable");
    // Made a field error by the limits layer: the client sent it, not a bug here.
    assert_reason(
        "undecodable",
        &status,
        Code::InvalidArgument,
        Reason::InvalidField,
    );
    let bad = status.get_details_bad_request().expect("a field violation");
    assert_eq!(bad.field_violations[0].field, "id", "{status:?}");
}

// === defect 1: health and the broker ===

/// The names health answers for (overall and each service).
const HEALTH_NAMES: [&str; 7] = [
    "",
    "scoria.v1.VolumeService",
    "scoria.v1.SnapshotService",
    "scoria.v1.VolumeTypeService",
    "scoria.v1.AvailabilityZoneService",
    "scoria.v1.AdminService",
    "scoria.v1.AttachmentService",
];

/// Waits (up to 5 s) until every name in [`HEALTH_NAMES`] reports `want`.
pub(crate) async fn wait_health(channel: &Channel, want: ServingStatus) {
    let mut client = HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = true;
        for name in HEALTH_NAMES {
            let request = HealthCheckRequest {
                service: name.to_owned(),
            };
            let got = client.check(request).await.expect("check").into_inner();
            all &= got.status == want as i32;
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health did not become {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The health of every name now.
async fn health_now(channel: &Channel) -> Vec<i32> {
    let mut client = HealthClient::new(channel.clone());
    let mut out = Vec::new();
    for name in HEALTH_NAMES {
        let request = HealthCheckRequest {
            service: name.to_owned(),
        };
        out.push(
            client
                .check(request)
                .await
                .expect("check")
                .into_inner()
                .status,
        );
    }
    out
}

/// Defect 1: health said SERVING before the broker connection was up; now it
/// says NOT_SERVING until the broker takes messages, and again while it is
/// down or blocks publishers (a resource alarm).
#[tokio::test]
async fn health_follows_the_broker() {
    let h = Harness::new().await;
    h.link.set_down(true);
    let api = Running::start(h).await;
    let channel = api.channel().await;
    // Longer than the watcher's tick: it still says NOT_SERVING.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        health_now(&channel).await,
        [ServingStatus::NotServing as i32; 7]
    );
    api.h.link.set_down(false);
    wait_health(&channel, ServingStatus::Serving).await;
    api.h.link.set_blocked(true);
    wait_health(&channel, ServingStatus::NotServing).await;
    api.h.link.set_blocked(false);
    wait_health(&channel, ServingStatus::Serving).await;
    api.h.link.set_down(true);
    wait_health(&channel, ServingStatus::NotServing).await;
}

pub(crate) fn create_req() -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: "v".into(),
        size_gib: 1,
        ..Default::default()
    }
}

/// Defect 1: a create that arrives while the broker (re)connects waits for it
/// (up to the publish timeout) instead of failing at once.
#[tokio::test]
async fn a_create_waits_for_the_broker_to_reconnect() {
    let h = Harness::new().await;
    h.link.set_down(true);
    let api = VolumeApi::new(h.db.db().clone(), h.ports(), 100);
    let ctx = test_support::ctx("p1", &["member"]);
    let pending = tokio::spawn({
        let (api, ctx) = (api.clone(), ctx.clone());
        async move {
            api.create_volume(test_support::request(&ctx, create_req()))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.link.set_down(false);
    pending
        .await
        .expect("task")
        .expect("created once the broker was back");
    assert_eq!(h.scheduler.scheduled().len(), 1);
}

/// A scheduler whose casts never complete: the publish a blocked broker
/// (`connection.blocked`) never confirms.
struct Blocked;

#[tonic::async_trait]
impl SchedulerOps for Blocked {
    async fn create_volume(&self, _: &RequestContext, _: ScheduleCreateVolume) -> OpsResult<()> {
        std::future::pending().await
    }

    async fn update_service_capabilities(
        &self,
        _: &RequestContext,
        _: Capabilities,
    ) -> OpsResult<()> {
        std::future::pending().await
    }

    async fn get_pools(&self, _: &RequestContext, _: GetPools) -> OpsResult<PoolList> {
        std::future::pending().await
    }
}

/// Defect 1: while the broker blocks publishers a create hung past 35 s; now it
/// answers UNAVAILABLE within the publish timeout, whether the block is known
/// before (nothing written) or the publish just never completes (the row and
/// its worker entry are removed again and `volume.create.error` announced).
#[tokio::test]
async fn a_blocked_broker_answers_unavailable_within_the_publish_timeout() {
    let h = Harness::new().await;
    let ports = Ports {
        scheduler: Arc::new(Blocked),
        ..h.ports()
    };
    let timeout = ports.publish_timeout;
    let api = VolumeApi::new(h.db.db().clone(), ports, 100);
    let ctx = test_support::ctx("p1", &["member"]);

    h.link.set_blocked(true);
    let started = Instant::now();
    let status = api
        .create_volume(test_support::request(&ctx, create_req()))
        .await
        .expect_err("blocked");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason_of(&status), Some(Reason::BrokerUnavailable));
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert_eq!(h.db.count_volumes("p1").await.expect("count"), 0);

    // Blocked after the check: the publish never completes.
    h.link.set_blocked(false);
    let started = Instant::now();
    let status = api
        .create_volume(test_support::request(&ctx, create_req()))
        .await
        .expect_err("never confirmed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason_of(&status), Some(Reason::BrokerUnavailable));
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert_eq!(h.db.count_volumes("p1").await.expect("count"), 0);
    let workers =
        h.db.overdue_workers("scoria-scheduler", i64::MAX)
            .await
            .expect("workers");
    assert!(workers.is_empty(), "{workers:?}");
    assert_eq!(h.notifier.events(), [Event::VolumeCreateError]);
}
