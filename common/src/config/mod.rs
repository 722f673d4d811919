//! Configuration: one TOML file per process (`--config`), every key overridable by
//! its `SCORIA_*` environment variable, defaults that work on one machine.
//!
//! Each process's config struct is plain serde with defaults. [`load`] reads the file
//! (if any) into a TOML table, lays the environment overrides over it (each override
//! names the TOML key it sets, see [`EnvKey`]), and deserialises the result, so a bad
//! value is reported with the key (and the variable) it came from.

use std::{collections::HashMap, path::Path, time::Duration};

use serde::{Deserialize, de::DeserializeOwned};

mod bus;

/// Errors raised while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {var} (config key `{key}`): expected {expected}, got {value:?}")]
    Env {
        /// The variable.
        var: &'static str,
        /// The config key it overrides.
        key: &'static str,
        /// What it should hold.
        expected: &'static str,
        /// What it held.
        value: String,
    },
    /// The merged configuration does not fit the schema (wrong type, unknown key).
    #[error("invalid configuration: {0}")]
    Invalid(#[source] toml::de::Error),
    /// A value is of the right type but out of range.
    #[error("invalid configuration key `{key}`: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// A `Result` alias for configuration loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The type of value an environment override holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// A string, taken verbatim.
    Str,
    /// An unsigned integer.
    Int,
    /// An integer that may be negative (`-1` for "no limit").
    SignedInt,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Bool,
}

/// One environment override: variable `var` sets the dotted TOML key `key`.
#[derive(Debug, Clone, Copy)]
pub struct EnvKey {
    /// The environment variable, e.g. `SCORIA_AMQP_URL`.
    pub var: &'static str,
    /// The dotted TOML key it sets, e.g. `bus.amqp_url`.
    pub key: &'static str,
    /// The type of its value.
    pub kind: EnvKind,
}

impl EnvKey {
    /// A string override.
    pub const fn str(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            kind: EnvKind::Str,
        }
    }
    /// An integer override.
    pub const fn int(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            kind: EnvKind::Int,
        }
    }
    /// A signed integer override.
    pub const fn signed(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            kind: EnvKind::SignedInt,
        }
    }
    /// A boolean override.
    pub const fn bool(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            kind: EnvKind::Bool,
        }
    }
}

/// The overrides every process understands (the `[bus]` and `[service]` sections).
pub const COMMON_ENV: &[EnvKey] = &[
    EnvKey::str("SCORIA_AMQP_URL", "bus.amqp_url"),
    EnvKey::str("SCORIA_AMQP_CA_FILE", "bus.ca_file"),
    EnvKey::str("SCORIA_AMQP_CLIENT_CERT", "bus.client_cert"),
    EnvKey::str("SCORIA_AMQP_CLIENT_KEY", "bus.client_key"),
    EnvKey::str("SCORIA_CONTROL_EXCHANGE", "bus.control_exchange"),
    EnvKey::int("SCORIA_RPC_CALL_TIMEOUT_MS", "bus.call_timeout_ms"),
    EnvKey::int("SCORIA_RPC_PUBLISH_TIMEOUT_MS", "bus.publish_timeout_ms"),
    EnvKey::int("SCORIA_RPC_PREFETCH", "bus.prefetch"),
    EnvKey::int("SCORIA_AMQP_HEARTBEAT_SECS", "bus.heartbeat_secs"),
    EnvKey::int("SCORIA_RPC_QUEUE_EXPIRY_MS", "bus.queue_expiry_ms"),
    EnvKey::str("SCORIA_RPC_QUEUE_TYPE", "bus.queue_type"),
    EnvKey::int("SCORIA_RPC_DELIVERY_LIMIT", "bus.delivery_limit"),
    EnvKey::str("SCORIA_DATABASE_URL", "database.url"),
    EnvKey::int(
        "SCORIA_DATABASE_MAX_CONNECTIONS",
        "database.max_connections",
    ),
    EnvKey::str("SCORIA_DATA_DIR", "service.data_dir"),
    EnvKey::str("SCORIA_HOST", "service.host"),
    EnvKey::str("SCORIA_LOG_FORMAT", "service.log_format"),
    EnvKey::int("SCORIA_DRAIN_TIMEOUT_MS", "service.drain_timeout_ms"),
    EnvKey::str("SCORIA_METRICS_LISTEN", "service.metrics_listen"),
    EnvKey::str("SCORIA_OTLP_ENDPOINT", "service.otlp_endpoint"),
    EnvKey::bool("SCORIA_OTLP_READS", "service.otlp_reads"),
    EnvKey::str("SCORIA_NOTIFICATIONS", "bus.notifications"),
    EnvKey::int(
        "SCORIA_NOTIFICATION_QUEUE_MAX_LENGTH",
        "bus.notification_queue_max_length",
    ),
    EnvKey::int(
        "SCORIA_NOTIFICATION_QUEUE_TTL_MS",
        "bus.notification_queue_ttl_ms",
    ),
];

/// A process's whole configuration: the shared `[bus]`, `[service]` and
/// `[database]` sections plus the process's own, loaded and checked the same way
/// by every process.
pub trait ProcessConfig: DeserializeOwned {
    /// The overrides of the process's own sections, read on top of [`COMMON_ENV`].
    const ENV: &'static [EnvKey];

    /// The shared sections, as every process sees them.
    fn base(&self) -> BaseConfig;

    /// Checks values that are well-typed but unusable, `[bus]` included
    /// ([`BusConfig::validate`]).
    fn validate(&self) -> Result<()>;

    /// Loads the configuration from an optional file and the process environment.
    fn load(path: Option<&Path>) -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    /// [`ProcessConfig::load`] with an explicit environment (for tests).
    fn load_from(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self> {
        let keys: Vec<EnvKey> = COMMON_ENV.iter().chain(Self::ENV).copied().collect();
        let config: Self = load_from(path, &keys, env)?;
        config.base().database.validate()?;
        config.validate()?;
        Ok(config)
    }

    /// The database URL: the configured one, or a SQLite file in the data dir.
    fn database_url(&self) -> String {
        self.base().database_url()
    }
}

/// An environment made of `pairs`, for [`load_from`] and
/// [`ProcessConfig::load_from`] in tests.
pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Loads a config of type `T` from an optional TOML file, then the `overrides`
/// found in `env`.
pub fn load_from<T: DeserializeOwned>(
    path: Option<&Path>,
    overrides: &[EnvKey],
    env: &HashMap<String, String>,
) -> Result<T> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            })?
        }
        None => toml::Table::new(),
    };
    for key in overrides {
        if let Some(raw) = env.get(key.var) {
            set_dotted(&mut table, key.key, env_value(key, raw)?);
        }
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(ConfigError::Invalid)
}

fn env_value(key: &EnvKey, raw: &str) -> Result<toml::Value> {
    let bad = |expected| ConfigError::Env {
        var: key.var,
        key: key.key,
        expected,
        value: raw.to_owned(),
    };
    Ok(match key.kind {
        EnvKind::Str => toml::Value::String(raw.to_owned()),
        EnvKind::Int => toml::Value::Integer(
            raw.trim()
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| bad("a non-negative integer"))?,
        ),
        EnvKind::SignedInt => {
            toml::Value::Integer(raw.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
        }
        EnvKind::Bool => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
    })
}

fn set_dotted(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        cur = next;
    }
    cur.insert(last.to_owned(), value);
}

/// `url` with its password hidden (`user:***@`, `password=***`), for logs,
/// `/readyz` and error messages.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &base[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &base[..scheme + 3],
                    &creds[..colon],
                    &base[at..]
                ),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

pub use bus::*;

// === ServiceConfig ===

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Settings of the process itself (`[service]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where the process keeps its files (`SCORIA_DATA_DIR`).
    pub data_dir: std::path::PathBuf,
    /// The host name this process reports (`SCORIA_HOST`).
    pub host: String,
    /// `human` or `json` (`SCORIA_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight work, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP
    /// (`SCORIA_METRICS_LISTEN`, `host:port`); empty: not served.
    pub metrics_listen: String,
    /// The OTLP/gRPC collector traces are exported to (`SCORIA_OTLP_ENDPOINT`,
    /// e.g. `http://127.0.0.1:4317`); empty: no export.
    pub otlp_endpoint: String,
    /// Whether the export takes the single-row reads too (`SCORIA_OTLP_READS`,
    /// spans at `trace` level: about a third of a create's spans, which say
    /// little); default: only the writes and the steps that do work.
    pub otlp_reads: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            data_dir: "./data".into(),
            host: default_host(),
            log_format: LogFormat::Human,
            drain_timeout_ms: 30_000,
            metrics_listen: String::new(),
            otlp_endpoint: String::new(),
            otlp_reads: false,
        }
    }
}

impl ServiceConfig {
    /// The drain timeout.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// The machine's host name, or `localhost` if it cannot be read.
pub fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Settings of the database (`[database]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<file>` or `postgres://...` (`SCORIA_DATABASE_URL`); unset:
    /// `sqlite://<data dir>/scoria.db`.
    pub url: Option<String>,
    /// The most connections the process's pool opens
    /// (`SCORIA_DATABASE_MAX_CONNECTIONS`); unset: the process's own default on
    /// PostgreSQL, 2 on SQLite ([`DatabaseConfig::pool_size`]).
    pub max_connections: Option<u32>,
}

/// The most connections a pool may be configured with: far above what one
/// process uses, below what a PostgreSQL server accepts by default from all.
pub const MAX_POOL_CONNECTIONS: u32 = 1000;

impl DatabaseConfig {
    /// Refuses a pool size of 0 or above [`MAX_POOL_CONNECTIONS`].
    pub fn validate(&self) -> Result<()> {
        match self.max_connections {
            Some(n) if n == 0 || n > MAX_POOL_CONNECTIONS => Err(ConfigError::Value {
                key: "database.max_connections",
                reason: format!(
                    "SCORIA_DATABASE_MAX_CONNECTIONS (database.max_connections) is {n}: \
                     it must be between 1 and {MAX_POOL_CONNECTIONS}"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The pool size of a process whose own default on PostgreSQL is
    /// `postgres_default` (the configured size, when set, wins on either engine).
    pub fn pool_size(&self, postgres_default: u32) -> crate::db::PoolSize {
        crate::db::PoolSize {
            configured: self.max_connections,
            postgres_default,
        }
    }
}

/// The configuration shared by every process: `[bus]`, `[service]`, `[database]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseConfig {
    /// The message bus.
    pub bus: BusConfig,
    /// The process.
    pub service: ServiceConfig,
    /// The database.
    pub database: DatabaseConfig,
}

impl BaseConfig {
    /// The shared sections of a process's configuration, copied.
    pub fn of(bus: &BusConfig, service: &ServiceConfig, database: &DatabaseConfig) -> Self {
        Self {
            bus: bus.clone(),
            service: service.clone(),
            database: database.clone(),
        }
    }

    /// The database URL: the configured one, or a SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.service.data_dir.join("scoria.db").display()
            )
        })
    }
}

/// A process that reads only the shared sections.
impl ProcessConfig for BaseConfig {
    const ENV: &'static [EnvKey] = &[];

    fn base(&self) -> BaseConfig {
        self.clone()
    }

    fn validate(&self) -> Result<()> {
        self.bus.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::env_of as env;

    #[test]
    fn defaults_work_on_one_machine() {
        let c: BaseConfig = load_from(None, COMMON_ENV, &env(&[])).expect("defaults");
        assert_eq!(c.bus.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.bus.control_exchange, "scoria");
        assert_eq!(c.service.data_dir, std::path::PathBuf::from("./data"));
        assert_eq!(c.database_url(), "sqlite://./data/scoria.db");
        c.bus.validate().expect("valid defaults");
    }

    #[test]
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("scoria-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[bus]\ncontrol_exchange = \"fromfile\"\nprefetch = 7\n",
        )
        .expect("write");
        let c: BaseConfig = load_from(
            Some(&file),
            COMMON_ENV,
            &env(&[
                ("SCORIA_CONTROL_EXCHANGE", "fromenv"),
                ("SCORIA_LOG_FORMAT", "json"),
            ]),
        )
        .expect("load");
        assert_eq!(c.bus.control_exchange, "fromenv");
        assert_eq!(c.bus.prefetch, 7);
        assert_eq!(c.service.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err =
            load_from::<BaseConfig>(None, COMMON_ENV, &env(&[("SCORIA_RPC_PREFETCH", "lots")]))
                .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("SCORIA_RPC_PREFETCH") && msg.contains("bus.prefetch"),
            "{msg}"
        );
    }

    #[test]
    fn pool_size_from_env_or_toml_else_the_process_default() {
        let unset = BaseConfig::load_from(None, &env(&[])).expect("load");
        assert_eq!(unset.database.max_connections, None);
        assert_eq!(unset.database.pool_size(6).postgres_default, 6);
        assert_eq!(unset.database.pool_size(6).configured, None);
        let set = BaseConfig::load_from(None, &env(&[("SCORIA_DATABASE_MAX_CONNECTIONS", "24")]))
            .expect("load");
        assert_eq!(set.database.pool_size(6).configured, Some(24));
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("scoria.toml");
        std::fs::write(&file, "[database]\nmax_connections = 3\n").expect("write");
        let toml = BaseConfig::load_from(Some(&file), &env(&[])).expect("load");
        assert_eq!(toml.database.max_connections, Some(3));
        for bad in ["0", "1001"] {
            let err =
                BaseConfig::load_from(None, &env(&[("SCORIA_DATABASE_MAX_CONNECTIONS", bad)]))
                    .expect_err("must fail");
            let msg = err.to_string();
            assert!(
                msg.contains("SCORIA_DATABASE_MAX_CONNECTIONS")
                    && msg.contains("database.max_connections"),
                "{msg}"
            );
        }
    }

    #[test]
    fn notification_settings_from_env() {
        let c: BaseConfig = load_from(
            None,
            COMMON_ENV,
            &env(&[
                ("SCORIA_NOTIFICATIONS", "transient"),
                ("SCORIA_NOTIFICATION_QUEUE_MAX_LENGTH", "0"),
                ("SCORIA_NOTIFICATION_QUEUE_TTL_MS", "60000"),
            ]),
        )
        .expect("load");
        assert_eq!(c.bus.notifications, NotificationMode::Transient);
        assert_eq!(c.bus.notification_queue_max_length, 0);
        assert_eq!(c.bus.notification_queue_ttl_ms, 60_000);
        let err =
            load_from::<BaseConfig>(None, COMMON_ENV, &env(&[("SCORIA_NOTIFICATIONS", "loud")]))
                .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("notifications") && msg.contains("loud"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("scoria-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "[bus]\ncontrol_exchang = \"typo\"\n").expect("write");
        let err =
            load_from::<BaseConfig>(Some(&file), COMMON_ENV, &env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("control_exchang"), "{err}");
    }

    #[test]
    fn amqps_files_are_checked_at_load() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (ca, crt, pem_key, junk) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("c.key"),
            dir.path().join("junk"),
        );
        std::fs::write(&ca, cert.pem()).expect("ca");
        std::fs::write(&crt, cert.pem()).expect("cert");
        std::fs::write(&pem_key, key.serialize_pem()).expect("key");
        std::fs::write(&junk, "junk").expect("junk");
        let p = |p: &std::path::PathBuf| p.display().to_string();
        let load = |pairs: &[(&str, String)]| {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            <BaseConfig as ProcessConfig>::load_from(None, &env(&pairs))
        };
        let amqps = (
            "SCORIA_AMQP_URL",
            "amqps://guest:secret@localhost:5671/%2f".to_owned(),
        );
        let c = load(&[
            amqps.clone(),
            ("SCORIA_AMQP_CA_FILE", p(&ca)),
            ("SCORIA_AMQP_CLIENT_CERT", p(&crt)),
            ("SCORIA_AMQP_CLIENT_KEY", p(&pem_key)),
        ])
        .expect("amqps with files");
        let tls = c.bus.tls_config().expect("tls");
        assert!(tls.cert_chain.is_some() && tls.identity.is_some());

        let err = load(&[("SCORIA_AMQP_CA_FILE", p(&ca))]).expect_err("amqp://");
        assert!(err.to_string().contains("SCORIA_AMQP_CA_FILE"), "{err}");
        let err = load(&[amqps.clone(), ("SCORIA_AMQP_CLIENT_CERT", p(&crt))]).expect_err("pair");
        assert!(err.to_string().contains("SCORIA_AMQP_CLIENT_KEY"), "{err}");
        let err = load(&[amqps.clone(), ("SCORIA_AMQP_CA_FILE", p(&junk))]).expect_err("junk");
        assert!(err.to_string().contains("SCORIA_AMQP_CA_FILE"), "{err}");
        let err = load(&[
            amqps.clone(),
            ("SCORIA_AMQP_CLIENT_CERT", p(&crt)),
            ("SCORIA_AMQP_CLIENT_KEY", p(&junk)),
        ])
        .expect_err("junk key");
        assert!(err.to_string().contains("SCORIA_AMQP_CLIENT_KEY"), "{err}");
        let err = load(&[("SCORIA_AMQP_URL", "http://u:secret@h".to_owned())]).expect_err("scheme");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host"), "amqp://host");
        assert_eq!(
            redact_url("postgres://u:p@w@db/x?sslmode=verify-full&password=hunter2"),
            "postgres://u:***@db/x?sslmode=verify-full&password=***"
        );
        assert_eq!(
            redact_url("postgres://db/x?sslmode=disable"),
            "postgres://db/x?sslmode=disable"
        );
    }

    #[test]
    fn queue_type_and_delivery_limit_from_env_and_toml() {
        let c: BaseConfig = load_from(None, COMMON_ENV, &env(&[])).expect("defaults");
        assert_eq!(c.bus.queue_type, QueueType::Classic);
        assert_eq!(c.bus.delivery_limit, DEFAULT_DELIVERY_LIMIT);
        let c: BaseConfig = load_from(
            None,
            COMMON_ENV,
            &env(&[
                ("SCORIA_RPC_QUEUE_TYPE", "quorum"),
                ("SCORIA_RPC_DELIVERY_LIMIT", "5"),
            ]),
        )
        .expect("quorum");
        assert_eq!(c.bus.queue_type, QueueType::Quorum);
        assert_eq!(c.bus.delivery_limit, 5);
        let c: BusConfig = toml::from_str("queue_type = \"classic\"").expect("toml");
        assert_eq!(c.queue_type, QueueType::Classic);

        let err = <BaseConfig as ProcessConfig>::load_from(
            None,
            &env(&[("SCORIA_RPC_QUEUE_TYPE", "stream")]),
        )
        .expect_err("stream is not offered");
        let msg = err.to_string();
        assert!(
            msg.contains("SCORIA_RPC_QUEUE_TYPE") && msg.contains("stream"),
            "{msg}"
        );
        let err = <BaseConfig as ProcessConfig>::load_from(
            None,
            &env(&[("SCORIA_RPC_DELIVERY_LIMIT", "0")]),
        )
        .expect_err("0");
        assert!(
            err.to_string().contains("SCORIA_RPC_DELIVERY_LIMIT"),
            "{err}"
        );
    }

    #[test]
    fn several_broker_addresses_as_a_list_or_a_string() {
        let c: BusConfig =
            toml::from_str("amqp_url = [\"amqp://u:pw@a:5672/%2f\", \"amqp://u:pw@b:5673/%2f\"]")
                .expect("list");
        assert_eq!(
            c.amqp_urls(),
            ["amqp://u:pw@a:5672/%2f", "amqp://u:pw@b:5673/%2f"]
        );
        assert_eq!(
            c.redacted_urls(),
            "amqp://u:***@a:5672/%2f,amqp://u:***@b:5673/%2f"
        );
        c.validate().expect("valid list");
        let c: BaseConfig = load_from(
            None,
            COMMON_ENV,
            &env(&[("SCORIA_AMQP_URL", "amqp://a:5672, amqp://b:5673 ,")]),
        )
        .expect("comma list");
        assert_eq!(c.bus.amqp_urls(), ["amqp://a:5672", "amqp://b:5673"]);
        let c: BusConfig = toml::from_str("amqp_url = \"amqp://one\"").expect("string");
        assert_eq!(c.amqp_urls(), ["amqp://one"]);

        let load = |url: &str| {
            <BaseConfig as ProcessConfig>::load_from(None, &env(&[("SCORIA_AMQP_URL", url)]))
        };
        let err = load("amqp://a:5672,http://u:secret@b").expect_err("second bad");
        let msg = err.to_string();
        assert!(
            msg.contains("SCORIA_AMQP_URL")
                && msg.contains("http://u:***@b")
                && !msg.contains("secret"),
            "{msg}"
        );
        let err = load(" , ").expect_err("empty");
        assert!(err.to_string().contains("no broker address"), "{err}");
        let err = load("amqp://u:secret@a:notaport").expect_err("bad port");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn tls_files_go_with_any_amqps_address() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("ca");
        let ca = ca.display().to_string();
        let load = |url: &str| {
            <BaseConfig as ProcessConfig>::load_from(
                None,
                &env(&[("SCORIA_AMQP_URL", url), ("SCORIA_AMQP_CA_FILE", &ca)]),
            )
        };
        load("amqps://a:5671,amqps://b:5671").expect("amqps list with a CA");
        let err = load("amqp://a:5672,amqp://b:5672").expect_err("no amqps");
        assert!(err.to_string().contains("SCORIA_AMQP_CA_FILE"), "{err}");
    }

    #[test]
    fn bad_control_exchange_is_refused() {
        let c = BusConfig {
            control_exchange: "has space".into(),
            ..BusConfig::default()
        };
        let err = c.validate().expect_err("must fail");
        assert!(err.to_string().contains("bus.control_exchange"), "{err}");
    }
}
