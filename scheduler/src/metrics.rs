//! The scheduler's domain metrics, refreshed at each scrape: volumes and
//! snapshots per status (one grouped query), services up / down per binary
//! (the `services` table, as `AdminService.ListServices` reads it), and pool
//! capacity per `host@backend#pool` (the host state, as `ListPools` shows it).
//!
//! Every scheduler instance exports the same deployment-wide counts: aggregate
//! them with `max`, not `sum`.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use prometheus_client::metrics::{family::Family, gauge::Gauge};
use scoria_common::{
    db::{Db, StatusCount},
    metrics::{Labels, global},
    model::{Service, SnapshotStatus, VolumeStatus, now_ms},
    sync::lock,
};

use crate::host_state::HostManager;

type GaugeFamily<const N: usize> = Family<Labels<N>, Gauge>;
type FloatFamily<const N: usize> = Family<Labels<N>, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// What the hook reads: the last scheduler started in this process.
struct Sources {
    db: Db,
    hosts: Arc<HostManager>,
    service_down_ms: i64,
}

struct Families {
    volumes: GaugeFamily<1>,
    snapshots: GaugeFamily<1>,
    services: GaugeFamily<2>,
    disabled: GaugeFamily<1>,
    capacity: FloatFamily<2>,
    sources: Mutex<Option<Sources>>,
}

/// Exports the domain metrics of `db` and `hosts` from now on.
pub fn watch(db: Db, hosts: Arc<HostManager>, service_down_time: Duration) {
    static FAMILIES: OnceLock<Arc<Families>> = OnceLock::new();
    let families = FAMILIES.get_or_init(|| {
        let families = Arc::new(Families {
            volumes: Family::default(),
            snapshots: Family::default(),
            services: Family::default(),
            disabled: Family::default(),
            capacity: Family::default(),
            sources: Mutex::new(None),
        });
        let m = global();
        m.register(
            "scoria_volumes",
            "Volumes per status.",
            families.volumes.clone(),
        );
        m.register(
            "scoria_snapshots",
            "Snapshots per status.",
            families.snapshots.clone(),
        );
        m.register(
            "scoria_services",
            "Services per binary and state (up: heartbeat within service_down_time).",
            families.services.clone(),
        );
        m.register(
            "scoria_services_disabled",
            "Services disabled by an operator, per binary.",
            families.disabled.clone(),
        );
        m.register(
            "scoria_pool_capacity_gib",
            "Pool capacity per host@backend#pool and kind (total, free, allocated), as ListPools shows it.",
            families.capacity.clone(),
        );
        let hook = families.clone();
        m.on_scrape(Arc::new(move || {
            let families = hook.clone();
            Box::pin(async move { families.refresh().await })
        }));
        families
    });
    *lock(&families.sources) = Some(Sources {
        db,
        hosts,
        service_down_ms: i64::try_from(service_down_time.as_millis()).unwrap_or(i64::MAX),
    });
}

impl Families {
    async fn refresh(&self) {
        let Some((db, hosts, down_ms)) = lock(&self.sources)
            .as_ref()
            .map(|s| (s.db.clone(), s.hosts.clone(), s.service_down_ms))
        else {
            return;
        };
        self.capacity.clear();
        for pool in hosts.pools("", now_ms()) {
            let pool = pool.to_storage_pool();
            for (kind, gib) in [
                ("total", pool.total_capacity_gib),
                ("free", pool.free_capacity_gib),
                ("allocated", pool.allocated_capacity_gib),
            ] {
                // -1: the backend cannot tell; no sample rather than a false one.
                if gib >= 0.0 {
                    self.capacity
                        .get_or_create(&[("pool", pool.name.clone()), ("kind", kind.to_owned())])
                        .set(gib);
                }
            }
        }
        match db.status_counts().await {
            Ok(counts) => self.set_statuses(&counts),
            Err(err) => tracing::debug!(%err, "metrics: cannot count volumes per status"),
        }
        match db.list_services().await {
            Ok(services) => self.set_services(&services, now_ms(), down_ms),
            Err(err) => tracing::debug!(%err, "metrics: cannot read the services"),
        }
    }

    fn set_statuses(&self, counts: &[StatusCount]) {
        let count = |table: &str, status: &str| {
            counts
                .iter()
                .filter(|c| c.table == table && c.status == status)
                .map(|c| c.count)
                .sum::<i64>()
        };
        for status in VolumeStatus::ALL {
            self.volumes
                .get_or_create(&[("status", status.as_str().to_owned())])
                .set(count("volumes", status.as_str()));
        }
        for status in SnapshotStatus::ALL {
            self.snapshots
                .get_or_create(&[("status", status.as_str().to_owned())])
                .set(count("snapshots", status.as_str()));
        }
    }

    fn set_services(&self, services: &[Service], now: i64, down_ms: i64) {
        self.services.clear();
        self.disabled.clear();
        for service in services {
            for state in ["up", "down"] {
                // Both states shown, 0 included.
                let _ = self.services.get_or_create(&[
                    ("binary", service.binary.clone()),
                    ("state", state.to_owned()),
                ]);
            }
            let state = if service.is_up(now, down_ms) {
                "up"
            } else {
                "down"
            };
            self.services
                .get_or_create(&[
                    ("binary", service.binary.clone()),
                    ("state", state.to_owned()),
                ])
                .inc();
            let disabled = self
                .disabled
                .get_or_create(&[("binary", service.binary.clone())]);
            if service.disabled {
                disabled.inc();
            }
        }
    }
}
