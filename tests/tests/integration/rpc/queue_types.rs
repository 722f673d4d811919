//! Quorum queues on the shared broker (`SCORIA_RPC_QUEUE_TYPE=quorum`): what is
//! declared as which type, a message redelivered past the delivery limit ending
//! in `<cx>.dead`, and a queue of the other type refused with what to do, by
//! the library and by a real service at its start.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions},
    types::FieldTable,
};
use scoria_common::{
    config::{BusConfig, QueueType},
    rpc::{Broker, RpcClient, RpcError, RpcServer, ServerOptions, Target, server},
};
use scoria_tests::{
    broker::{BrokerAccess, TestExchange},
    bus_config,
};
use tokio_util::sync::CancellationToken;

use super::{Seen, WAIT, dispatcher};

fn quorum(cx: &str, delivery_limit: u32) -> BusConfig {
    BusConfig {
        queue_type: QueueType::Quorum,
        delivery_limit,
        ..bus_config(cx)
    }
}

#[tokio::test]
async fn quorum_queues_are_declared_as_such_and_exclusive_ones_stay_classic() {
    let cx = TestExchange::new("qq-declare");
    let broker = Broker::connect(quorum(&cx, 20), format!("{cx}:s"), WAIT)
        .await
        .expect("connect");
    let server = RpcServer::start(
        broker.clone(),
        ServerOptions::topic("t").with_server("s1").with_fanout(),
        dispatcher("s1", Seen::default()),
        CancellationToken::new(),
    )
    .expect("start");
    server.wait_ready(WAIT).await.expect("ready");
    // A call makes the client's reply queue.
    let client = RpcClient::new(broker.clone());
    let _: scoria_tests::msg::Echo = client
        .call(
            &super::ctx(),
            &Target::topic("t").expect("target"),
            "echo",
            &super::echo(1),
        )
        .await
        .expect("call");

    let rows = BrokerAccess::machine().queues(&cx).await.expect("list");
    let kind = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no queue {name} in {rows:#?}"))
    };
    for durable in [
        format!("{cx}.t"),
        format!("{cx}.t.s1"),
        format!("{cx}.notifications.info"),
        format!("{cx}.notifications.error"),
    ] {
        let row = kind(&durable);
        assert_eq!(row.kind, "quorum", "{row:?}");
        assert!(
            row.arguments.contains("x-delivery-limit") && row.arguments.contains("20"),
            "{row:?}"
        );
        assert!(row.arguments.contains(&format!("{cx}.dlx")), "{row:?}");
    }
    for bounded in ["notifications.info", "notifications.error"] {
        let row = kind(&format!("{cx}.{bounded}"));
        assert!(
            row.arguments.contains("x-max-length") && row.arguments.contains("x-message-ttl"),
            "a quorum notification queue is still bounded: {row:?}"
        );
    }
    assert_eq!(kind(&format!("{cx}.dead")).kind, "quorum");
    let exclusive: Vec<_> = rows
        .iter()
        .filter(|r| r.name.contains(".fanout.") || r.name.starts_with(&format!("{cx}.reply.")))
        .collect();
    assert_eq!(exclusive.len(), 2, "a fanout and a reply queue: {rows:#?}");
    assert!(
        exclusive.iter().all(|r| r.kind == "classic"),
        "exclusive queues stay classic: {exclusive:#?}"
    );
    server.shutdown().await;
    broker.close().await;
}

#[tokio::test]
async fn a_message_redelivered_past_the_limit_is_dead_lettered() {
    let cx = TestExchange::new("qq-limit");
    const LIMIT: u32 = 3;
    let broker = Broker::connect(quorum(&cx, LIMIT), format!("{cx}:s"), WAIT)
        .await
        .expect("connect");
    server::declare_work_queue(&broker, &Target::topic("t").expect("target"))
        .await
        .expect("declare");

    // A consumer that dies with the message every time (here: gives it back).
    let conn = BrokerAccess::machine()
        .connect()
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            cx.name().into(),
            "t".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"poison",
            BasicProperties::default()
                .with_type("record".into())
                .with_message_id("poison-1".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let mut consumer = channel
        .basic_consume(
            format!("{cx}.t").as_str().into(),
            "looper".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let dead = format!("{cx}.dead");
    let mut deliveries = 0u32;
    let deadline = Instant::now() + WAIT;
    let dead_letter = loop {
        assert!(
            Instant::now() < deadline,
            "the message was delivered {deliveries} times and never dead-lettered"
        );
        if let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            deliveries += 1;
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .expect("nack");
        }
        if let Some(got) = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            break got;
        }
    };
    assert_eq!(dead_letter.delivery.data, b"poison");
    assert_eq!(
        dead_letter
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        Some("poison-1".to_owned())
    );
    assert!(
        (LIMIT..=LIMIT + 1).contains(&deliveries),
        "delivered {deliveries} times with a delivery limit of {LIMIT}"
    );
    // Not looping any more: the work queue is empty.
    let left = channel
        .basic_get(
            format!("{cx}.t").as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .expect("get");
    assert!(left.is_none(), "still in the work queue: {left:?}");
    let _ = conn.close(200, "done".into()).await;
    broker.close().await;
}

#[tokio::test]
async fn switching_the_type_of_an_existing_queue_is_refused_with_what_to_do() {
    let cx = TestExchange::new("qq-switch");
    let classic = Broker::connect(bus_config(&cx), format!("{cx}:classic"), WAIT)
        .await
        .expect("connect");
    server::declare_work_queue(&classic, &Target::topic("scheduler").expect("target"))
        .await
        .expect("declare classic");
    classic.close().await;

    // The library: the server's wait_ready fails at once, saying what to do;
    // the connection itself is up (the notification queues stay as they are).
    let wanted = Broker::connect(quorum(&cx, 20), format!("{cx}:quorum"), WAIT)
        .await
        .expect("a mismatched notification queue does not stop the connection");
    let server = RpcServer::start(
        wanted.clone(),
        ServerOptions::topic("scheduler"),
        dispatcher("s", Seen::default()),
        CancellationToken::new(),
    )
    .expect("start");
    let started = Instant::now();
    let err = server.wait_ready(WAIT).await.expect_err("must be refused");
    assert!(
        started.elapsed() < WAIT,
        "refused only by the timeout: {err}"
    );
    let queue = format!("{cx}.scheduler");
    let msg = err.to_string();
    assert!(matches!(err, RpcError::QueueMismatch(_)), "{err:?}");
    for needle in [
        format!("queue {queue} is a classic queue"),
        "SCORIA_RPC_QUEUE_TYPE asks for quorum".to_owned(),
        format!("rabbitmqctl delete_queue {queue}"),
        "SCORIA_RPC_QUEUE_TYPE=classic back".to_owned(),
    ] {
        assert!(msg.contains(&needle), "{needle:?} not in {msg}");
    }
    server.shutdown().await;
    wanted.close().await;

    // A real service: the scheduler fails its start with that message.
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("scheduler.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = tokio::process::Command::new(scoria_tests::stack::binary("scoria-scheduler"))
        .env("SCORIA_AMQP_URL", scoria_tests::amqp_url())
        .env("SCORIA_CONTROL_EXCHANGE", cx.name())
        .env("SCORIA_RPC_QUEUE_TYPE", "quorum")
        .env(
            "SCORIA_RPC_QUEUE_EXPIRY_MS",
            scoria_tests::QUEUE_EXPIRY_MS.to_string(),
        )
        .env(
            "SCORIA_DATABASE_URL",
            format!("sqlite://{}/scoria.db", dir.path().display()),
        )
        .env("SCORIA_DATA_DIR", dir.path())
        .env("SCORIA_SCHEDULER_STARTUP_WAIT_MS", "0")
        .env("RUST_LOG", "info,lapin=warn")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("start scoria-scheduler");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the scheduler kept running with a queue of the other type")
        .expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "exit {status}\n{text}");
    assert!(
        text.contains(&format!("queue {queue} is a classic queue"))
            && text.contains(&format!("rabbitmqctl delete_queue {queue}")),
        "the log does not say what to do:\n{text}"
    );
    // The notification queues stay as they are, the log names their type.
    assert!(
        text.contains(&format!("queue {cx}.notifications.info is a classic queue")),
        "{text}"
    );
}
