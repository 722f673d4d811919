//! The volume service's port: what a volume service does for the API and the
//! scheduler. Every method but the capability fanout goes to one service, named
//! by its `host@backend`.

mod client;
mod server;

use async_trait::async_trait;
use scoria_proto::bus::{
    AttachResult, AttachVolume, CreateBackup, CreateSnapshot, CreateVolume, DeleteBackup,
    DeleteSnapshot, DeleteVolume, DetachResult, DetachVolume, ExtendVolume, PublishCapabilities,
    RestoreBackup, RevertToSnapshot,
};

pub use client::VolumeClient;
pub use server::volume_dispatcher;

use super::OpsResult;
use crate::context::RequestContext;

/// The topic whose fanout reaches every volume service.
pub const VOLUME_TOPIC: &str = "volume";

/// The topic of the volume service owning `host` (`host@backend`).
pub fn volume_topic(host: &str) -> String {
    format!("{VOLUME_TOPIC}.{host}")
}

/// The volume services' bus methods, each declared once.
pub mod methods {
    use scoria_proto::bus::{
        AttachResult, AttachVolume, CreateBackup, CreateSnapshot, CreateVolume, DeleteBackup,
        DeleteSnapshot, DeleteVolume, DetachResult, DetachVolume, ExtendVolume,
        PublishCapabilities, RestoreBackup, RevertToSnapshot,
    };

    use crate::ops::method::{Call, Cast, Fanout};

    /// Create a volume on the backend.
    pub const CREATE_VOLUME: Cast<CreateVolume> = Cast::new("create_volume");
    /// Delete a volume from the backend.
    pub const DELETE_VOLUME: Cast<DeleteVolume> = Cast::new("delete_volume");
    /// Grow a volume.
    pub const EXTEND_VOLUME: Cast<ExtendVolume> = Cast::new("extend_volume");
    /// Snapshot a volume.
    pub const CREATE_SNAPSHOT: Cast<CreateSnapshot> = Cast::new("create_snapshot");
    /// Delete a snapshot.
    pub const DELETE_SNAPSHOT: Cast<DeleteSnapshot> = Cast::new("delete_snapshot");
    /// Back a volume up.
    pub const CREATE_BACKUP: Cast<CreateBackup> = Cast::new("create_backup");
    /// Delete a backup.
    pub const DELETE_BACKUP: Cast<DeleteBackup> = Cast::new("delete_backup");
    /// Restore a backup into a volume.
    pub const RESTORE_BACKUP: Cast<RestoreBackup> = Cast::new("restore_backup");
    /// Export a volume for an attachment.
    pub const ATTACH_VOLUME: Call<AttachVolume, AttachResult> = Call::new("attach_volume");
    /// End an attachment.
    pub const DETACH_VOLUME: Call<DetachVolume, DetachResult> = Call::new("detach_volume");
    /// Roll a volume back to its newest snapshot.
    pub const REVERT_TO_SNAPSHOT: Cast<RevertToSnapshot> = Cast::new("revert_to_snapshot");
    /// Report capabilities now (to every volume service).
    pub const PUBLISH_SERVICE_CAPABILITIES: Fanout<PublishCapabilities> =
        Fanout::new("publish_service_capabilities");
    /// Copy a volume here from its source (a migration or a retype that moves).
    pub const MIGRATE_VOLUME: Cast<scoria_proto::bus::MigrateVolume> = Cast::new("migrate_volume");
    /// Export a volume being migrated away, read-only.
    pub const EXPORT_FOR_MIGRATION: Call<
        scoria_proto::bus::MigrationExport,
        scoria_proto::bus::MigrationExportInfo,
    > = Call::new("export_for_migration");
    /// Stop the export of a volume being migrated away.
    pub const UNEXPORT_FOR_MIGRATION: Call<
        scoria_proto::bus::MigrationExport,
        scoria_proto::bus::MigrationUnexported,
    > = Call::new("unexport_for_migration");
    /// Remove the old object of a volume that migrated away.
    pub const CLEANUP_MIGRATION_SOURCE: Cast<scoria_proto::bus::CleanupMigrationSource> =
        Cast::new("cleanup_migration_source");
    /// Read the size of an object Scoria does not manage yet.
    pub const INSPECT_EXISTING: Call<
        scoria_proto::bus::InspectExisting,
        scoria_proto::bus::ExistingObject,
    > = Call::new("inspect_existing");
    /// Adopt an object as a `managing` volume or snapshot.
    pub const MANAGE_EXISTING: Cast<scoria_proto::bus::ManageExisting> =
        Cast::new("manage_existing");

    /// Every method name a volume service serves.
    pub const ALL: [&str; 18] = [
        CREATE_VOLUME.name(),
        DELETE_VOLUME.name(),
        EXTEND_VOLUME.name(),
        CREATE_SNAPSHOT.name(),
        DELETE_SNAPSHOT.name(),
        CREATE_BACKUP.name(),
        DELETE_BACKUP.name(),
        RESTORE_BACKUP.name(),
        ATTACH_VOLUME.name(),
        DETACH_VOLUME.name(),
        PUBLISH_SERVICE_CAPABILITIES.name(),
        REVERT_TO_SNAPSHOT.name(),
        MIGRATE_VOLUME.name(),
        EXPORT_FOR_MIGRATION.name(),
        UNEXPORT_FOR_MIGRATION.name(),
        CLEANUP_MIGRATION_SOURCE.name(),
        INSPECT_EXISTING.name(),
        MANAGE_EXISTING.name(),
    ];
}

/// What a volume service does for others. `host` is the `host@backend` of the
/// service that must do it.
#[async_trait]
pub trait VolumeOps: Send + Sync {
    /// Creates a volume (its row is `creating`, owned by `host`).
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateVolume,
    ) -> OpsResult<()>;

    /// Deletes a volume (its row is `deleting`).
    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteVolume,
    ) -> OpsResult<()>;

    /// Grows a volume (its row is `extending`).
    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: ExtendVolume,
    ) -> OpsResult<()>;

    /// Snapshots a volume (the snapshot row is `creating`).
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateSnapshot,
    ) -> OpsResult<()>;

    /// Deletes a snapshot (the snapshot row is `deleting`).
    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteSnapshot,
    ) -> OpsResult<()>;

    /// Backs a volume up (the backup row is `creating`).
    async fn create_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateBackup,
    ) -> OpsResult<()>;

    /// Deletes a backup from the backup target (the backup row is `deleting`).
    async fn delete_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteBackup,
    ) -> OpsResult<()>;

    /// Restores a backup into a volume of `host` (the backup row is
    /// `restoring`, the volume `restoring-backup`).
    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: RestoreBackup,
    ) -> OpsResult<()>;

    /// Exports a volume for an `attaching` attachment and marks it `attached`
    /// (a call: the caller waits for the connection info).
    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> OpsResult<AttachResult>;

    /// Ends a `detaching` attachment: stops the export when no other attachment
    /// uses it and removes the attachment (a call).
    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> OpsResult<DetachResult>;

    /// Asks every volume service to report its capabilities now (a fanout).
    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        request: PublishCapabilities,
    ) -> OpsResult<()>;

    /// Rolls a volume back to its newest snapshot (the volume row is
    /// `reverting`, the snapshot `restoring`).
    async fn revert_to_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: RevertToSnapshot,
    ) -> OpsResult<()>;

    /// Copies a volume to `host` (the destination) as its `migrations` row says,
    /// then switches it there, or fails the move. The default refuses: an
    /// implementation that does not migrate (a test fake) says so.
    async fn migrate_volume(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrateVolume,
    ) -> OpsResult<()> {
        Err(not_served(
            host,
            "migrate_volume",
            &format!("volume {}", request.volume_id),
        ))
    }

    /// Exports a volume of `host` that is being migrated away, read-only (a
    /// call: the destination waits for the connection info).
    async fn export_for_migration(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationExportInfo> {
        Err(not_served(
            host,
            "export_for_migration",
            &format!("volume {}", request.volume_id),
        ))
    }

    /// Stops the migration export of a volume of `host` (a call; no export is
    /// no error).
    async fn unexport_for_migration(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationUnexported> {
        Err(not_served(
            host,
            "unexport_for_migration",
            &format!("volume {}", request.volume_id),
        ))
    }

    /// Removes the old object of a volume that migrated away from `host`.
    async fn cleanup_migration_source(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::CleanupMigrationSource,
    ) -> OpsResult<()> {
        Err(not_served(
            host,
            "cleanup_migration_source",
            &format!("volume {}", request.volume_id),
        ))
    }

    /// The size of object `request.reference` of `host` (a call: the API
    /// waits, before it writes any row).
    async fn inspect_existing(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::InspectExisting,
    ) -> OpsResult<scoria_proto::bus::ExistingObject> {
        Err(not_served(
            host,
            "inspect_existing",
            &format!("object {:?}", request.reference),
        ))
    }

    /// Adopts object `request.reference` of `host` as the `managing` row
    /// `request.id` (a cast).
    async fn manage_existing(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::ManageExisting,
    ) -> OpsResult<()> {
        Err(not_served(
            host,
            "manage_existing",
            &format!("object {:?}", request.reference),
        ))
    }
}

/// The error of a migration method an implementation does not serve.
fn not_served(host: &str, method: &str, of: &str) -> super::OpsError {
    super::OpsError::Failed(crate::status::error(
        tonic::Code::Unimplemented,
        crate::status::Reason::Unimplemented,
        format!("{method} of {of} is not served by {host}"),
    ))
}
