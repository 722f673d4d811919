//! When an attachment is refused, what an attached volume may not do, attach
//! racing delete, and exports across a volume service restart.

use tonic::{Code, Status};

use super::{
    attach, attach_request, attachment_rows, detach, exported, get_attachment, qemu_io, try_attach,
    uri, volume_status, wait_closed,
};
use crate::support::{new_volume, pb, sized};
use scoria_tests::stack::{DbKind, Stack};

// === bad input ===

#[tokio::test(flavor = "multi_thread")]
async fn bad_attach_requests_write_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let volume_id = new_volume(&stack, sized(1)).await;
    let check = |e: Status, code: Code, needle: &str| {
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(needle), "{needle} not in {e:?}");
    };
    let unknown = "0b5c8f3e-7d6a-4c1e-9a53-2f1e0d9c8b7a";
    let e = try_attach(&stack, "p1", attach_request(unknown))
        .await
        .expect_err("unknown");
    check(e, Code::NotFound, unknown);
    let e = try_attach(&stack, "p2", attach_request(&volume_id))
        .await
        .expect_err("another project's");
    check(e, Code::NotFound, &volume_id);
    let e = try_attach(&stack, "p1", attach_request("not-a-uuid"))
        .await
        .expect_err("bad uuid");
    check(e, Code::InvalidArgument, "volume_id");
    let no_host = pb::CreateAttachmentRequest {
        volume_id: volume_id.clone(),
        connector: Some(pb::Connector {
            ip: "10.0.0.5".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = try_attach(&stack, "p1", no_host)
        .await
        .expect_err("no host");
    check(e, Code::InvalidArgument, "connector.host");
    let no_connector = pb::CreateAttachmentRequest {
        volume_id: volume_id.clone(),
        ..Default::default()
    };
    let e = try_attach(&stack, "p1", no_connector)
        .await
        .expect_err("no connector");
    check(e, Code::InvalidArgument, "connector");

    stack
        .admin("p1")
        .reset_volume_status(pb::ResetVolumeStatusRequest {
            volume_id: volume_id.clone(),
            status: pb::VolumeStatus::Error.into(),
        })
        .await
        .expect("reset to error");
    let e = try_attach(&stack, "p1", attach_request(&volume_id))
        .await
        .expect_err("error volume");
    check(e, Code::FailedPrecondition, "error");

    assert_eq!(attachment_rows(&stack, None).await, 0);
    assert!(!exported(&volume_id));
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        pb::VolumeStatus::Error
    );
}

// === Cinder's in-use rules ===

#[tokio::test(flavor = "multi_thread")]
async fn in_use_volumes_are_guarded() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let volume_id = new_volume(&stack, sized(1)).await;
    let attached = attach(&stack, &volume_id).await;

    let mut volumes = stack.volumes("p1");
    let e = volumes
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume_id.clone(),
        })
        .await
        .expect_err("delete while attached");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("attachments first"), "{e:?}");
    let e = volumes
        .extend_volume(pb::ExtendVolumeRequest {
            id: volume_id.clone(),
            new_size_gib: 2,
        })
        .await
        .expect_err("extend while attached");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("detach"), "{e:?}");
    let snapshot = |force| pb::CreateSnapshotRequest {
        volume_id: volume_id.clone(),
        name: "s".into(),
        force,
        ..Default::default()
    };
    let mut snapshots = stack.snapshots("p1");
    let e = snapshots
        .create_snapshot(snapshot(false))
        .await
        .expect_err("snapshot without force");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("force"), "{e:?}");

    let snap = snapshots
        .create_snapshot(snapshot(true))
        .await
        .unwrap_or_else(|e| panic!("forced snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    stack
        .wait_snapshot_status("p1", &snap.id, pb::SnapshotStatus::Available)
        .await;
    // Still attached and in use throughout.
    assert_eq!(
        volume_status(&stack, &volume_id).await,
        pb::VolumeStatus::InUse
    );
    qemu_io(&uri(&attached), "read -P 0x00 0 1M", false).expect("the export still works");
    let volume = stack.get_volume("p1", &volume_id).await.expect("get");
    assert_eq!(volume.size_gib, 1);
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
        let request = pb::CreateVolumeRequest {
            name: format!("race-{round}"),
            ..sized(1)
        };
        let volume_id = new_volume(&stack, request).await;
        let mut volumes = stack.volumes("p1");
        let (attached, deleted) = tokio::join!(
            try_attach(&stack, "p1", attach_request(&volume_id)),
            volumes.delete_volume(pb::DeleteVolumeRequest {
                id: volume_id.clone()
            }),
        );
        match (attached, deleted) {
            (Ok(attachment), Err(e)) => {
                attaches += 1;
                assert_eq!(e.code(), Code::FailedPrecondition, "round {round}: {e:?}");
                assert_eq!(attachment.status(), pb::AttachmentStatus::Attached);
                assert_eq!(
                    volume_status(&stack, &volume_id).await,
                    pb::VolumeStatus::InUse
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
                    matches!(e.code(), Code::FailedPrecondition | Code::NotFound),
                    "round {round}: {e:?}"
                );
                stack.wait_volume_gone("p1", &volume_id).await;
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
    let volume_id = new_volume(stack, sized(1)).await;
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
    let got = get_attachment(stack, &attached.id).await.expect("get");
    assert_eq!(got.status(), pb::AttachmentStatus::Attached, "{got:?}");
    detach(stack, &attached).await;
    wait_closed(stack, &attached).await;
    assert!(!exported(&volume_id), "the export outlived its detach");
    assert_eq!(
        volume_status(stack, &volume_id).await,
        pb::VolumeStatus::Available
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_survive_a_volume_service_restart() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    export_survives(&mut stack, true).await;
    export_survives(&mut stack, false).await;
}
