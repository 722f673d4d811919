//! `scoria-volume`: the volume service (cinder-volume). It owns one backend,
//! `host@backend`, serves its topic `volume.<host@backend>` (create, delete) and the
//! `volume` fanout (capability requests), reports capabilities to the schedulers
//! and heartbeats into the `services` table.
//!
//! Start-up order matters to whoever waits for the service: the bus servers consume
//! first, then one capability report goes out, and only then the first heartbeat
//! is written, so a heartbeat means "ready".
//!
//! Attachments' exports (`qemu-nbd`) outlive the service: before the bus is
//! served, the exports of the last run are adopted (or started again) and stuck
//! attachments settled; on shutdown the exports are released, not stopped, so NBD
//! clients stay connected across a restart, SIGTERM or SIGKILL alike.
//!
//! A member of a cluster (`volume.cluster`, Cinder's `cluster`) serves the
//! cluster's topic `volume.<cluster@backend>` beside the other members (they
//! compete for its shared queue), reports the cluster's one pool and gives its
//! volumes that host; its heartbeat, its `services` row (which names the
//! cluster) and its own server queue `volume.<cluster@backend>.<host>` are its
//! own, under `<host>@<backend>`.
#![forbid(unsafe_code)]

pub mod backup;
pub mod backup_index;
pub mod config;
pub mod driver;
pub mod error;
pub mod export;
mod in_flight;
mod locks;
pub mod manager;
mod migration;
pub mod reconciler;
pub mod shared;
#[cfg(test)]
mod testing;

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    config::{ConfigError, ProcessConfig},
    db::{Db, DbError},
    ops::{SchedulerClient, VOLUME_TOPIC, VolumeOps, volume_dispatcher, volume_topic},
    rpc::{Broker, RpcError, ServerOptions},
    service::{ConnectError, FirstRun, ServiceRuntime},
};
use tokio_util::sync::CancellationToken;

pub use config::Config;
use driver::DriverError;
pub use error::VolumeError;
pub use manager::{ManagerSettings, VolumeManager};

/// The binary's name, as it appears in logs, on the bus and in `services`.
pub const BINARY: &str = "scoria-volume";
/// A volume service's database pool on PostgreSQL unless
/// `database.max_connections` says otherwise: its work waits on the backend far
/// longer than on rows, and one deployment runs many of them (README, "Several
/// instances").
pub const DB_POOL_CONNECTIONS: u32 = 6;

/// How long start-up waits for the broker and for the servers to consume, at least.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the service could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Db(#[from] DbError),
    /// The bus could not be reached or served.
    #[error("message bus: {0}")]
    Rpc(#[from] RpcError),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] scoria_common::metrics::MetricsError),
    /// The backend could not be set up.
    #[error("backend: {0}")]
    Driver(#[from] DriverError),
    /// The exports of the last run could not be restored.
    #[error("restoring the exports of the last run failed: {0}")]
    Exports(#[source] VolumeError),
    /// The backup target could not be opened.
    #[error("backup target: {0}")]
    Backup(#[source] Box<backup::BackupError>),
    /// The first capability report could not be sent.
    #[error("first capability report of {host} failed: {source}")]
    Report {
        /// The service's host.
        host: String,
        /// Why.
        #[source]
        source: VolumeError,
    },
}

/// A `Result` alias for [`run`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the service until `shutdown` is cancelled; then stops consuming, lets the
/// handlers in flight finish (up to the drain timeout), closes the bus and the
/// database, and returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    let host = config.host();
    let member = config.member();
    let driver = driver::registry::build(&driver_settings(&config))?;
    let mut runtime = ServiceRuntime::new(BINARY, member.clone(), shutdown);
    runtime
        .serve_metrics(&config.service.metrics_listen)
        .await?;
    let within = config.bus.publish_timeout().max(STARTUP_TIMEOUT);
    let connected = runtime
        .connect(
            (
                &config.database_url(),
                config.database.pool_size(DB_POOL_CONNECTIONS),
            ),
            &config.bus,
            within,
        )
        .await
        .map_err(|err| match err {
            ConnectError::Database(err) => Error::Db(err),
            ConnectError::Bus(err) => Error::Rpc(err),
        })?;
    let Some(connected) = connected else {
        return Ok(());
    };
    let backups = backup_engine(&config, &connected.db).map_err(|e| Error::Backup(Box::new(e)))?;
    let manager = Arc::new(
        VolumeManager::new(
            connected.db.clone(),
            driver,
            Arc::new(SchedulerClient::new(connected.rpc.clone())),
            Arc::new(connected.notifier.clone()),
            ManagerSettings::from_config(&config),
        )
        .with_operation_deadline(config.operation_deadline())
        .with_peers(Arc::new(scoria_common::ops::VolumeClient::new(
            connected.rpc.clone(),
        )))
        .with_member(member.clone())
        .with_backups(backups)
        .with_exports(Arc::new(export::ExportManager::new(
            config.export.host.clone(),
            config.export_ports(),
            config.export_run_dir(),
        ))),
    );
    tracing::info!(
        %host,
        %member,
        exchange = %config.bus.control_exchange,
        driver = %config.volume.driver,
        data_dir = %config.service.data_dir.display(),
        "{BINARY} starting"
    );
    // The exports of the last run are adopted (or started again) before the first
    // call; they outlive this run too: released, not stopped, at the end.
    let result = match manager.restore_exports().await {
        Ok(_) => {
            // Logged by its span; the reconciler tries again.
            let _ = reconciler::Reconciler::new(manager.shared(), manager.clone())
                .reconcile_attachments()
                .await;
            start(
                &config,
                &connected.db,
                &connected.broker,
                manager.clone(),
                &mut runtime,
            )
            .await
        }
        Err(err) => Err(Error::Exports(err)),
    };
    if let Ok(true) = result {
        runtime
            .run_until_shutdown(config.service.drain_timeout())
            .await;
    } else {
        runtime.drain(config.service.drain_timeout()).await;
    }
    manager.release_exports().await;
    connected.close(config.bus.publish_timeout()).await;
    match &result {
        Ok(_) => tracing::info!(%host, "{BINARY} stopped"),
        Err(err) => tracing::error!(%host, %err, "{BINARY} failed"),
    }
    result.map(|_| ())
}

/// How old a temp object on the backup target must be to be swept at start.
const TEMP_OBJECT_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The backup engine over the target `config` names, counting chunks in `db`;
/// the scratch files a killed run left behind are removed first, and the
/// target's stale temp objects in the background.
fn backup_engine(
    config: &Config,
    db: &Db,
) -> std::result::Result<Arc<backup::BackupEngine>, backup::BackupError> {
    let data_dir = &config.service.data_dir;
    let settings = config.backup.settings(data_dir);
    let target = backup::open_target(&settings)?;
    let scratch = config::BackupSection::scratch_dir(data_dir);
    std::fs::create_dir_all(&scratch).map_err(|source| backup::BackupError::Io {
        op: "create the scratch directory",
        path: scratch.clone(),
        source,
    })?;
    let swept = backup::sweep_scratch(&scratch)?;
    if swept > 0 {
        tracing::info!(swept, "removed the scratch files of an earlier run");
    }
    tracing::info!(target = %target.describe(), "backup target opened");
    // Temp objects of writes a crash cut short: an hour old at least, so no
    // other service's write in flight on a shared target is taken.
    tokio::spawn({
        let target = target.clone();
        async move {
            match target.sweep_temps(TEMP_OBJECT_AGE).await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(
                    swept,
                    "removed temp objects a crash left on the backup target"
                ),
                Err(err) => tracing::warn!(%err, "cannot sweep the backup target's temp objects"),
            }
        }
    });
    let index = Arc::new(backup_index::DbChunkIndex::new(db.clone()));
    Ok(Arc::new(backup::BackupEngine::new(target, index, scratch)))
}

/// The driver settings `config` gives.
fn driver_settings(config: &Config) -> driver::DriverSettings {
    driver::DriverSettings {
        name: config.volume.driver.clone(),
        dir: config.backend_dir(),
        capacity_gib: config.volume.capacity_gib,
    }
}

/// Serves the bus, sends the first report, writes the first heartbeat (in this
/// order: a heartbeat means "ready"), then starts the heartbeats, the reconciler
/// and the reports. `Ok(false)`: shutdown came first.
async fn start(
    config: &Config,
    db: &Db,
    broker: &Broker,
    manager: Arc<VolumeManager>,
    runtime: &mut ServiceRuntime,
) -> Result<bool> {
    let host = config.host();
    let drain = config.service.drain_timeout();
    let ops: Arc<dyn VolumeOps> = manager.clone();
    let mut topic = ServerOptions::topic(volume_topic(&host)).with_drain_timeout(drain);
    if config.cluster().is_some() {
        // What must reach this member (and no other) comes on its own queue.
        topic = topic.with_server(config.service.host.clone());
    }
    if !runtime
        .serve(
            broker,
            topic,
            volume_dispatcher(ops.clone(), &host),
            STARTUP_TIMEOUT,
        )
        .await?
    {
        return Ok(false);
    }
    let fanout = ServerOptions::fanout_only(VOLUME_TOPIC).with_drain_timeout(drain);
    if !runtime
        .serve(
            broker,
            fanout,
            volume_dispatcher(ops, &host),
            STARTUP_TIMEOUT,
        )
        .await?
    {
        return Ok(false);
    }
    let ctx = RequestContext::internal(BINARY);
    tokio::select! {
        _ = runtime.shutdown().cancelled() => return Ok(false),
        sent = manager.report_capabilities(&ctx) => {
            sent.map_err(|source| Error::Report { host: host.clone(), source })?;
        }
    }
    let zone = &config.volume.availability_zone;
    runtime.beat(db, zone).await?;
    // The row names its cluster (none: cleared, for a member that left one).
    let cluster = config.cluster().map(|_| host.as_str()).unwrap_or_default();
    db.set_service_cluster(BINARY, &config.member(), cluster)
        .await?;
    tracing::info!(%host, member = %config.member(), "{BINARY} ready: consuming, capabilities reported, heartbeat written");

    runtime.heartbeat(db.clone(), zone.clone(), config.heartbeat_interval());
    let reconciler = Arc::new(reconciler::Reconciler::new(
        manager.shared(),
        manager.clone(),
    ));
    // At once (start-up), then every period; errors are logged by the run's span.
    runtime.periodic(
        "reconciler",
        config.reconcile_interval(),
        FirstRun::Now,
        move || {
            let reconciler = reconciler.clone();
            async move {
                let _ = reconciler.run_once().await;
            }
        },
    );
    runtime.periodic(
        "reports",
        config.report_interval(),
        FirstRun::AfterPeriod,
        move || {
            let manager = manager.clone();
            async move {
                let ctx = RequestContext::internal(BINARY);
                // Errors are logged by the report's span.
                let _ = manager.report_capabilities(&ctx).await;
            }
        },
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_knows_the_drivers_the_registry_builds() {
        assert_eq!(crate::config::DRIVERS, crate::driver::registry::DRIVERS);
    }
}
