//! The one settle path. A state change is one call: compare-and-set in the
//! database, then the in-memory copy, then the notification, and the last two
//! only if the compare-and-set won. Every service changes statuses through a
//! [`Settler`]: the volume manager, the reconciler, the scheduler, the reaper and
//! the API's compensation steps.
//!
//! ```text
//!   settle(resource, cas, apply, event)
//!     cas.await ── lost ──▶ Ok(false): nothing changes, nothing is announced
//!        │ won
//!        ▼
//!     apply(&mut resource) ──▶ announce(event, resource) ──▶ Ok(true)
//! ```

use std::{future::Future, sync::Arc};

use crate::{
    context::RequestContext,
    db::{BackupChange, Db, DbResult, WorkerEntry},
    events::{Event, Notifications, Payload},
    model::{Attachment, Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms},
};

/// A resource whose changes are announced.
pub trait Resource {
    /// The resource as an event's payload.
    fn payload(&self) -> Payload<'_>;
}

impl Resource for Volume {
    fn payload(&self) -> Payload<'_> {
        Payload::Volume(self)
    }
}

impl Resource for Snapshot {
    fn payload(&self) -> Payload<'_> {
        Payload::Snapshot(self)
    }
}

impl Resource for crate::model::Backup {
    fn payload(&self) -> Payload<'_> {
        Payload::Backup(self)
    }
}

impl Resource for Attachment {
    fn payload(&self) -> Payload<'_> {
        Payload::Attachment(self)
    }
}

/// A volume's compare-and-set: from one of `from` to `to`, setting `host` and
/// `error_message` when given, and the volume's worker entry in the same
/// transaction (`Some`: the owner of the new transient status; `None`: removed,
/// the status is settled).
#[derive(Debug, Clone, Copy)]
pub struct VolumeChange<'a> {
    /// The statuses the volume may be in.
    pub from: &'a [VolumeStatus],
    /// The new status.
    pub to: VolumeStatus,
    /// The new host, if it changes.
    pub host: Option<&'a str>,
    /// Why (for error statuses).
    pub error_message: Option<&'a str>,
    /// The worker entry of the new status.
    pub worker: Option<&'a WorkerEntry>,
}

impl<'a> VolumeChange<'a> {
    /// From one of `from` to `to`, nothing else set, the worker entry removed.
    pub fn new(from: &'a [VolumeStatus], to: VolumeStatus) -> Self {
        Self {
            from,
            to,
            host: None,
            error_message: None,
            worker: None,
        }
    }

    /// Sets the host too.
    pub fn host(mut self, host: &'a str) -> Self {
        self.host = Some(host);
        self
    }

    /// Records why.
    pub fn error(mut self, message: &'a str) -> Self {
        self.error_message = Some(message);
        self
    }

    /// Records the owner of the new transient status.
    pub fn worker(mut self, entry: &'a WorkerEntry) -> Self {
        self.worker = Some(entry);
        self
    }
}

/// A snapshot's compare-and-set, as [`VolumeChange`] (snapshots keep their host).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotChange<'a> {
    /// The statuses the snapshot may be in.
    pub from: &'a [SnapshotStatus],
    /// The new status.
    pub to: SnapshotStatus,
    /// Why (for error statuses).
    pub error_message: Option<&'a str>,
    /// The worker entry of the new status.
    pub worker: Option<&'a WorkerEntry>,
}

impl<'a> SnapshotChange<'a> {
    /// From one of `from` to `to`, nothing else set, the worker entry removed.
    pub fn new(from: &'a [SnapshotStatus], to: SnapshotStatus) -> Self {
        Self {
            from,
            to,
            error_message: None,
            worker: None,
        }
    }

    /// Records why.
    pub fn error(mut self, message: &'a str) -> Self {
        self.error_message = Some(message);
        self
    }

    /// Records the owner of the new transient status.
    pub fn worker(mut self, entry: &'a WorkerEntry) -> Self {
        self.worker = Some(entry);
        self
    }
}

/// Changes statuses and announces what changed: see the module docs.
#[derive(Clone)]
pub struct Settler {
    db: Db,
    notifications: Arc<dyn Notifications>,
}

impl Settler {
    /// A settler writing to `db` and announcing through `notifications`.
    pub fn new(db: Db, notifications: Arc<dyn Notifications>) -> Self {
        Self { db, notifications }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Where announcements go.
    pub fn notifications(&self) -> &Arc<dyn Notifications> {
        &self.notifications
    }

    /// Announces `event` about `resource` without a status change (a `.start`
    /// event after a claim that is not a compare-and-set of the resource, say).
    pub fn announce<T: Resource>(&self, ctx: &RequestContext, event: Event, resource: &T) {
        self.notifications.announce(ctx, event, resource.payload());
    }

    /// The general form: runs `cas`; if it won, applies `apply` to `resource` and
    /// announces `event` about it. Returns whether the compare-and-set won.
    pub async fn settle<T, E, F>(
        &self,
        ctx: &RequestContext,
        resource: &mut T,
        cas: F,
        apply: impl FnOnce(&mut T),
        event: Option<Event>,
    ) -> Result<bool, E>
    where
        T: Resource,
        F: Future<Output = Result<bool, E>>,
    {
        if !cas.await? {
            return Ok(false);
        }
        apply(resource);
        if let Some(event) = event {
            self.notifications.announce(ctx, event, resource.payload());
        }
        Ok(true)
    }

    /// Moves `volume` as `change` says (one transaction with its worker entry);
    /// on a win updates the copy and announces `event`.
    pub async fn volume(
        &self,
        ctx: &RequestContext,
        volume: &mut Volume,
        change: VolumeChange<'_>,
        event: Option<Event>,
    ) -> DbResult<bool> {
        let cas = self.db.transition_volume_with_worker(
            &volume.id,
            change.from,
            change.to,
            change.host,
            change.error_message,
            change.worker,
        );
        let apply = |v: &mut Volume| {
            v.status = change.to;
            if let Some(host) = change.host {
                v.host = Some(host.to_owned());
            }
            if let Some(message) = change.error_message {
                v.error_message = message.to_owned();
            }
            v.updated_at_ms = now_ms();
        };
        // The future borrows the id: run it before the copy is changed.
        let won = cas.await?;
        self.settle(ctx, volume, async { Ok(won) }, apply, event)
            .await
    }

    /// Moves `snapshot` as `change` says (one transaction with its worker entry);
    /// on a win updates the copy and announces `event`.
    pub async fn snapshot(
        &self,
        ctx: &RequestContext,
        snapshot: &mut Snapshot,
        change: SnapshotChange<'_>,
        event: Option<Event>,
    ) -> DbResult<bool> {
        let won = self
            .db
            .transition_snapshot(
                &snapshot.id,
                change.from,
                change.to,
                change.error_message,
                change.worker,
            )
            .await?;
        let apply = |s: &mut Snapshot| {
            s.status = change.to;
            if let Some(message) = change.error_message {
                s.error_message = message.to_owned();
            }
            s.updated_at_ms = now_ms();
        };
        self.settle(ctx, snapshot, async { Ok(won) }, apply, event)
            .await
    }

    /// Moves `backup` as `change` says (one transaction with its worker entry
    /// and, best effort, its volume); on a win updates the copy and announces
    /// `event`.
    pub async fn backup(
        &self,
        ctx: &RequestContext,
        backup: &mut crate::model::Backup,
        change: BackupChange<'_>,
        event: Option<Event>,
    ) -> DbResult<bool> {
        let won = self.db.transition_backup(&backup.id, &change).await?;
        let apply = |b: &mut crate::model::Backup| {
            b.status = change.to;
            if let Some(message) = change.error_message {
                b.error_message = message.to_owned();
            }
            if let Some((count, bytes)) = change.stats {
                b.object_count = count;
                b.stored_bytes = bytes;
            }
            if let Some(volume) = change.restore_volume {
                b.restore_volume_id = volume.map(str::to_owned);
            }
            b.updated_at_ms = now_ms();
        };
        self.settle(ctx, backup, async { Ok(won) }, apply, event)
            .await
    }
}
