//! What the database layer records: query errors (counted where a
//! [`DbError`](crate::db::DbError) is made from a `sqlx` error), and the pool's
//! connections, read from the pool at scrape time.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::global;
use crate::db::Db;

/// The database families.
pub struct DbMetrics {
    unavailable: Counter,
    query: Counter,
    pool_size: Gauge,
    pool_in_use: Gauge,
    pool_max: Gauge,
}

impl DbMetrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let errors =
            prometheus_client::metrics::family::Family::<super::Labels<1>, Counter>::default();
        let unavailable = errors
            .get_or_create(&[("kind", "unavailable".to_owned())])
            .clone();
        let query = errors
            .get_or_create(&[("kind", "query".to_owned())])
            .clone();
        registry.register(
            "scoria_db_query_errors",
            "Database errors, by kind: unavailable (cannot connect, busy, serialization) or query.",
            errors,
        );
        let this = Self {
            unavailable,
            query,
            pool_size: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_max: Gauge::default(),
        };
        registry.register(
            "scoria_db_pool_connections",
            "Connections the pool holds open now.",
            this.pool_size.clone(),
        );
        registry.register(
            "scoria_db_pool_connections_in_use",
            "Connections of the pool in use now.",
            this.pool_in_use.clone(),
        );
        registry.register(
            "scoria_db_pool_connections_max",
            "The most connections the pool opens.",
            this.pool_max.clone(),
        );
        this
    }

    /// Counts one error made from a `sqlx` error.
    pub fn error(&self, unavailable: bool) {
        if unavailable {
            self.unavailable.inc();
        } else {
            self.query.inc();
        }
    }
}

/// Watches `db`: its pool is read at every scrape and `/readyz` pings it.
pub fn watch(db: &Db) {
    static HOOK: OnceLock<()> = OnceLock::new();
    global().health.set_db(db.clone());
    HOOK.get_or_init(|| {
        global().on_scrape(Arc::new(|| {
            let metrics = &global().db;
            if let Some(db) = global().health.db() {
                let pool = db.pool();
                let size = i64::from(pool.size());
                let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
                metrics.pool_size.set(size);
                metrics.pool_in_use.set(size.saturating_sub(idle).max(0));
                metrics
                    .pool_max
                    .set(i64::from(pool.options().get_max_connections()));
            }
            Box::pin(std::future::ready(()))
        }));
    });
}
