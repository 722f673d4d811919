//! The broker connection: one AMQP connection per [`Broker`], owned by a supervisor
//! task that re-establishes it with jittered exponential backoff whenever it fails
//! (broker restart, connection closed by an operator, missed heartbeats).
//!
//! Clients and servers never hold a connection across failures: they ask
//! [`Broker::session`] for the current [`Session`] and, when an operation fails
//! because the connection died, report it with [`Session::mark_broken`] and ask again.
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
    options::{
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, ShortString},
    uri::{AMQPScheme, AMQPUri},
};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    error::{RpcError, RpcResult},
    names::Names,
};
use crate::{
    config::{BusConfig, NotificationMode, redact_url},
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
        let inner = Arc::new(Inner {
            names: Names::new(config.control_exchange.clone()),
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

    /// The AMQP URL, its password hidden (for messages).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.inner.config.amqp_url)
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
                Err(RpcError::Unavailable(format!(
                    "no connection to the broker at {} within {within:?}{last}",
                    redact_url(&self.inner.config.amqp_url)
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
    let mut generation = 0u64;
    loop {
        let attempt = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            attempt = open(&inner, generation + 1) => attempt,
        };
        match attempt {
            Ok(session) => {
                generation += 1;
                backoff.reset();
                if generation > 1 {
                    crate::metrics::global().bus.reconnected();
                }
                tracing::info!(generation, name = %inner.connection_name, "connected to the message broker");
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
                tracing::warn!(
                    generation,
                    "connection to the message broker lost; reconnecting"
                );
                inner
                    .state
                    .send_replace(State::Connecting(Some("connection lost".to_owned())));
                // Best effort: the connection is usually dead already.
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    session.connection.close(320, "reconnecting".into()),
                )
                .await;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in = ?delay, "cannot connect to the message broker");
                inner
                    .state
                    .send_replace(State::Connecting(Some(err.to_string())));
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    inner.state.send_replace(State::Closed);
}

async fn open(inner: &Inner, generation: u64) -> RpcResult<Arc<Session>> {
    let config = &inner.config;
    let mut uri = AMQPUri::from_str(&config.amqp_url).map_err(|e| {
        RpcError::Unavailable(format!(
            "bad AMQP URL {}: {e}",
            redact_url(&config.amqp_url)
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
    declare_base_topology(&publisher, &inner.names, config).await?;
    declare_notification_queues(&connection, &inner.names, config).await?;

    let broken = CancellationToken::new();
    watch_connection(
        &connection,
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

/// Cancels `broken` on the first connection error event, or when a periodic
/// status check finds the connection gone (whichever comes first).
fn watch_connection(
    connection: &Connection,
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
                    Some(Event::Error(err)) => {
                        tracing::debug!(error = %err, "broker connection error");
                        broken.cancel();
                        return;
                    }
                    Some(_) => {}
                    None => { broken.cancel(); return; }
                },
                _ = tick.tick() => if !status.connected() { broken.cancel(); return; },
            }
        }
    });
}

/// The exchanges and queues every process may publish to, declared on every
/// (re)connection so that a wiped broker is rebuilt.
async fn declare_base_topology(
    channel: &Channel,
    names: &Names,
    config: &BusConfig,
) -> RpcResult<()> {
    declare_exchange(channel, names.topic_exchange(), ExchangeKind::Topic).await?;
    declare_exchange(channel, &names.reply_exchange(), ExchangeKind::Direct).await?;
    declare_exchange(channel, &names.dead_letter_exchange(), ExchangeKind::Fanout).await?;
    declare_exchange(
        channel,
        &names.notifications_exchange(),
        ExchangeKind::Topic,
    )
    .await?;

    let dead = names.dead_letter_queue();
    channel
        .queue_declare(dead.as_str().into(), durable(), expiry_args(config))
        .await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            names.dead_letter_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares the notification queues, bounded as configured, on a channel of
/// their own: a queue that already exists with other arguments (declared by an
/// older release, or by an operator) makes the broker close the declaring
/// channel with PRECONDITION_FAILED; the service then goes on with the queue as
/// it is and says what to do. Nothing is declared when notifications are off.
async fn declare_notification_queues(
    connection: &Connection,
    names: &Names,
    config: &BusConfig,
) -> RpcResult<()> {
    if config.notifications == NotificationMode::Off {
        return Ok(());
    }
    let args = notification_queue_args(config);
    for priority in ["info", "error"] {
        let queue = names.notifications_queue(priority);
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(queue.as_str().into(), durable(), args.clone())
            .await;
        match declared {
            Ok(_) => {}
            Err(err) if is_precondition_failed(&err) => {
                tracing::error!(
                    %queue,
                    max_length = config.notification_queue_max_length,
                    ttl_ms = config.notification_queue_ttl_ms,
                    "notification queue exists with other arguments (length limit or TTL): \
                     it stays as it is, unbounded as before; to bound it, delete it once \
                     (`rabbitmqctl delete_queue {queue}`, its unread events are lost) and \
                     restart a service, or set the same bounds as its arguments \
                     (SCORIA_NOTIFICATION_QUEUE_MAX_LENGTH, SCORIA_NOTIFICATION_QUEUE_TTL_MS)"
                );
                continue;
            }
            Err(err) => return Err(err.into()),
        }
        channel
            .queue_bind(
                queue.as_str().into(),
                names.notifications_exchange().into(),
                format!("notifications.{priority}").into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "declared".into()).await;
    }
    Ok(())
}

/// Whether the broker refused a declaration because the object exists with
/// other properties.
fn is_precondition_failed(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// The arguments of a notification queue: `x-max-length` (the oldest events
/// are dropped first) and `x-message-ttl`, each only when non-zero, plus
/// `x-expires` when the configuration asks for it.
pub(crate) fn notification_queue_args(config: &BusConfig) -> FieldTable {
    let mut args = expiry_args(config);
    if config.notification_queue_max_length > 0 {
        args.insert(
            ShortString::from("x-max-length"),
            AMQPValue::LongLongInt(config.notification_queue_max_length as i64),
        );
    }
    if config.notification_queue_ttl_ms > 0 {
        args.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongLongInt(config.notification_queue_ttl_ms as i64),
        );
    }
    args
}

pub(crate) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> RpcResult<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Options of a durable queue.
pub(crate) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// `x-expires` when the configuration asks for it.
pub(crate) fn expiry_args(config: &BusConfig) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(ms) = config.queue_expiry_ms {
        args.insert(
            ShortString::from("x-expires"),
            AMQPValue::LongLongInt(ms as i64),
        );
    }
    args
}

/// The arguments of a work queue: dead letters go to `<cx>.dlx`.
pub(crate) fn work_queue_args(names: &Names, config: &BusConfig) -> FieldTable {
    let mut args = expiry_args(config);
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(names.dead_letter_exchange().into()),
    );
    args
}

// === Backoff ===

/// Exponential backoff with "equal jitter": half the current step plus a random
/// part of the other half, so reconnecting processes do not stampede the broker.
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: base,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to `base` after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let args = notification_queue_args(&config);
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
        assert!(notification_queue_args(&unbounded).inner().is_empty());
    }
}
