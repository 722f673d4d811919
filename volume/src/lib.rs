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
#![forbid(unsafe_code)]

pub mod config;
pub mod driver;
pub mod export;
mod in_flight;
mod locks;
pub mod manager;
pub mod reconciler;
pub mod shared;
#[cfg(test)]
mod testing;

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    config::ConfigError,
    db::{Db, DbError},
    ops::{SchedulerClient, VOLUME_TOPIC, VolumeOps, volume_dispatcher, volume_topic},
    rpc::{Broker, Notifier, RpcClient, RpcError, RpcServer, ServerOptions},
};
use tokio::time::MissedTickBehavior;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::Config;
use driver::DriverError;
pub use manager::{ManagerSettings, VolumeManager};

/// The binary's name, as it appears in logs, on the bus and in `services`.
pub const BINARY: &str = "scoria-volume";

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
    /// The backend could not be set up.
    #[error("backend: {0}")]
    Driver(#[from] DriverError),
    /// The exports of the last run could not be restored.
    #[error("restoring the exports of the last run failed: {status}")]
    Exports {
        /// Why.
        status: tonic::Status,
    },
    /// The first capability report could not be sent.
    #[error("first capability report of {host} failed: {status}")]
    Report {
        /// The service's host.
        host: String,
        /// Why.
        status: tonic::Status,
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
    let driver = driver::from_config(&config)?;
    let db = Db::connect(&config.database_url()).await?;
    let connection_name = format!("{}:{BINARY}@{host}", config.bus.control_exchange);
    let within = config.bus.publish_timeout().max(STARTUP_TIMEOUT);
    let broker = match Broker::connect(config.bus.clone(), connection_name, within).await {
        Ok(broker) => broker,
        Err(err) => {
            db.close().await;
            return Err(err.into());
        }
    };
    let rpc = RpcClient::new(broker.clone());
    let notifier = Notifier::new(broker.clone(), format!("{BINARY}.{host}"));
    let manager = Arc::new(
        VolumeManager::new(
            db.clone(),
            driver,
            Arc::new(SchedulerClient::new(rpc)),
            Arc::new(notifier.clone()),
            ManagerSettings::from_config(&config),
        )
        .with_operation_deadline(config.operation_deadline())
        .with_exports(Arc::new(export::ExportManager::new(
            config.export.host.clone(),
            config.export_ports(),
            config.export_run_dir(),
        ))),
    );
    tracing::info!(
        %host,
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
            serve(&config, &db, &broker, manager.clone(), shutdown).await
        }
        Err(status) => Err(Error::Exports { status }),
    };
    manager.release_exports().await;
    // Events of the work drained above reach the broker before we leave.
    let _ = tokio::time::timeout(config.bus.publish_timeout(), notifier.flush()).await;
    broker.close().await;
    db.close().await;
    match &result {
        Ok(()) => tracing::info!(%host, "{BINARY} stopped"),
        Err(err) => tracing::error!(%host, %err, "{BINARY} failed"),
    }
    result
}

/// Serves the bus, reports and heartbeats until `shutdown`.
async fn serve(
    config: &Config,
    db: &Db,
    broker: &Broker,
    manager: Arc<VolumeManager>,
    shutdown: CancellationToken,
) -> Result<()> {
    let host = config.host();
    let drain = config.service.drain_timeout();
    let ops: Arc<dyn VolumeOps> = manager.clone();
    let topic = RpcServer::start(
        broker.clone(),
        ServerOptions::topic(volume_topic(&host)).with_drain_timeout(drain),
        volume_dispatcher(ops.clone(), &host),
        shutdown.clone(),
    )?;
    let fanout = match RpcServer::start(
        broker.clone(),
        ServerOptions::fanout_only(VOLUME_TOPIC).with_drain_timeout(drain),
        volume_dispatcher(ops, &host),
        shutdown.clone(),
    ) {
        Ok(server) => server,
        Err(err) => {
            topic.shutdown().await;
            return Err(err.into());
        }
    };
    let result = async {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            ready = async { tokio::try_join!(topic.wait_ready(STARTUP_TIMEOUT), fanout.wait_ready(STARTUP_TIMEOUT)) } => { ready?; }
        }
        let ctx = RequestContext::internal(BINARY);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            sent = manager.report_capabilities(&ctx) => {
                sent.map_err(|status| Error::Report { host: host.clone(), status })?;
            }
        }
        db.heartbeat(BINARY, &host, &config.volume.availability_zone).await?;
        tracing::info!(%host, "{BINARY} ready: consuming, capabilities reported, heartbeat written");
        Ok(true)
    }
    .await;
    if let Ok(true) = result {
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeats(db.clone(), config.clone(), shutdown.clone()));
        tasks.spawn(reconcile(
            reconciler::Reconciler::new(manager.shared(), manager.clone()),
            config.reconcile_interval(),
            shutdown.clone(),
        ));
        tasks.spawn(reports(manager, config.report_interval(), shutdown.clone()));
        tasks.close();
        shutdown.cancelled().await;
        tasks.wait().await;
    }
    tracing::info!(%host, "draining");
    tokio::join!(topic.shutdown(), fanout.shutdown());
    result.map(|_| ())
}

/// An interval ticking every `period`, the first tick one period from now.
fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Writes a heartbeat every heartbeat interval until `shutdown`.
async fn heartbeats(db: Db, config: Config, shutdown: CancellationToken) {
    let host = config.host();
    let mut interval = every(config.heartbeat_interval());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(err) = db
            .heartbeat(BINARY, &host, &config.volume.availability_zone)
            .await
        {
            tracing::warn!(%host, %err, "heartbeat not written");
        }
    }
}

/// Resolves this service's overdue work now (start-up) and every `period`
/// until `shutdown`.
async fn reconcile(
    reconciler: reconciler::Reconciler,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // Errors are logged by the run's span.
            _ = reconciler.run_once() => {}
        }
    }
}

/// Sends a capability report every `period` until `shutdown`.
async fn reports(manager: Arc<VolumeManager>, period: Duration, shutdown: CancellationToken) {
    let mut interval = every(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let ctx = RequestContext::internal(BINARY);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // Errors are logged by the report's span.
            _ = manager.report_capabilities(&ctx) => {}
        }
    }
}
