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
    config::{BusConfig, NotificationMode, QueueType, redact_url},
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

/// The exchanges and queues every process may publish to, declared on every
/// (re)connection so that a wiped broker is rebuilt.
async fn declare_base_topology(
    connection: &Connection,
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

    // On a channel of its own: a `<cx>.dead` of the other type (declared before
    // SCORIA_RPC_QUEUE_TYPE changed) closes the declaring channel; it stays as
    // it is (dead letters still land in it) and the log says what to do.
    let dead = names.dead_letter_queue();
    let own = connection.create_channel().await?;
    match own
        .queue_declare(dead.as_str().into(), durable(), dead_queue_args(config))
        .await
    {
        Ok(_) => {
            own.queue_bind(
                dead.as_str().into(),
                names.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let _ = own.close(200, "declared".into()).await;
        }
        Err(err) if is_precondition_failed(&err) => {
            let mismatch = diagnose(connection, &dead, config, &err, dead_queue_args).await;
            tracing::error!(
                queue = %dead,
                "{mismatch}; it stays as it is and still takes the dead letters"
            );
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// Declares the notification queues, bounded as configured, on a channel of
/// their own: a queue that already exists with other arguments (declared by an
/// older release, or by an operator, or of the other queue type) makes the
/// broker close the declaring channel with PRECONDITION_FAILED; the service
/// then goes on with the queue as it is and says what to do. Nothing is
/// declared when notifications are off.
async fn declare_notification_queues(
    connection: &Connection,
    names: &Names,
    config: &BusConfig,
) -> RpcResult<()> {
    if config.notifications == NotificationMode::Off {
        return Ok(());
    }
    let args = notification_queue_args(names, config);
    for priority in ["info", "error"] {
        let queue = names.notifications_queue(priority);
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(queue.as_str().into(), durable(), args.clone())
            .await;
        match declared {
            Ok(_) => {}
            Err(err) if is_precondition_failed(&err) => {
                let mismatch = diagnose(connection, &queue, config, &err, |c| {
                    notification_queue_args(names, c)
                })
                .await;
                if mismatch.arg == "x-queue-type" {
                    tracing::error!(%queue, "{mismatch}; until then it stays as it is");
                    continue;
                }
                tracing::error!(
                    %queue,
                    queue_type = %config.queue_type,
                    max_length = config.notification_queue_max_length,
                    ttl_ms = config.notification_queue_ttl_ms,
                    broker = %mismatch.detail,
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

/// Whether `err` closed one channel only (a soft protocol error).
fn is_channel_error(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(_))
    )
}

/// What differs on `queue`, refused with `err` when declared with
/// `args_of(config)`. When the broker names another argument first (the
/// dead-letter exchange, say), a declaration with the arguments of the other
/// queue type tells whether the queue is of that type.
pub(crate) async fn diagnose(
    connection: &Connection,
    queue: &str,
    config: &BusConfig,
    err: &lapin::Error,
    args_of: impl Fn(&BusConfig) -> FieldTable,
) -> QueueMismatch {
    let mut mismatch = QueueMismatch::of(queue, config, err);
    if mismatch.arg == "x-queue-type" {
        return mismatch;
    }
    let other = BusConfig {
        queue_type: match config.queue_type {
            QueueType::Classic => QueueType::Quorum,
            QueueType::Quorum => QueueType::Classic,
        },
        ..config.clone()
    };
    let Ok(probe) = connection.create_channel().await else {
        return mismatch;
    };
    // Declaring an existing queue with its own arguments changes nothing.
    if probe
        .queue_declare(queue.into(), durable(), args_of(&other))
        .await
        .is_ok()
    {
        mismatch.arg = "x-queue-type".to_owned();
        mismatch.current = other.queue_type.as_str().to_owned();
        mismatch.wanted = config.queue_type.as_str().to_owned();
        let _ = probe.close(200, "probed".into()).await;
    }
    mismatch
}

/// Whether the broker refused a declaration because the object exists with
/// other properties.
pub(crate) fn is_precondition_failed(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// A durable queue that exists with other arguments than this process
/// declares (the broker's PRECONDITION_FAILED "inequivalent arg ..."), and what
/// the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMismatch {
    /// The queue.
    pub queue: String,
    /// The argument that differs (`x-queue-type`, `x-delivery-limit`, ...),
    /// empty if the broker did not say.
    pub arg: String,
    /// Its value on the existing queue, as the broker reports it (`none`: unset).
    pub current: String,
    /// The value this process asked for.
    pub wanted: String,
    /// The broker's own text.
    pub detail: String,
}

impl QueueMismatch {
    /// The mismatch behind `err`, refused while declaring `queue` with `config`.
    pub(crate) fn of(queue: &str, config: &BusConfig, err: &lapin::Error) -> Self {
        let detail = match err.kind() {
            lapin::ErrorKind::ProtocolError(e) => e.get_message().to_string(),
            _ => err.to_string(),
        };
        Self::parse(queue, config, &detail)
    }

    /// Reads the broker's text, e.g. `PRECONDITION_FAILED - inequivalent arg
    /// 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum'
    /// of type 'longstr' but current is none`.
    pub(crate) fn parse(queue: &str, config: &BusConfig, detail: &str) -> Self {
        let quoted_after = |marker: &str| {
            let rest = &detail[detail.find(marker)? + marker.len()..];
            let rest = rest.strip_prefix('\'')?;
            Some(rest[..rest.find('\'')?].to_owned())
        };
        let arg = quoted_after("inequivalent arg ").unwrap_or_default();
        let value = |marker: &str, none: &str| {
            if detail.contains(none) {
                Some("none".to_owned())
            } else {
                quoted_after(marker)
            }
        };
        let mut current = value("current is the value ", "current is none").unwrap_or_default();
        let mut wanted = value("received the value ", "received none").unwrap_or_default();
        if arg == "x-queue-type" {
            // A classic queue is declared without the argument.
            if current == "none" {
                current = QueueType::Classic.as_str().to_owned();
            }
            wanted = config.queue_type.as_str().to_owned();
        }
        Self {
            queue: queue.to_owned(),
            arg,
            current,
            wanted,
            detail: detail.to_owned(),
        }
    }
}

impl std::fmt::Display for QueueMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = &self.queue;
        let delete = format!(
            "stop every Scoria service, delete the queue (`rabbitmqctl delete_queue {queue}`; \
             the messages in it are lost) and start them again"
        );
        match self.arg.as_str() {
            "x-queue-type" => write!(
                f,
                "queue {queue} is a {} queue but SCORIA_RPC_QUEUE_TYPE asks for {}: {delete}, \
                 or set SCORIA_RPC_QUEUE_TYPE={} back",
                self.current, self.wanted, self.current
            ),
            "x-delivery-limit" => write!(
                f,
                "queue {queue} has a delivery limit of {} but SCORIA_RPC_DELIVERY_LIMIT asks \
                 for {}: {delete}, or set SCORIA_RPC_DELIVERY_LIMIT={} back",
                self.current, self.wanted, self.current
            ),
            _ => write!(
                f,
                "queue {queue} exists with other arguments than this service declares \
                 ({}): {delete}, or configure the service as the queue was declared",
                self.detail
            ),
        }
    }
}

/// The arguments of a notification queue: `x-max-length` (the oldest events
/// are dropped first) and `x-message-ttl`, each only when non-zero, plus
/// `x-expires` when the configuration asks for it; as a quorum queue also its
/// type, the delivery limit and the dead-letter exchange (quorum queues take
/// all of these from RabbitMQ 3.10 on, `x-message-ttl` included).
pub(crate) fn notification_queue_args(names: &Names, config: &BusConfig) -> FieldTable {
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
    if config.queue_type == QueueType::Quorum {
        insert_dead_letter_exchange(&mut args, names);
        insert_quorum(&mut args, config, true);
    }
    args
}

/// The arguments of `<cx>.dead`: `x-expires` if asked, and the queue type
/// (no delivery limit: only operators read it).
pub(crate) fn dead_queue_args(config: &BusConfig) -> FieldTable {
    let mut args = expiry_args(config);
    if config.queue_type == QueueType::Quorum {
        insert_quorum(&mut args, config, false);
    }
    args
}

/// `x-queue-type: quorum`, and `x-delivery-limit` if `limit`.
fn insert_quorum(args: &mut FieldTable, config: &BusConfig, limit: bool) {
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(QueueType::Quorum.as_str().into()),
    );
    if limit {
        args.insert(
            ShortString::from("x-delivery-limit"),
            AMQPValue::LongLongInt(config.delivery_limit.into()),
        );
    }
}

fn insert_dead_letter_exchange(args: &mut FieldTable, names: &Names) {
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(names.dead_letter_exchange().into()),
    );
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

/// The arguments of a work queue: dead letters go to `<cx>.dlx`; a quorum
/// queue dead-letters there too a message delivered `delivery_limit` times.
pub(crate) fn work_queue_args(names: &Names, config: &BusConfig) -> FieldTable {
    let mut args = expiry_args(config);
    insert_dead_letter_exchange(&mut args, names);
    if config.queue_type == QueueType::Quorum {
        insert_quorum(&mut args, config, true);
    }
    args
}

/// The arguments of an exclusive, auto-delete queue (a fanout queue): only the
/// dead-letter exchange; always classic (quorum queues cannot be exclusive).
pub(crate) fn exclusive_queue_args(names: &Names) -> FieldTable {
    let mut args = FieldTable::default();
    insert_dead_letter_exchange(&mut args, names);
    args
}

// === Rotation ===

/// Which broker address the supervisor tries, and when it must sleep: it
/// stays on an address while it answers, moves to the next one when an
/// attempt fails or the connection is lost, and asks for the backoff only
/// once every address has failed in a row.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    len: usize,
    current: usize,
    failures_in_row: usize,
}

impl Rotation {
    /// Over `len` addresses (at least one), starting at the first.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            len: len.max(1),
            current: 0,
            failures_in_row: 0,
        }
    }

    /// The index of the address to try now.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// An attempt at [`Rotation::current`] succeeded.
    pub(crate) fn connected(&mut self) {
        self.failures_in_row = 0;
    }

    /// The connection at [`Rotation::current`] was lost: the node may be gone,
    /// try the next one first (at once).
    pub(crate) fn lost(&mut self) {
        self.failures_in_row = 0;
        self.advance();
    }

    /// An attempt at [`Rotation::current`] failed; moves to the next address.
    /// `true` when every address has now failed in a row: sleep the backoff
    /// before the next attempt.
    pub(crate) fn failed(&mut self) -> bool {
        self.advance();
        self.failures_in_row += 1;
        if self.failures_in_row >= self.len {
            self.failures_in_row = 0;
            true
        } else {
            false
        }
    }

    fn advance(&mut self) {
        self.current = (self.current + 1) % self.len;
    }
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
