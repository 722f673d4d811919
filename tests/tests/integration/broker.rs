//! Tests leave nothing on the shared broker: a stack, terminated or dropped,
//! deletes every exchange and queue named after its control exchange, and so
//! does a bus-level test's [`TestExchange`]. Checked with `rabbitmqctl
//! list_exchanges name` / `list_queues name`.

use std::time::Duration;

use scoria_common::rpc::Broker;
use scoria_tests::{
    broker::{BrokerObjects, TestExchange, broker_objects},
    bus_config,
    stack::{DbKind, Stack},
};

use crate::support::{create, pb, sized};

/// What the broker holds under `cx`.
async fn objects(cx: &str) -> BrokerObjects {
    broker_objects(cx).await.expect("rabbitmqctl lists")
}

/// Starts a stack and makes a volume (so the scheduler's and the volume
/// service's queues exist, and a notification was published).
async fn busy_stack() -> Stack {
    let stack = Stack::start(DbKind::Sqlite).await;
    let id = create(&stack, "p1", sized(1)).await.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    stack
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_leaves_no_exchange_or_queue_behind() {
    // Terminated.
    let mut stack = busy_stack().await;
    let cx = stack.exchange.clone();
    let reader = Broker::connect(bus_config(&cx), "reader", Duration::from_secs(10))
        .await
        .expect("broker");
    let during = objects(&cx).await;
    for exchange in [cx.clone(), format!("{cx}.reply"), format!("{cx}.dlx")] {
        assert!(
            during.exchanges.contains(&exchange),
            "no {exchange} while the stack runs: {during:?}"
        );
    }
    let volume_queue = format!("{cx}.volume.{}", stack.volume_host);
    for queue in [
        format!("{cx}.scheduler"),
        volume_queue,
        format!("{cx}.dead"),
    ] {
        assert!(
            during.queues.contains(&queue),
            "no {queue} while the stack runs: {during:?}"
        );
    }
    reader.close().await;
    for (name, code) in stack.terminate().await {
        assert_eq!(code, Some(0), "{name}\n{}", stack.logs());
    }
    assert_eq!(
        objects(&cx).await,
        BrokerObjects::default(),
        "left by a terminated stack"
    );
    drop(stack);

    // Dropped while running (a failing test's end).
    let stack = busy_stack().await;
    let cx = stack.exchange.clone();
    assert!(!objects(&cx).await.is_empty());
    drop(stack);
    assert_eq!(
        objects(&cx).await,
        BrokerObjects::default(),
        "left by a dropped stack"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_exchange_deletes_its_objects_when_dropped() {
    let cx = TestExchange::new("cleanup");
    let name = cx.to_string();
    let broker = Broker::connect(bus_config(&cx), "declarer", Duration::from_secs(10))
        .await
        .expect("broker");
    broker.close().await;
    let declared = objects(&name).await;
    assert!(
        declared.exchanges.contains(&name),
        "the base topology is declared: {declared:?}"
    );
    drop(cx);
    assert_eq!(objects(&name).await, BrokerObjects::default());
}
