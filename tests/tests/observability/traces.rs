//! OTLP traces: one CreateVolume, sent with a known `traceparent`, makes one
//! trace across the API, the scheduler and the volume service, received by a
//! small OTLP/gRPC collector the test runs itself.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use scoria_proto::v1 as pb;
use scoria_tests::{
    otlp::{Collector, Received},
    stack::{DbKind, Stack},
};
use tonic::Request;

/// The client's trace and span ids, as W3C writes them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// How long spans may take to arrive (the batch processor exports every 200 ms
/// in these stacks).
const SPAN_WAIT: Duration = Duration::from_secs(30);

/// What the test asserts about one trace; `Err` says what is missing yet.
fn check_tree(spans: &[Received], reads: bool) -> Result<(), String> {
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_service = |s: &Received| by_id.get(s.parent.as_str()).map(|p| p.service.clone());
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect::<Vec<_>>()
    };
    let api_server = find("scoria-api", "grpc");
    if !api_server.iter().any(|s| s.parent == CLIENT_SPAN) {
        return Err(format!(
            "no API server span parented to the client's span: {api_server:?}"
        ));
    }
    let scheduler = find("scoria-scheduler", "rpc.handle");
    if !scheduler
        .iter()
        .any(|s| parent_service(s).as_deref() == Some("scoria-api"))
    {
        return Err(format!(
            "no scheduler handler span under an API span: {scheduler:?}"
        ));
    }
    let volume = find("scoria-volume", "rpc.handle");
    if !volume
        .iter()
        .any(|s| parent_service(s).as_deref() == Some("scoria-scheduler"))
    {
        return Err(format!(
            "no volume handler span under a scheduler span: {volume:?}"
        ));
    }
    let mut steps = vec![
        ("scoria-api", "db.create_volume"),
        ("scoria-volume", "db.transition_volume_with_worker"),
        ("scoria-volume", "driver.create_volume"),
    ];
    if reads {
        steps.push(("scoria-volume", "db.get_volume"));
    } else if let Some(read) = spans.iter().find(|s| s.name == "db.get_volume") {
        return Err(format!(
            "a single-row read was exported without SCORIA_OTLP_READS: {read:?}"
        ));
    }
    for (service, name) in steps {
        let steps = find(service, name);
        if !steps
            .iter()
            .any(|s| parent_service(s).as_deref() == Some(service))
        {
            return Err(format!(
                "no {name} span under a span of {service}: {steps:?}"
            ));
        }
    }
    Ok(())
}

/// The spans as an indented tree, for the failure message and the record.
fn render(spans: &[Received]) -> String {
    let mut out = String::new();
    fn walk(spans: &[Received], parent: &str, depth: usize, out: &mut String) {
        for s in spans.iter().filter(|s| s.parent == parent) {
            out.push_str(&format!(
                "{}{} [{}]\n",
                "  ".repeat(depth),
                s.name,
                s.service
            ));
            walk(spans, &s.span_id, depth + 1, out);
        }
    }
    walk(spans, CLIENT_SPAN, 0, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn create_volume_is_one_trace_across_api_scheduler_and_volume() {
    one_trace(false).await;
}

/// With `SCORIA_OTLP_READS`, the single-row reads are in the trace too.
#[tokio::test(flavor = "multi_thread")]
async fn the_reads_are_exported_when_asked_for() {
    one_trace(true).await;
}

async fn one_trace(reads: bool) {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let stack = Stack::start_with(
        DbKind::Sqlite,
        &[
            ("SCORIA_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("SCORIA_OTLP_READS", if reads { "true" } else { "false" }),
        ],
    )
    .await;
    let mut request = Request::new(pb::CreateVolumeRequest {
        name: "traced".into(),
        size_gib: 1,
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    let volume = stack
        .volumes("p1")
        .create_volume(request)
        .await
        .expect("create volume")
        .into_inner();
    stack
        .wait_status("p1", &volume.id, pb::VolumeStatus::Available)
        .await;

    let deadline = Instant::now() + SPAN_WAIT;
    loop {
        let spans = collector.of_trace(TRACE_ID);
        match check_tree(&spans, reads) {
            Ok(()) => {
                eprintln!("trace {TRACE_ID}:\n{}", render(&spans));
                break;
            }
            Err(missing) => assert!(
                Instant::now() < deadline,
                "{missing}\nspans of the trace:\n{}\n{}",
                render(&spans),
                stack.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The change feed (a message every few ms under load, and the API's reads on
    // it) is plumbing: sent unsampled, none of it is exported.
    let plumbing: Vec<String> = collector
        .tally()
        .into_iter()
        .filter(|(name, _)| {
            name.ends_with("/changes.publish") || name.as_str() == "scoria-api/rpc.handle"
        })
        .map(|(name, count)| format!("{name}: {count}"))
        .collect();
    assert!(
        plumbing.is_empty(),
        "change-feed spans were exported: {plumbing:?}"
    );

    // Human logs (the stack's default format) written to a file: no colours.
    for name in ["scoria-api", "scoria-scheduler", "scoria-volume"] {
        let bytes = std::fs::read(stack.log_path(name)).expect("log file");
        assert!(!bytes.is_empty(), "{name} logged nothing");
        assert!(!bytes.contains(&0x1b), "{name}'s log file has ANSI escapes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_otlp_endpoint_stops_the_process_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = tokio::process::Command::new(scoria_tests::stack::binary("scoria-scheduler"))
        .env("SCORIA_OTLP_ENDPOINT", "localhost:4317")
        .env("SCORIA_DATA_DIR", dir.path())
        .output()
        .await
        .expect("run scoria-scheduler");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a bad endpoint: {stderr}"
    );
    assert!(
        stderr.contains("SCORIA_OTLP_ENDPOINT") && stderr.contains("localhost:4317"),
        "the error does not name the variable and value: {stderr}"
    );
}
