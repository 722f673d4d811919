//! Notifications: the event names (one enum, in this one file) and the port
//! through which every service announces them ([`Notifications`]), implemented by
//! the bus's [`Notifier`] and by the recorder in `scoria_common::testing`.
//!
//! Event types follow Cinder's: `<resource>.<action>.start|end|error`, the
//! `.error` ones at priority ERROR. A status change that fails an operation,
//! wherever it happens (volume service, reconciler, scheduler, reaper, the API's
//! compensation), announces the operation's `.error` event.

use crate::{
    context::RequestContext,
    model::{Attachment, Backup, Snapshot, Transfer, Volume},
    rpc::{Notifier, Priority},
};
use scoria_proto::v1 as pb;

macro_rules! events {
    ($($(#[doc = $doc:expr])* $variant:ident => $text:literal,)*) => {
        /// A notification's event type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Event {
            /// Every event.
            pub const ALL: &[Event] = &[$(Event::$variant,)*];

            /// The event type as published (`volume.create.end`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Event::$variant => $text,)*
                }
            }
        }
    };
}

events! {
    /// A volume service started creating a volume.
    VolumeCreateStart => "volume.create.start",
    /// A volume is available.
    VolumeCreateEnd => "volume.create.end",
    /// A create failed (the volume is `error`).
    VolumeCreateError => "volume.create.error",
    /// A volume service started deleting a volume.
    VolumeDeleteStart => "volume.delete.start",
    /// A volume is gone.
    VolumeDeleteEnd => "volume.delete.end",
    /// A delete failed (the volume is `error_deleting`).
    VolumeDeleteError => "volume.delete.error",
    /// A volume service started growing a volume.
    VolumeResizeStart => "volume.resize.start",
    /// A volume has its new size.
    VolumeResizeEnd => "volume.resize.end",
    /// An extend failed (the volume is `error_extending`).
    VolumeResizeError => "volume.resize.error",
    /// A volume service started exporting a volume for an attachment.
    VolumeAttachStart => "volume.attach.start",
    /// An attachment is `attached`.
    VolumeAttachEnd => "volume.attach.end",
    /// An attach failed (the attachment is `error_attaching`).
    VolumeAttachError => "volume.attach.error",
    /// A volume service started ending an attachment.
    VolumeDetachStart => "volume.detach.start",
    /// An attachment is gone.
    VolumeDetachEnd => "volume.detach.end",
    /// A detach failed (the attachment is `error_detaching`).
    VolumeDetachError => "volume.detach.error",
    /// A volume service started a snapshot.
    SnapshotCreateStart => "snapshot.create.start",
    /// A snapshot is available.
    SnapshotCreateEnd => "snapshot.create.end",
    /// A snapshot failed (it is `error`).
    SnapshotCreateError => "snapshot.create.error",
    /// A volume service started deleting a snapshot.
    SnapshotDeleteStart => "snapshot.delete.start",
    /// A snapshot is gone.
    SnapshotDeleteEnd => "snapshot.delete.end",
    /// A snapshot delete failed (it is `error_deleting`).
    SnapshotDeleteError => "snapshot.delete.error",
    /// A volume service started writing a backup.
    BackupCreateStart => "backup.create.start",
    /// A backup is available.
    BackupCreateEnd => "backup.create.end",
    /// A backup failed (it is `error`).
    BackupCreateError => "backup.create.error",
    /// A volume service started deleting a backup.
    BackupDeleteStart => "backup.delete.start",
    /// A backup is gone.
    BackupDeleteEnd => "backup.delete.end",
    /// A backup delete failed (it is `error_deleting`).
    BackupDeleteError => "backup.delete.error",
    /// A volume service started restoring a backup.
    BackupRestoreStart => "backup.restore.start",
    /// A restore finished (the target volume is available).
    BackupRestoreEnd => "backup.restore.end",
    /// A restore failed (the target volume is `error`).
    BackupRestoreError => "backup.restore.error",
    /// A volume is being offered for transfer.
    TransferCreateStart => "transfer.create.start",
    /// A volume is `awaiting-transfer`.
    TransferCreateEnd => "transfer.create.end",
    /// An offer failed.
    TransferCreateError => "transfer.create.error",
    /// A project is accepting a transfer.
    TransferAcceptStart => "transfer.accept.start",
    /// The volume is the receiving project's.
    TransferAcceptEnd => "transfer.accept.end",
    /// An accept failed (a wrong key, over quota).
    TransferAcceptError => "transfer.accept.error",
    /// An offer is being withdrawn (or lapsed).
    TransferDeleteStart => "transfer.delete.start",
    /// The offer is gone and its volume available again.
    TransferDeleteEnd => "transfer.delete.end",
    /// A withdrawal failed.
    TransferDeleteError => "transfer.delete.error",
    /// A volume service started rolling a volume back to a snapshot.
    VolumeRevertStart => "volume.revert.start",
    /// A volume holds its snapshot's bytes again (available).
    VolumeRevertEnd => "volume.revert.end",
    /// A revert failed (the volume is `error`).
    VolumeRevertError => "volume.revert.error",
    /// A retype started (the volume is `retyping`).
    VolumeRetypeStart => "volume.retype.start",
    /// A retype finished (the volume has its new type).
    VolumeRetypeEnd => "volume.retype.end",
    /// A retype failed (the volume kept its type; see `migration_error`).
    VolumeRetypeError => "volume.retype.error",
    /// A migration started copying (the volume is `maintenance` or `retyping`).
    VolumeMigrateStart => "volume.migrate.start",
    /// A migration finished (the volume is on its new host).
    VolumeMigrateEnd => "volume.migrate.end",
    /// A migration failed (the volume stayed; see `migration_error`).
    VolumeMigrateError => "volume.migrate.error",
    /// An existing backend object is being adopted as a volume (`managing`).
    VolumeManageStart => "volume.manage_existing.start",
    /// The object is a volume now (available).
    VolumeManageEnd => "volume.manage_existing.end",
    /// Adopting it failed (the volume is `error_managing`).
    VolumeManageError => "volume.manage_existing.error",
    /// A volume is being forgotten, its backend object kept.
    VolumeUnmanageStart => "volume.unmanage.start",
    /// The volume's row is gone; its object stays on the backend.
    VolumeUnmanageEnd => "volume.unmanage.end",
    /// An existing backend object is being adopted as a snapshot (`managing`).
    SnapshotManageStart => "snapshot.manage_existing.start",
    /// The object is a snapshot now (available).
    SnapshotManageEnd => "snapshot.manage_existing.end",
    /// Adopting it failed (the snapshot is `error_managing`).
    SnapshotManageError => "snapshot.manage_existing.error",
    /// A snapshot is being forgotten, its backend object kept.
    SnapshotUnmanageStart => "snapshot.unmanage.start",
    /// The snapshot's row is gone; its object stays on the backend.
    SnapshotUnmanageEnd => "snapshot.unmanage.end",
}

impl Event {
    /// ERROR for the `.error` events, INFO for the others.
    pub fn priority(self) -> Priority {
        if self.as_str().ends_with(".error") {
            Priority::Error
        } else {
            Priority::Info
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A volume.
    Volume(&'a Volume),
    /// A snapshot.
    Snapshot(&'a Snapshot),
    /// An attachment.
    Attachment(&'a Attachment),
    /// A backup.
    Backup(&'a Backup),
    /// A transfer.
    Transfer(&'a Transfer),
}

impl<'a> From<&'a Volume> for Payload<'a> {
    fn from(volume: &'a Volume) -> Self {
        Payload::Volume(volume)
    }
}

impl<'a> From<&'a Snapshot> for Payload<'a> {
    fn from(snapshot: &'a Snapshot) -> Self {
        Payload::Snapshot(snapshot)
    }
}

impl<'a> From<&'a Backup> for Payload<'a> {
    fn from(backup: &'a Backup) -> Self {
        Payload::Backup(backup)
    }
}

impl<'a> From<&'a Transfer> for Payload<'a> {
    fn from(transfer: &'a Transfer) -> Self {
        Payload::Transfer(transfer)
    }
}

impl<'a> From<&'a Attachment> for Payload<'a> {
    fn from(attachment: &'a Attachment) -> Self {
        Payload::Attachment(attachment)
    }
}

/// Where a service's notifications go. Best effort and off the operation's path:
/// `announce` never waits for the broker and never fails the operation.
pub trait Notifications: Send + Sync {
    /// Announces `event` about `payload`, at the event's priority.
    fn announce(&self, ctx: &RequestContext, event: Event, payload: Payload<'_>);
}

impl Notifications for Notifier {
    fn announce(&self, ctx: &RequestContext, event: Event, payload: Payload<'_>) {
        let (priority, name) = (event.priority(), event.as_str());
        match payload {
            Payload::Volume(v) => self.emit(ctx, priority, name, &pb::Volume::from(v)),
            Payload::Snapshot(s) => self.emit(ctx, priority, name, &pb::Snapshot::from(s)),
            Payload::Attachment(a) => self.emit(ctx, priority, name, &pb::Attachment::from(a)),
            Payload::Backup(b) => self.emit(ctx, priority, name, &pb::Backup::from(b)),
            Payload::Transfer(t) => self.emit(ctx, priority, name, &pb::Transfer::from(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_unique_and_error_events_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for event in Event::ALL {
            assert!(seen.insert(event.as_str()), "{event} twice");
            let parts: Vec<_> = event.as_str().split('.').collect();
            assert_eq!(parts.len(), 3, "{event}");
            assert!(["start", "end", "error"].contains(&parts[2]), "{event}");
            assert_eq!(
                event.priority() == Priority::Error,
                parts[2] == "error",
                "{event}"
            );
        }
    }
}
