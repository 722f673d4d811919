//! Tests of [`super::AttachmentApi`] over a real SQLite database and a volume host
//! (the recording fake, wrapped) that settles the rows as the real one does (or fails as told):
//! `create.rs` for CreateAttachment, `detach.rs` for DeleteAttachment, listing,
//! roles and the in-use rules of the other services.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use scoria_common::{
    db::WorkerKind,
    events::Event,
    model::{ConnectionInfo, VolumeType},
    ops::{OpsError, OpsResult, VolumeOps},
    testing::{RecordingVolumes, VolumeCall},
};
use scoria_proto::{
    bus::{
        AttachResult, CreateSnapshot, CreateVolume, DeleteSnapshot, DeleteVolume, DetachResult,
        ExtendVolume, PublishCapabilities,
    },
    v1::volume_service_server::VolumeService,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::{
    auth::{authorize, path_of},
    test_support::{Harness, ctx, request},
    volume::VolumeApi,
};

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

/// The volume host of these tests: the recording fake records every message and
/// this wrapper settles the rows as the real host does (or fails as told), which
/// needs the database and so cannot be a `RecordingVolumes` answer.
struct SettlingHost {
    db: Db,
    recorded: RecordingVolumes,
    attach: Mutex<Answer>,
    detach: Mutex<Answer>,
}

impl SettlingHost {
    fn new(db: Db) -> Self {
        let recorded = RecordingVolumes::default();
        recorded.answer_attach(|_, _| Ok(AttachResult::default()));
        recorded.answer_detach(|_, _| Ok(DetachResult::default()));
        Self {
            db,
            recorded,
            attach: Mutex::new(Answer::Settle),
            detach: Mutex::new(Answer::Settle),
        }
    }

    /// `(method, host, attachment id)` of each call.
    fn calls(&self) -> Vec<(&'static str, String, String)> {
        self.recorded
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                VolumeCall::Attach(host, r) => Some(("attach_volume", host, r.attachment_id)),
                VolumeCall::Detach(host, r) => Some(("detach_volume", host, r.attachment_id)),
                _ => None,
            })
            .collect()
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
impl VolumeOps for SettlingHost {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: CreateVolume,
    ) -> OpsResult<()> {
        self.recorded.create_volume(ctx, host, r).await
    }

    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: DeleteVolume,
    ) -> OpsResult<()> {
        self.recorded.delete_volume(ctx, host, r).await
    }

    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: ExtendVolume,
    ) -> OpsResult<()> {
        self.recorded.extend_volume(ctx, host, r).await
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: CreateSnapshot,
    ) -> OpsResult<()> {
        self.recorded.create_snapshot(ctx, host, r).await
    }

    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: DeleteSnapshot,
    ) -> OpsResult<()> {
        self.recorded.delete_snapshot(ctx, host, r).await
    }

    async fn create_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: scoria_proto::bus::CreateBackup,
    ) -> OpsResult<()> {
        self.recorded.create_backup(ctx, host, r).await
    }

    async fn delete_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: scoria_proto::bus::DeleteBackup,
    ) -> OpsResult<()> {
        self.recorded.delete_backup(ctx, host, r).await
    }

    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: scoria_proto::bus::RestoreBackup,
    ) -> OpsResult<()> {
        self.recorded.restore_backup(ctx, host, r).await
    }

    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> OpsResult<AttachResult> {
        let id = request.attachment_id.clone();
        self.recorded.attach_volume(ctx, host, request).await?;
        let answer = self.attach.lock().expect("lock").clone();
        let row = self.db.get_attachment(&id).await.expect("db").expect("row");
        let info = info(&row.volume_id, row.mode.is_read_only());
        match answer {
            Answer::Fail(status) => return Err(OpsError::Failed(status)),
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

    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> OpsResult<DetachResult> {
        let id = request.attachment_id.clone();
        self.recorded.detach_volume(ctx, host, request).await?;
        let answer = self.detach.lock().expect("lock").clone();
        match answer {
            Answer::Fail(status) => Err(OpsError::Failed(status)),
            Answer::Settle => {
                assert!(self.db.finish_detach(&id).await.expect("db"), "detaching");
                Ok(DetachResult { unexported: true })
            }
            Answer::Reply => Ok(DetachResult { unexported: true }),
        }
    }

    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        r: PublishCapabilities,
    ) -> OpsResult<()> {
        self.recorded.publish_service_capabilities(ctx, r).await
    }

    async fn revert_to_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        r: scoria_proto::bus::RevertToSnapshot,
    ) -> OpsResult<()> {
        self.recorded.revert_to_snapshot(ctx, host, r).await
    }
}

struct Fixture {
    api: AttachmentApi,
    volumes: VolumeApi,
    db: Db,
    bus: Arc<SettlingHost>,
    h: Harness,
}

async fn fixture() -> Fixture {
    let h = Harness::new().await;
    let db = h.db.db().clone();
    let bus = Arc::new(SettlingHost::new(db.clone()));
    Fixture {
        api: AttachmentApi::new(
            db.clone(),
            h.ports_with(bus.clone()),
            Duration::from_secs(60),
        ),
        volumes: VolumeApi::new(db.clone(), h.ports_with(bus.clone()), 100),
        db,
        bus,
        h,
    }
}

fn member(project: &str) -> RequestContext {
    ctx(project, &["member"])
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

#[test]
fn a_detach_goes_to_the_member_that_exports() {
    use super::member_destination;
    // No export host recorded, or the volume's host itself: the volume's topic.
    assert_eq!(member_destination("node1@file", None), "node1@file");
    assert_eq!(
        member_destination("node1@file", Some("node1@file")),
        "node1@file"
    );
    // A member of the cluster: its server queue `<topic>.<server>`.
    assert_eq!(
        member_destination("shared@file", Some("node2@file")),
        "shared@file.node2"
    );
}
