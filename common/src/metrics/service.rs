//! What the service runtime records: the age of the service's last heartbeat,
//! and the actions of the periodic repairers (a volume service's reconciler, a
//! scheduler's reaper) by kind.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicI64, Ordering},
};

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{CounterFamily, global};
use crate::model::now_ms;

/// The service runtime families.
pub struct ServiceMetrics {
    /// When the last heartbeat was written, ms since the epoch (0: never).
    last_beat_ms: AtomicI64,
    reconciler: CounterFamily<1>,
    reaper: CounterFamily<1>,
}

impl ServiceMetrics {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let this = Self {
            last_beat_ms: AtomicI64::new(0),
            reconciler: Family::default(),
            reaper: Family::default(),
        };
        registry.register(
            "scoria_reconciler_actions",
            "What a volume service's reconciler did with overdue work, by kind.",
            this.reconciler.clone(),
        );
        registry.register(
            "scoria_reaper_actions",
            "What a scheduler's reaper did with orphaned or overdue work, by kind.",
            this.reaper.clone(),
        );
        this
    }

    /// Notes a heartbeat just written. The first one starts exporting
    /// `scoria_service_heartbeat_age_seconds` (processes that never beat, the
    /// API, do not show it).
    pub fn heartbeat_written(&self) {
        static GAUGE: OnceLock<Gauge<f64, std::sync::atomic::AtomicU64>> = OnceLock::new();
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
        GAUGE.get_or_init(|| {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            global().register(
                "scoria_service_heartbeat_age_seconds",
                "Seconds since this service last wrote its heartbeat into `services`.",
                gauge.clone(),
            );
            let set = gauge.clone();
            global().on_scrape(Arc::new(move || {
                let last = global().service.last_beat_ms.load(Ordering::Relaxed);
                set.set(now_ms().saturating_sub(last).max(0) as f64 / 1000.0);
                Box::pin(std::future::ready(()))
            }));
            gauge
        });
    }

    /// Counts `n` reconciler actions of `kind` (`failed`, `redone` ...).
    pub fn reconciled(&self, kind: &'static str, n: usize) {
        add(&self.reconciler, kind, n);
    }

    /// Counts `n` reaper actions of `kind` (`rescheduled`, `taken_over` ...).
    pub fn reaped(&self, kind: &'static str, n: usize) {
        add(&self.reaper, kind, n);
    }
}

fn add(family: &CounterFamily<1>, kind: &'static str, n: usize) {
    let counter = family.get_or_create(&[("kind", kind.to_owned())]);
    if n > 0 {
        counter.inc_by(n as u64);
    }
}
