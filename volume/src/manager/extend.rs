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

use scoria_common::{
    RequestContext,
    db::WorkerKind,
    db::{Db, DbResult},
    events::Event,
    model::{VolumeStatus, now_ms},
};
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
        match self.shared.driver.extend_volume(id, new_size).await {
            Ok(()) => {
                if self
                    .shared
                    .db
                    .finish_growing_extend(id, new_size, back_to)
                    .await?
                {
                    tracing::info!(
                        from_gib = volume.size_gib,
                        to_gib = new_size,
                        "volume extended"
                    );
                    volume.status = back_to;
                    volume.size_gib = new_size;
                    volume.error_message.clear();
                    volume.updated_at_ms = now_ms();
                    self.shared
                        .settler
                        .announce(ctx, Event::VolumeResizeEnd, &volume);
                } else {
                    tracing::info!("volume changed while being extended: left as it is");
                }
                Ok(())
            }
            Err(err) => {
                let message = format!("extending volume {id} to {new_size} GiB failed: {err}");
                tracing::error!(%err, "backend failed to extend the volume");
                let won = self
                    .shared
                    .db
                    .transition_volume_with_worker(
                        id,
                        &[VolumeStatus::Extending],
                        VolumeStatus::ErrorExtending,
                        None,
                        Some(&message),
                        None,
                    )
                    .await?;
                if won {
                    volume.status = VolumeStatus::ErrorExtending;
                    volume.error_message = message;
                    volume.updated_at_ms = now_ms();
                    self.shared
                        .settler
                        .announce(ctx, Event::VolumeResizeError, &volume);
                }
                Ok(())
            }
        }
    }
}

/// The finish of an extend as a compare-and-set that includes the size:
/// `extending` -> `to` with `new_size_gib`, only if the row is still smaller, so a
/// stale smaller extend never shrinks (or overwrites) a larger finished one.
/// Removes the volume's worker entry in the same transaction.
trait FinishGrowingExtend {
    async fn finish_growing_extend(
        &self,
        id: &str,
        new_size_gib: u64,
        to: VolumeStatus,
    ) -> DbResult<bool>;
}

impl FinishGrowingExtend for Db {
    async fn finish_growing_extend(
        &self,
        id: &str,
        new_size_gib: u64,
        to: VolumeStatus,
    ) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let won = sqlx::query(
            "UPDATE volumes SET status = $1, size_gib = $2, error_message = '', updated_at = $3 \
             WHERE id = $4 AND status = $5 AND size_gib < $2",
        )
        .bind(to.as_str())
        .bind(new_size_gib as i64)
        .bind(now_ms())
        .bind(id)
        .bind(VolumeStatus::Extending.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        sqlx::query("DELETE FROM workers WHERE resource_type = $1 AND resource_id = $2")
            .bind("volume")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
