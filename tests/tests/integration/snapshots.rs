//! Snapshots, clones, extend, volume types and availability zones through the
//! real processes, checking real bytes with `qemu-io` and sizes with `qemu-img`,
//! on the `file` and the `qcow2` drivers.

use std::time::{Duration, Instant};

use scoria_tests::stack::{DbKind, Stack};
use serde_json::{Value, json};

const CREATE: &str = "scoria.v1.VolumeService/CreateVolume";
const GET: &str = "scoria.v1.VolumeService/GetVolume";
const DELETE: &str = "scoria.v1.VolumeService/DeleteVolume";
const EXTEND: &str = "scoria.v1.VolumeService/ExtendVolume";
const SNAP: &str = "scoria.v1.SnapshotService/CreateSnapshot";
const GET_SNAP: &str = "scoria.v1.SnapshotService/GetSnapshot";
const DELETE_SNAP: &str = "scoria.v1.SnapshotService/DeleteSnapshot";
const GIB: u64 = 1 << 30;

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

async fn new_volume(stack: &Stack, body: Value) -> String {
    let v = stack
        .call("p1", CREATE, &body)
        .await
        .unwrap_or_else(|e| panic!("create {body}: {e:?}\n{}", stack.logs()));
    let id = id(&v);
    stack
        .wait_status("p1", &id, "VOLUME_STATUS_AVAILABLE")
        .await;
    id
}

async fn wait_snapshot(stack: &Stack, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = stack.call("p1", GET_SNAP, &json!({"id": id})).await;
        if let Ok(s) = &got
            && s["status"] == status
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "snapshot {id} never {status}: {got:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(stack: &Stack, method: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match stack.call("p1", method, &json!({"id": id})).await {
            Err(e) if e.code == "NotFound" => return,
            other => assert!(
                Instant::now() < deadline,
                "{id} still there: {other:?}\n{}",
                stack.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `qemu-io` on a backend object: `write -P <pattern> 0 1M` or `read -P ...`
/// (a read fails when the bytes differ from the pattern).
fn qemu_io(stack: &Stack, kind: &str, id: &str, command: &str) -> Result<(), String> {
    let path = stack.backend_object(kind, id);
    let format = if path.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    let out = std::process::Command::new("qemu-io")
        .args(["-f", format, "-c", command])
        .arg(&path)
        .output()
        .expect("qemu-io is needed (apt-get install qemu-utils, or run scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success()
        && !text.contains("Pattern verification failed")
        && !text.contains("error")
    {
        Ok(())
    } else {
        Err(format!("qemu-io {command} {}: {text}", path.display()))
    }
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
    let source = new_volume(&stack, json!({"name": "src", "size_gib": 1})).await;
    qemu_io(&stack, "volume", &source, "write -P 0xab 0 1M").expect("write first pattern");

    let snap = stack
        .call("p1", SNAP, &json!({"volume_id": source, "name": "s1"}))
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e:?}"));
    assert_eq!(snap["status"], "SNAPSHOT_STATUS_CREATING");
    let snap_id = id(&snap);
    let snap = wait_snapshot(&stack, &snap_id, "SNAPSHOT_STATUS_AVAILABLE").await;
    assert_eq!(snap["sizeGib"], "1");
    qemu_io(&stack, "volume", &source, "write -P 0xcd 0 1M")
        .expect("overwrite with the second pattern");

    // From the snapshot, larger: the first pattern, the new size.
    let restored = new_volume(&stack, json!({"size_gib": 2, "snapshot_id": snap_id})).await;
    qemu_io(&stack, "volume", &restored, "read -P 0xab 0 1M").expect("the snapshot's bytes");
    assert_eq!(virtual_size(&stack, &restored), 2 * GIB);
    let restored_volume = stack
        .call("p1", GET, &json!({"id": restored}))
        .await
        .expect("get");
    assert_eq!(restored_volume["snapshotId"], snap_id.as_str());

    // A clone: the source's current bytes.
    let clone = new_volume(&stack, json!({"source_volume_id": source})).await;
    qemu_io(&stack, "volume", &clone, "read -P 0xcd 0 1M").expect("the source's current bytes");
    assert_eq!(
        virtual_size(&stack, &clone),
        GIB,
        "size 0 means the source's size"
    );

    // Extend: the object really grows; the bytes stay.
    let extending = stack
        .call("p1", EXTEND, &json!({"id": clone, "new_size_gib": 3}))
        .await
        .expect("extend");
    assert_eq!(extending["status"], "VOLUME_STATUS_EXTENDING");
    let extended = stack
        .wait_status("p1", &clone, "VOLUME_STATUS_AVAILABLE")
        .await;
    assert_eq!(extended["sizeGib"], "3");
    assert_eq!(virtual_size(&stack, &clone), 3 * GIB);
    qemu_io(&stack, "volume", &clone, "read -P 0xcd 0 1M").expect("bytes kept through extend");
    let shrink = stack
        .call("p1", EXTEND, &json!({"id": clone, "new_size_gib": 2}))
        .await
        .expect_err("shrink");
    assert_eq!(shrink.code, "InvalidArgument");
    assert!(shrink.message.contains("new_size_gib"), "{shrink:?}");

    // A volume with snapshots cannot be deleted; the error names them.
    let refused = stack
        .call("p1", DELETE, &json!({"id": source}))
        .await
        .expect_err("has snapshots");
    assert_eq!(refused.code, "FailedPrecondition", "{refused:?}");
    assert!(refused.message.contains(&snap_id), "{refused:?}");

    // Clean up everything; nothing is left on the backend.
    stack
        .call("p1", DELETE_SNAP, &json!({"id": snap_id}))
        .await
        .expect("delete snapshot");
    wait_gone(&stack, GET_SNAP, &snap_id).await;
    for v in [&source, &restored, &clone] {
        stack
            .call("p1", DELETE, &json!({"id": v}))
            .await
            .expect("delete");
        wait_gone(&stack, GET, v).await;
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
    let vol = new_volume(&stack, json!({"size_gib": 2})).await;
    let missing = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            SNAP,
            json!({"volume_id": "nope"}),
            "InvalidArgument",
            "volume_id",
        ),
        (SNAP, json!({"volume_id": missing}), "NotFound", ""),
        (
            CREATE,
            json!({"size_gib": 1, "snapshot_id": missing}),
            "NotFound",
            "snapshot_id",
        ),
        (
            CREATE,
            json!({"size_gib": 1, "source_volume_id": missing}),
            "NotFound",
            "source_volume_id",
        ),
        (
            CREATE,
            json!({"size_gib": 1, "source_volume_id": vol}),
            "InvalidArgument",
            "size_gib",
        ),
        (
            CREATE,
            json!({"size_gib": 1, "volume_type": "no-such-type"}),
            "NotFound",
            "no-such-type",
        ),
        (
            EXTEND,
            json!({"id": vol, "new_size_gib": 2}),
            "InvalidArgument",
            "new_size_gib",
        ),
        (
            EXTEND,
            json!({"id": vol, "new_size_gib": 100000000}),
            "InvalidArgument",
            "new_size_gib",
        ),
        (
            EXTEND,
            json!({"id": missing, "new_size_gib": 5}),
            "NotFound",
            "",
        ),
    ];
    for (method, body, code, needle) in cases {
        let err = stack
            .call("p1", method, &body)
            .await
            .expect_err("must be refused");
        assert_eq!(err.code, code, "{method} {body}: {err:?}");
        assert!(err.message.contains(needle), "{method} {body}: {err:?}");
    }
    // Snapshot of a deleting volume.
    let doomed = new_volume(&stack, json!({"size_gib": 1})).await;
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
    let err = stack
        .call("p1", SNAP, &json!({"volume_id": doomed}))
        .await
        .expect_err("deleting volume");
    assert_eq!(err.code, "FailedPrecondition", "{err:?}");
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        2,
        "no volume row written by a refusal"
    );
    let listed = stack
        .call("p1", "scoria.v1.SnapshotService/ListSnapshots", &json!({}))
        .await
        .expect("list");
    assert!(
        listed.get("snapshots").is_none(),
        "no snapshot row written: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_types_steer_scheduling_and_zones_are_listed() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let types = "scoria.v1.VolumeTypeService";
    // Writes are for admins only.
    let err = stack
        .call(
            "p1",
            &format!("{types}/CreateVolumeType"),
            &json!({"name": "gold"}),
        )
        .await
        .expect_err("member may not create types");
    assert_eq!(err.code, "PermissionDenied", "{err:?}");
    let pinned = stack
        .call_admin(
            "p1",
            &format!("{types}/CreateVolumeType"),
            &json!({"name": "pinned", "extra_specs": {"volume_backend_name": "file"}}),
        )
        .await
        .expect("create type");
    assert_eq!(pinned["extraSpecs"]["volume_backend_name"], "file");
    stack
        .call_admin(
            "p1",
            &format!("{types}/CreateVolumeType"),
            &json!({"name": "shared", "extra_specs": {"multiattach": "<is> False"}}),
        )
        .await
        .expect("create type");
    stack
        .call_admin(
            "p1",
            &format!("{types}/CreateVolumeType"),
            &json!({"name": "elsewhere", "extra_specs": {"volume_backend_name": "ceph"}}),
        )
        .await
        .expect("create type");
    let dup = stack
        .call_admin(
            "p1",
            &format!("{types}/CreateVolumeType"),
            &json!({"name": "pinned"}),
        )
        .await
        .expect_err("duplicate name");
    assert_eq!(dup.code, "AlreadyExists", "{dup:?}");
    let listed = stack
        .call("p1", &format!("{types}/ListVolumeTypes"), &json!({}))
        .await
        .expect("list");
    let names: Vec<&str> = listed["volumeTypes"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pinned") && names.contains(&"__DEFAULT__"),
        "{names:?}"
    );

    let ok = new_volume(&stack, json!({"size_gib": 1, "volume_type": "pinned"})).await;
    let got = stack
        .call("p1", GET, &json!({"id": ok}))
        .await
        .expect("get");
    assert_eq!(got["volumeType"], "pinned");
    let default = new_volume(&stack, json!({"size_gib": 1})).await;
    let got = stack
        .call("p1", GET, &json!({"id": default}))
        .await
        .expect("get");
    assert_eq!(got["volumeType"], "__DEFAULT__");
    for unmatched in ["shared", "elsewhere"] {
        let v = stack
            .call(
                "p1",
                CREATE,
                &json!({"size_gib": 1, "volume_type": unmatched}),
            )
            .await
            .expect("create");
        let failed = stack
            .wait_status("p1", &id(&v), "VOLUME_STATUS_ERROR")
            .await;
        assert!(
            failed["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("No valid backend"),
            "{failed}"
        );
    }
    let in_use = stack
        .call_admin(
            "p1",
            &format!("{types}/DeleteVolumeType"),
            &json!({"id_or_name": "pinned"}),
        )
        .await
        .expect_err("type in use");
    assert_eq!(in_use.code, "FailedPrecondition", "{in_use:?}");

    let zones = stack
        .call(
            "p1",
            "scoria.v1.AvailabilityZoneService/ListAvailabilityZones",
            &json!({}),
        )
        .await
        .expect("zones");
    assert_eq!(zones["availabilityZones"][0]["name"], "default", "{zones}");
    assert_eq!(zones["availabilityZones"][0]["available"], true, "{zones}");
    let placed = new_volume(
        &stack,
        json!({"size_gib": 1, "availability_zone": "default"}),
    )
    .await;
    let got = stack
        .call("p1", GET, &json!({"id": placed}))
        .await
        .expect("get");
    assert_eq!(got["availabilityZone"], "default");
}
