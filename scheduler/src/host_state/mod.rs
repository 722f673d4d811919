//! Host state: what the scheduler knows of every pool, one [`HostState`] per
//! `host@backend#pool`, built from the volume services' capability reports
//! (Cinder's `HostManager` and `PoolState`).
//!
//! A report replaces every pool of its `host@backend`. Between reports the
//! scheduler consumes capacity virtually ([`HostState::consume`], Cinder's
//! `consume_from_volume`), so a burst of creates spreads instead of piling onto
//! the pool that looked emptiest at the last report. A pool is usable only while
//! its report is fresh and the `services` table shows its volume service up and
//! enabled; that table is refreshed in the background ([`HostManager::set_services`]),
//! never per request.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use scoria_common::{model::Service, sync::lock, translation::timestamp};
use scoria_proto::{
    bus::{Capabilities, Pool},
    v1::StoragePool,
};

/// The `binary` of volume services in the `services` table.
pub const VOLUME_BINARY: &str = "scoria-volume";

/// A capacity figure as a backend reports it. On the wire a capacity is a
/// double: `+inf` means "infinite", a negative or NaN value "unknown" (Cinder's
/// `'infinite'` and `'unknown'` strings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// So many GiB.
    Known(f64),
    /// The backend has practically no limit.
    Infinite,
    /// The backend cannot tell.
    Unknown,
}

impl Capacity {
    /// The capacity a reported double stands for.
    pub fn from_report(gib: f64) -> Self {
        if gib == f64::INFINITY {
            Capacity::Infinite
        } else if gib.is_nan() || gib < 0.0 {
            Capacity::Unknown
        } else {
            Capacity::Known(gib)
        }
    }

    /// The figure, if known.
    pub fn known(self) -> Option<f64> {
        match self {
            Capacity::Known(gib) => Some(gib),
            _ => None,
        }
    }
}

/// The capability keys [`HostState::from_report`] derives from the report itself
/// (not the pool's own capabilities); `ListPools` carries them as fields.
const DERIVED_KEYS: [&str; 11] = [
    "volume_backend_name",
    "driver",
    "availability_zone",
    "pool_name",
    "total_capacity_gb",
    "free_capacity_gb",
    "allocated_capacity_gb",
    "reserved_percentage",
    "thin_provisioning_support",
    "thick_provisioning_support",
    "max_over_subscription_ratio",
];

impl Capacity {
    /// The figure on the wire: GiB, `+inf` for infinite, `-1` for unknown
    /// (the convention of the capability reports).
    pub fn to_wire(self) -> f64 {
        match self {
            Capacity::Known(gib) => gib,
            Capacity::Infinite => f64::INFINITY,
            Capacity::Unknown => -1.0,
        }
    }
}

/// The `pool` key of a pool: `host@backend#pool`.
pub fn pool_key(host: &str, pool: &str) -> String {
    format!("{host}#{pool}")
}

/// When the volume service made `report`, ms since the epoch.
fn reported_at_ms(report: &Capabilities) -> Option<i64> {
    let ts = report.reported_at.as_ref()?;
    Some(
        ts.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(ts.nanos) / 1_000_000),
    )
}

/// What the scheduler knows of one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    /// `host@backend#pool`.
    pub pool_key: String,
    /// `host@backend`: the volume service owning the pool.
    pub host: String,
    /// The pool's name.
    pub pool_name: String,
    /// The backend's `volume_backend_name`.
    pub backend_name: String,
    /// The driver (`file`, `qcow2`).
    pub driver: String,
    /// The volume service's availability zone.
    pub availability_zone: String,
    /// Total capacity.
    pub total_capacity: Capacity,
    /// Free capacity, less what was consumed virtually since the report.
    pub free_capacity: Capacity,
    /// Capacity provisioned to volumes, plus what was consumed virtually.
    pub allocated_capacity_gib: f64,
    /// Percentage of the total kept free.
    pub reserved_percentage: u32,
    /// Whether the pool provisions thinly.
    pub thin_provisioning_support: bool,
    /// Whether the pool provisions thickly.
    pub thick_provisioning_support: bool,
    /// How far thin provisioning may over-subscribe the total. A report of 0
    /// (the proto3 default: not reported) is read as 1.0, no over-subscription.
    pub max_over_subscription_ratio: f64,
    /// What the CapabilitiesFilter matches extra specs against: the pool's
    /// capabilities plus `volume_backend_name`, `driver`, `availability_zone`,
    /// `pool_name` and the capacity figures of the report.
    pub capabilities: BTreeMap<String, String>,
    /// When the volume service made the report, ms since the epoch.
    pub reported_at_ms: i64,
    /// When this scheduler received it, ms since the epoch (staleness is
    /// judged on this clock, not the reporter's).
    pub received_at_ms: i64,
    /// GiB consumed virtually since the report.
    pub consumed_gib: u64,
    /// Which report this state comes from (increases with every report).
    pub report_seq: u64,
}

impl HostState {
    /// The state of `pool` from `report`.
    pub fn from_report(
        report: &Capabilities,
        pool: &Pool,
        report_seq: u64,
        received_at_ms: i64,
    ) -> Self {
        let reported_at_ms = reported_at_ms(report).unwrap_or(received_at_ms);
        let ratio = if pool.max_over_subscription_ratio == 0.0 {
            1.0
        } else {
            pool.max_over_subscription_ratio
        };
        let mut capabilities = pool.capabilities.clone();
        let mut set = |key: &str, value: String| {
            if !value.is_empty() {
                capabilities.insert(key.to_owned(), value);
            }
        };
        set("volume_backend_name", report.backend_name.clone());
        set("driver", report.driver.clone());
        set("availability_zone", report.availability_zone.clone());
        set("pool_name", pool.name.clone());
        set("total_capacity_gb", pool.total_capacity_gib.to_string());
        set("free_capacity_gb", pool.free_capacity_gib.to_string());
        set(
            "allocated_capacity_gb",
            pool.allocated_capacity_gib.to_string(),
        );
        set("reserved_percentage", pool.reserved_percentage.to_string());
        set(
            "thin_provisioning_support",
            pool.thin_provisioning_support.to_string(),
        );
        set(
            "thick_provisioning_support",
            pool.thick_provisioning_support.to_string(),
        );
        set("max_over_subscription_ratio", ratio.to_string());
        Self {
            pool_key: pool_key(&report.host, &pool.name),
            host: report.host.clone(),
            pool_name: pool.name.clone(),
            backend_name: report.backend_name.clone(),
            driver: report.driver.clone(),
            availability_zone: report.availability_zone.clone(),
            total_capacity: Capacity::from_report(pool.total_capacity_gib),
            free_capacity: Capacity::from_report(pool.free_capacity_gib),
            allocated_capacity_gib: pool.allocated_capacity_gib.max(0.0),
            reserved_percentage: pool.reserved_percentage.min(100),
            thin_provisioning_support: pool.thin_provisioning_support,
            thick_provisioning_support: pool.thick_provisioning_support,
            max_over_subscription_ratio: ratio,
            capabilities,
            reported_at_ms,
            received_at_ms,
            consumed_gib: 0,
            report_seq,
        }
    }

    /// Takes `size_gib` from the pool until its next report (Cinder's
    /// `consume_from_volume`): allocated grows, a known free shrinks.
    pub fn consume(&mut self, size_gib: u64) {
        let size = size_gib as f64;
        self.allocated_capacity_gib += size;
        // A thin pool's new volume takes (almost) no real space: only the
        // provisioned figure grows, bounded by the over-subscription ratio;
        // the next report brings the real free space. Cinder subtracts it from
        // free too, which refuses creates long before a sparse backend is full.
        if let (false, Capacity::Known(free)) = (self.thin_provisioning_support, self.free_capacity)
        {
            self.free_capacity = Capacity::Known(free - size);
        }
        self.consumed_gib = self.consumed_gib.saturating_add(size_gib);
    }

    /// Gives back what [`HostState::consume`] took (the cast never left).
    pub fn release(&mut self, size_gib: u64) {
        let size = size_gib as f64;
        self.allocated_capacity_gib = (self.allocated_capacity_gib - size).max(0.0);
        if let (false, Capacity::Known(free)) = (self.thin_provisioning_support, self.free_capacity)
        {
            self.free_capacity = Capacity::Known(free + size);
        }
        self.consumed_gib = self.consumed_gib.saturating_sub(size_gib);
    }

    /// The pool as `ListPools` shows it: the scheduler's view, so free and
    /// allocated include what was consumed virtually since the report (a thin
    /// pool's free figure is the reported one: only allocated grows). The
    /// capabilities are the pool's own, without the keys derived from the report.
    pub fn to_storage_pool(&self) -> StoragePool {
        StoragePool {
            name: self.pool_key.clone(),
            host: self.host.clone(),
            backend_name: self.backend_name.clone(),
            availability_zone: self.availability_zone.clone(),
            driver: self.driver.clone(),
            total_capacity_gib: self.total_capacity.to_wire(),
            free_capacity_gib: self.free_capacity.to_wire(),
            allocated_capacity_gib: self.allocated_capacity_gib,
            reserved_percentage: self.reserved_percentage,
            thin_provisioning_support: self.thin_provisioning_support,
            thick_provisioning_support: self.thick_provisioning_support,
            max_over_subscription_ratio: self.max_over_subscription_ratio,
            capabilities: self
                .capabilities
                .iter()
                .filter(|(key, _)| !DERIVED_KEYS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            updated_at: Some(timestamp(self.reported_at_ms)),
        }
    }

    /// The reserved share of the total, in whole GiB (Cinder floors it).
    pub fn reserved_gib(&self) -> Option<f64> {
        self.total_capacity
            .known()
            .map(|total| (total * f64::from(self.reserved_percentage) / 100.0).floor())
    }
}

/// A pool the scheduler picked and consumed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// `host@backend#pool`.
    pub pool_key: String,
    /// `host@backend`.
    pub host: String,
    /// The pool's availability zone.
    pub availability_zone: String,
    /// The size consumed.
    pub size_gib: u64,
    /// The report the consumption applies to.
    pub report_seq: u64,
}

/// What happened to a capability report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// It replaced the host's pools; `known_service` tells whether the last
    /// `services` snapshot holds the host (if not, refresh it soon).
    Applied {
        /// Whether the `services` snapshot knows the host.
        known_service: bool,
    },
    /// An older report than the one held (reordered delivery): ignored.
    Outdated,
}

#[derive(Debug, Clone, Copy)]
struct ServiceLiveness {
    last_heartbeat_ms: i64,
    disabled: bool,
}

#[derive(Default)]
struct Inner {
    /// Every pool, by `host@backend#pool`.
    pools: BTreeMap<String, HostState>,
    /// The `reported_at` of the last report per `host@backend`.
    reports: HashMap<String, i64>,
    /// The volume services of the last `services` snapshot, by `host@backend`.
    services: HashMap<String, ServiceLiveness>,
    next_seq: u64,
}

/// Every pool's state, shared by the handlers; the lock is never held across an await.
pub struct HostManager {
    stale_after_ms: i64,
    service_down_ms: i64,
    inner: Mutex<Inner>,
}

impl HostManager {
    /// An empty host manager: reports older than `stale_after` are dropped, a
    /// service whose heartbeat is older than `service_down_time` is down.
    pub fn new(stale_after: Duration, service_down_time: Duration) -> Self {
        Self {
            stale_after_ms: i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX),
            service_down_ms: i64::try_from(service_down_time.as_millis()).unwrap_or(i64::MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is
        // a plain assignment.
        lock(&self.inner)
    }

    /// Takes a capability report received at `now_ms`: the host's pools are
    /// replaced by the report's (virtual consumption is forgotten).
    pub fn update(&self, report: &Capabilities, now_ms: i64) -> ReportOutcome {
        let mut inner = self.lock();
        let reported_at = reported_at_ms(report);
        if let (Some(new), Some(held)) = (reported_at, inner.reports.get(&report.host))
            && new < *held
        {
            return ReportOutcome::Outdated;
        }
        inner
            .reports
            .insert(report.host.clone(), reported_at.unwrap_or(now_ms));
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.pools.retain(|_, pool| pool.host != report.host);
        for pool in &report.pools {
            let state = HostState::from_report(report, pool, seq, now_ms);
            inner.pools.insert(state.pool_key.clone(), state);
        }
        ReportOutcome::Applied {
            known_service: inner.services.contains_key(&report.host),
        }
    }

    /// Replaces the snapshot of the `services` table (volume services only).
    /// The members of a cluster stand for one service, by the cluster's
    /// `cluster@backend` (the host its reports name): up and enabled while one
    /// member is.
    pub fn set_services(&self, services: &[Service]) {
        let snapshot = cluster_liveness(services.iter().filter(|s| s.binary == VOLUME_BINARY));
        self.lock().services = snapshot;
    }

    /// The volume services the snapshot shows up (heartbeat within the down
    /// time) and enabled at `now_ms`.
    pub fn live_services(&self, now_ms: i64) -> Vec<String> {
        let inner = self.lock();
        let mut live: Vec<String> = inner
            .services
            .iter()
            .filter(|(_, s)| self.service_usable(s, now_ms))
            .map(|(host, _)| host.clone())
            .collect();
        live.sort();
        live
    }

    /// Whether a report from each of `hosts` is held.
    pub fn has_reports_from(&self, hosts: &[String]) -> bool {
        let inner = self.lock();
        hosts.iter().all(|host| inner.reports.contains_key(host))
    }

    /// Drops pools whose report is stale at `now_ms`; returns how many.
    pub fn prune(&self, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let before = inner.pools.len();
        let stale_after = self.stale_after_ms;
        inner
            .pools
            .retain(|_, pool| now_ms.saturating_sub(pool.received_at_ms) <= stale_after);
        let Inner { pools, reports, .. } = &mut *inner;
        reports.retain(|host, _| pools.values().any(|p| &p.host == host));
        before - inner.pools.len()
    }

    /// A copy of one pool's state.
    pub fn pool(&self, pool_key: &str) -> Option<HostState> {
        self.lock().pools.get(pool_key).cloned()
    }

    /// Every pool whose report is fresh at `now_ms`, of `host` (`host@backend`)
    /// only unless it is empty, by `host@backend#pool`. Whether its service is
    /// up or enabled does not matter: Cinder's `get_pools` lists its whole host
    /// state too, and `ListServices` shows the services' state. Stale reports
    /// are left out even before [`HostManager::prune`] drops them.
    pub fn pools(&self, host: &str, now_ms: i64) -> Vec<HostState> {
        self.lock()
            .pools
            .values()
            .filter(|p| host.is_empty() || p.host == host)
            .filter(|p| now_ms.saturating_sub(p.received_at_ms) <= self.stale_after_ms)
            .cloned()
            .collect()
    }

    /// How many pools are held (usable or not).
    pub fn len(&self) -> usize {
        self.lock().pools.len()
    }

    /// Whether no pool is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Picks a pool and consumes `size_gib` from it, atomically: `pick` gets the
    /// usable pools at `now_ms` (fresh report, service up and enabled) and how
    /// many others were skipped, and names the pool to take (or says why none).
    pub fn choose<E>(
        &self,
        now_ms: i64,
        size_gib: u64,
        pick: impl for<'a> FnOnce(&[&'a HostState], usize) -> Result<&'a HostState, E>,
    ) -> Result<Chosen, E> {
        let mut inner = self.lock();
        let key = {
            let usable: Vec<&HostState> = inner
                .pools
                .values()
                .filter(|p| self.usable(&inner, p, now_ms))
                .collect();
            let skipped = inner.pools.len() - usable.len();
            pick(&usable, skipped)?.pool_key.clone()
        };
        let mut chosen = Chosen {
            pool_key: key,
            host: String::new(),
            availability_zone: String::new(),
            size_gib,
            report_seq: 0,
        };
        if let Some(pool) = inner.pools.get_mut(&chosen.pool_key) {
            pool.consume(size_gib);
            chosen.host.clone_from(&pool.host);
            chosen.availability_zone.clone_from(&pool.availability_zone);
            chosen.report_seq = pool.report_seq;
        }
        Ok(chosen)
    }

    /// Gives back a [`Chosen`]'s consumption, unless a newer report replaced it.
    pub fn release(&self, chosen: &Chosen) {
        if let Some(pool) = self.lock().pools.get_mut(&chosen.pool_key)
            && pool.report_seq == chosen.report_seq
        {
            pool.release(chosen.size_gib);
        }
    }

    fn service_usable(&self, service: &ServiceLiveness, now_ms: i64) -> bool {
        !service.disabled
            && now_ms.saturating_sub(service.last_heartbeat_ms) <= self.service_down_ms
    }

    fn usable(&self, inner: &Inner, pool: &HostState, now_ms: i64) -> bool {
        now_ms.saturating_sub(pool.received_at_ms) <= self.stale_after_ms
            && inner
                .services
                .get(&pool.host)
                .is_some_and(|s| self.service_usable(s, now_ms))
    }
}

/// The liveness of each reporting host: a service alone by its `host@backend`,
/// the members of a cluster merged under the cluster's `cluster@backend` (the
/// latest heartbeat of an enabled member; disabled only if every member is).
fn cluster_liveness<'a>(
    services: impl Iterator<Item = &'a Service>,
) -> HashMap<String, ServiceLiveness> {
    let mut merged: HashMap<String, ServiceLiveness> = HashMap::new();
    for service in services {
        let key = if service.cluster.is_empty() {
            &service.host
        } else {
            &service.cluster
        };
        let this = ServiceLiveness {
            last_heartbeat_ms: service.last_heartbeat_ms,
            disabled: service.disabled,
        };
        merged
            .entry(key.clone())
            .and_modify(|held| {
                *held = match (held.disabled, this.disabled) {
                    (false, true) => *held,
                    (true, false) => this,
                    _ => ServiceLiveness {
                        last_heartbeat_ms: held.last_heartbeat_ms.max(this.last_heartbeat_ms),
                        disabled: held.disabled,
                    },
                }
            })
            .or_insert(this);
    }
    merged
}

#[cfg(test)]
pub(crate) mod tests;
