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
//!                                                      failed ─▶ error_attaching (why),
//!                                                        its export stopped unless another
//!                                                        active attachment (same mode) uses it
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

use std::sync::Arc;

use scoria_common::{
    RequestContext,
    events::Event,
    model::{Attachment, AttachmentStatus, ConnectionInfo},
};
use scoria_proto::{
    bus::{AttachResult, AttachVolume},
    v1 as pb,
};

use super::VolumeManager;
use crate::error::{Result, VolumeError};
use crate::export::ExportManager;

fn attach_result(info: &ConnectionInfo) -> AttachResult {
    AttachResult {
        connection_info: Some(pb::ConnectionInfo::from(info)),
    }
}

impl VolumeManager {
    /// This manager exporting attachments through `exports`.
    pub fn with_exports(mut self, exports: Arc<ExportManager>) -> Self {
        self.shared.exports = Some(exports);
        self
    }

    /// The export manager, if this manager attaches.
    pub fn exports(&self) -> Option<&Arc<ExportManager>> {
        self.shared.exports.as_ref()
    }

    // === attach ===

    pub(super) async fn attach(
        &self,
        ctx: &RequestContext,
        request: AttachVolume,
    ) -> Result<AttachResult> {
        let id = request.attachment_id.as_str();
        if id.is_empty() {
            return Err(VolumeError::MissingField {
                field: "attachment_id",
            });
        }
        let _busy = self.shared.in_flight.enter(id);
        let not_found = || VolumeError::NotFound {
            kind: "attachment",
            id: id.to_owned(),
        };
        let Some(first) = self.shared.db.get_attachment(id).await? else {
            return Err(not_found());
        };
        let _volume = self.shared.locks.lock(&first.volume_id).await;
        let Some(mut attachment) = self.shared.db.get_attachment(id).await? else {
            return Err(not_found());
        };
        match attachment.status {
            AttachmentStatus::Attaching => {}
            AttachmentStatus::Attached => {
                tracing::info!("attachment already attached: its connection info again");
                return attached_info(&attachment).map(attach_result);
            }
            other => {
                return Err(VolumeError::WrongStatus {
                    kind: "attachment",
                    id: id.to_owned(),
                    status: other.to_string(),
                    expected: "attaching",
                });
            }
        }
        // The export is this process's: detaches come to it (its server queue
        // in a cluster), and its restart restores it.
        self.shared
            .db
            .set_export_host(id, self.shared.export_host())
            .await?;
        self.shared
            .settler
            .announce(ctx, Event::VolumeAttachStart, &attachment);
        let volume = self.shared.db.get_volume(&attachment.volume_id).await?;
        let info = match self.export_for(&attachment, volume).await {
            Ok(info) => info,
            Err(failure) => {
                let reason = failure.to_string();
                tracing::error!(%reason, "export failed");
                if self
                    .shared
                    .settle_failed(
                        ctx,
                        &mut attachment,
                        AttachmentStatus::ErrorAttaching,
                        &reason,
                    )
                    .await?
                {
                    // The export may run (a first delivery started it): nobody
                    // else in this mode uses it, so it stops.
                    if let Err(err) = self.shared.unexport_if_unused(&attachment).await {
                        tracing::warn!(%err, "cannot stop the export of a failed attach");
                    }
                }
                return Err(failure);
            }
        };
        if self
            .shared
            .settle_attached(ctx, &mut attachment, &info)
            .await?
        {
            tracing::info!(volume_id = %attachment.volume_id, uri = %info.uri(), "attached");
            return Ok(attach_result(&info));
        }
        // Changed meanwhile (failed by a reconciler, or removed): the export may
        // have no user now.
        let now = self.shared.db.get_attachment(id).await?;
        if let Some(now) = &now
            && now.status == AttachmentStatus::Attached
        {
            return attached_info(now).map(attach_result);
        }
        self.shared
            .unexport_if_unused(&attachment)
            .await
            .map_err(|source| VolumeError::Unexport {
                volume_id: attachment.volume_id.clone(),
                source,
            })?;
        Err(match now {
            Some(now) => VolumeError::Changed {
                kind: "attachment",
                id: id.to_owned(),
                status: now.status.to_string(),
                doing: "attached",
            },
            None => VolumeError::Removed {
                kind: "attachment",
                id: id.to_owned(),
                doing: "attached",
            },
        })
    }

    /// Exports `attachment`'s volume (its row `volume`) in its mode, after checking
    /// the volume is this backend's.
    async fn export_for(
        &self,
        attachment: &Attachment,
        volume: Option<scoria_common::model::Volume>,
    ) -> Result<ConnectionInfo> {
        let volume_id = &attachment.volume_id;
        let host = &self.settings.host;
        let volume = volume.ok_or_else(|| VolumeError::NotFound {
            kind: "volume",
            id: volume_id.clone(),
        })?;
        match volume.host.as_deref() {
            Some(h) if self.settings.is_mine(h) => {}
            other => {
                return Err(VolumeError::NotMine {
                    volume_id: volume_id.clone(),
                    on: other.map(str::to_owned),
                    host: host.clone(),
                });
            }
        }
        let Some(exports) = &self.shared.exports else {
            return Err(VolumeError::NoExports { host: host.clone() });
        };
        let backend = |op| {
            move |source| VolumeError::Backend {
                op,
                id: volume_id.clone(),
                source,
            }
        };
        let path = self
            .shared
            .driver
            .volume_path(volume_id)
            .map_err(backend("locate volume"))?;
        if !self
            .shared
            .driver
            .volume_exists(volume_id)
            .await
            .map_err(backend("find volume"))?
        {
            return Err(VolumeError::NoObject {
                volume_id: volume_id.clone(),
                host: host.clone(),
            });
        }
        exports
            .export(
                volume_id,
                &path,
                self.shared.driver.format(),
                attachment.mode.is_read_only(),
            )
            .await
            .map_err(|err| VolumeError::export(volume_id, err))
    }
}

/// The connection info of an `attached` attachment (a row without one is corrupt).
fn attached_info(attachment: &Attachment) -> Result<&ConnectionInfo> {
    attachment
        .connection_info
        .as_ref()
        .ok_or_else(|| VolumeError::RowCorrupt {
            table: "attachments",
            id: attachment.id.clone(),
            reason: "attached without connection info".into(),
        })
}
