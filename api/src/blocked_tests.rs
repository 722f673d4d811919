//! Defect 1 against the real RabbitMQ: while the broker blocks publishers (a
//! memory alarm, AMQP `connection.blocked`) a CreateVolume answers UNAVAILABLE
//! within the publish timeout with nothing left behind, and health says
//! NOT_SERVING. The alarm is raised with `rabbitmqctl
//! set_vm_memory_high_watermark 0.0000001` for a few seconds and always lowered
//! again (a drop guard, so a panic restores it too). Needs
//! `SCORIA_TEST_AMQP_URL`; fails loudly without it.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use scoria_common::{
    rpc::{Broker, Names},
    status::{Reason, reason_of},
};
use scoria_proto::v1::volume_service_server::VolumeService;
use tonic::Code;
use tonic_health::ServingStatus;

use crate::{
    Config,
    ports::Ports,
    test_support::{self, Harness},
    tests::{Running, create_req, wait_health},
    volume::VolumeApi,
};

/// The watermark RabbitMQ runs with by default.
const DEFAULT_WATERMARK: &str = "0.4";
/// The publish timeout of this test's API.
const PUBLISH_TIMEOUT_MS: u64 = 1500;

/// Raises the memory alarm; lowers it again when dropped, even on a panic.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> Self {
        watermark("0.0000001");
        Self
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        watermark(DEFAULT_WATERMARK);
    }
}

fn watermark(value: &str) {
    let out = Command::new("rabbitmqctl")
        .args(["set_vm_memory_high_watermark", value])
        .output()
        .expect("rabbitmqctl must be installed for this test");
    assert!(
        out.status.success(),
        "rabbitmqctl set_vm_memory_high_watermark {value}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_blocked_broker_is_unavailable_and_not_serving() {
    let url = std::env::var("SCORIA_TEST_AMQP_URL").expect(
        "SCORIA_TEST_AMQP_URL must name the test broker (amqp://guest:guest@127.0.0.1:5672/%2f)",
    );
    let exchange = format!("scoria-blocked-{}", uuid::Uuid::new_v4().simple());
    let env: HashMap<String, String> = [
        ("SCORIA_AMQP_URL", url.as_str()),
        ("SCORIA_CONTROL_EXCHANGE", exchange.as_str()),
        ("SCORIA_RPC_PUBLISH_TIMEOUT_MS", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::load_from(None, &env).expect("config");
    let broker = Broker::start(config.bus.clone(), format!("{exchange}:scoria-api-test"));
    broker
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("the test broker must be reachable");
    let ports = Ports::amqp(&broker, "scoria-api.test");
    assert_eq!(
        ports.publish_timeout,
        Duration::from_millis(PUBLISH_TIMEOUT_MS)
    );

    // A scheduler queue, so casts are routable (nobody consumes it); exclusive,
    // so it goes with this connection.
    let peer = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = peer.create_channel().await.expect("channel");
    let queue = format!("{exchange}.scheduler");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "scheduler".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    let h = Harness::new().await;
    let db = h.db.db().clone();
    let api = VolumeApi::new(db.clone(), ports.clone(), 100);
    let running = Running::start_with(h, ports).await;
    let health = running.channel().await;
    wait_health(&health, ServingStatus::Serving).await;
    let ctx = test_support::ctx("p1", &["member"]);
    api.create_volume(test_support::request(&ctx, create_req()))
        .await
        .expect("a create before the alarm");

    let outcome = {
        let _alarm = MemoryAlarm::raise();
        let started = Instant::now();
        let result = api
            .create_volume(test_support::request(&ctx, create_req()))
            .await;
        let took = started.elapsed();
        // RabbitMQ blocks a publishing connection: the API sees it, health follows.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !broker.is_blocked() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let blocked = broker.is_blocked();
        wait_health(&health, ServingStatus::NotServing).await;
        (result, took, blocked)
    };
    let (result, took, blocked) = outcome;
    let status = result.expect_err("the broker blocks publishers");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        reason_of(&status),
        Some(Reason::BrokerUnavailable),
        "{status:?}"
    );
    assert!(
        took < Duration::from_millis(PUBLISH_TIMEOUT_MS * 2),
        "answered after {took:?}"
    );
    assert!(blocked, "the broker never reported connection.blocked");
    assert_eq!(
        db.count_volumes("p1").await.expect("count"),
        1,
        "only the first"
    );
    let workers = db
        .overdue_workers("scoria-scheduler", i64::MAX)
        .await
        .expect("workers");
    assert_eq!(workers.len(), 1, "only the first volume's: {workers:?}");

    // The alarm is gone: health recovers.
    wait_health(&health, ServingStatus::Serving).await;
    drop(running);
    broker.close().await;
    // Best effort: take this run's exchanges and queues away again.
    let names = Names::new(exchange.clone());
    for queue in [
        names.dead_letter_queue(),
        names.notifications_queue("info"),
        names.notifications_queue("error"),
    ] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for name in [
        names.topic_exchange().to_owned(),
        names.reply_exchange(),
        names.dead_letter_exchange(),
        names.notifications_exchange(),
    ] {
        let _ = channel
            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = peer.close(200, "done".into()).await;
}
