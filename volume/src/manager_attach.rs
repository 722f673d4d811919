//! The manager's attachments: the `attach_volume` and `detach_volume` calls, the
//! exports' restart (adopted or re-exported from the database) and the settling of
//! attachments stuck past their deadline. The API moved the attachment (to
//! `attaching`, or to `detaching`) with a worker entry owned by this host before
//! calling; these do the export work and settle the row, whose change settles the
//! volume's status in the same transaction.
//!
//! ```text
//!  attach_volume: row gone ─────────────────▶ NOT_FOUND
//!                 attached ─────────────────▶ its connection info (a retried call)
//!                 not attaching ────────────▶ FAILED_PRECONDITION naming the status
//!                 volume here? export (volume, mode) ─ ok ──▶ attached + info
//!                                                      failed ─▶ error_attaching (why)
//!  detach_volume: row gone ─────────────────▶ Ok, unexported = false (a retried call)
//!                 not detaching ────────────▶ FAILED_PRECONDITION naming the status
//!                 another active attachment in the same mode? ── no ──▶ unexport
//!                     row removed            unexport failed ──▶ error_detaching (why)
//!  start-up:      attachments attaching / attached / detaching / error_detaching
//!                 ─▶ their exports adopted (servers of the last run), the others killed
//!                 ─▶ attached / detaching / error_detaching without a server:
//!                    re-exported on their old port if free (else the rows get the new one)
//!  reconcile:     attaching past its deadline ─▶ export runs? attached : error_attaching
//!                 detaching past its deadline ─▶ unexport if unused, row removed
//! ```
//!
//! A volume's exports are keyed by mode: every read-write attachment shares
//! `volume-<id>`, every read-only one `volume-<id>-ro`. Attaches, detaches and
//! reconciliation of one volume take its lock ([`VolumeLocks`]), so "last user
//! gone: unexport" never races an attach that reuses the export.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use scoria_common::{
    RequestContext,
    db::{AttachmentQuery, WorkerKind},
    model::{Attachment, AttachmentStatus, ConnectionInfo, now_ms},
    rpc::Priority,
};
use scoria_proto::{
    bus::{AttachResult, AttachVolume, DetachResult, DetachVolume},
    v1 as pb,
};
use tonic::Status;

use super::{VolumeManager, db_error};
use crate::export::{ExportError, ExportKey, ExportManager, Reexport};

/// One async lock per volume, made on first use and dropped once nobody holds or
/// waits for it.
#[derive(Debug, Default)]
pub(crate) struct VolumeLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl VolumeLocks {
    /// Waits for volume `volume_id`'s lock; held until the guard is dropped.
    pub(crate) async fn lock(&self, volume_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // A lock only this map holds is neither held nor awaited.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(volume_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// What [`VolumeManager::restore_exports`] did at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Exports whose server of the last run still serves: kept, clients connected.
    pub adopted: Vec<ExportKey>,
    /// Exports started again (their server had died, or the machine restarted).
    pub reexported: Vec<ExportKey>,
    /// Attachments whose connection info changed (their old port was taken).
    pub moved: Vec<String>,
    /// Leftover servers no attachment wants: killed.
    pub killed: Vec<ExportKey>,
    /// Exports that could not be started again, and why.
    pub failed: Vec<(ExportKey, String)>,
}

/// What [`VolumeManager::reconcile_attachments`] did, by attachment id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentReconcile {
    /// `attaching` whose export runs: now `attached`.
    pub attached: Vec<String>,
    /// `attaching` without an export: now `error_attaching`.
    pub failed: Vec<String>,
    /// `detaching`: export stopped if unused, row removed.
    pub detached: Vec<String>,
    /// `detaching` whose export would not stop: now `error_detaching`.
    pub failed_detach: Vec<String>,
}

/// Why an attach failed: the code returned, and the reason (also stored).
struct AttachFailure {
    status: Status,
}

impl AttachFailure {
    fn new(code: tonic::Code, reason: String) -> Self {
        Self {
            status: Status::new(code, reason),
        }
    }

    fn reason(&self) -> &str {
        self.status.message()
    }
}

/// The code of an export failure.
fn export_code(err: &ExportError) -> tonic::Code {
    match err {
        ExportError::InvalidId { .. } => tonic::Code::InvalidArgument,
        ExportError::PortsExhausted { .. } => tonic::Code::ResourceExhausted,
        ExportError::ToolMissing { .. }
        | ExportError::Exited { .. }
        | ExportError::NotReady { .. }
        | ExportError::Conflict { .. }
        | ExportError::Bind { .. }
        | ExportError::Io { .. } => tonic::Code::Internal,
    }
}

fn attach_result(info: &ConnectionInfo) -> AttachResult {
    AttachResult {
        connection_info: Some(pb::ConnectionInfo::from(info)),
    }
}

fn key_of(attachment: &Attachment) -> Result<ExportKey, ExportError> {
    ExportKey::new(&attachment.volume_id, attachment.mode.is_read_only())
}

impl VolumeManager {
    /// This manager exporting attachments through `exports`.
    pub fn with_exports(mut self, exports: Arc<ExportManager>) -> Self {
        self.exports = Some(exports);
        self
    }

    /// The export manager, if this manager attaches.
    pub fn exports(&self) -> Option<&Arc<ExportManager>> {
        self.exports.as_ref()
    }

    async fn notify_attachment(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        attachment: &Attachment,
    ) {
        self.notifier
            .notify_attachment(ctx, priority, event_type, attachment)
            .await;
    }

    // === attach ===

    pub(super) async fn attach(
        &self,
        ctx: &RequestContext,
        request: AttachVolume,
    ) -> Result<AttachResult, Status> {
        let id = request.attachment_id.as_str();
        if id.is_empty() {
            return Err(Status::invalid_argument("attachment_id is required"));
        }
        let _busy = self.in_flight.enter(id);
        let not_found = || Status::not_found(format!("attachment {id} not found"));
        let Some(first) = self.db.get_attachment(id).await.map_err(db_error)? else {
            return Err(not_found());
        };
        let _volume = self.volume_locks.lock(&first.volume_id).await;
        let Some(mut attachment) = self.db.get_attachment(id).await.map_err(db_error)? else {
            return Err(not_found());
        };
        match attachment.status {
            AttachmentStatus::Attaching => {}
            AttachmentStatus::Attached => {
                tracing::info!("attachment already attached: its connection info again");
                return attached_info(&attachment).map(attach_result);
            }
            other => {
                return Err(Status::failed_precondition(format!(
                    "attachment {id} is {other}, not attaching"
                )));
            }
        }
        self.notify_attachment(ctx, Priority::Info, "volume.attach.start", &attachment)
            .await;
        let volume = self
            .db
            .get_volume(&attachment.volume_id)
            .await
            .map_err(db_error)?;
        let info = match self.export_for(&attachment, volume).await {
            Ok(info) => info,
            Err(failure) => {
                tracing::error!(reason = failure.reason(), "export failed");
                if self
                    .db
                    .fail_attach(id, failure.reason())
                    .await
                    .map_err(db_error)?
                {
                    attachment.status = AttachmentStatus::ErrorAttaching;
                    attachment.error_message = failure.reason().to_owned();
                    self.notify_attachment(
                        ctx,
                        Priority::Error,
                        "volume.attach.error",
                        &attachment,
                    )
                    .await;
                }
                return Err(failure.status);
            }
        };
        if let Some(attached) = self.db.finish_attach(id, &info).await.map_err(db_error)? {
            tracing::info!(volume_id = %attached.volume_id, uri = %info.uri(), "attached");
            self.notify_attachment(ctx, Priority::Info, "volume.attach.end", &attached)
                .await;
            return Ok(attach_result(&info));
        }
        // Changed meanwhile (failed by a reconciler, or removed): the export may
        // have no user now.
        let now = self.db.get_attachment(id).await.map_err(db_error)?;
        if let Some(now) = &now
            && now.status == AttachmentStatus::Attached
        {
            return attached_info(now).map(attach_result);
        }
        self.unexport_if_unused(&attachment)
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        Err(match now {
            Some(now) => Status::failed_precondition(format!(
                "attachment {id} became {} while it was being attached",
                now.status
            )),
            None => Status::not_found(format!(
                "attachment {id} was removed while it was being attached"
            )),
        })
    }

    /// Exports `attachment`'s volume (its row `volume`) in its mode, after checking
    /// the volume is this backend's.
    async fn export_for(
        &self,
        attachment: &Attachment,
        volume: Option<scoria_common::model::Volume>,
    ) -> Result<ConnectionInfo, AttachFailure> {
        use tonic::Code;
        let volume_id = &attachment.volume_id;
        let host = &self.settings.host;
        let volume = volume.ok_or_else(|| {
            AttachFailure::new(Code::NotFound, format!("volume {volume_id} is gone"))
        })?;
        match volume.host.as_deref() {
            Some(h) if self.settings.is_mine(h) => {}
            other => {
                return Err(AttachFailure::new(
                    Code::FailedPrecondition,
                    format!(
                        "volume {volume_id} is on {}, not on {host}",
                        other.unwrap_or("no host")
                    ),
                ));
            }
        }
        let Some(exports) = &self.exports else {
            return Err(AttachFailure::new(
                Code::Unavailable,
                format!("volume service {host} has no export manager"),
            ));
        };
        let backend = |err: crate::driver::DriverError| {
            AttachFailure::new(
                Code::Internal,
                format!("volume {volume_id} on {host}: {err}"),
            )
        };
        let path = self.driver.volume_path(volume_id).map_err(backend)?;
        if !self
            .driver
            .volume_exists(volume_id)
            .await
            .map_err(backend)?
        {
            return Err(AttachFailure::new(
                Code::Internal,
                format!("volume {volume_id} has no backend object on {host}"),
            ));
        }
        exports
            .export(
                volume_id,
                &path,
                self.driver.format(),
                attachment.mode.is_read_only(),
            )
            .await
            .map_err(|err| {
                AttachFailure::new(
                    export_code(&err),
                    format!("exporting volume {volume_id} failed: {err}"),
                )
            })
    }

    // === detach ===

    pub(super) async fn detach(
        &self,
        ctx: &RequestContext,
        request: DetachVolume,
    ) -> Result<DetachResult, Status> {
        let id = request.attachment_id.as_str();
        if id.is_empty() {
            return Err(Status::invalid_argument("attachment_id is required"));
        }
        let _busy = self.in_flight.enter(id);
        let Some(first) = self.db.get_attachment(id).await.map_err(db_error)? else {
            tracing::info!("attachment already gone: a retried detach");
            return Ok(DetachResult { unexported: false });
        };
        let _volume = self.volume_locks.lock(&first.volume_id).await;
        let Some(mut attachment) = self.db.get_attachment(id).await.map_err(db_error)? else {
            tracing::info!("attachment removed meanwhile: a retried detach");
            return Ok(DetachResult { unexported: false });
        };
        if attachment.status != AttachmentStatus::Detaching {
            return Err(Status::failed_precondition(format!(
                "attachment {id} is {}, not detaching",
                attachment.status
            )));
        }
        self.notify_attachment(ctx, Priority::Info, "volume.detach.start", &attachment)
            .await;
        match self.unexport_if_unused(&attachment).await {
            Ok(unexported) => {
                if self.db.finish_detach(id).await.map_err(db_error)? {
                    tracing::info!(volume_id = %attachment.volume_id, unexported, "detached");
                    attachment.status = AttachmentStatus::Detached;
                    self.notify_attachment(ctx, Priority::Info, "volume.detach.end", &attachment)
                        .await;
                }
                Ok(DetachResult { unexported })
            }
            Err(err) => {
                let reason = format!(
                    "stopping the export of volume {} failed: {err}",
                    attachment.volume_id
                );
                tracing::error!(%reason, "detach failed");
                if self.db.fail_detach(id, &reason).await.map_err(db_error)? {
                    attachment.status = AttachmentStatus::ErrorDetaching;
                    attachment.error_message = reason.clone();
                    self.notify_attachment(
                        ctx,
                        Priority::Error,
                        "volume.detach.error",
                        &attachment,
                    )
                    .await;
                }
                Err(Status::internal(reason))
            }
        }
    }

    /// Stops `attachment`'s export unless another active attachment of its volume
    /// uses it, in the same mode. Whether it stopped one. The caller holds the
    /// volume's lock.
    async fn unexport_if_unused(&self, attachment: &Attachment) -> Result<bool, ExportError> {
        let Some(exports) = &self.exports else {
            return Ok(false);
        };
        let users = self
            .db
            .list_attachments(&AttachmentQuery {
                volume_id: Some(attachment.volume_id.clone()),
                statuses: AttachmentStatus::ACTIVE.to_vec(),
                ..Default::default()
            })
            .await;
        let users = match users {
            Ok(users) => users,
            Err(err) => {
                // Unknown: keep the export (a leftover is better than a cut client).
                tracing::warn!(%err, "cannot list the volume's attachments: export kept");
                return Ok(false);
            }
        };
        let shared = users
            .iter()
            .any(|a| a.id != attachment.id && a.mode == attachment.mode);
        if shared {
            tracing::info!(volume_id = %attachment.volume_id, "other attachments use the export: kept");
            return Ok(false);
        }
        exports
            .unexport(&attachment.volume_id, attachment.mode.is_read_only())
            .await
    }

    /// Stops every export of volume `volume_id` (it is being deleted).
    pub(super) async fn unexport_volume(&self, volume_id: &str) -> Result<(), String> {
        let Some(exports) = &self.exports else {
            return Ok(());
        };
        let _volume = self.volume_locks.lock(volume_id).await;
        match exports.unexport_volume(volume_id).await {
            Ok(true) => {
                tracing::warn!("a deleted volume was still exported: export stopped");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(err) => Err(format!("stopping the exports of volume {volume_id}: {err}")),
        }
    }

    // === restart ===

    /// At start-up, before the bus is served: the exports of this host's
    /// attachments (`attaching`, `attached`, `detaching`, `error_detaching`) still
    /// served by the last run are adopted, the run dir's other servers killed; the
    /// exports of `attached`, `detaching` and `error_detaching` attachments left
    /// without a server are started again, on their old port when it is free (the
    /// rows get the new info otherwise). Then attachments stuck past their
    /// deadline are settled ([`VolumeManager::reconcile_attachments`]). A database
    /// error fails it; an export that will not start is logged and reported.
    #[tracing::instrument(skip(self), err, fields(host = %self.settings.host))]
    pub async fn restore_exports(&self) -> Result<RestoreReport, Status> {
        let Some(exports) = &self.exports else {
            return Ok(RestoreReport::default());
        };
        let attachments = self
            .db
            .list_attachments(&AttachmentQuery {
                volume_host: Some(self.settings.host.clone()),
                statuses: vec![
                    AttachmentStatus::Attaching,
                    AttachmentStatus::Attached,
                    AttachmentStatus::Detaching,
                    AttachmentStatus::ErrorDetaching,
                ],
                ..Default::default()
            })
            .await
            .map_err(db_error)?;
        // Each export, with the attachments that hold it and need it served.
        let mut wanted: BTreeMap<ExportKey, Vec<&Attachment>> = BTreeMap::new();
        for attachment in &attachments {
            match key_of(attachment) {
                Ok(key) => wanted.entry(key).or_default().push(attachment),
                Err(err) => tracing::warn!(attachment_id = %attachment.id, %err, "skipped"),
            }
        }
        let keys: Vec<ExportKey> = wanted.keys().cloned().collect();
        let cleanup = exports.adopt_or_clean(&keys).await.map_err(|err| {
            Status::internal(format!("settling the exports of the last run: {err}"))
        })?;
        let mut report = RestoreReport {
            adopted: cleanup.adopted,
            killed: cleanup.killed,
            ..Default::default()
        };
        // Those with no server left, on their old ports where free.
        let mut todo = Vec::new();
        for (key, holders) in &wanted {
            let needs_server = holders
                .iter()
                .any(|a| a.status != AttachmentStatus::Attaching);
            if !needs_server || report.adopted.contains(key) {
                continue;
            }
            match self.driver.volume_path(&key.volume_id) {
                Ok(path) => todo.push(Reexport {
                    key: key.clone(),
                    path,
                    format: self.driver.format().to_owned(),
                    port_hint: holders
                        .iter()
                        .find_map(|a| a.connection_info.as_ref().map(|info| info.port)),
                }),
                Err(err) => report.failed.push((key.clone(), err.to_string())),
            }
        }
        for (key, started) in exports.reexport_many(todo).await {
            let info = match started {
                Ok(info) => info,
                Err(err) => {
                    tracing::error!(export = %key, %err, "cannot export again: its clients cannot connect");
                    report.failed.push((key, err.to_string()));
                    continue;
                }
            };
            tracing::info!(export = %key, uri = %info.uri(), "exported again");
            for holder in wanted.get(&key).into_iter().flatten() {
                if holder.status != AttachmentStatus::Attaching
                    && holder.connection_info.as_ref() != Some(&info)
                    && self
                        .db
                        .update_connection_info(&holder.id, &info)
                        .await
                        .map_err(db_error)?
                {
                    tracing::warn!(attachment_id = %holder.id, uri = %info.uri(), "export moved: connection info updated");
                    report.moved.push(holder.id.clone());
                }
            }
            report.reexported.push(key);
        }
        tracing::info!(?report, "exports restored");
        Ok(report)
    }

    /// Leaves every export running as the service stops (clients stay connected;
    /// the next start adopts them).
    pub async fn release_exports(&self) {
        if let Some(exports) = &self.exports {
            exports.release().await;
        }
    }

    // === reconcile ===

    /// Settles this host's attachments stuck in `attaching` or `detaching` past
    /// their worker entry's deadline, from what really runs: an `attaching` one
    /// whose export serves becomes `attached` (with that info), else
    /// `error_attaching`; a `detaching` one has its export stopped if no other
    /// attachment uses it, and goes. Attachments a handler works on now are left
    /// alone. A database error fails the run.
    #[tracing::instrument(skip(self), err, fields(host = %self.settings.host))]
    pub async fn reconcile_attachments(&self) -> Result<AttachmentReconcile, Status> {
        let overdue = self
            .db
            .overdue_workers(&self.settings.host, now_ms())
            .await
            .map_err(db_error)?;
        let mut report = AttachmentReconcile::default();
        for entry in overdue {
            if entry.kind != WorkerKind::Attachment || self.in_flight.contains(&entry.resource_id) {
                continue;
            }
            let id = entry.resource_id.as_str();
            let _busy = self.in_flight.enter(id);
            let Some(first) = self.db.get_attachment(id).await.map_err(db_error)? else {
                continue;
            };
            let _volume = self.volume_locks.lock(&first.volume_id).await;
            let Some(attachment) = self.db.get_attachment(id).await.map_err(db_error)? else {
                continue;
            };
            match attachment.status {
                AttachmentStatus::Attaching => {
                    self.settle_attaching(&attachment, &mut report).await?;
                }
                AttachmentStatus::Detaching => {
                    self.settle_detaching(&attachment, &mut report).await?;
                }
                other => {
                    tracing::debug!(attachment_id = %id, status = %other, "not stuck: left to the reconciler's stale check");
                }
            }
        }
        if report != AttachmentReconcile::default() {
            tracing::info!(?report, "stuck attachments settled");
        }
        Ok(report)
    }

    async fn settle_attaching(
        &self,
        attachment: &Attachment,
        report: &mut AttachmentReconcile,
    ) -> Result<(), Status> {
        let id = attachment.id.as_str();
        let serving = match &self.exports {
            Some(exports) => exports
                .serving(&attachment.volume_id, attachment.mode.is_read_only())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let ctx = RequestContext::internal(crate::BINARY);
        if let Some(info) = serving {
            if let Some(attached) = self.db.finish_attach(id, &info).await.map_err(db_error)? {
                tracing::info!(attachment_id = %id, uri = %info.uri(), "stuck attach: its export runs, attached");
                self.notify_attachment(&ctx, Priority::Info, "volume.attach.end", &attached)
                    .await;
                report.attached.push(id.to_owned());
            }
            return Ok(());
        }
        let reason = format!(
            "attaching volume {} did not finish before its deadline",
            attachment.volume_id
        );
        if self.db.fail_attach(id, &reason).await.map_err(db_error)? {
            tracing::warn!(attachment_id = %id, "stuck attach without an export: error_attaching");
            let mut failed = attachment.clone();
            failed.status = AttachmentStatus::ErrorAttaching;
            failed.error_message = reason;
            self.notify_attachment(&ctx, Priority::Error, "volume.attach.error", &failed)
                .await;
            report.failed.push(id.to_owned());
        }
        Ok(())
    }

    async fn settle_detaching(
        &self,
        attachment: &Attachment,
        report: &mut AttachmentReconcile,
    ) -> Result<(), Status> {
        let id = attachment.id.as_str();
        let ctx = RequestContext::internal(crate::BINARY);
        match self.unexport_if_unused(attachment).await {
            Ok(_) => {
                if self.db.finish_detach(id).await.map_err(db_error)? {
                    tracing::info!(attachment_id = %id, "stuck detach finished");
                    let mut gone = attachment.clone();
                    gone.status = AttachmentStatus::Detached;
                    self.notify_attachment(&ctx, Priority::Info, "volume.detach.end", &gone)
                        .await;
                    report.detached.push(id.to_owned());
                }
            }
            Err(err) => {
                let reason = format!(
                    "stopping the export of volume {} failed: {err}",
                    attachment.volume_id
                );
                if self.db.fail_detach(id, &reason).await.map_err(db_error)? {
                    let mut failed = attachment.clone();
                    failed.status = AttachmentStatus::ErrorDetaching;
                    failed.error_message = reason;
                    self.notify_attachment(&ctx, Priority::Error, "volume.detach.error", &failed)
                        .await;
                    report.failed_detach.push(id.to_owned());
                }
            }
        }
        Ok(())
    }
}

/// The connection info of an `attached` attachment (a row without one is corrupt).
fn attached_info(attachment: &Attachment) -> Result<&ConnectionInfo, Status> {
    attachment.connection_info.as_ref().ok_or_else(|| {
        tracing::error!(attachment_id = %attachment.id, "attached without connection info");
        Status::internal("internal error")
    })
}

#[cfg(test)]
#[path = "manager_attach_tests.rs"]
mod tests;
