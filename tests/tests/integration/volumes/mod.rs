//! A volume's life through the real processes: the typed Rust clients and a
//! generated Python client against scoria-api, scoria-scheduler and
//! scoria-volume, on SQLite and on PostgreSQL, with real files on the `file`
//! backend.

mod failures;
mod requests;

use std::{collections::HashSet, os::unix::fs::MetadataExt, time::Duration};

use crate::support::{GIB, create, mask, pb, sized};
use scoria_common::rpc::{Broker, Priority, notifier::NotificationReader};
use scoria_tests::{
    bus_config,
    stack::{DbKind, Stack},
};

async fn lifecycle(kind: DbKind) {
    let stack = Stack::start(kind).await;
    let notifications = Broker::connect(
        bus_config(&stack.exchange),
        "reader",
        Duration::from_secs(10),
    )
    .await
    .expect("broker");
    let created = create(
        &stack,
        "p1",
        pb::CreateVolumeRequest {
            name: "data".into(),
            metadata: [("tier".to_owned(), "gold".to_owned())].into(),
            ..sized(3)
        },
    )
    .await;
    let id = created.id.clone();
    assert_eq!(created.project_id, "p1");
    let available = stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    assert_eq!(available.host, stack.volume_host);
    assert_eq!(available.size_gib, 3);

    // A real, sparse file of exactly the size.
    let file = stack.volume_file(&id);
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(meta.len(), 3 * GIB);
    assert!(
        meta.blocks() * 512 < GIB,
        "the file is not sparse: {} blocks",
        meta.blocks()
    );

    let mut volumes = stack.volumes("p1");
    let listed = volumes
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.volumes[0].id, id);
    let updated = volumes
        .update_volume(pb::UpdateVolumeRequest {
            id: id.clone(),
            name: "renamed".into(),
            update_mask: mask(&["name"]),
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "renamed");
    assert_eq!(
        updated.metadata.get("tier").map(String::as_str),
        Some("gold"),
        "metadata outside the mask is kept"
    );

    let deleting = volumes
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleting.status(), pb::VolumeStatus::Deleting);
    stack.wait_volume_gone("p1", &id).await;
    assert!(!file.exists(), "the backing file outlived the volume");

    let mut reader = NotificationReader::open(&notifications, Priority::Info)
        .await
        .expect("reader");
    let mut events = Vec::new();
    while let Some(n) = reader.next(Duration::from_secs(2)).await.expect("read") {
        events.push(n.event_type);
        if events.len() == 4 {
            break;
        }
    }
    assert_eq!(
        events,
        vec![
            "volume.create.start",
            "volume.create.end",
            "volume.delete.start",
            "volume.delete.end"
        ]
    );
    notifications.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_sqlite() {
    lifecycle(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_postgres() {
    lifecycle(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_drives_the_lifecycle_on_postgres() {
    let stack = Stack::start(DbKind::Postgres).await;
    let out_dir = stack.dir.path().join("py");
    std::fs::create_dir_all(&out_dir).expect("dir");
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let generated = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", proto_root])
        .arg(format!("--python_out={}", out_dir.display()))
        .arg(format!("--grpc_python_out={}", out_dir.display()))
        .arg("scoria/v1/volume.proto")
        .output()
        .expect("python3 with grpcio-tools is needed (pip install grpcio-tools, or run scripts/setup.sh)");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/lifecycle.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&out_dir)
        .arg(&stack.api)
        .arg("py-project")
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        stack.logs()
    );
    for step in [
        "created",
        "available",
        "listed",
        "updated",
        "rejected INVALID_ARGUMENT",
        "deleted",
    ] {
        assert!(stdout.contains(step), "missing step {step:?} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_service_cleanly() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let ids: HashSet<String> = {
        let mut ids = HashSet::new();
        for _ in 0..5 {
            ids.insert(create(&stack, "p1", sized(1)).await.id);
        }
        ids
    };
    for v in &ids {
        stack
            .wait_status("p1", v, pb::VolumeStatus::Available)
            .await;
    }
    let codes = stack.terminate().await;
    for (name, code) in codes {
        assert_eq!(
            code,
            Some(0),
            "{name} did not exit 0 on SIGTERM\n{}",
            stack.logs()
        );
    }
}
