//! Attachments through the real processes: volumes exported over NBD by
//! `qemu-nbd`, bytes written and read back with `qemu-io` through the returned
//! URI, on the `file` and the `qcow2` drivers; multiattach and read-only exports;
//! Cinder's in-use rules; attach racing delete; exports across a volume service
//! restart; the attach/detach notifications.

mod rules;

use std::time::{Duration, Instant};

use scoria_common::{
    db::AttachmentQuery,
    rpc::{Broker, Priority, notifier::NotificationReader},
};
use scoria_tests::{
    bus_config,
    stack::{DbKind, Stack},
};
use tonic::{Code, Response, Status};

use crate::support::{new_volume, pb, sized};

/// An attachment of `volume_id` to `compute-1` for instance `vm-1`.
fn attach_request(volume_id: &str) -> pb::CreateAttachmentRequest {
    pb::CreateAttachmentRequest {
        volume_id: volume_id.to_owned(),
        connector: Some(pb::Connector {
            host: "compute-1".into(),
            ip: "10.0.0.5".into(),
            properties: [("os".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        }),
        instance_id: "vm-1".into(),
        ..Default::default()
    }
}

/// CreateAttachment as a member of `project`.
async fn try_attach(
    stack: &Stack,
    project: &str,
    request: pb::CreateAttachmentRequest,
) -> Result<pb::Attachment, Status> {
    stack
        .attachments(project)
        .create_attachment(request)
        .await
        .map(Response::into_inner)
}

/// Attaches `volume_id` (project `p1`); the attachment is ATTACHED.
async fn attach(stack: &Stack, volume_id: &str) -> pb::Attachment {
    let attached = try_attach(stack, "p1", attach_request(volume_id))
        .await
        .unwrap_or_else(|e| panic!("attach {volume_id}: {e:?}\n{}", stack.logs()));
    assert_eq!(
        attached.status(),
        pb::AttachmentStatus::Attached,
        "{attached:?}"
    );
    attached
}

async fn detach(stack: &Stack, attachment: &pb::Attachment) {
    stack
        .attachments("p1")
        .delete_attachment(pb::DeleteAttachmentRequest {
            id: attachment.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("detach {attachment:?}: {e:?}\n{}", stack.logs()));
}

/// GetAttachment `id` (project `p1`).
async fn get_attachment(stack: &Stack, id: &str) -> Result<pb::Attachment, Status> {
    stack
        .attachments("p1")
        .get_attachment(pb::GetAttachmentRequest { id: id.to_owned() })
        .await
        .map(Response::into_inner)
}

fn info(attachment: &pb::Attachment) -> &pb::ConnectionInfo {
    attachment
        .connection_info
        .as_ref()
        .unwrap_or_else(|| panic!("no connection info in {attachment:?}"))
}

fn uri(attachment: &pb::Attachment) -> String {
    let uri = &info(attachment).uri;
    assert!(!uri.is_empty(), "no uri in {attachment:?}");
    uri.clone()
}

fn port(attachment: &pb::Attachment) -> u16 {
    u16::try_from(info(attachment).port)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("no port in {attachment:?}"))
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

/// Whether something accepts connections on `host`:`port`.
fn listening(host: &str, port: u16) -> bool {
    let addr = format!("{host}:{port}");
    addr.parse()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

/// Waits until nothing listens on the attachment's export address.
async fn wait_closed(stack: &Stack, attachment: &pb::Attachment) {
    let host = match info(attachment).host.as_str() {
        "" => "127.0.0.1",
        host => host,
    };
    let port = port(attachment);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening(host, port) {
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

async fn volume_status(stack: &Stack, id: &str) -> pb::VolumeStatus {
    stack
        .get_volume("p1", id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e:?}"))
        .status()
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
    let data = pb::CreateVolumeRequest {
        name: "data".into(),
        ..sized(1)
    };
    let volume_id = new_volume(&stack, data).await;

    let first = attach(&stack, &volume_id).await;
    let connection = info(&first);
    assert_eq!(connection.protocol, "nbd", "{first:?}");
    assert!(!connection.host.is_empty(), "{first:?}");
    assert!(port(&first) > 0);
    let export_name = &connection.export_name;
    assert!(export_name.contains(&volume_id), "{first:?}");
    assert_eq!(
        uri(&first),
        format!("nbd://{}:{}/{export_name}", connection.host, port(&first))
    );
    assert_eq!(first.volume_id, volume_id);
    assert_eq!(first.volume_host, stack.volume_host);
    assert_eq!(
        first.connector.as_ref().map(|c| c.host.as_str()),
        Some("compute-1")
    );
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        pb::VolumeStatus::InUse
    );
    let got = get_attachment(&stack, &first.id)
        .await
        .expect("get attachment");
    assert_eq!(uri(&got), uri(&first));
    let listed = stack
        .attachments("p1")
        .list_attachments(pb::ListAttachmentsRequest {
            volume_id: volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.attachments[0].id, first.id);
    assert!(exported(&volume_id));

    qemu_io(&uri(&first), "write -P 0x5a 0 1M", false).expect("write through the export");
    qemu_io(&uri(&first), "read -P 0x5a 0 1M", false).expect("read it back");

    detach(&stack, &first).await;
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        pb::VolumeStatus::Available
    );
    wait_closed(&stack, &first).await;
    assert!(!exported(&volume_id), "qemu-nbd outlived the attachment");
    assert_eq!(attachment_rows(&stack, Some(&volume_id)).await, 0);
    let gone = get_attachment(&stack, &first.id)
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);

    // The bytes are the volume's: a new attachment reads them.
    let second = attach(&stack, &volume_id).await;
    assert_ne!(second.id, first.id);
    qemu_io(&uri(&second), "read -P 0x5a 0 1M", false).expect("the pattern, re-attached");
    qemu_io(&uri(&second), "read -P 0x00 1M 1M", false).expect("zeros after it");
    detach(&stack, &second).await;
    wait_closed(&stack, &second).await;
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume_id.clone(),
        })
        .await
        .expect("delete the detached volume");
    stack.wait_volume_gone("p1", &volume_id).await;

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
        .types_admin("p1")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "shared".into(),
            extra_specs: [("multiattach".to_owned(), "<is> True".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("create the multiattach type");
    let shared = pb::CreateVolumeRequest {
        name: "shared".into(),
        volume_type: "shared".into(),
        ..sized(1)
    };
    let shared = new_volume(&stack, shared).await;
    let a = attach(&stack, &shared).await;
    let b = attach(&stack, &shared).await;
    assert_ne!(a.id, b.id);
    assert_eq!(
        volume_status(&stack, &shared).await,
        pb::VolumeStatus::InUse
    );
    qemu_io(&uri(&a), "write -P 0x11 0 1M", false).expect("write through a");
    qemu_io(&uri(&b), "read -P 0x11 0 1M", false).expect("b sees a's write");
    qemu_io(&uri(&b), "write -P 0x22 1M 1M", false).expect("write through b");
    qemu_io(&uri(&a), "read -P 0x22 1M 1M", false).expect("a sees b's write");
    detach(&stack, &a).await;
    assert_eq!(
        volume_status(&stack, &shared).await,
        pb::VolumeStatus::InUse,
        "b still holds it"
    );
    qemu_io(&uri(&b), "read -P 0x11 0 1M", false).expect("b still works");
    detach(&stack, &b).await;
    assert_eq!(
        volume_status(&stack, &shared).await,
        pb::VolumeStatus::Available
    );
    wait_closed(&stack, &b).await;

    // Without the spec: one attachment at a time.
    let single = pb::CreateVolumeRequest {
        name: "single".into(),
        ..sized(1)
    };
    let single = new_volume(&stack, single).await;
    let only = attach(&stack, &single).await;
    let second = try_attach(&stack, "p1", attach_request(&single))
        .await
        .expect_err("not multiattach");
    assert_eq!(second.code(), Code::FailedPrecondition, "{second:?}");
    assert!(second.message().contains("multiattach"), "{second:?}");
    assert_eq!(attachment_rows(&stack, Some(&single)).await, 1);
    qemu_io(&uri(&only), "write -P 0x33 0 1M", false).expect("write");
    detach(&stack, &only).await;
    wait_closed(&stack, &only).await;

    // Read-only: the export refuses writes and serves reads.
    let read_only = pb::CreateAttachmentRequest {
        mode: pb::AttachMode::Ro.into(),
        ..attach_request(&single)
    };
    let ro = try_attach(&stack, "p1", read_only)
        .await
        .unwrap_or_else(|e| panic!("ro attach: {e:?}\n{}", stack.logs()));
    assert_eq!(ro.mode(), pb::AttachMode::Ro);
    assert!(info(&ro).read_only, "{ro:?}");
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
