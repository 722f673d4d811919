//! Identity, policy, encryption and limits, through the real processes: what
//! keeps one tenant from hurting the others or the service, including request
//! limits (size, headers, a rate per project) and input hardening (the same
//! refusal of bad text on SQLite and PostgreSQL, and a property test of every
//! public RPC). TLS: gRPC over TLS and mTLS (refusals, plaintext, grpcurl),
//! certificate reload without dropping connections, the whole volume lifecycle
//! over gRPC TLS + `amqps://` + PostgreSQL `verify-full`, and a wrong CA or host
//! stopping a process at start; the RabbitMQ node and PostgreSQL cluster these
//! start are the tests' own (`scoria_tests::fixtures`).
#![allow(missing_docs, clippy::unwrap_used)]

mod hops;
mod input;
mod jwt;
mod limits;
mod mtls;
mod policy;
mod reload;
mod support;

use scoria_tests::stack::Stack;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The tables a refused request must leave alone (`services` is left out:
/// heartbeats write it all the time; `workers` too: it holds transient work).
const COUNTS: [(&str, &str); 6] = [
    ("volumes", "SELECT COUNT(*) FROM volumes"),
    ("snapshots", "SELECT COUNT(*) FROM snapshots"),
    ("volume_types", "SELECT COUNT(*) FROM volume_types"),
    ("attachments", "SELECT COUNT(*) FROM attachments"),
    ("idempotency", "SELECT COUNT(*) FROM idempotency"),
    ("quotas", "SELECT COUNT(*) FROM quotas"),
];

/// The row count of every table in [`COUNTS`].
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

/// The `ErrorInfo` reason of `status`.
fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}

/// The field an INVALID_ARGUMENT names in its `BadRequest` violation; panics
/// when it names none or the message does not name it too.
fn field(status: &Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let field = bad
        .field_violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_default();
    assert!(!field.is_empty(), "an empty field violation: {status:?}");
    assert!(
        status.message().contains(&field),
        "the message does not name {field}: {status:?}"
    );
    field
}
