//! Snapshots, clones, extend, volume types and availability zones through the
//! real processes, checking real bytes with `qemu-io` and sizes with `qemu-img`,
//! on the `file` and the `qcow2` drivers.

use std::time::Duration;

use scoria_tests::stack::{DbKind, Stack};
use serde_json::Value;
use tonic::{Code, Response};

use crate::{
    calls::Call,
    support::{GIB, create, from_snapshot, from_volume, new_volume, pb, sized},
};

/// `qemu-io` on a backend object: `write -P <pattern> 0 1M` or `read -P ...`
/// (a read fails when the bytes differ from the pattern).
fn qemu_io(stack: &Stack, kind: &str, id: &str, command: &str) -> Result<(), String> {
    scoria_tests::stack::qemu_io_file(&stack.backend_object(kind, id), command)
}

fn virtual_size(stack: &Stack, id: &str) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(stack.volume_file(id))
        .output()
        .expect("qemu-img is needed (apt-get install qemu-utils)");
    let info: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("qemu-img info: {e}"));
    info["virtual-size"].as_u64().expect("virtual-size")
}

async fn bytes_survive_snapshot_clone_and_extend(driver: &str) {
    let env: Vec<(&str, &str)> = vec![
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let src = pb::CreateVolumeRequest {
        name: "src".into(),
        ..sized(1)
    };
    let source = new_volume(&stack, src).await;
    qemu_io(&stack, "volume", &source, "write -P 0xab 0 1M").expect("write first pattern");

    let mut snapshots = stack.snapshots("p1");
    let snap = snapshots
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: source.clone(),
            name: "s1".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e:?}"))
        .into_inner();
    assert_eq!(snap.status(), pb::SnapshotStatus::Creating);
    let snap_id = snap.id;
    let snap = stack
        .wait_snapshot_status("p1", &snap_id, pb::SnapshotStatus::Available)
        .await;
    assert_eq!(snap.size_gib, 1);
    qemu_io(&stack, "volume", &source, "write -P 0xcd 0 1M")
        .expect("overwrite with the second pattern");

    // From the snapshot, larger: the first pattern, the new size.
    let restore = pb::CreateVolumeRequest {
        source: from_snapshot(&snap_id),
        ..sized(2)
    };
    let restored = new_volume(&stack, restore).await;
    qemu_io(&stack, "volume", &restored, "read -P 0xab 0 1M").expect("the snapshot's bytes");
    assert_eq!(virtual_size(&stack, &restored), 2 * GIB);
    let restored_volume = stack.get_volume("p1", &restored).await.expect("get");
    assert_eq!(restored_volume.snapshot_id, snap_id);

    // A clone: the source's current bytes.
    let clone = pb::CreateVolumeRequest {
        source: from_volume(&source),
        ..Default::default()
    };
    let clone = new_volume(&stack, clone).await;
    qemu_io(&stack, "volume", &clone, "read -P 0xcd 0 1M").expect("the source's current bytes");
    assert_eq!(
        virtual_size(&stack, &clone),
        GIB,
        "size 0 means the source's size"
    );

    // Extend: the object really grows; the bytes stay.
    let mut volumes = stack.volumes("p1");
    let extend = |new_size_gib| pb::ExtendVolumeRequest {
        id: clone.clone(),
        new_size_gib,
    };
    let extending = volumes
        .extend_volume(extend(3))
        .await
        .expect("extend")
        .into_inner();
    assert_eq!(extending.status(), pb::VolumeStatus::Extending);
    let extended = stack
        .wait_status("p1", &clone, pb::VolumeStatus::Available)
        .await;
    assert_eq!(extended.size_gib, 3);
    assert_eq!(virtual_size(&stack, &clone), 3 * GIB);
    qemu_io(&stack, "volume", &clone, "read -P 0xcd 0 1M").expect("bytes kept through extend");
    let shrink = volumes.extend_volume(extend(2)).await.expect_err("shrink");
    assert_eq!(shrink.code(), Code::InvalidArgument);
    assert!(shrink.message().contains("new_size_gib"), "{shrink:?}");

    // A volume with snapshots cannot be deleted; the error names them.
    let refused = volumes
        .delete_volume(pb::DeleteVolumeRequest { id: source.clone() })
        .await
        .expect_err("has snapshots");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&snap_id), "{refused:?}");

    // Clean up everything; nothing is left on the backend.
    snapshots
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snap_id.clone(),
        })
        .await
        .expect("delete snapshot");
    stack.wait_snapshot_gone("p1", &snap_id).await;
    for v in [&source, &restored, &clone] {
        volumes
            .delete_volume(pb::DeleteVolumeRequest { id: v.clone() })
            .await
            .expect("delete");
        stack.wait_volume_gone("p1", v).await;
    }
    assert_eq!(
        stack.backend_files(),
        Vec::<String>::new(),
        "leftovers on the backend"
    );

    // Every operation announced itself.
    let broker = scoria_common::rpc::Broker::connect(
        scoria_tests::bus_config(&stack.exchange),
        "reader",
        Duration::from_secs(10),
    )
    .await
    .expect("broker");
    let mut reader = scoria_common::rpc::notifier::NotificationReader::open(
        &broker,
        scoria_common::rpc::Priority::Info,
    )
    .await
    .expect("reader");
    let mut events = std::collections::BTreeSet::new();
    while let Some(n) = reader.next(Duration::from_secs(2)).await.expect("read") {
        events.insert(n.event_type);
    }
    for event in [
        "snapshot.create.start",
        "snapshot.create.end",
        "snapshot.delete.start",
        "snapshot.delete.end",
        "volume.resize.start",
        "volume.resize.end",
        "volume.create.end",
        "volume.delete.end",
    ] {
        assert!(
            events.contains(event),
            "no {event} notification: {events:?}"
        );
    }
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_driver_keeps_bytes_through_snapshot_clone_and_extend() {
    bytes_survive_snapshot_clone_and_extend("file").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qcow2_driver_keeps_bytes_through_snapshot_clone_and_extend() {
    bytes_survive_snapshot_clone_and_extend("qcow2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snapshot_clone_and_extend_requests_get_the_right_code_and_leave_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let vol = new_volume(&stack, sized(2)).await;
    let missing = uuid::Uuid::new_v4().to_string();
    let snapshot_of = |volume_id: &str| pb::CreateSnapshotRequest {
        volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    let extend = |id: &str, new_size_gib| pb::ExtendVolumeRequest {
        id: id.to_owned(),
        new_size_gib,
    };
    let cases: Vec<(Call, Code, &str)> = vec![
        (
            snapshot_of("nope").into(),
            Code::InvalidArgument,
            "volume_id",
        ),
        (snapshot_of(&missing).into(), Code::NotFound, ""),
        (
            pb::CreateVolumeRequest {
                source: from_snapshot(&missing),
                ..sized(1)
            }
            .into(),
            Code::NotFound,
            "snapshot_id",
        ),
        (
            pb::CreateVolumeRequest {
                source: from_volume(&missing),
                ..sized(1)
            }
            .into(),
            Code::NotFound,
            "source_volume_id",
        ),
        (
            pb::CreateVolumeRequest {
                source: from_volume(&vol),
                ..sized(1)
            }
            .into(),
            Code::InvalidArgument,
            "size_gib",
        ),
        (
            pb::CreateVolumeRequest {
                volume_type: "no-such-type".into(),
                ..sized(1)
            }
            .into(),
            Code::NotFound,
            "no-such-type",
        ),
        (
            extend(&vol, 2).into(),
            Code::InvalidArgument,
            "new_size_gib",
        ),
        (
            extend(&vol, 100_000_000).into(),
            Code::InvalidArgument,
            "new_size_gib",
        ),
        (extend(&missing, 5).into(), Code::NotFound, ""),
    ];
    let member = stack.as_member("p1");
    for (call, code, needle) in cases {
        let err = call.send(&member).await.expect_err("must be refused");
        assert_eq!(err.code(), code, "{call:?}: {err:?}");
        assert!(err.message().contains(needle), "{call:?}: {err:?}");
    }
    // Snapshot of a deleting volume.
    let doomed = new_volume(&stack, sized(1)).await;
    let vs = scoria_common::model::VolumeStatus::Available;
    assert!(
        stack
            .db
            .transition_volume(
                &doomed,
                &[vs],
                scoria_common::model::VolumeStatus::Deleting,
                None,
                None
            )
            .await
            .expect("cas")
    );
    let mut snapshots = stack.snapshots("p1");
    let err = snapshots
        .create_snapshot(snapshot_of(&doomed))
        .await
        .expect_err("deleting volume");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        2,
        "no volume row written by a refusal"
    );
    let listed = snapshots
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.snapshots.is_empty(),
        "no snapshot row written: {listed:?}"
    );
}

/// A volume type `name` with `extra_specs`.
fn volume_type(name: &str, extra_specs: &[(&str, &str)]) -> pb::CreateVolumeTypeRequest {
    pb::CreateVolumeTypeRequest {
        name: name.to_owned(),
        extra_specs: extra_specs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_types_steer_scheduling_and_zones_are_listed() {
    let stack = Stack::start(DbKind::Sqlite).await;
    // Writes are for admins only.
    let err = stack
        .volume_types("p1")
        .create_volume_type(volume_type("gold", &[]))
        .await
        .expect_err("member may not create types");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut admin = stack.types_admin("p1");
    let pinned = admin
        .create_volume_type(volume_type("pinned", &[("volume_backend_name", "file")]))
        .await
        .expect("create type")
        .into_inner();
    assert_eq!(
        pinned
            .extra_specs
            .get("volume_backend_name")
            .map(String::as_str),
        Some("file")
    );
    admin
        .create_volume_type(volume_type("shared", &[("multiattach", "<is> False")]))
        .await
        .expect("create type");
    admin
        .create_volume_type(volume_type("elsewhere", &[("volume_backend_name", "ceph")]))
        .await
        .expect("create type");
    let dup = admin
        .create_volume_type(volume_type("pinned", &[]))
        .await
        .expect_err("duplicate name");
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");
    let listed = stack
        .volume_types("p1")
        .list_volume_types(pb::ListVolumeTypesRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = listed
        .volume_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(
        names.contains(&"pinned") && names.contains(&"__DEFAULT__"),
        "{names:?}"
    );

    let of_type = |volume_type: &str| pb::CreateVolumeRequest {
        volume_type: volume_type.to_owned(),
        ..sized(1)
    };
    let ok = new_volume(&stack, of_type("pinned")).await;
    let got = stack.get_volume("p1", &ok).await.expect("get");
    assert_eq!(got.volume_type, "pinned");
    let default = new_volume(&stack, sized(1)).await;
    let got = stack.get_volume("p1", &default).await.expect("get");
    assert_eq!(got.volume_type, "__DEFAULT__");
    for unmatched in ["shared", "elsewhere"] {
        let v = create(&stack, "p1", of_type(unmatched)).await;
        let failed = stack
            .wait_status("p1", &v.id, pb::VolumeStatus::Error)
            .await;
        assert!(
            failed.error_message.contains("No valid backend"),
            "{failed:?}"
        );
    }
    let in_use = admin
        .delete_volume_type(pb::DeleteVolumeTypeRequest {
            id_or_name: "pinned".into(),
        })
        .await
        .expect_err("type in use");
    assert_eq!(in_use.code(), Code::FailedPrecondition, "{in_use:?}");

    let zones = stack
        .zones("p1")
        .list_availability_zones(pb::ListAvailabilityZonesRequest {})
        .await
        .map(Response::into_inner)
        .expect("zones");
    assert_eq!(zones.availability_zones[0].name, "default", "{zones:?}");
    assert!(zones.availability_zones[0].available, "{zones:?}");
    let placed = pb::CreateVolumeRequest {
        availability_zone: "default".into(),
        ..sized(1)
    };
    let placed = new_volume(&stack, placed).await;
    let got = stack.get_volume("p1", &placed).await.expect("get");
    assert_eq!(got.availability_zone, "default");
}
