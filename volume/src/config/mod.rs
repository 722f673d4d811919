//! The volume service's configuration: the shared `[bus]`, `[service]` and
//! `[database]` sections plus `[volume]`, `[export]` and `[backup]`, every key
//! overridable by its `SCORIA_*` variable (see [`VOLUME_ENV`]).

mod backup;

use std::time::Duration;

pub use backup::BackupSection;

use scoria_common::config::{
    self, BaseConfig, BusConfig, ConfigError, DatabaseConfig, EnvKey, ProcessConfig, ServiceConfig,
};
use serde::Deserialize;

/// The drivers this build knows.
/// (The driver registry's `DRIVERS`; a test in `lib.rs` keeps the two equal: the
/// config does not import the drivers.)
pub const DRIVERS: &[&str] = &["file", "qcow2"];

/// The `[volume]` and `[export]` overrides, on top of [`COMMON_ENV`](scoria_common::config::COMMON_ENV).
pub const VOLUME_ENV: &[EnvKey] = &[
    EnvKey::str("SCORIA_VOLUME_BACKEND", "volume.backend"),
    EnvKey::str("SCORIA_VOLUME_DRIVER", "volume.driver"),
    EnvKey::int("SCORIA_VOLUME_CAPACITY_GIB", "volume.capacity_gib"),
    EnvKey::str("SCORIA_AVAILABILITY_ZONE", "volume.availability_zone"),
    EnvKey::int(
        "SCORIA_VOLUME_REPORT_INTERVAL_SECS",
        "volume.report_interval_secs",
    ),
    EnvKey::int(
        "SCORIA_HEARTBEAT_INTERVAL_SECS",
        "volume.heartbeat_interval_secs",
    ),
    EnvKey::int(
        "SCORIA_VOLUME_RESERVED_PERCENTAGE",
        "volume.reserved_percentage",
    ),
    EnvKey::int(
        "SCORIA_RECONCILE_INTERVAL_SECS",
        "volume.reconcile_interval_secs",
    ),
    EnvKey::int(
        "SCORIA_OPERATION_DEADLINE_SECS",
        "volume.operation_deadline_secs",
    ),
    EnvKey::str("SCORIA_VOLUME_CLUSTER", "volume.cluster"),
    EnvKey::str("SCORIA_VOLUME_BACKEND_DIR", "volume.backend_dir"),
    EnvKey::str("SCORIA_EXPORT_HOST", "export.host"),
    EnvKey::str("SCORIA_EXPORT_PORTS", "export.ports"),
    EnvKey::str("SCORIA_BACKUP_TARGET", "backup.target"),
    EnvKey::str("SCORIA_BACKUP_S3_ENDPOINT", "backup.s3_endpoint"),
    EnvKey::str("SCORIA_BACKUP_S3_REGION", "backup.s3_region"),
    EnvKey::str("SCORIA_BACKUP_S3_ACCESS_KEY_ID", "backup.s3_access_key_id"),
    EnvKey::str(
        "SCORIA_BACKUP_S3_SECRET_ACCESS_KEY",
        "backup.s3_secret_access_key",
    ),
    EnvKey::bool("SCORIA_BACKUP_S3_ALLOW_HTTP", "backup.s3_allow_http"),
];

/// The volume service's configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The message bus (`[bus]`).
    pub bus: BusConfig,
    /// The process (`[service]`).
    pub service: ServiceConfig,
    /// The database (`[database]`).
    pub database: DatabaseConfig,
    /// The backend this service owns (`[volume]`).
    pub volume: VolumeSection,
    /// The NBD exports of attachments (`[export]`).
    pub export: ExportSection,
    /// Where backups go (`[backup]`).
    pub backup: BackupSection,
}

/// The `[export]` section: where attachments' `qemu-nbd` servers listen.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSection {
    /// The address the servers bind, which is also the host clients are told to
    /// connect to (`SCORIA_EXPORT_HOST`).
    pub host: String,
    /// The TCP ports the servers take, `first-last` (`SCORIA_EXPORT_PORTS`).
    pub ports: String,
}

impl Default for ExportSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            ports: "10809-11808".to_owned(),
        }
    }
}

/// `first-last` as a port range, or why not.
fn parse_ports(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad =
        || format!("{text:?} must be \"first-last\", two ports from 1 to 65535, first <= last");
    let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(bad());
    }
    Ok(first..=last)
}

/// The `[volume]` section: the one backend this service owns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeSection {
    /// The backend name, the `@backend` part of the host (`SCORIA_VOLUME_BACKEND`).
    pub backend: String,
    /// The driver, one of [`DRIVERS`] (`SCORIA_VOLUME_DRIVER`).
    pub driver: String,
    /// The capacity reported, in GiB (`SCORIA_VOLUME_CAPACITY_GIB`); unset: the size
    /// of the filesystem holding the data dir.
    pub capacity_gib: Option<u64>,
    /// The availability zone (`SCORIA_AVAILABILITY_ZONE`).
    pub availability_zone: String,
    /// Seconds between capability reports (`SCORIA_VOLUME_REPORT_INTERVAL_SECS`).
    pub report_interval_secs: u64,
    /// Seconds between heartbeats (`SCORIA_HEARTBEAT_INTERVAL_SECS`).
    pub heartbeat_interval_secs: u64,
    /// How far the scheduler may over-provision this thin backend (Cinder's
    /// default, 20; file only: a float has no env override).
    pub max_over_subscription_ratio: f64,
    /// The percentage of capacity kept free (`SCORIA_VOLUME_RESERVED_PERCENTAGE`).
    pub reserved_percentage: u32,
    /// Seconds between two runs of the reconciler, which resolves this service's
    /// overdue work (`SCORIA_RECONCILE_INTERVAL_SECS`).
    pub reconcile_interval_secs: u64,
    /// Seconds this service gives itself to finish work it starts (create,
    /// delete, extend, snapshots) before its reconciler, or a scheduler's reaper
    /// when it is down, steps in (`SCORIA_OPERATION_DEADLINE_SECS`).
    pub operation_deadline_secs: u64,
    /// The active-active cluster this service is a member of
    /// (`SCORIA_VOLUME_CLUSTER`, Cinder's `cluster`; empty: none). Members of one
    /// cluster serve one backend together: its topic, pool and volumes' `host`
    /// are `<cluster>@<backend>`, while each keeps its own `<host>@<backend>`
    /// for its heartbeat and its server queue.
    pub cluster: String,
    /// Where the backend keeps its objects (`SCORIA_VOLUME_BACKEND_DIR`; empty:
    /// `<data_dir>/<backend>`). The members of a cluster point it at one
    /// directory every one of them reaches.
    pub backend_dir: String,
}

impl Default for VolumeSection {
    fn default() -> Self {
        Self {
            backend: "file".to_owned(),
            driver: "file".to_owned(),
            capacity_gib: None,
            availability_zone: "default".to_owned(),
            report_interval_secs: 60,
            heartbeat_interval_secs: 10,
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
            reconcile_interval_secs: 60,
            operation_deadline_secs: 600,
            cluster: String::new(),
            backend_dir: String::new(),
        }
    }
}

impl ProcessConfig for Config {
    const ENV: &'static [EnvKey] = VOLUME_ENV;

    fn base(&self) -> BaseConfig {
        BaseConfig::of(&self.bus, &self.service, &self.database)
    }

    fn validate(&self) -> config::Result<()> {
        self.bus.validate()?;
        let v = &self.volume;
        let refuse = |key, reason: String| Err(ConfigError::Value { key, reason });
        if v.backend.is_empty()
            || !v
                .backend
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return refuse(
                "volume.backend",
                format!(
                    "{:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                    v.backend
                ),
            );
        }
        if !DRIVERS.contains(&v.driver.as_str()) {
            return refuse(
                "volume.driver",
                format!(
                    "unknown driver {:?}; known: {}",
                    v.driver,
                    DRIVERS.join(", ")
                ),
            );
        }
        if v.capacity_gib == Some(0) {
            return refuse("volume.capacity_gib", "must be at least 1".into());
        }
        if v.report_interval_secs == 0 {
            return refuse("volume.report_interval_secs", "must be at least 1".into());
        }
        if v.heartbeat_interval_secs == 0 {
            return refuse(
                "volume.heartbeat_interval_secs",
                "must be at least 1".into(),
            );
        }
        if !(v.max_over_subscription_ratio >= 1.0 && v.max_over_subscription_ratio.is_finite()) {
            return refuse(
                "volume.max_over_subscription_ratio",
                format!(
                    "{} must be a number of at least 1.0",
                    v.max_over_subscription_ratio
                ),
            );
        }
        if v.reconcile_interval_secs == 0 {
            return refuse(
                "volume.reconcile_interval_secs",
                "must be at least 1".into(),
            );
        }
        if v.operation_deadline_secs == 0 {
            return refuse(
                "volume.operation_deadline_secs",
                "must be at least 1".into(),
            );
        }
        if v.reserved_percentage > 100 {
            return refuse(
                "volume.reserved_percentage",
                format!("{} is above 100", v.reserved_percentage),
            );
        }
        if self.export.host.is_empty() || self.export.host.contains(char::is_whitespace) {
            return refuse(
                "export.host",
                format!("{:?} must be an address without spaces", self.export.host),
            );
        }
        if let Err(reason) = parse_ports(&self.export.ports) {
            return refuse("export.ports", reason);
        }
        self.backup.validate()?;
        if !v.cluster.is_empty()
            && !v
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return refuse(
                "volume.cluster",
                format!(
                    "{:?} must be ASCII letters, digits, '-', '_' or '.'",
                    v.cluster
                ),
            );
        }
        if self.service.host.is_empty() || self.service.host.contains(['@', '#', '*']) {
            return refuse(
                "service.host",
                format!(
                    "{:?} must be non-empty without '@', '#' or '*'",
                    self.service.host
                ),
            );
        }
        Ok(())
    }
}

impl Config {
    /// The service's routing identity for its backend: its topic, its pool, the
    /// `host` of its volumes and snapshots. `host@backend`, or
    /// `cluster@backend` for a member of a cluster (shared by every member).
    pub fn host(&self) -> String {
        match self.cluster() {
            Some(cluster) => format!("{cluster}@{}", self.volume.backend),
            None => self.member(),
        }
    }

    /// This process's own identity, `host@backend`: its `services` row
    /// (heartbeats) and, in a cluster, the owner of the exports it starts.
    /// The same as [`Config::host`] outside a cluster.
    pub fn member(&self) -> String {
        format!("{}@{}", self.service.host, self.volume.backend)
    }

    /// The cluster's name, if this service is a member of one.
    pub fn cluster(&self) -> Option<&str> {
        Some(self.volume.cluster.as_str()).filter(|c| !c.is_empty())
    }

    /// Where the backend keeps its objects: `volume.backend_dir`, else
    /// `<data_dir>/<backend>`.
    pub fn backend_dir(&self) -> std::path::PathBuf {
        if self.volume.backend_dir.is_empty() {
            self.service.data_dir.join(&self.volume.backend)
        } else {
            std::path::PathBuf::from(&self.volume.backend_dir)
        }
    }

    /// The ports of the exports (validated by [`ProcessConfig::validate`]; the default
    /// range if unparsable).
    pub fn export_ports(&self) -> std::ops::RangeInclusive<u16> {
        parse_ports(&self.export.ports).unwrap_or(10809..=11808)
    }

    /// Where the export servers' pid files and logs live, one directory per
    /// backend: `<data_dir>/exports/<host@backend>` (the member's own identity,
    /// never the cluster's: exports are not shared). A restarted service finds
    /// its running servers there.
    pub fn export_run_dir(&self) -> std::path::PathBuf {
        self.service.data_dir.join("exports").join(self.member())
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.volume.heartbeat_interval_secs)
    }

    /// The capability report interval.
    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.volume.report_interval_secs)
    }

    /// The time between two reconciler runs.
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.volume.reconcile_interval_secs)
    }

    /// The deadline of work this service starts.
    pub fn operation_deadline(&self) -> Duration {
        Duration::from_secs(self.volume.operation_deadline_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use scoria_common::config::env_of as env;

    #[test]
    fn defaults_work_on_one_machine() {
        let c = Config::load_from(None, &env(&[("SCORIA_HOST", "node1")])).expect("defaults");
        assert_eq!(c.volume, VolumeSection::default());
        assert_eq!(c.volume.backend, "file");
        assert_eq!(c.volume.driver, "file");
        assert_eq!(c.volume.capacity_gib, None);
        assert_eq!(c.volume.availability_zone, "default");
        assert_eq!(c.report_interval(), Duration::from_secs(60));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(c.volume.max_over_subscription_ratio, 20.0);
        assert_eq!(c.volume.reserved_percentage, 0);
        assert_eq!(c.reconcile_interval(), Duration::from_secs(60));
        assert_eq!(c.operation_deadline(), Duration::from_secs(600));
        assert_eq!(c.host(), "node1@file");
        assert_eq!(c.database_url(), "sqlite://./data/scoria.db");
        assert_eq!(c.backend_dir(), std::path::PathBuf::from("./data/file"));
    }

    #[test]
    fn env_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("volume.toml");
        std::fs::write(
            &file,
            "[volume]\nbackend = \"fast\"\ncapacity_gib = 5\nmax_over_subscription_ratio = 2.5\n",
        )
        .expect("write");
        let c = Config::load_from(
            Some(&file),
            &env(&[
                ("SCORIA_HOST", "node2"),
                ("SCORIA_VOLUME_CAPACITY_GIB", "40"),
                ("SCORIA_AVAILABILITY_ZONE", "az1"),
                ("SCORIA_HEARTBEAT_INTERVAL_SECS", "2"),
                ("SCORIA_RECONCILE_INTERVAL_SECS", "3"),
                ("SCORIA_OPERATION_DEADLINE_SECS", "4"),
            ]),
        )
        .expect("load");
        assert_eq!(c.reconcile_interval(), Duration::from_secs(3));
        assert_eq!(c.operation_deadline(), Duration::from_secs(4));
        assert_eq!(c.host(), "node2@fast");
        assert_eq!(c.volume.capacity_gib, Some(40));
        assert_eq!(c.volume.availability_zone, "az1");
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(c.volume.max_over_subscription_ratio, 2.5);
    }

    #[test]
    fn unknown_driver_names_the_key() {
        let err = Config::load_from(None, &env(&[("SCORIA_VOLUME_DRIVER", "lvm")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("volume.driver"), "{err}");
    }

    #[test]
    fn qcow2_is_a_driver() {
        let c = Config::load_from(
            None,
            &env(&[("SCORIA_HOST", "node1"), ("SCORIA_VOLUME_DRIVER", "qcow2")]),
        )
        .expect("load");
        assert_eq!(c.volume.driver, "qcow2");
    }

    #[test]
    fn exports_default_to_loopback_and_nbd_ports() {
        let c = Config::load_from(None, &env(&[("SCORIA_HOST", "node1")])).expect("defaults");
        assert_eq!(c.export, ExportSection::default());
        assert_eq!(c.export.host, "127.0.0.1");
        assert_eq!(c.export_ports(), 10809..=11808);
        assert_eq!(
            c.export_run_dir(),
            std::path::PathBuf::from("./data/exports/node1@file")
        );
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_HOST", "node1"),
                ("SCORIA_EXPORT_HOST", "10.0.0.5"),
                ("SCORIA_EXPORT_PORTS", "20000-20009"),
            ]),
        )
        .expect("load");
        assert_eq!(c.export.host, "10.0.0.5");
        assert_eq!(c.export_ports(), 20000..=20009);
    }

    #[test]
    fn bad_export_ports_name_the_key() {
        for ports in ["10809", "11808-10809", "0-10", "a-b", "1-70000", ""] {
            let err =
                Config::load_from(None, &env(&[("SCORIA_EXPORT_PORTS", ports)])).expect_err(ports);
            assert!(err.to_string().contains("export.ports"), "{ports}: {err}");
        }
        let err =
            Config::load_from(None, &env(&[("SCORIA_EXPORT_HOST", "")])).expect_err("empty host");
        assert!(err.to_string().contains("export.host"), "{err}");
    }

    #[test]
    fn a_cluster_member_routes_as_the_cluster_and_beats_as_itself() {
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_HOST", "node1"),
                ("SCORIA_DATA_DIR", "/var/lib/a"),
                ("SCORIA_VOLUME_CLUSTER", "shared"),
                ("SCORIA_VOLUME_BACKEND_DIR", "/mnt/shared/file"),
            ]),
        )
        .expect("load");
        assert_eq!(c.host(), "shared@file");
        assert_eq!(c.member(), "node1@file");
        assert_eq!(c.cluster(), Some("shared"));
        assert_eq!(
            c.backend_dir(),
            std::path::PathBuf::from("/mnt/shared/file")
        );
        // Nothing but the objects is shared: the exports stay the member's.
        assert_eq!(
            c.export_run_dir(),
            std::path::PathBuf::from("/var/lib/a/exports/node1@file")
        );
        let alone = Config::load_from(None, &env(&[("SCORIA_HOST", "node1")])).expect("load");
        assert_eq!(alone.cluster(), None);
        assert_eq!(alone.host(), alone.member());
        let err = Config::load_from(None, &env(&[("SCORIA_VOLUME_CLUSTER", "a@b")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("volume.cluster"), "{err}");
    }

    #[test]
    fn bad_backend_names_the_key() {
        let err = Config::load_from(None, &env(&[("SCORIA_VOLUME_BACKEND", "a#b")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("volume.backend"), "{err}");
    }
}
