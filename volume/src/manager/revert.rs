//! The manager's `revert_to_snapshot` handler. The API moved the volume
//! `available` -> `reverting` (owner: this host) and its newest snapshot
//! `available` -> `restoring` before casting; this copies the snapshot's bytes
//! over the volume (crash-safe: a temporary object renamed over it) and settles
//! both rows in one transaction. Idempotent, for a redelivered cast or the
//! reconciler's redo (a second copy gives the same bytes):
//!
//! ```text
//!  revert_to_snapshot: row gone / not `reverting` / not mine ─▶ ack, logged
//!                      snapshot not `restoring` ──────────────▶ ack, logged
//!                      driver revert
//!                          ok ──▶ volume available, snapshot available   volume.revert.end
//!                          failed ──▶ volume error (why), snapshot available   volume.revert.error
//! ```

use scoria_common::{
    RequestContext,
    db::WorkerKind,
    events::Event,
    model::{SnapshotStatus, VolumeStatus},
};
use scoria_proto::bus::RevertToSnapshot;

use super::VolumeManager;
use crate::error::Result;

impl VolumeManager {
    pub(super) async fn revert(
        &self,
        ctx: &RequestContext,
        request: RevertToSnapshot,
    ) -> Result<()> {
        let id = request.volume_id.as_str();
        let snapshot_id = request.snapshot_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!("volume row gone: revert cast ignored");
            return Ok(());
        };
        if volume.status != VolumeStatus::Reverting {
            tracing::info!(status = %volume.status, "volume is not reverting: cast ignored (redelivered or stale)");
            return Ok(());
        }
        if !volume
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h))
        {
            tracing::warn!(host = ?volume.host, "volume is on another backend: revert cast ignored");
            return Ok(());
        }
        let snapshot = self.shared.db.get_snapshot(snapshot_id).await?;
        if !snapshot.is_some_and(|s| s.status == SnapshotStatus::Restoring && s.volume_id == id) {
            tracing::warn!(
                snapshot_id,
                "snapshot is not being restored into this volume: cast ignored"
            );
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, VolumeStatus::Reverting.as_str())
            .await?;
        self.shared
            .settler
            .announce(ctx, Event::VolumeRevertStart, &volume);
        let result = self.shared.driver.revert_to_snapshot(id, snapshot_id).await;
        let message = result
            .as_ref()
            .err()
            .map(|err| format!("reverting volume {id} to snapshot {snapshot_id} failed: {err}"));
        let won = self
            .shared
            .db
            .finish_revert(id, snapshot_id, message.as_deref())
            .await?;
        if !won {
            tracing::info!("volume changed while being reverted: left as it is");
            return Ok(());
        }
        match message {
            None => {
                volume.status = VolumeStatus::Available;
                volume.error_message.clear();
                self.shared
                    .settler
                    .announce(ctx, Event::VolumeRevertEnd, &volume);
                tracing::info!(snapshot_id, "volume reverted to its snapshot");
            }
            Some(message) => {
                tracing::error!(message, "backend step failed");
                volume.status = VolumeStatus::Error;
                volume.error_message = message;
                self.shared
                    .settler
                    .announce(ctx, Event::VolumeRevertError, &volume);
            }
        }
        Ok(())
    }
}
