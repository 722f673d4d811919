//! The manager's `inspect_existing` and `manage_existing` handlers: adopting an
//! object this backend holds but Scoria does not manage (AdminService
//! ManageVolume / ManageSnapshot). The API asks its size first (a call, before
//! any row exists), then writes the row `managing` (owner: this host) with the
//! size rounded up to whole GiB, then casts; this grows the object to that size
//! and renames it to the row's object name. Idempotent, for a redelivered cast
//! or the reconciler's redo:
//!
//! ```text
//!  manage_existing: row gone / not `managing` / not mine ──▶ ack, logged
//!                   driver manage_existing (done already: Ok)
//!                       ok ──▶ managing -> available          <kind>.manage_existing.end
//!                       failed ──▶ managing -> error_managing (why), the object
//!                                  left under its old name     <kind>.manage_existing.error
//! ```
//!
//! Nothing here ever deletes the object: a failed adoption leaves it as it was
//! (grown at most), and deleting an `error_managing` row removes only the row.

use scoria_common::{
    RequestContext,
    db::WorkerKind,
    events::Event,
    model::{SnapshotStatus, VolumeStatus},
    settle::{SnapshotChange, VolumeChange},
};
use scoria_proto::bus::{ExistingObject, InspectExisting, ManageExisting, ManagedKind};

use super::VolumeManager;
use crate::{
    driver::{DriverError, ObjectKind},
    error::{Result, VolumeError},
};

/// The driver's kind of a bus kind; the field named when it is missing.
fn object_kind(kind: i32) -> Result<ObjectKind> {
    match ManagedKind::try_from(kind) {
        Ok(ManagedKind::Volume) => Ok(ObjectKind::Volume),
        Ok(ManagedKind::Snapshot) => Ok(ObjectKind::Snapshot),
        _ => Err(VolumeError::MissingField { field: "kind" }),
    }
}

impl VolumeManager {
    /// The `inspect_existing` handler: the size of an object to adopt.
    pub(super) async fn inspect_existing(
        &self,
        request: InspectExisting,
    ) -> Result<ExistingObject> {
        let kind = object_kind(request.kind)?;
        let reference = request.reference;
        match self.shared.driver.inspect_existing(kind, &reference).await {
            Ok(size_bytes) => Ok(ExistingObject { size_bytes }),
            Err(err) => Err(unadoptable(&self.settings.host, reference, err)),
        }
    }

    /// The `manage_existing` handler.
    pub(super) async fn manage_existing(
        &self,
        ctx: &RequestContext,
        request: ManageExisting,
    ) -> Result<()> {
        match object_kind(request.kind)? {
            ObjectKind::Volume => self.manage_volume(ctx, request).await,
            ObjectKind::Snapshot => self.manage_snapshot(ctx, request).await,
        }
    }

    async fn manage_volume(&self, ctx: &RequestContext, request: ManageExisting) -> Result<()> {
        let id = request.id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!("volume row gone: manage cast ignored");
            return Ok(());
        };
        if volume.status != VolumeStatus::Managing {
            tracing::info!(status = %volume.status, "volume is not managing: cast ignored (redelivered or stale)");
            return Ok(());
        }
        if !volume
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h))
        {
            tracing::warn!(host = ?volume.host, "volume is on another backend: manage cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, VolumeStatus::Managing.as_str())
            .await?;
        let settler = &self.shared.settler;
        settler.announce(ctx, Event::VolumeManageStart, &volume);
        let adopted = self
            .shared
            .driver
            .manage_existing(ObjectKind::Volume, id, &request.reference, volume.size_gib)
            .await;
        let from = [VolumeStatus::Managing];
        match adopted {
            Ok(()) => {
                let change = VolumeChange::new(&from, VolumeStatus::Available).error("");
                if settler
                    .volume(ctx, &mut volume, change, Some(Event::VolumeManageEnd))
                    .await?
                {
                    tracing::info!(reference = %request.reference, "backend object adopted as a volume");
                }
            }
            Err(err) => {
                let message = format!(
                    "adopting object {:?} as volume {id} failed: {err}",
                    request.reference
                );
                tracing::error!(message, "backend step failed");
                let change = VolumeChange::new(&from, VolumeStatus::ErrorManaging).error(&message);
                settler
                    .volume(ctx, &mut volume, change, Some(Event::VolumeManageError))
                    .await?;
            }
        }
        Ok(())
    }

    async fn manage_snapshot(&self, ctx: &RequestContext, request: ManageExisting) -> Result<()> {
        let id = request.id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut snapshot) = self.shared.db.get_snapshot(id).await? else {
            tracing::info!("snapshot row gone: manage cast ignored");
            return Ok(());
        };
        if snapshot.status != SnapshotStatus::Managing {
            tracing::info!(status = %snapshot.status, "snapshot is not managing: cast ignored (redelivered or stale)");
            return Ok(());
        }
        if !snapshot
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h))
        {
            tracing::warn!(host = ?snapshot.host, "snapshot is on another backend: manage cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Snapshot, id, SnapshotStatus::Managing.as_str())
            .await?;
        let settler = &self.shared.settler;
        settler.announce(ctx, Event::SnapshotManageStart, &snapshot);
        let adopted = self
            .shared
            .driver
            .manage_existing(
                ObjectKind::Snapshot,
                id,
                &request.reference,
                snapshot.size_gib,
            )
            .await;
        let from = [SnapshotStatus::Managing];
        match adopted {
            Ok(()) => {
                let change = SnapshotChange::new(&from, SnapshotStatus::Available).error("");
                if settler
                    .snapshot(ctx, &mut snapshot, change, Some(Event::SnapshotManageEnd))
                    .await?
                {
                    tracing::info!(reference = %request.reference, "backend object adopted as a snapshot");
                }
            }
            Err(err) => {
                let message = format!(
                    "adopting object {:?} as snapshot {id} failed: {err}",
                    request.reference
                );
                tracing::error!(message, "backend step failed");
                let change =
                    SnapshotChange::new(&from, SnapshotStatus::ErrorManaging).error(&message);
                settler
                    .snapshot(ctx, &mut snapshot, change, Some(Event::SnapshotManageError))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The handler's error for a driver's refusal to adopt `reference` on `host`.
fn unadoptable(host: &str, reference: String, err: DriverError) -> VolumeError {
    match err {
        DriverError::NotFound { .. } => VolumeError::NotFound {
            kind: "backend object",
            id: format!("{reference:?} on {host}"),
        },
        DriverError::Unadoptable { reason, .. } => VolumeError::Unadoptable { reference, reason },
        DriverError::BadFormat { reason, format, .. } => VolumeError::Unadoptable {
            reference,
            reason: format!("it is not a usable {format} image: {reason}"),
        },
        source => VolumeError::Backend {
            op: "inspect object",
            id: reference,
            source,
        },
    }
}
