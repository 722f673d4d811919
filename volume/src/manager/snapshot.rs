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

    /// The snapshot a cast asks this service to work on, claimed for it, if its
    /// row still asks for that work (`wanted`) here; otherwise `None`, after
    /// removing the leftover object of a row that is gone. Either way the cast
    /// is done with (redelivered or stale casts are logged and acked).
    async fn take(&self, id: &str, wanted: SnapshotStatus) -> Result<Option<Snapshot>> {
        let Some(snapshot) = self.shared.db.get_snapshot(id).await? else {
            tracing::info!(%wanted, "snapshot row gone: removing any leftover object");
            self.shared.remove_leftover_snapshot(id).await;
            return Ok(None);
        };
        if snapshot.status != wanted {
            if wanted == SnapshotStatus::Creating && snapshot.status == SnapshotStatus::Available {
                tracing::info!("snapshot already made: redelivered cast ignored");
            } else {
                tracing::warn!(status = %snapshot.status, %wanted, "snapshot is not in the status the cast asks for: cast ignored");
            }
            return Ok(None);
        }
        if !self.holds(&snapshot) {
            tracing::warn!(host = ?snapshot.host, "snapshot belongs to another backend: cast ignored");
            return Ok(None);
        }
        self.claim(WorkerKind::Snapshot, id, wanted.as_str())
            .await?;
        Ok(Some(snapshot))
    }

    pub(super) async fn snapshot_create(
        &self,
        ctx: &RequestContext,
        request: CreateSnapshot,
    ) -> Result<()> {
        let id = request.snapshot_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut snapshot) = self.take(id, SnapshotStatus::Creating).await? else {
            return Ok(());
        };
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
        let Some(mut snapshot) = self.take(id, SnapshotStatus::Deleting).await? else {
            return Ok(());
        };
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
