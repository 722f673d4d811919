//! What a traced request costs inside a process: `cargo bench -p scoria-common --bench spans`.
//!
//! Runs the same workload twice, each time in a fresh child process (the
//! subscriber is global): once with the telemetry as shipped without an OTLP
//! endpoint (logs only), once with the OpenTelemetry layer installed
//! (`SCORIA_OTLP_ENDPOINT` set to a port nothing listens on, so the batch
//! exporter's thread drops what it cannot send: only the cost on the request's
//! own threads is measured). One operation is shaped like a volume service's
//! handling of a cast: an `info` span with fields, five `debug` steps made
//! with `#[tracing::instrument]` on async functions that each yield a few
//! times (as a DB query waiting on its worker does), and one `info` event
//! (to stderr, which the bench discards). The target is `scoria_bench`, so the
//! layers treat them as our crates' spans.
//! Prints CPU-µs per operation of both runs and their difference, per span.
//!
//! `SCORIA_BENCH_OPS` sets the number of operations (default 200,000; the
//! smoke run under `cargo test --benches` does 2,000), `SCORIA_BENCH_SPANS_YIELDS`
//! how often each step yields (default 3; 0: every step is done at its first
//! poll, one enter and exit of its span), and `SCORIA_BENCH_SPANS_STEP=held`
//! makes each step hold its span without entering it (no enter and exit per
//! poll), to tell the per-poll cost from the per-span cost.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{process::Command, time::Instant};

use scoria_common::{config::ServiceConfig, telemetry};

/// Spans per operation: the outer one and five steps.
const SPANS_PER_OP: u64 = 6;
/// Operations running at once.
const CONCURRENCY: u64 = 10;
/// Where the child reads its mode.
const MODE_VAR: &str = "SCORIA_BENCH_SPANS_MODE";

#[tracing::instrument(target = "scoria_bench", name = "db.step", level = "debug", skip_all, fields(volume_id = %id))]
async fn step(id: &str, polls: u32) -> usize {
    for _ in 0..polls {
        tokio::task::yield_now().await;
    }
    id.len()
}

/// A step whose span is held, never entered: created at the first poll (a
/// child of the caller's span), closed when the step ends.
async fn held_step(id: &str, polls: u32) -> usize {
    let _span = tracing::debug_span!(target: "scoria_bench", "db.step", volume_id = %id);
    for _ in 0..polls {
        tokio::task::yield_now().await;
    }
    id.len()
}

/// Whether steps hold their span instead of entering it at each poll
/// (`SCORIA_BENCH_SPANS_STEP=held`; default `instrument`).
fn held() -> bool {
    static HELD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HELD.get_or_init(|| std::env::var("SCORIA_BENCH_SPANS_STEP").is_ok_and(|v| v == "held"))
}

async fn operation(n: u64) -> usize {
    let id = format!("7f9c2ba4-e88f-11e6-9a1b-{n:012}");
    let span = tracing::info_span!(target: "scoria_bench", "rpc.handle", method = "create_volume", volume_id = %id);
    let work = async {
        let mut total = 0;
        for _ in 0..5 {
            total += if held() {
                held_step(&id, polls()).await
            } else {
                step(&id, polls()).await
            };
        }
        tracing::info!(target: "scoria_bench", volume_id = %id, "volume created");
        total
    };
    tracing::Instrument::instrument(work, span).await
}

/// How many times each step yields (`SCORIA_BENCH_SPANS_YIELDS`, default 3):
/// each yield is one more enter and exit of its span.
fn polls() -> u32 {
    static YIELDS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *YIELDS.get_or_init(|| {
        std::env::var("SCORIA_BENCH_SPANS_YIELDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    })
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // utime and stime are fields 14 and 15, after the parenthesised name.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// The child: installs the telemetry of `mode` and prints CPU-µs per operation.
fn child(mode: &str, ops: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let service = ServiceConfig {
            otlp_endpoint: if mode == "traced" {
                // Nothing listens there: spans are built and handed to the
                // exporter, which drops them.
                "http://127.0.0.1:9".to_owned()
            } else {
                String::new()
            },
            ..ServiceConfig::default()
        };
        let telemetry = telemetry::install("scoria-bench", &service).expect("telemetry");
        let per_task = ops / CONCURRENCY;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                tokio::spawn(async move {
                    let mut sum = 0;
                    for i in 0..per_task {
                        sum += operation(t * per_task + i).await;
                    }
                    sum
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("span task");
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed());
        let done = (per_task * CONCURRENCY) as f64;
        println!(
            "{mode} {:.3} {:.0}",
            cpu * 1e6 / done,
            done / wall.as_secs_f64()
        );
        drop(telemetry);
    });
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let ops: u64 = std::env::var("SCORIA_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 2_000 } else { 200_000 });
    if let Ok(mode) = std::env::var(MODE_VAR) {
        child(&mode, ops);
        return;
    }
    let exe = std::env::current_exe().expect("the bench binary");
    let mut results = Vec::new();
    // Interleaved, twice each: a drift of the machine falls on both.
    for mode in ["logs", "traced", "traced", "logs"] {
        let out = Command::new(&exe)
            .args(std::env::args().skip(1))
            .env(MODE_VAR, mode)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::null())
            .output()
            .expect("run the bench's child");
        assert!(out.status.success(), "{mode} run failed");
        let line = String::from_utf8(out.stdout).expect("utf-8 figures");
        let mut parts = line.split_whitespace().skip(1);
        let cpu_us: f64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .expect("cpu figure");
        let rate: f64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .expect("rate figure");
        results.push((mode, cpu_us, rate));
    }
    let mean = |m: &str| {
        let of: Vec<f64> = results.iter().filter(|r| r.0 == m).map(|r| r.1).collect();
        of.iter().sum::<f64>() / of.len() as f64
    };
    let (logs, traced) = (mean("logs"), mean("traced"));
    for (mode, cpu_us, rate) in &results {
        println!("spans {mode}: {cpu_us:.2} CPU-us per operation, {rate:.0} operations/s");
    }
    println!(
        "spans cost of tracing: {:.2} CPU-us per operation of {SPANS_PER_OP} spans, \
         {:.2} CPU-us per span ({ops} operations, {CONCURRENCY} at once)",
        traced - logs,
        (traced - logs) / SPANS_PER_OP as f64
    );
}
