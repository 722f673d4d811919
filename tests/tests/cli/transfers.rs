//! Volume transfers through the CLI: offered by one project (the key shown
//! once), listed and shown there, accepted by another project with the key,
//! and a withdrawn offer giving the volume back; each step checked against the
//! API's own answer.

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};

use crate::{binary, command, field, run, scoria};

/// `scoria <args>` as a member of project `project`.
async fn scoria_in(stack: &Stack, project: &str, args: &[&str]) -> crate::Output {
    let mut c = command(stack, binary());
    c.env("SCORIA_PROJECT", project).args(args);
    run(c).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_offered_listed_accepted_and_withdrawn() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "gift", "--wait", "-f", "json",
        ],
    )
    .await
    .ok()
    .json();
    let volume_id = field(&created, "id").to_owned();

    let offered = scoria(
        &stack,
        &[
            "transfer", "create", "--volume", "gift", "--name", "t", "-f", "json",
        ],
    )
    .await
    .ok()
    .json();
    let id = field(&offered, "id").to_owned();
    let key = field(&offered, "auth_key").to_owned();
    assert_eq!(field(&offered, "volume_id"), volume_id);
    assert_eq!(key.len(), 32, "{offered:#}");
    let real = stack.get_volume("p1", &volume_id).await.expect("get");
    assert_eq!(real.status(), pb::VolumeStatus::AwaitingTransfer);

    let listed = scoria(&stack, &["transfer", "list", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["ID"], id.as_str());
    let shown = scoria(&stack, &["transfer", "show", &id, "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(field(&shown, "id"), id);
    assert!(
        shown.get("auth_key").is_none(),
        "the key is shown once: {shown:#}"
    );

    // A wrong key fails (non-zero exit), the right one moves the volume.
    let wrong = scoria_in(&stack, "p2", &["transfer", "accept", &id, "nope"]).await;
    assert_ne!(wrong.code, 0, "{wrong}");
    let accepted = scoria_in(
        &stack,
        "p2",
        &["transfer", "accept", &id, &key, "-f", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(field(&accepted, "destination_project_id"), "p2");
    let moved = stack
        .get_volume("p2", &volume_id)
        .await
        .expect("the receiver's");
    assert_eq!(moved.status(), pb::VolumeStatus::Available);

    // Offered and withdrawn by the new owner: available again.
    let offered = scoria_in(
        &stack,
        "p2",
        &["transfer", "create", "--volume", &volume_id, "-f", "json"],
    )
    .await
    .ok()
    .json();
    let id = field(&offered, "id").to_owned();
    scoria_in(&stack, "p2", &["transfer", "delete", &id])
        .await
        .ok();
    let back = stack.get_volume("p2", &volume_id).await.expect("get");
    assert_eq!(back.status(), pb::VolumeStatus::Available);
    let listed = scoria_in(&stack, "p2", &["transfer", "list", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed:#}");
}
