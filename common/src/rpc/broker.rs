//! The broker connection: one AMQP connection per [`Broker`], owned by a supervisor
//! task that re-establishes it with jittered exponential backoff whenever it fails
//! (broker restart, connection closed by an operator, missed heartbeats).
//!
//! Clients and servers never hold a connection across failures: they ask
//! [`Broker::session`] for the current [`Session`] and, when an operation fails
//! because the connection died, report it with [`Session::mark_broken`] and ask again.
//!
//! With several broker addresses (`SCORIA_AMQP_URL=amqp://a,amqp://b,...`, the
//! nodes of a cluster) the supervisor connects to the first that answers, tries
//! the next one at once when an attempt fails, and moves on to the next one when
//! the connection to a node is lost; it sleeps its backoff only once every
//! address has failed in a row ([`Rotation`]).
//!
//! ```text
//!   ┌────────────┐ open ok  ┌──────┐ events: Error / status check / mark_broken ┌────────────┐
//!   │ Connecting ├─────────▶│  Up  ├───────────────────────────────────────────▶│ Connecting │
//!   └─────┬──────┘          └──┬───┘                                            └────────────┘
//!         │ failed: sleep backoff, retry        │ shutdown
//!         ▼                                      ▼
//!                                            Closed
//! ```

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, Event, ExchangeKind,
    options::ConfirmSelectOptions,
    tcp::OwnedTLSConfig,
    uri::{AMQPScheme, AMQPUri},
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    error::{RpcError, RpcResult},
    names::Names,
};
use crate::{
    config::{BusConfig, redact_url},
    sync::lock,
};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A shared handle on the broker connection of a process.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BusConfig,
    /// The broker addresses, in the order they are tried.
    urls: Vec<String>,
    /// The address connected to now, or tried last (password hidden).
    address: Mutex<String>,
    names: Names,
    connection_name: String,
    state: watch::Sender<State>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Where the connection stands.
#[derive(Clone)]
pub(crate) enum State {
    /// Not connected; the last failure, if any.
    Connecting(Option<String>),
    /// Connected.
    Up(Arc<Session>),
    /// Closed for good (shutdown).
    Closed,
}

/// One established connection and the channels every user of it shares.
pub struct Session {
    /// Increases by one with every new connection.
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
    /// In confirm mode: casts, calls and notifications.
    pub(crate) publisher: Channel,
    /// Without confirms: replies to calls.
    pub(crate) replies: Channel,
    broken: CancellationToken,
    declared: Mutex<HashSet<String>>,
}

impl Session {
    /// Reports the connection as failed; the supervisor replaces it.
    pub(crate) fn mark_broken(&self) {
        self.broken.cancel();
    }

    /// Resolves once the connection has failed.
    pub(crate) async fn broken(&self) {
        self.broken.cancelled().await;
    }

    /// Whether the connection is known to have failed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_cancelled() || !self.connection.status().connected()
    }

    /// Declares the fanout exchange `name` once per connection (publishing to an
    /// undeclared exchange would close the channel).
    pub(crate) async fn ensure_fanout_exchange(&self, name: &str) -> RpcResult<()> {
        if lock(&self.declared).contains(name) {
            return Ok(());
        }
        declare_exchange(&self.publisher, name, ExchangeKind::Fanout).await?;
        lock(&self.declared).insert(name.to_owned());
        Ok(())
    }
}

impl Broker {
    /// Starts the connection supervisor. Returns at once; use
    /// [`Broker::wait_connected`] to wait for the first connection.
    /// `connection_name` is shown by `rabbitmqctl list_connections user_provided_name`.
    pub fn start(config: BusConfig, connection_name: impl Into<String>) -> Self {
        let (state, _) = watch::channel(State::Connecting(None));
        let urls = config.amqp_urls();
        let inner = Arc::new(Inner {
            names: Names::new(config.control_exchange.clone()),
            address: Mutex::new(urls.first().map(|u| redact_url(u)).unwrap_or_default()),
            urls,
            config,
            connection_name: connection_name.into(),
            state,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(supervise(inner.clone()));
        Self { inner }
    }

    /// Starts the supervisor and waits up to `within` for the first connection.
    pub async fn connect(
        config: BusConfig,
        connection_name: impl Into<String>,
        within: Duration,
    ) -> RpcResult<Self> {
        let broker = Self::start(config, connection_name);
        broker.wait_connected(within).await?;
        Ok(broker)
    }

    /// Waits up to `within` until connected.
    pub async fn wait_connected(&self, within: Duration) -> RpcResult<()> {
        self.session(within).await.map(|_| ())
    }

    /// The names of this deployment's AMQP objects.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The bus configuration.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.state.borrow(), State::Up(s) if !s.is_broken())
    }

    /// How many connections this broker has opened, if one is up now: 1 after
    /// the first connect, one more after every reconnect.
    pub fn connection_generation(&self) -> Option<u64> {
        match &*self.inner.state.borrow() {
            State::Up(s) if !s.is_broken() => Some(s.generation),
            _ => None,
        }
    }

    /// Whether the broker blocks this connection's publishers now (AMQP
    /// `connection.blocked`, sent while a memory or disk alarm is raised): a
    /// publish would not be sent until it unblocks.
    pub fn is_blocked(&self) -> bool {
        matches!(&*self.inner.state.borrow(), State::Up(s) if s.connection.status().blocked())
    }

    /// The broker address connected to now (else the one tried last), its
    /// password hidden (for messages).
    pub fn redacted_url(&self) -> String {
        lock(&self.inner.address).clone()
    }

    /// The current session, waiting up to `within` for one.
    pub(crate) async fn session(&self, within: Duration) -> RpcResult<Arc<Session>> {
        let mut rx = self.inner.state.subscribe();
        let wait = async {
            loop {
                let outcome = match &*rx.borrow_and_update() {
                    State::Up(s) if !s.is_broken() => Some(Ok(s.clone())),
                    State::Up(s) => {
                        s.mark_broken();
                        None
                    }
                    State::Closed => Some(Err(RpcError::ShuttingDown)),
                    State::Connecting(_) => None,
                };
                if let Some(outcome) = outcome {
                    return outcome;
                }
                if rx.changed().await.is_err() {
                    return Err(RpcError::ShuttingDown);
                }
            }
        };
        match tokio::time::timeout(within, wait).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let last = match &*self.inner.state.borrow() {
                    State::Connecting(Some(err)) => format!(": {err}"),
                    _ => String::new(),
                };
                let at = if self.inner.urls.len() > 1 {
                    format!("any of {}", self.inner.config.redacted_urls())
                } else {
                    self.inner.config.redacted_urls()
                };
                Err(RpcError::Unavailable(format!(
                    "no connection to the broker at {at} within {within:?}{last}"
                )))
            }
        }
    }

    /// A token cancelled when the broker is closed.
    pub(crate) fn closing(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Closes the connection for good and waits for the supervisor to finish.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

// === supervisor ===

async fn supervise(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(inner.config.reconnect_max_backoff_ms.max(100)),
    );
    let mut rotation = Rotation::new(inner.urls.len());
    let mut generation = 0u64;
    loop {
        let url = inner
            .urls
            .get(rotation.current())
            .cloned()
            .unwrap_or_default();
        let address = redact_url(&url);
        *lock(&inner.address) = address.clone();
        let attempt = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            attempt = open(&inner, &url, generation + 1) => attempt,
        };
        match attempt {
            Ok(session) => {
                generation += 1;
                backoff.reset();
                rotation.connected();
                if generation > 1 {
                    crate::metrics::global().bus.reconnected();
                }
                tracing::info!(generation, name = %inner.connection_name, %address, "connected to the message broker");
                inner.state.send_replace(State::Up(session.clone()));
                tokio::select! {
                    _ = inner.shutdown.cancelled() => {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            session.connection.close(200, "shutdown".into()),
                        ).await;
                        break;
                    }
                    _ = session.broken() => {}
                }
                rotation.lost();
                tracing::warn!(
                    generation,
                    %address,
                    next = %redact_url(inner.urls.get(rotation.current()).map_or("", String::as_str)),
                    "connection to the message broker lost; reconnecting"
                );
                inner.state.send_replace(State::Connecting(Some(format!(
                    "connection to {address} lost"
                ))));
                // Best effort: the connection is usually dead already.
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    session.connection.close(320, "reconnecting".into()),
                )
                .await;
            }
            Err(err) => {
                let message = format!("{address}: {err}");
                inner.state.send_replace(State::Connecting(Some(message)));
                if !rotation.failed() {
                    tracing::warn!(error = %err, %address, "cannot connect to the message broker; trying the next address");
                    continue;
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, %address, retry_in = ?delay, "cannot connect to the message broker");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    inner.state.send_replace(State::Closed);
}

async fn open(inner: &Inner, url: &str, generation: u64) -> RpcResult<Arc<Session>> {
    let config = &inner.config;
    let mut uri = AMQPUri::from_str(url).map_err(|e| {
        RpcError::Unavailable(format!(
            "bad AMQP URL {}: {}",
            redact_url(url),
            e.replace(url, &redact_url(url))
        ))
    })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(config.heartbeat_secs);
    }
    let props =
        ConnectionProperties::default().with_connection_name(inner.connection_name.clone().into());
    // amqps://: the CA and client certificate files, read at each connect so a
    // reconnect picks up renewed files (checked at start by `BusConfig::validate`).
    let tls = if uri.scheme == AMQPScheme::AMQPS {
        config
            .tls_config()
            .map_err(|e| RpcError::Unavailable(e.to_string()))?
    } else {
        OwnedTLSConfig::default()
    };
    let runtime = lapin::runtime::default_runtime()?;
    let connect = Connection::connect_uri_with_config(uri, props, tls, runtime);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            RpcError::Unavailable(format!("connecting timed out after {CONNECT_TIMEOUT:?}"))
        })??;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let replies = connection.create_channel().await?;
    declare_base_topology(&connection, &publisher, &inner.names, config).await?;
    declare_notification_queues(&connection, &inner.names, config).await?;

    let broken = CancellationToken::new();
    watch_connection(
        &connection,
        [publisher.clone(), replies.clone()],
        broken.clone(),
        inner.shutdown.clone(),
        &inner.tasks,
    );
    Ok(Arc::new(Session {
        generation,
        connection,
        publisher,
        replies,
        broken,
        declared: Mutex::new(HashSet::new()),
    }))
}

/// Cancels `broken` on the first connection error event (or the loss of one
/// of the `shared` channels), or when a periodic status check finds the
/// connection gone (whichever comes first).
fn watch_connection(
    connection: &Connection,
    shared: [Channel; 2],
    broken: CancellationToken,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let mut events = connection.events_listener();
    let status = connection.status().clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = broken.cancelled() => return,
                _ = shutdown.cancelled() => return,
                event = events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "the broker blocks publishers (connection.blocked)");
                    }
                    Some(Event::ConnectionUnblocked) => {
                        tracing::info!("the broker unblocked publishers");
                    }
                    // A channel the broker closed (a refused declaration, say)
                    // is reported here too: the connection is fine unless the
                    // channel was one every user shares.
                    Some(Event::Error(err))
                        if is_channel_error(&err)
                            && status.connected()
                            && shared.iter().all(|c| c.status().connected()) =>
                    {
                        tracing::debug!(error = %err, "a channel was closed by the broker");
                    }
                    Some(Event::Error(err)) => {
                        tracing::debug!(error = %err, "broker connection error");
                        broken.cancel();
                        return;
                    }
                    Some(_) => {}
                    None => { broken.cancel(); return; }
                },
                _ = tick.tick() => if !status.connected() || shared.iter().any(|c| !c.status().connected()) { broken.cancel(); return; },
            }
        }
    });
}

pub use super::queues::QueueMismatch;
pub(crate) use super::{
    backoff::{Backoff, Rotation},
    queues::*,
};

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;
    use crate::config::QueueType;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(101));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(1001)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_millis(500), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(101));
    }

    #[test]
    fn notification_queues_are_bounded_unless_zero() {
        let config = BusConfig::default();
        let names = Names::new("scoria");
        let args = notification_queue_args(&names, &config);
        let inner = args.inner();
        assert_eq!(
            inner.get("x-max-length"),
            Some(&AMQPValue::LongLongInt(100_000))
        );
        assert_eq!(
            inner.get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(86_400_000))
        );
        let unbounded = BusConfig {
            notification_queue_max_length: 0,
            notification_queue_ttl_ms: 0,
            ..BusConfig::default()
        };
        assert!(
            notification_queue_args(&names, &unbounded)
                .inner()
                .is_empty()
        );
    }

    fn quorum() -> BusConfig {
        BusConfig {
            queue_type: QueueType::Quorum,
            delivery_limit: 7,
            queue_expiry_ms: Some(1_000),
            ..BusConfig::default()
        }
    }

    fn keys(args: &FieldTable) -> Vec<String> {
        let mut keys: Vec<String> = args.inner().keys().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn classic_queues_are_declared_as_before() {
        let names = Names::new("cx");
        let config = BusConfig {
            queue_expiry_ms: Some(1_000),
            ..BusConfig::default()
        };
        assert_eq!(
            keys(&work_queue_args(&names, &config)),
            ["x-dead-letter-exchange", "x-expires"]
        );
        assert_eq!(keys(&dead_queue_args(&config)), ["x-expires"]);
        assert_eq!(
            keys(&notification_queue_args(&names, &config)),
            ["x-expires", "x-max-length", "x-message-ttl"]
        );
    }

    #[test]
    fn quorum_queues_carry_their_type_and_delivery_limit() {
        let names = Names::new("cx");
        let config = quorum();
        let work = work_queue_args(&names, &config);
        assert_eq!(
            keys(&work),
            [
                "x-dead-letter-exchange",
                "x-delivery-limit",
                "x-expires",
                "x-queue-type"
            ]
        );
        let inner = work.inner();
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(7))
        );
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("cx.dlx".into()))
        );
        // Still bounded, and redeliveries dead-lettered too.
        assert_eq!(
            keys(&notification_queue_args(&names, &config)),
            [
                "x-dead-letter-exchange",
                "x-delivery-limit",
                "x-expires",
                "x-max-length",
                "x-message-ttl",
                "x-queue-type"
            ]
        );
        assert_eq!(
            keys(&dead_queue_args(&config)),
            ["x-expires", "x-queue-type"]
        );
        // Exclusive queues stay classic whatever the type.
        assert_eq!(
            keys(&exclusive_queue_args(&names)),
            ["x-dead-letter-exchange"]
        );
    }

    #[test]
    fn a_type_mismatch_tells_the_operator_what_to_do() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
                    'cx.scheduler' in vhost '/': received the value 'quorum' of type \
                    'longstr' but current is none";
        let m = QueueMismatch::parse("cx.scheduler", &quorum(), text);
        assert_eq!(
            (m.arg.as_str(), m.current.as_str(), m.wanted.as_str()),
            ("x-queue-type", "classic", "quorum")
        );
        let msg = m.to_string();
        for needle in [
            "cx.scheduler is a classic queue",
            "asks for quorum",
            "rabbitmqctl delete_queue cx.scheduler",
            "SCORIA_RPC_QUEUE_TYPE=classic",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
        let back = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in \
                    vhost '/': received none but current is the value 'quorum' of type 'longstr'";
        let m = QueueMismatch::parse("q", &BusConfig::default(), back);
        assert_eq!(
            (m.current.as_str(), m.wanted.as_str()),
            ("quorum", "classic")
        );
        assert!(
            m.to_string().contains("SCORIA_RPC_QUEUE_TYPE=quorum back"),
            "{m}"
        );

        let limit = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' \
                     in vhost '/': received the value '7' of type 'long' but current is the \
                     value '20' of type 'long'";
        let m = QueueMismatch::parse("q", &quorum(), limit);
        assert_eq!((m.current.as_str(), m.wanted.as_str()), ("20", "7"));
        assert!(
            m.to_string().contains("SCORIA_RPC_DELIVERY_LIMIT=20"),
            "{m}"
        );
        let odd = QueueMismatch::parse("q", &quorum(), "PRECONDITION_FAILED - something else");
        assert!(odd.to_string().contains("something else"), "{odd}");
    }

    #[test]
    fn rotation_moves_on_and_backs_off_once_per_round() {
        let mut r = Rotation::new(3);
        assert_eq!(r.current(), 0);
        // a fails, b fails: no sleep yet; c fails: the whole round failed.
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        assert!(!r.failed());
        assert_eq!(r.current(), 2);
        assert!(r.failed());
        assert_eq!(r.current(), 0);
        // a new round: a fails, b answers and stays.
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        r.connected();
        assert_eq!(r.current(), 1);
        // b goes away: c first, at once; c and a fail, b again is the third.
        r.lost();
        assert_eq!(r.current(), 2);
        assert!(!r.failed());
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        assert!(r.failed(), "all three failed in a row");
    }

    #[test]
    fn one_address_backs_off_after_every_failure() {
        let mut r = Rotation::new(1);
        assert!(r.failed());
        assert!(r.failed());
        assert_eq!(r.current(), 0);
        r.lost();
        assert_eq!(r.current(), 0);
        let mut empty = Rotation::new(0);
        assert!(empty.failed());
    }
}
