//! What the manager and the reconciler both act through: the database, the
//! backend, the settler (status changes and their notifications), the in-flight
//! registry, the per-volume locks and the exports, with the few steps both take
//! (removing a leftover object, stopping an export nobody uses, settling an
//! attachment). A module below both, so neither imports the other.

use std::sync::{Arc, Mutex};

use scoria_common::{
    RequestContext,
    db::{AttachmentQuery, Db, DbResult},
    events::Event,
    model::{Attachment, AttachmentStatus, ConnectionInfo, Volume, VolumeStatus, now_ms},
    settle::Settler,
    sync::lock,
};

use crate::{
    driver::{ObjectKind, VolumeDriver},
    export::{ExportError, ExportManager},
    in_flight::InFlight,
    locks::VolumeLocks,
};

/// The state the manager and the reconciler share (cheap to clone).
#[derive(Clone)]
pub struct Shared {
    /// The database.
    pub(crate) db: Db,
    /// The backend.
    pub(crate) driver: Arc<dyn VolumeDriver>,
    /// The one settle path: compare-and-set, the copy, then the notification.
    pub(crate) settler: Settler,
    /// `host@backend`.
    pub(crate) host: String,
    /// The resources a handler works on right now (the reconciler leaves them be).
    pub(crate) in_flight: InFlight,
    /// One lock per volume: its attaches and detaches run one at a time.
    pub(crate) locks: Arc<VolumeLocks>,
    /// The NBD exports of attachments (None: this service attaches nothing).
    pub(crate) exports: Option<Arc<ExportManager>>,
    /// This member's own `host@backend` in a cluster (None: [`Shared::host`]):
    /// the export host of the attachments it exports.
    pub(crate) member: Option<String>,
    /// The backup target and engine (None: backups fail, saying so).
    pub(crate) backups: Option<Arc<crate::backup::BackupEngine>>,
    /// The other volume services (a migration's source), None: no migrations.
    pub(crate) peers: Option<Arc<dyn scoria_common::ops::VolumeOps>>,
}

// === impl Shared ===

impl Shared {
    /// The `host@backend` of the exports this process starts: its member
    /// identity in a cluster, else its host.
    pub(crate) fn export_host(&self) -> &str {
        self.member.as_deref().unwrap_or(&self.host)
    }

    /// Removes the backend object of a volume whose row is gone (best effort).
    pub(crate) async fn remove_leftover(&self, id: &str) {
        if let Err(err) = self.driver.delete_volume(id).await {
            tracing::warn!(volume_id = %id, %err, "cannot remove leftover backend object");
        }
    }

    /// Removes the backend object of a snapshot whose row is gone (best effort).
    pub(crate) async fn remove_leftover_snapshot(&self, id: &str) {
        if let Err(err) = self.driver.delete_snapshot(id).await {
            tracing::warn!(snapshot_id = %id, %err, "cannot remove leftover snapshot object");
        }
    }

    /// Removes the leftover backend object `id` of `kind` (best effort).
    pub(crate) async fn remove_leftover_object(&self, kind: ObjectKind, id: &str) {
        match kind {
            ObjectKind::Volume => self.remove_leftover(id).await,
            ObjectKind::Snapshot => self.remove_leftover_snapshot(id).await,
        }
    }

    /// `extending` -> `back_to` at `new_size` GiB (the compare-and-set also
    /// removes the worker entry); announces `volume.resize.end`. Whether it won.
    pub(crate) async fn settle_extended(
        &self,
        ctx: &RequestContext,
        volume: &mut Volume,
        new_size: u64,
        back_to: VolumeStatus,
    ) -> DbResult<bool> {
        let id = volume.id.clone();
        let finish = self.db.finish_extend_to(&id, new_size, back_to);
        let apply = |v: &mut Volume| {
            v.status = back_to;
            v.size_gib = new_size;
            v.error_message.clear();
            v.updated_at_ms = now_ms();
        };
        let event = Some(Event::VolumeResizeEnd);
        self.settler.settle(ctx, volume, finish, apply, event).await
    }

    /// Stops `attachment`'s export unless another active attachment of its volume
    /// uses it, in the same mode. Whether it stopped one. The caller holds the
    /// volume's lock.
    pub(crate) async fn unexport_if_unused(
        &self,
        attachment: &Attachment,
    ) -> Result<bool, ExportError> {
        let Some(exports) = &self.exports else {
            return Ok(false);
        };
        let users = self
            .db
            .list_attachments(&AttachmentQuery {
                volume_id: Some(attachment.volume_id.clone()),
                // Only the users of this process's export (a member's own).
                export_host: Some(self.export_host().to_owned()),
                statuses: AttachmentStatus::ACTIVE.to_vec(),
                ..Default::default()
            })
            .await;
        let users = match users {
            Ok(users) => users,
            Err(err) => {
                // Unknown: keep the export (a leftover is better than a cut client).
                tracing::warn!(%err, "cannot list the volume's attachments: export kept");
                return Ok(false);
            }
        };
        let shared = users
            .iter()
            .any(|a| a.id != attachment.id && a.mode == attachment.mode);
        if shared {
            tracing::info!(volume_id = %attachment.volume_id, "other attachments use the export: kept");
            return Ok(false);
        }
        exports
            .unexport(&attachment.volume_id, attachment.mode.is_read_only())
            .await
    }

    // === attachment settling (through the settler) ===

    /// `attaching` -> `attached` with `info` (the row read back is the copy);
    /// announces `volume.attach.end`. Whether it won.
    pub(crate) async fn settle_attached(
        &self,
        ctx: &RequestContext,
        attachment: &mut Attachment,
        info: &ConnectionInfo,
    ) -> DbResult<bool> {
        let id = attachment.id.clone();
        // The row read back by the compare-and-set becomes the copy.
        let row = Mutex::new(None);
        let cas = async {
            let attached = self.db.finish_attach(&id, info).await?;
            let won = attached.is_some();
            *lock(&row) = attached;
            Ok(won)
        };
        let apply = |a: &mut Attachment| {
            if let Some(row) = lock(&row).take() {
                *a = row;
            }
        };
        self.settler
            .settle(ctx, attachment, cas, apply, Some(Event::VolumeAttachEnd))
            .await
    }

    /// `detaching` -> gone (the row removed); announces `volume.detach.end`.
    /// Whether it won.
    pub(crate) async fn settle_detached(
        &self,
        ctx: &RequestContext,
        attachment: &mut Attachment,
    ) -> DbResult<bool> {
        let id = attachment.id.clone();
        let apply = |a: &mut Attachment| {
            a.status = AttachmentStatus::Detached;
            a.updated_at_ms = now_ms();
        };
        self.settler
            .settle(
                ctx,
                attachment,
                self.db.finish_detach(&id),
                apply,
                Some(Event::VolumeDetachEnd),
            )
            .await
    }

    /// `attaching` -> `error_attaching` (`to`), or `detaching` ->
    /// `error_detaching`, with `reason`; announces `volume.attach.error` or
    /// `volume.detach.error`. Whether it won.
    pub(crate) async fn settle_failed(
        &self,
        ctx: &RequestContext,
        attachment: &mut Attachment,
        to: AttachmentStatus,
        reason: &str,
    ) -> DbResult<bool> {
        let id = attachment.id.clone();
        let attaching = to == AttachmentStatus::ErrorAttaching;
        let cas = async {
            if attaching {
                self.db.fail_attach(&id, reason).await
            } else {
                self.db.fail_detach(&id, reason).await
            }
        };
        let event = if attaching {
            Event::VolumeAttachError
        } else {
            Event::VolumeDetachError
        };
        let apply = |a: &mut Attachment| {
            a.status = to;
            a.error_message = reason.to_owned();
            a.updated_at_ms = now_ms();
        };
        self.settler
            .settle(ctx, attachment, cas, apply, Some(event))
            .await
    }
}
