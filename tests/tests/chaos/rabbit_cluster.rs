//! A RabbitMQ node lost mid-burst, on a 3-node cluster of the test's own with
//! quorum queues: the stack (PostgreSQL) knows all three addresses and starts
//! on the first node, so that node leads the scheduler's and the volume
//! service's queues. It is stopped while creates arrive. Every create the API
//! confirmed completes, each volume ends `available` or `error`, none is lost
//! or made twice, and every service reconnects to the other nodes by itself.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use scoria_common::model::VolumeStatus;
use scoria_tests::{
    fixtures::rabbit_cluster::RabbitCluster,
    stack::{DbKind, Stack, StackOptions},
};

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial, volumes};

const BURST: usize = 30;
/// How long a create may be retried (same key) while the node's loss is
/// being ridden out.
const CREATE_WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn the_node_leading_the_queues_stops_mid_burst_and_nothing_is_lost() {
    let _serial = serial().await;
    let mut cluster = tokio::task::spawn_blocking(|| RabbitCluster::start(3))
        .await
        .expect("join")
        .expect("a 3-node RabbitMQ cluster");
    let urls = cluster.amqp_urls().join(",");
    let mut env: Vec<(&str, &str)> = CHAOS_ENV.to_vec();
    env.extend([
        ("SCORIA_AMQP_URL", urls.as_str()),
        ("SCORIA_RPC_QUEUE_TYPE", "quorum"),
        ("SCORIA_AMQP_HEARTBEAT_SECS", "5"),
    ]);
    let stack = Stack::start_options(
        DbKind::Postgres,
        &env,
        StackOptions {
            broker: Some(cluster.access()),
            ..StackOptions::default()
        },
    )
    .await;
    enforce_quota(&stack).await;
    let api = Api::new(&stack);

    // Both work queues are quorum queues led by one node: the one to stop.
    let access = cluster.access();
    let scheduler_queue = format!("{}.scheduler", stack.exchange);
    let volume_queue = format!("{}.volume.{}", stack.exchange, stack.volume_host);
    let queues = access.queues(&stack.exchange).await.expect("list queues");
    for queue in [&scheduler_queue, &volume_queue] {
        let row = queues
            .iter()
            .find(|q| &q.name == queue)
            .unwrap_or_else(|| panic!("no queue {queue}: {queues:#?}"));
        assert_eq!(row.kind, "quorum", "{row:?}");
    }
    let leaders = tokio::task::block_in_place(|| {
        (
            cluster.leader(&scheduler_queue, Duration::from_secs(30)),
            cluster.leader(&volume_queue, Duration::from_secs(30)),
        )
    });
    let victim = leaders.0.expect("scheduler queue leader");
    assert_eq!(
        leaders.1.expect("volume queue leader"),
        victim,
        "the scheduler's and the volume service's queues have different leaders"
    );

    let burst: Vec<_> = (0..BURST)
        .map(|n| {
            let api = api.clone();
            let key = request_id("node-lost", n);
            tokio::spawn(async move {
                let volume = api.create_retrying(1, &key, CREATE_WITHIN).await;
                (key, volume.id)
            })
        })
        .collect();
    // Stop the node once the burst is under way: some volumes are made, the
    // rest in flight, queued or not yet sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !volumes(&stack)
        .await
        .iter()
        .any(|v| v.status == VolumeStatus::Available)
    {
        assert!(
            Instant::now() < deadline,
            "no volume made before the node stopped\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = Instant::now();
    let name = cluster.nodes[victim].node.clone();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_node(victim);
        cluster
    })
    .await
    .expect("join");
    eprintln!("stopped {name} in {:?}", stopped_at.elapsed());

    let mut confirmed = Vec::new();
    for task in burst {
        confirmed.push(task.await.expect("create task"));
    }
    assert_settled(&stack).await;

    // Every confirmed create is one volume, none lost, none made twice.
    let rows = volumes(&stack).await;
    let ids: BTreeSet<&str> = confirmed.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), BURST, "two keys got one volume: {confirmed:?}");
    let row_ids: BTreeSet<&str> = rows.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        row_ids, ids,
        "the volumes in the database are not the confirmed creates"
    );
    let available = rows
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
        .count();
    eprintln!(
        "{available} of {BURST} available, {} error",
        BURST - available
    );

    // The services found the other nodes by themselves: each has a
    // connection on a node still running.
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != victim).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names: Vec<String> = others
            .iter()
            .flat_map(|i| {
                tokio::task::block_in_place(|| cluster.connection_names(*i)).unwrap_or_default()
            })
            .collect();
        let missing: Vec<&str> = ["scoria-api", "scoria-scheduler", "scoria-volume"]
            .into_iter()
            .filter(|binary| {
                !names
                    .iter()
                    .any(|n| n.contains(&format!("{}:{binary}@", stack.exchange)))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} not connected to the remaining nodes: {names:#?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stack.serving().await,
        "the API does not serve after the node loss"
    );
    // The queues live on, led by a node still running.
    let new_leader =
        tokio::task::block_in_place(|| cluster.leader(&scheduler_queue, Duration::from_secs(30)))
            .expect("a new leader");
    assert_ne!(new_leader, victim);
    drop(stack);
    drop(cluster);
}
