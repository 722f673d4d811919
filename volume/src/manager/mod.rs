//! The volume manager: serves [`VolumeOps`] for one backend (`host@backend`).
//!
//! Every handler is idempotent, because a cast may be delivered twice: it reads the
//! volume's row first and acts only if the row still asks for it, moves the status
//! by compare-and-set, and leaves no backend object behind a row that is gone.
//!
//! ```text
//!  create_volume: row gone ──────────────▶ remove leftover object, ack
//!                 not `creating` ────────▶ ack (redelivered or stale)
//!                 claim (creating, owner = me) ─▶ driver create
//!                     ok ──▶ available (lost the CAS: remove the object)
//!                     failed, attempt < 3 ──▶ back to the scheduler, this pool tried
//!                     failed, attempt = 3 ──▶ error, with the reason
//! ```

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use scoria_common::{
    RequestContext,
    db::{Db, WorkerEntry, WorkerKind},
    events::Notifications,
    model::{VolumeStatus, now_ms},
    ops::{OpsResult, SchedulerOps, VolumeOps},
    settle::Settler,
};
use scoria_proto::bus::{Capabilities, CreateVolume, DeleteVolume, Pool, PublishCapabilities};

use crate::{
    config::Config,
    driver::VolumeDriver,
    error::{Result, VolumeError},
    shared::Shared,
};

/// How many backends a create is tried on before the volume goes to `error`.
pub const MAX_CREATE_ATTEMPTS: u32 = 3;
/// How long an owner has to finish a create before the reconciler steps in.
pub const CREATE_DEADLINE: Duration = Duration::from_secs(600);
/// The owner of a volume that waits to be scheduled.
pub const SCHEDULER_SERVICE: &str = scoria_common::db::SCHEDULER_OWNER;

/// What the manager reports about its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerSettings {
    /// `host@backend`.
    pub host: String,
    /// The backend name (also the name of its one pool).
    pub backend: String,
    /// The availability zone.
    pub availability_zone: String,
    /// The percentage of capacity kept free.
    pub reserved_percentage: u32,
    /// How far the scheduler may over-provision.
    pub max_over_subscription_ratio: f64,
}

impl ManagerSettings {
    /// The settings `config` gives.
    pub fn from_config(config: &Config) -> Self {
        Self {
            host: config.host(),
            backend: config.volume.backend.clone(),
            availability_zone: config.volume.availability_zone.clone(),
            reserved_percentage: config.volume.reserved_percentage,
            max_over_subscription_ratio: config.volume.max_over_subscription_ratio,
        }
    }

    /// The scheduler's key of the one pool: `host@backend#backend`.
    pub fn pool_key(&self) -> String {
        format!("{}#{}", self.host, self.backend)
    }

    /// Whether `host` (`host@backend`, maybe with `#pool`) is this service.
    fn is_mine(&self, host: &str) -> bool {
        host.split('#').next() == Some(self.host.as_str())
    }
}

/// The volume manager of one backend.
pub struct VolumeManager {
    /// What the manager shares with the reconciler.
    shared: Shared,
    scheduler: Arc<dyn SchedulerOps>,
    settings: ManagerSettings,
    /// How long this service gives itself to finish work it starts.
    operation_deadline: Duration,
    /// Held from a create's space check until its object is made.
    space: tokio::sync::Mutex<()>,
}

// === impl VolumeManager ===

impl VolumeManager {
    /// A manager of `driver`'s backend.
    pub fn new(
        db: Db,
        driver: Arc<dyn VolumeDriver>,
        scheduler: Arc<dyn SchedulerOps>,
        notifier: Arc<dyn Notifications>,
        settings: ManagerSettings,
    ) -> Self {
        Self {
            shared: Shared {
                settler: Settler::new(db.clone(), notifier),
                db,
                driver,
                host: settings.host.clone(),
                in_flight: Default::default(),
                locks: Default::default(),
                exports: None,
                member: None,
                backups: None,
                peers: None,
            },
            scheduler,
            settings,
            operation_deadline: CREATE_DEADLINE,
            space: tokio::sync::Mutex::new(()),
        }
    }

    /// Gives work this service starts `deadline` to finish (default
    /// [`CREATE_DEADLINE`]); past it, the reconciler (or a reaper) steps in.
    pub fn with_operation_deadline(mut self, deadline: Duration) -> Self {
        self.operation_deadline = deadline;
        self
    }

    /// Makes this manager a member of a cluster as `member` (`host@backend`):
    /// the exports it starts are recorded as its own (see `attach.rs`).
    pub fn with_member(mut self, member: impl Into<String>) -> Self {
        self.shared.member = Some(member.into());
        self
    }

    /// Gives this manager a backup target (without one, backups fail saying so).
    pub fn with_backups(mut self, engine: Arc<crate::backup::BackupEngine>) -> Self {
        self.shared.backups = Some(engine);
        self
    }

    /// What the reconciler needs of this manager: the state they share.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// Takes the worker entry of the work this service starts on resource `id`
    /// in `status`, with this service's own deadline.
    pub(crate) async fn claim(&self, kind: WorkerKind, id: &str, status: &str) -> Result<()> {
        let deadline = now_ms() + self.operation_deadline.as_millis() as i64;
        self.shared
            .db
            .claim_worker(kind, id, status, &self.settings.host, deadline)
            .await?;
        Ok(())
    }

    /// The settings.
    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// The capability report of the backend now.
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let stats = self
            .shared
            .driver
            .stats()
            .await
            .map_err(|source| VolumeError::Backend {
                op: "read the capacity of backend",
                id: self.settings.backend.clone(),
                source,
            })?;
        let s = &self.settings;
        let capabilities: HashMap<String, String> = [
            ("volume_backend_name", s.backend.as_str()),
            ("storage_protocol", "nbd"),
            ("driver", self.shared.driver.name()),
            // Exports are shared: several attachments of one volume (rw and ro).
            ("multiattach", "True"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Ok(Capabilities {
            host: s.host.clone(),
            backend_name: s.backend.clone(),
            availability_zone: s.availability_zone.clone(),
            driver: self.shared.driver.name().to_owned(),
            pools: vec![Pool {
                name: s.backend.clone(),
                total_capacity_gib: stats.total_gib,
                free_capacity_gib: stats.free_gib,
                allocated_capacity_gib: stats.allocated_gib,
                reserved_percentage: s.reserved_percentage,
                thin_provisioning_support: true,
                thick_provisioning_support: false,
                max_over_subscription_ratio: s.max_over_subscription_ratio,
                capabilities: capabilities.into_iter().collect(),
            }],
            reported_at: Some(std::time::SystemTime::now().into()),
        })
    }

    /// Sends the capability report to every scheduler (fanout).
    #[tracing::instrument(skip_all, err, fields(host = %self.settings.host))]
    pub async fn report_capabilities(&self, ctx: &RequestContext) -> Result<()> {
        let report = self.capabilities().await?;
        Ok(self
            .scheduler
            .update_service_capabilities(ctx, report)
            .await?)
    }

    fn worker(&self, id: &str, service: &str) -> WorkerEntry {
        WorkerEntry {
            kind: WorkerKind::Volume,
            resource_id: id.to_owned(),
            status: VolumeStatus::Creating.as_str().to_owned(),
            service: service.to_owned(),
            deadline_ms: now_ms() + self.operation_deadline.as_millis() as i64,
        }
    }
}

#[async_trait]
impl VolumeOps for VolumeManager {
    #[tracing::instrument(
        skip(self, ctx, request),
        err,
        fields(volume_id = %request.volume_id, attempt = request.attempt, request_id = %ctx.request_id)
    )]
    async fn create_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: CreateVolume,
    ) -> OpsResult<()> {
        Ok(self.create(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn delete_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: DeleteVolume,
    ) -> OpsResult<()> {
        Ok(self.delete(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, new_size_gib = request.new_size_gib, request_id = %ctx.request_id))]
    async fn extend_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::ExtendVolume,
    ) -> OpsResult<()> {
        Ok(self.extend(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(snapshot_id = %request.snapshot_id, volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::CreateSnapshot,
    ) -> OpsResult<()> {
        Ok(self.snapshot_create(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(snapshot_id = %request.snapshot_id, request_id = %ctx.request_id))]
    async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::DeleteSnapshot,
    ) -> OpsResult<()> {
        Ok(self.snapshot_delete(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(backup_id = %request.backup_id, volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn create_backup(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::CreateBackup,
    ) -> OpsResult<()> {
        Ok(self.backup_create(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(backup_id = %request.backup_id, request_id = %ctx.request_id))]
    async fn delete_backup(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::DeleteBackup,
    ) -> OpsResult<()> {
        Ok(self.backup_delete(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(backup_id = %request.backup_id, volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn restore_backup(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::RestoreBackup,
    ) -> OpsResult<()> {
        Ok(self.backup_restore(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(request_id = %ctx.request_id))]
    async fn publish_service_capabilities(
        &self,
        ctx: &RequestContext,
        request: PublishCapabilities,
    ) -> OpsResult<()> {
        tracing::debug!(requester = %request.requester, "capabilities asked for");
        Ok(self.report_capabilities(ctx).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(attachment_id = %request.attachment_id, request_id = %ctx.request_id))]
    async fn attach_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::AttachVolume,
    ) -> OpsResult<scoria_proto::bus::AttachResult> {
        Ok(self.attach(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(attachment_id = %request.attachment_id, request_id = %ctx.request_id))]
    async fn detach_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::DetachVolume,
    ) -> OpsResult<scoria_proto::bus::DetachResult> {
        Ok(self.detach(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, snapshot_id = %request.snapshot_id, request_id = %ctx.request_id))]
    async fn revert_to_snapshot(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::RevertToSnapshot,
    ) -> OpsResult<()> {
        Ok(self.revert(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn migrate_volume(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::MigrateVolume,
    ) -> OpsResult<()> {
        Ok(self.migrate(ctx, request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn export_for_migration(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationExportInfo> {
        Ok(self.export_for_migration(request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn unexport_for_migration(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::MigrationExport,
    ) -> OpsResult<scoria_proto::bus::MigrationUnexported> {
        Ok(self.unexport_for_migration(request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(volume_id = %request.volume_id, request_id = %ctx.request_id))]
    async fn cleanup_migration_source(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::CleanupMigrationSource,
    ) -> OpsResult<()> {
        Ok(self.cleanup_source(request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(reference = %request.reference, request_id = %ctx.request_id))]
    async fn inspect_existing(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::InspectExisting,
    ) -> OpsResult<scoria_proto::bus::ExistingObject> {
        Ok(self.inspect_existing(request).await?)
    }

    #[tracing::instrument(skip(self, ctx, request), err, fields(id = %request.id, reference = %request.reference, request_id = %ctx.request_id))]
    async fn manage_existing(
        &self,
        ctx: &RequestContext,
        _host: &str,
        request: scoria_proto::bus::ManageExisting,
    ) -> OpsResult<()> {
        Ok(self.manage_existing(ctx, request).await?)
    }
}

mod attach;
mod backup;
mod create;
mod delete;
mod detach;
mod extend;
mod manage;
mod migrate;
mod restore;
mod revert;
mod settle;
mod snapshot;

pub use restore::RestoreReport;

#[cfg(test)]
mod attach_tests;
#[cfg(test)]
mod create_tests;
#[cfg(test)]
mod extend_tests;
#[cfg(test)]
mod snapshot_tests;

/// A scheduler fake for tests that never reschedule.
#[cfg(test)]
pub(crate) use scoria_common::testing::IdleScheduler;
