//! Migrations that go wrong, on the real stack: `kill -9` of the destination
//! volume service mid-copy (its `qemu-img convert` made slow by a `PATH`
//! wrapper, as a big volume would be), then a restart: the destination's
//! reconciler fails the overdue move, the volume is available where it was
//! with `migration_error`, nothing is left on the destination and the
//! source's export is stopped. A migration racing a delete, or an attach: one
//! winner. And a destination without space (a small tmpfs): the move fails,
//! the volume stays available where it was with its bytes, nothing is left on
//! the destination.

use std::time::{Duration, Instant};

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack, qemu_io_file};
use tonic::Code;

use crate::support::serial;

/// The stack (its file backend the destination) plus a qcow2 source, every
/// `qemu-img convert` sleeping `sleep_secs` first; a type on the qcow2 one.
async fn stack_with_slow_copy(sleep_secs: u32) -> (Stack, String) {
    let dir = tempfile::tempdir().expect("dir").keep();
    let bin = dir.join("slow-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let real = which("qemu-img");
    let wrapper = bin.join("qemu-img");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = convert ]; then sleep {sleep_secs}; fi\nexec {real} \"$@\"\n"
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.as_str()),
        ("SCORIA_OPERATION_DEADLINE_SECS", "5"),
        ("SCORIA_RECONCILE_INTERVAL_SECS", "1"),
    ];
    let mut stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let qcow2 = stack
        .start_volume_service("qcow2", &[("SCORIA_VOLUME_DRIVER", "qcow2")])
        .await;
    stack.stop_service("scoria-scheduler").await;
    stack.start_service("scoria-scheduler").await;
    stack
        .types_admin("p1")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "on-qcow2".to_owned(),
            extra_specs: [("volume_backend_name".to_owned(), "qcow2".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .expect("type");
    (stack, qcow2)
}

fn which(program: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn qcow2_volume(stack: &Stack) -> String {
    let created = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            volume_type: "on-qcow2".to_owned(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    stack
        .wait_status("p1", &created.id, pb::VolumeStatus::Available)
        .await;
    created.id
}

async fn migrate(stack: &Stack, id: &str, host: &str) -> Result<pb::Volume, tonic::Status> {
    stack
        .admin("p1")
        .migrate_volume(pb::MigrateVolumeRequest {
            volume_id: id.to_owned(),
            host: host.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Whether a process whose command line names `needle` runs.
fn process_with(needle: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", needle])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_killed_mid_copy_ends_in_one_clear_outcome() {
    let _serial = serial().await;
    let (mut stack, qcow2) = stack_with_slow_copy(20).await;
    let dest = stack.volume_host.clone();
    let backend = stack.backend.clone();
    let id = qcow2_volume(&stack).await;
    let source_object = stack.backend_object_in("qcow2", "volume", &id);
    qemu_io_file(&source_object, "write -P 0xe1 0 1M").expect("write");

    let moving = migrate(&stack, &id, &dest).await.expect("migrate");
    assert_eq!(moving.status(), pb::VolumeStatus::Maintenance);
    // The destination is copying: its object exists and the source exports.
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = stack.log_path("scoria-volume");
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("copying the volume") && text.contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no copy started\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        process_with(&format!("volume-{id}-ro")),
        "the source exports the volume"
    );
    stack.kill_service("scoria-volume").await;
    stack.start_service("scoria-volume").await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let v = stack.get_volume("p1", &id).await.expect("get");
        if v.status() == pb::VolumeStatus::Available {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the move never settled: {v:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The unacked cast comes back to the restarted destination, which copies
    // again and finishes; or its reconciler fails the overdue move first.
    // Either way one clear outcome, the bytes on the volume's host, no orphan.
    let dest_object = stack.backend_object_in(&backend, "volume", &id);
    match settled.migration_status() {
        pb::MigrationStatus::Success => {
            assert_eq!(settled.host, dest, "{settled:?}");
            qemu_io_file(&dest_object, "read -P 0xe1 0 1M").expect("the bytes moved");
            let deadline = Instant::now() + Duration::from_secs(30);
            while source_object.exists() {
                assert!(Instant::now() < deadline, "the source object stayed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        pb::MigrationStatus::Error => {
            assert_eq!(settled.host, qcow2, "{settled:?}");
            assert!(settled.migration_error.contains("deadline"), "{settled:?}");
            assert!(
                !dest_object.exists(),
                "an orphan object on the destination: {:?}",
                stack.backend_files()
            );
            qemu_io_file(&source_object, "read -P 0xe1 0 1M").expect("the source's bytes");
        }
        other => panic!("unclear outcome {other:?}: {settled:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_with(&format!("volume-{id}-ro")) {
        assert!(
            Instant::now() < deadline,
            "the source's migration export stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_racing_a_delete_has_one_winner() {
    let _serial = serial().await;
    let (stack, _qcow2) = stack_with_slow_copy(2).await;
    let dest = stack.volume_host.clone();
    let backend = stack.backend.clone();
    for _ in 0..3 {
        let id = qcow2_volume(&stack).await;
        let volumes = stack.volumes("p1");
        let (migrated, deleted) = tokio::join!(migrate(&stack, &id, &dest), async {
            let mut volumes = volumes.clone();
            volumes
                .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
                .await
        });
        match (&migrated, &deleted) {
            (Ok(_), Err(err)) => {
                assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let v = stack.get_volume("p1", &id).await.expect("get");
                    if v.status() == pb::VolumeStatus::Available {
                        assert_eq!(v.migration_status(), pb::MigrationStatus::Success, "{v:?}");
                        break;
                    }
                    assert!(Instant::now() < deadline, "stuck: {v:?}\n{}", stack.logs());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (Err(err), Ok(_)) => {
                assert!(
                    matches!(err.code(), Code::FailedPrecondition | Code::NotFound),
                    "{err:?}"
                );
                stack.wait_volume_gone("p1", &id).await;
                assert!(!stack.backend_object_in(&backend, "volume", &id).exists());
            }
            other => panic!("not one winner: {other:?}"),
        }
    }
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_racing_an_attach_has_one_winner() {
    let _serial = serial().await;
    let (stack, _qcow2) = stack_with_slow_copy(1).await;
    let dest = stack.volume_host.clone();
    for round in 0..3 {
        let id = qcow2_volume(&stack).await;
        let attachments = stack.attachments("p1");
        let (migrated, attached) = tokio::join!(migrate(&stack, &id, &dest), async {
            let mut attachments = attachments.clone();
            attachments
                .create_attachment(pb::CreateAttachmentRequest {
                    volume_id: id.clone(),
                    connector: Some(pb::Connector {
                        host: format!("client-{round}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        });
        match (&migrated, &attached) {
            (Ok(_), Err(err)) => {
                assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let v = stack.get_volume("p1", &id).await.expect("get");
                    if v.status() == pb::VolumeStatus::Available {
                        assert_eq!(v.migration_status(), pb::MigrationStatus::Success, "{v:?}");
                        assert_eq!(v.host, dest, "moved");
                        break;
                    }
                    assert!(Instant::now() < deadline, "stuck: {v:?}\n{}", stack.logs());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (Err(err), Ok(attachment)) => {
                assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                assert!(
                    err.message().contains("detach") || err.message().contains("changed"),
                    "the refusal says why: {err:?}"
                );
                let v = stack.wait_status("p1", &id, pb::VolumeStatus::InUse).await;
                assert_ne!(v.host, dest, "an attached volume stays where it is");
                assert_ne!(v.migration_status(), pb::MigrationStatus::Migrating);
                stack
                    .attachments("p1")
                    .delete_attachment(pb::DeleteAttachmentRequest {
                        id: attachment.id.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("detach: {e:?}\n{}", stack.logs()));
                stack
                    .wait_status("p1", &id, pb::VolumeStatus::Available)
                    .await;
            }
            other => panic!("not one winner: {other:?}"),
        }
    }
    stack.assert_quota_exact().await;
}

/// The destination backend is a 8 MiB tmpfs (mounted by the test, as root);
/// the volume holds 16 MiB of data that do not fit there.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_without_space_fails_the_move_cleanly() {
    let _serial = serial().await;
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let tiny = stack.dir.path().join("tiny");
    let _fs = scoria_volume::backup::testkit::Tmpfs::mount_at(&tiny, "8m");
    let dest = stack
        .start_volume_service("tiny", &[("SCORIA_VOLUME_DRIVER", "file")])
        .await;
    let source = stack.volume_host.clone();
    let created = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 1,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let id = created.id;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    let object = stack.backend_object("volume", &id);
    qemu_io_file(&object, "write -P 0x5a 0 16M").expect("write 16 MiB");

    migrate(&stack, &id, &dest)
        .await
        .unwrap_or_else(|e| panic!("migrate: {e:?}\n{}", stack.logs()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let v = stack.get_volume("p1", &id).await.expect("get");
        if v.status() == pb::VolumeStatus::Available {
            break v;
        }
        assert!(Instant::now() < deadline, "stuck: {v:?}\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v.migration_status(), pb::MigrationStatus::Error, "{v:?}");
    assert!(
        v.migration_error.contains("space"),
        "the reason names the full destination: {:?}",
        v.migration_error
    );
    assert_eq!(v.host, source, "the volume stayed where it was");
    qemu_io_file(&object, "read -P 0x5a 0 16M").expect("with its bytes");
    // Nothing left on the destination, temp files included.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<_> = std::fs::read_dir(&tiny)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left on the destination: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It can still move elsewhere, or be deleted: nothing is stuck.
    stack
        .volumes("p1")
        .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
        .await
        .unwrap_or_else(|e| panic!("delete: {e:?}\n{}", stack.logs()));
    stack.wait_volume_gone("p1", &id).await;
    stack.assert_quota_exact().await;
}
