//! Malformed input against one real stack (SQLite): every RPC of every public
//! service gets bad fields and must answer the right code naming the field, and
//! every queue the services consume gets garbage, unknown methods and wrongly
//! typed protobuf, which must be dead-lettered. Neither may write anything, and
//! the stack must still work afterwards.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use prost::Message;
use scoria_proto::bus::{CreateSnapshot, DetachResult, ScheduleCreateVolume};
use scoria_tests::stack::{DbKind, Stack};
use serde_json::{Value, json};

const VOLUMES: &str = "scoria.v1.VolumeService";
const SNAPSHOTS: &str = "scoria.v1.SnapshotService";
const TYPES: &str = "scoria.v1.VolumeTypeService";
const ZONES: &str = "scoria.v1.AvailabilityZoneService";
const ADMIN: &str = "scoria.v1.AdminService";
const ATTACHMENTS: &str = "scoria.v1.AttachmentService";

/// A well-formed id nothing has.
const UNKNOWN_ID: &str = "0b5c8f3e-0000-4000-8000-00000000dead";

/// The tables a request or a message could write to; `services` is left out
/// (heartbeats write it all the time).
const COUNTS: [(&str, &str); 6] = [
    ("volumes", "SELECT COUNT(*) FROM volumes"),
    ("snapshots", "SELECT COUNT(*) FROM snapshots"),
    ("volume_types", "SELECT COUNT(*) FROM volume_types"),
    ("attachments", "SELECT COUNT(*) FROM attachments"),
    ("idempotency", "SELECT COUNT(*) FROM idempotency"),
    ("workers", "SELECT COUNT(*) FROM workers"),
];

async fn counts(stack: &Stack) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (table, sql) in COUNTS {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(stack.db.pool())
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"));
        out.push((table, n));
    }
    out
}

/// One bad request and what it must get.
struct Case {
    /// `Service/Method`.
    method: String,
    body: Value,
    /// As an admin (else a member).
    admin: bool,
    /// The gRPC code name.
    code: &'static str,
    /// What the message must name: the field, or the unknown id.
    names: String,
}

fn case(service: &str, method: &str, body: Value, code: &'static str, names: &str) -> Case {
    Case {
        method: format!("{service}/{method}"),
        body,
        admin: false,
        code,
        names: names.to_owned(),
    }
}

fn admin_case(service: &str, method: &str, body: Value, code: &'static str, names: &str) -> Case {
    Case {
        admin: true,
        ..case(service, method, body, code, names)
    }
}

fn bad(service: &str, method: &str, body: Value, field: &str) -> Case {
    case(service, method, body, "InvalidArgument", field)
}

fn admin_bad(service: &str, method: &str, body: Value, field: &str) -> Case {
    admin_case(service, method, body, "InvalidArgument", field)
}

fn unknown(service: &str, method: &str, body: Value) -> Case {
    case(service, method, body, "NotFound", UNKNOWN_ID)
}

/// `n` metadata-like entries.
fn entries(n: usize) -> Value {
    Value::Object(
        (0..n)
            .map(|i| (format!("k{i}"), Value::String("v".into())))
            .collect(),
    )
}

/// The table: `volume` is an available volume of project `p1`.
fn cases(volume: &str) -> Vec<Case> {
    let long = "x".repeat(256);
    let huge = "18446744073709551615";
    let mut c = vec![
        // === VolumeService ===
        bad(VOLUMES, "CreateVolume", json!({}), "size_gib"),
        bad(VOLUMES, "CreateVolume", json!({"size_gib": 0}), "size_gib"),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": huge}),
            "size_gib",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "name": long}),
            "name",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "description": long}),
            "description",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "volume_type": long}),
            "volume_type",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "availability_zone": long}),
            "availability_zone",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "metadata": entries(129)}),
            "metadata",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "metadata": {"": "v"}}),
            "metadata",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "metadata": {"k": long}}),
            "metadata",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "request_id": long}),
            "request_id",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "snapshot_id": "not-a-uuid"}),
            "snapshot_id",
        ),
        bad(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "source_volume_id": "../../etc"}),
            "source_volume_id",
        ),
        unknown(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "snapshot_id": UNKNOWN_ID}),
        ),
        unknown(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "source_volume_id": UNKNOWN_ID}),
        ),
        case(
            VOLUMES,
            "CreateVolume",
            json!({"size_gib": 1, "volume_type": "no-such-type"}),
            "NotFound",
            "no-such-type",
        ),
        bad(VOLUMES, "GetVolume", json!({}), "id"),
        bad(VOLUMES, "GetVolume", json!({"id": "garbage"}), "id"),
        bad(
            VOLUMES,
            "GetVolume",
            json!({"id": format!("{UNKNOWN_ID}x")}),
            "id",
        ),
        unknown(VOLUMES, "GetVolume", json!({"id": UNKNOWN_ID})),
        bad(
            VOLUMES,
            "ListVolumes",
            json!({"page_size": -1}),
            "page_size",
        ),
        bad(
            VOLUMES,
            "ListVolumes",
            json!({"page_size": 1001}),
            "page_size",
        ),
        bad(
            VOLUMES,
            "ListVolumes",
            json!({"page_token": "garbage"}),
            "page_token",
        ),
        bad(
            VOLUMES,
            "ListVolumes",
            json!({"page_token": "eyJpZCI6IngifQ"}),
            "page_token",
        ),
        bad(VOLUMES, "ListVolumes", json!({"status": 99}), "status"),
        bad(VOLUMES, "ListVolumes", json!({"name": long}), "name"),
        bad(VOLUMES, "UpdateVolume", json!({"name": "n"}), "id"),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": "garbage", "name": "n"}),
            "id",
        ),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": volume, "update_mask": {"paths": ["size_gib"]}, "name": "n"}),
            "update_mask",
        ),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": volume, "update_mask": {"paths": ["name", "status"]}}),
            "update_mask",
        ),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": volume, "update_mask": {"paths": ["name"]}, "name": long}),
            "name",
        ),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": volume, "description": long}),
            "description",
        ),
        bad(
            VOLUMES,
            "UpdateVolume",
            json!({"id": volume, "metadata": entries(129)}),
            "metadata",
        ),
        unknown(
            VOLUMES,
            "UpdateVolume",
            json!({"id": UNKNOWN_ID, "name": "n"}),
        ),
        bad(VOLUMES, "DeleteVolume", json!({}), "id"),
        bad(VOLUMES, "DeleteVolume", json!({"id": "*"}), "id"),
        unknown(VOLUMES, "DeleteVolume", json!({"id": UNKNOWN_ID})),
        bad(
            VOLUMES,
            "ExtendVolume",
            json!({"id": "garbage", "new_size_gib": 2}),
            "id",
        ),
        bad(
            VOLUMES,
            "ExtendVolume",
            json!({"id": volume}),
            "new_size_gib",
        ),
        bad(
            VOLUMES,
            "ExtendVolume",
            json!({"id": volume, "new_size_gib": 1}),
            "new_size_gib",
        ),
        bad(
            VOLUMES,
            "ExtendVolume",
            json!({"id": volume, "new_size_gib": huge}),
            "new_size_gib",
        ),
        unknown(
            VOLUMES,
            "ExtendVolume",
            json!({"id": UNKNOWN_ID, "new_size_gib": 2}),
        ),
        // === SnapshotService ===
        bad(SNAPSHOTS, "CreateSnapshot", json!({}), "volume_id"),
        bad(
            SNAPSHOTS,
            "CreateSnapshot",
            json!({"volume_id": "garbage"}),
            "volume_id",
        ),
        bad(
            SNAPSHOTS,
            "CreateSnapshot",
            json!({"volume_id": volume, "name": long}),
            "name",
        ),
        bad(
            SNAPSHOTS,
            "CreateSnapshot",
            json!({"volume_id": volume, "description": long}),
            "description",
        ),
        unknown(
            SNAPSHOTS,
            "CreateSnapshot",
            json!({"volume_id": UNKNOWN_ID}),
        ),
        bad(SNAPSHOTS, "GetSnapshot", json!({}), "id"),
        bad(SNAPSHOTS, "GetSnapshot", json!({"id": "garbage"}), "id"),
        unknown(SNAPSHOTS, "GetSnapshot", json!({"id": UNKNOWN_ID})),
        bad(
            SNAPSHOTS,
            "ListSnapshots",
            json!({"page_size": -5}),
            "page_size",
        ),
        bad(
            SNAPSHOTS,
            "ListSnapshots",
            json!({"page_token": "garbage"}),
            "page_token",
        ),
        bad(SNAPSHOTS, "ListSnapshots", json!({"status": 42}), "status"),
        bad(
            SNAPSHOTS,
            "ListSnapshots",
            json!({"volume_id": "garbage"}),
            "volume_id",
        ),
        bad(SNAPSHOTS, "DeleteSnapshot", json!({}), "id"),
        bad(SNAPSHOTS, "DeleteSnapshot", json!({"id": "garbage"}), "id"),
        unknown(SNAPSHOTS, "DeleteSnapshot", json!({"id": UNKNOWN_ID})),
        // === VolumeTypeService (writes are admin only) ===
        admin_bad(TYPES, "CreateVolumeType", json!({}), "name"),
        admin_bad(TYPES, "CreateVolumeType", json!({"name": "  "}), "name"),
        admin_bad(TYPES, "CreateVolumeType", json!({"name": long}), "name"),
        admin_bad(
            TYPES,
            "CreateVolumeType",
            json!({"name": "t1", "description": long}),
            "description",
        ),
        admin_bad(
            TYPES,
            "CreateVolumeType",
            json!({"name": "t1", "extra_specs": entries(129)}),
            "extra_specs",
        ),
        admin_bad(
            TYPES,
            "CreateVolumeType",
            json!({"name": "t1", "extra_specs": {"": "x"}}),
            "extra_specs",
        ),
        case(
            TYPES,
            "CreateVolumeType",
            json!({"name": "t1"}),
            "PermissionDenied",
            "CreateVolumeType",
        ),
        bad(TYPES, "GetVolumeType", json!({}), "id_or_name"),
        case(
            TYPES,
            "GetVolumeType",
            json!({"id_or_name": "no-such-type"}),
            "NotFound",
            "no-such-type",
        ),
        case(
            TYPES,
            "GetVolumeType",
            json!({"id_or_name": long}),
            "NotFound",
            &long,
        ),
        admin_bad(
            TYPES,
            "UpdateVolumeType",
            json!({"update_mask": {"paths": ["description"]}}),
            "id_or_name",
        ),
        admin_bad(
            TYPES,
            "UpdateVolumeType",
            json!({"id_or_name": "gold", "update_mask": {"paths": ["name"]}}),
            "update_mask",
        ),
        admin_bad(
            TYPES,
            "UpdateVolumeType",
            json!({"id_or_name": "gold", "update_mask": {"paths": ["description"]}, "description": long}),
            "description",
        ),
        admin_case(
            TYPES,
            "UpdateVolumeType",
            json!({"id_or_name": "no-such-type", "update_mask": {"paths": ["description"]}}),
            "NotFound",
            "no-such-type",
        ),
        admin_bad(TYPES, "DeleteVolumeType", json!({}), "id_or_name"),
        admin_case(
            TYPES,
            "DeleteVolumeType",
            json!({"id_or_name": "no-such-type"}),
            "NotFound",
            "no-such-type",
        ),
        // === AdminService (admin only) ===
        case(
            ADMIN,
            "ListServices",
            json!({}),
            "PermissionDenied",
            "ListServices",
        ),
        admin_bad(
            ADMIN,
            "SetServiceEnabled",
            json!({"host": "n1@file", "enabled": true}),
            "binary",
        ),
        admin_bad(
            ADMIN,
            "SetServiceEnabled",
            json!({"binary": "scoria-volume", "enabled": true}),
            "host",
        ),
        admin_bad(
            ADMIN,
            "SetServiceEnabled",
            json!({"binary": "scoria-volume", "host": "n1@file", "enabled": false}),
            "reason",
        ),
        admin_bad(
            ADMIN,
            "SetServiceEnabled",
            json!({"binary": "scoria-volume", "host": "n1@file", "enabled": false, "reason": long}),
            "reason",
        ),
        admin_case(
            ADMIN,
            "SetServiceEnabled",
            json!({"binary": "scoria-volume", "host": "nowhere@file", "enabled": true}),
            "NotFound",
            "nowhere@file",
        ),
        admin_bad(
            ADMIN,
            "ResetVolumeStatus",
            json!({"status": "VOLUME_STATUS_AVAILABLE"}),
            "volume_id",
        ),
        admin_bad(
            ADMIN,
            "ResetVolumeStatus",
            json!({"volume_id": volume}),
            "status",
        ),
        admin_bad(
            ADMIN,
            "ResetVolumeStatus",
            json!({"volume_id": volume, "status": 99}),
            "status",
        ),
        admin_case(
            ADMIN,
            "ResetVolumeStatus",
            json!({"volume_id": UNKNOWN_ID, "status": "VOLUME_STATUS_ERROR"}),
            "NotFound",
            UNKNOWN_ID,
        ),
        admin_bad(ADMIN, "ListPools", json!({"host": "no-backend"}), "host"),
        admin_bad(ADMIN, "ListPools", json!({"host": long}), "host"),
        case(
            ADMIN,
            "ListPools",
            json!({}),
            "PermissionDenied",
            "ListPools",
        ),
    ];
    // === AttachmentService ===
    let connector = json!({"host": "client-1"});
    c.extend([
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"connector": connector}),
            "volume_id",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": "garbage", "connector": connector}),
            "volume_id",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume}),
            "connector",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume, "connector": {"ip": "10.0.0.1"}}),
            "connector.host",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume, "connector": {"host": long}}),
            "connector.host",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume, "connector": {"host": "c", "properties": entries(51)}}),
            "connector.properties",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume, "connector": connector, "mode": 7}),
            "mode",
        ),
        bad(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": volume, "connector": connector, "instance_id": long}),
            "instance_id",
        ),
        unknown(
            ATTACHMENTS,
            "CreateAttachment",
            json!({"volume_id": UNKNOWN_ID, "connector": connector}),
        ),
        bad(ATTACHMENTS, "GetAttachment", json!({}), "id"),
        bad(ATTACHMENTS, "GetAttachment", json!({"id": "garbage"}), "id"),
        unknown(ATTACHMENTS, "GetAttachment", json!({"id": UNKNOWN_ID})),
        bad(
            ATTACHMENTS,
            "ListAttachments",
            json!({"volume_id": "garbage"}),
            "volume_id",
        ),
        bad(
            ATTACHMENTS,
            "ListAttachments",
            json!({"page_token": "garbage"}),
            "page_token",
        ),
        bad(
            ATTACHMENTS,
            "ListAttachments",
            json!({"page_size": 100_000}),
            "page_size",
        ),
        bad(ATTACHMENTS, "DeleteAttachment", json!({}), "id"),
        bad(
            ATTACHMENTS,
            "DeleteAttachment",
            json!({"id": "garbage"}),
            "id",
        ),
        unknown(ATTACHMENTS, "DeleteAttachment", json!({"id": UNKNOWN_ID})),
    ]);
    c
}

/// Runs one case; `Err` says what was wrong.
async fn check(stack: &Stack, case: &Case) -> Result<(), String> {
    let answer = if case.admin {
        stack.call_admin("p1", &case.method, &case.body).await
    } else {
        stack.call("p1", &case.method, &case.body).await
    };
    let what = format!("{} {} (admin: {})", case.method, case.body, case.admin);
    let err = match answer {
        Ok(reply) => return Err(format!("{what}: accepted, answered {reply}")),
        Err(err) => err,
    };
    if err.code != case.code {
        return Err(format!(
            "{what}: expected {}, got {} {:?} ({})",
            case.code, err.code, err.message, err.raw
        ));
    }
    if !err.message.contains(&case.names) {
        return Err(format!(
            "{what}: the message does not name {:?}: {:?}",
            case.names, err.message
        ));
    }
    if case.code == "InvalidArgument" && !err.raw.contains(&format!("\"field\":\"{}\"", case.names))
    {
        return Err(format!(
            "{what}: no BadRequest field violation for {:?}: {}",
            case.names, err.raw
        ));
    }
    Ok(())
}

/// Publishes one raw message to `exchange` with `routing_key`.
async fn publish(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    method: &str,
    message_id: &str,
    body: &[u8],
) {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default()
                .with_type(method.into())
                .with_message_id(message_id.into())
                .with_content_type("application/x-protobuf".into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirmation.is_ack(), "{message_id}: nacked");
    assert!(
        confirmation.take_message().is_none(),
        "{message_id}: no queue is bound to {exchange} {routing_key:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_and_messages_are_refused_and_write_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = stack
        .call(
            "p1",
            &format!("{VOLUMES}/CreateVolume"),
            &json!({"size_gib": 1, "name": "fixture"}),
        )
        .await
        .expect("create the fixture volume");
    let volume = created["id"].as_str().expect("id").to_owned();
    stack
        .wait_status("p1", &volume, "VOLUME_STATUS_AVAILABLE")
        .await;
    stack
        .call_admin(
            "p1",
            &format!("{TYPES}/CreateVolumeType"),
            &json!({"name": "gold"}),
        )
        .await
        .expect("create a type");
    let before = counts(&stack).await;
    let get = format!("{VOLUMES}/GetVolume");
    let fixture_before = stack
        .call("p1", &get, &json!({"id": volume}))
        .await
        .expect("get");

    // === the API ===
    let table = cases(&volume);
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(table.iter())
        .map(|case| check(&stack, case))
        .buffer_unordered(8)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{} cases took {:?}",
        table.len(),
        started.elapsed()
    );
    // Zones have no request field to get wrong: they still answer.
    let zones = stack
        .call("p1", &format!("{ZONES}/ListAvailabilityZones"), &json!({}))
        .await
        .expect("zones");
    assert_eq!(zones["availabilityZones"][0]["name"], "default", "{zones}");

    // === the bus ===
    let cx = stack.exchange.clone();
    let conn = lapin::Connection::connect(
        &scoria_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    // Wrongly typed bodies: each one's field 1 or 2 has another wire type than
    // the method's message wants, so it cannot decode (a body that happens to
    // decode as the method's message is a valid request, not a poison one).
    let snapshot_body = CreateSnapshot {
        snapshot_id: UNKNOWN_ID.into(),
        volume_id: UNKNOWN_ID.into(),
    }
    .encode_to_vec();
    let schedule_body = ScheduleCreateVolume {
        volume_id: UNKNOWN_ID.into(),
        size_gib: 5,
        ..ScheduleCreateVolume::default()
    }
    .encode_to_vec();
    let detach_body = DetachResult { unexported: true }.encode_to_vec();
    let volume_key = format!("volume.{}", stack.volume_host);
    let scheduler_fanout = format!("{cx}.scheduler.fanout");
    let volume_fanout = format!("{cx}.volume.fanout");
    // (exchange, routing key, the method a wrongly typed body goes to, that body)
    let targets: [(&str, &str, &str, &[u8]); 4] = [
        (&cx, "scheduler", "create_volume", &snapshot_body),
        (&cx, &volume_key, "create_volume", &snapshot_body),
        (
            &scheduler_fanout,
            "",
            "update_service_capabilities",
            &schedule_body,
        ),
        (
            &volume_fanout,
            "",
            "publish_service_capabilities",
            &detach_body,
        ),
    ];
    let garbage: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x2a];
    let mut expected = Vec::new();
    for (exchange, key, method, typed) in targets {
        let tag = if key.is_empty() { exchange } else { key };
        for (kind, method, body) in [
            ("garbage", method, garbage),
            ("unknown", "no_such_method", &b"\x0a\x03abc"[..]),
            ("typed", method, typed),
        ] {
            let id = format!("malformed {tag} {kind}");
            publish(&channel, exchange, key, method, &id, body).await;
            expected.push(id);
        }
    }
    expected.sort();
    let dead = format!("{cx}.dead");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() && Instant::now() < deadline {
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(msg) => got.push(
                msg.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            ),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got.sort();
    assert_eq!(
        got,
        expected,
        "every poison message is dead-lettered, once\n{}",
        stack.logs()
    );

    // Nothing was written, by the API or by the messages.
    assert_eq!(counts(&stack).await, before, "no row added or removed");
    let fixture_after = stack
        .call("p1", &get, &json!({"id": volume}))
        .await
        .expect("get");
    assert_eq!(
        fixture_after, fixture_before,
        "the fixture volume is untouched"
    );

    // Everything still works: the scheduler places, the volume service creates,
    // the scheduler answers calls.
    let v = stack
        .call(
            "p1",
            &format!("{VOLUMES}/CreateVolume"),
            &json!({"size_gib": 1}),
        )
        .await
        .expect("create after the poison");
    stack
        .wait_status(
            "p1",
            v["id"].as_str().expect("id"),
            "VOLUME_STATUS_AVAILABLE",
        )
        .await;
    let pools = stack
        .call_admin("p1", &format!("{ADMIN}/ListPools"), &json!({}))
        .await
        .expect("list pools");
    assert_eq!(
        pools["pools"][0]["host"],
        stack.volume_host.as_str(),
        "{pools}"
    );
    let _ = conn.close(200, "done".into()).await;
}
