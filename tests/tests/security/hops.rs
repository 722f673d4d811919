//! TLS on all three hops at once: the clients to the API over gRPC TLS with a
//! client certificate, every service to its own RabbitMQ node over `amqps://`
//! with a client certificate, and to its own PostgreSQL cluster with
//! `sslmode=verify-full`; a volume's lifecycle through all of it, then proof from
//! the servers' side that every connection is TLS. A wrong CA or host in the
//! database URL stops a service at start with a certificate error.

use std::time::Duration;

use scoria_proto::v1 as pb;
use scoria_tests::{
    fixtures::postgres::PgCluster,
    pki::Ca,
    stack::{ClientTls, DbKind, Stack, StackOptions, binary},
};
use tonic::Response;

use crate::support::{database, shared};

#[tokio::test]
async fn the_lifecycle_runs_over_tls_on_all_three_hops() {
    let shared = shared();
    let (db_name, db_url) = database(&shared);
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, server, client) = (path(&shared.ca.cert), &shared.server, &shared.client);
    let amqps = shared.rabbit.amqps_url();
    let env = [
        ("SCORIA_AMQP_URL", amqps.as_str()),
        ("SCORIA_AMQP_CA_FILE", ca.as_str()),
        ("SCORIA_AMQP_CLIENT_CERT", &path(&client.cert)),
        ("SCORIA_AMQP_CLIENT_KEY", &path(&client.key)),
        ("SCORIA_API_TLS_CERT", &path(&server.cert)),
        ("SCORIA_API_TLS_KEY", &path(&server.key)),
        ("SCORIA_API_TLS_CLIENT_CA", ca.as_str()),
    ]
    .map(|(k, v)| (k, v.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = Stack::start_options(
        DbKind::Postgres,
        &env,
        StackOptions {
            database_url: Some(db_url),
            api_tls: Some(ClientTls {
                ca: shared.ca.cert.clone(),
                identity: Some(client.clone()),
            }),
            broker: None,
        },
    )
    .await;

    let volumes = stack.volumes("p1");
    let volume = volumes
        .clone()
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            name: "tls".into(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()));
    stack
        .wait_status("p1", &volume.id, pb::VolumeStatus::Available)
        .await;
    let snapshot = stack
        .snapshots("p1")
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: volume.id.clone(),
            name: "tls-snap".into(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("snapshot: {e:?}\n{}", stack.logs()));
    stack
        .wait_snapshot_status("p1", &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    stack
        .snapshots("p1")
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .expect("delete snapshot");
    stack.wait_snapshot_gone("p1", &snapshot.id).await;
    volumes
        .clone()
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume.id.clone(),
        })
        .await
        .expect("delete volume");
    stack.wait_volume_gone("p1", &volume.id).await;

    // RabbitMQ: the three services' connections (named after the exchange),
    // each over TLS with the services' client certificate.
    let connections: Vec<_> = shared
        .rabbit
        .connections()
        .expect("list_connections")
        .into_iter()
        .filter(|(name, _, _)| name.contains(&stack.exchange))
        .collect();
    for binary in ["scoria-api", "scoria-scheduler", "scoria-volume"] {
        assert!(
            connections.iter().any(|(name, _, _)| name.contains(binary)),
            "no connection of {binary}: {connections:?}"
        );
    }
    for (name, ssl, subject) in &connections {
        assert!(*ssl, "{name} is not TLS: {connections:?}");
        assert!(subject.contains("scoria-services"), "{name}: {subject}");
    }

    // PostgreSQL: every backend on the stack's database is TLS, and there are
    // at least the three services' (and the test's own).
    let rows = shared
        .pg
        .psql(
            "postgres",
            &format!(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = '{db_name}'"
            ),
        )
        .expect("pg_stat_ssl");
    let backends: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
    assert!(backends.len() >= 4, "backends: {backends:?}");
    assert!(backends.iter().all(|b| *b == "t"), "backends: {backends:?}");
}

/// Runs `scoria-api` on `database_url` and returns its exit status and output;
/// it must stop within 60 s.
async fn api_on(database_url: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary("scoria-api"))
            .env("SCORIA_DATABASE_URL", database_url)
            .env("SCORIA_DATA_DIR", dir.path())
            .env(
                "SCORIA_API_LISTEN",
                format!("127.0.0.1:{}", scoria_tests::stack::free_port()),
            )
            .env(
                "SCORIA_CONTROL_EXCHANGE",
                scoria_tests::unique_exchange("sec"),
            )
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the API must stop at start")
    .expect("run scoria-api");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_or_host_stops_the_process_at_start() {
    let shared = shared();
    let (db_name, _) = database(&shared);
    let stranger = Ca::new(shared.dir.path(), "stranger").expect("CA");

    let wrong_ca = shared.pg.url(
        "localhost",
        &db_name,
        &PgCluster::verify_full(&stranger.cert),
    );
    let (code, out) = api_on(&wrong_ca).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    // The cluster's certificate names `localhost` only.
    let wrong_host = shared.pg.url(
        "127.0.0.1",
        &db_name,
        &PgCluster::verify_full(&shared.ca.cert),
    );
    let (code, out) = api_on(&wrong_host).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    assert!(
        out.contains("NotValidForName") || out.contains("not valid for name"),
        "{out}"
    );
}
