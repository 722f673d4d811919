//! Prometheus metrics and the health endpoints of real processes: after a
//! create -> available and a delete, each of the api, the scheduler and the
//! volume service shows the series and the values that happened; `/readyz`
//! tells the truth about the broker; a bad or taken listen address stops the
//! process naming `SCORIA_METRICS_LISTEN`.

use std::{process::Stdio, time::Duration};

use scoria_proto::v1 as pb;
use scoria_tests::{
    amqp_url, require_rabbitmq,
    stack::{DbKind, Stack, binary, free_port, http_get, sample},
    unique_exchange,
};
use tokio::process::Command;
use tonic::Response;

/// `/metrics` of `addr`, checked to answer 200.
async fn scrape(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of a sample, failing with the exposition when absent.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
}

/// Polls `/readyz` of `addr` until it answers `want` (20 s at most); the body.
async fn wait_ready_status(addr: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = http_get(addr, "/readyz").await;
        if let Some((status, body)) = &got
            && *status == want
        {
            return body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz of {addr} never answered {want}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_counts_a_create_and_a_delete() {
    let stack = Stack::start_with_metrics(DbKind::Sqlite).await;
    let addr = |name: &str| stack.metrics_addr(name).expect("metrics listener");
    let (api, scheduler, volume) = (
        addr("scoria-api"),
        addr("scoria-scheduler"),
        addr("scoria-volume"),
    );
    for addr in [&api, &scheduler, &volume] {
        assert_eq!(http_get(addr, "/healthz").await.map(|(s, _)| s), Some(200));
        wait_ready_status(addr, 200).await;
    }

    let created = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()));
    stack
        .wait_status("p1", &created.id, pb::VolumeStatus::Available)
        .await;

    // The scheduler sees one available volume and the pools as ListPools does.
    let text = scrape(&scheduler).await;
    assert_eq!(
        value(&text, "scoria_volumes", &[("status", "available")]),
        1.0
    );
    assert_eq!(
        value(&text, "scoria_volumes", &[("status", "creating")]),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "scoria_services",
            &[("binary", "scoria-volume"), ("state", "up")]
        ),
        1.0
    );
    let mut matched = false;
    for _ in 0..3 {
        let pools = stack
            .admin("p1")
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .expect("list pools")
            .into_inner()
            .pools;
        assert_eq!(pools.len(), 1, "{pools:?}");
        let pool = &pools[0];
        let text = scrape(&scheduler).await;
        let kind = |kind: &str| {
            value(
                &text,
                "scoria_pool_capacity_gib",
                &[("pool", &pool.name), ("kind", kind)],
            )
        };
        if (kind("total"), kind("free"), kind("allocated"))
            == (
                pool.total_capacity_gib,
                pool.free_capacity_gib,
                pool.allocated_capacity_gib,
            )
        {
            matched = true;
            break;
        }
        // A capability report landed between the two reads: read again.
    }
    assert!(matched, "pool capacity never matched ListPools");

    // A watch stream, open across the delete: counted when it ends.
    let mut watch = stack
        .volumes("p1")
        .watch_volume(pb::WatchVolumeRequest {
            id: created.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest {
            id: created.id.clone(),
        })
        .await
        .expect("delete");
    stack.wait_volume_gone("p1", &created.id).await;
    let mut deleted = false;
    while let Some(update) = watch.message().await.expect("the watch ends with OK") {
        deleted |= update.deleted;
    }
    assert!(deleted, "the watch ended without its deleted message");

    let unary = |method: &'static str| {
        [
            ("grpc_service", "scoria.v1.VolumeService"),
            ("grpc_method", method),
            ("grpc_type", "unary"),
        ]
    };
    let text = scrape(&api).await;
    let with_code = |method, code| {
        let mut labels = unary(method).to_vec();
        labels.push(("grpc_code", code));
        labels
    };
    assert_eq!(
        value(&text, "grpc_server_started_total", &unary("CreateVolume")),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "grpc_server_handled_total",
            &with_code("CreateVolume", "OK")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "grpc_server_handled_total",
            &with_code("DeleteVolume", "OK")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "grpc_server_handling_seconds_count",
            &unary("CreateVolume")
        ),
        1.0
    );
    let stream = [
        ("grpc_service", "scoria.v1.VolumeService"),
        ("grpc_method", "WatchVolume"),
        ("grpc_type", "server_stream"),
    ];
    assert_eq!(value(&text, "grpc_server_started_total", &stream), 1.0);
    let mut ended = stream.to_vec();
    ended.push(("grpc_code", "OK"));
    assert_eq!(value(&text, "grpc_server_handled_total", &ended), 1.0);
    // wait_volume_gone ended on a NOT_FOUND.
    assert!(
        value(
            &text,
            "grpc_server_handled_total",
            &with_code("GetVolume", "NotFound")
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "grpc_server_handled_total",
            &with_code("GetVolume", "OK")
        ) >= 1.0
    );
    // The api cast the create to the scheduler, confirmed.
    assert_eq!(
        value(
            &text,
            "scoria_rpc_casts_sent_total",
            &[
                ("topic", "scheduler"),
                ("method", "create_volume"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert!(value(&text, "scoria_rpc_publish_confirm_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&text, "scoria_rpc_broker_connected", &[]), 1.0);
    assert!(value(&text, "scoria_db_pool_connections_max", &[]) >= 1.0);
    assert!(
        sample(&text, "scoria_service_heartbeat_age_seconds", &[]).is_none(),
        "the api does not beat"
    );

    // The scheduler handled it and cast it on to the volume service.
    let text = scrape(&scheduler).await;
    assert_eq!(
        value(
            &text,
            "scoria_rpc_handler_duration_seconds_count",
            &[
                ("topic", "scheduler"),
                ("method", "create_volume"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "scoria_rpc_casts_sent_total",
            &[("method", "create_volume"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(value(&text, "scoria_volumes", &[]), 0.0, "deleted");
    let age = value(&text, "scoria_service_heartbeat_age_seconds", &[]);
    assert!((0.0..60.0).contains(&age), "{age}");

    // The volume service did the create and the delete.
    let text = scrape(&volume).await;
    for method in ["create_volume", "delete_volume"] {
        assert_eq!(
            value(
                &text,
                "scoria_rpc_handler_duration_seconds_count",
                &[("method", method), ("outcome", "ok")]
            ),
            1.0,
            "{method}"
        );
    }
    assert!(
        value(&text, "scoria_rpc_fanouts_sent_total", &[("outcome", "ok")]) >= 1.0,
        "capability reports"
    );
    assert!(value(&text, "scoria_db_pool_connections", &[]) >= 1.0);
    assert!(value(&text, "scoria_db_pool_connections_in_use", &[]) >= 0.0);
    let age = value(&text, "scoria_service_heartbeat_age_seconds", &[]);
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(
        text.contains("# TYPE scoria_reconciler_actions counter"),
        "{text}"
    );
}

/// A `scoria-volume` on its own, on a temp SQLite database, with `env`.
fn volume_alone(dir: &std::path::Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(binary("scoria-volume"));
    command
        .env("SCORIA_DATA_DIR", dir.display().to_string())
        .env(
            "SCORIA_DATABASE_URL",
            format!("sqlite://{}/scoria.db", dir.display()),
        )
        .env("SCORIA_CONTROL_EXCHANGE", unique_exchange("metrics"))
        .env("SCORIA_HOST", "metrics-alone")
        .env("SCORIA_VOLUME_CAPACITY_GIB", "10")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_an_unreachable_broker_while_healthz_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", free_port());
    // Nothing listens on this port: the broker never connects.
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut child = volume_alone(
        dir.path(),
        &[
            ("SCORIA_METRICS_LISTEN", listen.clone()),
            ("SCORIA_AMQP_URL", nowhere),
        ],
    )
    .spawn()
    .expect("start scoria-volume");
    // First "not connected yet" for both while the database opens; then the
    // database answers and the broker, watched, is named with its URL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = wait_ready_status(&listen, 503).await;
        if !body.contains("database") || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!body.contains("database"), "the database answers: {body}");
    assert!(
        body.contains("message broker: not connected (SCORIA_AMQP_URL amqp://guest:***@127.0.0.1:"),
        "{body}"
    );
    assert_eq!(
        http_get(&listen, "/healthz").await.map(|(s, _)| s),
        Some(200)
    );
    let text = scrape(&listen).await;
    assert_eq!(value(&text, "scoria_rpc_broker_connected", &[]), 0.0);
    let _ = child.kill().await;
}

/// Runs `scoria-volume` with `SCORIA_METRICS_LISTEN=listen`; its exit status
/// and what it printed.
async fn refused(listen: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = volume_alone(
        dir.path(),
        &[
            ("SCORIA_METRICS_LISTEN", listen.to_owned()),
            ("SCORIA_AMQP_URL", amqp_url()),
        ],
    )
    .spawn()
    .expect("start scoria-volume");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_taken_metrics_address_stops_the_process_naming_the_variable() {
    require_rabbitmq();
    let (status, out) = refused("not-an-address").await;
    assert!(!status.success(), "{out}");
    assert!(out.contains("SCORIA_METRICS_LISTEN"), "{out}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, out) = refused(&addr).await;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("SCORIA_METRICS_LISTEN") && out.contains(&addr),
        "{out}"
    );
}
