//! `scoria.v1.AttachmentService`: attaching hands a host a volume over NBD. Unlike
//! the other writes, the client waits for the backend: CreateAttachment and
//! DeleteAttachment persist their intent (row + worker entry, by compare-and-set
//! on the volume) and then *call* the volume's host, which exports (or unexports)
//! and settles the row; the answer carries the connection info.
//!
//! ```text
//!  CreateAttachment: volume available (in use, multiattach) ─reserve─▶ attaching
//!                    ─call attach_volume─▶ host: export, attached ─▶ reply
//!                    call fails ─▶ error_attaching (with the reason), the error
//!  DeleteAttachment: attached | reserved | error_* ─CAS─▶ detaching
//!                    ─call detach_volume─▶ host: unexport when unused, row gone
//!                    call fails ─▶ error_detaching (with the reason), the error
//! ```
//!
//! The volume's status follows from its attachments in the same transactions
//! (see `scoria_common::db::attachments`): `attaching`, `in-use`, `detaching`,
//! back to `available` after the last one.

use std::time::Duration;

use scoria_common::{
    RequestContext,
    db::{
        AttachReserve, AttachmentQuery, Db, DbResult, DetachStart, Owner, WorkerEntry, deadlines,
    },
    events::Event,
    model::{Attachment, AttachmentStatus, Volume, VolumeStatus, now_ms},
    translation::connection_info_from_proto,
};
use scoria_proto::{
    bus::{AttachVolume, DetachVolume},
    v1::{self as pb, attachment_service_server::AttachmentService},
};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    page_token::{PageToken, filter_digest, finish_page},
    ports::Ports,
    request::{context, handle, handle_as, reply},
    scope, validate,
    watch::{self, WatchStream, Watches},
};

/// The extra spec of a volume type that lets its volumes have several attachments.
pub const MULTIATTACH_SPEC: &str = "multiattach";
/// The volume statuses an attachment may start from (`available`, or an attached
/// one for multiattach volumes; the database decides which).
const ATTACHABLE: [VolumeStatus; 5] = [
    VolumeStatus::Available,
    VolumeStatus::Reserved,
    VolumeStatus::Attaching,
    VolumeStatus::InUse,
    VolumeStatus::Detaching,
];

/// The `AttachmentService` implementation.
#[derive(Clone)]
pub struct AttachmentApi {
    db: Db,
    ports: Ports,
    call_timeout: Duration,
    watches: Option<Watches>,
}

impl AttachmentApi {
    /// The service over `db` and `ports`; `call_timeout` is the bus's call timeout
    /// (it sets the deadline of the worker entries).
    pub fn new(db: Db, ports: Ports, call_timeout: Duration) -> Self {
        Self {
            db,
            ports,
            call_timeout,
            watches: None,
        }
    }

    /// This service serving WatchAttachment from `watches`.
    pub fn with_watches(mut self, watches: Watches) -> Self {
        self.watches = Some(watches);
        self
    }

    /// The attachment `id` if the caller may see it (its project's, or any for admins).
    async fn load(&self, ctx: &RequestContext, id: &str) -> ApiResult<Attachment> {
        scope::load(ctx, "attachment", id, self.db.get_attachment(id)).await
    }

    /// The volume `id` if the caller may see it.
    async fn load_volume(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        scope::load(ctx, "volume", id, self.db.get_volume(id)).await
    }

    /// Whether `volume`'s type allows several attachments (`multiattach` =
    /// `<is> True`). A type that is gone allows one.
    async fn multiattach(&self, volume: &Volume) -> ApiResult<bool> {
        if volume.volume_type.is_empty() {
            return Ok(false);
        }
        let volume_type =
            self.db
                .get_volume_type(&volume.volume_type)
                .await
                .map_err(ApiError::db(format!(
                    "get volume type {}",
                    volume.volume_type
                )))?;
        Ok(volume_type
            .and_then(|t| t.extra_specs.get(MULTIATTACH_SPEC).cloned())
            .is_some_and(|value| is_true(&value)))
    }

    /// The worker entry of an attach or detach of attachment `id` on `host`.
    fn worker(&self, id: &str, status: AttachmentStatus, host: &str) -> WorkerEntry {
        let timeout_ms = i64::try_from(self.call_timeout.as_millis()).unwrap_or(i64::MAX / 4);
        let deadline_ms = now_ms()
            .saturating_add(timeout_ms)
            .saturating_add(deadlines::ATTACH_MARGIN.as_millis() as i64);
        WorkerEntry::attachment(id, status, Owner::Service(host.to_owned()), deadline_ms)
    }

    /// GetAttachment: the attachment `id` (checked) if the caller may see it.
    async fn get(&self, ctx: &RequestContext, id: &str) -> ApiResult<Attachment> {
        self.load(ctx, &validate::uuid("id", id)?).await
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, attachment_id))]
    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateAttachmentRequest,
    ) -> ApiResult<Attachment> {
        let valid = validate::create_attachment(&req)?;
        let volume_id = valid.volume_id;
        let volume = self.load_volume(ctx, &volume_id).await?;
        if !ATTACHABLE.contains(&volume.status) {
            return Err(not_attachable(&volume_id, volume.status));
        }
        let Some(host) = volume.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::NoBackend {
                kind: "volume",
                id: volume_id,
            });
        };
        let multiattach = self.multiattach(&volume).await?;
        let intent = Intent::call(
            &self.ports,
            format!("attach volume {volume_id} on {host}"),
            self.call_timeout,
        );
        intent.ready().await?;
        let now = now_ms();
        let attachment = Attachment {
            id: uuid::Uuid::new_v4().to_string(),
            volume_id: volume_id.clone(),
            // The volume's project: an admin attaching it makes it the owner's.
            project_id: volume.project_id.clone(),
            user_id: ctx.user_id.clone(),
            status: AttachmentStatus::Attaching,
            instance_id: req.instance_id.clone(),
            connector: valid.connector,
            mode: valid.mode,
            volume_host: host.clone(),
            connection_info: None,
            error_message: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
            attached_at_ms: None,
        };
        let id = attachment.id.clone();
        tracing::Span::current().record("attachment_id", id.as_str());
        let worker = self.worker(&id, AttachmentStatus::Attaching, &host);
        let reserved = self
            .db
            .reserve_attachment(&attachment, multiattach, &worker)
            .await
            .map_err(ApiError::db(format!("reserve attachment {id}")))?;
        match reserved {
            AttachReserve::Reserved(_) => {}
            AttachReserve::VolumeNotFound => return Err(ApiError::volume_not_found(&volume_id)),
            AttachReserve::WrongStatus(status) => {
                return Err(not_attachable(&volume_id, status));
            }
            AttachReserve::NotMultiattach(ids) => {
                return Err(ApiError::NotMultiattach {
                    id: volume_id,
                    attachments: ids,
                    spec: MULTIATTACH_SPEC,
                });
            }
        }
        let request = AttachVolume {
            attachment_id: id.clone(),
        };
        // A multiattach volume already exported in this mode by a member of its
        // cluster is attached through that member, which shares its export.
        let export_host = self
            .db
            .volume_export_host(&volume_id, attachment.mode.is_read_only())
            .await
            .map_err(ApiError::db(format!(
                "get volume {volume_id}'s export host"
            )))?;
        let to = member_destination(&host, export_host.as_deref());
        let call = self.ports.volumes.attach_volume(ctx, &to, request);
        let failed = attachment.clone();
        let result = intent
            .send(call, |why| self.settle_failed(ctx, failed, &host, why))
            .await?;
        let mut attached = self
            .db
            .get_attachment(&id)
            .await
            .map_err(ApiError::db(format!("get attachment {id}")))?
            .ok_or_else(|| {
                ApiError::Internal(format!("attachment {id} vanished while attaching"))
            })?;
        if attached.status == AttachmentStatus::Attaching {
            // The host answered but did not settle the row: settle it with its answer.
            let info = result
                .connection_info
                .as_ref()
                .and_then(connection_info_from_proto)
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "{host} attached {id} without a usable connection info"
                    ))
                })?;
            if let Some(done) = self
                .db
                .finish_attach(&id, &info)
                .await
                .map_err(ApiError::db(format!("mark attachment {id} attached")))?
            {
                attached = done;
            }
        }
        if attached.status != AttachmentStatus::Attached {
            return Err(ApiError::WrongStatus {
                kind: "attachment",
                id,
                status: attached.status.to_string(),
                detail: format!(" after its host answered: {}", attached.error_message),
            });
        }
        tracing::info!(attachment_id = %id, volume_id = %volume_id, host = %host, "volume attached");
        Ok(attached)
    }

    /// After a failed call to `host` (`why`): `attachment`'s status (`attaching`
    /// or `detaching`) -> its error status with the reason, if the row is still
    /// in it (the host may have settled it meanwhile), announcing the operation's
    /// `.error` event.
    async fn settle_failed(
        &self,
        ctx: &RequestContext,
        mut attachment: Attachment,
        host: &str,
        why: String,
    ) -> DbResult<bool> {
        let id = attachment.id.clone();
        let detaching = attachment.status == AttachmentStatus::Detaching;
        let verb = if detaching { "detach" } else { "attach" };
        let reason = format!("cannot {verb} on {host}: {why}");
        let (cas, to, event) = if detaching {
            (
                self.db.fail_detach(&id, &reason).await,
                AttachmentStatus::ErrorDetaching,
                Event::VolumeDetachError,
            )
        } else {
            (
                self.db.fail_attach(&id, &reason).await,
                AttachmentStatus::ErrorAttaching,
                Event::VolumeAttachError,
            )
        };
        let apply = |a: &mut Attachment| {
            a.status = to;
            a.error_message = reason;
            a.updated_at_ms = now_ms();
        };
        self.ports
            .settler(&self.db)
            .settle(ctx, &mut attachment, async { cas }, apply, Some(event))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        ctx: &RequestContext,
        req: pb::ListAttachmentsRequest,
    ) -> ApiResult<pb::ListAttachmentsResponse> {
        // Unsigned here: anything above the maximum is clamped to it.
        let page_size = i32::try_from(req.page_size).unwrap_or(i32::MAX);
        let limit = validate::page_size(page_size)?;
        let volume_id = match req.volume_id.as_str() {
            "" => None,
            id => Some(validate::uuid("volume_id", id)?),
        };
        let digest = filter_digest(&["attachments", volume_id.as_deref().unwrap_or_default()]);
        let after = PageToken::decode(&req.page_token, &ctx.project_id, &digest)?;
        let query = AttachmentQuery {
            project_id: scope::list_project(ctx),
            volume_id,
            after: after.map(|token| (token.created_at_ms, token.id)),
            limit: limit + 1,
            ..AttachmentQuery::default()
        };
        let mut attachments = self
            .db
            .list_attachments(&query)
            .await
            .map_err(ApiError::db("list attachments"))?;
        let next_page_token = finish_page(
            &mut attachments,
            limit,
            |last| (last.created_at_ms, last.id.clone()),
            &ctx.project_id,
            &digest,
        );
        Ok(pb::ListAttachmentsResponse {
            attachments: attachments.iter().map(pb::Attachment::from).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(attachment_id = %id))]
    async fn delete(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> ApiResult<pb::DeleteAttachmentResponse> {
        let id = validate::uuid("id", id)?;
        let attachment = self.load(ctx, &id).await?;
        let host = attachment.volume_host.clone();
        let intent = Intent::call(
            &self.ports,
            format!("detach attachment {id} on {host}"),
            self.call_timeout,
        );
        intent.ready().await?;
        let worker = self.worker(&id, AttachmentStatus::Detaching, &host);
        let started = self
            .db
            .start_detach(&id, &worker)
            .await
            .map_err(ApiError::db(format!("mark attachment {id} detaching")))?;
        match started {
            DetachStart::Started(_) => {}
            DetachStart::NotFound => return Err(ApiError::attachment_not_found(&id)),
            DetachStart::WrongStatus(status) => {
                return Err(ApiError::WrongStatus {
                    kind: "attachment",
                    id,
                    status: status.to_string(),
                    detail: ": it can be deleted once it is attached (or in an error status)"
                        .to_owned(),
                });
            }
        }
        let request = DetachVolume {
            attachment_id: id.clone(),
        };
        let failed = Attachment {
            status: AttachmentStatus::Detaching,
            ..attachment.clone()
        };
        // The export belongs to the member that started it: a member of a
        // cluster is reached on its own server queue.
        let export_host = self
            .db
            .export_host(&id)
            .await
            .map_err(ApiError::db(format!("get attachment {id}'s export host")))?;
        let to = member_destination(&host, export_host.as_deref());
        let call = self.ports.volumes.detach_volume(ctx, &to, request);
        intent
            .send(call, |why| self.settle_failed(ctx, failed, &host, why))
            .await?;
        tracing::info!(attachment_id = %id, volume_id = %attachment.volume_id, host = %host, "volume detached");
        Ok(pb::DeleteAttachmentResponse {})
    }
}

/// Where an attach or detach of a volume on `volume_host` goes: to the
/// volume's host, or, when a member (`export_host`, `host@backend`) of the
/// volume's cluster started the export, to that member's server queue:
/// `<volume_host>.<member's host>`, the routing key of `Target::server`.
fn member_destination(volume_host: &str, export_host: Option<&str>) -> String {
    match export_host {
        Some(member) if member != volume_host => {
            let server = member.split_once('@').map_or(member, |(h, _)| h);
            format!("{volume_host}.{server}")
        }
        _ => volume_host.to_owned(),
    }
}

/// Whether an extra spec's value says `<is> True` (case-insensitive, spaces
/// around the parts ignored).
fn is_true(value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    value
        .strip_prefix("<is>")
        .is_some_and(|rest| rest.trim() == "true")
}

fn not_attachable(volume_id: &str, status: VolumeStatus) -> ApiError {
    ApiError::WrongStatus {
        kind: "volume",
        id: volume_id.to_owned(),
        status: status.to_string(),
        detail: ": only available volumes (or attached multiattach ones) can be attached"
            .to_owned(),
    }
}

#[tonic::async_trait]
impl AttachmentService for AttachmentApi {
    async fn create_attachment(
        &self,
        request: Request<pb::CreateAttachmentRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        handle_as(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        handle_as(request, async |ctx, req| self.get(ctx, &req.id).await).await
    }

    async fn list_attachments(
        &self,
        request: Request<pb::ListAttachmentsRequest>,
    ) -> Result<Response<pb::ListAttachmentsResponse>, Status> {
        handle(request, async |ctx, req| self.list(ctx, req).await).await
    }

    async fn delete_attachment(
        &self,
        request: Request<pb::DeleteAttachmentRequest>,
    ) -> Result<Response<pb::DeleteAttachmentResponse>, Status> {
        handle(request, async |ctx, req| self.delete(ctx, &req.id).await).await
    }

    type WatchAttachmentStream = WatchStream<pb::WatchAttachmentResponse>;

    async fn watch_attachment(
        &self,
        request: Request<pb::WatchAttachmentRequest>,
    ) -> Result<Response<Self::WatchAttachmentStream>, Status> {
        let hub = self.watches.as_ref().ok_or_else(watch::unimplemented)?;
        let ctx = context(&request)?;
        let attachment = reply(self.get(&ctx, &request.get_ref().id).await)?.into_inner();
        watch::respond(
            Some(&hub.attachments),
            &attachment.id,
            pb::Attachment::from(&attachment),
            |attachment, deleted| pb::WatchAttachmentResponse {
                attachment: Some(attachment),
                deleted,
            },
        )
    }
}

#[cfg(test)]
mod tests;
