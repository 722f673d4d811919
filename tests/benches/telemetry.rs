//! What metrics and traces cost: `cargo bench -p scoria-tests --bench telemetry`
//! (release binaries, SQLite, `file` backend).
//!
//! Two stacks run side by side: one as shipped (no metrics listener, no OTLP
//! export) and one with every process serving `/metrics` (scraped every second,
//! all three processes, as a busy Prometheus would) and exporting every span to
//! an OTLP collector the bench runs itself. Rounds of creates (10 clients, create
//! then WatchVolume until available, then delete) alternate between the stacks in
//! the order off, on, on, off, off, on ... so a drift of the machine falls on both
//! alike, and only one stack works at a time. Prints both create rates (all rounds
//! together), the relative cost in percent, the median of the per-pair costs,
//! CPU-ms per create of the three services of each stack, and how many spans and
//! scrapes the "on" stack produced.
//!
//! `SCORIA_BENCH_TELEMETRY=metrics` or `=traces` turns on only one of the two in
//! the "on" stack (default: both), to tell their costs apart, and `=none` runs
//! two identical stacks (the bench's own bias and noise);
//! `SCORIA_BENCH_SAMPLE_RATIO=0.1` samples one trace in ten (the SDK's
//! `parentbased_traceidratio`, as an operator would run it) instead of all;
//! `SCORIA_BENCH_PAIRS` sets the number of pairs of rounds (default 10: a
//! short run, whose cost varies by several percent from run to run).
//!
//! Under `cargo test --benches` (no `--bench` flag) it runs a small smoke size.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use scoria_proto::v1::{
    CreateVolumeRequest, DeleteVolumeRequest, VolumeStatus, WatchVolumeRequest,
};
use scoria_tests::{
    otlp::Collector,
    stack::{DbKind, Stack, Volumes, http_get},
};

const PROJECT: &str = "bench";
/// Creates each stack does before the timed rounds.
const WARMUP: usize = 10;

/// Creates one volume and follows it on its watch stream until it is available.
async fn create_available(client: &mut Volumes) -> String {
    let id = client
        .create_volume(CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut stream = client
        .watch_volume(WatchVolumeRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = stream.next().await {
        let update = update.unwrap();
        let status = update.volume.map(|v| v.status()).unwrap_or_default();
        assert_ne!(status, VolumeStatus::Error, "volume {id} failed");
        if status == VolumeStatus::Available {
            return id;
        }
    }
    panic!("the watch of {id} ended before it was available");
}

/// A round of `count` creates with 10 clients; its duration. The volumes are
/// deleted afterwards (not timed), so each round starts from the same state.
async fn round(stack: &Stack, count: usize) -> Duration {
    let client = stack.volumes(PROJECT);
    let started = Instant::now();
    let ids: Vec<String> = stream::iter(0..count)
        .map(|_| {
            let mut client = client.clone();
            async move { create_available(&mut client).await }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    let elapsed = started.elapsed();
    stream::iter(ids)
        .map(|id| {
            let mut client = client.clone();
            async move {
                client
                    .delete_volume(DeleteVolumeRequest { id: id.clone() })
                    .await
                    .unwrap();
                // Followed on its watch stream, which ends once it is gone (polling
                // GetVolume would add spans the creates do not make).
                match client
                    .watch_volume(WatchVolumeRequest { id: id.clone() })
                    .await
                {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        while let Some(Ok(_)) = stream.next().await {}
                    }
                    Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
                }
                stack.wait_volume_gone(PROJECT, &id).await;
            }
        })
        .buffer_unordered(10)
        .collect::<Vec<()>>()
        .await;
    elapsed
}

/// CPU time (user + system) of the stack's processes, in ms.
/// CPU-ms each process of `stack` used so far, in the order of [`Stack::pids`].
fn cpu_ms(stack: &Stack) -> Vec<(String, f64)> {
    stack
        .pids()
        .into_iter()
        .map(|(name, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = after.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i - 3)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            // USER_HZ is 100 on Linux.
            (name, (ticks(14) + ticks(15)) * 10.0)
        })
        .collect()
}

/// Adds what each process used between `before` and `after` to `into`.
fn add_used(into: &mut Vec<(String, f64)>, before: &[(String, f64)], after: &[(String, f64)]) {
    for ((name, b), (_, a)) in before.iter().zip(after) {
        match into.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += a - b,
            None => into.push((name.clone(), a - b)),
        }
    }
}

fn sum(used: &[(String, f64)]) -> f64 {
    used.iter().map(|(_, ms)| ms).sum()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let pairs = std::env::var("SCORIA_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (pairs, per_round) = if full { (pairs, 200) } else { (1, 10) };
    let which = std::env::var("SCORIA_BENCH_TELEMETRY").unwrap_or_else(|_| "both".into());
    let (metrics, traces) = match which.as_str() {
        "metrics" => (true, false),
        "traces" => (false, true),
        // Two identical stacks: how far apart the bench puts them by itself.
        "none" => (false, false),
        _ => (true, true),
    };

    let collector = Collector::default();
    let endpoint = collector.start().await;
    let off = Stack::start_with(DbKind::Sqlite, &[("RUST_LOG", "warn")]).await;
    let mut env = vec![("RUST_LOG", "warn")];
    let ratio = std::env::var("SCORIA_BENCH_SAMPLE_RATIO").unwrap_or_default();
    if traces {
        env.push(("SCORIA_OTLP_ENDPOINT", endpoint.as_str()));
        if !ratio.is_empty() {
            env.push(("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
            env.push(("OTEL_TRACES_SAMPLER_ARG", ratio.as_str()));
        }
    }
    let on = if metrics {
        Stack::start_with_metrics_env(DbKind::Sqlite, &env).await
    } else {
        Stack::start_with(DbKind::Sqlite, &env).await
    };

    // A scraper of the "on" stack, every second.
    let scrapes = Arc::new(AtomicUsize::new(0));
    let targets: Vec<String> = ["scoria-api", "scoria-scheduler", "scoria-volume"]
        .iter()
        .filter_map(|n| on.metrics_addr(n))
        .collect();
    assert_eq!(
        targets.len(),
        if metrics { 3 } else { 0 },
        "metrics listeners"
    );
    let scraper = {
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            loop {
                for addr in &targets {
                    if let Some((200, _)) = http_get(addr, "/metrics").await {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Warm up both.
    round(&off, WARMUP).await;
    round(&on, WARMUP).await;

    let (mut time_off, mut time_on) = (Duration::ZERO, Duration::ZERO);
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    let mut costs = Vec::new();
    let spans_before = collector.count();
    for pair in 0..pairs {
        // off, on, on, off, off, on ...
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut rates = [0.0; 2];
        for with_telemetry in order {
            let stack = if with_telemetry { &on } else { &off };
            let cpu = cpu_ms(stack);
            let took = round(stack, per_round).await;
            let after = cpu_ms(stack);
            rates[usize::from(with_telemetry)] = per_round as f64 / took.as_secs_f64();
            if with_telemetry {
                time_on += took;
                add_used(&mut cpu_on, &cpu, &after);
            } else {
                time_off += took;
                add_used(&mut cpu_off, &cpu, &after);
            }
        }
        costs.push((rates[0] - rates[1]) / rates[0] * 100.0);
    }
    let total = (pairs * per_round) as f64;
    let (rate_off, rate_on) = (
        total / time_off.as_secs_f64(),
        total / time_on.as_secs_f64(),
    );
    println!(
        "telemetry create {rate_on:.0} volumes/s with {which} on, {rate_off:.0} \
         volumes/s off ({pairs} pairs of rounds of {per_round}, 10 clients): cost {:.1}% \
         (median of pairs {:.1}%)",
        (rate_off - rate_on) / rate_off * 100.0,
        median(&mut costs)
    );
    println!(
        "telemetry cpu {:.2} CPU-ms per create on, {:.2} off (api + scheduler + volume, \
         deletes included)",
        sum(&cpu_on) / total,
        sum(&cpu_off) / total
    );
    for ((name, on), (_, off)) in cpu_on.iter().zip(&cpu_off) {
        println!(
            "telemetry cpu   {name}: {:.2} CPU-ms per create on, {:.2} off",
            on / total,
            off / total
        );
    }
    // Let the batch processors export what is queued.
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!(
        "telemetry {} spans exported ({:.0} per create), {} scrapes",
        collector.count() - spans_before,
        (collector.count() - spans_before) as f64 / total,
        scrapes.load(Ordering::Relaxed)
    );
    // The tally holds the "on" stack's warm-up creates too.
    let traced = total + WARMUP as f64;
    for (name, count) in collector.tally().iter().take(15) {
        println!(
            "telemetry   {:.1} per create  {name}",
            *count as f64 / traced
        );
    }
    assert_eq!(
        collector.count() > spans_before,
        traces,
        "spans exported iff traces are on"
    );
    if !ratio.is_empty() {
        println!("telemetry traces sampled at a ratio of {ratio}");
    }
    scraper.abort();
}
