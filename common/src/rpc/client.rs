//! The typed client: `call` (request and typed reply), `cast` (one-way, confirmed,
//! persistent) and `fanout_cast` (to every server of a topic), plus the publishing
//! path the notifier shares.
//!
//! A call registers its correlation id, publishes with `reply_to` = this process's
//! reply queue and `expiration` = its timeout, and waits for the `RpcReply`. It fails
//! fast when the broker returns the message (no queue bound) or when the target's
//! queue has no consumer, and with `DEADLINE_EXCEEDED` after its timeout; a reply
//! arriving later finds no registration and is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Confirmation,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::FieldTable,
};
use prost::Message;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::{
    CONTENT_TYPE,
    broker::{Broker, Session},
    error::{RpcError, RpcResult},
    headers,
    names::Target,
    reply,
};
use crate::{context::RequestContext, sync::lock};

/// How long a positive "someone consumes this queue" check is trusted.
const CONSUMER_CHECK_TTL: Duration = Duration::from_secs(2);

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// The call's timeout; the configured `call_timeout_ms` if unset.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}

/// A cheap-to-clone RPC client over a [`Broker`].
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

/// Calls waiting for a reply: correlation id -> (connection generation, waiter).
type Pending = HashMap<String, (u64, oneshot::Sender<Vec<u8>>)>;

struct Inner {
    broker: Broker,
    pending: Mutex<Pending>,
    /// The reply queue of the current connection generation.
    reply_queue: Mutex<Option<(u64, Arc<str>)>>,
    reply_setup: tokio::sync::Mutex<()>,
    /// Queues recently seen with at least one consumer: queue -> (generation, when).
    consumed: Mutex<HashMap<String, (u64, Instant)>>,
    tasks: TaskTracker,
}

impl RpcClient {
    /// A client publishing through `broker`.
    pub fn new(broker: Broker) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                pending: Mutex::new(HashMap::new()),
                reply_queue: Mutex::new(None),
                reply_setup: tokio::sync::Mutex::new(()),
                consumed: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The broker this client publishes through.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// Calls `method` on `target` with the default timeout and decodes the reply.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        method: &str,
        request: &Req,
    ) -> RpcResult<Resp> {
        self.call_with(ctx, target, method, request, CallOptions::default())
            .await
    }

    /// Calls `method` on `target` with `options`.
    #[tracing::instrument(name = "rpc.call", skip_all, err, fields(method, target = %target, request_id = %ctx.request_id))]
    pub async fn call_with<Req: Message, Resp: Message + Default>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> RpcResult<Resp> {
        let started = Instant::now();
        let result = self.call_inner(ctx, target, method, request, options).await;
        crate::metrics::global()
            .bus
            .call(target, method, started, &result);
        result
    }

    async fn call_inner<Req: Message, Resp: Message + Default>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> RpcResult<Resp> {
        tracing::Span::current().record("method", method);
        let timeout = options
            .timeout
            .unwrap_or_else(|| self.inner.broker.config().call_timeout());
        let started = Instant::now();
        let timed_out = || RpcError::Timeout {
            method: method.to_owned(),
            target: target.to_string(),
            timeout,
        };
        let session = self.inner.broker.session(timeout).await?;
        let reply_to = self.reply_queue(&session).await?;
        self.check_consumed(&session, target).await?;

        let correlation_id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        let _registration = self.register(&correlation_id, session.generation, tx);
        let props = properties(method, ctx, false)
            .with_correlation_id(correlation_id.as_str().into())
            .with_reply_to(reply_to.as_ref().into())
            .with_expiration(timeout.as_millis().max(1).to_string().into());
        let names = self.inner.broker.names();
        let confirm = session
            .publisher
            .basic_publish(
                names.topic_exchange().into(),
                target.routing_key().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &request.encode_to_vec(),
                props,
            )
            .await
            .inspect_err(|_| session.mark_broken())?;
        let remaining = timeout.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(remaining, async {
            // Past the publish the request may have been delivered: a lost
            // connection fails the call (sending it again could run it twice),
            // with the same message whether the confirm or the reply was lost.
            let lost = || {
                RpcError::Unavailable(format!(
                    "the connection to the broker was lost while {method} to {target} was in flight"
                ))
            };
            let confirmation = crate::metrics::global()
                .bus
                .confirm(confirm)
                .await
                .map_err(|err| {
                    session.mark_broken();
                    tracing::debug!(error = %err, %target, "the connection failed before the broker confirmed a call");
                    lost()
                })?;
            check_confirmation(confirmation, target)?;
            rx.await.map_err(|_| lost())
        })
        .await
        .map_err(|_| timed_out())??;
        match reply::decode(&body) {
            Ok(Ok(result)) => Resp::decode(result).map_err(|source| RpcError::BadReply {
                method: method.to_owned(),
                source,
            }),
            Ok(Err(status)) => Err(RpcError::Remote {
                method: method.to_owned(),
                target: target.to_string(),
                status,
            }),
            Err(source) => Err(RpcError::BadReply {
                method: method.to_owned(),
                source,
            }),
        }
    }

    /// Casts `method` to `target`: persistent, publisher-confirmed and mandatory.
    /// Returns once the broker has confirmed the message; an unroutable cast fails
    /// at once. Through a broker outage it retries for `publish_timeout_ms`.
    #[tracing::instrument(name = "rpc.cast", skip_all, err, fields(method, target = %target, request_id = %ctx.request_id))]
    pub async fn cast<Req: Message>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        method: &str,
        request: &Req,
    ) -> RpcResult<()> {
        tracing::Span::current().record("method", method);
        let publish = Publish {
            exchange: self.inner.broker.names().topic_exchange().to_owned(),
            routing_key: target.routing_key(),
            body: request.encode_to_vec(),
            properties: properties(method, ctx, true),
            mandatory: true,
            fanout: false,
        };
        let sent = publish_confirmed(&self.inner.broker, &publish, &target.to_string()).await;
        crate::metrics::global().bus.cast(target, method, sent)
    }

    /// Casts `method` to every server of `topic` listening now (best effort: for
    /// state that is re-sent periodically). Succeeds even if nobody listens.
    #[tracing::instrument(name = "rpc.fanout_cast", skip_all, err, fields(method, topic, request_id = %ctx.request_id))]
    pub async fn fanout_cast<Req: Message>(
        &self,
        ctx: &RequestContext,
        topic: &str,
        method: &str,
        request: &Req,
    ) -> RpcResult<()> {
        tracing::Span::current().record("method", method);
        let target = Target::topic(topic)?;
        let publish = Publish {
            exchange: self
                .inner
                .broker
                .names()
                .fanout_exchange(target.topic_name()),
            routing_key: String::new(),
            body: request.encode_to_vec(),
            properties: properties(method, ctx, false),
            mandatory: false,
            fanout: true,
        };
        let sent = publish_confirmed(
            &self.inner.broker,
            &publish,
            &format!("fanout of topic {topic:?}"),
        )
        .await;
        crate::metrics::global().bus.fanout(topic, method, sent)
    }

    fn register(
        &self,
        correlation_id: &str,
        generation: u64,
        tx: oneshot::Sender<Vec<u8>>,
    ) -> Registration {
        lock(&self.inner.pending).insert(correlation_id.to_owned(), (generation, tx));
        Registration {
            inner: self.inner.clone(),
            correlation_id: correlation_id.to_owned(),
        }
    }

    /// The reply queue of `session`'s connection, declared and consumed on first use.
    async fn reply_queue(&self, session: &Arc<Session>) -> RpcResult<Arc<str>> {
        let current = |inner: &Inner| {
            lock(&inner.reply_queue)
                .as_ref()
                .filter(|(g, _)| *g == session.generation)
                .map(|(_, n)| n.clone())
        };
        if let Some(name) = current(&self.inner) {
            return Ok(name);
        }
        let _setup = self.inner.reply_setup.lock().await;
        if let Some(name) = current(&self.inner) {
            return Ok(name);
        }
        let names = self.inner.broker.names();
        let name: Arc<str> = names.new_reply_queue().into();
        let channel = session
            .connection
            .create_channel()
            .await
            .inspect_err(|_| session.mark_broken())?;
        channel
            .queue_declare(
                name.as_ref().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                name.as_ref().into(),
                names.reply_exchange().into(),
                name.as_ref().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                name.as_ref().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let inner = self.inner.clone();
        let generation = session.generation;
        let closing = self.inner.broker.closing();
        self.inner.tasks.spawn(async move {
            let _channel = channel;
            loop {
                let delivery = tokio::select! {
                    _ = closing.cancelled() => break,
                    d = consumer.next() => d,
                };
                let Some(Ok(delivery)) = delivery else { break };
                let correlation_id = delivery.properties.correlation_id().as_ref();
                if !inner.deliver_reply(correlation_id.map(|id| id.as_str()), delivery.data) {
                    tracing::debug!(
                        ?correlation_id,
                        "dropping a reply nobody waits for (late or duplicate)"
                    );
                }
            }
            // The queue died with its connection (or its channel alone was
            // closed): calls waiting on it fail now instead of at their
            // timeout, and the next call sets up a new one.
            lock(&inner.pending).retain(|_, (g, _)| *g != generation);
            let mut current = lock(&inner.reply_queue);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        });
        *lock(&self.inner.reply_queue) = Some((generation, name.clone()));
        Ok(name)
    }

    /// Fails fast if `target`'s queue does not exist or nobody consumes it.
    async fn check_consumed(&self, session: &Arc<Session>, target: &Target) -> RpcResult<()> {
        let queue = self.inner.broker.names().queue(target);
        let fresh =
            lock(&self.inner.consumed)
                .get(&queue)
                .copied()
                .is_some_and(|(generation, when)| {
                    generation == session.generation && when.elapsed() < CONSUMER_CHECK_TTL
                });
        if fresh {
            return Ok(());
        }
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let channel = session
            .connection
            .create_channel()
            .await
            .inspect_err(|_| session.mark_broken())?;
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => {
                let _ = channel.close(200, "ok".into()).await;
                if q.consumer_count() == 0 {
                    return Err(RpcError::NoConsumer {
                        target: target.to_string(),
                    });
                }
                lock(&self.inner.consumed).insert(queue, (session.generation, Instant::now()));
                Ok(())
            }
            Err(err) if is_not_found(&err) => Err(RpcError::NoRoute {
                target: target.to_string(),
                reply_text: format!("queue {queue} does not exist"),
            }),
            Err(err) => Err(err.into()),
        }
    }
}

impl Inner {
    /// Hands a reply to the call waiting for `correlation_id`; false if none waits.
    fn deliver_reply(&self, correlation_id: Option<&str>, body: Vec<u8>) -> bool {
        let waiter = correlation_id.and_then(|id| lock(&self.pending).remove(id));
        match waiter {
            Some((_, tx)) => {
                let _ = tx.send(body);
                true
            }
            None => false,
        }
    }
}

/// Removes a call's registration when the call ends, however it ends.
struct Registration {
    inner: Arc<Inner>,
    correlation_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.correlation_id);
    }
}

// === publishing ===

/// One message to publish with confirmation.
pub(crate) struct Publish {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: BasicProperties,
    pub(crate) mandatory: bool,
    /// The exchange is a fanout exchange to declare before publishing.
    pub(crate) fanout: bool,
}

/// Publishes and waits for the broker's confirmation, retrying on a new
/// connection when the current one fails, for up to `publish_timeout_ms`.
/// A message may thus arrive twice (at-least-once); it is never reported
/// confirmed unless the broker confirmed it.
pub(crate) async fn publish_confirmed(
    broker: &Broker,
    publish: &Publish,
    target: &str,
) -> RpcResult<()> {
    let deadline = Instant::now() + broker.config().publish_timeout();
    loop {
        let session = broker
            .session(deadline.saturating_duration_since(Instant::now()))
            .await?;
        match publish_once(&session, publish, target).await {
            Ok(()) => return Ok(()),
            Err(Failure::Final(err)) => return Err(err),
            Err(Failure::Connection(err)) => {
                session.mark_broken();
                if Instant::now() >= deadline {
                    return Err(RpcError::Unavailable(format!(
                        "publishing to {target}: {err}"
                    )));
                }
                tracing::debug!(error = %err, %target, "publish failed with the connection; retrying");
            }
        }
    }
}

enum Failure {
    Final(RpcError),
    Connection(lapin::Error),
}

async fn publish_once(session: &Session, publish: &Publish, target: &str) -> Result<(), Failure> {
    if publish.fanout {
        session
            .ensure_fanout_exchange(&publish.exchange)
            .await
            .map_err(Failure::Final)?;
    }
    let confirmation = session
        .publisher
        .basic_publish(
            publish.exchange.as_str().into(),
            publish.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: publish.mandatory,
                ..BasicPublishOptions::default()
            },
            &publish.body,
            publish.properties.clone(),
        )
        .await
        .map_err(Failure::Connection)?;
    let confirmation = crate::metrics::global()
        .bus
        .confirm(confirmation)
        .await
        .map_err(Failure::Connection)?;
    check_confirmation_for(confirmation, target).map_err(Failure::Final)
}

fn check_confirmation(confirmation: Confirmation, target: &Target) -> RpcResult<()> {
    check_confirmation_for(confirmation, &target.to_string())
}

fn check_confirmation_for(confirmation: Confirmation, target: &str) -> RpcResult<()> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(RpcError::NoRoute {
                target: target.to_owned(),
                reply_text: returned.reply_text.to_string(),
            })
        }
        Confirmation::Nack(None) => Err(RpcError::Nacked {
            target: target.to_owned(),
        }),
    }
}

/// The properties of a request message.
pub(crate) fn properties(method: &str, ctx: &RequestContext, persistent: bool) -> BasicProperties {
    BasicProperties::default()
        .with_type(method.into())
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(uuid::Uuid::new_v4().simple().to_string().into())
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_headers(headers::encode(ctx))
}

fn is_not_found(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BusConfig;

    /// A client on a broker nobody listens at: the tests below never publish.
    fn offline_client() -> RpcClient {
        let config = BusConfig {
            amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
            ..BusConfig::default()
        };
        RpcClient::new(Broker::start(config, "client-unit-test"))
    }

    /// Panics on another thread while holding `mutex`.
    fn poison<T: Send>(mutex: &Mutex<T>) {
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _guard = mutex.lock();
                    panic!("poisoning the lock on purpose");
                })
                .join();
        });
        assert!(mutex.is_poisoned());
    }

    #[tokio::test]
    async fn a_call_registered_after_a_poisoning_still_gets_its_reply() {
        let client = offline_client();
        poison(&client.inner.pending);

        let (tx, mut rx) = oneshot::channel();
        let registration = client.register("corr-1", 1, tx);
        assert!(
            client
                .inner
                .deliver_reply(Some("corr-1"), b"reply".to_vec()),
            "the reply found no registered call"
        );
        assert_eq!(rx.try_recv().expect("reply delivered"), b"reply".to_vec());

        // The registration is removed when the call ends, poisoned or not.
        let (tx, _rx) = oneshot::channel();
        drop(client.register("corr-2", 1, tx));
        drop(registration);
        assert!(crate::sync::lock(&client.inner.pending).is_empty());
        client.broker().close().await;
    }
}
