//! The notifier: publishes events such as `volume.create.end` to
//! `<cx>.notifications` with key `notifications.info` or `notifications.error`,
//! into durable queues a billing or audit consumer reads.
//!
//! What it costs is the operator's choice (`SCORIA_NOTIFICATIONS`, see
//! [`NotificationMode`]): persistent and confirmed (the default), transient (not
//! persisted, not waited for), or off (nothing is published, as oslo's
//! `driver = noop`). The queues are bounded by length and message TTL (see
//! `broker::declare_notification_queues`), so events nobody reads do not pile up.

use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, ExchangeKind,
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions},
    types::FieldTable,
};
use prost::{Message, Name};
use scoria_proto::rpc::Notification;
use tokio::sync::{mpsc, oneshot};

use super::{
    CONTENT_TYPE,
    broker::Broker,
    client::{Publish, publish_confirmed},
    error::{RpcError, RpcResult},
    headers,
};
use crate::{config::NotificationMode, context::RequestContext};

/// The priority of a notification; also its routing key suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Normal events.
    Info,
    /// Failures.
    Error,
}

impl Priority {
    /// `info` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Info => "info",
            Priority::Error => "error",
        }
    }
}

/// Publishes notifications for one publisher (`<binary>.<host>`).
///
/// [`Notifier::notify`] waits for the broker's confirmation; [`Notifier::emit`]
/// hands the event to a background publisher that keeps the order of events and
/// waits for confirmations off the caller's path (an operation should not wait
/// for its audit trail to reach the disk). [`Notifier::flush`] waits until
/// everything emitted is confirmed (at shutdown).
#[derive(Clone)]
pub struct Notifier {
    broker: Broker,
    publisher_id: String,
    mode: NotificationMode,
    background: mpsc::UnboundedSender<Background>,
}

enum Background {
    Publish(Box<Publish>),
    Flush(oneshot::Sender<()>),
}

impl Notifier {
    /// A notifier publishing as `publisher_id`. Must be called within a Tokio
    /// runtime: it starts the background publisher, which ends when the last
    /// clone of the notifier is dropped.
    pub fn new(broker: Broker, publisher_id: impl Into<String>) -> Self {
        let mode = broker.config().notifications;
        let (background, rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_in_background(broker.clone(), rx));
        Self {
            broker,
            publisher_id: publisher_id.into(),
            mode,
            background,
        }
    }

    /// What this notifier does with events.
    pub fn mode(&self) -> NotificationMode {
        self.mode
    }

    /// Queues `event_type` for publishing in the background, in order; failures
    /// are logged. Returns at once.
    pub fn emit<P: Message + Name>(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) {
        if self.mode == NotificationMode::Off {
            return;
        }
        match self.build(ctx, priority, event_type, payload) {
            Ok(publish) => {
                if self
                    .background
                    .send(Background::Publish(Box::new(publish)))
                    .is_err()
                {
                    tracing::warn!(event_type, "notifier closed: event dropped");
                }
            }
            Err(err) => tracing::warn!(event_type, %err, "notification not built"),
        }
    }

    /// Waits until every event emitted so far is confirmed by the broker (or
    /// given up on).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.background.send(Background::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Publishes an `INFO` event.
    pub async fn info<P: Message + Name>(
        &self,
        ctx: &RequestContext,
        event_type: &str,
        payload: &P,
    ) -> RpcResult<()> {
        self.notify(ctx, Priority::Info, event_type, payload).await
    }

    /// Publishes an `ERROR` event.
    pub async fn error<P: Message + Name>(
        &self,
        ctx: &RequestContext,
        event_type: &str,
        payload: &P,
    ) -> RpcResult<()> {
        self.notify(ctx, Priority::Error, event_type, payload).await
    }

    /// Publishes `event_type` with `payload` at `priority`.
    #[tracing::instrument(name = "rpc.notify", skip_all, err, fields(event_type, request_id = %ctx.request_id))]
    pub async fn notify<P: Message + Name>(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) -> RpcResult<()> {
        tracing::Span::current().record("event_type", event_type);
        if self.mode == NotificationMode::Off {
            return Ok(());
        }
        let publish = self.build(ctx, priority, event_type, payload)?;
        match self.mode {
            NotificationMode::Transient => publish_transient(&self.broker, &publish).await,
            _ => publish_confirmed(&self.broker, &publish, "notifications").await,
        }
    }

    fn build<P: Message + Name>(
        &self,
        ctx: &RequestContext,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) -> RpcResult<Publish> {
        let payload = prost_types::Any::from_msg(payload).map_err(|e| {
            RpcError::Unavailable(format!("cannot encode notification payload: {e}"))
        })?;
        let notification = Notification {
            message_id: uuid::Uuid::new_v4().to_string(),
            event_type: event_type.to_owned(),
            priority: priority.as_str().to_ascii_uppercase(),
            publisher_id: self.publisher_id.clone(),
            timestamp: Some(std::time::SystemTime::now().into()),
            request_id: ctx.request_id.clone(),
            payload: Some(payload),
        };
        let properties = BasicProperties::default()
            .with_type(event_type.into())
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(notification.message_id.as_str().into())
            .with_delivery_mode(match self.mode {
                NotificationMode::Persistent => 2,
                NotificationMode::Transient | NotificationMode::Off => 1,
            })
            .with_headers(headers::encode(ctx));
        Ok(Publish {
            exchange: self.broker.names().notifications_exchange(),
            routing_key: format!("notifications.{}", priority.as_str()),
            body: notification.encode_to_vec(),
            properties,
            mandatory: false,
            fanout: false,
        })
    }
}

/// Publishes a transient event once, without waiting for the broker's
/// confirmation: best effort, as the mode promises.
async fn publish_transient(broker: &Broker, publish: &Publish) -> RpcResult<()> {
    // The publisher channel is in confirm mode: the confirmation still comes,
    // and is dropped unread.
    drop(send(broker, publish).await?);
    Ok(())
}

/// Publishes once on the current session; the broker's confirmation to await.
async fn send(broker: &Broker, publish: &Publish) -> RpcResult<lapin::PublisherConfirm> {
    let session = broker.session(broker.config().publish_timeout()).await?;
    Ok(session
        .publisher
        .basic_publish(
            publish.exchange.as_str().into(),
            publish.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &publish.body,
            publish.properties.clone(),
        )
        .await?)
}

/// The background publisher: sends events in the order they were emitted and
/// collects their confirmations concurrently; an event whose publish or
/// confirmation failed is retried through [`publish_confirmed`]. Transient
/// events are sent once and not waited for.
async fn publish_in_background(broker: Broker, mut rx: mpsc::UnboundedReceiver<Background>) {
    let transient = broker.config().notifications == NotificationMode::Transient;
    let mut confirms = FuturesUnordered::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Background::Publish(publish)) if transient => {
                    if let Err(err) = publish_transient(&broker, &publish).await {
                        tracing::debug!(%err, "transient notification dropped");
                    }
                }
                Some(Background::Publish(publish)) => {
                    let broker = broker.clone();
                    let sent = send(&broker, &publish).await.map_err(|e| e.to_string());
                    confirms.push(async move {
                        let confirmed = match sent {
                            Ok(confirm) => matches!(confirm.await, Ok(c) if c.is_ack()),
                            Err(_) => false,
                        };
                        if !confirmed
                            && let Err(err) = publish_confirmed(&broker, &publish, "notifications").await
                        {
                            tracing::warn!(%err, "notification not sent");
                        }
                    });
                }
                Some(Background::Flush(done)) => {
                    if confirms.is_empty() {
                        let _ = done.send(());
                    } else {
                        flushes.push(done);
                    }
                }
                None => break,
            },
            Some(()) = confirms.next(), if !confirms.is_empty() => {
                if confirms.is_empty() {
                    for done in flushes.drain(..) {
                        let _ = done.send(());
                    }
                }
            }
        }
    }
    while confirms.next().await.is_some() {}
    for done in flushes {
        let _ = done.send(());
    }
}

/// Reads notifications from a notification queue: for operators' tools and tests.
pub struct NotificationReader {
    _channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl NotificationReader {
    /// Consumes `<cx>.notifications.<priority>`.
    pub async fn open(broker: &Broker, priority: Priority) -> RpcResult<Self> {
        let session = broker.session(broker.config().publish_timeout()).await?;
        let channel = session.connection.create_channel().await?;
        super::broker::declare_exchange(
            &channel,
            &broker.names().notifications_exchange(),
            ExchangeKind::Topic,
        )
        .await?;
        let consumer = channel
            .basic_consume(
                broker.names().notifications_queue(priority.as_str()).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            _channel: channel,
            consumer,
        })
    }

    /// The next notification, acknowledged; `None` if none arrives within `within`.
    pub async fn next(&mut self, within: std::time::Duration) -> RpcResult<Option<Notification>> {
        use futures_util::StreamExt;
        let delivery = match tokio::time::timeout(within, self.consumer.next()).await {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(delivery)) => delivery?,
        };
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Notification::decode(delivery.data.as_slice())
            .map(Some)
            .map_err(|source| RpcError::BadReply {
                method: "notification".into(),
                source,
            })
    }
}
