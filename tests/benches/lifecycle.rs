//! The lifecycle benchmark against the real stack (release binaries, SQLite,
//! `file` backend): `cargo bench -p scoria-tests --bench lifecycle`.
//!
//! Prints: create -> available for N volumes with 10 concurrent clients
//! (volumes/s, p50, p99); the same with 1 client (p50); delete -> gone with 10
//! clients (volumes/s); attach (an NBD export up) and detach with 10 clients
//! (attachments/s, p50); ListVolumes of N (p50); CPU-ms per create summed over the
//! three processes. "Available" and "gone" are observed on the notification queue
//! (`volume.create.end` / `volume.delete.end`), so the bench does not poll.
//!
//! Last, the cost of the quota check, in one run on one stack: rounds of creates
//! (10 clients) alternate between a project whose limits are all -1 (quota off:
//! the stack's defaults) and one with finite limits never reached (quota on:
//! UpdateQuota `volumes` 1000000, `gigabytes` 100000000, so every create reads
//! the project's usage and checks it), in the order off, on, on, off, off, on ...
//! (a drift of the machine falls on both alike); each round's volumes are
//! deleted before the next. Prints both create rates (all rounds together), the
//! relative cost in percent (and the median of the per-pair costs), and CPU-ms
//! per create in each mode. Usage accounting (the triggers, the project's lock
//! row) runs in both modes: what differs is the limit check.
//!
//! With `SCORIA_BENCH_INSTANCES=1` it runs instead the comparison of instances
//! on PostgreSQL (`SCORIA_TEST_DATABASE_URL`), queues of the fleet's type
//! (`stack::QUEUE_TYPE`): two stacks side by side, one of 1 API + 1 scheduler
//! and one of 2 API + 2 schedulers (one volume service each), rounds of creates
//! (10 clients, spread over the stack's APIs) in the order 1, 2, 2, 1 (twice
//! each, interleaved, so a drift of the machine falls on both); prints each
//! round's create -> available rate and the CPU-ms per create of every process.
//!
//! Under `cargo test --benches` (no `--bench` flag) it runs a small smoke size.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use prost::Message;
use scoria_common::rpc::{Broker, Priority, notifier::NotificationReader};
use scoria_proto::v1::{
    Connector, CreateAttachmentRequest, CreateSnapshotRequest, CreateVolumeRequest,
    DeleteAttachmentRequest, DeleteSnapshotRequest, DeleteVolumeRequest, ListVolumesRequest,
    Snapshot, Volume,
};
use scoria_tests::{
    bus_config,
    stack::{DbKind, QUEUE_TYPE, Stack, Volumes},
};

/// When each (event type, volume id) notification arrived, and a wake-up for waiters.
#[derive(Default)]
struct Seen {
    at: Mutex<HashMap<(String, String), Instant>>,
    changed: tokio::sync::Notify,
}

type Waiters = Arc<Seen>;

/// Reads the stack's logs, for failure messages.
static LOGS: std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>> =
    std::sync::OnceLock::new();

/// The project of every bench volume (but the quota comparison's).
const PROJECT: &str = "bench";

/// The quota comparison's project without limits (the stack's defaults: -1).
const PROJECT_QUOTA_OFF: &str = "bench-quota-off";
/// The quota comparison's project with [`QUOTA_ON`] as its limits.
const PROJECT_QUOTA_ON: &str = "bench-quota-on";
/// Limits that are checked on every create but never reached.
const QUOTA_ON: &[(&str, i64)] = &[("volumes", 1_000_000), ("gigabytes", 100_000_000)];

/// Records `volume.*.end` notifications as they arrive.
async fn watch_notifications(broker: Broker, seen: Waiters) {
    let mut reader = NotificationReader::open(&broker, Priority::Info)
        .await
        .unwrap();
    loop {
        let Ok(Some(n)) = reader.next(Duration::from_secs(3600)).await else {
            break;
        };
        let Some(payload) = n.payload else { continue };
        let id = if payload.type_url.ends_with(".Snapshot") {
            Snapshot::decode(payload.value.as_ref()).map(|s| s.id)
        } else {
            Volume::decode(payload.value.as_ref()).map(|v| v.id)
        };
        let Ok(id) = id else {
            continue;
        };
        seen.at
            .lock()
            .unwrap()
            .insert((n.event_type, id), Instant::now());
        seen.changed.notify_waiters();
    }
}

/// Waits until the notification `event` of volume `id` has arrived; its time.
async fn arrival(seen: &Waiters, event: &str, id: &str) -> Instant {
    let key = (event.to_owned(), id.to_owned());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let notified = seen.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(at) = seen.at.lock().unwrap().get(&key) {
            return *at;
        }
        if Instant::now() >= deadline {
            let logs = LOGS.get().map(|f| f()).unwrap_or_default();
            panic!("no {event} for volume {id} within 30 s\n{logs}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}

/// Creates one volume and waits for it to be available; returns (id, latency).
async fn create_one(client: &mut Volumes, seen: &Waiters) -> (String, Duration) {
    let started = Instant::now();
    let volume = client
        .create_volume(CreateVolumeRequest {
            name: "bench".into(),
            size_gib: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let done = arrival(seen, "volume.create.end", &volume.id).await;
    (volume.id, done.saturating_duration_since(started))
}

/// Creates `count` volumes with 10 clients, each until available; their ids and
/// how long the round took.
async fn create_round(client: &Volumes, seen: &Waiters, count: usize) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let ids: Vec<String> = stream::iter(0..count)
        .map(|_| {
            let (mut client, seen) = (client.clone(), seen.clone());
            async move { create_one(&mut client, &seen).await.0 }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    (ids, started.elapsed())
}

/// Deletes `ids` with 10 clients, each until gone.
async fn delete_round(client: &Volumes, seen: &Waiters, ids: Vec<String>) {
    stream::iter(ids)
        .map(|id| {
            let (mut client, seen) = (client.clone(), seen.clone());
            async move {
                client
                    .delete_volume(DeleteVolumeRequest { id: id.clone() })
                    .await
                    .unwrap();
                arrival(&seen, "volume.delete.end", &id).await;
            }
        })
        .buffer_unordered(10)
        .collect::<Vec<()>>()
        .await;
}

/// The median of `values` (not empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// The create rate with the quota check on against off (see the module docs):
/// `pairs` pairs of rounds of `per_round` creates.
async fn quota_comparison(stack: &Stack, seen: &Waiters, pairs: usize, per_round: usize) {
    stack.set_quota(PROJECT_QUOTA_ON, QUOTA_ON).await;
    for (resource, limit) in QUOTA_ON {
        let (_, _, on) = stack.quota_usage(PROJECT_QUOTA_ON, resource).await;
        let (_, _, off) = stack.quota_usage(PROJECT_QUOTA_OFF, resource).await;
        assert_eq!((off, on), (-1, *limit), "the limits of {resource}");
    }
    const MODES: [&str; 2] = ["off", "on"];
    let clients = [
        stack.as_admin(PROJECT_QUOTA_OFF).volumes(),
        stack.as_admin(PROJECT_QUOTA_ON).volumes(),
    ];
    // Warm up both projects (their usage and lock rows exist from here on).
    for client in &clients {
        let (ids, _) = create_round(client, seen, 10).await;
        delete_round(client, seen, ids).await;
    }
    let pids = stack.pids();
    let mut elapsed = [Duration::ZERO; 2];
    let mut cpu = [0.0; 2];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..2 * pairs {
        // off, on, on, off, off, on, ...
        let mode = [0, 1, 1, 0][round % 4];
        let cpu_before = cpu_ms(&pids);
        let (ids, took) = create_round(&clients[mode], seen, per_round).await;
        cpu[mode] += cpu_ms(&pids) - cpu_before;
        elapsed[mode] += took;
        rates[mode].push(per_round as f64 / took.as_secs_f64());
        delete_round(&clients[mode], seen, ids).await;
    }
    let rate = |mode: usize| (pairs * per_round) as f64 / elapsed[mode].as_secs_f64();
    let cost = |off: f64, on: f64| (1.0 - on / off) * 100.0;
    // Rounds 2k and 2k + 1 are the k-th of each mode.
    let mut pair_costs: Vec<f64> = (0..pairs).map(|k| cost(rates[0][k], rates[1][k])).collect();
    println!(
        "quota   create {:.0} volumes/s with the quota check on, {:.0} volumes/s off \
         ({pairs} pairs of rounds of {per_round} creates, interleaved, 10 clients): \
         the check costs {:.1}% of the create throughput (median per pair {:.1}%)",
        rate(1),
        rate(0),
        cost(rate(0), rate(1)),
        median(&mut pair_costs)
    );
    let total = (pairs * per_round) as f64;
    println!(
        "quota   cpu {:.2} CPU-ms per create on, {:.2} off (api + scheduler + volume)",
        cpu[1] / total,
        cpu[0] / total
    );
    for (mode, name) in MODES.iter().enumerate() {
        let rounds: Vec<String> = rates[mode].iter().map(|r| format!("{r:.0}")).collect();
        println!("quota   {name} rounds: {} volumes/s", rounds.join(" "));
    }
    // Every round's volumes are gone again, and the usage says so.
    for project in [PROJECT_QUOTA_OFF, PROJECT_QUOTA_ON] {
        let (in_use, reserved, _) = stack.quota_usage(project, "volumes").await;
        assert_eq!((in_use, reserved), (0, 0), "volumes of {project}");
    }
    stack.assert_quota_exact().await;
}

fn cpu_ms(pids: &[(String, u32)]) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    pids.iter()
        .map(|(_, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or_default();
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (utime + stime) / ticks * 1000.0
        })
        .sum()
}

fn ms(d: u64) -> String {
    format!("{:.2} ms", d as f64 / 1000.0)
}

/// Creates `count` volumes with 10 clients spread over `clients` (one per API
/// instance), each until available; how long the round took.
async fn create_round_over(clients: &[Volumes], seen: &Waiters, count: usize) -> Duration {
    let started = Instant::now();
    let _: Vec<String> = stream::iter(0..count)
        .map(|n| {
            let (mut client, seen) = (clients[n % clients.len()].clone(), seen.clone());
            async move { create_one(&mut client, &seen).await.0 }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    started.elapsed()
}

/// CPU-ms of each process of `pids`.
fn cpu_each(pids: &[(String, u32)]) -> Vec<f64> {
    pids.iter()
        .map(|p| cpu_ms(std::slice::from_ref(p)))
        .collect()
}

/// 1 API + 1 scheduler against 2 API + 2 schedulers on PostgreSQL (module docs).
async fn instances_comparison(per_round: usize) {
    let env = [("RUST_LOG", "warn"), QUEUE_TYPE];
    let one = Stack::start_with(DbKind::Postgres, &env).await;
    let mut two = Stack::start_with(DbKind::Postgres, &env).await;
    two.start_scheduler_instance("b", &[]).await;
    let second_api = two.start_api_instance("b").await;
    let dirs = [one.dir.path().to_path_buf(), two.dir.path().to_path_buf()];
    let _ = LOGS.set(Box::new(move || format!("logs in {dirs:?}")));
    let mut setups = Vec::new();
    for (stack, apis) in [
        (&one, vec![one.api.clone()]),
        (&two, vec![two.api.clone(), second_api]),
    ] {
        let broker = Broker::connect(
            bus_config(&stack.exchange),
            "bench-reader",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let seen: Waiters = Arc::default();
        let watcher = tokio::spawn(watch_notifications(broker.clone(), seen.clone()));
        let clients: Vec<Volumes> = apis
            .iter()
            .map(|addr| {
                scoria_tests::stack::Clients::new(
                    scoria_tests::stack::channel(addr),
                    scoria_tests::stack::Caller::admin(PROJECT),
                )
                .volumes()
            })
            .collect();
        // Warm up (connections, the project's rows).
        create_round_over(&clients, &seen, 20).await;
        setups.push((stack, clients, seen, broker, watcher));
    }
    let names = ["1 API + 1 scheduler", "2 API + 2 schedulers"];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..4 {
        let which = [0, 1, 1, 0][round];
        let (stack, clients, seen, _, _) = &setups[which];
        let pids = stack.pids();
        let before = cpu_each(&pids);
        let took = create_round_over(clients, seen, per_round).await;
        let after = cpu_each(&pids);
        let rate = per_round as f64 / took.as_secs_f64();
        rates[which].push(rate);
        let per_process: Vec<String> = pids
            .iter()
            .zip(before.iter().zip(&after))
            .map(|((name, _), (b, a))| {
                format!(
                    "{name} {:.2} CPU-ms/create ({:.0}% of a core)",
                    (a - b) / per_round as f64,
                    (a - b) / took.as_secs_f64() / 10.0
                )
            })
            .collect();
        println!(
            "instances round {round}: {} {rate:.0} volumes/s create -> available ({per_round} creates, 10 clients); {}",
            names[which],
            per_process.join(", ")
        );
    }
    for (which, name) in names.iter().enumerate() {
        let shown: Vec<String> = rates[which].iter().map(|r| format!("{r:.0}")).collect();
        println!("instances {name}: {} volumes/s", shown.join(", "));
    }
    for (_, _, _, broker, watcher) in setups {
        watcher.abort();
        broker.close().await;
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 200 } else { 20 };
    if std::env::var("SCORIA_BENCH_INSTANCES").is_ok_and(|v| v == "1") {
        instances_comparison(if full { 400 } else { 20 }).await;
        return;
    }
    let stack = Stack::start_with(DbKind::Sqlite, &[("RUST_LOG", "warn")]).await;
    let log_dir = stack.dir.path().to_path_buf();
    let _ = LOGS.set(Box::new(move || {
        ["scoria-api", "scoria-scheduler", "scoria-volume"]
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(log_dir.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {n} ---\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect()
    }));
    let broker = Broker::connect(
        bus_config(&stack.exchange),
        "bench-reader",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let waiters: Waiters = Arc::default();
    let watcher = tokio::spawn(watch_notifications(broker.clone(), waiters.clone()));
    // Every client speaks over the stack's one HTTP/2 channel, as an admin of
    // the bench project (the API's noauth default roles).
    let api = stack.as_admin(PROJECT);
    let client = api.volumes();

    // Warm up.
    for _ in 0..10 {
        create_one(&mut client.clone(), &waiters).await;
    }

    // create -> available, 10 clients
    let pids = stack.pids();
    let cpu_before = cpu_ms(&pids);
    let started = Instant::now();
    let results: Vec<(String, Duration)> = stream::iter(0..n)
        .map(|_| {
            let (mut client, waiters) = (client.clone(), waiters.clone());
            async move { create_one(&mut client, &waiters).await }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu_ms(&pids) - cpu_before;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for (_, latency) in &results {
        hist.record(latency.as_micros() as u64).unwrap();
    }
    println!(
        "create  {:.0} volumes/s with 10 clients ({n} volumes), p50 {} p99 {}",
        n as f64 / elapsed.as_secs_f64(),
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99))
    );
    println!(
        "cpu     {:.2} CPU-ms per create (api + scheduler + volume)",
        cpu / n as f64
    );

    // 1 client
    let mut single = Histogram::<u64>::new(3).unwrap();
    let mut singles = Vec::new();
    for _ in 0..(n / 4).max(10) {
        let (id, latency) = create_one(&mut client.clone(), &waiters).await;
        single.record(latency.as_micros() as u64).unwrap();
        singles.push(id);
    }
    println!(
        "create  p50 {} with 1 client",
        ms(single.value_at_quantile(0.5))
    );

    // ListVolumes of n
    let mut list = Histogram::<u64>::new(3).unwrap();
    let mut c = client.clone();
    for _ in 0..100 {
        let t = Instant::now();
        let page = c
            .list_volumes(ListVolumesRequest {
                page_size: n as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        list.record(t.elapsed().as_micros() as u64).unwrap();
        assert_eq!(page.volumes.len(), n);
    }
    println!(
        "list    p50 {} for {n} volumes",
        ms(list.value_at_quantile(0.5))
    );

    // snapshot-create -> available, then create-from-snapshot -> available, 10 clients
    let snapshots = api.snapshots();
    let sources: Vec<String> = results
        .iter()
        .take(n / 2)
        .map(|(id, _)| id.clone())
        .collect();
    let started = Instant::now();
    let snaps: Vec<(String, Duration)> = stream::iter(sources)
        .map(|volume_id| {
            let (mut client, seen) = (snapshots.clone(), waiters.clone());
            async move {
                let t = Instant::now();
                let snap = client
                    .create_snapshot(CreateSnapshotRequest {
                        volume_id,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let done = arrival(&seen, "snapshot.create.end", &snap.id).await;
                (snap.id, done.saturating_duration_since(t))
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let mut snap_hist = Histogram::<u64>::new(3).unwrap();
    for (_, latency) in &snaps {
        snap_hist.record(latency.as_micros() as u64).unwrap();
    }
    println!(
        "snapshot {:.0} snapshots/s with 10 clients ({} snapshots), p50 {}",
        snaps.len() as f64 / started.elapsed().as_secs_f64(),
        snaps.len(),
        ms(snap_hist.value_at_quantile(0.5))
    );
    let started = Instant::now();
    let restored: Vec<(String, Duration)> = stream::iter(snaps.iter().map(|(id, _)| id.clone()))
        .map(|snapshot_id| {
            let (mut client, seen) = (client.clone(), waiters.clone());
            async move {
                let t = Instant::now();
                let volume = client
                    .create_volume(CreateVolumeRequest {
                        size_gib: 1,
                        source: Some(scoria_proto::v1::create_volume_request::Source::SnapshotId(
                            snapshot_id,
                        )),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let done = arrival(&seen, "volume.create.end", &volume.id).await;
                (volume.id, done.saturating_duration_since(t))
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let mut restore_hist = Histogram::<u64>::new(3).unwrap();
    for (_, latency) in &restored {
        restore_hist.record(latency.as_micros() as u64).unwrap();
    }
    println!(
        "from-snapshot {:.0} volumes/s with 10 clients ({} volumes), p50 {}",
        restored.len() as f64 / started.elapsed().as_secs_f64(),
        restored.len(),
        ms(restore_hist.value_at_quantile(0.5))
    );
    // Out of the way of the delete figure: restored volumes, then snapshots.
    for (id, _) in &restored {
        let mut c = client.clone();
        c.delete_volume(DeleteVolumeRequest { id: id.clone() })
            .await
            .unwrap();
        arrival(&waiters, "volume.delete.end", id).await;
    }
    for (id, _) in &snaps {
        let mut c = snapshots.clone();
        c.delete_snapshot(DeleteSnapshotRequest { id: id.clone() })
            .await
            .unwrap();
        arrival(&waiters, "snapshot.delete.end", id).await;
    }

    // attach (a qemu-nbd export started and answering) and detach, 10 clients
    let attachments = api.attachments();
    let m = if full { 50 } else { 5 };
    let started = Instant::now();
    let attached: Vec<(String, Duration)> = stream::iter(results.iter().take(m))
        .map(|(volume_id, _)| {
            let mut c = attachments.clone();
            let volume_id = volume_id.clone();
            async move {
                let t = Instant::now();
                let a = c
                    .create_attachment(CreateAttachmentRequest {
                        volume_id,
                        connector: Some(Connector {
                            host: "bench".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    a.connection_info.is_some(),
                    "attached without connection info"
                );
                (a.id, t.elapsed())
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let attach_elapsed = started.elapsed();
    let started = Instant::now();
    let detached: Vec<Duration> = stream::iter(attached.iter())
        .map(|(id, _)| {
            let mut c = attachments.clone();
            let id = id.clone();
            async move {
                let t = Instant::now();
                c.delete_attachment(DeleteAttachmentRequest { id })
                    .await
                    .unwrap();
                t.elapsed()
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let detach_elapsed = started.elapsed();
    let mut attach_hist = Histogram::<u64>::new(3).unwrap();
    for (_, latency) in &attached {
        attach_hist.record(latency.as_micros() as u64).unwrap();
    }
    let mut detach_hist = Histogram::<u64>::new(3).unwrap();
    for latency in &detached {
        detach_hist.record(latency.as_micros() as u64).unwrap();
    }
    println!(
        "attach  {:.0} attachments/s with 10 clients ({m}), p50 {} p99 {}; detach {:.0}/s, p50 {}",
        m as f64 / attach_elapsed.as_secs_f64(),
        ms(attach_hist.value_at_quantile(0.5)),
        ms(attach_hist.value_at_quantile(0.99)),
        m as f64 / detach_elapsed.as_secs_f64(),
        ms(detach_hist.value_at_quantile(0.5)),
    );

    // delete -> gone, 10 clients
    let started = Instant::now();
    stream::iter(results.into_iter().map(|(id, _)| id))
        .map(|id| {
            let (mut client, waiters) = (client.clone(), waiters.clone());
            async move {
                client
                    .delete_volume(DeleteVolumeRequest { id: id.clone() })
                    .await
                    .unwrap();
                arrival(&waiters, "volume.delete.end", &id).await;
            }
        })
        .buffer_unordered(10)
        .collect::<Vec<()>>()
        .await;
    println!(
        "delete  {:.0} volumes/s with 10 clients",
        n as f64 / started.elapsed().as_secs_f64()
    );

    // The quota check on against off.
    if full {
        quota_comparison(&stack, &waiters, 10, 300).await;
    } else {
        quota_comparison(&stack, &waiters, 1, 10).await;
    }
    watcher.abort();
    broker.close().await;
}
