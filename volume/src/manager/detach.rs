//! The manager's `detach_volume` call and the stopping of a deleted volume's
//! exports (see the diagram in `attach.rs`).

use scoria_common::{RequestContext, events::Event, model::AttachmentStatus};
use scoria_proto::bus::{DetachResult, DetachVolume};

use super::VolumeManager;
use crate::error::{Result, VolumeError};

impl VolumeManager {
    pub(super) async fn detach(
        &self,
        ctx: &RequestContext,
        request: DetachVolume,
    ) -> Result<DetachResult> {
        let id = request.attachment_id.as_str();
        if id.is_empty() {
            return Err(VolumeError::MissingField {
                field: "attachment_id",
            });
        }
        let _busy = self.shared.in_flight.enter(id);
        let Some(first) = self.shared.db.get_attachment(id).await? else {
            tracing::info!("attachment already gone: a retried detach");
            return Ok(DetachResult { unexported: false });
        };
        let _volume = self.shared.locks.lock(&first.volume_id).await;
        let Some(mut attachment) = self.shared.db.get_attachment(id).await? else {
            tracing::info!("attachment removed meanwhile: a retried detach");
            return Ok(DetachResult { unexported: false });
        };
        if attachment.status != AttachmentStatus::Detaching {
            return Err(VolumeError::WrongStatus {
                kind: "attachment",
                id: id.to_owned(),
                status: attachment.status.to_string(),
                expected: "detaching",
            });
        }
        self.shared
            .settler
            .announce(ctx, Event::VolumeDetachStart, &attachment);
        match self.shared.unexport_if_unused(&attachment).await {
            Ok(unexported) => {
                if self.shared.settle_detached(ctx, &mut attachment).await? {
                    tracing::info!(volume_id = %attachment.volume_id, unexported, "detached");
                }
                Ok(DetachResult { unexported })
            }
            Err(source) => {
                let err = VolumeError::Unexport {
                    volume_id: attachment.volume_id.clone(),
                    source,
                };
                let reason = err.to_string();
                tracing::error!(%reason, "detach failed");
                self.shared
                    .settle_failed(
                        ctx,
                        &mut attachment,
                        AttachmentStatus::ErrorDetaching,
                        &reason,
                    )
                    .await?;
                Err(err)
            }
        }
    }

    /// Stops every export of volume `volume_id` (it is being deleted).
    pub(super) async fn unexport_volume(&self, volume_id: &str) -> Result<(), String> {
        let Some(exports) = &self.shared.exports else {
            return Ok(());
        };
        let _volume = self.shared.locks.lock(volume_id).await;
        match exports.unexport_volume(volume_id).await {
            Ok(true) => {
                tracing::warn!("a deleted volume was still exported: export stopped");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(err) => Err(format!("stopping the exports of volume {volume_id}: {err}")),
        }
    }
}
