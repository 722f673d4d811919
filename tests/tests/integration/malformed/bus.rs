//! Poison on every queue the services consume: garbage, unknown methods and
//! wrongly typed protobuf, published raw with `lapin`; each must be
//! dead-lettered, once.

use std::time::{Duration, Instant};

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use prost::Message;
use scoria_proto::bus::{CreateSnapshot, DetachResult, ScheduleCreateVolume};
use scoria_tests::stack::Stack;

use super::UNKNOWN_ID;

/// Publishes one raw message to `exchange` with `routing_key`.
async fn publish(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    method: &str,
    message_id: &str,
    body: &[u8],
) {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default()
                .with_type(method.into())
                .with_message_id(message_id.into())
                .with_content_type("application/x-protobuf".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirmation.is_ack(), "{message_id}: nacked");
    assert!(
        confirmation.take_message().is_none(),
        "{message_id}: no queue is bound to {exchange} {routing_key:?}"
    );
}

/// Publishes three poison messages to each of the scheduler's and the volume
/// service's queues and fanouts, and asserts every one lands in `<cx>.dead`.
pub(super) async fn poison_every_queue(stack: &Stack) {
    let cx = stack.exchange.clone();
    let conn = lapin::Connection::connect(
        &scoria_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    // Wrongly typed bodies: each one's field 1 or 2 has another wire type than
    // the method's message wants, so it cannot decode (a body that happens to
    // decode as the method's message is a valid request, not a poison one).
    let snapshot_body = CreateSnapshot {
        snapshot_id: UNKNOWN_ID.into(),
        volume_id: UNKNOWN_ID.into(),
    }
    .encode_to_vec();
    let schedule_body = ScheduleCreateVolume {
        volume_id: UNKNOWN_ID.into(),
        size_gib: 5,
        ..ScheduleCreateVolume::default()
    }
    .encode_to_vec();
    let detach_body = DetachResult { unexported: true }.encode_to_vec();
    let volume_key = format!("volume.{}", stack.volume_host);
    let scheduler_fanout = format!("{cx}.scheduler.fanout");
    let volume_fanout = format!("{cx}.volume.fanout");
    // (exchange, routing key, the method a wrongly typed body goes to, that body)
    let targets: [(&str, &str, &str, &[u8]); 4] = [
        (&cx, "scheduler", "create_volume", &snapshot_body),
        (&cx, &volume_key, "create_volume", &snapshot_body),
        (
            &scheduler_fanout,
            "",
            "update_service_capabilities",
            &schedule_body,
        ),
        (
            &volume_fanout,
            "",
            "publish_service_capabilities",
            &detach_body,
        ),
    ];
    let garbage: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x2a];
    let mut expected = Vec::new();
    for (exchange, key, method, typed) in targets {
        let tag = if key.is_empty() { exchange } else { key };
        for (kind, method, body) in [
            ("garbage", method, garbage),
            ("unknown", "no_such_method", &b"\x0a\x03abc"[..]),
            ("typed", method, typed),
        ] {
            let id = format!("malformed {tag} {kind}");
            publish(&channel, exchange, key, method, &id, body).await;
            expected.push(id);
        }
    }
    expected.sort();
    let dead = format!("{cx}.dead");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() && Instant::now() < deadline {
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(msg) => got.push(
                msg.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            ),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got.sort();
    assert_eq!(
        got,
        expected,
        "every poison message is dead-lettered, once\n{}",
        stack.logs()
    );
    let _ = conn.close(200, "done".into()).await;
}
