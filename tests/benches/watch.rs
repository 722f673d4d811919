//! The watch benchmark: many concurrent WatchVolume streams on one API instance
//! (release binaries, SQLite, `file` backend):
//! `cargo bench -p scoria-tests --bench watch` (1,000 watchers: 100 volumes x 10).
//!
//! Prints the API process's RSS and CPU time (from `/proc/<pid>/status` and
//! `/proc/<pid>/stat`) before the watchers, with them open and idle, and after
//! rounds of changes; and the latency from a change (UpdateVolume sent) to each
//! watcher seeing it (p50, p99, max over every watcher of every change), for
//! rounds that change every volume at once (16 UpdateVolume in flight) and for
//! single changes one after another (the feed's own latency).
//!
//! Under `cargo test --benches` (no `--bench` flag) it runs a smoke size (10
//! volumes x 10 watchers, 2 rounds).
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use scoria_proto::v1::{
    CreateVolumeRequest, ListVolumesRequest, UpdateVolumeRequest, VolumeStatus, WatchVolumeRequest,
};
use scoria_tests::stack::{Caller, Clients, DbKind, Stack, channel};

const PROJECT: &str = "bench";

/// RSS (KiB) and CPU time (user + system, ms) of `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    (rss, (ticks(14) + ticks(15)) * 10)
}

fn report(label: &str, pid: u32) -> (u64, u64) {
    let (rss, cpu) = usage(pid);
    println!(
        "{label:<32} RSS {:>8.1} MiB   CPU {:>8} ms",
        rss as f64 / 1024.0,
        cpu
    );
    (rss, cpu)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (volumes, per_volume, rounds) = if full { (100, 10, 5) } else { (10, 10, 2) };
    let stack = Stack::start_with(DbKind::Sqlite, &[("RUST_LOG", "warn")]).await;
    let api_pid = stack
        .pids()
        .into_iter()
        .find(|(name, _)| name == "scoria-api")
        .map(|(_, pid)| pid)
        .unwrap();
    let clients = stack.as_admin(PROJECT);

    // The volumes, available.
    let mut ids = Vec::new();
    for i in 0..volumes {
        let v = clients
            .volumes()
            .create_volume(CreateVolumeRequest {
                name: format!("w{i}"),
                size_gib: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(v.id);
    }
    let start = Instant::now();
    loop {
        let listed = clients
            .volumes()
            .list_volumes(ListVolumesRequest {
                page_size: 1000,
                status: VolumeStatus::Available as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if listed.volumes.len() == volumes {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "volumes not available"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let watchers = volumes * per_volume;
    println!(
        "watch bench: {volumes} volumes x {per_volume} watchers = {watchers} streams, {rounds} rounds"
    );
    let (rss0, cpu0) = report("before the watchers", api_pid);

    // The watchers: 10 HTTP/2 connections (a server caps streams per connection).
    let channels: Vec<_> = (0..10).map(|_| channel(&stack.api)).collect();
    // When each (volume, round) change was sent, and every watcher's latency.
    let sent: Arc<Mutex<HashMap<(String, usize), Instant>>> = Arc::default();
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<Duration>(watchers);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let opened = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(id, per_volume))
        .enumerate()
    {
        let client = Clients::new(channels[n % channels.len()].clone(), Caller::admin(PROJECT));
        let (id, sent, latencies) = (id.clone(), sent.clone(), latencies.clone());
        let (first_tx, seen_tx) = (first_tx.clone(), seen_tx.clone());
        tasks.spawn(async move {
            let asked = Instant::now();
            let mut stream = client
                .volumes()
                .watch_volume(WatchVolumeRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            stream.message().await.unwrap().unwrap();
            first_tx.send(asked.elapsed()).await.unwrap();
            while let Ok(Some(m)) = stream.message().await {
                let Some(volume) = m.volume else { continue };
                let Some(round) = volume.name.strip_prefix('r').and_then(|r| r.parse().ok()) else {
                    continue;
                };
                let at = sent.lock().unwrap().get(&(id.clone(), round)).copied();
                if let Some(at) = at {
                    let us = at.elapsed().as_micros() as u64;
                    latencies.lock().unwrap().record(us.max(1)).unwrap();
                    let _ = seen_tx.send(round);
                }
            }
        });
    }
    let mut first = Histogram::<u64>::new(3).unwrap();
    for _ in 0..watchers {
        let took = first_rx.recv().await.unwrap();
        first.record(took.as_micros().max(1) as u64).unwrap();
    }
    println!(
        "{watchers} streams open in {:.2}s; first message p50 {:.1} ms, p99 {:.1} ms",
        opened.elapsed().as_secs_f64(),
        first.value_at_quantile(0.5) as f64 / 1000.0,
        first.value_at_quantile(0.99) as f64 / 1000.0
    );
    let (_, cpu_open) = report("watchers open", api_pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, cpu1) = report("watchers open, idle 2s", api_pid);

    for round in 0..rounds {
        let started = Instant::now();
        stream::iter(ids.iter().cloned())
            .for_each_concurrent(16, |id| {
                let (client, sent) = (clients.volumes(), sent.clone());
                async move {
                    sent.lock()
                        .unwrap()
                        .insert((id.clone(), round), Instant::now());
                    let mut client = client;
                    client
                        .update_volume(UpdateVolumeRequest {
                            id,
                            name: format!("r{round}"),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["name".into()],
                            }),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            })
            .await;
        let mut got = 0;
        while got < watchers {
            let r = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
                .await
                .expect("every watcher sees every change")
                .unwrap();
            if r == round {
                got += 1;
            }
        }
        println!(
            "round {round}: {volumes} updates seen by all {watchers} watchers in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let (rss2, cpu2) = report("after the rounds", api_pid);
    let h = latencies.lock().unwrap().clone();
    println!(
        "change -> watcher latency over {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    println!(
        "RSS per watcher: {:.1} KiB; CPU to open them: {} ms; idle with them: {} ms in 2s; \
         CPU per change fanned out to {per_volume}: {:.2} ms",
        (rss1.saturating_sub(rss0)) as f64 / watchers as f64,
        cpu_open.saturating_sub(cpu0),
        cpu1.saturating_sub(cpu_open),
        cpu2.saturating_sub(cpu1) as f64 / (volumes * rounds) as f64
    );
    let _ = rss2;

    // One change at a time: the latency of the feed alone, no write queue.
    latencies.lock().unwrap().reset();
    let singles = if full { 50 } else { 5 };
    for k in 0..singles {
        let round = rounds + k;
        let id = ids[k % ids.len()].clone();
        sent.lock()
            .unwrap()
            .insert((id.clone(), round), Instant::now());
        clients
            .volumes()
            .update_volume(UpdateVolumeRequest {
                id,
                name: format!("r{round}"),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut got = 0;
        while got < per_volume {
            let r = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
                .await
                .expect("every watcher sees the change")
                .unwrap();
            if r == round {
                got += 1;
            }
        }
    }
    let h = latencies.lock().unwrap().clone();
    println!(
        "one change at a time ({singles} changes x {per_volume} watchers): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    tasks.abort_all();
}
