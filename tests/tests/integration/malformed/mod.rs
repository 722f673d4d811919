//! Malformed input against one real stack (SQLite): every RPC of every public
//! service gets bad fields and must answer the right code naming the field (with
//! a `BadRequest` field violation for a bad field), and every queue the services
//! consume gets garbage, unknown methods and wrongly typed protobuf, which must
//! be dead-lettered. Neither may write anything, and the stack must still work
//! afterwards.

mod bus;
mod services;
mod volumes;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use scoria_tests::stack::{Caller, DbKind, Stack};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    calls::Call,
    support::{create, pb, sized},
};

/// A well-formed id nothing has.
const UNKNOWN_ID: &str = "0b5c8f3e-0000-4000-8000-00000000dead";

/// How many bad requests the table holds (a case lost in a refactoring fails).
const CASES: usize = 102;

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
    call: Call,
    /// As an admin (else a member).
    admin: bool,
    code: Code,
    /// What the message must name: the field, or the unknown id.
    names: String,
}

fn case(call: impl Into<Call>, code: Code, names: &str) -> Case {
    Case {
        call: call.into(),
        admin: false,
        code,
        names: names.to_owned(),
    }
}

fn admin_case(call: impl Into<Call>, code: Code, names: &str) -> Case {
    Case {
        admin: true,
        ..case(call, code, names)
    }
}

fn bad(call: impl Into<Call>, field: &str) -> Case {
    case(call, Code::InvalidArgument, field)
}

fn admin_bad(call: impl Into<Call>, field: &str) -> Case {
    admin_case(call, Code::InvalidArgument, field)
}

fn unknown(call: impl Into<Call>) -> Case {
    case(call, Code::NotFound, UNKNOWN_ID)
}

/// A string one character longer than any name the API takes.
fn long() -> String {
    "x".repeat(256)
}

/// `n` metadata-like entries.
fn entries(n: usize) -> BTreeMap<String, String> {
    (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect()
}

/// The table: `volume` is an available volume of project `p1`.
fn cases(volume: &str) -> Vec<Case> {
    let mut cases = volumes::cases(volume);
    cases.extend(services::snapshots(volume));
    cases.extend(services::volume_types());
    cases.extend(services::admin(volume));
    cases.extend(services::attachments(volume));
    cases
}

/// Runs one case; `Err` says what was wrong.
async fn check(stack: &Stack, case: &Case) -> Result<(), String> {
    let caller = if case.admin {
        Caller::admin("p1")
    } else {
        Caller::member("p1")
    };
    let answer = case.call.send(&stack.clients(caller)).await;
    let what = format!(
        "{} {:?} (admin: {})",
        case.call.method(),
        case.call,
        case.admin
    );
    let err = match answer {
        Ok(reply) => return Err(format!("{what}: accepted, answered {reply}")),
        Err(err) => err,
    };
    if err.code() != case.code {
        return Err(format!("{what}: expected {:?}, got {err:?}", case.code));
    }
    if !err.message().contains(&case.names) {
        return Err(format!(
            "{what}: the message does not name {:?}: {:?}",
            case.names,
            err.message()
        ));
    }
    let violated = err.get_details_bad_request().is_some_and(|details| {
        details
            .field_violations
            .iter()
            .any(|v| v.field == case.names)
    });
    if case.code == Code::InvalidArgument && !violated {
        return Err(format!(
            "{what}: no BadRequest field violation for {:?}: {:?}",
            case.names,
            err.get_details_bad_request()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_and_messages_are_refused_and_write_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let fixture = pb::CreateVolumeRequest {
        name: "fixture".into(),
        ..sized(1)
    };
    let volume = create(&stack, "p1", fixture).await.id;
    stack
        .wait_status("p1", &volume, pb::VolumeStatus::Available)
        .await;
    stack
        .types_admin("p1")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "gold".into(),
            ..Default::default()
        })
        .await
        .expect("create a type");
    let before = counts(&stack).await;
    let fixture_before = stack.get_volume("p1", &volume).await.expect("get");

    // === the API ===
    let table = cases(&volume);
    assert_eq!(table.len(), CASES, "the table lost or gained cases");
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
        .zones("p1")
        .list_availability_zones(pb::ListAvailabilityZonesRequest {})
        .await
        .expect("zones")
        .into_inner();
    assert_eq!(zones.availability_zones[0].name, "default", "{zones:?}");

    // === the bus ===
    bus::poison_every_queue(&stack).await;

    // Nothing was written, by the API or by the messages.
    assert_eq!(counts(&stack).await, before, "no row added or removed");
    let fixture_after = stack.get_volume("p1", &volume).await.expect("get");
    assert_eq!(
        fixture_after, fixture_before,
        "the fixture volume is untouched"
    );

    // Everything still works: the scheduler places, the volume service creates,
    // the scheduler answers calls.
    let v = create(&stack, "p1", sized(1)).await;
    stack
        .wait_status("p1", &v.id, pb::VolumeStatus::Available)
        .await;
    let pools = stack
        .admin("p1")
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("list pools")
        .into_inner();
    assert_eq!(pools.pools[0].host, stack.volume_host, "{pools:?}");
}
