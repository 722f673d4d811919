//! Attachments through the real processes: volumes exported over NBD by
//! `qemu-nbd`, bytes written and read back with `qemu-io` through the returned
//! URI, on the `file` and the `qcow2` drivers; multiattach and read-only exports;
//! Cinder's in-use rules; attach racing delete; exports across a volume service
//! restart; the attach/detach notifications.

use std::time::{Duration, Instant};

use scoria_common::{
    db::AttachmentQuery,
    rpc::{Broker, Priority, notifier::NotificationReader},
};
use scoria_tests::{
    bus_config,
    stack::{DbKind, GrpcError, Stack},
};
use serde_json::{Value, json};

const CREATE: &str = "scoria.v1.VolumeService/CreateVolume";
const GET: &str = "scoria.v1.VolumeService/GetVolume";
const DELETE: &str = "scoria.v1.VolumeService/DeleteVolume";
const EXTEND: &str = "scoria.v1.VolumeService/ExtendVolume";
const SNAP: &str = "scoria.v1.SnapshotService/CreateSnapshot";
const GET_SNAP: &str = "scoria.v1.SnapshotService/GetSnapshot";
const ATTACH: &str = "scoria.v1.AttachmentService/CreateAttachment";
const GET_ATT: &str = "scoria.v1.AttachmentService/GetAttachment";
const LIST_ATT: &str = "scoria.v1.AttachmentService/ListAttachments";
const DETACH: &str = "scoria.v1.AttachmentService/DeleteAttachment";
const CREATE_TYPE: &str = "scoria.v1.VolumeTypeService/CreateVolumeType";
const RESET: &str = "scoria.v1.AdminService/ResetVolumeStatus";

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

fn attach_body(volume_id: &str) -> Value {
    json!({
        "volume_id": volume_id,
        "connector": {"host": "compute-1", "ip": "10.0.0.5", "properties": {"os": "linux"}},
        "instance_id": "vm-1",
    })
}

async fn attach(stack: &Stack, volume_id: &str) -> Value {
    let attached = stack
        .call("p1", ATTACH, &attach_body(volume_id))
        .await
        .unwrap_or_else(|e| panic!("attach {volume_id}: {e:?}\n{}", stack.logs()));
    assert_eq!(
        attached["status"], "ATTACHMENT_STATUS_ATTACHED",
        "{attached}"
    );
    attached
}

async fn detach(stack: &Stack, attachment: &Value) {
    stack
        .call("p1", DETACH, &json!({"id": attachment["id"]}))
        .await
        .unwrap_or_else(|e| panic!("detach {attachment}: {e:?}\n{}", stack.logs()));
}

fn uri(attachment: &Value) -> String {
    attachment["connectionInfo"]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no uri in {attachment}"))
        .to_owned()
}

fn port(attachment: &Value) -> u16 {
    attachment["connectionInfo"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no port in {attachment}"))
}

/// `qemu-io -f raw [-r] -c <command> <uri>`: `write -P <pattern> <offset> 1M` or
/// `read -P ...` (a read fails when the bytes differ from the pattern).
fn qemu_io(uri: &str, command: &str, read_only: bool) -> Result<(), String> {
    let mut cmd = std::process::Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    if read_only {
        cmd.arg("-r");
    }
    let out = cmd
        .args(["-c", command, uri])
        .output()
        .expect("qemu-io is needed (apt-get install qemu-utils, or run scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text.contains("Pattern verification failed")
        || text.to_lowercase().contains("error")
        || text.contains("failed");
    if out.status.success() && !failed {
        Ok(())
    } else {
        Err(format!("qemu-io {command} {uri}: {text}"))
    }
}

/// Whether something accepts connections on 127.0.0.1:`port` (the export host of
/// the test stack).
fn listening(host: &str, port: u16) -> bool {
    let addr = format!("{host}:{port}");
    addr.parse()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

/// Waits until nothing listens on the attachment's export address.
async fn wait_closed(stack: &Stack, attachment: &Value) {
    let host = attachment["connectionInfo"]["host"]
        .as_str()
        .unwrap_or("127.0.0.1")
        .to_owned();
    let port = port(attachment);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening(&host, port) {
        assert!(
            Instant::now() < deadline,
            "the export on {host}:{port} is still open\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a `qemu-nbd` process serves volume `id`.
fn exported(id: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", &format!("qemu-nbd.*volume-{id}")])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

async fn attachment_rows(stack: &Stack, volume_id: Option<&str>) -> usize {
    stack
        .db
        .list_attachments(&AttachmentQuery {
            volume_id: volume_id.map(str::to_owned),
            ..AttachmentQuery::default()
        })
        .await
        .expect("list attachment rows")
        .len()
}

async fn volume_status(stack: &Stack, id: &str) -> Value {
    stack
        .call("p1", GET, &json!({"id": id}))
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e:?}"))["status"]
        .clone()
}

async fn wait_gone(stack: &Stack, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match stack.call("p1", GET, &json!({"id": id})).await {
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

// === attach, write, detach, re-attach, read ===

async fn attach_write_detach_read(driver: &str) {
    let env = [
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let notifications = Broker::connect(
        bus_config(&stack.exchange),
        "reader",
        Duration::from_secs(10),
    )
    .await
    .expect("broker");
    let mut reader = NotificationReader::open(&notifications, Priority::Info)
        .await
        .expect("reader");
    let volume_id = new_volume(&stack, json!({"name": "data", "size_gib": 1})).await;

    let first = attach(&stack, &volume_id).await;
    let info = &first["connectionInfo"];
    assert_eq!(info["protocol"], "nbd", "{first}");
    assert!(
        info["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{first}"
    );
    assert!(port(&first) > 0);
    let export_name = info["exportName"].as_str().expect("export name");
    assert!(export_name.contains(&volume_id), "{first}");
    assert_eq!(
        uri(&first),
        format!(
            "nbd://{}:{}/{export_name}",
            info["host"].as_str().unwrap(),
            port(&first)
        )
    );
    assert_eq!(first["volumeId"], volume_id.as_str());
    assert_eq!(first["volumeHost"], stack.volume_host.as_str());
    assert_eq!(first["connector"]["host"], "compute-1");
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        "VOLUME_STATUS_IN_USE"
    );
    let got = stack
        .call("p1", GET_ATT, &json!({"id": first["id"]}))
        .await
        .expect("get attachment");
    assert_eq!(got["connectionInfo"]["uri"], uri(&first).as_str());
    let listed = stack
        .call("p1", LIST_ATT, &json!({"volume_id": volume_id}))
        .await
        .expect("list");
    assert_eq!(listed["attachments"][0]["id"], first["id"]);
    assert!(exported(&volume_id));

    qemu_io(&uri(&first), "write -P 0x5a 0 1M", false).expect("write through the export");
    qemu_io(&uri(&first), "read -P 0x5a 0 1M", false).expect("read it back");

    detach(&stack, &first).await;
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        "VOLUME_STATUS_AVAILABLE"
    );
    wait_closed(&stack, &first).await;
    assert!(!exported(&volume_id), "qemu-nbd outlived the attachment");
    assert_eq!(attachment_rows(&stack, Some(&volume_id)).await, 0);
    let gone = stack
        .call("p1", GET_ATT, &json!({"id": first["id"]}))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code, "NotFound");

    // The bytes are the volume's: a new attachment reads them.
    let second = attach(&stack, &volume_id).await;
    assert_ne!(second["id"], first["id"]);
    qemu_io(&uri(&second), "read -P 0x5a 0 1M", false).expect("the pattern, re-attached");
    qemu_io(&uri(&second), "read -P 0x00 1M 1M", false).expect("zeros after it");
    detach(&stack, &second).await;
    wait_closed(&stack, &second).await;
    stack
        .call("p1", DELETE, &json!({"id": volume_id}))
        .await
        .expect("delete the detached volume");
    wait_gone(&stack, &volume_id).await;

    let mut events = Vec::new();
    while let Some(n) = reader.next(Duration::from_secs(3)).await.expect("read") {
        if n.event_type.starts_with("volume.attach") || n.event_type.starts_with("volume.detach") {
            events.push(n.event_type);
        }
        if events.len() == 8 {
            break;
        }
    }
    let expected: Vec<&str> = [
        "volume.attach.start",
        "volume.attach.end",
        "volume.detach.start",
        "volume.detach.end",
    ]
    .repeat(2);
    assert_eq!(events, expected);
    notifications.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_write_detach_read_on_file() {
    attach_write_detach_read("file").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_write_detach_read_on_qcow2() {
    attach_write_detach_read("qcow2").await;
}

// === multiattach and read-only ===

#[tokio::test(flavor = "multi_thread")]
async fn multiattach_and_read_only() {
    let stack = Stack::start(DbKind::Sqlite).await;
    stack
        .call_admin(
            "p1",
            CREATE_TYPE,
            &json!({"name": "shared", "extra_specs": {"multiattach": "<is> True"}}),
        )
        .await
        .expect("create the multiattach type");
    let shared = new_volume(
        &stack,
        json!({"name": "shared", "size_gib": 1, "volume_type": "shared"}),
    )
    .await;
    let a = attach(&stack, &shared).await;
    let b = attach(&stack, &shared).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(volume_status(&stack, &shared).await, "VOLUME_STATUS_IN_USE");
    qemu_io(&uri(&a), "write -P 0x11 0 1M", false).expect("write through a");
    qemu_io(&uri(&b), "read -P 0x11 0 1M", false).expect("b sees a's write");
    qemu_io(&uri(&b), "write -P 0x22 1M 1M", false).expect("write through b");
    qemu_io(&uri(&a), "read -P 0x22 1M 1M", false).expect("a sees b's write");
    detach(&stack, &a).await;
    assert_eq!(
        volume_status(&stack, &shared).await,
        "VOLUME_STATUS_IN_USE",
        "b still holds it"
    );
    qemu_io(&uri(&b), "read -P 0x11 0 1M", false).expect("b still works");
    detach(&stack, &b).await;
    assert_eq!(
        volume_status(&stack, &shared).await,
        "VOLUME_STATUS_AVAILABLE"
    );
    wait_closed(&stack, &b).await;

    // Without the spec: one attachment at a time.
    let single = new_volume(&stack, json!({"name": "single", "size_gib": 1})).await;
    let only = attach(&stack, &single).await;
    let second = stack
        .call("p1", ATTACH, &attach_body(&single))
        .await
        .expect_err("not multiattach");
    assert_eq!(second.code, "FailedPrecondition", "{second:?}");
    assert!(second.message.contains("multiattach"), "{second:?}");
    assert_eq!(attachment_rows(&stack, Some(&single)).await, 1);
    qemu_io(&uri(&only), "write -P 0x33 0 1M", false).expect("write");
    detach(&stack, &only).await;
    wait_closed(&stack, &only).await;

    // Read-only: the export refuses writes and serves reads.
    let mut body = attach_body(&single);
    body["mode"] = json!("ATTACH_MODE_RO");
    let ro = stack
        .call("p1", ATTACH, &body)
        .await
        .unwrap_or_else(|e| panic!("ro attach: {e:?}\n{}", stack.logs()));
    assert_eq!(ro["mode"], "ATTACH_MODE_RO");
    assert_eq!(ro["connectionInfo"]["readOnly"], true, "{ro}");
    let refused = qemu_io(&uri(&ro), "write -P 0x44 0 1M", false);
    let refused = refused.expect_err("a write through a read-only export worked");
    // qemu refuses to open a read-only NBD export for writing.
    assert!(
        refused.contains("Permission denied") || refused.contains("read-only"),
        "{refused}"
    );
    qemu_io(&uri(&ro), "read -P 0x33 0 1M", true).expect("read through the ro export");
    detach(&stack, &ro).await;
    wait_closed(&stack, &ro).await;
}

// === bad input ===

#[tokio::test(flavor = "multi_thread")]
async fn bad_attach_requests_write_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    // Reflection lists the service, so grpcurl users find it.
    let listed = std::process::Command::new("grpcurl")
        .args(["-plaintext", &stack.api, "list"])
        .output()
        .expect("grpcurl");
    let services = String::from_utf8_lossy(&listed.stdout);
    assert!(
        services
            .lines()
            .any(|l| l.trim() == "scoria.v1.AttachmentService"),
        "{services}"
    );
    let volume_id = new_volume(&stack, json!({"size_gib": 1})).await;
    let check = |e: GrpcError, code: &str, needle: &str| {
        assert_eq!(e.code, code, "{e:?}");
        assert!(e.message.contains(needle), "{needle} not in {e:?}");
    };
    let unknown = "0b5c8f3e-7d6a-4c1e-9a53-2f1e0d9c8b7a";
    let e = stack
        .call("p1", ATTACH, &attach_body(unknown))
        .await
        .expect_err("unknown");
    check(e, "NotFound", unknown);
    let e = stack
        .call("p2", ATTACH, &attach_body(&volume_id))
        .await
        .expect_err("another project's");
    check(e, "NotFound", &volume_id);
    let e = stack
        .call("p1", ATTACH, &attach_body("not-a-uuid"))
        .await
        .expect_err("bad uuid");
    check(e, "InvalidArgument", "volume_id");
    let e = stack
        .call(
            "p1",
            ATTACH,
            &json!({"volume_id": volume_id, "connector": {"ip": "10.0.0.5"}}),
        )
        .await
        .expect_err("no host");
    check(e, "InvalidArgument", "connector.host");
    let e = stack
        .call("p1", ATTACH, &json!({"volume_id": volume_id}))
        .await
        .expect_err("no connector");
    check(e, "InvalidArgument", "connector");

    stack
        .call_admin(
            "p1",
            RESET,
            &json!({"volume_id": volume_id, "status": "VOLUME_STATUS_ERROR"}),
        )
        .await
        .expect("reset to error");
    let e = stack
        .call("p1", ATTACH, &attach_body(&volume_id))
        .await
        .expect_err("error volume");
    check(e, "FailedPrecondition", "error");

    assert_eq!(attachment_rows(&stack, None).await, 0);
    assert!(!exported(&volume_id));
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        "VOLUME_STATUS_ERROR"
    );
}

// === Cinder's in-use rules ===

#[tokio::test(flavor = "multi_thread")]
async fn in_use_volumes_are_guarded() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let volume_id = new_volume(&stack, json!({"size_gib": 1})).await;
    let attached = attach(&stack, &volume_id).await;

    let e = stack
        .call("p1", DELETE, &json!({"id": volume_id}))
        .await
        .expect_err("delete while attached");
    assert_eq!(e.code, "FailedPrecondition", "{e:?}");
    assert!(e.message.contains("attachments first"), "{e:?}");
    let e = stack
        .call("p1", EXTEND, &json!({"id": volume_id, "new_size_gib": 2}))
        .await
        .expect_err("extend while attached");
    assert_eq!(e.code, "FailedPrecondition", "{e:?}");
    assert!(e.message.contains("detach"), "{e:?}");
    let e = stack
        .call("p1", SNAP, &json!({"volume_id": volume_id, "name": "s"}))
        .await
        .expect_err("snapshot without force");
    assert_eq!(e.code, "FailedPrecondition", "{e:?}");
    assert!(e.message.contains("force"), "{e:?}");

    let snap = stack
        .call(
            "p1",
            SNAP,
            &json!({"volume_id": volume_id, "name": "s", "force": true}),
        )
        .await
        .unwrap_or_else(|e| panic!("forced snapshot: {e:?}\n{}", stack.logs()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = stack.call("p1", GET_SNAP, &json!({"id": snap["id"]})).await;
        if matches!(&got, Ok(s) if s["status"] == "SNAPSHOT_STATUS_AVAILABLE") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot never available: {got:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still attached and in use throughout.
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        "VOLUME_STATUS_IN_USE"
    );
    qemu_io(&uri(&attached), "read -P 0x00 0 1M", false).expect("the export still works");
    assert_eq!(
        stack
            .call("p1", GET, &json!({"id": volume_id}))
            .await
            .expect("get")["sizeGib"],
        "1"
    );
    detach(&stack, &attached).await;
}

// === attach racing delete ===

#[tokio::test(flavor = "multi_thread")]
async fn attach_racing_delete_has_one_winner_on_sqlite() {
    attach_racing_delete(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_racing_delete_has_one_winner_on_postgres() {
    attach_racing_delete(DbKind::Postgres).await;
}

async fn attach_racing_delete(kind: DbKind) {
    let stack = Stack::start(kind).await;
    let (mut attaches, mut deletes) = (0, 0);
    for round in 0..20 {
        let volume_id = new_volume(
            &stack,
            json!({"name": format!("race-{round}"), "size_gib": 1}),
        )
        .await;
        let (attach_req, delete_req) = (attach_body(&volume_id), json!({"id": volume_id}));
        let (attached, deleted) = tokio::join!(
            stack.call("p1", ATTACH, &attach_req),
            stack.call("p1", DELETE, &delete_req),
        );
        match (attached, deleted) {
            (Ok(attachment), Err(e)) => {
                attaches += 1;
                assert_eq!(e.code, "FailedPrecondition", "round {round}: {e:?}");
                assert_eq!(attachment["status"], "ATTACHMENT_STATUS_ATTACHED");
                assert_eq!(
                    volume_status(&stack, &volume_id).await,
                    "VOLUME_STATUS_IN_USE"
                );
                assert!(
                    exported(&volume_id),
                    "round {round}: attached but not exported"
                );
                assert_eq!(attachment_rows(&stack, Some(&volume_id)).await, 1);
                detach(&stack, &attachment).await;
            }
            (Err(e), Ok(_)) => {
                deletes += 1;
                // The volume is deleting (or already gone) when the attach looks.
                assert!(
                    e.code == "FailedPrecondition" || e.code == "NotFound",
                    "round {round}: {e:?}"
                );
                wait_gone(&stack, &volume_id).await;
                assert_eq!(attachment_rows(&stack, Some(&volume_id)).await, 0);
                assert!(!exported(&volume_id), "round {round}: deleted but exported");
            }
            (a, d) => panic!(
                "round {round}: not exactly one winner: attach {a:?}, delete {d:?}\n{}",
                stack.logs()
            ),
        }
    }
    eprintln!("attach won {attaches} rounds, delete {deletes}");
}

// === exports across a volume service restart ===

async fn export_survives(stack: &mut Stack, kill: bool) {
    let volume_id = new_volume(stack, json!({"size_gib": 1})).await;
    let attached = attach(stack, &volume_id).await;
    let uri = uri(&attached);
    qemu_io(&uri, "write -P 0x5a 0 1M", false).expect("write");
    if kill {
        stack.kill_service("scoria-volume").await;
    } else {
        let code = stack.stop_service("scoria-volume").await;
        assert_eq!(code, Some(0), "SIGTERM should drain and exit 0");
    }
    qemu_io(&uri, "read -P 0x5a 0 1M", false).expect("the export outlives its service");
    stack.start_service("scoria-volume").await;
    qemu_io(&uri, "read -P 0x5a 0 1M", false).expect("the export after the restart");
    let got = stack
        .call("p1", GET_ATT, &json!({"id": attached["id"]}))
        .await
        .expect("get");
    assert_eq!(got["status"], "ATTACHMENT_STATUS_ATTACHED", "{got}");
    detach(stack, &attached).await;
    wait_closed(stack, &attached).await;
    assert!(!exported(&volume_id), "the export outlived its detach");
    assert_eq!(
        volume_status(stack, &volume_id).await,
        "VOLUME_STATUS_AVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_survive_a_volume_service_restart() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    export_survives(&mut stack, true).await;
    export_survives(&mut stack, false).await;
}
