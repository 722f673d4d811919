//! Overdue volume work: creating, deleting, extending.

use std::sync::Mutex;

use scoria_common::{
    db::{AttachmentQuery, DbResult, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{AttachmentStatus, Volume, VolumeStatus, now_ms},
    sync::lock,
};
use scoria_proto::bus::DeleteVolume;

use super::{Reconciler, ResolveError, Resolved};
use crate::driver::{GIB, ObjectKind};

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
                let mut volume = volume;
                let outcome = self
                    .fail_volume(
                        entry,
                        &mut volume,
                        VolumeStatus::Error,
                        &message,
                        Event::VolumeCreateError,
                    )
                    .await?;
                if outcome == WorkerOutcome::Done {
                    tracing::warn!(volume_id = %id, "creation overdue: volume set to error");
                    self.shared.remove_leftover(id).await;
                }
                Ok(outcome.into())
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
            VolumeStatus::Extending => self.extending(entry, volume).await,
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
        mut volume: Volume,
    ) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let size_gib = volume.size_gib;
        let db = &self.shared.db;
        // The backend object's virtual size, in whole GiB (a volume's sizes are).
        let object_gib = match self.shared.driver.object_size(ObjectKind::Volume, id).await {
            Ok(bytes) => bytes.filter(|b| b % GIB == 0).map(|b| b / GIB),
            Err(err) => {
                tracing::warn!(volume_id = %id, %err, "cannot read the size of the backend object");
                None
            }
        };
        if let Some(new_size) = object_gib.filter(|gib| *gib > size_gib) {
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
            let finish = db.finish_extend_to(id, new_size, back_to);
            let apply = |v: &mut Volume| {
                v.status = back_to;
                v.size_gib = new_size;
                v.error_message.clear();
                v.updated_at_ms = now_ms();
            };
            let won = self
                .shared
                .settler
                .settle(
                    &Self::ctx(),
                    &mut volume,
                    finish,
                    apply,
                    Some(Event::VolumeResizeEnd),
                )
                .await?;
            if won {
                tracing::info!(volume_id = %id, new_size_gib = new_size, "overdue extend was done on the backend: recorded");
                return Ok(Resolved::Finished);
            }
            return Ok(Resolved::Skipped);
        }
        let host = &self.shared.host;
        let message = format!(
            "extending volume {id} did not finish by its deadline on {host}; the volume keeps {size_gib} GiB"
        );
        let outcome = self
            .fail_volume(
                entry,
                &mut volume,
                VolumeStatus::ErrorExtending,
                &message,
                Event::VolumeResizeError,
            )
            .await?;
        if outcome == WorkerOutcome::Done {
            tracing::warn!(volume_id = %id, "extend overdue: volume set to error_extending");
        }
        Ok(outcome.into())
    }

    /// Fails `entry`'s volume (the copy `volume`) to `to` with `message` through
    /// the settler: the worker-entry compare-and-set, then the copy, then `event`.
    async fn fail_volume(
        &self,
        entry: &WorkerEntry,
        volume: &mut Volume,
        to: VolumeStatus,
        message: &str,
        event: Event,
    ) -> DbResult<WorkerOutcome> {
        let outcome = Mutex::new(WorkerOutcome::Lost);
        let cas = async {
            let done = self
                .shared
                .db
                .fail_volume_worker(entry, to, message)
                .await?;
            *lock(&outcome) = done;
            Ok::<_, scoria_common::db::DbError>(done == WorkerOutcome::Done)
        };
        let apply = |v: &mut Volume| {
            v.status = to;
            v.error_message = message.to_owned();
            v.updated_at_ms = now_ms();
        };
        self.shared
            .settler
            .settle(&Self::ctx(), volume, cas, apply, Some(event))
            .await?;
        Ok(*lock(&outcome))
    }
}
