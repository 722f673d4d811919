//! The steps of a migration both the manager and the reconciler take: failing
//! a move from the destination's side (export stopped, destination object
//! removed, volume back where it was) and removing a migrated volume's old
//! object on the source. Below both, so neither imports the other.
//!
//! ```text
//!  abort (destination):  unexport_for_migration on the source (best effort)
//!                        destination object removed (only while the row is not
//!                        on this host)
//!                        maintenance | retyping -> available, migration_status
//!                        error, migration_error   volume.migrate.error / volume.retype.error
//!  clean (source):       row `cleanup`, source = me, volume not on me
//!                        ──▶ old object removed, then the row
//! ```

use scoria_common::{
    RequestContext,
    db::{DbResult, Migration, MigrationState},
    events::Event,
    model::{MigrationStatus, Volume, VolumeStatus, now_ms},
};
use scoria_proto::bus::MigrationExport;

use crate::shared::Shared;

/// The `.error` event of a move: a retype's, or a migration's.
pub(crate) fn error_event(migration: &Migration) -> Event {
    if migration.new_type.is_some() {
        Event::VolumeRetypeError
    } else {
        Event::VolumeMigrateError
    }
}

impl Shared {
    /// Whether `host` (`host@backend`, maybe with `#pool`) is this service.
    pub(crate) fn is_my_host(&self, host: &str) -> bool {
        host.split('#').next() == Some(self.host.as_str())
    }

    /// Asks the source of `migration` to stop its export (best effort: the
    /// source's restart kills exports nobody wants).
    pub(crate) async fn stop_source_export(&self, ctx: &RequestContext, migration: &Migration) {
        let Some(peers) = &self.peers else {
            return;
        };
        let request = MigrationExport {
            volume_id: migration.volume_id.clone(),
        };
        if let Err(err) = peers
            .unexport_for_migration(ctx, &migration.source_host, request)
            .await
        {
            tracing::warn!(volume_id = %migration.volume_id, source = %migration.source_host, %err, "cannot stop the source's migration export");
        }
    }

    /// Fails `migration` from the destination's side (see the module's
    /// diagram), `why` its `migration_error`. Whether the compare-and-set won.
    pub(crate) async fn abort_migration(
        &self,
        ctx: &RequestContext,
        migration: &Migration,
        volume: &mut Volume,
        why: &str,
    ) -> DbResult<bool> {
        let id = migration.volume_id.clone();
        tracing::error!(volume_id = %id, error = %why, "migration failed");
        self.stop_source_export(ctx, migration).await;
        let here = volume.host.as_deref().is_some_and(|h| self.is_my_host(h));
        if !here {
            self.remove_leftover(&id).await;
        }
        let apply = |v: &mut Volume| {
            v.status = VolumeStatus::Available;
            v.migration_status = MigrationStatus::Error;
            v.migration_error = why.to_owned();
            v.updated_at_ms = now_ms();
        };
        let event = Some(error_event(migration));
        self.settler
            .settle(ctx, volume, self.db.fail_migration(&id, why), apply, event)
            .await
    }

    /// Removes the old object of `migration`'s volume from this (source)
    /// backend, then its `cleanup` row. Idempotent; refuses (logged) when the
    /// row is not a cleanup of this host or the volume is on this host.
    pub(crate) async fn clean_source(&self, migration: &Migration) -> DbResult<bool> {
        let id = migration.volume_id.as_str();
        if migration.state != MigrationState::Cleanup || !self.is_my_host(&migration.source_host) {
            tracing::info!(volume_id = %id, "not a cleanup of this host: left");
            return Ok(false);
        }
        let volume = self.db.get_volume(id).await?;
        if volume
            .as_ref()
            .and_then(|v| v.host.as_deref())
            .is_some_and(|h| self.is_my_host(h))
        {
            tracing::error!(volume_id = %id, "the volume is on this host again: its object is kept");
            return self.db.remove_migration(id).await;
        }
        if let Err(err) = self.driver.delete_volume(id).await {
            tracing::warn!(volume_id = %id, %err, "cannot remove the migrated volume's old object now");
            return Ok(false);
        }
        let removed = self.db.remove_migration(id).await?;
        tracing::info!(volume_id = %id, "old object of a migrated volume removed");
        Ok(removed)
    }
}
