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
    db::{Db, DbError, WorkerEntry, WorkerKind},
    model::{Snapshot, Volume, VolumeStatus, now_ms},
    ops::{OpsResult, SchedulerOps, VolumeOps},
    rpc::{Notifier, Priority},
};
use scoria_proto::{
    bus::{
        Capabilities, CreateVolume, DeleteVolume, Pool, PublishCapabilities, ScheduleCreateVolume,
    },
    v1 as pb,
};
use tonic::Status;

use crate::{config::Config, driver::VolumeDriver};

/// How many backends a create is tried on before the volume goes to `error`.
pub const MAX_CREATE_ATTEMPTS: u32 = 3;
/// How long an owner has to finish a create before the reconciler steps in.
pub const CREATE_DEADLINE: Duration = Duration::from_secs(600);
/// The owner of a volume that waits to be scheduled.
pub const SCHEDULER_SERVICE: &str = "scoria-scheduler";

/// Where the manager's notifications go: the bus's [`Notifier`] in the service,
/// a recorder in tests. Notifications are best effort: a failure is logged.
#[async_trait]
pub trait Notifications: Send + Sync {
    /// Publishes `event_type` about `volume` at `priority`.
    async fn notify(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        volume: &Volume,
    );

    /// Publishes `event_type` about `snapshot` at `priority`. The default drops
    /// it, for fakes that follow only volumes; the bus's [`Notifier`] sends it.
    async fn notify_snapshot(
        &self,
        _ctx: &RequestContext,
        _priority: Priority,
        _event_type: &str,
        _snapshot: &Snapshot,
    ) {
    }

    /// Publishes `event_type` about `attachment` at `priority`. The default drops
    /// it, for fakes that follow only volumes; the bus's [`Notifier`] sends it.
    async fn notify_attachment(
        &self,
        _ctx: &RequestContext,
        _priority: Priority,
        _event_type: &str,
        _attachment: &scoria_common::model::Attachment,
    ) {
    }
}

#[async_trait]
impl Notifications for Notifier {
    async fn notify(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        volume: &Volume,
    ) {
        // Off the operation's path: ordered, confirmed in the background.
        self.emit(ctx, priority, event_type, &pb::Volume::from(volume));
    }

    async fn notify_snapshot(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        snapshot: &Snapshot,
    ) {
        self.emit(ctx, priority, event_type, &pb::Snapshot::from(snapshot));
    }

    async fn notify_attachment(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        attachment: &scoria_common::model::Attachment,
    ) {
        self.emit(ctx, priority, event_type, &pb::Attachment::from(attachment));
    }
}

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
    db: Db,
    driver: Arc<dyn VolumeDriver>,
    scheduler: Arc<dyn SchedulerOps>,
    notifier: Arc<dyn Notifications>,
    settings: ManagerSettings,
    /// The resources a handler works on right now (the reconciler leaves them be).
    in_flight: crate::reconciler::InFlight,
    /// How long this service gives itself to finish work it starts.
    operation_deadline: Duration,
    /// The NBD exports of attachments (None: this manager attaches nothing).
    exports: Option<Arc<crate::export::ExportManager>>,
    /// One lock per volume: its attaches and detaches run one at a time.
    volume_locks: attach::VolumeLocks,
}

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
            db,
            driver,
            scheduler,
            notifier,
            settings,
            in_flight: Default::default(),
            operation_deadline: CREATE_DEADLINE,
            exports: None,
            volume_locks: Default::default(),
        }
    }

    /// Gives work this service starts `deadline` to finish (default
    /// [`CREATE_DEADLINE`]); past it, the reconciler (or a reaper) steps in.
    pub fn with_operation_deadline(mut self, deadline: Duration) -> Self {
        self.operation_deadline = deadline;
        self
    }

    /// The database.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The backend.
    pub(crate) fn driver(&self) -> &Arc<dyn VolumeDriver> {
        &self.driver
    }

    /// The resources a handler works on right now.
    pub(crate) fn in_flight(&self) -> &crate::reconciler::InFlight {
        &self.in_flight
    }

    /// Takes the worker entry of the work this service starts on resource `id`
    /// in `status`, with this service's own deadline.
    pub(crate) async fn claim(
        &self,
        kind: WorkerKind,
        id: &str,
        status: &str,
    ) -> Result<(), Status> {
        let deadline = now_ms() + self.operation_deadline.as_millis() as i64;
        self.db
            .claim_worker(kind, id, status, &self.settings.host, deadline)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The settings.
    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// The capability report of the backend now.
    pub async fn capabilities(&self) -> Result<Capabilities, Status> {
        let stats = self.driver.stats().await.map_err(|err| {
            tracing::error!(%err, "cannot read backend capacity");
            Status::internal(format!(
                "cannot read the capacity of backend {}",
                self.settings.backend
            ))
        })?;
        let s = &self.settings;
        let capabilities: HashMap<String, String> = [
            ("volume_backend_name", s.backend.as_str()),
            ("storage_protocol", "nbd"),
            ("driver", self.driver.name()),
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
            driver: self.driver.name().to_owned(),
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
    pub async fn report_capabilities(&self, ctx: &RequestContext) -> Result<(), Status> {
        let report = self.capabilities().await?;
        Ok(self
            .scheduler
            .update_service_capabilities(ctx, report)
            .await?)
    }

    pub(crate) async fn notify(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        volume: &Volume,
    ) {
        self.notifier
            .notify(ctx, priority, event_type, volume)
            .await;
    }

    /// Removes the backend object of a volume whose row is gone (best effort).
    pub(crate) async fn remove_leftover(&self, id: &str) {
        if let Err(err) = self.driver.delete_volume(id).await {
            tracing::warn!(volume_id = %id, %err, "cannot remove leftover backend object");
        }
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

    // === create ===

    async fn create(&self, ctx: &RequestContext, request: CreateVolume) -> Result<(), Status> {
        let id = request.volume_id.as_str();
        let _busy = self.in_flight.enter(id);
        let host = self.settings.host.as_str();
        let Some(mut volume) = self.db.get_volume(id).await.map_err(db_error)? else {
            tracing::info!("volume was deleted before it was created: removing any leftover");
            self.remove_leftover(id).await;
            return Ok(());
        };
        if volume.status != VolumeStatus::Creating {
            if volume.status == VolumeStatus::Available
                && volume
                    .host
                    .as_deref()
                    .is_some_and(|h| self.settings.is_mine(h))
            {
                tracing::info!("volume already created here: redelivered cast ignored");
            } else {
                tracing::warn!(status = %volume.status, host = ?volume.host, "volume is not creating: cast ignored");
            }
            return Ok(());
        }
        // A stale delivery (this backend failed and the volume was rescheduled) must
        // not race the backend now creating it: the worker entry names the owner.
        let owner = self
            .db
            .get_worker(WorkerKind::Volume, id)
            .await
            .map_err(db_error)?;
        if let Some(owner) = owner.filter(|w| {
            w.service.contains('@')
                && !self.settings.is_mine(&w.service)
                && w.deadline_ms > now_ms()
        }) {
            tracing::warn!(owner = %owner.service, "another backend is creating the volume: cast ignored");
            return Ok(());
        }
        if request.size_gib != volume.size_gib {
            tracing::warn!(
                requested = request.size_gib,
                row = volume.size_gib,
                "sizes differ: the row wins"
            );
        }
        let claimed = self
            .db
            .transition_volume_with_worker(
                id,
                &[VolumeStatus::Creating],
                VolumeStatus::Creating,
                Some(host),
                None,
                Some(&self.worker(id, host)),
            )
            .await
            .map_err(db_error)?;
        if !claimed {
            tracing::info!("volume changed before it was claimed: cast ignored");
            return Ok(());
        }
        volume.host = Some(host.to_owned());
        self.notify(ctx, Priority::Info, "volume.create.start", &volume)
            .await;
        let made = match volume.source_volume_id.as_deref() {
            Some(source) => {
                self.driver
                    .create_cloned_volume(id, source, volume.size_gib)
                    .await
            }
            None => match volume.snapshot_id.as_deref() {
                Some(snapshot) => {
                    self.driver
                        .create_volume_from_snapshot(id, snapshot, volume.size_gib)
                        .await
                }
                None => self.driver.create_volume(id, volume.size_gib).await,
            },
        };
        match made {
            Ok(()) => self.create_done(ctx, volume).await,
            Err(err) => {
                self.create_failed(ctx, request, volume, err.to_string())
                    .await
            }
        }
    }

    async fn create_done(&self, ctx: &RequestContext, mut volume: Volume) -> Result<(), Status> {
        let id = volume.id.clone();
        let host = self.settings.host.as_str();
        let won = self
            .db
            .transition_volume_with_worker(
                &id,
                &[VolumeStatus::Creating],
                VolumeStatus::Available,
                Some(host),
                Some(""),
                None,
            )
            .await
            .map_err(db_error)?;
        if won {
            volume.status = VolumeStatus::Available;
            volume.error_message.clear();
            tracing::info!(size_gib = volume.size_gib, "volume created");
            self.notify(ctx, Priority::Info, "volume.create.end", &volume)
                .await;
            return Ok(());
        }
        match self.db.get_volume(&id).await.map_err(db_error)? {
            Some(now)
                if now.status == VolumeStatus::Available
                    && now
                        .host
                        .as_deref()
                        .is_some_and(|h| self.settings.is_mine(h)) =>
            {
                tracing::info!("a concurrent delivery finished the volume first");
            }
            now => {
                tracing::warn!(status = ?now.map(|v| v.status), "volume changed while being created: removing the backend object");
                self.remove_leftover(&id).await;
            }
        }
        Ok(())
    }

    async fn create_failed(
        &self,
        ctx: &RequestContext,
        request: CreateVolume,
        mut volume: Volume,
        reason: String,
    ) -> Result<(), Status> {
        let id = volume.id.clone();
        let attempt = request.attempt.max(1);
        tracing::error!(attempt, reason, "backend failed to create the volume");
        self.remove_leftover(&id).await;
        if attempt < MAX_CREATE_ATTEMPTS {
            let mut tried_hosts = request.tried_hosts;
            let pool = if request.pool.is_empty() {
                self.settings.pool_key()
            } else {
                request.pool
            };
            if !tried_hosts.contains(&pool) {
                tried_hosts.push(pool);
            }
            // The scheduler owns the volume again before it hears of it.
            self.db
                .upsert_worker(&self.worker(&id, SCHEDULER_SERVICE))
                .await
                .map_err(db_error)?;
            let reschedule = ScheduleCreateVolume {
                volume_id: id.clone(),
                size_gib: volume.size_gib,
                volume_type: request.volume_type,
                availability_zone: request.availability_zone,
                extra_specs: request.extra_specs,
                tried_hosts,
                attempt: attempt + 1,
                last_error: reason,
                // A copy can only be made where its source is.
                required_host: if request.snapshot_id.is_empty()
                    && request.source_volume_id.is_empty()
                {
                    String::new()
                } else {
                    self.settings.host.clone()
                },
                snapshot_id: request.snapshot_id,
                source_volume_id: request.source_volume_id,
            };
            tracing::info!(next_attempt = attempt + 1, "rescheduling the volume");
            return Ok(self.scheduler.create_volume(ctx, reschedule).await?);
        }
        let message = format!("creating volume {id} failed after {attempt} attempts: {reason}");
        let host = self.settings.host.as_str();
        let won = self
            .db
            .transition_volume_with_worker(
                &id,
                &[VolumeStatus::Creating],
                VolumeStatus::Error,
                Some(host),
                Some(&message),
                None,
            )
            .await
            .map_err(db_error)?;
        if won {
            volume.status = VolumeStatus::Error;
            volume.error_message = message;
            self.notify(ctx, Priority::Error, "volume.create.error", &volume)
                .await;
        } else {
            tracing::info!("volume changed while failing: left as it is");
        }
        Ok(())
    }

    // === delete ===

    /// The `delete_volume` handler (the reconciler runs it again for an overdue
    /// `deleting`).
    pub(crate) async fn delete(
        &self,
        ctx: &RequestContext,
        request: DeleteVolume,
    ) -> Result<(), Status> {
        let id = request.volume_id.as_str();
        let _busy = self.in_flight.enter(id);
        let Some(mut volume) = self.db.get_volume(id).await.map_err(db_error)? else {
            tracing::info!("volume row already gone: removing any leftover");
            self.remove_leftover(id).await;
            return Ok(());
        };
        if volume.status != VolumeStatus::Deleting {
            tracing::warn!(status = %volume.status, "volume is not deleting: cast ignored");
            return Ok(());
        }
        self.claim(WorkerKind::Volume, id, VolumeStatus::Deleting.as_str())
            .await?;
        self.notify(ctx, Priority::Info, "volume.delete.start", &volume)
            .await;
        // Its attachments are gone (or failed): no export may serve a deleted file.
        let removed = match self.unexport_volume(id).await {
            Ok(()) => self
                .driver
                .delete_volume(id)
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(err),
        };
        match removed {
            Ok(()) => {
                if self.db.delete_volume_row(id).await.map_err(db_error)? {
                    tracing::info!("volume deleted");
                    self.notify(ctx, Priority::Info, "volume.delete.end", &volume)
                        .await;
                }
                Ok(())
            }
            Err(err) => {
                let message = format!("deleting volume {id} failed: {err}");
                tracing::error!(%err, "backend failed to delete the volume");
                let won = self
                    .db
                    .transition_volume_with_worker(
                        id,
                        &[VolumeStatus::Deleting],
                        VolumeStatus::ErrorDeleting,
                        None,
                        Some(&message),
                        None,
                    )
                    .await
                    .map_err(db_error)?;
                if won {
                    volume.status = VolumeStatus::ErrorDeleting;
                    volume.error_message = message;
                    self.notify(ctx, Priority::Error, "volume.delete.error", &volume)
                        .await;
                }
                Ok(())
            }
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
}

/// The status of a database error: `UNAVAILABLE` (the cast is requeued and tried
/// again) when the database is down or busy, else a logged, bare `INTERNAL`.
fn db_error(err: DbError) -> Status {
    match err {
        DbError::Unavailable(_) => {
            tracing::warn!(%err, "database unavailable");
            Status::unavailable(err.to_string())
        }
        other => {
            tracing::error!(err = %other, "database error");
            Status::internal("internal error")
        }
    }
}

#[path = "manager_attach.rs"]
mod attach;
#[path = "manager_extend.rs"]
mod extend;
#[path = "manager_snapshots.rs"]
mod snapshots;

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;

/// A scheduler fake for tests that never reschedule.
#[cfg(test)]
pub(crate) use scoria_common::testing::IdleScheduler;
