//! Notifications cost what the operator chooses (`SCORIA_NOTIFICATIONS`), and the
//! queues nobody reads stay bounded: a length limit that drops the oldest events
//! and a message TTL, by default; an older unbounded queue is kept as it is and
//! the service says what to do.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, Consumer,
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use prost::Message;
use scoria_proto::{rpc::Notification, v1 as pb};
use scoria_tests::{
    QUEUE_EXPIRY_MS, amqp_url,
    stack::{DbKind, Stack},
};
use tokio::process::Command;

/// Creates a 1 GiB volume in project `p1` and waits until it is available.
async fn create_available(stack: &Stack, name: &str) -> String {
    let volume = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            name: name.into(),
            size_gib: 1,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    stack
        .wait_status("p1", &volume.id, pb::VolumeStatus::Available)
        .await;
    volume.id
}

/// `(arguments, messages)` of queue `name`, as `rabbitmqctl list_queues` shows them.
async fn queue_row(name: &str) -> Option<(String, u64)> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-p", "/", "name", "arguments", "messages"])
        .args(["--no-table-headers", "-q"])
        .output()
        .await
        .expect("rabbitmqctl (it comes with rabbitmq-server)");
    assert!(out.status.success(), "rabbitmqctl list_queues failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let mut cols = line.split('\t');
            (cols.next()? == name).then(|| {
                let args = cols.next().unwrap_or_default().to_owned();
                let messages = cols.next().and_then(|m| m.trim().parse().ok()).unwrap_or(0);
                (args, messages)
            })
        })
}

/// Polls until queue `name` holds `want` messages (the broker's counts lag a
/// little behind); panics with the last count after `within`.
async fn wait_messages(name: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let count = queue_row(name).await.map(|(_, m)| m);
        if count == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {name} holds {count:?} messages, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the test broker")
}

/// An exclusive queue of the test's own, bound to every notification of the stack.
async fn tap(connection: &Connection, stack: &Stack) -> (Channel, Consumer) {
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare tap");
    channel
        .queue_bind(
            queue.name().as_str().into(),
            format!("{}.notifications", stack.exchange).as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind tap");
    let consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume tap");
    (channel, consumer)
}

/// The `(event_type, delivery_mode)` of every notification arriving within `within`.
async fn drain(consumer: &mut Consumer, within: Duration) -> Vec<(String, u8)> {
    let mut seen = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(within, consumer.next()).await {
        let delivery = delivery.expect("delivery");
        let event = Notification::decode(delivery.data.as_slice()).expect("a Notification");
        let mode = delivery.properties.delivery_mode().unwrap_or(0);
        seen.push((event.event_type, mode));
    }
    seen
}

#[tokio::test]
async fn notification_queues_are_bounded_by_default() {
    let stack = Stack::start(DbKind::Sqlite).await;
    for priority in ["info", "error"] {
        let name = format!("{}.notifications.{priority}", stack.exchange);
        let (args, _) = queue_row(&name).await.expect("the queue is declared");
        assert!(
            args.contains("x-max-length") && args.contains("100000"),
            "{args}"
        );
        assert!(
            args.contains("x-message-ttl") && args.contains("86400000"),
            "{args}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_events() {
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_NOTIFICATION_QUEUE_MAX_LENGTH", "3")],
    )
    .await;
    let connection = connect().await;
    let (_channel, mut all) = tap(&connection, &stack).await;
    for n in 0..3 {
        create_available(&stack, &format!("v{n}")).await;
    }
    let published = drain(&mut all, Duration::from_secs(1)).await;
    assert!(published.len() >= 6, "{published:?}");
    let queue = format!("{}.notifications.info", stack.exchange);
    wait_messages(&queue, 3, Duration::from_secs(10)).await;

    // What stays is the newest: the last published events, in order.
    let channel = connection.create_channel().await.expect("channel");
    let mut kept = channel
        .basic_consume(
            queue.as_str().into(),
            "reader".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let kept = drain(&mut kept, Duration::from_millis(500)).await;
    assert_eq!(kept, published[published.len() - 3..].to_vec());
}

#[tokio::test]
async fn unread_events_expire_after_the_ttl() {
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[("SCORIA_NOTIFICATION_QUEUE_TTL_MS", "300")],
    )
    .await;
    let connection = connect().await;
    let (_channel, mut all) = tap(&connection, &stack).await;
    create_available(&stack, "v").await;
    assert!(!drain(&mut all, Duration::from_millis(500)).await.is_empty());
    // Nobody reads the durable queue: its events are gone after the TTL.
    let queue = format!("{}.notifications.info", stack.exchange);
    wait_messages(&queue, 0, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn off_publishes_nothing_and_declares_no_queue() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_NOTIFICATIONS", "off")]).await;
    let connection = connect().await;
    let (_channel, mut all) = tap(&connection, &stack).await;
    let id = create_available(&stack, "v").await;
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .expect("delete");
    stack.wait_volume_gone("p1", &id).await;
    let seen = drain(&mut all, Duration::from_secs(1)).await;
    assert!(
        seen.is_empty(),
        "published with notifications off: {seen:?}"
    );
    for priority in ["info", "error"] {
        let name = format!("{}.notifications.{priority}", stack.exchange);
        assert_eq!(queue_row(&name).await, None, "{name} declared");
    }
}

#[tokio::test]
async fn transient_events_are_published_but_not_persistent() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_NOTIFICATIONS", "transient")]).await;
    let connection = connect().await;
    let (_channel, mut all) = tap(&connection, &stack).await;
    create_available(&stack, "v").await;
    let seen = drain(&mut all, Duration::from_secs(1)).await;
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        types.contains(&"volume.create.start") && types.contains(&"volume.create.end"),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(_, mode)| *mode == 1), "{seen:?}");

    // The default, for contrast: persistent.
    let persistent = Stack::start(DbKind::Sqlite).await;
    let (_channel, mut all) = tap(&connection, &persistent).await;
    create_available(&persistent, "v").await;
    let seen = drain(&mut all, Duration::from_secs(1)).await;
    assert!(
        !seen.is_empty() && seen.iter().all(|(_, mode)| *mode == 2),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_older_unbounded_queue_is_kept_and_explained() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    // What an older release declared: no bounds (only the test runs' expiry).
    let queue = format!("{}.notifications.info", stack.exchange);
    let connection = connect().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the bounded queue");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongLongInt(QUEUE_EXPIRY_MS as i64),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .expect("declare it unbounded");
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{}.notifications", stack.exchange).as_str().into(),
            "notifications.info".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    // A restarted service meets it, keeps it and says what to do.
    stack.stop_service("scoria-volume").await;
    stack.start_service("scoria-volume").await;
    create_available(&stack, "v").await;
    let log = std::fs::read_to_string(stack.log_path("scoria-volume")).expect("log");
    assert!(
        log.contains("notification queue exists with other arguments")
            && log.contains(&format!("rabbitmqctl delete_queue {queue}")),
        "{log}"
    );
    let (args, messages) = queue_row(&queue).await.expect("the queue is still there");
    assert!(!args.contains("x-max-length"), "{args}");
    assert!(messages >= 1, "the events still arrive: {messages}");
}
