//! Tests of [`super::AttachmentApi`] over a real SQLite database and a fake bus
//! whose volume host settles the rows as the real one does (or fails as told):
//! `create.rs` for CreateAttachment, `detach.rs` for DeleteAttachment, listing,
//! roles and the in-use rules of the other services.

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

mod create;
mod detach;
