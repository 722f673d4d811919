//! The manager's `extend_volume` handler. The API moved the volume `available` ->
//! `extending` (owner: this host) before casting; this grows the backend object
//! and settles the volume. Idempotent, for a redelivered cast:
//!
//! ```text
//!  extend_volume: row gone ─────────────────────────▶ ack
//!                 available, size = new ────────────▶ ack (redelivered: done already)
//!                 not `extending` / not mine ───────▶ ack, logged
//!                 driver extend (a no-op if the object has the size already)
//!                     ok ──▶ extending -> available, size = new   volume.resize.end
//!                     failed ──▶ extending -> error_extending      volume.resize.error
//! ```

use scoria_common::{RequestContext, db::WorkerKind, events::Event, model::VolumeStatus};
use scoria_proto::bus::ExtendVolume;

use super::VolumeManager;
use crate::error::Result;

impl VolumeManager {
    pub(super) async fn extend(&self, ctx: &RequestContext, request: ExtendVolume) -> Result<()> {
        let id = request.volume_id.as_str();
        let new_size = request.new_size_gib;
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!("volume row gone: extend cast ignored");
            return Ok(());
        };
        if volume.status != VolumeStatus::Extending {
            if volume.status == VolumeStatus::Available && volume.size_gib == new_size {
                tracing::info!("volume already extended: redelivered cast ignored");
            } else {
                tracing::warn!(status = %volume.status, size_gib = volume.size_gib, "volume is not extending: cast ignored");
            }
            return Ok(());
        }
        if !volume
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h))
        {
            tracing::warn!(host = ?volume.host, "volume is on another backend: extend cast ignored");
            return Ok(());
        }
        if new_size <= volume.size_gib {
            // A stale cast: a larger (or equal) extend finished since it was sent.
            tracing::warn!(
                size_gib = volume.size_gib,
                "volume is that big already: stale extend cast ignored"
            );
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, VolumeStatus::Extending.as_str())
            .await?;
        // The status to return to (only `available` is extended today).
        let back_to = match request.previous_status.parse::<VolumeStatus>() {
            Ok(status @ (VolumeStatus::Available | VolumeStatus::InUse)) => status,
            _ => VolumeStatus::Available,
        };
        self.shared
            .settler
            .announce(ctx, Event::VolumeResizeStart, &volume);
        let from_gib = volume.size_gib;
        match self.shared.driver.extend_volume(id, new_size).await {
            Ok(()) => {
                let won = self
                    .shared
                    .settle_extended(ctx, &mut volume, new_size, back_to)
                    .await?;
                if won {
                    tracing::info!(from_gib, to_gib = new_size, "volume extended");
                } else {
                    tracing::info!("volume changed while being extended: left as it is");
                }
                Ok(())
            }
            Err(err) => {
                let message = format!("extending volume {id} to {new_size} GiB failed: {err}");
                let failed = (VolumeStatus::Extending, VolumeStatus::ErrorExtending);
                self.volume_failed(ctx, &mut volume, failed, &message, Event::VolumeResizeError)
                    .await
            }
        }
    }
}
