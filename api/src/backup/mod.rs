//! `scoria.v1.BackupService`: backups live on the backup target every volume
//! service shares. Reads come from the database; CreateBackup, DeleteBackup and
//! RestoreBackup persist their intent (row + worker entry, by compare-and-set)
//! and cast to the volume service that does the data work, which settles the
//! statuses. The API never waits for the data.
//!
//! ```text
//!  CreateBackup:  volume available ─CAS─▶ backing-up ─┐
//!                 volume in-use (force) ─CAS─▶ in-use ├─ + backup creating ─cast─▶ volume's host
//!                 cast fails ─▶ row removed, volume back, UNAVAILABLE
//!  DeleteBackup:  available | error | error_deleting, no incremental children
//!                   ─CAS─▶ deleting ─cast─▶ its host if up, else any up volume service
//!                 cast fails ─▶ error_deleting (with the reason)
//!  RestoreBackup: see `restore.rs`
//! ```

mod restore;

use scoria_common::{
    RequestContext,
    db::{
        BackupChange, BackupDeleteStart, BackupQuery, Db, Owner, VolumeMove, WorkerEntry, deadlines,
    },
    events::Event,
    model::{Backup, BackupStatus, Volume, VolumeStatus, now_ms},
};
use scoria_proto::{
    bus::{CreateBackup, DeleteBackup},
    v1::{self as pb, backup_service_server::BackupService},
};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    page_token::{PageToken, filter_digest, finish_page},
    ports::Ports,
    request::{handle, handle_as},
    scope, validate,
    volume::VolumeApi,
};

/// The `BackupService` implementation.
#[derive(Clone)]
pub struct BackupApi {
    db: Db,
    ports: Ports,
    /// The volume service's create path, for restores into a new volume.
    volumes: VolumeApi,
    /// How old a heartbeat may be for its service to count as up.
    service_down_ms: i64,
}

impl BackupApi {
    /// The service over `db` and `ports`; restores into new volumes go through
    /// `volumes`; `service_down_ms` from `api.service_down_time_secs`.
    pub fn new(db: Db, ports: Ports, volumes: VolumeApi, service_down_ms: i64) -> Self {
        Self {
            db,
            ports,
            volumes,
            service_down_ms,
        }
    }

    /// The backup `id` if the caller may see it (its project's, or any for admins).
    async fn load(&self, ctx: &RequestContext, id: &str) -> ApiResult<Backup> {
        scope::load(ctx, "backup", id, self.db.get_backup(id)).await
    }

    /// The volume `id` if the caller may see it.
    async fn load_volume(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        scope::load(ctx, "volume", id, self.db.get_volume(id)).await
    }

    /// GetBackup: the backup `id` (checked) if the caller may see it.
    async fn get(&self, ctx: &RequestContext, id: &str) -> ApiResult<Backup> {
        self.load(ctx, &validate::uuid("id", id)?).await
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, backup_id))]
    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateBackupRequest,
    ) -> ApiResult<Backup> {
        let volume_id = validate::uuid("volume_id", &req.volume_id)?;
        validate::text::line("name", &req.name)?;
        validate::text::description("description", &req.description)?;
        let volume = self.load_volume(ctx, &volume_id).await?;
        // An available volume is held `backing-up`; an in-use one (force) stays
        // in-use and is read through a temporary snapshot.
        let (from, to) = match (volume.status, req.force) {
            (VolumeStatus::Available, _) => {
                (VolumeStatus::Available, Some(VolumeStatus::BackingUp))
            }
            (VolumeStatus::InUse, true) => (VolumeStatus::InUse, None),
            _ => return Err(not_backupable(&volume, req.force)),
        };
        let Some(host) = volume.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::NoBackend {
                kind: "volume",
                id: volume_id,
            });
        };
        let parent = if req.incremental {
            let parent =
                self.db
                    .latest_available_backup(&volume_id)
                    .await
                    .map_err(ApiError::db(format!(
                        "find the parent backup of volume {volume_id}"
                    )))?;
            match parent {
                Some(parent) => Some(parent.id),
                None => return Err(ApiError::NoParentBackup { volume_id }),
            }
        } else {
            None
        };
        let intent = Intent::cast(&self.ports, format!("back volume {volume_id} up on {host}"));
        intent.ready().await?;
        let now = now_ms();
        let backup = Backup {
            id: uuid::Uuid::new_v4().to_string(),
            // The volume's project: an admin backing it up makes it the owner's.
            project_id: volume.project_id.clone(),
            user_id: ctx.user_id.clone(),
            volume_id: volume_id.clone(),
            parent_id: parent,
            name: req.name,
            description: req.description,
            size_gib: volume.size_gib,
            status: BackupStatus::Creating,
            error_message: String::new(),
            host: Some(host.clone()),
            incremental: req.incremental,
            has_dependents: false,
            object_count: 0,
            stored_bytes: 0,
            restore_volume_id: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let id = backup.id.clone();
        tracing::Span::current().record("backup_id", id.as_str());
        let worker = WorkerEntry::backup(
            &id,
            BackupStatus::Creating,
            Owner::Service(host.clone()),
            deadlines::at(now, deadlines::BACKUP),
        );
        let created = self
            .db
            .create_backup(&backup, &[from], to, &worker)
            .await
            .map_err(ApiError::db(format!("create backup {id}")))?;
        if !created {
            // The volume (or the parent) changed between the read and the CAS.
            let volume = self.load_volume(ctx, &volume_id).await?;
            if volume.status == from {
                return Err(ApiError::NoParentBackup { volume_id });
            }
            return Err(not_backupable(&volume, req.force));
        }
        let request = CreateBackup {
            backup_id: id.clone(),
            volume_id: volume_id.clone(),
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = backup.clone();
        intent
            .send(
                self.ports.volumes.create_backup(ctx, &host, request),
                |why| async move {
                    // Nothing will ever make it: the volume back, then the row.
                    if let Some(to) = to {
                        let held = [to];
                        let back =
                            BackupChange::new(&[BackupStatus::Creating], BackupStatus::Error)
                                .volume(VolumeMove {
                                    id: &failed.volume_id,
                                    from: &held,
                                    to: from,
                                    error_message: None,
                                });
                        let _ = self.db.transition_backup(&failed.id, &back).await;
                    }
                    let removed = self.db.delete_backup_row(&failed.id).await;
                    let apply = |b: &mut Backup| {
                        b.status = BackupStatus::Error;
                        b.error_message = format!("cannot reach the volume's host: {why}");
                    };
                    let event = Some(Event::BackupCreateError);
                    settler
                        .settle(ctx, &mut failed, async { removed }, apply, event)
                        .await
                },
            )
            .await?;
        tracing::info!(backup_id = %id, volume_id = %volume_id, host = %host, incremental = req.incremental, "backup requested");
        Ok(backup)
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        ctx: &RequestContext,
        req: pb::ListBackupsRequest,
    ) -> ApiResult<pb::ListBackupsResponse> {
        let limit = validate::page_size(req.page_size)?;
        let status = validate::backup_status_filter(req.status)?;
        let volume_id = match req.volume_id.as_str() {
            "" => None,
            id => Some(validate::uuid("volume_id", id)?),
        };
        let digest = filter_digest(&[
            "backups",
            status.map(BackupStatus::as_str).unwrap_or_default(),
            volume_id.as_deref().unwrap_or_default(),
        ]);
        let after = PageToken::decode(&req.page_token, &ctx.project_id, &digest)?;
        let query = BackupQuery {
            project_id: scope::list_project(ctx),
            volume_id,
            status,
            after: after.map(|token| (token.created_at_ms, token.id)),
            limit: limit + 1,
        };
        let mut backups = self
            .db
            .list_backups(&query)
            .await
            .map_err(ApiError::db("list backups"))?;
        let next_page_token = finish_page(
            &mut backups,
            limit,
            |last| (last.created_at_ms, last.id.clone()),
            &ctx.project_id,
            &digest,
        );
        Ok(pb::ListBackupsResponse {
            backups: backups.iter().map(pb::Backup::from).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(backup_id = %id))]
    async fn delete(&self, ctx: &RequestContext, id: &str) -> ApiResult<Backup> {
        let id = validate::uuid("id", id)?;
        let backup = self.load(ctx, &id).await?;
        if !BackupStatus::DELETABLE.contains(&backup.status) {
            return Err(not_deletable(&backup));
        }
        let host = self.deleting_host(&backup).await?;
        let intent = Intent::cast(&self.ports, format!("delete backup {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::backup(
            &id,
            BackupStatus::Deleting,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::BACKUP),
        );
        let start = self
            .db
            .start_backup_delete(&id, &worker)
            .await
            .map_err(ApiError::db(format!("mark backup {id} deleting")))?;
        match start {
            BackupDeleteStart::Started => {}
            BackupDeleteStart::HasDependents(children) => {
                return Err(ApiError::BackupHasDependents { id, children });
            }
            BackupDeleteStart::WrongStatus => {
                return Err(match self.load(ctx, &id).await {
                    Ok(now) => not_deletable(&now),
                    Err(err) => err,
                });
            }
        }
        let request = DeleteBackup {
            backup_id: id.clone(),
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = deleting(backup.clone());
        let at = host.as_str();
        intent
            .send(
                self.ports.volumes.delete_backup(ctx, &host, request),
                |why| async move {
                    let reason = format!("cannot reach {at} to delete the backup: {why}");
                    let change =
                        BackupChange::new(&[BackupStatus::Deleting], BackupStatus::ErrorDeleting)
                            .error(&reason);
                    let event = Some(Event::BackupDeleteError);
                    settler.backup(ctx, &mut failed, change, event).await
                },
            )
            .await?;
        tracing::info!(backup_id = %id, host = %host, "backup deletion requested");
        Ok(deleting(backup))
    }

    /// The volume service that deletes `backup`: the one that made it if it is
    /// up, else any up volume service (they all share the backup target).
    async fn deleting_host(&self, backup: &Backup) -> ApiResult<String> {
        let services = self
            .db
            .list_services()
            .await
            .map_err(ApiError::db("list volume services"))?;
        let now = now_ms();
        let up: Vec<&str> = services
            .iter()
            .filter(|s| {
                s.binary == "scoria-volume" && !s.disabled && s.is_up(now, self.service_down_ms)
            })
            .map(|s| s.host.as_str())
            .collect();
        let own = backup.host.as_deref().filter(|h| up.contains(h));
        match own.or_else(|| up.first().copied()) {
            Some(host) => Ok(host.to_owned()),
            // Cast to its own host anyway: the row waits there for it, and the
            // reconciler of that service finishes it when it is back.
            None => backup.host.clone().ok_or_else(|| ApiError::NoBackend {
                kind: "backup",
                id: backup.id.clone(),
            }),
        }
    }
}

fn not_backupable(volume: &Volume, force: bool) -> ApiError {
    let hint = if volume.status == VolumeStatus::InUse && !force {
        ": set force to back up an in-use volume"
    } else {
        ": only available (or, with force, in-use) volumes can be backed up"
    };
    ApiError::volume_refused(volume, volume.status == VolumeStatus::InUse, hint)
}

fn not_deletable(backup: &Backup) -> ApiError {
    ApiError::WrongStatus {
        kind: "backup",
        id: backup.id.clone(),
        status: backup.status.to_string(),
        detail: ": only available or error backups can be deleted".to_owned(),
    }
}

fn deleting(backup: Backup) -> Backup {
    Backup {
        status: BackupStatus::Deleting,
        updated_at_ms: now_ms(),
        ..backup
    }
}

#[tonic::async_trait]
impl BackupService for BackupApi {
    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        handle_as(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn get_backup(
        &self,
        request: Request<pb::GetBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        handle_as(request, async |ctx, req| self.get(ctx, &req.id).await).await
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        handle(request, async |ctx, req| self.list(ctx, req).await).await
    }

    async fn delete_backup(
        &self,
        request: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        handle_as(request, async |ctx, req| self.delete(ctx, &req.id).await).await
    }

    async fn restore_backup(
        &self,
        request: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        handle_as(request, async |ctx, req| self.restore(ctx, req).await).await
    }
}
