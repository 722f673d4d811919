//! The manager's `create_snapshot` and `delete_snapshot` handlers. The API wrote
//! the snapshot row (`creating`, or moved it to `deleting`) with a worker entry
//! owned by this host before casting; these do the backend work and settle the
//! row. Idempotent, for a redelivered cast:
//!
//! ```text
//!  create_snapshot: row gone ──────────────▶ remove leftover snapshot object, ack
//!                   not `creating` ────────▶ ack, logged (redelivered or stale)
//!                   driver create_snapshot (a no-op if it exists)
//!                       ok ──▶ creating -> available     snapshot.create.end
//!                       failed ──▶ creating -> error (why)  snapshot.create.error
//!                                  won? then the snapshot object is removed
//!  delete_snapshot: row gone ──────────────▶ remove leftover snapshot object, ack
//!                   not `deleting` ────────▶ ack, logged
//!                   driver delete_snapshot (a no-op if it is gone)
//!                       ok ──▶ row removed               snapshot.delete.end
//!                       failed ──▶ deleting -> error_deleting (why)
//!                                                        snapshot.delete.error
//! ```
//!
//! Each settling step is a compare-and-set that also removes the worker entry.

use scoria_common::{
    RequestContext,
    db::WorkerKind,
    events::Event,
    model::{Snapshot, SnapshotStatus},
    settle::SnapshotChange,
};
use scoria_proto::bus::{CreateSnapshot, DeleteSnapshot};

use super::VolumeManager;
use crate::error::Result;

impl VolumeManager {
    /// Whether the row's `host` names this service (a row without one is taken
    /// as addressed here: the cast came to this host's topic).
    fn holds(&self, snapshot: &Snapshot) -> bool {
        snapshot
            .host
            .as_deref()
            .is_none_or(|h| self.settings.is_mine(h))
    }

    pub(super) async fn snapshot_create(
        &self,
        ctx: &RequestContext,
        request: CreateSnapshot,
    ) -> Result<()> {
        let id = request.snapshot_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut snapshot) = self.shared.db.get_snapshot(id).await? else {
            tracing::info!("snapshot row gone before it was made: removing any leftover");
            self.shared.remove_leftover_snapshot(id).await;
            return Ok(());
        };
        if snapshot.status != SnapshotStatus::Creating {
            if snapshot.status == SnapshotStatus::Available {
                tracing::info!("snapshot already made: redelivered cast ignored");
            } else {
                tracing::warn!(status = %snapshot.status, "snapshot is not creating: cast ignored");
            }
            return Ok(());
        }
        if !self.holds(&snapshot) {
            tracing::warn!(host = ?snapshot.host, "snapshot belongs to another backend: cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Snapshot, id, SnapshotStatus::Creating.as_str())
            .await?;
        if request.volume_id != snapshot.volume_id {
            tracing::warn!(
                requested = %request.volume_id,
                row = %snapshot.volume_id,
                "volumes differ: the row wins"
            );
        }
        self.shared
            .settler
            .announce(ctx, Event::SnapshotCreateStart, &snapshot);
        if let Err(err) = self
            .shared
            .driver
            .create_snapshot(id, &snapshot.volume_id)
            .await
        {
            let message = format!("creating snapshot {id} failed: {err}");
            tracing::error!(%err, "backend failed to create the snapshot");
            // Compare-and-set first; the object goes only if it won (a redelivered
            // copy may have made the snapshot available meanwhile).
            let won = self
                .shared
                .settler
                .snapshot(
                    ctx,
                    &mut snapshot,
                    SnapshotChange::new(&[SnapshotStatus::Creating], SnapshotStatus::Error)
                        .error(&message),
                    Some(Event::SnapshotCreateError),
                )
                .await?;
            if won {
                self.shared.remove_leftover_snapshot(id).await;
            } else {
                tracing::info!("snapshot changed while failing: left as it is");
            }
            return Ok(());
        }
        let won = self
            .shared
            .settler
            .snapshot(
                ctx,
                &mut snapshot,
                SnapshotChange::new(&[SnapshotStatus::Creating], SnapshotStatus::Available)
                    .error(""),
                Some(Event::SnapshotCreateEnd),
            )
            .await?;
        if won {
            tracing::info!(volume_id = %snapshot.volume_id, "snapshot created");
            return Ok(());
        }
        match self.shared.db.get_snapshot(id).await? {
            None => {
                tracing::warn!("snapshot row removed while being made: removing the object");
                self.shared.remove_leftover_snapshot(id).await;
            }
            Some(now) => {
                tracing::info!(status = %now.status, "snapshot settled by someone else first");
            }
        }
        Ok(())
    }

    pub(crate) async fn snapshot_delete(
        &self,
        ctx: &RequestContext,
        request: DeleteSnapshot,
    ) -> Result<()> {
        let id = request.snapshot_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut snapshot) = self.shared.db.get_snapshot(id).await? else {
            tracing::info!("snapshot row already gone: removing any leftover");
            self.shared.remove_leftover_snapshot(id).await;
            return Ok(());
        };
        if snapshot.status != SnapshotStatus::Deleting {
            tracing::warn!(status = %snapshot.status, "snapshot is not deleting: cast ignored");
            return Ok(());
        }
        if !self.holds(&snapshot) {
            tracing::warn!(host = ?snapshot.host, "snapshot belongs to another backend: cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Snapshot, id, SnapshotStatus::Deleting.as_str())
            .await?;
        self.shared
            .settler
            .announce(ctx, Event::SnapshotDeleteStart, &snapshot);
        match self.shared.driver.delete_snapshot(id).await {
            Ok(()) => {
                let removed = self.shared.db.delete_snapshot_row(id);
                self.settle_removed(ctx, &mut snapshot, removed, Event::SnapshotDeleteEnd)
                    .await
            }
            Err(err) => {
                let message = format!("deleting snapshot {id} failed: {err}");
                tracing::error!(%err, "backend failed to delete the snapshot");
                self.shared
                    .settler
                    .snapshot(
                        ctx,
                        &mut snapshot,
                        SnapshotChange::new(
                            &[SnapshotStatus::Deleting],
                            SnapshotStatus::ErrorDeleting,
                        )
                        .error(&message),
                        Some(Event::SnapshotDeleteError),
                    )
                    .await?;
                Ok(())
            }
        }
    }
}
