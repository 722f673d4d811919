//! Overdue volume work: creating, deleting, extending.

use scoria_common::{
    db::{AttachmentQuery, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{AttachmentStatus, VolumeStatus},
};
use scoria_proto::bus::DeleteVolume;

use super::{Reconciler, ResolveError, Resolved};
use crate::driver::{GIB, VolumeDriver};

impl Reconciler {
    pub(super) async fn volume(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = &self.shared.db;
        let Some(volume) = db.get_volume(id).await? else {
            if matches!(entry.status.as_str(), "creating" | "deleting") {
                self.shared.remove_leftover(id).await;
            }
            return self.stale(entry).await;
        };
        if volume.status.as_str() != entry.status {
            return self.stale(entry).await;
        }
        let host = &self.shared.host;
        match volume.status {
            VolumeStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (volume {id} on {host})");
                match db
                    .fail_volume_worker(entry, VolumeStatus::Error, &message)
                    .await?
                {
                    WorkerOutcome::Done => {
                        tracing::warn!(volume_id = %id, "creation overdue: volume set to error");
                        self.shared.remove_leftover(id).await;
                        let mut failed = volume;
                        failed.status = VolumeStatus::Error;
                        failed.error_message = message;
                        self.shared.settler.announce(
                            &Self::ctx(),
                            Event::VolumeCreateError,
                            &failed,
                        );
                        Ok(Resolved::Failed)
                    }
                    WorkerOutcome::Stale => Ok(Resolved::Stale),
                    WorkerOutcome::Lost => Ok(Resolved::Skipped),
                }
            }
            VolumeStatus::Deleting => {
                tracing::info!(volume_id = %id, "deletion overdue: deleting again");
                self.ops
                    .delete_volume(
                        &Self::ctx(),
                        &self.shared.host,
                        DeleteVolume {
                            volume_id: id.to_owned(),
                        },
                    )
                    .await?;
                Ok(Resolved::Redone)
            }
            VolumeStatus::Extending => self.extending(entry, volume.size_gib).await,
            other => {
                tracing::warn!(volume_id = %id, status = %other, "overdue volume entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }

    /// An overdue extend: finished if the backend object is bigger than the row
    /// says (the extend ran, its record did not), else `error_extending`.
    async fn extending(
        &self,
        entry: &WorkerEntry,
        size_gib: u64,
    ) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let db = &self.shared.db;
        let bytes = object_bytes(self.shared.driver.as_ref(), id).await;
        if let Some(bytes) = bytes
            && bytes % GIB == 0
            && bytes / GIB > size_gib
        {
            let attached = db
                .list_attachments(&AttachmentQuery {
                    volume_id: Some(id.to_owned()),
                    statuses: AttachmentStatus::ACTIVE.to_vec(),
                    ..Default::default()
                })
                .await?;
            let back_to = if attached.is_empty() {
                VolumeStatus::Available
            } else {
                VolumeStatus::InUse
            };
            let new_size = bytes / GIB;
            if db.finish_extend(id, new_size, back_to).await? {
                tracing::info!(volume_id = %id, new_size_gib = new_size, "overdue extend was done on the backend: recorded");
                if let Some(volume) = db.get_volume(id).await? {
                    self.shared
                        .settler
                        .announce(&Self::ctx(), Event::VolumeResizeEnd, &volume);
                }
                return Ok(Resolved::Finished);
            }
            return Ok(Resolved::Skipped);
        }
        let host = &self.shared.host;
        let message = format!(
            "extending volume {id} did not finish by its deadline on {host}; the volume keeps {size_gib} GiB"
        );
        match db
            .fail_volume_worker(entry, VolumeStatus::ErrorExtending, &message)
            .await?
        {
            WorkerOutcome::Done => {
                tracing::warn!(volume_id = %id, "extend overdue: volume set to error_extending");
                if let Some(volume) = db.get_volume(id).await? {
                    self.shared
                        .settler
                        .announce(&Self::ctx(), Event::VolumeResizeError, &volume);
                }
                Ok(Resolved::Failed)
            }
            WorkerOutcome::Stale => Ok(Resolved::Stale),
            WorkerOutcome::Lost => Ok(Resolved::Skipped),
        }
    }
}

/// The virtual size of volume `id`'s backend object in bytes, if it can be read
/// (a raw file's length, a qcow2 header's size field).
async fn object_bytes(driver: &dyn VolumeDriver, id: &str) -> Option<u64> {
    let path = driver.volume_path(id).ok()?;
    match driver.format() {
        "raw" => tokio::fs::metadata(&path).await.ok().map(|m| m.len()),
        "qcow2" => {
            use tokio::io::AsyncReadExt;
            let mut header = [0u8; 32];
            let mut file = tokio::fs::File::open(&path).await.ok()?;
            file.read_exact(&mut header).await.ok()?;
            if &header[..4] != b"QFI\xfb" {
                return None;
            }
            let mut size = [0u8; 8];
            size.copy_from_slice(&header[24..32]);
            Some(u64::from_be_bytes(size))
        }
        _ => None,
    }
}
