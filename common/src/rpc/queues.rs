//! The queues and exchanges the broker declares: their arguments (queue type,
//! delivery limit, dead-lettering, length limit and TTL), and what a refused
//! declaration means ([`QueueMismatch`]: a queue of another type exists).

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, ShortString},
};

use super::{error::RpcResult, names::Names};
use crate::config::{BusConfig, NotificationMode, QueueType};

/// Whether `err` closed one channel only (a soft protocol error).
pub(crate) fn is_channel_error(err: &lapin::Error) -> bool {
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

/// The exchanges and queues every process may publish to, declared on every
/// (re)connection so that a wiped broker is rebuilt.
pub(crate) async fn declare_base_topology(
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
pub(crate) async fn declare_notification_queues(
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
