//! RestoreBackup: into an existing available volume at least as large, or into
//! a new volume of the backup's size made through the normal create path.
//!
//! ```text
//!  into volume V:  backup available + V available (same project, big enough)
//!                    ─CAS both, one txn─▶ backup restoring (target V), V restoring-backup
//!                    ─cast restore_backup─▶ V's host
//!                  cast fails ─▶ both back to available
//!  new volume:     backup available ─CAS─▶ restoring (target: the new volume's id,
//!                    owned by the scheduler) ─▶ CreateVolume's path with that id
//!                  the volume service that creates it finds the restoring backup,
//!                  moves the volume creating ─▶ restoring-backup and restores into it
//!                  create refused (quota, no broker) ─▶ backup back to available
//! ```

use scoria_common::{
    RequestContext,
    db::{BackupChange, Owner, VolumeMove, WorkerEntry, deadlines},
    model::{Backup, BackupStatus, VolumeStatus, now_ms},
};
use scoria_proto::{bus::RestoreBackup, v1 as pb};

use super::BackupApi;
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    validate,
};

impl BackupApi {
    #[tracing::instrument(skip_all, fields(backup_id = %req.id, volume_id = %req.volume_id))]
    pub(super) async fn restore(
        &self,
        ctx: &RequestContext,
        req: pb::RestoreBackupRequest,
    ) -> ApiResult<Backup> {
        let id = validate::uuid("id", &req.id)?;
        validate::text::line("name", &req.name)?;
        let target = match req.volume_id.as_str() {
            "" => None,
            volume_id => Some(validate::uuid("volume_id", volume_id)?),
        };
        if target.is_some() && !req.name.is_empty() {
            return Err(ApiError::invalid(
                "name",
                "names a new volume: leave it empty when volume_id names an existing one",
            ));
        }
        let backup = self.load(ctx, &id).await?;
        if backup.status != BackupStatus::Available {
            return Err(not_restorable(&backup));
        }
        match target {
            Some(volume_id) => self.restore_into(ctx, backup, volume_id).await,
            None => self.restore_new(ctx, backup, req.name).await,
        }
    }

    /// Restores `backup` over the existing volume `volume_id`.
    async fn restore_into(
        &self,
        ctx: &RequestContext,
        backup: Backup,
        volume_id: String,
    ) -> ApiResult<Backup> {
        let id = backup.id.clone();
        let volume = self.load_volume(ctx, &volume_id).await?;
        if volume.status != VolumeStatus::Available {
            return Err(ApiError::volume_refused(
                &volume,
                volume.status == VolumeStatus::InUse,
                ": only available volumes can be restored into",
            ));
        }
        if volume.size_gib < backup.size_gib {
            return Err(ApiError::invalid(
                "volume_id",
                format!(
                    "volume {volume_id} has {} GiB: it cannot hold backup {id} of {} GiB",
                    volume.size_gib, backup.size_gib
                ),
            ));
        }
        let Some(host) = volume.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::NoBackend {
                kind: "volume",
                id: volume_id,
            });
        };
        let intent = Intent::cast(
            &self.ports,
            format!("restore backup {id} into volume {volume_id} on {host}"),
        );
        intent.ready().await?;
        let worker = WorkerEntry::backup(
            &id,
            BackupStatus::Restoring,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::BACKUP),
        );
        let started = self
            .db
            .start_backup_restore(&id, &volume_id, Some(&[VolumeStatus::Available]), &worker)
            .await
            .map_err(ApiError::db(format!("mark backup {id} restoring")))?;
        if !started {
            return Err(self.lost_race(ctx, &id, Some(&volume_id)).await);
        }
        let request = RestoreBackup {
            backup_id: id.clone(),
            volume_id: volume_id.clone(),
        };
        let db = &self.db;
        let target = volume_id.as_str();
        intent
            .send(
                self.ports.volumes.restore_backup(ctx, &host, request),
                |_why| async move {
                    let back =
                        BackupChange::new(&[BackupStatus::Restoring], BackupStatus::Available)
                            .restore_volume(None)
                            .volume(VolumeMove {
                                id: target,
                                from: &[VolumeStatus::RestoringBackup],
                                to: VolumeStatus::Available,
                                error_message: None,
                            });
                    db.transition_backup(&id, &back).await
                },
            )
            .await?;
        tracing::info!(backup_id = %backup.id, volume_id = %volume_id, host = %host, "restore requested");
        Ok(restoring(backup, volume_id))
    }

    /// Restores `backup` into a new volume of its size, named `name`.
    async fn restore_new(
        &self,
        ctx: &RequestContext,
        backup: Backup,
        name: String,
    ) -> ApiResult<Backup> {
        let id = backup.id.clone();
        let volume_id = uuid::Uuid::new_v4().to_string();
        // The scheduler owns the restore until a volume service claims the new
        // volume (and with it this entry); until then the volume's own create
        // deadline bounds it.
        let worker = WorkerEntry::backup(
            &id,
            BackupStatus::Restoring,
            Owner::Scheduler,
            deadlines::from_now(deadlines::VOLUME_CREATE + deadlines::BACKUP),
        );
        let started = self
            .db
            .start_backup_restore(&id, &volume_id, None, &worker)
            .await
            .map_err(ApiError::db(format!("mark backup {id} restoring")))?;
        if !started {
            return Err(self.lost_race(ctx, &id, None).await);
        }
        let request = pb::CreateVolumeRequest {
            name: if name.is_empty() {
                format!("restore_backup_{id}")
            } else {
                name
            },
            description: format!("restored from backup {id}"),
            size_gib: backup.size_gib,
            ..Default::default()
        };
        if let Err(err) = self
            .volumes
            .create_as(ctx, request, volume_id.clone())
            .await
        {
            let back = BackupChange::new(&[BackupStatus::Restoring], BackupStatus::Available)
                .restore_volume(None);
            if let Err(undo) = self.db.transition_backup(&id, &back).await {
                tracing::error!(backup_id = %id, error = %undo, "cannot put the backup back to available");
            }
            return Err(err);
        }
        tracing::info!(backup_id = %id, volume_id = %volume_id, "restore into a new volume requested");
        Ok(restoring(backup, volume_id))
    }

    /// The refusal of a restore whose compare-and-set lost: what changed.
    async fn lost_race(&self, ctx: &RequestContext, id: &str, volume: Option<&str>) -> ApiError {
        match self.load(ctx, id).await {
            Ok(backup) if backup.status != BackupStatus::Available => not_restorable(&backup),
            Ok(_) => match volume {
                Some(volume_id) => match self.load_volume(ctx, volume_id).await {
                    Ok(volume) => ApiError::volume_refused(
                        &volume,
                        volume.status == VolumeStatus::InUse,
                        ": only available volumes can be restored into",
                    ),
                    Err(err) => err,
                },
                None => {
                    ApiError::Internal(format!("backup {id} stayed available but did not move"))
                }
            },
            Err(err) => err,
        }
    }
}

fn not_restorable(backup: &Backup) -> ApiError {
    ApiError::WrongStatus {
        kind: "backup",
        id: backup.id.clone(),
        status: backup.status.to_string(),
        detail: ": only available backups can be restored".to_owned(),
    }
}

fn restoring(backup: Backup, volume_id: String) -> Backup {
    Backup {
        status: BackupStatus::Restoring,
        restore_volume_id: Some(volume_id),
        updated_at_ms: now_ms(),
        ..backup
    }
}
