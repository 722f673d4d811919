//! The manager's `delete_volume` handler (the reconciler casts it again for an
//! overdue `deleting`).

use scoria_common::{RequestContext, db::WorkerKind, events::Event, model::VolumeStatus};
use scoria_proto::bus::DeleteVolume;

use super::VolumeManager;
use crate::error::Result;

impl VolumeManager {
    /// The `delete_volume` handler (the reconciler runs it again for an overdue
    /// `deleting`).
    pub(crate) async fn delete(&self, ctx: &RequestContext, request: DeleteVolume) -> Result<()> {
        let id = request.volume_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!("volume row already gone: removing any leftover");
            self.shared.remove_leftover(id).await;
            return Ok(());
        };
        if volume.status != VolumeStatus::Deleting {
            tracing::warn!(status = %volume.status, "volume is not deleting: cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, VolumeStatus::Deleting.as_str())
            .await?;
        self.shared
            .settler
            .announce(ctx, Event::VolumeDeleteStart, &volume);
        // Its attachments are gone (or failed): no export may serve a deleted file.
        let removed = match self.unexport_volume(id).await {
            Ok(()) => self
                .shared
                .driver
                .delete_volume(id)
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(err),
        };
        match removed {
            Ok(()) => {
                let removed = self.shared.db.delete_volume_row(id);
                self.settle_removed(ctx, &mut volume, removed, Event::VolumeDeleteEnd)
                    .await
            }
            Err(err) => {
                let message = format!("deleting volume {id} failed: {err}");
                let failed = (VolumeStatus::Deleting, VolumeStatus::ErrorDeleting);
                self.volume_failed(ctx, &mut volume, failed, &message, Event::VolumeDeleteError)
                    .await
            }
        }
    }
}
