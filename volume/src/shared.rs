//! What the manager and the reconciler both act through: the database, the
//! backend, the settler (status changes and their notifications), the in-flight registry, the per-volume locks and
//! the exports, with the few steps both take (removing a leftover object,
//! stopping an export nobody uses). A module below both, so neither imports the
//! other.

use std::sync::Arc;

use crate::{
    driver::VolumeDriver,
    export::{ExportError, ExportManager},
    in_flight::InFlight,
    locks::VolumeLocks,
};
use scoria_common::{
    db::{AttachmentQuery, Db},
    model::{Attachment, AttachmentStatus},
    settle::Settler,
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
}

impl Shared {
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
}
