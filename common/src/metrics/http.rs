//! The HTTP listener of a process (`SCORIA_METRICS_LISTEN`): `GET /metrics`
//! (Prometheus, OpenMetrics text), `GET /healthz` (the process is alive: 200)
//! and `GET /readyz` (200 only while the database answers and the broker is
//! connected and not blocking publishers; 503 with the reasons otherwise).
//!
//! ```text
//!   /readyz ─▶ database watched? ── no ─▶ 503 "database: not connected yet"
//!                 │ yes: ping (2 s) ── err ─▶ 503 "database: <why>"
//!              broker watched? ── no ─▶ 503 "message broker: not connected yet"
//!                 │ yes: connected? not blocked? ── else ─▶ 503 "message broker: <why>"
//!                 ▼
//!               200 "ready"
//! ```

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::global;
use crate::{db::Db, rpc::Broker, sync::lock};

/// The configuration key, and its variable, an error names.
const KEY: &str = "SCORIA_METRICS_LISTEN (service.metrics_listen)";

/// How long `/readyz` waits for the database's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not `host:port`.
    #[error("{KEY} = {value:?} is not a host:port address: {reason}")]
    BadAddress {
        /// The configured value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The address could not be bound (taken, not local ...).
    #[error("cannot listen on {KEY} = {value:?}: {source}")]
    Bind {
        /// The configured value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
}

// === Health ===

/// What `/readyz` checks: the database and broker a service registered.
#[derive(Default)]
pub struct Health {
    db: Mutex<Option<Db>>,
    broker: Mutex<Option<Broker>>,
}

impl Health {
    /// Checks `db` from now on.
    pub fn set_db(&self, db: Db) {
        *lock(&self.db) = Some(db);
    }

    /// The database checked, if any.
    pub fn db(&self) -> Option<Db> {
        lock(&self.db).clone()
    }

    /// Checks `broker` from now on.
    pub fn set_broker(&self, broker: Broker) {
        *lock(&self.broker) = Some(broker);
    }

    /// The broker checked, if any.
    pub fn broker(&self) -> Option<Broker> {
        lock(&self.broker).clone()
    }

    /// Why the process is not ready, one reason a line; empty when ready.
    pub async fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        match self.db() {
            None => why.push("database: not connected yet".to_owned()),
            Some(db) => match tokio::time::timeout(PING_TIMEOUT, db.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => why.push(format!("database: {err}")),
                Err(_) => why.push(format!("database: no answer within {PING_TIMEOUT:?}")),
            },
        }
        match self.broker() {
            None => why.push("message broker: not connected yet".to_owned()),
            Some(broker) if !broker.is_connected() => why.push(format!(
                "message broker: not connected (SCORIA_AMQP_URL {})",
                broker.redacted_url()
            )),
            Some(broker) if broker.is_blocked() => why.push(
                "message broker: blocks publishers (connection.blocked: a resource alarm)"
                    .to_owned(),
            ),
            Some(_) => {}
        }
        why
    }
}

/// Watches `broker`: `/readyz` checks it, and `scoria_rpc_broker_connected` /
/// `scoria_rpc_broker_blocked` mirror it at every scrape.
pub fn watch_broker(broker: &Broker) {
    static HOOK: OnceLock<()> = OnceLock::new();
    global().health.set_broker(broker.clone());
    HOOK.get_or_init(|| {
        let (connected, blocked) = (Gauge::<i64>::default(), Gauge::<i64>::default());
        global().register(
            "scoria_rpc_broker_connected",
            "1 while the connection to the broker is up.",
            connected.clone(),
        );
        global().register(
            "scoria_rpc_broker_blocked",
            "1 while the broker blocks this connection's publishers (resource alarm).",
            blocked.clone(),
        );
        global().on_scrape(Arc::new(move || {
            if let Some(broker) = global().health.broker() {
                connected.set(i64::from(broker.is_connected()));
                blocked.set(i64::from(broker.is_blocked()));
            }
            Box::pin(std::future::ready(()))
        }));
    });
}

// === MetricsServer ===

/// The running listener; stops when dropped or when its shutdown token is
/// cancelled.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `listen` (`host:port`; port 0 picks a free one; empty: `Ok(None)`,
    /// nothing served) and serves until `shutdown`. Logs the bound address.
    pub async fn start(
        listen: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, MetricsError> {
        let listen = listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        let addrs = resolve(listen).await?;
        let listener = TcpListener::bind(addrs.as_slice())
            .await
            .map_err(|source| MetricsError::Bind {
                value: listen.to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MetricsError::Bind {
            value: listen.to_owned(),
            source,
        })?;
        let stop = shutdown.child_token();
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz));
        let until = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::warn!(%err, "the metrics listener failed");
            }
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(Some(Self { addr, stop, task }))
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the listener to close.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The socket addresses `listen` names.
async fn resolve(listen: &str) -> Result<Vec<SocketAddr>, MetricsError> {
    let bad = |reason: String| MetricsError::BadAddress {
        value: listen.to_owned(),
        reason,
    };
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = split_host_port(listen).map_err(|r| bad(r.to_owned()))?;
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad(format!("{host:?} resolves to no address")));
    }
    Ok(addrs)
}

/// `host:port` split; the port must be a number.
fn split_host_port(listen: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = listen.rsplit_once(':').ok_or("no :port")?;
    let port = port
        .parse()
        .map_err(|_| "the port is not a number 0-65535")?;
    if host.is_empty() {
        return Err("no host (use 0.0.0.0:<port> for every interface)");
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        global().render().await,
    )
}

async fn readyz() -> impl IntoResponse {
    let why = global().health.not_ready().await;
    if why.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", why.join("\n")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_and_checked() {
        assert_eq!(split_host_port("localhost:9100"), Ok(("localhost", 9100)));
        assert_eq!(split_host_port("[::1]:0"), Ok(("::1", 0)));
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port("localhost:http").is_err());
        assert!(split_host_port(":9100").is_err());
    }

    #[tokio::test]
    async fn a_bad_address_names_the_variable() {
        let token = CancellationToken::new();
        let err = MetricsServer::start("nowhere", &token)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("SCORIA_METRICS_LISTEN"), "{err}");
        assert!(matches!(MetricsServer::start("", &token).await, Ok(None)));
    }

    #[tokio::test]
    async fn a_port_taken_names_the_variable_and_port_0_binds() {
        let token = CancellationToken::new();
        let server = MetricsServer::start("127.0.0.1:0", &token)
            .await
            .expect("bound")
            .expect("served");
        let taken = server.local_addr().to_string();
        let err = MetricsServer::start(&taken, &token)
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, MetricsError::Bind { .. }), "{err}");
        assert!(err.to_string().contains("SCORIA_METRICS_LISTEN"), "{err}");
        server.stop().await;
    }
}
