//! `scoria-scheduler`: picks a backend for each new volume (cinder-scheduler's
//! filter scheduler).
//!
//! Start-up, in this order (integration tests rely on it):
//! 1. connect the database and the broker;
//! 2. listen on the `scheduler` fanout for capability reports;
//! 3. ask every volume service to report (`publish_service_capabilities`);
//! 4. wait (up to `startup_wait_ms`) for a report from every volume service the
//!    `services` table shows up, so the first requests see every backend;
//! 5. consume the shared `scheduler` queue (competing with other schedulers);
//! 6. write the first heartbeat: the row is the scheduler's "ready" signal.
//!
//! Then heartbeat, refresh the `services` snapshot and drop stale reports in the
//! background until shutdown, which stops the servers (draining handlers in
//! flight) and closes the broker and the database.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod filters;
pub mod host_state;
pub mod manager;
pub mod metrics;
pub mod reaper;
pub mod weighers;

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    config::{ConfigError, ProcessConfig},
    db::{Db, DbError},
    model::now_ms,
    ops::{
        SCHEDULER_TOPIC, SchedulerClient, SchedulerOps, VolumeClient, VolumeOps,
        scheduler_dispatcher,
    },
    rpc::{RpcError, ServerOptions},
    service::{ConnectError, Connected, FirstRun, ServiceRuntime},
    settle::Settler,
};
use scoria_proto::bus::PublishCapabilities;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::SchedulerError;

use crate::{host_state::HostManager, manager::SchedulerManager};

/// The binary's name, as it appears in logs, on the bus and in `services`.
pub const BINARY: &str = "scoria-scheduler";
/// The scheduler's database pool on PostgreSQL unless `database.max_connections`
/// says otherwise: placements, the reaper and the heartbeat read and write a
/// few rows each (README, "Several instances").
pub const DB_POOL_CONNECTIONS: u32 = 8;

/// How long start-up waits for the broker's first connection.
const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the periodic tasks may take to stop at shutdown.
const DRAIN_TASKS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to consume its queues.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for reports when no volume service is up.
const STARTUP_WAIT_WITHOUT_SERVICES: Duration = Duration::from_secs(1);
/// How often start-up checks whether every live volume service has reported.
const STARTUP_POLL: Duration = Duration::from_millis(100);

/// Why the scheduler could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Database(#[from] DbError),
    /// The broker could not be reached, or a server could not start.
    #[error("message bus: {0}")]
    Bus(#[from] RpcError),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] scoria_common::metrics::MetricsError),
}

/// A `Result` alias for [`run`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the scheduler until `shutdown` is cancelled; returns `Ok` after a clean drain.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    config.scheduler.validate()?;
    let settings = &config.scheduler;
    let host = config.service.host.clone();
    let mut runtime = ServiceRuntime::new(BINARY, host.clone(), shutdown);
    runtime
        .serve_metrics(&config.service.metrics_listen)
        .await?;
    let connected = runtime
        .connect(
            (
                &config.database_url(),
                config.database.pool_size(DB_POOL_CONNECTIONS),
            ),
            &config.bus,
            BROKER_CONNECT_TIMEOUT,
        )
        .await
        .map_err(|err| match err {
            ConnectError::Database(err) => Error::Database(err),
            ConnectError::Bus(err) => Error::Bus(err),
        })?;
    let Some(connected) = connected else {
        return Ok(());
    };
    let settler = Settler::new(connected.db.clone(), Arc::new(connected.notifier.clone()));
    let hosts = Arc::new(HostManager::new(
        settings.capability_stale(),
        settings.service_down_time(),
    ));
    refresh_services(&connected.db, &hosts).await;
    metrics::watch(
        connected.db.clone(),
        hosts.clone(),
        settings.service_down_time(),
    );
    let outcome = match SchedulerManager::new(
        settings,
        hosts.clone(),
        Arc::new(VolumeClient::new(connected.rpc.clone())),
        settler.clone(),
    ) {
        Ok(manager) => {
            let services_changed = manager.services_changed();
            let scheduler = Scheduler {
                config: &config,
                connected: &connected,
                hosts: &hosts,
                settler: &settler,
                ops: Arc::new(manager),
                services_changed,
            };
            scheduler.start(&mut runtime).await
        }
        Err(unknown) => Err(ConfigError::Value {
            key: "scheduler.enabled_filters",
            reason: format!("unknown filter {unknown:?}"),
        }
        .into()),
    };
    if matches!(outcome, Ok(true)) {
        runtime.run_until_shutdown(DRAIN_TASKS_TIMEOUT).await;
    } else {
        runtime.drain(DRAIN_TASKS_TIMEOUT).await;
    }
    connected.close(config.bus.publish_timeout()).await;
    tracing::info!("{BINARY} stopped");
    outcome.map(|_| ())
}

/// What a running scheduler holds.
struct Scheduler<'a> {
    config: &'a Config,
    connected: &'a Connected,
    hosts: &'a Arc<HostManager>,
    settler: &'a Settler,
    ops: Arc<dyn SchedulerOps>,
    services_changed: Arc<Notify>,
}

impl Scheduler<'_> {
    /// Start-up steps 2-6, then the background tasks. `Ok(false)`: shutdown
    /// came first.
    async fn start(self, runtime: &mut ServiceRuntime) -> Result<bool> {
        let Self {
            config,
            connected,
            hosts,
            settler,
            ops,
            services_changed,
        } = self;
        let Connected {
            db, broker, rpc, ..
        } = connected;
        let settings = &config.scheduler;
        let host = &config.service.host;
        let drain = config.service.drain_timeout();
        let reports = ServerOptions::fanout_only(SCHEDULER_TOPIC).with_drain_timeout(drain);
        if !runtime
            .serve(
                broker,
                reports,
                scheduler_dispatcher(ops.clone()),
                SERVER_READY_TIMEOUT,
            )
            .await?
        {
            return Ok(false);
        }

        // Creates sent while we wait for reports queue up instead of being refused.
        if let Err(err) = scoria_common::rpc::server::declare_work_queue(
            broker,
            &scoria_common::rpc::Target::topic(SCHEDULER_TOPIC)?,
        )
        .await
        {
            tracing::warn!(%err, "could not declare the scheduler queue early");
        }
        let ctx = RequestContext::internal(BINARY);
        let ask = PublishCapabilities {
            requester: format!("{BINARY}@{host}"),
        };
        if let Err(err) = VolumeClient::new(rpc.clone())
            .publish_service_capabilities(&ctx, ask)
            .await
        {
            tracing::warn!(error = %err, "could not ask the volume services to report");
        }
        wait_for_reports(db, hosts, settings.startup_wait(), runtime.shutdown()).await;

        let work = ServerOptions::topic(SCHEDULER_TOPIC).with_drain_timeout(drain);
        if !runtime
            .serve(
                broker,
                work,
                scheduler_dispatcher(ops),
                SERVER_READY_TIMEOUT,
            )
            .await?
        {
            return Ok(false);
        }
        if let Err(err) = runtime.beat(db, "").await {
            tracing::warn!(error = %err, "heartbeat failed");
        }
        tracing::info!(%host, exchange = %config.bus.control_exchange, pools = hosts.len(), "{BINARY} ready");

        runtime.heartbeat(db.clone(), "", settings.heartbeat_interval());
        services_loop(
            runtime,
            db.clone(),
            hosts.clone(),
            settings.services_refresh(),
            services_changed,
        );
        let reaper = Arc::new(reaper::Reaper::new(
            settler.clone(),
            Arc::new(SchedulerClient::new(rpc.clone())),
            Arc::new(VolumeClient::new(rpc.clone())),
            reaper::ReaperSettings::from_section(settings),
        ));
        runtime.periodic(
            "reaper",
            settings.reaper_interval(),
            FirstRun::AfterPeriod,
            move || {
                let reaper = reaper.clone();
                // Errors are logged by the run's span.
                async move {
                    let _ = reaper.run_once().await;
                }
            },
        );
        Ok(true)
    }
}

/// Waits until every volume service the `services` table shows up has
/// reported, for at most `within` (at most a second if none is up).
async fn wait_for_reports(
    db: &Db,
    hosts: &HostManager,
    within: Duration,
    shutdown: &CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let mut last_refresh = started;
    loop {
        let live = hosts.live_services(now_ms());
        if !live.is_empty() && hosts.has_reports_from(&live) {
            tracing::info!(services = live.len(), waited = ?started.elapsed(), "every live volume service reported");
            return;
        }
        let limit = if live.is_empty() {
            within.min(STARTUP_WAIT_WITHOUT_SERVICES)
        } else {
            within
        };
        if started.elapsed() >= limit {
            if !live.is_empty() {
                tracing::warn!(services = ?live, waited = ?started.elapsed(), "not every live volume service reported in time; starting anyway");
            }
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STARTUP_POLL) => {}
        }
        if last_refresh.elapsed() >= Duration::from_millis(500) {
            refresh_services(db, hosts).await;
            last_refresh = tokio::time::Instant::now();
        }
    }
}

async fn refresh_services(db: &Db, hosts: &HostManager) {
    match db.list_services().await {
        Ok(services) => hosts.set_services(&services),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the services table; keeping the last snapshot")
        }
    }
}

/// Re-reads `services` periodically (or at once when a report comes from an
/// unknown host) and drops stale reports, until shutdown.
fn services_loop(
    runtime: &ServiceRuntime,
    db: Db,
    hosts: Arc<HostManager>,
    every: Duration,
    changed: Arc<Notify>,
) {
    let shutdown = runtime.shutdown().clone();
    // Not a plain periodic task: a notification runs it early too.
    runtime.spawn("services", async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
                _ = changed.notified() => {}
            }
            refresh_services(&db, &hosts).await;
            let dropped = hosts.prune(now_ms());
            if dropped > 0 {
                tracing::info!(dropped, "dropped pools with stale capability reports");
            }
        }
    });
}
