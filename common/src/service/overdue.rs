//! Failing overdue work through its worker entry: what the scheduler's reaper
//! (work of a service that is gone) and a volume service's reconciler (its own
//! work past its deadline) both do. One path, so both move the row, update the
//! copy and announce the `.error` event the same way:
//!
//! ```text
//!  compare-and-set on the entry as read (status -> error status, message)
//!    Done ──▶ the copy failed too, `.error` announced
//!    Stale / Lost ──▶ nothing announced (someone else acted)
//! ```

use std::future::Future;

use crate::{
    RequestContext,
    db::{Db, DbError, DbResult, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{Attachment, AttachmentStatus, Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms},
    settle::{Resource, Settler},
};

/// Where failed work lands: the error status, why, and the event announced.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a, S> {
    /// The error status.
    pub to: S,
    /// The row's `error_message`.
    pub message: &'a str,
    /// Announced if the compare-and-set won (the operation's `.error`).
    pub event: Event,
}

/// A resource whose overdue work can be failed through its worker entry.
pub trait Overdue: Resource {
    /// Its status.
    type Status: Copy + Send + Sync;

    /// The compare-and-set of the row and of `entry` (as read) into `to`.
    fn fail_worker<'a>(
        db: &'a Db,
        entry: &'a WorkerEntry,
        to: Self::Status,
        message: &'a str,
    ) -> impl Future<Output = DbResult<WorkerOutcome>> + Send + 'a;

    /// The copy, failed the way the row was.
    fn set_failed(&mut self, to: Self::Status, message: &str);
}

/// Fails `resource` (the one `entry` names) as `failure` says, through
/// `settler`: on a win the copy is failed too and the event announced. The
/// entry's outcome.
pub async fn fail<T: Overdue>(
    settler: &Settler,
    ctx: &RequestContext,
    entry: &WorkerEntry,
    resource: &mut T,
    failure: Failure<'_, T::Status>,
) -> Result<WorkerOutcome, DbError> {
    let Failure { to, message, event } = failure;
    let mut outcome = WorkerOutcome::Lost;
    let won = async {
        outcome = T::fail_worker(settler.db(), entry, to, message).await?;
        Ok::<_, DbError>(outcome == WorkerOutcome::Done)
    };
    let apply = |r: &mut T| r.set_failed(to, message);
    settler
        .settle(ctx, resource, won, apply, Some(event))
        .await?;
    Ok(outcome)
}

// === impl Overdue ===

impl Overdue for Volume {
    type Status = VolumeStatus;

    fn fail_worker<'a>(
        db: &'a Db,
        entry: &'a WorkerEntry,
        to: VolumeStatus,
        message: &'a str,
    ) -> impl Future<Output = DbResult<WorkerOutcome>> + Send + 'a {
        db.fail_volume_worker(entry, to, message)
    }

    fn set_failed(&mut self, to: VolumeStatus, message: &str) {
        self.status = to;
        self.error_message = message.to_owned();
        self.updated_at_ms = now_ms();
    }
}

impl Overdue for Snapshot {
    type Status = SnapshotStatus;

    fn fail_worker<'a>(
        db: &'a Db,
        entry: &'a WorkerEntry,
        to: SnapshotStatus,
        message: &'a str,
    ) -> impl Future<Output = DbResult<WorkerOutcome>> + Send + 'a {
        db.fail_snapshot_worker(entry, to, message)
    }

    fn set_failed(&mut self, to: SnapshotStatus, message: &str) {
        self.status = to;
        self.error_message = message.to_owned();
        self.updated_at_ms = now_ms();
    }
}

impl Overdue for crate::model::Backup {
    type Status = crate::model::BackupStatus;

    fn fail_worker<'a>(
        db: &'a Db,
        entry: &'a WorkerEntry,
        to: crate::model::BackupStatus,
        message: &'a str,
    ) -> impl Future<Output = DbResult<WorkerOutcome>> + Send + 'a {
        db.fail_backup_worker(entry, to, message)
    }

    fn set_failed(&mut self, to: crate::model::BackupStatus, message: &str) {
        self.status = to;
        self.error_message = message.to_owned();
        self.updated_at_ms = now_ms();
    }
}

/// An attachment's compare-and-set removes its entry; the caller checks first
/// that the entry is the one read. `error_attaching` fails an attach (or a
/// reservation), any other status a detach.
impl Overdue for Attachment {
    type Status = AttachmentStatus;

    async fn fail_worker<'a>(
        db: &'a Db,
        entry: &'a WorkerEntry,
        to: AttachmentStatus,
        message: &'a str,
    ) -> DbResult<WorkerOutcome> {
        let id = entry.resource_id.as_str();
        let won = if to == AttachmentStatus::ErrorAttaching {
            db.fail_attach(id, message).await?
        } else {
            db.fail_detach(id, message).await?
        };
        Ok(if won {
            WorkerOutcome::Done
        } else {
            WorkerOutcome::Lost
        })
    }

    fn set_failed(&mut self, to: AttachmentStatus, message: &str) {
        self.status = to;
        self.error_message = message.to_owned();
        self.updated_at_ms = now_ms();
    }
}
