//! Prometheus metrics of a process, served with `/healthz` and `/readyz` on
//! `SCORIA_METRICS_LISTEN` (see [`http`]).
//!
//! One registry per process ([`global`]), as the Prometheus clients of other
//! languages keep a default registry: the RPC layer, the database layer and the
//! service runtime record into it without a handle being threaded through every
//! call. Recording is an atomic add on a counter or histogram found by its
//! labels (a read lock and a hash); gauges that mirror state (pool connections,
//! host state, rows per status) are refreshed by *scrape hooks* just before
//! each scrape, so nothing is computed between scrapes.
//!
//! ```text
//!   rpc::client / rpc::server ──▶ bus::BusMetrics ──┐
//!   db (DbError from sqlx)    ──▶ db::DbMetrics   ──┼─▶ Registry ──▶ GET /metrics
//!   service runtime (beats)   ──▶ service::*      ──┘      ▲ hooks refresh gauges first
//!   scheduler / volume / api  ──▶ their own families ──────┘
//! ```
//!
//! Names of our own series start with `scoria_`; the gRPC server series keep
//! go-grpc-prometheus's names. Labels are bounded: topics, method names, codes,
//! pools, statuses; never ids. Several services started in one process (tests)
//! share the registry: the last one's database and broker are the ones watched.

pub mod bus;
pub mod db;
pub mod http;
pub mod service;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures_util::future::BoxFuture;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Metric, Registry},
};
use tonic::Code;

pub use http::{Health, MetricsError, MetricsServer};

use crate::sync::lock;

/// How long the scrape hooks may take together before the scrape goes on
/// with the values they had.
const HOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// The buckets of request and handler durations, in seconds (the Prometheus
/// clients' defaults, which go-grpc-prometheus uses too).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A label set of `N` labels with fixed names.
pub type Labels<const N: usize> = [(&'static str, String); N];

/// A counter family.
pub type CounterFamily<const N: usize> = Family<Labels<N>, Counter>;

/// A histogram family with [`DURATION_BUCKETS`].
pub type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Something run before each scrape to bring gauges up to date.
pub type ScrapeHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The metrics of a process: its registry, its scrape hooks, and the families
/// the shared layers record into.
pub struct Metrics {
    registry: Mutex<Registry>,
    hooks: Mutex<Vec<ScrapeHook>>,
    /// The bus: calls, casts, fanouts, handlers, redeliveries, dead letters.
    pub bus: bus::BusMetrics,
    /// The database: query errors, pool connections.
    pub db: db::DbMetrics,
    /// The service runtime: heartbeats, reconciler and reaper actions.
    pub service: service::ServiceMetrics,
    /// What `/readyz` checks.
    pub health: Health,
}

/// The process's metrics, created on first use.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let mut registry = Registry::default();
        let bus = bus::BusMetrics::new(&mut registry);
        let db = db::DbMetrics::new(&mut registry);
        let service = service::ServiceMetrics::new(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            hooks: Mutex::new(Vec::new()),
            bus,
            db,
            service,
            health: Health::default(),
        }
    })
}

impl Metrics {
    /// Registers `metric` as `name` (counters get `_total` appended on output).
    /// Register each name once per process (keep the family in a `OnceLock`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.registry).register(name, help, metric);
    }

    /// Runs `hook` before every scrape, from now on.
    pub fn on_scrape(&self, hook: ScrapeHook) {
        lock(&self.hooks).push(hook);
    }

    /// Runs the scrape hooks (for at most [`HOOK_TIMEOUT`]), then encodes every
    /// series in the OpenMetrics text format.
    pub async fn render(&self) -> String {
        let hooks: Vec<_> = lock(&self.hooks).iter().map(|hook| hook()).collect();
        if tokio::time::timeout(HOOK_TIMEOUT, futures_util::future::join_all(hooks))
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?HOOK_TIMEOUT, "metrics scrape hooks did not finish in time");
        }
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &lock(&self.registry)) {
            tracing::warn!(%err, "cannot encode the metrics");
        }
        out
    }
}

/// A histogram family of durations.
pub fn duration_family<const N: usize>() -> HistogramFamily<N> {
    Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS))
}

/// The name of a gRPC code as go-grpc-prometheus writes it (`OK`, `NotFound` ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_go_grpc_prometheus_names_them() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NotFound");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::FailedPrecondition), "FailedPrecondition");
        assert_eq!(code_name(Code::from_i32(16)), "Unauthenticated");
    }

    #[tokio::test]
    async fn a_registered_counter_is_rendered_with_its_labels() {
        let family: CounterFamily<1> = Family::default();
        global().register("scoria_test_things", "Things.", family.clone());
        family.get_or_create(&[("kind", "a".to_owned())]).inc();
        let text = global().render().await;
        assert!(
            text.contains("scoria_test_things_total{kind=\"a\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
