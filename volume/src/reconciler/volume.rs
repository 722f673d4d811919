//! Overdue volume work: creating, deleting, extending, reverting, managing, moving.

use scoria_common::{
    db::{AttachmentQuery, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{AttachmentStatus, Volume, VolumeStatus},
    service::overdue::Failure,
    settle::VolumeChange,
};
use scoria_proto::bus::{DeleteVolume, RevertToSnapshot};

use super::{Reconciler, ResolveError, Resolved};
use crate::driver::{GIB, ObjectKind};

impl Reconciler {
    pub(super) async fn volume(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let row = self.shared.db.get_volume(id).await?;
        let status = |v: &Volume| v.status.as_str();
        let Some(mut volume) = self.current(entry, ObjectKind::Volume, row, status).await else {
            return self.stale(entry).await;
        };
        let host = &self.shared.host;
        match volume.status {
            VolumeStatus::Creating => {
                let message =
                    format!("creation did not finish by its deadline (volume {id} on {host})");
                let failure = Failure {
                    to: VolumeStatus::Error,
                    message: &message,
                    event: Event::VolumeCreateError,
                };
                let outcome = self.fail(entry, &mut volume, failure).await?;
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
            VolumeStatus::Reverting => self.reverting(entry, volume).await,
            VolumeStatus::Managing => self.managing(entry, volume).await,
            VolumeStatus::Maintenance | VolumeStatus::Retyping => {
                let Some(migration) = self.shared.db.get_migration(id).await? else {
                    tracing::warn!(volume_id = %id, "overdue move without a migration row: left");
                    return Ok(Resolved::Skipped);
                };
                if !self.shared.is_my_host(&migration.dest_host) {
                    return Ok(Resolved::Skipped);
                }
                let why = format!(
                    "migrating volume {id} from {} to {host} did not finish by its deadline \
                     (the destination service stopped mid-copy?)",
                    migration.source_host
                );
                let won = self
                    .shared
                    .abort_migration(&Self::ctx(), &migration, &mut volume, &why)
                    .await?;
                Ok(if won {
                    Resolved::Failed
                } else {
                    Resolved::Skipped
                })
            }
            other => {
                tracing::warn!(volume_id = %id, status = %other, "overdue volume entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }

    /// An overdue adoption: finished if the object has the volume's name and
    /// size (the rename ran, its record did not), else `error_managing`; the
    /// object is left as it is either way (an adoption never deletes).
    async fn managing(
        &self,
        entry: &WorkerEntry,
        mut volume: Volume,
    ) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let adopted = self.adopted(ObjectKind::Volume, id, volume.size_gib).await;
        if adopted {
            let from = [VolumeStatus::Managing];
            let change = VolumeChange::new(&from, VolumeStatus::Available).error("");
            let won = self
                .shared
                .settler
                .volume(
                    &Self::ctx(),
                    &mut volume,
                    change,
                    Some(Event::VolumeManageEnd),
                )
                .await?;
            if won {
                tracing::info!(volume_id = %id, "overdue adoption was done on the backend: recorded");
                return Ok(Resolved::Finished);
            }
            return Ok(Resolved::Skipped);
        }
        let host = &self.shared.host;
        let message = format!(
            "adopting a backend object as volume {id} did not finish by its deadline on {host}; \
             the object keeps its name: manage it again"
        );
        let failure = Failure {
            to: VolumeStatus::ErrorManaging,
            message: &message,
            event: Event::VolumeManageError,
        };
        Ok(self.fail(entry, &mut volume, failure).await?.into())
    }

    /// Whether the `kind` object `id` is on the backend with `size_gib`.
    pub(super) async fn adopted(&self, kind: ObjectKind, id: &str, size_gib: u64) -> bool {
        match self.shared.driver.object_size(kind, id).await {
            Ok(bytes) => bytes == Some(size_gib * GIB),
            Err(err) => {
                tracing::warn!(id, %err, "cannot read the size of the backend object");
                false
            }
        }
    }

    /// An overdue revert: done again (the copy is idempotent) while its
    /// snapshot is still `restoring`, else the volume fails to `error`.
    async fn reverting(
        &self,
        entry: &WorkerEntry,
        mut volume: Volume,
    ) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        if let Some(snapshot_id) = self.shared.db.snapshot_restoring_into(id).await? {
            tracing::info!(volume_id = %id, snapshot_id = %snapshot_id, "revert overdue: reverting again");
            let request = RevertToSnapshot {
                volume_id: id.to_owned(),
                snapshot_id,
            };
            self.ops
                .revert_to_snapshot(&Self::ctx(), &self.shared.host, request)
                .await?;
            return Ok(Resolved::Redone);
        }
        let host = &self.shared.host;
        let message = format!(
            "reverting volume {id} did not finish by its deadline on {host}, and no snapshot is being restored into it"
        );
        let failure = Failure {
            to: VolumeStatus::Error,
            message: &message,
            event: Event::VolumeRevertError,
        };
        let outcome = self.fail(entry, &mut volume, failure).await?;
        Ok(outcome.into())
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
            let won = self
                .shared
                .settle_extended(&Self::ctx(), &mut volume, new_size, back_to)
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
        let failure = Failure {
            to: VolumeStatus::ErrorExtending,
            message: &message,
            event: Event::VolumeResizeError,
        };
        let outcome = self.fail(entry, &mut volume, failure).await?;
        if outcome == WorkerOutcome::Done {
            tracing::warn!(volume_id = %id, "extend overdue: volume set to error_extending");
        }
        Ok(outcome.into())
    }
}
