//! The notifier: publishes events such as `volume.create.end` to
//! `<cx>.notifications` with key `notifications.info` or `notifications.error`,
//! persistent and confirmed, into durable queues a billing or audit consumer reads.

use lapin::{
    BasicProperties, ExchangeKind,
    options::{BasicAckOptions, BasicConsumeOptions},
    types::FieldTable,
};
use prost::{Message, Name};
use scoria_proto::rpc::Notification;

use super::{
    CONTENT_TYPE,
    broker::Broker,
    client::{Publish, publish_confirmed},
    error::{RpcError, RpcResult},
    headers,
};
use crate::context::RequestContext;

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
#[derive(Clone)]
pub struct Notifier {
    broker: Broker,
    publisher_id: String,
}

impl Notifier {
    /// A notifier publishing as `publisher_id`.
    pub fn new(broker: Broker, publisher_id: impl Into<String>) -> Self {
        Self {
            broker,
            publisher_id: publisher_id.into(),
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
            .with_delivery_mode(2)
            .with_headers(headers::encode(ctx));
        let publish = Publish {
            exchange: self.broker.names().notifications_exchange(),
            routing_key: format!("notifications.{}", priority.as_str()),
            body: notification.encode_to_vec(),
            properties,
            mandatory: false,
            fanout: false,
        };
        publish_confirmed(&self.broker, &publish, "notifications").await
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
