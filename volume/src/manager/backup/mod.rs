//! The manager's backup handlers. The API wrote the backup row (`creating`, or
//! moved it to `deleting` or `restoring`) with a worker entry before casting;
//! these do the data work through the backup engine (`crate::backup`) and
//! settle the rows. Idempotent, for a redelivered cast:
//!
//! ```text
//!  create_backup:  row gone / not `creating` / another host's ─▶ ack, logged
//!                  volume in-use (force) ─▶ temporary snapshot, read that
//!                  driver object ─▶ raw ─▶ engine.backup (parent's manifest if incremental)
//!                      ok ──▶ creating -> available (object_count, stored_bytes),
//!                             volume backing-up -> available   backup.create.end
//!                      failed ──▶ its chunk references released (engine.delete),
//!                             creating -> error (why), volume back   backup.create.error
//!  delete_backup:  row gone / not `deleting` ─▶ ack, logged (any volume service
//!                  may delete: the target is shared)
//!                  engine.delete (manifest, then the chunks no backup shares)
//!                      ok ──▶ row removed (quota usage with it)   backup.delete.end
//!                      failed ──▶ deleting -> error_deleting (why) backup.delete.error
//!  restore_backup: see `restore.rs`
//! ```

mod restore;

use std::sync::Arc;

use scoria_common::{
    RequestContext,
    db::{BackupChange, VolumeMove, WorkerKind},
    events::Event,
    model::{Backup, BackupStatus, VolumeStatus},
};
use scoria_proto::bus::{CreateBackup, DeleteBackup};

use super::VolumeManager;
use crate::{
    backup::{BackupEngine, BackupStats, image},
    driver::ObjectKind,
    error::Result,
};

impl VolumeManager {
    /// The engine, or why this service cannot back up.
    fn backup_engine(&self) -> std::result::Result<&Arc<BackupEngine>, String> {
        self.shared
            .backups
            .as_ref()
            .ok_or_else(|| format!("volume service {} has no backup target", self.settings.host))
    }

    /// The backup a cast asks this service to work on, claimed for it, if its
    /// row still asks for that work (`wanted`); otherwise `None` (redelivered or
    /// stale casts are logged and acked). A create must be this service's; a
    /// delete or a restore may be any service's (the target is shared).
    async fn take_backup(&self, id: &str, wanted: BackupStatus) -> Result<Option<Backup>> {
        let Some(backup) = self.shared.db.get_backup(id).await? else {
            tracing::info!(%wanted, "backup row gone: cast ignored");
            return Ok(None);
        };
        if backup.status != wanted {
            tracing::warn!(status = %backup.status, %wanted, "backup is not in the status the cast asks for: cast ignored");
            return Ok(None);
        }
        let mine = backup
            .host
            .as_deref()
            .is_none_or(|h| self.settings.is_mine(h));
        if wanted == BackupStatus::Creating && !mine {
            tracing::warn!(host = ?backup.host, "backup belongs to another volume service: cast ignored");
            return Ok(None);
        }
        self.claim(WorkerKind::Backup, id, wanted.as_str()).await?;
        Ok(Some(backup))
    }

    pub(super) async fn backup_create(
        &self,
        ctx: &RequestContext,
        request: CreateBackup,
    ) -> Result<()> {
        let id = request.backup_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut backup) = self.take_backup(id, BackupStatus::Creating).await? else {
            return Ok(());
        };
        let settler = &self.shared.settler;
        settler.announce(ctx, Event::BackupCreateStart, &backup);
        // A volume held `backing-up` goes back (an in-use one never moved).
        let volume_id = backup.volume_id.clone();
        let volume = VolumeMove {
            id: &volume_id,
            from: &[VolumeStatus::BackingUp],
            to: VolumeStatus::Available,
            error_message: None,
        };
        match self.write_backup(&backup).await {
            Ok(stats) => {
                let change = BackupChange::new(&[BackupStatus::Creating], BackupStatus::Available)
                    .stats(stats.written_chunks, stats.stored_bytes)
                    .error("")
                    .volume(volume);
                if settler
                    .backup(ctx, &mut backup, change, Some(Event::BackupCreateEnd))
                    .await?
                {
                    tracing::info!(
                        chunks = stats.chunks,
                        written = stats.written_chunks,
                        unchanged = stats.unchanged_chunks,
                        zero = stats.zero_chunks,
                        stored_bytes = stats.stored_bytes,
                        "backup created"
                    );
                } else {
                    tracing::info!("backup settled by someone else first");
                }
            }
            Err(message) => {
                tracing::error!(%message, "backup failed");
                let message = self.release_failed(id, message).await;
                let change = BackupChange::new(&[BackupStatus::Creating], BackupStatus::Error)
                    .error(&message)
                    .volume(volume);
                settler
                    .backup(ctx, &mut backup, change, Some(Event::BackupCreateError))
                    .await?;
            }
        }
        Ok(())
    }

    /// Drops what a failed backup `id` stored (its manifest and the chunks no
    /// other backup shares), so nothing is orphaned; `message` says why it
    /// failed, and that too if the clean-up failed.
    pub(crate) async fn release_failed(&self, id: &str, message: String) -> String {
        let Ok(engine) = self.backup_engine() else {
            return message;
        };
        match engine.delete(id).await {
            Ok(_) => message,
            Err(err) => {
                tracing::error!(%err, "cannot release the chunks of a failed backup");
                format!("{message} (and releasing its chunks failed: {err})")
            }
        }
    }

    /// Reads the volume of `backup` (through a temporary snapshot when it is
    /// in use) and stores it; why not, as the row's message.
    async fn write_backup(&self, backup: &Backup) -> std::result::Result<BackupStats, String> {
        let engine = self.backup_engine()?;
        let id = backup.id.as_str();
        let volume_id = backup.volume_id.as_str();
        let failed = |what: &str, err: &dyn std::fmt::Display| {
            format!("backup {id} of volume {volume_id}: {what} failed: {err}")
        };
        let parent = match &backup.parent_id {
            Some(parent) => Some(
                engine
                    .manifest(parent)
                    .await
                    .map_err(|e| failed("reading the parent's manifest", &e))?,
            ),
            None => None,
        };
        let volume = self
            .shared
            .db
            .get_volume(volume_id)
            .await
            .map_err(|e| failed("reading the volume", &e))?
            .ok_or_else(|| format!("backup {id}: volume {volume_id} is gone"))?;
        let driver = self.shared.driver.as_ref();
        let scratch = engine.scratch();
        // An in-use volume changes under us: read a snapshot of it instead (its
        // object is named after the backup, so a leftover is found again).
        let in_use = volume.status == VolumeStatus::InUse;
        let source = if in_use {
            driver
                .create_snapshot(id, volume_id)
                .await
                .map_err(|e| failed("the temporary snapshot", &e))?;
            image::raw_source(driver, ObjectKind::Snapshot, id, scratch).await
        } else {
            image::raw_source(driver, ObjectKind::Volume, volume_id, scratch).await
        };
        let stored = match source {
            Ok(source) => engine
                .backup(id, volume_id, source.path(), parent.as_ref())
                .await
                .map_err(|e| failed("storing", &e)),
            Err(err) => Err(failed("reading the volume's bytes", &err)),
        };
        if in_use {
            self.shared.remove_leftover_snapshot(id).await;
        }
        stored
    }

    pub(super) async fn backup_delete(
        &self,
        ctx: &RequestContext,
        request: DeleteBackup,
    ) -> Result<()> {
        let id = request.backup_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(mut backup) = self.take_backup(id, BackupStatus::Deleting).await? else {
            return Ok(());
        };
        let settler = &self.shared.settler;
        settler.announce(ctx, Event::BackupDeleteStart, &backup);
        let deleted = match self.backup_engine() {
            Ok(engine) => engine.delete(id).await.map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        match deleted {
            Ok(stats) => {
                tracing::info!(
                    deleted_chunks = stats.deleted_chunks,
                    "backup deleted from the target"
                );
                let removed = self.shared.db.delete_backup_row(id);
                self.settle_removed(ctx, &mut backup, removed, Event::BackupDeleteEnd)
                    .await
            }
            Err(err) => {
                let message = format!("deleting backup {id} failed: {err}");
                tracing::error!(%message, "backup delete failed");
                let change =
                    BackupChange::new(&[BackupStatus::Deleting], BackupStatus::ErrorDeleting)
                        .error(&message);
                settler
                    .backup(ctx, &mut backup, change, Some(Event::BackupDeleteError))
                    .await?;
                Ok(())
            }
        }
    }
}
