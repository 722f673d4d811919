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

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Families {
        Families {
            volumes: Family::default(),
            snapshots: Family::default(),
            services: Family::default(),
            disabled: Family::default(),
            capacity: Family::default(),
            sources: Mutex::new(None),
        }
    }

    fn get<const N: usize>(family: &GaugeFamily<N>, labels: [(&'static str, &str); N]) -> i64 {
        family
            .get_or_create(&labels.map(|(k, v)| (k, v.to_owned())))
            .get()
    }

    #[test]
    fn every_status_is_shown_and_absent_ones_are_zero() {
        let f = families();
        f.set_statuses(&[StatusCount {
            table: "volumes",
            status: "available".into(),
            count: 3,
        }]);
        assert_eq!(get(&f.volumes, [("status", "available")]), 3);
        assert_eq!(get(&f.volumes, [("status", "creating")]), 0);
        assert_eq!(get(&f.snapshots, [("status", "available")]), 0);
    }

    #[test]
    fn services_are_counted_up_or_down_per_binary() {
        let f = families();
        let service = |host: &str, beat: i64, disabled: bool| Service {
            binary: "scoria-volume".into(),
            host: host.into(),
            availability_zone: "default".into(),
            disabled,
            disabled_reason: String::new(),
            last_heartbeat_ms: beat,
            cluster: String::new(),
        };
        let services = [service("a@f", 1_000, false), service("b@f", 800, true)];
        f.set_services(&services, 1_500, 1_000);
        f.set_services(&services, 1_500, 1_000);
        let up = [("binary", "scoria-volume"), ("state", "up")];
        assert_eq!(get(&f.services, up), 2, "both beat within the down time");
        f.set_services(&services, 1_900, 1_000);
        assert_eq!(get(&f.services, up), 1);
        assert_eq!(
            get(
                &f.services,
                [("binary", "scoria-volume"), ("state", "down")]
            ),
            1
        );
        assert_eq!(get(&f.disabled, [("binary", "scoria-volume")]), 1);
    }
}
