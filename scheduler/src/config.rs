//! The scheduler's configuration: the shared `[bus]`, `[service]` and `[database]`
//! sections plus `[scheduler]`, every key overridable by its `SCORIA_*` variable.

use std::time::Duration;

use scoria_common::config::{
    self, BaseConfig, BusConfig, ConfigError, DatabaseConfig, EnvKey, ProcessConfig, ServiceConfig,
};
use serde::Deserialize;

use crate::filters::FILTER_NAMES;

/// The overrides the scheduler reads on top of
/// [`COMMON_ENV`](scoria_common::config::COMMON_ENV).
pub const SCHEDULER_ENV: &[EnvKey] = &[
    EnvKey::int(
        "SCORIA_SERVICE_DOWN_TIME_SECS",
        "scheduler.service_down_time_secs",
    ),
    EnvKey::int(
        "SCORIA_SCHEDULER_STARTUP_WAIT_MS",
        "scheduler.startup_wait_ms",
    ),
    EnvKey::int(
        "SCORIA_HEARTBEAT_INTERVAL_SECS",
        "scheduler.heartbeat_interval_secs",
    ),
    EnvKey::int(
        "SCORIA_REAPER_INTERVAL_SECS",
        "scheduler.reaper_interval_secs",
    ),
    EnvKey::int(
        "SCORIA_REAPER_DEADLINE_SECS",
        "scheduler.reaper_deadline_secs",
    ),
];

/// The whole configuration of `scoria-scheduler`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The message bus.
    pub bus: BusConfig,
    /// The process.
    pub service: ServiceConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The scheduler itself.
    pub scheduler: SchedulerSection,
}

/// `[scheduler]`: how the scheduler places volumes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSection {
    /// A service whose last heartbeat is older than this is down
    /// (`SCORIA_SERVICE_DOWN_TIME_SECS`, Cinder's `service_down_time`).
    pub service_down_time_secs: u64,
    /// How long start-up waits for a capability report from every live volume
    /// service before taking work (`SCORIA_SCHEDULER_STARTUP_WAIT_MS`).
    pub startup_wait_ms: u64,
    /// How often the scheduler heartbeats (`SCORIA_HEARTBEAT_INTERVAL_SECS`).
    pub heartbeat_interval_secs: u64,
    /// How often the `services` table is re-read, in milliseconds.
    pub services_refresh_ms: u64,
    /// Attempts per volume (reschedules included) before it goes to `error`.
    pub max_attempts: u32,
    /// A capability report older than this is dropped, in seconds.
    pub capability_stale_secs: u64,
    /// The CapacityWeigher's multiplier: positive spreads volumes over the
    /// emptiest pools, negative stacks them onto the fullest.
    pub capacity_weight_multiplier: f64,
    /// The filters, in the order they run.
    pub enabled_filters: Vec<String>,
    /// Seconds between two runs of the reaper, which fails or hands over work
    /// whose owner is gone (`SCORIA_REAPER_INTERVAL_SECS`).
    pub reaper_interval_secs: u64,
    /// The deadline the reaper gives work it schedules again or hands to
    /// another service, in seconds (`SCORIA_REAPER_DEADLINE_SECS`).
    pub reaper_deadline_secs: u64,
    /// Backends (the `@backend` part) whose objects every volume service of that
    /// name reaches, so one may delete for another that is down. Empty by
    /// default: the `file` and `qcow2` drivers keep objects in their own data dir.
    pub shared_backends: Vec<String>,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            service_down_time_secs: 60,
            startup_wait_ms: 10_000,
            heartbeat_interval_secs: 10,
            services_refresh_ms: 3_000,
            max_attempts: 3,
            capability_stale_secs: 180,
            capacity_weight_multiplier: 1.0,
            enabled_filters: FILTER_NAMES.iter().map(|name| (*name).to_owned()).collect(),
            reaper_interval_secs: 30,
            reaper_deadline_secs: 300,
            shared_backends: Vec::new(),
        }
    }
}

impl SchedulerSection {
    /// Cinder's `service_down_time`.
    pub fn service_down_time(&self) -> Duration {
        Duration::from_secs(self.service_down_time_secs)
    }
    /// The start-up wait for capability reports.
    pub fn startup_wait(&self) -> Duration {
        Duration::from_millis(self.startup_wait_ms)
    }
    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }
    /// How often the `services` table is re-read.
    pub fn services_refresh(&self) -> Duration {
        Duration::from_millis(self.services_refresh_ms)
    }
    /// How old a capability report may get.
    pub fn capability_stale(&self) -> Duration {
        Duration::from_secs(self.capability_stale_secs)
    }
    /// How often the reaper runs.
    pub fn reaper_interval(&self) -> Duration {
        Duration::from_secs(self.reaper_interval_secs)
    }
    /// The deadline of work the reaper schedules again or hands over.
    pub fn reaper_deadline(&self) -> Duration {
        Duration::from_secs(self.reaper_deadline_secs)
    }

    /// Checks values that are well-typed but unusable.
    pub fn validate(&self) -> config::Result<()> {
        let positive = |key: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Value {
                    key,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive(
            "scheduler.service_down_time_secs",
            self.service_down_time_secs,
        )?;
        positive(
            "scheduler.heartbeat_interval_secs",
            self.heartbeat_interval_secs,
        )?;
        positive("scheduler.services_refresh_ms", self.services_refresh_ms)?;
        positive("scheduler.max_attempts", u64::from(self.max_attempts))?;
        positive(
            "scheduler.capability_stale_secs",
            self.capability_stale_secs,
        )?;
        positive("scheduler.reaper_interval_secs", self.reaper_interval_secs)?;
        positive("scheduler.reaper_deadline_secs", self.reaper_deadline_secs)?;
        if !self.capacity_weight_multiplier.is_finite() {
            return Err(ConfigError::Value {
                key: "scheduler.capacity_weight_multiplier",
                reason: "must be a finite number".into(),
            });
        }
        if let Some(unknown) = self
            .enabled_filters
            .iter()
            .find(|f| !FILTER_NAMES.contains(&f.as_str()))
        {
            return Err(ConfigError::Value {
                key: "scheduler.enabled_filters",
                reason: format!(
                    "unknown filter {unknown:?}; known: {}",
                    FILTER_NAMES.join(", ")
                ),
            });
        }
        Ok(())
    }
}

impl ProcessConfig for Config {
    const ENV: &'static [EnvKey] = SCHEDULER_ENV;

    fn base(&self) -> BaseConfig {
        BaseConfig::of(&self.bus, &self.service, &self.database)
    }

    fn validate(&self) -> config::Result<()> {
        self.bus.validate()?;
        self.scheduler.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use scoria_common::config::env_of as env;

    #[test]
    fn defaults() {
        let c = Config::load_from(None, &env(&[])).expect("defaults");
        let s = &c.scheduler;
        assert_eq!(s.service_down_time_secs, 60);
        assert_eq!(s.startup_wait_ms, 10_000);
        assert_eq!(s.heartbeat_interval_secs, 10);
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.capability_stale_secs, 180);
        assert_eq!(s.reaper_interval(), Duration::from_secs(30));
        assert_eq!(s.reaper_deadline(), Duration::from_secs(300));
        assert!(s.shared_backends.is_empty());
        assert_eq!(s.capacity_weight_multiplier, 1.0);
        assert_eq!(
            s.enabled_filters,
            [
                "AvailabilityZoneFilter",
                "CapacityFilter",
                "CapabilitiesFilter",
                "RetryFilter"
            ]
        );
        assert_eq!(c.bus.control_exchange, "scoria");
        assert_eq!(c.database_url(), "sqlite://./data/scoria.db");
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("scheduler.toml");
        std::fs::write(
            &file,
            "[scheduler]\nservice_down_time_secs = 5\nmax_attempts = 7\ncapacity_weight_multiplier = -1.5\n\
             enabled_filters = [\"CapacityFilter\"]\n[bus]\ncontrol_exchange = \"file\"\n",
        )
        .expect("write");
        let c = Config::load_from(
            Some(&file),
            &env(&[
                ("SCORIA_SERVICE_DOWN_TIME_SECS", "42"),
                ("SCORIA_SCHEDULER_STARTUP_WAIT_MS", "250"),
                ("SCORIA_HEARTBEAT_INTERVAL_SECS", "2"),
                ("SCORIA_CONTROL_EXCHANGE", "env"),
                ("SCORIA_REAPER_INTERVAL_SECS", "2"),
                ("SCORIA_REAPER_DEADLINE_SECS", "9"),
            ]),
        )
        .expect("load");
        assert_eq!(c.scheduler.reaper_interval(), Duration::from_secs(2));
        assert_eq!(c.scheduler.reaper_deadline(), Duration::from_secs(9));
        assert_eq!(c.scheduler.service_down_time_secs, 42);
        assert_eq!(c.scheduler.startup_wait(), Duration::from_millis(250));
        assert_eq!(c.scheduler.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(c.scheduler.max_attempts, 7);
        assert_eq!(c.scheduler.capacity_weight_multiplier, -1.5);
        assert_eq!(c.scheduler.enabled_filters, ["CapacityFilter"]);
        assert_eq!(c.bus.control_exchange, "env");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::load_from(None, &env(&[("SCORIA_SERVICE_DOWN_TIME_SECS", "soon")]))
            .expect_err("bad int");
        assert!(
            err.to_string().contains("scheduler.service_down_time_secs"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[scheduler]\nenabled_filters = [\"NoSuchFilter\"]\n")
            .expect("write");
        let err = Config::load_from(Some(&file), &env(&[])).expect_err("unknown filter");
        assert!(
            err.to_string().contains("scheduler.enabled_filters"),
            "{err}"
        );

        std::fs::write(&file, "[scheduler]\nmax_atempts = 2\n").expect("write");
        let err = Config::load_from(Some(&file), &env(&[])).expect_err("unknown key");
        assert!(err.to_string().contains("max_atempts"), "{err}");

        std::fs::write(&file, "[scheduler]\nmax_attempts = 0\n").expect("write");
        let err = Config::load_from(Some(&file), &env(&[])).expect_err("zero attempts");
        assert!(err.to_string().contains("scheduler.max_attempts"), "{err}");
    }
}
