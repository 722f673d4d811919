//! Casts whose handler answers `UNAVAILABLE`, against the real RabbitMQ
//! (`SCORIA_TEST_AMQP_URL`): they are tried again a bounded number of times,
//! then dead-lettered to `<cx>.dead` with their delivery count.

use std::{
    net::{TcpStream, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{
    options::{BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use scoria_common::{
    RequestContext,
    config::BusConfig,
    rpc::{Broker, Dispatcher, RpcClient, RpcServer, ServerOptions, Target},
};
use tokio_util::sync::CancellationToken;
use tonic::Status;

const WAIT: Duration = Duration::from_secs(20);
/// The header the server counts redeliveries in.
const DELIVERY_COUNT: &str = "x-scoria-delivery-count";

fn amqp_url() -> String {
    std::env::var("SCORIA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A bus configuration on the test broker with a control exchange of its own;
/// panics (never skips) if RabbitMQ is not reachable.
fn bus_config(tag: &str) -> BusConfig {
    let url = amqp_url();
    let hostport = url
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let reachable = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "RabbitMQ is not reachable at {hostport} (SCORIA_TEST_AMQP_URL={url}); \
         run scripts/setup.sh (as root if it must start it)"
    );
    BusConfig {
        amqp_url: url,
        control_exchange: format!(
            "test-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        ),
        queue_expiry_ms: Some(120_000),
        reconnect_max_backoff_ms: 1_000,
        ..BusConfig::default()
    }
}

/// A server of topic `t` whose method `flaky` answers `UNAVAILABLE` the first
/// `failures` times, then OK; `calls` counts every call, `successes` the OK ones.
struct Flaky {
    calls: Arc<AtomicU32>,
    successes: Arc<AtomicU32>,
    server: RpcServer,
    client: RpcClient,
    config: BusConfig,
}

impl Flaky {
    async fn start(tag: &str, failures: u32, max_redeliveries: u32) -> Self {
        // The server's log in the test's output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter("scoria_common=info")
            .with_test_writer()
            .try_init();
        let config = bus_config(tag);
        let broker = Broker::connect(config.clone(), tag, WAIT)
            .await
            .expect("connect to RabbitMQ");
        let (calls, successes) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (c, s) = (calls.clone(), successes.clone());
        let dispatcher = Dispatcher::new().method("flaky", move |_ctx: RequestContext, (): ()| {
            let (calls, successes) = (c.clone(), s.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    return Err(Status::unavailable("the database is down"));
                }
                successes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        let options = ServerOptions::topic("t")
            .with_max_redeliveries(max_redeliveries)
            .with_retry_pause(Duration::from_millis(20));
        let server = RpcServer::start(
            broker.clone(),
            options,
            dispatcher,
            CancellationToken::new(),
        )
        .expect("start server");
        server.wait_ready(WAIT).await.expect("server ready");
        Self {
            calls,
            successes,
            server,
            client: RpcClient::new(broker),
            config,
        }
    }

    async fn cast(&self) {
        let ctx = RequestContext::new("p", "u", vec![]);
        let target = Target::topic("t").expect("target");
        self.client
            .cast(&ctx, &target, "flaky", &())
            .await
            .expect("cast");
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.client.broker().close().await;
    }
}

/// A channel of a connection of the test's own, to look into queues.
async fn raw_channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

/// How many messages wait in `queue`.
async fn depth(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

fn delivery_count(headers: Option<&FieldTable>) -> Option<i64> {
    match headers?.inner().get(DELIVERY_COUNT)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

#[tokio::test]
async fn a_cast_that_stays_unavailable_is_tried_cap_plus_one_times_then_dead_lettered() {
    const CAP: u32 = 3;
    let flaky = Flaky::start("redeliver-cap", u32::MAX, CAP).await;
    flaky.cast().await;

    let (conn, channel) = raw_channel().await;
    let dead = format!("{}.dead", flaky.config.control_exchange);
    let deadline = Instant::now() + WAIT;
    let message = loop {
        let got = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get from the dead-letter queue");
        if let Some(message) = got {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered within {WAIT:?}; the handler ran {} times",
            flaky.calls.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The last try comes before the dead-lettering: the count is final now.
    assert_eq!(flaky.calls.load(Ordering::SeqCst), CAP + 1);
    assert_eq!(flaky.successes.load(Ordering::SeqCst), 0);
    let props = &message.delivery.properties;
    assert_eq!(
        props.kind().as_ref().map(|k| k.to_string()).as_deref(),
        Some("flaky")
    );
    assert_eq!(
        delivery_count(props.headers().as_ref()),
        Some(i64::from(CAP))
    );
    assert_eq!(
        props.delivery_mode(),
        &Some(2),
        "the copies stay persistent"
    );
    assert_eq!(depth(&channel, &dead).await, 0, "dead-lettered once");
    assert_eq!(
        depth(&channel, &format!("{}.t", flaky.config.control_exchange)).await,
        0,
        "no copy left in the work queue"
    );
    let _ = conn.close(200, "done".into()).await;
    flaky.stop().await;
}

#[tokio::test]
async fn a_cast_unavailable_twice_then_ok_is_handled_once() {
    let flaky = Flaky::start("redeliver-ok", 2, 10).await;
    flaky.cast().await;

    let deadline = Instant::now() + WAIT;
    while flaky.successes.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "not handled within {WAIT:?}; the handler ran {} times",
            flaky.calls.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (calls, successes) = (flaky.calls.clone(), flaky.successes.clone());
    let cx = flaky.config.control_exchange.clone();
    // After shutdown a message still unacked would be back in the queue.
    flaky.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(successes.load(Ordering::SeqCst), 1);
    let (conn, channel) = raw_channel().await;
    assert_eq!(
        depth(&channel, &format!("{cx}.t")).await,
        0,
        "acked once handled"
    );
    assert_eq!(depth(&channel, &format!("{cx}.dead")).await, 0);
    let _ = conn.close(200, "done".into()).await;
}
