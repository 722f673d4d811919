//! The `[bus]` section: the broker addresses, TLS to the broker, queue types,
//! notification queues and the RPC timeouts.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Result, redact_url};

// === BusConfig ===

/// Settings of the message bus (`[bus]`), shared by every process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The AMQP URL of the broker (`SCORIA_AMQP_URL`): `amqp://` or, over
    /// TLS, `amqps://`. Several nodes of a cluster: a comma-separated list
    /// (in the TOML also a list of strings), tried in order; see
    /// [`BusConfig::amqp_urls`].
    #[serde(deserialize_with = "one_or_many_urls")]
    pub amqp_url: String,
    /// The PEM CA the broker's certificate must chain to, on top of the system's
    /// (`SCORIA_AMQP_CA_FILE`; `amqps://` only).
    pub ca_file: Option<std::path::PathBuf>,
    /// The PEM client certificate shown to the broker (`SCORIA_AMQP_CLIENT_CERT`,
    /// with `client_key`; `amqps://` only).
    pub client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `client_cert` (`SCORIA_AMQP_CLIENT_KEY`).
    pub client_key: Option<std::path::PathBuf>,
    /// The prefix of every AMQP name (`SCORIA_CONTROL_EXCHANGE`), so several
    /// deployments can share one broker.
    pub control_exchange: String,
    /// The default timeout of an rpc call, in milliseconds.
    pub call_timeout_ms: u64,
    /// How long a cast or notification keeps retrying while the broker is
    /// unreachable before it fails with `UNAVAILABLE`, in milliseconds.
    pub publish_timeout_ms: u64,
    /// How many unacknowledged messages a server handles at once, per queue.
    pub prefetch: u16,
    /// The AMQP heartbeat interval, in seconds.
    pub heartbeat_secs: u16,
    /// The upper bound of the jittered reconnect backoff, in milliseconds.
    pub reconnect_max_backoff_ms: u64,
    /// If set, durable queues are deleted by the broker after this long unused
    /// (`x-expires`). Unset in production; test runs set it so they leave nothing.
    pub queue_expiry_ms: Option<u64>,
    /// What happens to notifications (`SCORIA_NOTIFICATIONS`): persistent
    /// (the default), transient, or off.
    pub notifications: NotificationMode,
    /// The most messages a notification queue keeps (`x-max-length`; the oldest
    /// are dropped first); 0: no limit.
    pub notification_queue_max_length: u64,
    /// How long a notification waits in its queue for a consumer
    /// (`x-message-ttl`), in milliseconds; 0: for ever.
    pub notification_queue_ttl_ms: u64,
    /// The type of the durable queues (`SCORIA_RPC_QUEUE_TYPE`): work queues,
    /// notification queues and `<cx>.dead`. Reply and fanout queues are
    /// exclusive and always classic.
    pub queue_type: QueueType,
    /// How many times a quorum queue delivers a message before it
    /// dead-letters it to `<cx>.dlx` (`x-delivery-limit`,
    /// `SCORIA_RPC_DELIVERY_LIMIT`); quorum queues only.
    pub delivery_limit: u32,
}

/// The type of Scoria's durable queues (`SCORIA_RPC_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(try_from = "String")]
pub enum QueueType {
    /// Classic queues (declared without `x-queue-type`, as before): one node
    /// holds each queue.
    #[default]
    Classic,
    /// Quorum queues (`x-queue-type: quorum`): replicated over the cluster's
    /// nodes (Raft), with a delivery limit.
    Quorum,
}

impl QueueType {
    /// `classic` or `quorum`, as RabbitMQ names them.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for QueueType {
    type Error = String;

    fn try_from(value: String) -> std::result::Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(format!(
                "SCORIA_RPC_QUEUE_TYPE (config key `bus.queue_type`) must be `classic` or \
                 `quorum`, got {value:?}"
            )),
        }
    }
}

/// `bus.amqp_url`: one string (a comma-separated list allowed) or a list of
/// strings, kept as one comma-separated string.
fn one_or_many_urls<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(deserializer)? {
        Urls::One(url) => url,
        Urls::Many(urls) => urls.join(","),
    })
}

/// Every URL of a comma-separated list, its password hidden (for messages).
pub fn redact_urls(list: &str) -> String {
    split_urls(list)
        .iter()
        .map(|url| redact_url(url))
        .collect::<Vec<_>>()
        .join(",")
}

/// The non-empty, trimmed entries of a comma-separated list of URLs.
fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the notifier does with events (oslo.messaging's notification `driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NotificationMode {
    /// Persistent messages, confirmed by the broker, into durable queues.
    #[default]
    Persistent,
    /// Non-persistent messages, not confirmed: cheaper, lost on a broker restart.
    Transient,
    /// Not published at all (oslo's `driver = noop`).
    Off,
}

/// The default `x-delivery-limit` of quorum queues: the one RabbitMQ 4.0 made
/// its own default. A message is redelivered only when the consumer holding it
/// went away (a crash, a lost connection, a drain timeout) or could not
/// publish its retry copy; twenty such losses in a row are no accident, and a
/// message that crashes its service stops after twenty restarts instead of
/// looping for ever.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            control_exchange: "scoria".to_owned(),
            call_timeout_ms: 60_000,
            publish_timeout_ms: 10_000,
            prefetch: 64,
            heartbeat_secs: 10,
            reconnect_max_backoff_ms: 5_000,
            queue_expiry_ms: None,
            notifications: NotificationMode::Persistent,
            notification_queue_max_length: 100_000,
            notification_queue_ttl_ms: 24 * 3_600_000,
            queue_type: QueueType::Classic,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }
}

impl BusConfig {
    /// The default call timeout.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
    /// How long publishing retries through broker outages.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
    /// The broker addresses of `amqp_url`, in the order they are tried.
    pub fn amqp_urls(&self) -> Vec<String> {
        split_urls(&self.amqp_url)
    }

    /// Every broker address, passwords hidden (for messages).
    pub fn redacted_urls(&self) -> String {
        redact_urls(&self.amqp_url)
    }

    /// Checks values that are well-typed but unusable.
    pub fn validate(&self) -> Result<()> {
        if self.control_exchange.is_empty()
            || !self
                .control_exchange
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::Value {
                key: "bus.control_exchange",
                reason: format!(
                    "{:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                    self.control_exchange
                ),
            });
        }
        if self.prefetch == 0 {
            return Err(ConfigError::Value {
                key: "bus.prefetch",
                reason: "must be at least 1".into(),
            });
        }
        if self.call_timeout_ms == 0 {
            return Err(ConfigError::Value {
                key: "bus.call_timeout_ms",
                reason: "must be at least 1".into(),
            });
        }
        if self.delivery_limit == 0 {
            return Err(ConfigError::Value {
                key: "bus.delivery_limit",
                reason: "SCORIA_RPC_DELIVERY_LIMIT must be at least 1 (deliveries of a \
                         message before a quorum queue dead-letters it)"
                    .into(),
            });
        }
        let urls = self.amqp_urls();
        if urls.is_empty() {
            return Err(ConfigError::Value {
                key: "bus.amqp_url",
                reason: "SCORIA_AMQP_URL holds no broker address".into(),
            });
        }
        let mut tls = false;
        for url in &urls {
            let scheme_ok = url.starts_with("amqps://") || url.starts_with("amqp://");
            let parsed = <lapin::uri::AMQPUri as std::str::FromStr>::from_str(url);
            if let (true, Ok(_)) = (scheme_ok, &parsed) {
                tls |= url.starts_with("amqps://");
                continue;
            }
            let why = parsed.err().unwrap_or_default();
            return Err(ConfigError::Value {
                key: "bus.amqp_url",
                reason: format!(
                    "SCORIA_AMQP_URL: {:?} is not an amqp:// or amqps:// URL{}",
                    redact_url(url),
                    if why.is_empty() || !scheme_ok {
                        String::new()
                    } else {
                        format!(" ({})", why.replace(url.as_str(), &redact_url(url)))
                    }
                ),
            });
        }
        self.tls_files(tls)?;
        Ok(())
    }

    /// The TLS files, checked: only with `amqps://`, certificate and key in
    /// pairs, each file readable PEM.
    fn tls_files(&self, tls: bool) -> Result<()> {
        let files = [
            ("SCORIA_AMQP_CA_FILE", "bus.ca_file", &self.ca_file),
            (
                "SCORIA_AMQP_CLIENT_CERT",
                "bus.client_cert",
                &self.client_cert,
            ),
            ("SCORIA_AMQP_CLIENT_KEY", "bus.client_key", &self.client_key),
        ];
        for (var, key, file) in files {
            if file.is_some() && !tls {
                return Err(ConfigError::Value {
                    key,
                    reason: format!("{var} is set but no SCORIA_AMQP_URL is amqps://"),
                });
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(ConfigError::Value {
                    key: "bus.client_key",
                    reason: "SCORIA_AMQP_CLIENT_CERT is set without SCORIA_AMQP_CLIENT_KEY".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Value {
                    key: "bus.client_cert",
                    reason: "SCORIA_AMQP_CLIENT_KEY is set without SCORIA_AMQP_CLIENT_CERT".into(),
                });
            }
            _ => {}
        }
        self.tls_config().map(|_| ())
    }

    /// The TLS settings of an `amqps://` connection, the files read now (so a
    /// reconnect picks up renewed files).
    pub fn tls_config(&self) -> Result<lapin::tcp::OwnedTLSConfig> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

        let read = |var: &'static str, key: &'static str, path: &std::path::Path| {
            let bytes = std::fs::read(path).map_err(|e| ConfigError::Value {
                key,
                reason: format!("{var}: cannot read {}: {e}", path.display()),
            })?;
            let bad = |what: String| ConfigError::Value {
                key,
                reason: format!("{var}: {} {what}", path.display()),
            };
            if key == "bus.client_key" {
                PrivateKeyDer::from_pem_slice(&bytes)
                    .map_err(|e| bad(format!("holds no PEM private key: {e}")))?;
            } else {
                let certs = CertificateDer::pem_slice_iter(&bytes)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("holds no PEM certificate: {e}")))?;
                if certs.is_empty() {
                    return Err(bad("holds no PEM certificate".to_owned()));
                }
            }
            Ok(bytes)
        };
        let cert_chain = match &self.ca_file {
            Some(path) => Some(
                String::from_utf8_lossy(&read("SCORIA_AMQP_CA_FILE", "bus.ca_file", path)?)
                    .into_owned(),
            ),
            None => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read("SCORIA_AMQP_CLIENT_CERT", "bus.client_cert", cert)?,
                key: read("SCORIA_AMQP_CLIENT_KEY", "bus.client_key", key)?,
            }),
            _ => None,
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}
