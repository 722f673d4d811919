//! The server: consumes a topic's queue (shared with the topic's other servers),
//! optionally its own server queue and its fanout queue, and dispatches each
//! message on its method name (the AMQP `type`) to a typed handler.
//!
//! A message is acknowledged only after its handler returned (at-least-once). A
//! message whose method is unknown, whose body does not decode or whose handler
//! panicked is rejected without requeue, so the broker dead-letters it to
//! `<cx>.dead`; it never loops and the server keeps serving. A caller waiting on
//! such a call gets a typed error reply instead of a timeout. A cast whose handler
//! reports `UNAVAILABLE` (a dependency is down) is requeued after a pause.

use std::{
    collections::HashMap, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration,
};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream::SelectAll};
use lapin::{
    BasicProperties, Channel, Consumer, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use prost::Message;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, Status};

use super::{
    CONTENT_TYPE,
    broker::{Backoff, Broker, Session, declare_exchange, durable, work_queue_args},
    error::{RpcError, RpcResult},
    headers,
    names::Target,
    reply,
};
use crate::context::RequestContext;

/// How long a cast whose handler reported `UNAVAILABLE` waits before it is requeued.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

// === Dispatcher ===

enum HandlerError {
    /// The body is not the method's request message.
    Decode(prost::DecodeError),
    /// The handler's own error.
    Status(Status),
}

type BoxedHandler = Arc<
    dyn Fn(RequestContext, Bytes) -> BoxFuture<'static, Result<Bytes, HandlerError>> + Send + Sync,
>;

/// The methods a server answers: method name -> typed handler.
#[derive(Default, Clone)]
pub struct Dispatcher {
    handlers: HashMap<String, BoxedHandler>,
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name`, handled by `handler`: it gets the caller's context and the
    /// decoded request; its `Err` reaches a caller as the same `Status`.
    pub fn method<Req, Resp, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: BoxedHandler = Arc::new(move |ctx, body| {
            let handler = handler.clone();
            Box::pin(async move {
                let request = Req::decode(body).map_err(HandlerError::Decode)?;
                let response = handler(ctx, request).await.map_err(HandlerError::Status)?;
                Ok(Bytes::from(response.encode_to_vec()))
            })
        });
        self.handlers.insert(name.to_owned(), boxed);
        self
    }

    /// The method names served.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

// === RpcServer ===

/// What a server consumes.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The topic; its queue is shared by all its servers.
    pub topic: String,
    /// This server's name within the topic: it also consumes `<topic>.<server>`.
    pub server: Option<String>,
    /// Whether to consume the topic's fanout exchange.
    pub fanout: bool,
    /// Whether to consume the topic's shared queue (false: fanout only).
    pub shared_queue: bool,
    /// Messages in flight per queue; the configured `prefetch` if unset.
    pub prefetch: Option<u16>,
    /// How long shutdown waits for handlers in flight.
    pub drain_timeout: Duration,
}

impl ServerOptions {
    /// A server of `topic`, consuming only the shared queue.
    pub fn topic(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            server: None,
            fanout: false,
            shared_queue: true,
            prefetch: None,
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Also consume the queue of the one server `server`.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// Also consume the topic's fanout.
    pub fn with_fanout(mut self) -> Self {
        self.fanout = true;
        self
    }

    /// Only the fanout of `topic`, not its shared queue: for broadcasts to every
    /// instance of a topic whose work goes to per-server topics.
    pub fn fanout_only(topic: impl Into<String>) -> Self {
        Self {
            fanout: true,
            shared_queue: false,
            ..Self::topic(topic)
        }
    }

    /// Sets the prefetch.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Sets the drain timeout.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// A running server. Dropping it does not stop it: call [`RpcServer::shutdown`].
pub struct RpcServer {
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RpcServer {
    /// Starts serving `dispatcher` on the queues `options` names, until
    /// `shutdown` is cancelled (or [`RpcServer::shutdown`] is called).
    pub fn start(
        broker: Broker,
        options: ServerOptions,
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
    ) -> RpcResult<Self> {
        let topic = Target::topic(options.topic.clone())?;
        if let Some(server) = &options.server {
            Target::server(options.topic.clone(), server.clone())?;
        }
        let (ready_tx, ready) = watch::channel(false);
        let stop = shutdown.child_token();
        let worker = Worker {
            broker,
            topic,
            options,
            dispatcher: Arc::new(dispatcher),
            ready: ready_tx,
            stop: stop.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(Self { ready, stop, task })
    }

    /// Waits until the server consumes all its queues (again, after a reconnect).
    pub async fn wait_ready(&self, within: Duration) -> RpcResult<()> {
        let mut ready = self.ready.clone();
        tokio::time::timeout(within, ready.wait_for(|r| *r))
            .await
            .map_err(|_| RpcError::Unavailable(format!("server not consuming within {within:?}")))?
            .map_err(|_| RpcError::ShuttingDown)?;
        Ok(())
    }

    /// Whether the server consumes its queues now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Stops consuming, lets handlers in flight finish (up to the drain timeout),
    /// and returns when the server is closed.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stopped (its shutdown token was cancelled).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Worker {
    broker: Broker,
    topic: Target,
    options: ServerOptions,
    dispatcher: Arc<Dispatcher>,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let session = tokio::select! {
                _ = self.stop.cancelled() => break,
                s = self.broker.session(Duration::from_secs(3600)) => s,
            };
            let session = match session {
                Ok(session) => session,
                Err(RpcError::ShuttingDown) => break,
                Err(_) => continue,
            };
            match self.serve(&session).await {
                Ok(()) => break,
                Err(err) => {
                    self.ready.send_replace(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(topic = %self.options.topic, error = %err, retry_in = ?delay, "rpc server lost its consumers; resuming");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.ready.send_replace(false);
    }

    /// Consumes on one connection until shutdown (`Ok`) or until the connection
    /// or a consumer fails (`Err`, the caller resumes on the next connection).
    async fn serve(&self, session: &Arc<Session>) -> RpcResult<()> {
        let channel = session
            .connection
            .create_channel()
            .await
            .inspect_err(|_| session.mark_broken())?;
        let prefetch = self
            .options
            .prefetch
            .unwrap_or(self.broker.config().prefetch);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = SelectAll::new();
        let mut tags = Vec::new();
        let mut queues = Vec::new();
        if self.options.shared_queue {
            queues.push(self.topic.clone());
        }
        if let Some(server) = &self.options.server {
            queues.push(Target::server(self.options.topic.clone(), server.clone())?);
        }
        for target in &queues {
            let consumer = self.consume_work_queue(&channel, target).await?;
            tags.push(consumer.tag().clone());
            consumers.push(consumer);
        }
        if self.options.fanout {
            let consumer = self.consume_fanout(&channel).await?;
            tags.push(consumer.tag().clone());
            consumers.push(consumer);
        }
        self.ready.send_replace(true);
        tracing::info!(topic = %self.options.topic, server = ?self.options.server, fanout = self.options.fanout, "rpc server consuming");

        let in_flight = TaskTracker::new();
        let reply_exchange: Arc<str> = self.broker.names().reply_exchange().into();
        let outcome = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break Ok(()),
                _ = session.broken() => break Err(RpcError::Unavailable("connection lost".into())),
                delivery = consumers.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let job = Job {
                            dispatcher: self.dispatcher.clone(),
                            session: session.clone(),
                            topic: self.options.topic.clone(),
                            reply_exchange: reply_exchange.clone(),
                        };
                        in_flight.spawn(job.handle(delivery));
                    }
                    Some(Err(err)) => break Err(err.into()),
                    None => break Err(RpcError::Unavailable("the broker cancelled a consumer".into())),
                },
            }
        };
        if outcome.is_ok() {
            // Stop consuming; deliveries not yet started return to the queue when
            // the channel closes, after the handlers in flight have acked.
            for tag in tags {
                let _ = channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await;
            }
            self.ready.send_replace(false);
        }
        in_flight.close();
        if tokio::time::timeout(self.options.drain_timeout, in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(topic = %self.options.topic, "drain timeout: handlers still running are abandoned (their messages will be redelivered)");
        }
        let _ = channel.close(200, "closing".into()).await;
        outcome
    }

    async fn consume_work_queue(&self, channel: &Channel, target: &Target) -> RpcResult<Consumer> {
        let queue = declare_and_bind(&self.broker, channel, target).await?;
        Ok(channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    }

    async fn consume_fanout(&self, channel: &Channel) -> RpcResult<Consumer> {
        let names = self.broker.names();
        let exchange = names.fanout_exchange(&self.options.topic);
        declare_exchange(channel, &exchange, ExchangeKind::Fanout).await?;
        let queue = names.new_fanout_queue(&self.options.topic);
        let mut args = FieldTable::default();
        if let Some(dlx) = work_queue_args(names, self.broker.config())
            .inner()
            .get("x-dead-letter-exchange")
        {
            args.insert("x-dead-letter-exchange".into(), dlx.clone());
        }
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    }
}

/// Declares `target`'s durable work queue and binds it, without consuming: casts
/// sent from now on wait in the queue until a server consumes it (a service that
/// warms up before serving calls this first, so its clients are not refused).
pub async fn declare_work_queue(broker: &Broker, target: &Target) -> RpcResult<()> {
    let session = broker.session(broker.config().publish_timeout()).await?;
    let channel = session.connection.create_channel().await?;
    let declared = declare_and_bind(broker, &channel, target).await;
    let _ = channel.close(200, "declared".into()).await;
    declared.map(|_| ())
}

async fn declare_and_bind(
    broker: &Broker,
    channel: &Channel,
    target: &Target,
) -> RpcResult<String> {
    let names = broker.names();
    let queue = names.queue(target);
    channel
        .queue_declare(
            queue.as_str().into(),
            durable(),
            work_queue_args(names, broker.config()),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            names.topic_exchange().into(),
            target.routing_key().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

// === one message ===

/// What happens to a message after its handler ran.
enum Disposition {
    /// Handled (successfully or with an error the handler chose): ack.
    Done,
    /// Can never be handled: reject to the dead-letter queue.
    Poison,
    /// A dependency is down: requeue after a pause (casts only).
    Retry,
}

struct Job {
    dispatcher: Arc<Dispatcher>,
    session: Arc<Session>,
    topic: String,
    reply_exchange: Arc<str>,
}

impl Job {
    async fn handle(self, delivery: Delivery) {
        let props = &delivery.properties;
        let method = props
            .kind()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default();
        let ctx = headers::decode(props.headers().as_ref());
        let reply_to = props.reply_to().as_ref().map(|r| r.to_string());
        let correlation_id = props.correlation_id().as_ref().map(|c| c.to_string());
        let is_call = reply_to.is_some() && correlation_id.is_some();
        let span = tracing::info_span!(
            "rpc.handle",
            topic = %self.topic,
            %method,
            request_id = %ctx.request_id,
            redelivered = delivery.redelivered,
        );

        let (outcome, disposition) = match self.dispatcher.handlers.get(&method) {
            None => (
                Err(Status::unimplemented(format!(
                    "unknown method {method:?} on topic {:?}",
                    self.topic
                ))),
                Disposition::Poison,
            ),
            Some(handler) => {
                let body = Bytes::from(delivery.data);
                let run = AssertUnwindSafe(handler(ctx, body)).catch_unwind();
                match tracing::Instrument::instrument(run, span.clone()).await {
                    Ok(Ok(result)) => (Ok(result), Disposition::Done),
                    Ok(Err(HandlerError::Decode(err))) => (
                        Err(Status::invalid_argument(format!(
                            "the body of {method} is not its request message: {err}"
                        ))),
                        Disposition::Poison,
                    ),
                    Ok(Err(HandlerError::Status(status))) => {
                        let retry = !is_call && status.code() == Code::Unavailable;
                        (
                            Err(status),
                            if retry {
                                Disposition::Retry
                            } else {
                                Disposition::Done
                            },
                        )
                    }
                    Err(_) => (
                        Err(Status::internal(format!(
                            "the handler of {method} panicked"
                        ))),
                        Disposition::Poison,
                    ),
                }
            }
        };
        match (&outcome, &disposition) {
            (Err(status), Disposition::Poison) => {
                tracing::warn!(parent: &span, code = ?status.code(), error = %status.message(), "dead-lettering message")
            }
            (Err(status), Disposition::Retry) => {
                tracing::warn!(parent: &span, error = %status.message(), "dependency unavailable; requeueing")
            }
            (Err(status), Disposition::Done) if !is_call => {
                tracing::warn!(parent: &span, code = ?status.code(), error = %status.message(), "cast handler failed")
            }
            _ => {}
        }
        if let (Some(reply_to), Some(correlation_id)) = (reply_to, correlation_id) {
            self.reply(&reply_to, &correlation_id, &method, outcome)
                .await;
        }
        let acked = match disposition {
            Disposition::Done => delivery.acker.ack(BasicAckOptions::default()).await,
            Disposition::Poison => {
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
            Disposition::Retry => {
                tokio::time::sleep(RETRY_PAUSE).await;
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
        };
        if let Err(err) = acked {
            // The channel died: the broker redelivers the message.
            tracing::debug!(parent: &span, error = %err, "could not settle message; it will be redelivered");
        }
    }

    async fn reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        method: &str,
        outcome: Result<Bytes, Status>,
    ) {
        let props = BasicProperties::default()
            .with_type(method.into())
            .with_content_type(CONTENT_TYPE.into())
            .with_correlation_id(correlation_id.into())
            .with_delivery_mode(1);
        let published = self
            .session
            .replies
            .basic_publish(
                self.reply_exchange.as_ref().into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                &reply::encode(outcome),
                props,
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(error = %err, %method, "could not publish a reply; the caller will time out");
            self.session.mark_broken();
        }
    }
}
