//! Moving, rolling back and adopting volumes through the CLI: `volume revert`
//! puts the snapshot's bytes back; `volume manage` / `snapshot manage` adopt
//! objects left in the backend's folder and `unmanage` gives them up with the
//! objects kept; `volume retype` changes the type in place or says why it
//! could not; `volume migrate` is refused to a member. Each step checked
//! against the API's own answer (and the backend's files).

use std::io::{Read, Seek, SeekFrom, Write};

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};
use serde_json::json;
use tonic::Code;

use crate::{field, scoria, scoria_admin};

/// The first 4 KiB of `path`.
fn head(path: &std::path::Path) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    buf
}

/// A sparse file of `size` bytes named `name` in the stack's backend folder,
/// as a backend holds objects Scoria does not know.
fn foreign_object(stack: &Stack, name: &str, size: u64) -> std::path::PathBuf {
    let path = stack.dir.path().join(&stack.backend).join(name);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("make {}: {e}", path.display()));
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_reverted_to_its_snapshot() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "data", "--wait", "-f", "json",
        ],
    )
    .await
    .ok()
    .json();
    let id = field(&created, "id").to_owned();
    let made = scoria(
        &stack,
        &[
            "snapshot", "create", "--volume", "data", "--name", "before", "--wait", "-f", "json",
        ],
    )
    .await
    .ok()
    .json();
    let snapshot_id = field(&made, "id").to_owned();
    assert_eq!(made["status"], "available", "{made:#}");

    // Written after the snapshot: the revert takes it back.
    let object = stack.backend_object("volume", &id);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&[0xab; 4096])?;
            f.sync_all()
        })
        .unwrap_or_else(|e| panic!("write {}: {e}", object.display()));
    assert_eq!(head(&object), vec![0xab; 4096]);

    let reverted = scoria(
        &stack,
        &[
            "volume",
            "revert",
            "data",
            "--snapshot",
            "before",
            "--wait",
            "-f",
            "json",
        ],
    )
    .await
    .ok();
    let json = reverted.json();
    assert_eq!(json["id"], id.as_str(), "{reverted}");
    assert_eq!(json["status"], "available", "{reverted}");
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(real.status(), pb::VolumeStatus::Available, "{real:?}");
    let snapshot = stack
        .as_member("p1")
        .get_snapshot(&snapshot_id)
        .await
        .expect("get snapshot");
    assert_eq!(snapshot.status(), pb::SnapshotStatus::Available);
    assert_eq!(
        head(&stack.backend_object("volume", &id)),
        vec![0u8; 4096],
        "the snapshot's bytes (zeros) are back"
    );

    // Only the newest snapshot: an older one is refused, nothing changes.
    scoria(
        &stack,
        &[
            "snapshot", "create", "--volume", "data", "--name", "after", "--wait",
        ],
    )
    .await
    .ok();
    let refused = scoria(
        &stack,
        &["volume", "revert", "data", "--snapshot", &snapshot_id],
    )
    .await
    .exits(1);
    assert!(
        refused.stderr.contains(&format!(
            "revert volume {id} to snapshot {snapshot_id} failed"
        )),
        "{refused}"
    );
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(real.status(), pb::VolumeStatus::Available, "{real:?}");
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_is_managed_and_unmanaged_keeping_its_file() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let legacy = foreign_object(&stack, "legacy.img", 1536 << 20);

    // A member may not; an admin adopts it: 1.5 GiB is a 2 GiB volume of p1.
    let host = stack.volume_host.clone();
    let manage = [
        "volume",
        "manage",
        "--host",
        &host,
        "--reference",
        "legacy.img",
        "--name",
        "legacy",
        "--project",
        "p1",
        "--property",
        "origin=old-array",
        "--wait",
        "-f",
        "json",
    ];
    let member = scoria(&stack, &manage).await.exits(1);
    assert!(member.stderr.contains("PERMISSION_DENIED"), "{member}");
    assert!(legacy.exists(), "nothing happened to the object");
    let managed = scoria_admin(&stack, &manage).await.ok();
    let volume = managed.json();
    let id = field(&volume, "id").to_owned();
    assert_eq!(volume["status"], "available", "{managed}");
    assert_eq!(volume["size"], 2, "{managed}");
    assert_eq!(volume["name"], "legacy", "{managed}");
    assert_eq!(volume["project_id"], "p1", "{managed}");
    assert_eq!(volume["host"], host.as_str(), "{managed}");
    assert_eq!(volume["properties"], json!({"origin": "old-array"}));
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(
        (real.status(), real.size_gib),
        (pb::VolumeStatus::Available, 2)
    );
    let object = stack
        .dir
        .path()
        .join(&stack.backend)
        .join(format!("volume-{id}"));
    assert!(object.exists(), "renamed: {:?}", stack.backend_files());
    assert!(!legacy.exists(), "the old name is gone");
    assert_eq!(stack.quota_usage("p1", "gigabytes").await.0, 2);

    // A snapshot adopted for it, then given up: its file stays.
    foreign_object(&stack, "old-snap.img", 1 << 30);
    let made = scoria_admin(
        &stack,
        &[
            "snapshot",
            "manage",
            "--volume",
            "legacy",
            "--reference",
            "old-snap.img",
            "--name",
            "old",
            "--wait",
            "-f",
            "json",
        ],
    )
    .await
    .ok();
    let snapshot = made.json();
    let snapshot_id = field(&snapshot, "id").to_owned();
    assert_eq!(snapshot["status"], "available", "{made}");
    assert_eq!(snapshot["volume_id"], id.as_str(), "{made}");
    let real = stack
        .as_member("p1")
        .get_snapshot(&snapshot_id)
        .await
        .expect("get snapshot");
    assert_eq!(real.status(), pb::SnapshotStatus::Available);
    let refused = scoria_admin(&stack, &["volume", "unmanage", &id])
        .await
        .exits(1);
    assert!(refused.stderr.contains(&snapshot_id), "{refused}");
    let given_up = scoria_admin(&stack, &["snapshot", "unmanage", "old", "-f", "json"])
        .await
        .ok();
    assert_eq!(given_up.json()["id"], snapshot_id.as_str(), "{given_up}");
    let err = stack
        .as_member("p1")
        .get_snapshot(&snapshot_id)
        .await
        .expect_err("unmanaged");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        stack.backend_object("snapshot", &snapshot_id).exists(),
        "the snapshot's object stays: {:?}",
        stack.backend_files()
    );

    // Unmanaged: the row goes, the file stays under the volume's name.
    let member = scoria(&stack, &["volume", "unmanage", &id]).await.exits(1);
    assert!(member.stderr.contains("PERMISSION_DENIED"), "{member}");
    let unmanaged = scoria_admin(&stack, &["volume", "unmanage", &id, "-f", "json"])
        .await
        .ok();
    assert_eq!(unmanaged.json()["id"], id.as_str(), "{unmanaged}");
    let err = stack.get_volume("p1", &id).await.expect_err("unmanaged");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let listed = scoria(&stack, &["volume", "list", "-f", "json"]).await.ok();
    assert_eq!(listed.json(), json!([]), "{listed}");
    assert_eq!(stack.quota_usage("p1", "gigabytes").await.0, 0);
    assert!(
        object.exists(),
        "the volume's file stays: {:?}",
        stack.backend_files()
    );
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_retyped_in_place_or_told_why_not_and_migrate_is_for_admins() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let created = scoria(
        &stack,
        &[
            "volume", "create", "--size", "1", "--name", "data", "--wait", "-f", "json",
        ],
    )
    .await
    .ok()
    .json();
    let id = field(&created, "id").to_owned();
    let host = field(&created, "host").to_owned();
    assert!(
        created.get("migration_status").is_none(),
        "never moved: {created:#}"
    );
    scoria_admin(&stack, &["type", "create", "silver"])
        .await
        .ok();
    scoria_admin(
        &stack,
        &[
            "type",
            "create",
            "gold",
            "--property",
            "volume_backend_name=elsewhere",
        ],
    )
    .await
    .ok();

    // The backend fits silver: the type changes in place.
    let retyped = scoria(
        &stack,
        &[
            "volume", "retype", "data", "--type", "silver", "--wait", "-f", "json",
        ],
    )
    .await
    .ok();
    let json = retyped.json();
    assert_eq!(json["type"], "silver", "{retyped}");
    assert_eq!(json["status"], "available", "{retyped}");
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(real.volume_type, "silver");
    assert_eq!(real.host, host);

    // Not gold (its backend is another), and never moved: the wait fails
    // with why, the volume keeps its type, and `show` says why too.
    let failed = scoria(
        &stack,
        &["volume", "retype", "data", "--type", "gold", "--wait"],
    )
    .await
    .exits(1);
    assert!(
        failed.stderr.contains(&format!("volume {id} is available"))
            && failed.stderr.contains("the retype to \"gold\" failed"),
        "{failed}"
    );
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(
        (real.status(), real.volume_type.as_str()),
        (pb::VolumeStatus::Available, "silver")
    );
    assert_eq!(real.migration_status(), pb::MigrationStatus::Error);
    assert!(!real.migration_error.is_empty(), "{real:?}");
    assert!(
        failed.stderr.contains(&real.migration_error),
        "the API's reason is printed: {failed}\n{real:?}"
    );
    let shown = scoria(&stack, &["volume", "show", "data", "-f", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["migration_status"], "error", "{shown:#}");
    assert_eq!(
        shown["migration_error"],
        real.migration_error.as_str(),
        "{shown:#}"
    );

    // migrate: a member is refused, the volume stays where it is.
    let refused = scoria(&stack, &["volume", "migrate", "data", "--wait"])
        .await
        .exits(1);
    assert!(
        refused
            .stderr
            .contains(&format!("migrate volume {id} failed"))
            && refused.stderr.contains("PERMISSION_DENIED"),
        "{refused}"
    );
    let real = stack.get_volume("p1", &id).await.expect("get");
    assert_eq!(
        (real.status(), real.host.as_str()),
        (pb::VolumeStatus::Available, host.as_str())
    );
    stack.assert_quota_exact().await;
}
