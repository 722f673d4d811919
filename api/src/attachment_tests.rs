//! Tests of [`super::AttachmentApi`] over a real SQLite database and a fake bus
//! whose volume host settles the rows as the real one does (or fails as told).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use scoria_common::{
    db::WorkerKind,
    model::{ConnectionInfo, VolumeType},
};
use scoria_proto::{
    bus::{
        AttachResult, CreateSnapshot, DeleteSnapshot, DeleteVolume, DetachResult, ExtendVolume,
        GetPools, PoolList, ScheduleCreateVolume,
    },
    v1::volume_service_server::VolumeService,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::{auth::authorize, volume::VolumeApi};

const HOST: &str = "node1@file";

/// What the fake volume host does with a call.
#[derive(Clone)]
enum Answer {
    /// Settles the row (attached / removed) and answers, as the real host does.
    Settle,
    /// Replies without touching the row.
    Reply,
    /// Fails with this status, touching nothing.
    Fail(Status),
}

struct FakeBus {
    db: Db,
    down: AtomicBool,
    attach: Mutex<Answer>,
    detach: Mutex<Answer>,
    /// `(method, host, attachment id)` of each call.
    calls: Mutex<Vec<(&'static str, String, String)>>,
}

impl FakeBus {
    fn new(db: Db) -> Self {
        Self {
            db,
            down: AtomicBool::new(false),
            attach: Mutex::new(Answer::Settle),
            detach: Mutex::new(Answer::Settle),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, method: &'static str, host: &str, id: &str) {
        self.calls
            .lock()
            .expect("lock")
            .push((method, host.to_owned(), id.to_owned()));
    }

    fn calls(&self) -> Vec<(&'static str, String, String)> {
        self.calls.lock().expect("lock").clone()
    }
}

fn info(id: &str, read_only: bool) -> ConnectionInfo {
    ConnectionInfo {
        protocol: "nbd".into(),
        host: "127.0.0.1".into(),
        port: 10809,
        export_name: format!("volume-{id}"),
        read_only,
    }
}

#[tonic::async_trait]
impl Bus for FakeBus {
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    async fn schedule_create(
        &self,
        _ctx: &RequestContext,
        _request: ScheduleCreateVolume,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn delete_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: DeleteVolume,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn extend_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: ExtendVolume,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn create_snapshot_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: CreateSnapshot,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn delete_snapshot_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: DeleteSnapshot,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn attach_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> Result<AttachResult, Status> {
        let id = request.attachment_id;
        self.record("attach_volume", host, &id);
        let answer = self.attach.lock().expect("lock").clone();
        let row = self.db.get_attachment(&id).await.expect("db").expect("row");
        let info = info(&row.volume_id, row.mode.is_read_only());
        match answer {
            Answer::Fail(status) => return Err(status),
            Answer::Settle => {
                self.db
                    .finish_attach(&id, &info)
                    .await
                    .expect("db")
                    .expect("attaching");
            }
            Answer::Reply => {}
        }
        Ok(AttachResult {
            connection_info: Some(pb::ConnectionInfo::from(&info)),
        })
    }

    async fn detach_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> Result<DetachResult, Status> {
        let id = request.attachment_id;
        self.record("detach_volume", host, &id);
        let answer = self.detach.lock().expect("lock").clone();
        match answer {
            Answer::Fail(status) => Err(status),
            Answer::Settle => {
                assert!(self.db.finish_detach(&id).await.expect("db"), "detaching");
                Ok(DetachResult { unexported: true })
            }
            Answer::Reply => Ok(DetachResult { unexported: true }),
        }
    }

    async fn get_pools(
        &self,
        _ctx: &RequestContext,
        _request: GetPools,
    ) -> Result<PoolList, Status> {
        Err(Status::unimplemented("no pools here"))
    }
}

struct Fixture {
    api: AttachmentApi,
    volumes: VolumeApi,
    db: Db,
    bus: Arc<FakeBus>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("scoria-attach-test-{}", uuid::Uuid::new_v4()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
        .await
        .expect("db");
    let bus = Arc::new(FakeBus::new(db.clone()));
    Fixture {
        api: AttachmentApi::new(db.clone(), bus.clone(), Duration::from_secs(60)),
        volumes: VolumeApi::new(db.clone(), bus.clone(), 100),
        db,
        bus,
        dir,
    }
}

fn ctx(project: &str, roles: &[&str]) -> RequestContext {
    RequestContext::new(
        project,
        "u1",
        roles.iter().map(|r| (*r).to_owned()).collect(),
    )
}

fn member(project: &str) -> RequestContext {
    ctx(project, &["member"])
}

fn request<T>(ctx: &RequestContext, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ctx.clone());
    request
}

/// The field a status's `BadRequest` details name.
fn field(status: &Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// A volume of project `ctx` on [`HOST`] (of `volume_type`, empty: the default),
/// settled in `status` as a backend would leave it.
async fn volume(
    f: &Fixture,
    ctx: &RequestContext,
    volume_type: &str,
    status: VolumeStatus,
) -> String {
    let created = f
        .volumes
        .create_volume(request(
            ctx,
            pb::CreateVolumeRequest {
                name: "v".into(),
                size_gib: 1,
                volume_type: volume_type.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create volume")
        .into_inner();
    assert!(
        f.db.transition_volume_with_worker(
            &created.id,
            &[VolumeStatus::Creating],
            status,
            Some(HOST),
            None,
            None,
        )
        .await
        .expect("db")
    );
    created.id
}

/// A volume type whose extra specs hold `multiattach` = `value`.
async fn multiattach_type(f: &Fixture, name: &str, value: &str) {
    let now = now_ms();
    let created =
        f.db.create_volume_type(&VolumeType {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            description: String::new(),
            extra_specs: BTreeMap::from([(MULTIATTACH_SPEC.to_owned(), value.to_owned())]),
            is_default: false,
            created_at_ms: now,
            updated_at_ms: now,
        })
        .await
        .expect("db");
    assert!(created);
}

fn attach_req(volume_id: &str) -> pb::CreateAttachmentRequest {
    pb::CreateAttachmentRequest {
        volume_id: volume_id.into(),
        connector: Some(pb::Connector {
            host: "compute-1".into(),
            ip: "10.0.0.5".into(),
            initiator: String::new(),
            properties: BTreeMap::from([("os".to_owned(), "linux".to_owned())]),
        }),
        instance_id: "vm-1".into(),
        mode: pb::AttachMode::Unspecified as i32,
    }
}

async fn attach(
    f: &Fixture,
    ctx: &RequestContext,
    req: pb::CreateAttachmentRequest,
) -> Result<pb::Attachment, Status> {
    f.api
        .create_attachment(request(ctx, req))
        .await
        .map(Response::into_inner)
}

async fn detach(f: &Fixture, ctx: &RequestContext, id: &str) -> Result<(), Status> {
    f.api
        .delete_attachment(request(ctx, pb::DeleteAttachmentRequest { id: id.into() }))
        .await
        .map(|_| ())
}

async fn volume_status(f: &Fixture, id: &str) -> VolumeStatus {
    f.db.get_volume(id)
        .await
        .expect("db")
        .expect("volume")
        .status
}

async fn all_attachments(f: &Fixture) -> Vec<Attachment> {
    f.db.list_attachments(&AttachmentQuery::default())
        .await
        .expect("db")
}

#[tokio::test]
async fn attach_returns_the_export_and_detach_frees_the_volume() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;

    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert_eq!(attached.status, pb::AttachmentStatus::Attached as i32);
    assert_eq!(attached.volume_id, volume_id);
    assert_eq!(attached.project_id, "p1");
    assert_eq!(attached.volume_host, HOST);
    assert_eq!(attached.instance_id, "vm-1");
    assert_eq!(attached.mode, pb::AttachMode::Rw as i32);
    assert_eq!(
        attached.connector.as_ref().expect("connector").host,
        "compute-1"
    );
    let conn = attached.connection_info.expect("connection info");
    assert_eq!(conn.protocol, "nbd");
    assert_eq!(
        conn.uri,
        format!("nbd://127.0.0.1:10809/volume-{volume_id}")
    );
    assert!(!conn.read_only);
    assert!(attached.attached_at.is_some());
    uuid::Uuid::try_parse(&attached.id).expect("a UUID id");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    assert_eq!(
        f.bus.calls(),
        vec![("attach_volume", HOST.to_owned(), attached.id.clone())]
    );
    // The host settled it: no worker entry is left in flight.
    assert!(
        f.db.get_worker(WorkerKind::Attachment, &attached.id)
            .await
            .expect("db")
            .is_none()
    );

    let got = f
        .api
        .get_attachment(request(
            &p1,
            pb::GetAttachmentRequest {
                id: attached.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.status, pb::AttachmentStatus::Attached as i32);

    detach(&f, &p1, &attached.id).await.expect("detach");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
    assert!(all_attachments(&f).await.is_empty());
    assert_eq!(
        f.bus.calls()[1],
        ("detach_volume", HOST.to_owned(), attached.id.clone())
    );
    let status = f
        .api
        .get_attachment(request(&p1, pb::GetAttachmentRequest { id: attached.id }))
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn read_only_mode_reaches_the_row() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let req = pb::CreateAttachmentRequest {
        mode: pb::AttachMode::Ro as i32,
        ..attach_req(&volume_id)
    };
    let attached = attach(&f, &p1, req).await.expect("attach");
    assert_eq!(attached.mode, pb::AttachMode::Ro as i32);
    assert!(attached.connection_info.expect("info").read_only);
}

#[tokio::test]
async fn bad_fields_are_named_and_nothing_is_written() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let long = "x".repeat(256);
    type Set = Box<dyn Fn(&mut pb::CreateAttachmentRequest)>;
    fn connector(r: &mut pb::CreateAttachmentRequest) -> &mut pb::Connector {
        r.connector.as_mut().expect("connector")
    }
    let long2 = long.clone();
    let long3 = long.clone();
    let long4 = long.clone();
    let long5 = long.clone();
    let cases: Vec<(&str, Set)> = vec![
        ("volume_id", Box::new(|r| r.volume_id = "not-a-uuid".into())),
        ("volume_id", Box::new(|r| r.volume_id = String::new())),
        ("connector", Box::new(|r| r.connector = None)),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = String::new()),
        ),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = "  ".into()),
        ),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = long.clone()),
        ),
        (
            "connector.ip",
            Box::new(move |r| connector(r).ip = long2.clone()),
        ),
        (
            "connector.initiator",
            Box::new(move |r| connector(r).initiator = long3.clone()),
        ),
        (
            "connector.properties",
            Box::new(|r| {
                connector(r).properties = (0..=validate::MAX_CONNECTOR_PROPERTIES)
                    .map(|i| (format!("k{i}"), "v".to_owned()))
                    .collect();
            }),
        ),
        (
            "connector.properties",
            Box::new(move |r| {
                connector(r).properties = BTreeMap::from([("k".to_owned(), long4.clone())]);
            }),
        ),
        (
            "connector.properties",
            Box::new(|r| {
                connector(r).properties = BTreeMap::from([(String::new(), "v".to_owned())]);
            }),
        ),
        (
            "instance_id",
            Box::new(move |r| r.instance_id = long5.clone()),
        ),
        ("mode", Box::new(|r| r.mode = 7)),
    ];
    for (name, set) in cases {
        let mut req = attach_req(&volume_id);
        set(&mut req);
        let status = attach(&f, &p1, req).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(field(&status), name, "{status:?}");
        assert!(status.message().contains(name), "{}", status.message());
    }
    assert!(all_attachments(&f).await.is_empty());
    assert!(f.bus.calls().is_empty());
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
}

#[tokio::test]
async fn unknown_and_foreign_volumes_are_not_found() {
    let f = fixture().await;
    let p1 = member("p1");
    let p2 = member("p2");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (ctx, id) in [(&p1, &unknown), (&p2, &volume_id)] {
        let status = attach(&f, ctx, attach_req(id))
            .await
            .expect_err("not found");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(
            status.message().contains(id.as_str()),
            "{}",
            status.message()
        );
    }
    assert!(all_attachments(&f).await.is_empty());

    // Another project's attachment is as good as missing, for reads and deletes.
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    let status = f
        .api
        .get_attachment(request(
            &p2,
            pb::GetAttachmentRequest {
                id: attached.id.clone(),
            },
        ))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let status = detach(&f, &p2, &attached.id).await.expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let listed = f
        .api
        .list_attachments(request(&p2, pb::ListAttachmentsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.attachments.is_empty());
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    // An admin of another project sees it.
    let admin = ctx("p2", &["admin"]);
    f.api
        .get_attachment(request(
            &admin,
            pb::GetAttachmentRequest { id: attached.id },
        ))
        .await
        .expect("admin reads any");
}

#[tokio::test]
async fn volumes_in_the_wrong_status_are_refused_naming_it() {
    let f = fixture().await;
    let p1 = member("p1");
    for status in [
        VolumeStatus::Error,
        VolumeStatus::Extending,
        VolumeStatus::Deleting,
        VolumeStatus::ErrorDeleting,
    ] {
        let volume_id = volume(&f, &p1, "", status).await;
        let err = attach(&f, &p1, attach_req(&volume_id))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{status}: {err:?}");
        assert!(err.message().contains(status.as_str()), "{}", err.message());
    }
    // Still creating: no backend yet.
    let creating = f
        .volumes
        .create_volume(request(
            &p1,
            pb::CreateVolumeRequest {
                size_gib: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("create")
        .into_inner();
    let err = attach(&f, &p1, attach_req(&creating.id))
        .await
        .expect_err("creating");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("creating"), "{}", err.message());
    assert!(all_attachments(&f).await.is_empty());
    assert!(f.bus.calls().is_empty());
}

#[tokio::test]
async fn broker_down_is_unavailable_before_anything_is_written() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    let other = volume(&f, &p1, "", VolumeStatus::Available).await;
    f.bus.down.store(true, Ordering::SeqCst);

    let status = attach(&f, &p1, attach_req(&other)).await.expect_err("down");
    assert_eq!(status.code(), Code::Unavailable);
    let status = detach(&f, &p1, &attached.id).await.expect_err("down");
    assert_eq!(status.code(), Code::Unavailable);

    assert_eq!(volume_status(&f, &other).await, VolumeStatus::Available);
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    let rows = all_attachments(&f).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, AttachmentStatus::Attached);
    assert_eq!(f.bus.calls().len(), 1, "only the first attach was sent");
}

#[tokio::test]
async fn a_second_attachment_needs_a_multiattach_type() {
    let f = fixture().await;
    let p1 = member("p1");
    let single = volume(&f, &p1, "", VolumeStatus::Available).await;
    let first = attach(&f, &p1, attach_req(&single)).await.expect("first");
    let err = attach(&f, &p1, attach_req(&single))
        .await
        .expect_err("second");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not multiattach"),
        "{}",
        err.message()
    );
    assert!(err.message().contains(&first.id), "{}", err.message());
    // A type saying False, or another spelling, does not make it multiattach.
    multiattach_type(&f, "shy", "<is> False").await;
    let shy = volume(&f, &p1, "shy", VolumeStatus::Available).await;
    attach(&f, &p1, attach_req(&shy)).await.expect("first");
    let err = attach(&f, &p1, attach_req(&shy)).await.expect_err("second");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(all_attachments(&f).await.len(), 2);

    multiattach_type(&f, "shared", " <IS>  true ").await;
    let shared = volume(&f, &p1, "shared", VolumeStatus::Available).await;
    let a = attach(&f, &p1, attach_req(&shared)).await.expect("first");
    let b = attach(&f, &p1, attach_req(&shared)).await.expect("second");
    assert_ne!(a.id, b.id);
    assert_eq!(volume_status(&f, &shared).await, VolumeStatus::InUse);
    detach(&f, &p1, &a.id).await.expect("detach a");
    assert_eq!(
        volume_status(&f, &shared).await,
        VolumeStatus::InUse,
        "b holds it"
    );
    detach(&f, &p1, &b.id).await.expect("detach b");
    assert_eq!(volume_status(&f, &shared).await, VolumeStatus::Available);
}

#[test]
fn multiattach_spec_values() {
    for yes in ["<is> True", "<is> true", "<IS>TRUE", "  <is>   True  "] {
        assert!(is_true(yes), "{yes}");
    }
    for no in [
        "<is> False",
        "True",
        "true",
        "",
        "<is>",
        "<is> yes",
        "<in> True",
    ] {
        assert!(!is_true(no), "{no}");
    }
}

#[tokio::test]
async fn a_failed_attach_call_marks_the_attachment_and_keeps_its_code() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let cases = [
        (
            Status::unavailable("no server is consuming volume.node1@file: start one"),
            Code::Unavailable,
        ),
        (
            Status::deadline_exceeded("call attach_volume got no reply within 60s"),
            Code::DeadlineExceeded,
        ),
        (
            Status::resource_exhausted("no free port in 10809-10810"),
            Code::ResourceExhausted,
        ),
        (Status::internal("qemu-nbd: cannot open"), Code::Internal),
    ];
    for (failure, code) in cases {
        let message = failure.message().to_owned();
        *f.bus.attach.lock().expect("lock") = Answer::Fail(failure);
        let status = attach(&f, &p1, attach_req(&volume_id))
            .await
            .expect_err("fails");
        assert_eq!(status.code(), code, "{status:?}");
        if code != Code::Internal {
            assert!(status.message().contains(&message), "{}", status.message());
        }
        // The volume is free again; the attachment says why it failed.
        assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
        let rows = all_attachments(&f).await;
        let row = rows.last().expect("a row");
        assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
        assert!(
            row.error_message.contains(&message),
            "{}",
            row.error_message
        );
        assert!(
            f.db.get_worker(WorkerKind::Attachment, &row.id)
                .await
                .expect("db")
                .is_none()
        );
    }
    // A failed attachment is deleted like any other; then the volume attaches.
    *f.bus.attach.lock().expect("lock") = Answer::Settle;
    for row in all_attachments(&f).await {
        detach(&f, &p1, &row.id)
            .await
            .expect("delete failed attachment");
    }
    assert!(all_attachments(&f).await.is_empty());
    attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach after failures");
}

#[tokio::test]
async fn an_answer_without_a_settled_row_is_settled_from_the_answer() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    *f.bus.attach.lock().expect("lock") = Answer::Reply;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert_eq!(attached.status, pb::AttachmentStatus::Attached as i32);
    assert_eq!(
        attached.connection_info.expect("info").export_name,
        format!("volume-{volume_id}")
    );
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
}

#[tokio::test]
async fn a_failed_detach_call_leaves_error_detaching_and_can_be_retried() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    *f.bus.detach.lock().expect("lock") =
        Answer::Fail(Status::deadline_exceeded("no reply within 60s"));
    let status = detach(&f, &p1, &attached.id).await.expect_err("fails");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let row =
        f.db.get_attachment(&attached.id)
            .await
            .expect("db")
            .expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorDetaching);
    assert!(
        row.error_message.contains("no reply"),
        "{}",
        row.error_message
    );
    // The export may still run: the volume stays in use.
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);

    *f.bus.detach.lock().expect("lock") = Answer::Settle;
    detach(&f, &p1, &attached.id).await.expect("retry");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
    assert!(all_attachments(&f).await.is_empty());
}

#[tokio::test]
async fn deletes_are_refused_by_status_and_id() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert!(
        f.db.set_attachment_status(
            &attached.id,
            &[AttachmentStatus::Attached],
            AttachmentStatus::Detaching,
            None,
        )
        .await
        .expect("db")
    );
    let status = detach(&f, &p1, &attached.id).await.expect_err("detaching");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("detaching"),
        "{}",
        status.message()
    );

    let status = detach(&f, &p1, "nope").await.expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field(&status), "id");
    let status = detach(&f, &p1, &uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = f
        .api
        .get_attachment(request(&p1, pb::GetAttachmentRequest { id: "x".into() }))
        .await
        .expect_err("bad id");
    assert_eq!(field(&status), "id");
    assert_eq!(
        f.bus.calls().len(),
        1,
        "no detach was sent for refused deletes"
    );
}

#[tokio::test]
async fn list_pages_and_filters_by_volume() {
    let f = fixture().await;
    let p1 = member("p1");
    multiattach_type(&f, "shared", "<is> True").await;
    let shared = volume(&f, &p1, "shared", VolumeStatus::Available).await;
    let other = volume(&f, &p1, "", VolumeStatus::Available).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            attach(&f, &p1, attach_req(&shared))
                .await
                .expect("attach")
                .id,
        );
        // Distinct milliseconds, so the creation order is the list order.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let lone = attach(&f, &p1, attach_req(&other))
        .await
        .expect("attach")
        .id;

    let list = |req: pb::ListAttachmentsRequest| {
        let api = f.api.clone();
        let p1 = p1.clone();
        async move {
            api.list_attachments(request(&p1, req))
                .await
                .map(Response::into_inner)
        }
    };
    let page = list(pb::ListAttachmentsRequest {
        volume_id: shared.clone(),
        page_size: 2,
        page_token: String::new(),
    })
    .await
    .expect("page 1");
    let got: Vec<_> = page.attachments.iter().map(|a| a.id.clone()).collect();
    assert_eq!(got, ids[..2]);
    assert!(!page.next_page_token.is_empty());
    let next = list(pb::ListAttachmentsRequest {
        volume_id: shared.clone(),
        page_size: 2,
        page_token: page.next_page_token.clone(),
    })
    .await
    .expect("page 2");
    let got: Vec<_> = next.attachments.iter().map(|a| a.id.clone()).collect();
    assert_eq!(got, ids[2..]);
    assert!(next.next_page_token.is_empty());

    let all = list(pb::ListAttachmentsRequest::default())
        .await
        .expect("all");
    assert_eq!(all.attachments.len(), 4);
    assert_eq!(all.attachments[3].id, lone);

    // A token is bound to its filter.
    let status = list(pb::ListAttachmentsRequest {
        volume_id: other.clone(),
        page_size: 2,
        page_token: page.next_page_token,
    })
    .await
    .expect_err("token of another filter");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field(&status), "page_token");
    let status = list(pb::ListAttachmentsRequest {
        volume_id: "x".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad volume id");
    assert_eq!(field(&status), "volume_id");
    for size in [1001, u32::MAX] {
        let status = list(pb::ListAttachmentsRequest {
            page_size: size,
            ..Default::default()
        })
        .await
        .expect_err("too large");
        assert_eq!(field(&status), "page_size");
    }
}

#[test]
fn readers_may_only_read_attachments() {
    let reader = ctx("p1", &["reader"]);
    let member = member("p1");
    for method in ["GetAttachment", "ListAttachments"] {
        authorize(&reader, method).expect(method);
        authorize(&member, method).expect(method);
    }
    for method in ["CreateAttachment", "DeleteAttachment"] {
        let err = authorize(&reader, method).expect_err(method);
        assert_eq!(err.into_status().code(), Code::PermissionDenied);
        authorize(&member, method).expect(method);
        authorize(&ctx("p1", &["admin"]), method).expect(method);
    }
}

#[tokio::test]
async fn attached_volumes_cannot_be_deleted_extended_or_snapshotted_without_force() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");

    let status = f
        .volumes
        .delete_volume(request(
            &p1,
            pb::DeleteVolumeRequest {
                id: volume_id.clone(),
            },
        ))
        .await
        .expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("in-use"), "{}", status.message());
    assert!(
        status.message().contains("attachments first"),
        "{}",
        status.message()
    );

    let status = f
        .volumes
        .extend_volume(request(
            &p1,
            pb::ExtendVolumeRequest {
                id: volume_id.clone(),
                new_size_gib: 2,
            },
        ))
        .await
        .expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("detach"), "{}", status.message());

    // An operator's status reset does not free an attached volume for deletion.
    assert!(
        f.db.transition_volume_with_worker(
            &volume_id,
            &[VolumeStatus::InUse],
            VolumeStatus::Available,
            None,
            None,
            None,
        )
        .await
        .expect("db")
    );
    let status = f
        .volumes
        .delete_volume(request(
            &p1,
            pb::DeleteVolumeRequest {
                id: volume_id.clone(),
            },
        ))
        .await
        .expect_err("still attached");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains(&attached.id),
        "{}",
        status.message()
    );
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
}
