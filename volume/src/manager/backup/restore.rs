//! The manager's restore handlers: a backup into an existing volume of this
//! backend (`restore_backup`), or into a volume this service just created for
//! it (from `create.rs`).
//!
//! ```text
//!  restore_backup: backup not `restoring` into this volume, or the volume not
//!                  `restoring-backup` here ─▶ ack, logged
//!  a new volume:   created for a `restoring` backup ─▶ creating -> restoring-backup
//!  then            engine restore into the driver object (every chunk verified)
//!                      ok ──▶ volume available, backup available   backup.restore.end
//!                      failed ──▶ volume error (why), backup available, or error when
//!                                 its chunks are damaged (corrupt, missing)
//!                                                                  backup.restore.error
//! ```

use scoria_common::{
    RequestContext,
    db::{BackupChange, VolumeMove, WorkerKind, deadlines},
    events::Event,
    model::{Backup, BackupStatus, Volume, VolumeStatus},
    settle::VolumeChange,
};
use scoria_proto::bus::RestoreBackup;

use super::super::VolumeManager;
use crate::{
    backup::{BackupError, image},
    error::Result,
};

impl VolumeManager {
    pub(in crate::manager) async fn backup_restore(
        &self,
        ctx: &RequestContext,
        request: RestoreBackup,
    ) -> Result<()> {
        let id = request.backup_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(backup) = self.take_backup(id, BackupStatus::Restoring).await? else {
            return Ok(());
        };
        if backup.restore_volume_id.as_deref() != Some(request.volume_id.as_str()) {
            tracing::warn!(target = ?backup.restore_volume_id, asked = %request.volume_id, "backup restores into another volume: cast ignored");
            return Ok(());
        }
        let volume = self.shared.db.get_volume(&request.volume_id).await?;
        let Some(volume) = volume.filter(|v| {
            v.status == VolumeStatus::RestoringBackup
                && v.host.as_deref().is_some_and(|h| self.settings.is_mine(h))
        }) else {
            tracing::warn!(volume_id = %request.volume_id, "target volume is not restoring-backup here: cast ignored");
            return Ok(());
        };
        self.run_restore(ctx, backup, &volume.id).await
    }

    /// The volume `volume` was just made on the backend for `backup`, which is
    /// `restoring` into it: the volume goes `restoring-backup` (this service
    /// takes the backup's worker entry) and the restore runs.
    pub(in crate::manager) async fn restore_created(
        &self,
        ctx: &RequestContext,
        mut volume: Volume,
        backup: Backup,
    ) -> Result<()> {
        let host = self.settings.host.clone();
        let _busy = self.shared.in_flight.enter(&backup.id);
        let moved = self
            .shared
            .settler
            .volume(
                ctx,
                &mut volume,
                VolumeChange::new(&[VolumeStatus::Creating], VolumeStatus::RestoringBackup)
                    .host(&host)
                    .error(""),
                None,
            )
            .await?;
        if !moved {
            tracing::info!("volume changed before the restore: left as it is");
            return Ok(());
        }
        self.shared
            .db
            .claim_worker(
                WorkerKind::Backup,
                &backup.id,
                BackupStatus::Restoring.as_str(),
                &host,
                deadlines::from_now(deadlines::BACKUP),
            )
            .await?;
        self.run_restore(ctx, backup, &volume.id).await
    }

    /// A create cast delivered again for a volume already `restoring-backup`
    /// here (its first delivery died mid-restore): the restore runs again.
    pub(in crate::manager) async fn resume_restore(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
    ) -> Result<bool> {
        let Some(backup) = self.shared.db.backup_restoring_into(volume_id).await? else {
            return Ok(false);
        };
        let _busy = self.shared.in_flight.enter(&backup.id);
        tracing::info!(backup_id = %backup.id, "restore interrupted: running it again");
        self.run_restore(ctx, backup, volume_id).await?;
        Ok(true)
    }

    /// Restores `backup` into volume `volume_id` (`restoring-backup` here) and
    /// settles both.
    async fn run_restore(
        &self,
        ctx: &RequestContext,
        mut backup: Backup,
        volume_id: &str,
    ) -> Result<()> {
        let id = backup.id.clone();
        let settler = &self.shared.settler;
        settler.announce(ctx, Event::BackupRestoreStart, &backup);
        let restored = match self.backup_engine() {
            Ok(engine) => image::restore_into_volume(
                engine,
                &id,
                self.shared.driver.as_ref(),
                volume_id,
                engine.scratch(),
            )
            .await
            .map_err(Some),
            Err(why) => {
                tracing::error!(%why, "cannot restore");
                Err(None)
            }
        };
        let from = [BackupStatus::Restoring];
        let (to, message, event) = match &restored {
            Ok(stats) => {
                tracing::info!(
                    chunks = stats.chunks,
                    fetched_bytes = stats.fetched_bytes,
                    "backup restored"
                );
                (
                    BackupStatus::Available,
                    String::new(),
                    Event::BackupRestoreEnd,
                )
            }
            Err(err) => {
                let why = match err {
                    Some(err) => err.to_string(),
                    None => format!("volume service {} has no backup target", self.settings.host),
                };
                let message =
                    format!("restoring backup {id} into volume {volume_id} failed: {why}");
                tracing::error!(%message, "restore failed");
                // Damaged chunks make the backup itself unusable: it says so.
                let damaged = matches!(
                    err,
                    Some(
                        BackupError::Corrupt { .. }
                            | BackupError::MissingChunk { .. }
                            | BackupError::ManifestMissing { .. }
                            | BackupError::BadManifest { .. }
                    )
                );
                let to = if damaged {
                    BackupStatus::Error
                } else {
                    BackupStatus::Available
                };
                (to, message, Event::BackupRestoreError)
            }
        };
        let volume = VolumeMove {
            id: volume_id,
            from: &[VolumeStatus::RestoringBackup],
            to: if restored.is_ok() {
                VolumeStatus::Available
            } else {
                VolumeStatus::Error
            },
            error_message: Some(&message),
        };
        let change = BackupChange::new(&from, to)
            .error(&message)
            .restore_volume(None)
            .volume(volume);
        settler
            .backup(ctx, &mut backup, change, Some(event))
            .await?;
        Ok(())
    }

    /// The volume `volume_id` a `restoring` backup was to be restored into
    /// could not be created: the backup is available again, saying why.
    pub(in crate::manager) async fn restore_target_failed(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        why: &str,
    ) -> Result<()> {
        let Some(mut backup) = self.shared.db.backup_restoring_into(volume_id).await? else {
            return Ok(());
        };
        let message = format!("restoring backup {} failed: {why}", backup.id);
        let change = BackupChange::new(&[BackupStatus::Restoring], BackupStatus::Available)
            .error(&message)
            .restore_volume(None);
        self.shared
            .settler
            .backup(ctx, &mut backup, change, Some(Event::BackupRestoreError))
            .await?;
        Ok(())
    }
}
