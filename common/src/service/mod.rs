//! The service runtime every Scoria service shares (the scheduler, the volume
//! service): connect the database and the broker, serve the bus, run periodic
//! tasks owned by one [`TaskTracker`], write heartbeats into `services`, and
//! drain on shutdown. Each service keeps its own start-up *order*; this module
//! only writes each step once.
//!
//! ```text
//!   connect ──▶ serve (consume, wait ready) ──▶ heartbeat ("ready") ──▶ periodic ...
//!      shutdown ──▶ drain: servers stop consuming and finish in flight,
//!                   periodic tasks stop (under a timeout) ──▶ close: notifier
//!                   flushed (under a timeout), broker, database
//! ```

pub mod overdue;
pub mod periodic;

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use periodic::FirstRun;

use crate::{
    changes::{ChangePublisher, PublisherOptions},
    config::BusConfig,
    db::PoolSize,
    db::{Db, DbError, DbResult},
    metrics::{MetricsError, MetricsServer},
    rpc::{Broker, Dispatcher, Notifier, RpcClient, RpcError, RpcServer, ServerOptions},
};

/// The owner of work the schedulers must finish (defined with the worker entries).
pub use crate::db::SCHEDULER_OWNER;

/// Why a service could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Database(#[from] DbError),
    /// The broker could not be reached in time.
    #[error("message bus: {0}")]
    Bus(#[from] RpcError),
}

/// What a connected service holds.
#[derive(Clone)]
pub struct Connected {
    /// The database.
    pub db: Db,
    /// The broker connection.
    pub broker: Broker,
    /// The RPC client over it.
    pub rpc: RpcClient,
    /// The notifier, publishing as `<binary>.<host>`.
    pub notifier: Notifier,
}

impl Connected {
    /// Flushes the notifier (for at most `within`), then closes the broker and
    /// the database.
    pub async fn close(&self, within: Duration) {
        // Events of the work drained before reach the broker before we leave.
        let _ = tokio::time::timeout(within, self.notifier.flush()).await;
        self.broker.close().await;
        self.db.close().await;
    }
}

/// One running service: its identity, its shutdown signal, its servers and
/// its periodic tasks.
pub struct ServiceRuntime {
    binary: &'static str,
    host: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    servers: Vec<RpcServer>,
    metrics: Option<MetricsServer>,
}

impl ServiceRuntime {
    /// The runtime of `binary` on `host`, stopping when `shutdown` is cancelled.
    pub fn new(binary: &'static str, host: impl Into<String>, shutdown: CancellationToken) -> Self {
        Self {
            binary,
            host: host.into(),
            shutdown,
            tasks: TaskTracker::new(),
            servers: Vec::new(),
            metrics: None,
        }
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listen`
    /// (`service.metrics_listen`; empty: not served) until the drain ends.
    /// Call it first: `/readyz` then tells why the service is not ready yet.
    pub async fn serve_metrics(&mut self, listen: &str) -> Result<(), MetricsError> {
        self.metrics = MetricsServer::start(listen, &self.shutdown).await?;
        Ok(())
    }

    /// Opens the database at `database_url` with a pool of `pool`, then connects
    /// to the broker (waiting up to `within`). `Ok(None)`: shutdown came first
    /// (nothing stays open).
    pub async fn connect(
        &self,
        (database_url, pool): (&str, PoolSize),
        bus: &BusConfig,
        within: Duration,
    ) -> Result<Option<Connected>, ConnectError> {
        let db = Db::connect_pool(database_url, pool).await?;
        crate::metrics::db::watch(&db);
        let name = format!("{}:{}@{}", bus.control_exchange, self.binary, self.host);
        // Watched before it connects: `/readyz` names the broker while we wait.
        let broker = Broker::start(bus.clone(), name);
        crate::metrics::http::watch_broker(&broker);
        let connected = tokio::select! {
            connected = broker.wait_connected(within) => connected,
            _ = self.shutdown.cancelled() => {
                broker.close().await;
                db.close().await;
                return Ok(None);
            }
        };
        if let Err(err) = connected {
            broker.close().await;
            db.close().await;
            return Err(err.into());
        }
        let rpc = RpcClient::new(broker.clone());
        // Every row this process writes is announced on the change feed.
        let db = db.with_change_sink(ChangePublisher::start(
            rpc.clone(),
            PublisherOptions::default(),
            &self.tasks,
            self.shutdown.clone(),
        ));
        let notifier = Notifier::new(broker.clone(), format!("{}.{}", self.binary, self.host));
        Ok(Some(Connected {
            db,
            broker,
            rpc,
            notifier,
        }))
    }

    /// Starts serving `dispatcher` on the queues of `options` and waits up to
    /// `within` until it consumes. `Ok(false)`: shutdown came first. The server
    /// is drained by [`ServiceRuntime::drain`] whatever the outcome.
    pub async fn serve(
        &mut self,
        broker: &Broker,
        options: ServerOptions,
        dispatcher: Dispatcher,
        within: Duration,
    ) -> Result<bool, RpcError> {
        let server = RpcServer::start(broker.clone(), options, dispatcher, self.shutdown.clone())?;
        self.servers.push(server);
        let server = self.servers.last().expect("just pushed");
        let ready = tokio::select! {
            ready = server.wait_ready(within) => ready,
            _ = self.shutdown.cancelled() => return Ok(false),
        };
        match ready {
            Ok(()) => Ok(true),
            Err(_) if self.shutdown.is_cancelled() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Runs `task` every `period` (first as `first` says) until shutdown, owned
    /// by this runtime's tracker, in a span named `name`.
    pub fn periodic<F, Fut>(&self, name: &'static str, period: Duration, first: FirstRun, task: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("periodic", task = name);
        self.tasks
            .spawn(periodic::every(period, first, self.shutdown.clone(), task).instrument(span));
    }

    /// Runs `task` (a loop that watches [`ServiceRuntime::shutdown`] itself) until
    /// it returns, owned by this runtime's tracker, in a span named `name`:
    /// for background work that is not a plain [`ServiceRuntime::periodic`].
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("background", task = name);
        self.tasks.spawn(task.instrument(span));
    }

    /// Writes one heartbeat of this service (in availability zone `zone`).
    pub async fn beat(&self, db: &Db, zone: &str) -> DbResult<()> {
        db.heartbeat(self.binary, &self.host, zone).await?;
        crate::metrics::global().service.heartbeat_written();
        Ok(())
    }

    /// Writes a heartbeat every `interval` (the first one period from now:
    /// start-up writes the first, when the service is ready) until shutdown.
    pub fn heartbeat(&self, db: Db, zone: impl Into<String>, interval: Duration) {
        let (binary, host, zone) = (self.binary, self.host.clone(), zone.into());
        self.periodic("heartbeat", interval, FirstRun::AfterPeriod, move || {
            let (db, host, zone) = (db.clone(), host.clone(), zone.clone());
            async move {
                match db.heartbeat(binary, &host, &zone).await {
                    Ok(()) => crate::metrics::global().service.heartbeat_written(),
                    Err(err) => tracing::warn!(%host, %err, "heartbeat not written"),
                }
            }
        });
    }

    /// Waits for shutdown, then drains: see [`ServiceRuntime::drain`].
    pub async fn run_until_shutdown(self, timeout: Duration) {
        self.shutdown.cancelled().await;
        self.drain(timeout).await;
    }

    /// Drains: the servers stop consuming and finish their handlers in flight
    /// (each under its own drain timeout), and the periodic tasks stop (waited
    /// for at most `timeout`; shutdown is signalled if it was not).
    pub async fn drain(self, timeout: Duration) {
        tracing::info!(binary = self.binary, host = %self.host, "draining");
        self.shutdown.cancel();
        futures_util::future::join_all(self.servers.into_iter().map(RpcServer::shutdown)).await;
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "periodic tasks did not stop in time");
        }
        if let Some(metrics) = self.metrics {
            metrics.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn drain_stops_the_periodic_tasks_and_signals_shutdown() {
        let shutdown = CancellationToken::new();
        let runtime = ServiceRuntime::new("scoria-test", "h", shutdown.clone());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        runtime.periodic(
            "count",
            Duration::from_millis(10),
            FirstRun::Now,
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(())
            },
        );
        runtime.periodic("stuck", Duration::from_millis(10), FirstRun::Now, || {
            tokio::time::sleep(Duration::from_secs(3600))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(runs.load(Ordering::SeqCst) >= 2);
        tokio::time::timeout(
            Duration::from_secs(1),
            runtime.drain(Duration::from_secs(5)),
        )
        .await
        .expect("drained at once: a run in progress is dropped");
        assert!(shutdown.is_cancelled());
        let after = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            after,
            "nothing runs after the drain"
        );
    }

    #[tokio::test]
    async fn run_until_shutdown_drains_when_signalled() {
        let shutdown = CancellationToken::new();
        let runtime = ServiceRuntime::new("scoria-test", "h", shutdown.clone());
        runtime.periodic(
            "idle",
            Duration::from_secs(60),
            FirstRun::AfterPeriod,
            || std::future::ready(()),
        );
        let running = tokio::spawn(runtime.run_until_shutdown(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!running.is_finished());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), running)
            .await
            .expect("stopped")
            .expect("no panic");
    }

    #[tokio::test]
    async fn heartbeats_are_written_every_interval_after_the_first() {
        let db = crate::testing::TempDb::new().await;
        let shutdown = CancellationToken::new();
        let runtime = ServiceRuntime::new("scoria-test", "h@b", shutdown.clone());
        runtime.heartbeat(db.db().clone(), "az1", Duration::from_millis(50));
        assert!(
            db.get_service("scoria-test", "h@b")
                .await
                .expect("read")
                .is_none(),
            "the first beat is start-up's"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        let service = db
            .get_service("scoria-test", "h@b")
            .await
            .expect("read")
            .expect("written");
        assert_eq!(service.availability_zone, "az1");
        runtime.drain(Duration::from_secs(1)).await;
    }
}
