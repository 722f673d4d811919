//! The manager's migration handlers. The destination copies; the source
//! exports and, after the switch, removes its old object.
//!
//! ```text
//!  migrate_volume (destination): no `copying` row for me, or the volume not
//!                 maintenance/retyping on the source ──▶ ack (redelivered, stale)
//!                 claim the entry; create the object (a leftover of an earlier
//!                 try removed first); export_for_migration on the source (a call)
//!                 qemu-img convert -n -f raw -O <format> nbd://.../<export> <object>
//!                 unexport_for_migration on the source
//!                     ok ──▶ finish_migration: available on me (new type), row
//!                            `cleanup` owned by the source; cast
//!                            cleanup_migration_source   volume.migrate.end / retype.end
//!                     failed ──▶ abort (migration.rs): object removed, volume back
//!  export_for_migration (source): a `copying` row from me, volume here in
//!                 maintenance/retyping ──▶ read-only NBD export (idempotent)
//!  unexport_for_migration (source): the read-only export stopped (none: Ok)
//!  cleanup_migration_source (source): Shared::clean_source
//! ```

use scoria_common::{
    RequestContext,
    db::{DbError, Migration, MigrationState, WorkerKind, deadlines},
    events::Event,
    model::{MigrationStatus, Volume, VolumeStatus, now_ms},
};
use scoria_proto::bus::{
    CleanupMigrationSource, MigrateVolume, MigrationExport, MigrationExportInfo,
    MigrationUnexported,
};

use super::VolumeManager;
use crate::{
    driver::command::Tool,
    error::{Result, VolumeError},
};

impl VolumeManager {
    /// Lets this manager reach the other volume services (the source of a
    /// migration): without it, migrations to this service fail saying so.
    pub fn with_peers(mut self, peers: std::sync::Arc<dyn scoria_common::ops::VolumeOps>) -> Self {
        self.shared.peers = Some(peers);
        self
    }

    pub(super) async fn migrate(&self, ctx: &RequestContext, request: MigrateVolume) -> Result<()> {
        let id = request.volume_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(migration) = self.shared.db.get_migration(id).await? else {
            tracing::info!(volume_id = %id, "no migration recorded: cast ignored");
            return Ok(());
        };
        if migration.state != MigrationState::Copying
            || !self.settings.is_mine(&migration.dest_host)
        {
            tracing::info!(volume_id = %id, "migration not copying to this host: cast ignored");
            return Ok(());
        }
        let Some(mut volume) = self.shared.db.get_volume(id).await? else {
            tracing::info!(volume_id = %id, "volume gone: migration cast ignored");
            return Ok(());
        };
        let moving = matches!(
            volume.status,
            VolumeStatus::Maintenance | VolumeStatus::Retyping
        );
        if !moving || volume.host.as_deref() != Some(migration.source_host.as_str()) {
            tracing::info!(volume_id = %id, status = %volume.status, "volume not moving from the source: cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, volume.status.as_str())
            .await?;
        match self.copy_in(ctx, &migration, &volume).await {
            Ok(()) => self.switch(ctx, &migration, &mut volume).await,
            Err(why) => {
                let why = format!(
                    "migrating volume {id} from {} to {} failed: {why}",
                    migration.source_host, migration.dest_host
                );
                self.shared
                    .abort_migration(ctx, &migration, &mut volume, &why)
                    .await?;
                Ok(())
            }
        }
    }

    /// Makes the destination object and copies the source's bytes into it.
    async fn copy_in(
        &self,
        ctx: &RequestContext,
        migration: &Migration,
        volume: &Volume,
    ) -> std::result::Result<(), String> {
        let id = volume.id.as_str();
        let driver = &self.shared.driver;
        let Some(peers) = &self.shared.peers else {
            return Err(format!(
                "{} cannot reach other volume services",
                self.settings.host
            ));
        };
        // A leftover of an earlier, interrupted try (never the volume's own:
        // the volume is on the source).
        let _ = driver.delete_volume(id).await;
        driver
            .create_volume(id, volume.size_gib)
            .await
            .map_err(|err| format!("creating the destination object failed: {err}"))?;
        let path = driver
            .volume_path(id)
            .map_err(|err| format!("the destination has no path for it: {err}"))?;
        let export = peers
            .export_for_migration(
                ctx,
                &migration.source_host,
                MigrationExport {
                    volume_id: id.to_owned(),
                },
            )
            .await
            .map_err(|err| format!("the source did not export it: {err}"))?;
        let info = export
            .connection_info
            .ok_or_else(|| "the source's export has no connection info".to_owned())?;
        let uri = format!("nbd://{}:{}/{}", info.host, info.port, info.export_name);
        tracing::info!(volume_id = %id, %uri, dest = %path.display(), "copying the volume");
        let started = std::time::Instant::now();
        let qemu_img = Tool::new("qemu-img", "qemu-utils");
        let copied = qemu_img
            .run([
                "convert".as_ref(),
                "-n".as_ref(),
                "-f".as_ref(),
                "raw".as_ref(),
                "-O".as_ref(),
                driver.format().as_ref(),
                std::ffi::OsStr::new(&uri),
                path.as_os_str(),
            ])
            .await;
        self.shared.stop_source_export(ctx, migration).await;
        copied.map_err(|err| format!("copying the bytes failed: {err}"))?;
        tracing::info!(volume_id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "volume copied");
        Ok(())
    }

    /// The volume switches to this host (and its new type) in one
    /// compare-and-set; then the source is told to remove its old object.
    async fn switch(
        &self,
        ctx: &RequestContext,
        migration: &Migration,
        volume: &mut Volume,
    ) -> Result<()> {
        let id = migration.volume_id.clone();
        let cleanup_by = deadlines::from_now(deadlines::OPERATION);
        let finish = self.shared.db.finish_migration(migration, cleanup_by);
        let dest = self.settings.host.clone();
        let new_type = migration.new_type.clone();
        let apply = |v: &mut Volume| {
            v.status = VolumeStatus::Available;
            v.host = Some(dest.clone());
            if let Some(new_type) = &new_type {
                v.volume_type = new_type.clone();
            }
            v.migration_status = MigrationStatus::Success;
            v.migration_error.clear();
            v.updated_at_ms = now_ms();
        };
        let event = if migration.new_type.is_some() {
            Event::VolumeRetypeEnd
        } else {
            Event::VolumeMigrateEnd
        };
        let won = match self
            .shared
            .settler
            .settle(ctx, volume, finish, apply, Some(event))
            .await
        {
            Ok(won) => won,
            Err(DbError::OverQuota(over)) => {
                let why = format!("the volume's new type is over quota: {over}");
                self.shared
                    .abort_migration(ctx, migration, volume, &why)
                    .await?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        if !won {
            // Failed meanwhile (a reaper, an operator): this copy is unwanted.
            tracing::warn!(volume_id = %id, "volume changed during the copy: destination object removed");
            self.shared.remove_leftover(&id).await;
            return Ok(());
        }
        tracing::info!(volume_id = %id, from = %migration.source_host, "volume migrated");
        if let Some(peers) = &self.shared.peers {
            let cast = CleanupMigrationSource {
                volume_id: id.clone(),
            };
            if let Err(err) = peers
                .cleanup_migration_source(ctx, &migration.source_host, cast)
                .await
            {
                tracing::warn!(volume_id = %id, %err, "cleanup not sent: the source's reconciler removes the old object");
            }
        }
        Ok(())
    }

    pub(super) async fn export_for_migration(
        &self,
        request: MigrationExport,
    ) -> Result<MigrationExportInfo> {
        let id = request.volume_id.as_str();
        let migration = self.shared.db.get_migration(id).await?;
        let copying = migration.as_ref().is_some_and(|m| {
            m.state == MigrationState::Copying && self.settings.is_mine(&m.source_host)
        });
        if !copying {
            return Err(VolumeError::NotFound {
                kind: "migration from this host of volume",
                id: id.to_owned(),
            });
        }
        let volume = self
            .shared
            .db
            .get_volume(id)
            .await?
            .ok_or_else(|| VolumeError::NotFound {
                kind: "volume",
                id: id.to_owned(),
            })?;
        if !volume
            .host
            .as_deref()
            .is_some_and(|h| self.settings.is_mine(h))
        {
            return Err(VolumeError::NotMine {
                volume_id: id.to_owned(),
                on: volume.host.clone(),
                host: self.settings.host.clone(),
            });
        }
        let exports = self
            .shared
            .exports
            .as_ref()
            .ok_or_else(|| VolumeError::NoExports {
                host: self.settings.host.clone(),
            })?;
        let path = self
            .shared
            .driver
            .volume_path(id)
            .map_err(|source| VolumeError::Backend {
                op: "find volume",
                id: id.to_owned(),
                source,
            })?;
        let info = exports
            .export(id, &path, self.shared.driver.format(), true)
            .await
            .map_err(|source| VolumeError::Export {
                volume_id: id.to_owned(),
                source,
            })?;
        tracing::info!(volume_id = %id, uri = %info.uri(), "exported for a migration");
        Ok(MigrationExportInfo {
            connection_info: Some((&info).into()),
        })
    }

    pub(super) async fn unexport_for_migration(
        &self,
        request: MigrationExport,
    ) -> Result<MigrationUnexported> {
        let id = request.volume_id.as_str();
        let Some(exports) = &self.shared.exports else {
            return Ok(MigrationUnexported { unexported: false });
        };
        let unexported =
            exports
                .unexport(id, true)
                .await
                .map_err(|source| VolumeError::Unexport {
                    volume_id: id.to_owned(),
                    source,
                })?;
        Ok(MigrationUnexported { unexported })
    }

    pub(super) async fn cleanup_source(&self, request: CleanupMigrationSource) -> Result<()> {
        let id = request.volume_id.as_str();
        let _busy = self.shared.in_flight.enter(id);
        let Some(migration) = self.shared.db.get_migration(id).await? else {
            tracing::info!(volume_id = %id, "no migration recorded: cleanup done already");
            return Ok(());
        };
        self.shared.clean_source(&migration).await?;
        Ok(())
    }
}
