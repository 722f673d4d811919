//! The RPC layer against the real broker: call, cast, fanout, errors, failures.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions},
};
use scoria_common::{
    RequestContext,
    rpc::{
        Broker, CallOptions, Dispatcher, Notifier, RpcClient, RpcError, RpcServer, ServerOptions,
        Target,
        notifier::{NotificationReader, Priority},
    },
};
use scoria_tests::{
    ChildProcess, broker::TestExchange, bus_config, close_broker_connections, msg::Echo,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, metadata::MetadataValue};

const WAIT: Duration = Duration::from_secs(15);

/// What a test server saw: (server name, seq) in arrival order.
type Seen = Arc<Mutex<Vec<(String, u64)>>>;

async fn broker(exchange: &str, name: &str) -> Broker {
    Broker::connect(bus_config(exchange), format!("{exchange}:{name}"), WAIT)
        .await
        .expect("connect to RabbitMQ")
}

/// A dispatcher with `echo` (call), `record` (cast, notes the seq in `seen`),
/// `fail` (returns a rich status), `sleep` (sleeps `sleep_ms`, then echoes) and
/// `whoami` (replies the caller's context).
fn dispatcher(name: &str, seen: Seen) -> Dispatcher {
    let n1 = name.to_owned();
    let n2 = name.to_owned();
    Dispatcher::new()
        .method("echo", move |_ctx: RequestContext, req: Echo| {
            let name = n1.clone();
            async move {
                Ok(Echo {
                    text: format!("{name}:{}", req.text),
                    ..req
                })
            }
        })
        .method("record", move |_ctx: RequestContext, req: Echo| {
            let (name, seen) = (n2.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push((name, req.seq));
                Ok(())
            }
        })
        .method("fail", |_ctx: RequestContext, _req: Echo| async move {
            let mut status = Status::with_details(
                Code::FailedPrecondition,
                "volume v-1 is in-use",
                Bytes::from_static(&[1, 2, 3]),
            );
            status
                .metadata_mut()
                .insert("x-field", MetadataValue::from_static("status"));
            Err::<Echo, _>(status)
        })
        .method("sleep", |_ctx: RequestContext, req: Echo| async move {
            tokio::time::sleep(Duration::from_millis(u64::from(req.sleep_ms))).await;
            Ok(req)
        })
        .method("whoami", |ctx: RequestContext, _req: Echo| async move {
            Ok(Echo {
                text: format!(
                    "{}|{}|{}|{}",
                    ctx.request_id,
                    ctx.project_id,
                    ctx.roles.join(","),
                    ctx.traceparent.trace_id
                ),
                ..Echo::default()
            })
        })
}

struct TestServer {
    server: RpcServer,
    broker: Broker,
}

impl TestServer {
    async fn start(exchange: &str, name: &str, options: ServerOptions, seen: Seen) -> Self {
        let broker = broker(exchange, name).await;
        let server = RpcServer::start(
            broker.clone(),
            options,
            dispatcher(name, seen),
            CancellationToken::new(),
        )
        .expect("start server");
        server.wait_ready(WAIT).await.expect("server ready");
        Self { server, broker }
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.broker.close().await;
    }
}

fn ctx() -> RequestContext {
    RequestContext::new("project-a", "user-a", vec!["member".into()])
}

fn echo(seq: u64) -> Echo {
    Echo {
        text: format!("m{seq}"),
        seq,
        sleep_ms: 0,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn call_round_trip_carries_the_context() {
    let cx = TestExchange::new("call");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();

    let reply: Echo = client
        .call(&ctx(), &target, "echo", &echo(7))
        .await
        .expect("call");
    assert_eq!(
        reply,
        Echo {
            text: "s1:m7".into(),
            seq: 7,
            sleep_ms: 0
        }
    );

    let context = ctx();
    let who: Echo = client
        .call(&context, &target, "whoami", &Echo::default())
        .await
        .expect("call");
    let expected = format!(
        "{}|project-a|member|{}",
        context.request_id, context.traceparent.trace_id
    );
    assert_eq!(
        who.text, expected,
        "request context must arrive in the headers"
    );
    server.stop().await;
}

#[tokio::test]
async fn remote_error_arrives_typed_and_whole() {
    let cx = TestExchange::new("remote-err");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let err = client
        .call::<_, Echo>(&ctx(), &Target::topic("t").unwrap(), "fail", &echo(1))
        .await
        .expect_err("handler fails");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let status = Status::from(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "volume v-1 is in-use");
    assert_eq!(status.details(), &[1, 2, 3]);
    assert_eq!(
        status
            .metadata()
            .get("x-field")
            .and_then(|v| v.to_str().ok()),
        Some("status")
    );
    server.stop().await;
}

#[tokio::test]
async fn call_past_its_timeout_is_deadline_exceeded_and_late_reply_dropped() {
    let cx = TestExchange::new("timeout");
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), Seen::default()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();

    let started = Instant::now();
    let slow = Echo {
        text: "slow".into(),
        seq: 1,
        sleep_ms: 1_500,
    };
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &target,
            "sleep",
            &slow,
            CallOptions::timeout(Duration::from_millis(300)),
        )
        .await
        .expect_err("must time out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "timed out after {:?}",
        started.elapsed()
    );

    // The late reply to seq 1 arrives while the next call waits: it must not be
    // taken for the next call's reply.
    let fast = Echo {
        text: "fast".into(),
        seq: 2,
        sleep_ms: 1_500,
    };
    let reply: Echo = client
        .call(&ctx(), &target, "sleep", &fast)
        .await
        .expect("second call");
    assert_eq!(reply.seq, 2);
    server.stop().await;
}

#[tokio::test]
async fn call_to_a_topic_nobody_serves_fails_fast() {
    let cx = TestExchange::new("noroute");
    let client = RpcClient::new(broker(&cx, "client").await);
    let options = CallOptions::timeout(Duration::from_secs(30));

    let started = Instant::now();
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &Target::topic("nobody").unwrap(),
            "echo",
            &echo(1),
            options,
        )
        .await
        .expect_err("no route");
    assert!(matches!(err, RpcError::NoRoute { .. }), "{err:?}");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let err = client
        .cast(
            &ctx(),
            &Target::topic("nobody").unwrap(),
            "record",
            &echo(1),
        )
        .await
        .expect_err("an unroutable cast is an error at once");
    assert!(matches!(err, RpcError::NoRoute { .. }), "{err:?}");

    // The queue exists (a server ran once) but nobody consumes it now.
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("gone"), Seen::default()).await;
    server.stop().await;
    let started = Instant::now();
    let err = client
        .call_with::<_, Echo>(
            &ctx(),
            &Target::topic("gone").unwrap(),
            "echo",
            &echo(1),
            options,
        )
        .await
        .expect_err("no consumer");
    assert!(matches!(err, RpcError::NoConsumer { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cast_reaches_exactly_one_of_two_competing_servers() {
    let cx = TestExchange::new("compete");
    let seen = Seen::default();
    let a = TestServer::start(&cx, "a", ServerOptions::topic("t"), seen.clone()).await;
    let b = TestServer::start(&cx, "b", ServerOptions::topic("t"), seen.clone()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();
    for seq in 0..40 {
        client
            .cast(&ctx(), &target, "record", &echo(seq))
            .await
            .expect("cast");
    }
    wait_until("40 casts handled", || seen.lock().unwrap().len() >= 40).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40, "a cast was handled twice: {seen:?}");
    let seqs: HashSet<u64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs.len(), 40);
    let by_server: BTreeMap<&str, usize> = seen.iter().fold(BTreeMap::new(), |mut m, (n, _)| {
        *m.entry(n.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        by_server.len(),
        2,
        "both servers compete for the topic: {by_server:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn cast_to_one_named_server() {
    let cx = TestExchange::new("named");
    let seen = Seen::default();
    let a = TestServer::start(
        &cx,
        "a",
        ServerOptions::topic("volume").with_server("a"),
        seen.clone(),
    )
    .await;
    let b = TestServer::start(
        &cx,
        "b",
        ServerOptions::topic("volume").with_server("b"),
        seen.clone(),
    )
    .await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let to_b = Target::server("volume", "b").unwrap();
    for seq in 0..10 {
        client
            .cast(&ctx(), &to_b, "record", &echo(seq))
            .await
            .expect("cast");
    }
    let reply: Echo = client
        .call(
            &ctx(),
            &Target::server("volume", "a").unwrap(),
            "echo",
            &echo(1),
        )
        .await
        .expect("call a");
    assert_eq!(reply.text, "a:m1");
    wait_until("10 casts handled", || seen.lock().unwrap().len() >= 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10);
    assert!(
        seen.iter().all(|(n, _)| n == "b"),
        "only server b may get its casts: {seen:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn fanout_reaches_every_instance() {
    let cx = TestExchange::new("fanout");
    let seen = Seen::default();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(
            TestServer::start(
                &cx,
                name,
                ServerOptions::topic("scheduler").with_fanout(),
                seen.clone(),
            )
            .await,
        );
    }
    let client = RpcClient::new(broker(&cx, "client").await);
    client
        .fanout_cast(&ctx(), "scheduler", "record", &echo(5))
        .await
        .expect("fanout");
    wait_until("3 deliveries", || seen.lock().unwrap().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got: Vec<_> = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![("a".into(), 5), ("b".into(), 5), ("c".into(), 5)]);
    // Nobody listening is fine for a fanout.
    client
        .fanout_cast(&ctx(), "empty-topic", "record", &echo(6))
        .await
        .expect("fanout to nobody");
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test]
async fn consumer_killed_mid_handler_leaves_the_message_to_another() {
    let cx = TestExchange::new("kill");
    let exe = env!("CARGO_BIN_EXE_scoria-rpc-testserver");
    let envs = |name: &str| {
        vec![
            ("SCORIA_CONTROL_EXCHANGE", cx.to_string()),
            ("TEST_TOPIC", "work".to_owned()),
            ("TEST_SERVER_NAME", name.to_owned()),
        ]
    };
    let mut first = ChildProcess::spawn(exe, &[], &envs("first")).expect("spawn");
    first.wait_line("READY", WAIT).await.expect("first ready");
    let client = RpcClient::new(broker(&cx, "client").await);
    let slow = Echo {
        text: "slow".into(),
        seq: 42,
        sleep_ms: 60_000,
    };
    client
        .cast(&ctx(), &Target::topic("work").unwrap(), "record", &slow)
        .await
        .expect("cast");
    first
        .wait_line("START 42", WAIT)
        .await
        .expect("first started the handler");
    first.kill().await.expect("kill -9");

    let mut second = ChildProcess::spawn(exe, &[], &envs("second")).expect("spawn");
    second.wait_line("READY", WAIT).await.expect("second ready");
    // The same message, redelivered; shorten nothing: it sleeps 60 s, so wait for START.
    second
        .wait_line("START 42", WAIT)
        .await
        .expect("the unacked message goes to the other instance");
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_server_keeps_serving() {
    let cx = TestExchange::new("poison");
    let seen = Seen::default();
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), seen.clone()).await;
    let client = RpcClient::new(broker(&cx, "client").await);

    // Raw publishes: garbage for a known method, and an unknown method.
    let raw = broker(&cx, "raw").await;
    let conn = lapin::Connection::connect(
        &scoria_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    for (method, body) in [
        ("record", &[0xff_u8, 0xff, 0xff, 0x01][..]),
        ("no_such_method", &b"hello"[..]),
    ] {
        channel
            .basic_publish(
                cx.name().into(),
                "t".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_type(method.into())
                    .with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    // Both land in the dead-letter queue, once each.
    let dead = format!("{cx}.dead");
    let mut dead_types = Vec::new();
    let deadline = Instant::now() + WAIT;
    while dead_types.len() < 2 && Instant::now() < deadline {
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(msg) => dead_types.push(
                msg.delivery
                    .properties
                    .kind()
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            ),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    dead_types.sort();
    assert_eq!(
        dead_types,
        vec!["no_such_method".to_owned(), "record".to_owned()]
    );

    // A call to an unknown method gets a typed error at once, not a timeout.
    let err = client
        .call::<_, Echo>(
            &ctx(),
            &Target::topic("t").unwrap(),
            "no_such_method",
            &echo(1),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    // The server still serves.
    let reply: Echo = client
        .call(&ctx(), &Target::topic("t").unwrap(), "echo", &echo(3))
        .await
        .expect("call");
    assert_eq!(reply.seq, 3);
    assert!(
        seen.lock().unwrap().is_empty(),
        "garbage must not reach the handler"
    );
    raw.close().await;
    server.stop().await;
}

#[tokio::test]
async fn closed_connections_recover_and_no_confirmed_cast_is_lost() {
    let cx = TestExchange::new("reconnect");
    let seen = Seen::default();
    let server = TestServer::start(&cx, "s1", ServerOptions::topic("t"), seen.clone()).await;
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("t").unwrap();

    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (client, target, confirmed) = (client.clone(), target.clone(), confirmed.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            for seq in 0..400u64 {
                match client.cast(&ctx(), &target, "record", &echo(seq)).await {
                    Ok(()) => confirmed.lock().unwrap().push(seq),
                    Err(_) => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };
    wait_until("some casts confirmed", || {
        confirmed.lock().unwrap().len() >= 50
    })
    .await;
    let closed = close_broker_connections(&cx).await.expect("rabbitmqctl");
    assert!(
        closed >= 2,
        "expected to close the client's and the server's connections, closed {closed}"
    );
    let failures = sender.await.expect("sender");
    assert_eq!(
        failures, 0,
        "casts retry through a reconnect instead of failing"
    );

    let confirmed: HashSet<u64> = confirmed.lock().unwrap().iter().copied().collect();
    assert_eq!(confirmed.len(), 400);
    wait_until("every confirmed cast handled", || {
        let got: HashSet<u64> = seen.lock().unwrap().iter().map(|(_, s)| *s).collect();
        confirmed.is_subset(&got)
    })
    .await;
    // Both sides are back: a call round-trips.
    server
        .server
        .wait_ready(WAIT)
        .await
        .expect("server resumed");
    let reply: Echo = client
        .call(&ctx(), &target, "echo", &echo(9))
        .await
        .expect("call after reconnect");
    assert_eq!(reply.seq, 9);
    server.stop().await;
}

#[tokio::test]
async fn two_control_exchanges_stay_apart() {
    let (x, y) = (TestExchange::new("apart-x"), TestExchange::new("apart-y"));
    let seen_x = Seen::default();
    let seen_y = Seen::default();
    let sx = TestServer::start(
        &x,
        "sx",
        ServerOptions::topic("t").with_fanout(),
        seen_x.clone(),
    )
    .await;
    let sy = TestServer::start(
        &y,
        "sy",
        ServerOptions::topic("t").with_fanout(),
        seen_y.clone(),
    )
    .await;
    let cx = RpcClient::new(broker(&x, "client").await);
    let target = Target::topic("t").unwrap();
    for seq in 0..5 {
        cx.cast(&ctx(), &target, "record", &echo(seq))
            .await
            .expect("cast");
    }
    cx.fanout_cast(&ctx(), "t", "record", &echo(100))
        .await
        .expect("fanout");
    let reply: Echo = cx
        .call(&ctx(), &target, "echo", &echo(1))
        .await
        .expect("call");
    assert_eq!(reply.text, "sx:m1");
    wait_until("6 deliveries on x", || seen_x.lock().unwrap().len() >= 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen_y.lock().unwrap().is_empty(),
        "deployment y saw x's messages"
    );
    sx.stop().await;
    sy.stop().await;
}

#[tokio::test]
async fn notifications_are_published_with_payload_and_request_id() {
    let cx = TestExchange::new("notify");
    let broker = broker(&cx, "notifier").await;
    let notifier = Notifier::new(broker.clone(), "scoria-volume.host1");
    let context = ctx();
    notifier
        .info(
            &context,
            "volume.create.end",
            &scoria_proto::rpc::RemoteError {
                code: 0,
                message: "payload".into(),
                ..Default::default()
            },
        )
        .await
        .expect("notify info");
    notifier
        .error(
            &context,
            "volume.create.error",
            &scoria_proto::rpc::RemoteError {
                code: 13,
                message: "boom".into(),
                ..Default::default()
            },
        )
        .await
        .expect("notify error");
    let mut info = NotificationReader::open(&broker, Priority::Info)
        .await
        .expect("reader");
    let n = info
        .next(WAIT)
        .await
        .expect("read")
        .expect("an info notification");
    assert_eq!(n.event_type, "volume.create.end");
    assert_eq!(n.priority, "INFO");
    assert_eq!(n.publisher_id, "scoria-volume.host1");
    assert_eq!(n.request_id, context.request_id);
    let payload: scoria_proto::rpc::RemoteError = n
        .payload
        .expect("payload")
        .to_msg()
        .expect("decode payload");
    assert_eq!(payload.message, "payload");
    let mut errors = NotificationReader::open(&broker, Priority::Error)
        .await
        .expect("reader");
    let e = errors
        .next(WAIT)
        .await
        .expect("read")
        .expect("an error notification");
    assert_eq!(e.event_type, "volume.create.error");
    broker.close().await;
}

#[tokio::test]
async fn unreachable_broker_is_unavailable_with_a_clear_message() {
    let mut config = bus_config(&TestExchange::new("down"));
    config.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let started = Instant::now();
    let err = match Broker::connect(config, "down", Duration::from_millis(800)).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(err) => err,
    };
    assert_eq!(err.code(), Code::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("guest:guest"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn graceful_shutdown_finishes_handlers_in_flight() {
    let cx = TestExchange::new("drain");
    let exe = env!("CARGO_BIN_EXE_scoria-rpc-testserver");
    let envs = vec![
        ("SCORIA_CONTROL_EXCHANGE", cx.to_string()),
        ("TEST_TOPIC", "work".to_owned()),
    ];
    let mut server = ChildProcess::spawn(exe, &[], &envs).expect("spawn");
    server.wait_line("READY", WAIT).await.expect("ready");
    let client = RpcClient::new(broker(&cx, "client").await);
    let job = Echo {
        text: "job".into(),
        seq: 1,
        sleep_ms: 1_000,
    };
    client
        .cast(&ctx(), &Target::topic("work").unwrap(), "record", &job)
        .await
        .expect("cast");
    server.wait_line("START 1", WAIT).await.expect("started");
    let status = server.terminate(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    server
        .wait_line("DONE 1", Duration::from_secs(1))
        .await
        .expect("the handler in flight finished before exit");
}

#[tokio::test]
async fn casts_to_a_declared_queue_wait_for_their_server() {
    let cx = TestExchange::new("declared");
    let client = RpcClient::new(broker(&cx, "client").await);
    let target = Target::topic("warming").unwrap();
    scoria_common::rpc::server::declare_work_queue(client.broker(), &target)
        .await
        .expect("declare");
    for seq in 0..5 {
        client
            .cast(&ctx(), &target, "record", &echo(seq))
            .await
            .expect("a cast to a declared queue is accepted before any server runs");
    }
    let seen = Seen::default();
    let server =
        TestServer::start(&cx, "late", ServerOptions::topic("warming"), seen.clone()).await;
    wait_until("the queued casts", || seen.lock().unwrap().len() >= 5).await;
    server.stop().await;
}
