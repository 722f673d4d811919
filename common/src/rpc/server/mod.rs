//! The server: consumes a topic's queue (shared with the topic's other servers),
//! optionally its own server queue and its fanout queue, and dispatches each
//! message on its method name (the AMQP `type`) to a typed handler.
//!
//! A message is acknowledged only after its handler returned (at-least-once). A
//! message whose method is unknown, whose body does not decode or whose handler
//! panicked is rejected without requeue, so the broker dead-letters it to
//! `<cx>.dead`; it never loops and the server keeps serving. A caller waiting on
//! such a call gets a typed error reply instead of a timeout. A cast whose handler
//! reports `UNAVAILABLE` (a dependency is down) is tried again after a pause, up
//! to [`ServerOptions::max_redeliveries`] times, then dead-lettered too (see [`job`]).

mod job;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{
    StreamExt,
    future::BoxFuture,
    stream::{BoxStream, SelectAll},
};
use lapin::{
    Channel, Consumer, ExchangeKind,
    message::Delivery,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use prost::Message;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;

use super::{
    broker::{
        Backoff, Broker, QueueMismatch, Session, declare_exchange, diagnose, durable,
        exclusive_queue_args, is_precondition_failed, work_queue_args,
    },
    error::{RpcError, RpcResult},
    names::Target,
};
use crate::context::RequestContext;
use job::{Job, RetryPolicy};

pub use job::DELIVERY_COUNT;

/// How long a cast whose handler reported `UNAVAILABLE` waits before it is
/// tried again the first time (the default of [`ServerOptions::retry_pause`]);
/// the pause doubles with each further try, up to 30 s, so the default cap
/// rides out about three minutes of a database or backend outage.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How many times a cast whose handler keeps reporting `UNAVAILABLE` is tried
/// again before it is dead-lettered (the default of
/// [`ServerOptions::max_redeliveries`]): its handler runs at most this plus one times.
pub const MAX_REDELIVERIES: u32 = 10;

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
    /// How many times a cast answered `UNAVAILABLE` is tried again before it is
    /// dead-lettered to `<cx>.dead`.
    pub max_redeliveries: u32,
    /// How long a cast answered `UNAVAILABLE` waits before it is tried again.
    pub retry_pause: Duration,
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
            max_redeliveries: MAX_REDELIVERIES,
            retry_pause: RETRY_PAUSE,
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

    /// Sets how many times a cast answered `UNAVAILABLE` is tried again before
    /// it is dead-lettered (0: dead-lettered at the first `UNAVAILABLE`).
    pub fn with_max_redeliveries(mut self, max: u32) -> Self {
        self.max_redeliveries = max;
        self
    }

    /// Sets the pause before a cast answered `UNAVAILABLE` is tried again.
    pub fn with_retry_pause(mut self, pause: Duration) -> Self {
        self.retry_pause = pause;
        self
    }
}

/// A running server. Dropping it does not stop it: call [`RpcServer::shutdown`].
pub struct RpcServer {
    ready: watch::Receiver<bool>,
    /// Why the server cannot consume (a queue of the other type), while it does not.
    refused: watch::Receiver<Option<Arc<RpcError>>>,
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
        let (refused_tx, refused) = watch::channel(None);
        let stop = shutdown.child_token();
        let worker = Worker {
            broker,
            topic,
            options,
            dispatcher: Arc::new(dispatcher),
            ready: ready_tx,
            refused: refused_tx,
            stop: stop.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(Self {
            ready,
            refused,
            stop,
            task,
        })
    }

    /// Waits until the server consumes all its queues (again, after a reconnect).
    /// Fails at once with [`RpcError::QueueMismatch`] when the broker refuses
    /// to declare a queue as configured (it exists with another type): a
    /// service fails its start with that message rather than wait.
    pub async fn wait_ready(&self, within: Duration) -> RpcResult<()> {
        let mut ready = self.ready.clone();
        let mut refused = self.refused.clone();
        let wait = async {
            tokio::select! {
                r = ready.wait_for(|r| *r) => r.map(|_| Ok(())).map_err(|_| RpcError::ShuttingDown)?,
                r = refused.wait_for(Option::is_some) => match r.ok().and_then(|r| r.clone()) {
                    Some(err) => match &*err {
                        RpcError::QueueMismatch(m) => Err(RpcError::QueueMismatch(m.clone())),
                        other => Err(RpcError::Unavailable(other.to_string())),
                    },
                    None => Err(RpcError::ShuttingDown),
                },
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| RpcError::Unavailable(format!("server not consuming within {within:?}")))?
    }

    /// Whether the server consumes its queues now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Follows [`RpcServer::is_ready`]: a receiver that sees every change (a
    /// reconnect is `false` then `true`).
    pub fn ready_changes(&self) -> watch::Receiver<bool> {
        self.ready.clone()
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
    refused: watch::Sender<Option<Arc<RpcError>>>,
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
                    if let RpcError::QueueMismatch(mismatch) = &err {
                        // Tried again (the operator may delete the queue), but
                        // whoever waits for this server learns why at once.
                        tracing::error!(topic = %self.options.topic, queue = %mismatch.queue, retry_in = ?delay, "{err}");
                        self.refused.send_replace(Some(Arc::new(err)));
                    } else {
                        tracing::warn!(topic = %self.options.topic, error = %err, retry_in = ?delay, "rpc server lost its consumers; resuming");
                    }
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
        // Each delivery tagged with its queue's name: a cast tried again goes back there.
        let mut consumers: SelectAll<BoxStream<'static, (Arc<str>, lapin::Result<Delivery>)>> =
            SelectAll::new();
        let tag = |queue: String, consumer: Consumer| {
            let queue: Arc<str> = queue.into();
            consumer.map(move |d| (queue.clone(), d)).boxed()
        };
        let mut tags = Vec::new();
        let mut queues = Vec::new();
        if self.options.shared_queue {
            queues.push(self.topic.clone());
        }
        if let Some(server) = &self.options.server {
            queues.push(Target::server(self.options.topic.clone(), server.clone())?);
        }
        for target in &queues {
            let (queue, consumer) = self.consume_work_queue(session, &channel, target).await?;
            tags.push(consumer.tag().clone());
            consumers.push(tag(queue, consumer));
        }
        if self.options.fanout {
            let (queue, consumer) = self.consume_fanout(&channel).await?;
            tags.push(consumer.tag().clone());
            consumers.push(tag(queue, consumer));
        }
        self.refused.send_replace(None);
        self.ready.send_replace(true);
        tracing::info!(topic = %self.options.topic, server = ?self.options.server, fanout = self.options.fanout, "rpc server consuming");

        let in_flight = TaskTracker::new();
        let reply_exchange: Arc<str> = self.broker.names().reply_exchange().into();
        let retry = RetryPolicy {
            max_redeliveries: self.options.max_redeliveries,
            pause: self.options.retry_pause,
            publish_timeout: self.broker.config().publish_timeout(),
        };
        let outcome = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break Ok(()),
                _ = session.broken() => break Err(RpcError::Unavailable("connection lost".into())),
                delivery = consumers.next() => match delivery {
                    Some((queue, Ok(delivery))) => {
                        let job = Job {
                            dispatcher: self.dispatcher.clone(),
                            session: session.clone(),
                            topic: self.options.topic.clone(),
                            queue,
                            reply_exchange: reply_exchange.clone(),
                            retry,
                        };
                        in_flight.spawn(job.handle(delivery));
                    }
                    Some((_, Err(err))) => break Err(err.into()),
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

    /// Declares and consumes `target`'s queue; its name and the consumer.
    async fn consume_work_queue(
        &self,
        session: &Session,
        channel: &Channel,
        target: &Target,
    ) -> RpcResult<(String, Consumer)> {
        let queue = declare_and_bind(&self.broker, session, channel, target).await?;
        consume(channel, queue).await
    }

    /// Declares and consumes this server's fanout queue; its name and the consumer.
    async fn consume_fanout(&self, channel: &Channel) -> RpcResult<(String, Consumer)> {
        let names = self.broker.names();
        let exchange = names.fanout_exchange(&self.options.topic);
        declare_exchange(channel, &exchange, ExchangeKind::Fanout).await?;
        let queue = names.new_fanout_queue(&self.options.topic);
        let args = exclusive_queue_args(names);
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
        consume(channel, queue).await
    }
}

/// Declares `target`'s durable work queue and binds it, without consuming: casts
/// sent from now on wait in the queue until a server consumes it (a service that
/// warms up before serving calls this first, so its clients are not refused).
pub async fn declare_work_queue(broker: &Broker, target: &Target) -> RpcResult<()> {
    let session = broker.session(broker.config().publish_timeout()).await?;
    let channel = session.connection.create_channel().await?;
    let declared = declare_and_bind(broker, &session, &channel, target).await;
    let _ = channel.close(200, "declared".into()).await;
    declared.map(|_| ())
}

async fn declare_and_bind(
    broker: &Broker,
    session: &Session,
    channel: &Channel,
    target: &Target,
) -> RpcResult<String> {
    let names = broker.names();
    let queue = names.queue(target);
    let config = broker.config();
    if let Err(err) = channel
        .queue_declare(
            queue.as_str().into(),
            durable(),
            work_queue_args(names, config),
        )
        .await
    {
        if !is_precondition_failed(&err) {
            return Err(err.into());
        }
        let mismatch: QueueMismatch = diagnose(&session.connection, &queue, config, &err, |c| {
            work_queue_args(names, c)
        })
        .await;
        return Err(RpcError::QueueMismatch(Box::new(mismatch)));
    }
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

/// Consumes `queue` (declared already); its name and the consumer.
async fn consume(channel: &Channel, queue: String) -> RpcResult<(String, Consumer)> {
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((queue, consumer))
}
