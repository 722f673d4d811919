//! Overdue backup work: creating, deleting, restoring. A backup entry the
//! scheduler owns (a restore into a new volume no volume service claimed yet)
//! is settled by whichever volume service's reconciler sees it first: it is
//! pure database work, by compare-and-set.

use scoria_common::{
    db::{BackupChange, VolumeMove, WorkerEntry, WorkerOutcome},
    events::Event,
    model::{Backup, BackupStatus, VolumeStatus},
    service::overdue::Failure,
};
use scoria_proto::bus::DeleteBackup;

use super::{Reconciler, ResolveError, Resolved};

impl Reconciler {
    pub(super) async fn backup(&self, entry: &WorkerEntry) -> Result<Resolved, ResolveError> {
        let id = entry.resource_id.as_str();
        let row = self.shared.db.get_backup(id).await?;
        let Some(mut backup) = row.filter(|b| b.status.as_str() == entry.status) else {
            return self.stale(entry).await;
        };
        let host = &self.shared.host;
        match backup.status {
            BackupStatus::Creating => {
                // Whatever it stored goes first, so no chunk is orphaned.
                if let Some(engine) = &self.shared.backups
                    && let Err(err) = engine.delete(id).await
                {
                    tracing::warn!(backup_id = %id, %err, "cannot release the chunks of an overdue backup yet");
                    return Ok(Resolved::Skipped);
                }
                // A temporary snapshot of an in-use volume is named after the backup.
                self.shared.remove_leftover_snapshot(id).await;
                let message = format!(
                    "creation did not finish by its deadline (backup {id} on {host}): what it stored was released"
                );
                let failure = Failure {
                    to: BackupStatus::Error,
                    message: &message,
                    event: Event::BackupCreateError,
                };
                let outcome = self.fail(entry, &mut backup, failure).await?;
                if outcome == WorkerOutcome::Done {
                    tracing::warn!(backup_id = %id, "backup overdue: set to error");
                    self.shared
                        .db
                        .transition_volume_with_worker(
                            &backup.volume_id,
                            &[VolumeStatus::BackingUp],
                            VolumeStatus::Available,
                            None,
                            None,
                            None,
                        )
                        .await?;
                }
                Ok(outcome.into())
            }
            BackupStatus::Deleting => {
                tracing::info!(backup_id = %id, "backup deletion overdue: deleting again");
                self.ops
                    .delete_backup(
                        &Self::ctx(),
                        host,
                        DeleteBackup {
                            backup_id: id.to_owned(),
                        },
                    )
                    .await?;
                Ok(Resolved::Redone)
            }
            BackupStatus::Restoring => self.restore_overdue(&mut backup).await,
            other => {
                tracing::warn!(backup_id = %id, status = %other, "overdue backup entry in a status the reconciler does not settle");
                Ok(Resolved::Skipped)
            }
        }
    }

    /// A restore past its deadline: the target volume (still
    /// `restoring-backup`) goes to error, the backup back to available. A new
    /// volume still being created is left to its create (it settles the
    /// backup either way).
    async fn restore_overdue(&self, backup: &mut Backup) -> Result<Resolved, ResolveError> {
        let id = backup.id.clone();
        let target = backup.restore_volume_id.clone().unwrap_or_default();
        let volume = self.shared.db.get_volume(&target).await?;
        if volume
            .as_ref()
            .is_some_and(|v| v.status == VolumeStatus::Creating)
        {
            return Ok(Resolved::Skipped);
        }
        let message =
            format!("restoring backup {id} into volume {target} did not finish by its deadline");
        let change = BackupChange::new(&[BackupStatus::Restoring], BackupStatus::Available)
            .error(&message)
            .restore_volume(None)
            .volume(VolumeMove {
                id: &target,
                from: &[VolumeStatus::RestoringBackup],
                to: VolumeStatus::Error,
                error_message: Some(&message),
            });
        let won = self
            .shared
            .settler
            .backup(
                &Self::ctx(),
                backup,
                change,
                Some(Event::BackupRestoreError),
            )
            .await?;
        if won {
            tracing::warn!(backup_id = %id, volume_id = %target, "restore overdue: volume set to error, backup available");
            Ok(Resolved::Failed)
        } else {
            Ok(Resolved::Skipped)
        }
    }
}
