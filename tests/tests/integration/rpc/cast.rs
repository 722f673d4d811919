//! Casts and fanouts: competing servers, one named server, every instance,
//! a consumer killed mid-handler; control exchanges kept apart; notifications.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use scoria_common::{
    rpc::notifier::{NotificationReader, Priority},
    rpc::{Notifier, RpcClient, ServerOptions, Target},
};
use scoria_tests::{ChildProcess, broker::TestExchange, msg::Echo};

use super::{Seen, TestServer, WAIT, broker, ctx, echo, wait_until};

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
