//! [`VolumeOps`] over the bus.

use async_trait::async_trait;
use scoria_proto::bus::{
    AttachResult, AttachVolume, CreateBackup, CreateSnapshot, CreateVolume, DeleteBackup,
    DeleteSnapshot, DeleteVolume, DetachResult, DetachVolume, ExtendVolume, PublishCapabilities,
    RestoreBackup, RevertToSnapshot,
};

use super::{VOLUME_TOPIC, VolumeOps, methods, volume_topic};
use crate::{
    context::RequestContext,
    ops::OpsResult,
    rpc::{RpcClient, Target},
};

/// [`VolumeOps`] over the bus: each method goes to the topic of the host it names,
/// `volume.<host@backend>`.
#[derive(Clone)]
pub struct VolumeClient {
    rpc: RpcClient,
}

impl VolumeClient {
    /// A client sending through `rpc`.
    pub fn new(rpc: RpcClient) -> Self {
        Self { rpc }
    }

    fn target(host: &str) -> OpsResult<Target> {
        Ok(Target::topic(volume_topic(host))?)
    }
}

#[async_trait]
impl VolumeOps for VolumeClient {
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateVolume,
    ) -> OpsResult<()> {
        methods::CREATE_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteVolume,
    ) -> OpsResult<()> {
        methods::DELETE_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: ExtendVolume,
    ) -> OpsResult<()> {
        methods::EXTEND_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateSnapshot,
    ) -> OpsResult<()> {
        methods::CREATE_SNAPSHOT
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteSnapshot,
    ) -> OpsResult<()> {
        methods::DELETE_SNAPSHOT
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn create_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: CreateBackup,
    ) -> OpsResult<()> {
        methods::CREATE_BACKUP
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn delete_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DeleteBackup,
    ) -> OpsResult<()> {
        methods::DELETE_BACKUP
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: RestoreBackup,
    ) -> OpsResult<()> {
        methods::RESTORE_BACKUP
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: AttachVolume,
    ) -> OpsResult<AttachResult> {
        methods::ATTACH_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: DetachVolume,
    ) -> OpsResult<DetachResult> {
        methods::DETACH_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        request: PublishCapabilities,
    ) -> OpsResult<()> {
        methods::PUBLISH_SERVICE_CAPABILITIES
            .send(&self.rpc, ctx, VOLUME_TOPIC, &request)
            .await
    }

    async fn revert_to_snapshot(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: RevertToSnapshot,
    ) -> OpsResult<()> {
        methods::REVERT_TO_SNAPSHOT
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn migrate_volume(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrateVolume,
    ) -> OpsResult<()> {
        methods::MIGRATE_VOLUME
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn export_for_migration(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationExportInfo> {
        methods::EXPORT_FOR_MIGRATION
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn unexport_for_migration(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationUnexported> {
        methods::UNEXPORT_FOR_MIGRATION
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn cleanup_migration_source(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::CleanupMigrationSource,
    ) -> OpsResult<()> {
        methods::CLEANUP_MIGRATION_SOURCE
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn inspect_existing(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::InspectExisting,
    ) -> OpsResult<scoria_proto::bus::ExistingObject> {
        methods::INSPECT_EXISTING
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }

    async fn manage_existing(
        &self,
        ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::ManageExisting,
    ) -> OpsResult<()> {
        methods::MANAGE_EXISTING
            .send(&self.rpc, ctx, &Self::target(host)?, &request)
            .await
    }
}
