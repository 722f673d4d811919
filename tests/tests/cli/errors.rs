//! What the CLI says when something fails: a volume that ends in `error`
//! (exit 1 with the volume's own reason), a quota refusal (its code and the
//! quota), bad usage (exit 2, usage on stderr), a value the API refuses (exit 1
//! with the field), and no Rust debug output anywhere.

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};

use crate::{Output, scoria, scoria_admin};

/// Asserts `out` reads as a message for a person, not a Rust dump.
#[track_caller]
fn no_debug_dump(out: &Output) {
    for needle in ["Error {", "Status {", "panicked", "RUST_BACKTRACE"] {
        assert!(!out.stderr.contains(needle), "{needle:?} in:\n{out}");
    }
}

/// Every volume of project `p1` (as the API lists them).
async fn volumes(stack: &Stack) -> Vec<pb::Volume> {
    stack
        .volumes("p1")
        .list_volumes(pb::ListVolumesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list volumes")
        .into_inner()
        .volumes
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_status_and_a_quota_refusal_exit_1_with_the_reason() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // A type no backend offers: the create is accepted, the volume ends in error.
    scoria_admin(
        &stack,
        &[
            "type",
            "create",
            "elsewhere",
            "--property",
            "volume_backend_name=ceph",
        ],
    )
    .await
    .ok();
    let failed = scoria(
        &stack,
        &[
            "volume",
            "create",
            "--size",
            "1",
            "--name",
            "bad",
            "--type",
            "elsewhere",
            "--wait",
        ],
    )
    .await
    .exits(1);
    assert_eq!(failed.stdout, "", "{failed}");
    no_debug_dump(&failed);
    let listed = volumes(&stack).await;
    let [volume] = listed.as_slice() else {
        panic!("one volume expected: {listed:?}");
    };
    assert_eq!(volume.status(), pb::VolumeStatus::Error, "{volume:?}");
    assert!(!volume.error_message.is_empty(), "{volume:?}");
    let last = failed.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "error: volume {} is error: {}",
            volume.id, volume.error_message
        ),
        "{failed}"
    );
    assert!(
        failed
            .stderr
            .contains(&format!("volume {}: error after ", volume.id)),
        "{failed}"
    );
    let shown = scoria(
        &stack,
        &[
            "volume",
            "show",
            "bad",
            "-c",
            "status",
            "-c",
            "error_message",
            "-f",
            "value",
        ],
    )
    .await
    .ok();
    assert_eq!(
        shown.stdout,
        format!("error\n{}\n", volume.error_message),
        "{shown}"
    );

    // A quota refusal: the code and the quota, on their own lines. (A failed
    // create holds no quota: only the good volume counts.)
    scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "good", "--wait",
        ],
    )
    .await
    .ok();
    let listed = volumes(&stack).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(stack.quota_usage("p1", "volumes").await, (1, 0, -1));
    stack.set_quota("p1", &[("volumes", 1)]).await;
    let refused = scoria(
        &stack,
        &["volume", "create", "--size", "1", "--name", "more"],
    )
    .await
    .exits(1);
    no_debug_dump(&refused);
    assert_eq!(refused.stdout, "", "{refused}");
    let first = refused.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: create volume failed: ")
            && first.ends_with("(RESOURCE_EXHAUSTED)"),
        "{refused}"
    );
    assert!(
        refused
            .stderr
            .lines()
            .skip(1)
            .any(|l| l.starts_with("  ") && l.contains("volumes")),
        "no line about the volumes quota:\n{refused}"
    );
    assert_eq!(volumes(&stack).await.len(), listed.len(), "nothing made");

    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2_and_a_refused_value_exits_1_with_its_field() {
    let stack = Stack::start(DbKind::Sqlite).await;

    // clap: a required flag missing.
    let missing = scoria(&stack, &["volume", "create", "--name", "x"])
        .await
        .exits(2);
    assert_eq!(missing.stdout, "", "{missing}");
    assert!(
        missing.stderr.contains("--size") && missing.stderr.contains("Usage: scoria volume create"),
        "{missing}"
    );
    // An unknown subcommand and an unknown format are usage errors too.
    let unknown = scoria(&stack, &["volume", "frobnicate"]).await.exits(2);
    assert!(unknown.stderr.contains("frobnicate"), "{unknown}");
    let format = scoria(&stack, &["volume", "list", "-f", "xml"])
        .await
        .exits(2);
    assert!(
        format.stderr.contains("xml") && format.stderr.contains("json"),
        "{format}"
    );

    // An unknown column names the ones there are.
    let column = scoria(&stack, &["volume", "list", "-c", "nope"])
        .await
        .exits(2);
    assert_eq!(column.stdout, "", "{column}");
    assert!(
        column.stderr.contains("nope") && column.stderr.contains("ID, Name, Status, Size"),
        "{column}"
    );
    no_debug_dump(&column);

    // A size the API refuses: its code, and the field on its own line.
    let zero = scoria(&stack, &["volume", "create", "--size", "0"])
        .await
        .exits(1);
    no_debug_dump(&zero);
    assert_eq!(zero.stdout, "", "{zero}");
    let mut lines = zero.stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with("error: create volume failed: ") && first.ends_with("(INVALID_ARGUMENT)"),
        "{zero}"
    );
    assert!(
        lines.any(|l| l.starts_with("  size_gib: ") && l.len() > "  size_gib: ".len()),
        "no size_gib line:\n{zero}"
    );
    assert!(volumes(&stack).await.is_empty(), "nothing made");

    // A name that is no volume's.
    let nothing = scoria(&stack, &["volume", "show", "ghost"]).await.exits(1);
    assert!(
        nothing
            .stderr
            .contains("no volume with the name or id \"ghost\""),
        "{nothing}"
    );

    stack.assert_quota_exact().await;
}
