//! The API's configuration: the shared `[bus]`, `[service]` and `[database]`
//! sections (so one TOML file serves every process) plus `[api]`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use scoria_common::{
    config::{
        self, BaseConfig, BusConfig, ConfigError, DatabaseConfig, EnvKey, ProcessConfig,
        ServiceConfig,
    },
    db::quota::QuotaDefaults,
};
use serde::Deserialize;

use crate::limits::Limits;

/// The overrides the API understands on top of [`COMMON_ENV`](scoria_common::config::COMMON_ENV).
pub const API_ENV: &[EnvKey] = &[
    EnvKey::str("SCORIA_API_LISTEN", "api.listen"),
    EnvKey::str("SCORIA_AUTH_MODE", "api.auth_mode"),
    EnvKey::str("SCORIA_AUTH_TOKENS_FILE", "api.tokens_file"),
    EnvKey::str("SCORIA_POLICY_FILE", "api.policy_file"),
    EnvKey::str("SCORIA_AUTH_JWKS", "api.jwt_jwks"),
    EnvKey::str("SCORIA_AUTH_OIDC_ISSUER", "api.jwt_oidc_issuer"),
    EnvKey::str("SCORIA_AUTH_ISSUER", "api.jwt_issuer"),
    EnvKey::str("SCORIA_AUTH_AUDIENCE", "api.jwt_audience"),
    EnvKey::int("SCORIA_AUTH_LEEWAY_SECS", "api.jwt_leeway_secs"),
    EnvKey::str("SCORIA_AUTH_PROJECT_CLAIM", "api.jwt_project_claim"),
    EnvKey::str("SCORIA_AUTH_USER_CLAIM", "api.jwt_user_claim"),
    EnvKey::str("SCORIA_AUTH_ROLES_CLAIM", "api.jwt_roles_claim"),
    EnvKey::str("SCORIA_AUTH_CA_FILE", "api.jwt_ca_file"),
    EnvKey::int("SCORIA_AUTH_JWKS_REFRESH_SECS", "api.jwt_jwks_refresh_secs"),
    EnvKey::int(
        "SCORIA_AUTH_JWKS_MIN_REFRESH_SECS",
        "api.jwt_jwks_min_refresh_secs",
    ),
    EnvKey::int("SCORIA_MAX_VOLUME_SIZE_GIB", "api.max_volume_size_gib"),
    EnvKey::int(
        "SCORIA_SERVICE_DOWN_TIME_SECS",
        "api.service_down_time_secs",
    ),
    EnvKey::int("SCORIA_API_MAX_WATCHERS", "api.max_watchers"),
    EnvKey::int("SCORIA_API_WATCH_BUFFER", "api.watch_buffer"),
    EnvKey::int("SCORIA_TRANSFER_EXPIRY_SECS", "api.transfer_expiry_secs"),
    EnvKey::str("SCORIA_API_TLS_CERT", "api.tls.cert"),
    EnvKey::str("SCORIA_API_TLS_KEY", "api.tls.key"),
    EnvKey::str("SCORIA_API_TLS_CLIENT_CA", "api.tls.client_ca"),
    EnvKey::int("SCORIA_API_TLS_RELOAD_SECS", "api.tls.reload_secs"),
    EnvKey::int("SCORIA_API_MAX_REQUEST_BYTES", "api.max_request_bytes"),
    EnvKey::int("SCORIA_API_MAX_METADATA_BYTES", "api.max_metadata_bytes"),
    EnvKey::int(
        "SCORIA_API_MAX_CONCURRENT_STREAMS",
        "api.max_concurrent_streams",
    ),
    EnvKey::int("SCORIA_API_RATE_LIMIT", "api.rate_limit"),
    EnvKey::int("SCORIA_API_RATE_BURST", "api.rate_burst"),
    EnvKey::signed("SCORIA_QUOTA_VOLUMES", "quota.volumes"),
    EnvKey::signed("SCORIA_QUOTA_GIGABYTES", "quota.gigabytes"),
    EnvKey::signed("SCORIA_QUOTA_SNAPSHOTS", "quota.snapshots"),
    EnvKey::signed("SCORIA_QUOTA_ATTACHMENTS", "quota.attachments"),
    EnvKey::signed(
        "SCORIA_QUOTA_PER_VOLUME_GIGABYTES",
        "quota.per_volume_gigabytes",
    ),
    EnvKey::signed("SCORIA_QUOTA_BACKUPS", "quota.backups"),
    EnvKey::signed("SCORIA_QUOTA_BACKUP_GIGABYTES", "quota.backup_gigabytes"),
];

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Local use: the project comes from the `x-project-id` header, unchecked.
    #[default]
    Noauth,
    /// `authorization: Bearer <token>`, looked up in `api.tokens_file`.
    Token,
    /// `authorization: Bearer <JWT>`, verified against the issuer's JWKS.
    Jwt,
}

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// The gRPC listen address (`SCORIA_API_LISTEN`).
    pub listen: String,
    /// `noauth` or `token` (`SCORIA_AUTH_MODE`).
    pub auth_mode: AuthMode,
    /// The tokens file of token mode (`SCORIA_AUTH_TOKENS_FILE`).
    pub tokens_file: Option<PathBuf>,
    /// A policy file in oslo.policy's YAML form overriding the default rules
    /// (`SCORIA_POLICY_FILE`).
    pub policy_file: Option<PathBuf>,
    /// jwt mode: a JWKS file or `https://` URL (`SCORIA_AUTH_JWKS`).
    pub jwt_jwks: Option<String>,
    /// jwt mode: an issuer found by OIDC discovery (`SCORIA_AUTH_OIDC_ISSUER`).
    pub jwt_oidc_issuer: Option<String>,
    /// jwt mode: the `iss` required (`SCORIA_AUTH_ISSUER`).
    pub jwt_issuer: Option<String>,
    /// jwt mode: the `aud` required (`SCORIA_AUTH_AUDIENCE`).
    pub jwt_audience: Option<String>,
    /// jwt mode: clock skew allowed on `exp`/`nbf` (`SCORIA_AUTH_LEEWAY_SECS`).
    pub jwt_leeway_secs: u64,
    /// jwt mode: the project's claim (`SCORIA_AUTH_PROJECT_CLAIM`).
    pub jwt_project_claim: String,
    /// jwt mode: the user's claim (`SCORIA_AUTH_USER_CLAIM`).
    pub jwt_user_claim: String,
    /// jwt mode: the roles' claim (`SCORIA_AUTH_ROLES_CLAIM`).
    pub jwt_roles_claim: String,
    /// jwt mode: a CA file for the https fetches (`SCORIA_AUTH_CA_FILE`).
    pub jwt_ca_file: Option<PathBuf>,
    /// jwt mode: how often the JWKS is fetched again (`SCORIA_AUTH_JWKS_REFRESH_SECS`; 0 never).
    pub jwt_jwks_refresh_secs: u64,
    /// jwt mode: never fetched more often (`SCORIA_AUTH_JWKS_MIN_REFRESH_SECS`).
    pub jwt_jwks_min_refresh_secs: u64,
    /// The largest volume a client may create, in GiB (`SCORIA_MAX_VOLUME_SIZE_GIB`).
    pub max_volume_size_gib: u64,
    /// A service whose last heartbeat is older than this is shown down
    /// (`SCORIA_SERVICE_DOWN_TIME_SECS`, the scheduler's key too; Cinder's
    /// `service_down_time`).
    pub service_down_time_secs: u64,
    /// At most this many `Watch*` streams at once on this instance
    /// (`SCORIA_API_MAX_WATCHERS`); RESOURCE_EXHAUSTED beyond.
    pub max_watchers: usize,
    /// At most this many updates wait unread per watcher
    /// (`SCORIA_API_WATCH_BUFFER`); a watcher further behind is dropped.
    pub watch_buffer: usize,
    /// The largest request message, in bytes (`SCORIA_API_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// The most header bytes of a request, names and values
    /// (`SCORIA_API_MAX_METADATA_BYTES`).
    pub max_metadata_bytes: usize,
    /// The most concurrent HTTP/2 streams per connection
    /// (`SCORIA_API_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Requests per second per project, 0 for no limit (`SCORIA_API_RATE_LIMIT`).
    pub rate_limit: u32,
    /// The requests a project may send at once after a quiet spell
    /// (`SCORIA_API_RATE_BURST`).
    pub rate_burst: u32,
    /// gRPC over TLS (`[api.tls]`); off unless a certificate is set.
    pub tls: TlsSection,
    /// How long a volume transfer offer stands, in seconds
    /// (`SCORIA_TRANSFER_EXPIRY_SECS`); then the volume is available again.
    pub transfer_expiry_secs: u64,
}

/// The `[api.tls]` section: TLS on the gRPC listener when `cert` and `key` are set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The PEM certificate chain, leaf first (`SCORIA_API_TLS_CERT`).
    pub cert: Option<PathBuf>,
    /// The PEM private key (`SCORIA_API_TLS_KEY`).
    pub key: Option<PathBuf>,
    /// If set, clients must present a certificate signed by this PEM CA
    /// (`SCORIA_API_TLS_CLIENT_CA`): mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes, in seconds
    /// (`SCORIA_API_TLS_RELOAD_SECS`); 0: reloaded on SIGHUP only.
    pub reload_secs: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            reload_secs: 5,
        }
    }
}

impl TlsSection {
    /// Checks the keys go together (the files are read by
    /// [`ServerTls::load`](crate::tls::ServerTls::load)).
    pub fn validate(&self) -> config::Result<()> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(ConfigError::Value {
                key: "api.tls.key",
                reason: "SCORIA_API_TLS_CERT is set without SCORIA_API_TLS_KEY: set both or neither".into(),
            }),
            (None, Some(_)) => Err(ConfigError::Value {
                key: "api.tls.cert",
                reason: "SCORIA_API_TLS_KEY is set without SCORIA_API_TLS_CERT: set both or neither".into(),
            }),
            (None, None) if self.client_ca.is_some() => Err(ConfigError::Value {
                key: "api.tls.client_ca",
                reason: "SCORIA_API_TLS_CLIENT_CA needs TLS on: set SCORIA_API_TLS_CERT and SCORIA_API_TLS_KEY".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8776".to_owned(),
            auth_mode: AuthMode::Noauth,
            tokens_file: None,
            policy_file: None,
            jwt_jwks: None,
            jwt_oidc_issuer: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            jwt_project_claim: "project_id".into(),
            jwt_user_claim: "sub".into(),
            jwt_roles_claim: "roles".into(),
            jwt_ca_file: None,
            jwt_jwks_refresh_secs: 300,
            jwt_jwks_min_refresh_secs: 5,
            max_volume_size_gib: 16_384,
            service_down_time_secs: 60,
            max_watchers: 10_000,
            watch_buffer: 64,
            tls: TlsSection::default(),
            max_request_bytes: Limits::DEFAULT.max_request_bytes,
            max_metadata_bytes: Limits::DEFAULT.max_metadata_bytes,
            max_concurrent_streams: Limits::DEFAULT.max_concurrent_streams,
            rate_limit: Limits::DEFAULT.rate_limit,
            rate_burst: Limits::DEFAULT.rate_burst,
            transfer_expiry_secs: 86_400,
        }
    }
}

/// The configuration of `scoria-api`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The message bus.
    pub bus: BusConfig,
    /// The process.
    pub service: ServiceConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The gRPC API.
    pub api: ApiSection,
    /// The limits of projects without their own (`[quota]`, Cinder's defaults;
    /// -1 is no limit).
    pub quota: QuotaDefaults,
}

impl Config {
    /// [`ProcessConfig::load_from`], callable without the trait in scope.
    pub fn load_from(path: Option<&Path>, env: &HashMap<String, String>) -> config::Result<Self> {
        <Self as ProcessConfig>::load_from(path, env)
    }

    /// The settings of `jwt` auth mode.
    pub fn jwt_settings(&self) -> crate::auth::JwtSettings {
        let api = &self.api;
        crate::auth::JwtSettings {
            jwks: api.jwt_jwks.clone().filter(|s| !s.is_empty()),
            oidc_issuer: api.jwt_oidc_issuer.clone().filter(|s| !s.is_empty()),
            issuer: api.jwt_issuer.clone().filter(|s| !s.is_empty()),
            audience: api.jwt_audience.clone().filter(|s| !s.is_empty()),
            leeway_secs: api.jwt_leeway_secs,
            claims: crate::auth::jwt::Claims {
                project: api.jwt_project_claim.clone(),
                user: api.jwt_user_claim.clone(),
                roles: api.jwt_roles_claim.clone(),
            },
            ca_file: api.jwt_ca_file.clone(),
            refresh_secs: api.jwt_jwks_refresh_secs,
            min_refresh_secs: api.jwt_jwks_min_refresh_secs,
        }
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> config::Result<SocketAddr> {
        self.api.listen.parse().map_err(|e| ConfigError::Value {
            key: "api.listen",
            reason: format!(
                "{:?} is not a socket address (host:port): {e}",
                self.api.listen
            ),
        })
    }

    /// The request limits of `[api]`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_request_bytes: self.api.max_request_bytes,
            max_metadata_bytes: self.api.max_metadata_bytes,
            max_concurrent_streams: self.api.max_concurrent_streams,
            rate_limit: self.api.rate_limit,
            rate_burst: self.api.rate_burst,
        }
    }

    /// Refuses limits no deployment could work with, naming the key and its variable.
    fn validate_limits(&self) -> config::Result<()> {
        let api = &self.api;
        let at_least = |key: &'static str, var: &str, value: u64, min: u64| {
            if value < min {
                return Err(ConfigError::Value {
                    key,
                    reason: format!("{value} is too small: must be at least {min} ({var})"),
                });
            }
            Ok(())
        };
        at_least(
            "api.max_request_bytes",
            "SCORIA_API_MAX_REQUEST_BYTES",
            api.max_request_bytes as u64,
            1024,
        )?;
        // The auth headers alone need a few hundred bytes.
        at_least(
            "api.max_metadata_bytes",
            "SCORIA_API_MAX_METADATA_BYTES",
            api.max_metadata_bytes as u64,
            1024,
        )?;
        at_least(
            "api.max_concurrent_streams",
            "SCORIA_API_MAX_CONCURRENT_STREAMS",
            u64::from(api.max_concurrent_streams),
            1,
        )?;
        if api.rate_limit > 0 {
            at_least(
                "api.rate_burst",
                "SCORIA_API_RATE_BURST",
                u64::from(api.rate_burst),
                1,
            )?;
        }
        Ok(())
    }

    /// How long a transfer offer stands.
    pub fn transfer_expiry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.api.transfer_expiry_secs)
    }

    /// How old a heartbeat may get before its service is down, in ms.
    pub fn service_down_ms(&self) -> i64 {
        i64::try_from(self.api.service_down_time_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl ProcessConfig for Config {
    const ENV: &'static [EnvKey] = API_ENV;

    fn base(&self) -> BaseConfig {
        BaseConfig::of(&self.bus, &self.service, &self.database)
    }

    fn validate(&self) -> config::Result<()> {
        self.bus.validate()?;
        self.listen_addr()?;
        self.api.tls.validate()?;
        self.validate_limits()?;
        if self.api.max_volume_size_gib == 0 {
            return Err(ConfigError::Value {
                key: "api.max_volume_size_gib",
                reason: "must be at least 1".into(),
            });
        }
        if self.api.watch_buffer == 0 {
            return Err(ConfigError::Value {
                key: "api.watch_buffer",
                reason: "must be at least 1".into(),
            });
        }
        if self.api.service_down_time_secs == 0 {
            return Err(ConfigError::Value {
                key: "api.service_down_time_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.api.transfer_expiry_secs == 0 {
            return Err(ConfigError::Value {
                key: "api.transfer_expiry_secs",
                reason: "must be at least 1".into(),
            });
        }
        if let Some((key, value)) = self.quota.invalid() {
            return Err(ConfigError::Value {
                key,
                reason: format!("{value} is not a limit: use -1 (no limit) or 0 and more"),
            });
        }
        if self.api.auth_mode == AuthMode::Jwt {
            let jwt = self.jwt_settings();
            if jwt.jwks.is_some() == jwt.oidc_issuer.is_some() {
                return Err(ConfigError::Value {
                    key: "api.jwt_jwks",
                    reason: "jwt auth mode needs exactly one of SCORIA_AUTH_JWKS (a JWKS file or https:// URL) and SCORIA_AUTH_OIDC_ISSUER".into(),
                });
            }
            if jwt.issuer.is_none() && jwt.oidc_issuer.is_none() {
                return Err(ConfigError::Value {
                    key: "api.jwt_issuer",
                    reason: "jwt auth mode needs SCORIA_AUTH_ISSUER: the iss tokens must carry"
                        .into(),
                });
            }
            if jwt.audience.is_none() {
                return Err(ConfigError::Value {
                    key: "api.jwt_audience",
                    reason: "jwt auth mode needs SCORIA_AUTH_AUDIENCE: the aud tokens must carry"
                        .into(),
                });
            }
            if jwt.min_refresh_secs == 0 {
                return Err(ConfigError::Value {
                    key: "api.jwt_jwks_min_refresh_secs",
                    reason: "must be at least 1 (SCORIA_AUTH_JWKS_MIN_REFRESH_SECS)".into(),
                });
            }
        }
        if self.api.auth_mode == AuthMode::Token && self.api.tokens_file.is_none() {
            return Err(ConfigError::Value {
                key: "api.tokens_file",
                reason: "token auth mode needs a tokens file (SCORIA_AUTH_TOKENS_FILE)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use scoria_common::config::env_of as env;

    #[test]
    fn defaults_work_on_one_machine() {
        let c = Config::load_from(None, &env(&[])).expect("defaults");
        assert_eq!(c.api.listen, "127.0.0.1:8776");
        assert_eq!(c.api.auth_mode, AuthMode::Noauth);
        assert_eq!(c.api.tokens_file, None);
        assert_eq!(c.api.max_volume_size_gib, 16_384);
        assert_eq!(c.api.service_down_time_secs, 60);
        assert_eq!(c.api.transfer_expiry_secs, 86_400);
        assert_eq!(c.api.max_watchers, 10_000);
        assert_eq!(c.api.watch_buffer, 64);
        assert_eq!(
            c.limits(),
            Limits {
                max_request_bytes: 4 << 20,
                max_metadata_bytes: 16 << 10,
                max_concurrent_streams: 256,
                rate_limit: 500,
                rate_burst: 2000,
            }
        );
        assert_eq!(c.service_down_ms(), 60_000);
        assert_eq!(c.database_url(), "sqlite://./data/scoria.db");
        assert_eq!(c.bus.control_exchange, "scoria");
        assert_eq!(c.quota, QuotaDefaults::CINDER);
        assert_eq!(
            (c.quota.volumes, c.quota.snapshots, c.quota.gigabytes),
            (10, 10, 1000)
        );
    }

    #[test]
    fn quota_defaults_come_from_env_and_refuse_negatives_but_minus_one() {
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_QUOTA_VOLUMES", "50"),
                ("SCORIA_QUOTA_GIGABYTES", "-1"),
                ("SCORIA_QUOTA_SNAPSHOTS", "0"),
                ("SCORIA_QUOTA_ATTACHMENTS", "7"),
                ("SCORIA_QUOTA_PER_VOLUME_GIGABYTES", "100"),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.quota,
            QuotaDefaults {
                volumes: 50,
                gigabytes: -1,
                snapshots: 0,
                attachments: 7,
                per_volume_gigabytes: 100,
                ..QuotaDefaults::CINDER
            }
        );
        let err =
            Config::load_from(None, &env(&[("SCORIA_QUOTA_GIGABYTES", "-2")])).expect_err("-2");
        assert!(err.to_string().contains("quota.gigabytes"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_QUOTA_VOLUMES", "many")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("SCORIA_QUOTA_VOLUMES"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("scoria-api-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[api]\nlisten = \"127.0.0.1:1\"\nmax_volume_size_gib = 10\n[bus]\ncontrol_exchange = \"f\"\n",
        )
        .expect("write");
        let c = Config::load_from(
            Some(&file),
            &env(&[
                ("SCORIA_API_LISTEN", "0.0.0.0:9000"),
                ("SCORIA_AUTH_MODE", "token"),
                ("SCORIA_AUTH_TOKENS_FILE", "/etc/scoria/tokens.toml"),
                ("SCORIA_CONTROL_EXCHANGE", "e"),
                ("SCORIA_SERVICE_DOWN_TIME_SECS", "42"),
                ("SCORIA_TRANSFER_EXPIRY_SECS", "7"),
            ]),
        )
        .expect("load");
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        assert_eq!(c.api.auth_mode, AuthMode::Token);
        assert_eq!(
            c.api.tokens_file,
            Some(PathBuf::from("/etc/scoria/tokens.toml"))
        );
        assert_eq!(c.api.max_volume_size_gib, 10);
        assert_eq!(c.api.service_down_time_secs, 42);
        assert_eq!(c.api.transfer_expiry_secs, 7);
        assert_eq!(c.bus.control_exchange, "e");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tls_keys_come_from_env_or_file_and_go_in_pairs() {
        let c = Config::load_from(None, &env(&[])).expect("defaults");
        assert_eq!(c.api.tls, TlsSection::default());
        assert_eq!(c.api.tls.reload_secs, 5);
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_API_TLS_CERT", "/etc/scoria/api.pem"),
                ("SCORIA_API_TLS_KEY", "/etc/scoria/api.key"),
                ("SCORIA_API_TLS_CLIENT_CA", "/etc/scoria/ca.pem"),
                ("SCORIA_API_TLS_RELOAD_SECS", "0"),
            ]),
        )
        .expect("tls");
        assert_eq!(c.api.tls.cert, Some(PathBuf::from("/etc/scoria/api.pem")));
        assert_eq!(c.api.tls.key, Some(PathBuf::from("/etc/scoria/api.key")));
        assert_eq!(
            c.api.tls.client_ca,
            Some(PathBuf::from("/etc/scoria/ca.pem"))
        );
        assert_eq!(c.api.tls.reload_secs, 0);

        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[api.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n").expect("write");
        let c = Config::load_from(Some(&file), &env(&[])).expect("file");
        assert_eq!(c.api.tls.cert, Some(PathBuf::from("/c.pem")));

        let err = Config::load_from(None, &env(&[("SCORIA_API_TLS_CERT", "/c.pem")]))
            .expect_err("cert alone");
        assert!(err.to_string().contains("SCORIA_API_TLS_KEY"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_API_TLS_KEY", "/k.pem")]))
            .expect_err("key alone");
        assert!(err.to_string().contains("SCORIA_API_TLS_CERT"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_API_TLS_CLIENT_CA", "/ca.pem")]))
            .expect_err("client CA without TLS");
        assert!(
            err.to_string().contains("SCORIA_API_TLS_CLIENT_CA"),
            "{err}"
        );
        let err = Config::load_from(None, &env(&[("SCORIA_API_TLS_RELOAD_SECS", "soon")]))
            .expect_err("bad secs");
        assert!(
            err.to_string().contains("SCORIA_API_TLS_RELOAD_SECS"),
            "{err}"
        );
    }

    #[test]
    fn limits_come_from_env_and_toml_and_refuse_bad_values() {
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_API_MAX_REQUEST_BYTES", "65536"),
                ("SCORIA_API_MAX_METADATA_BYTES", "2048"),
                ("SCORIA_API_MAX_CONCURRENT_STREAMS", "8"),
                ("SCORIA_API_RATE_LIMIT", "0"),
                ("SCORIA_API_RATE_BURST", "0"),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.limits(),
            Limits {
                max_request_bytes: 65536,
                max_metadata_bytes: 2048,
                max_concurrent_streams: 8,
                rate_limit: 0,
                rate_burst: 0,
            }
        );
        let dir = std::env::temp_dir().join(format!("scoria-api-lim-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "[api]\nrate_limit = 7\nrate_burst = 9\n").expect("write");
        let c = Config::load_from(Some(&file), &env(&[])).expect("load");
        assert_eq!((c.api.rate_limit, c.api.rate_burst), (7, 9));
        let _ = std::fs::remove_dir_all(dir);

        for (var, value, names) in [
            (
                "SCORIA_API_MAX_REQUEST_BYTES",
                "10",
                "SCORIA_API_MAX_REQUEST_BYTES",
            ),
            (
                "SCORIA_API_MAX_METADATA_BYTES",
                "0",
                "SCORIA_API_MAX_METADATA_BYTES",
            ),
            (
                "SCORIA_API_MAX_CONCURRENT_STREAMS",
                "0",
                "SCORIA_API_MAX_CONCURRENT_STREAMS",
            ),
            ("SCORIA_API_RATE_BURST", "0", "SCORIA_API_RATE_BURST"),
            ("SCORIA_API_RATE_LIMIT", "lots", "SCORIA_API_RATE_LIMIT"),
            ("SCORIA_API_RATE_LIMIT", "-5", "api.rate_limit"),
        ] {
            let err = Config::load_from(None, &env(&[(var, value)])).expect_err(var);
            assert!(err.to_string().contains(names), "{var}={value}: {err}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::load_from(None, &env(&[("SCORIA_API_LISTEN", "nowhere")]))
            .expect_err("bad listen");
        assert!(err.to_string().contains("api.listen"), "{err}");
        let err =
            Config::load_from(None, &env(&[("SCORIA_AUTH_MODE", "token")])).expect_err("no tokens");
        assert!(err.to_string().contains("api.tokens_file"), "{err}");
        let err =
            Config::load_from(None, &env(&[("SCORIA_AUTH_MODE", "magic")])).expect_err("bad mode");
        assert!(err.to_string().contains("magic"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_MAX_VOLUME_SIZE_GIB", "0")]))
            .expect_err("zero max");
        assert!(err.to_string().contains("api.max_volume_size_gib"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_SERVICE_DOWN_TIME_SECS", "0")]))
            .expect_err("zero down time");
        assert!(
            err.to_string().contains("api.service_down_time_secs"),
            "{err}"
        );
    }
}
