//! Volume transfers through the real processes: a volume and its snapshot
//! given to another project keep their bytes (checked with `qemu-io`), their
//! quota usage moves exactly, a wrong key is PERMISSION_DENIED and counted in
//! the API's metrics, an accept over quota moves nothing, an offered volume can
//! be neither deleted nor attached, and a lapsed offer gives the volume back.
//! On the `file` driver with SQLite and the `qcow2` driver with PostgreSQL.

use scoria_tests::stack::{DbKind, Stack, http_get, qemu_io_file, sample};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use crate::support::{pb, sized};

fn reason(err: &Status) -> String {
    err.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

async fn available_volume(stack: &Stack, project: &str, size_gib: u64) -> String {
    let id = stack
        .volumes(project)
        .create_volume(sized(size_gib))
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()))
        .into_inner()
        .id;
    stack
        .wait_status(project, &id, pb::VolumeStatus::Available)
        .await;
    id
}

async fn offer(stack: &Stack, project: &str, volume_id: &str) -> pb::CreateTransferResponse {
    stack
        .as_member(project)
        .transfers()
        .create_transfer(pb::CreateTransferRequest {
            volume_id: volume_id.to_owned(),
            name: "gift".into(),
            no_snapshots: false,
        })
        .await
        .unwrap_or_else(|e| panic!("offer {volume_id}: {e:?}\n{}", stack.logs()))
        .into_inner()
}

async fn accept(stack: &Stack, project: &str, id: &str, key: &str) -> Result<pb::Transfer, Status> {
    stack
        .as_member(project)
        .transfers()
        .accept_transfer(pb::AcceptTransferRequest {
            id: id.to_owned(),
            auth_key: key.to_owned(),
        })
        .await
        .map(Response::into_inner)
}

async fn denied_count(stack: &Stack) -> f64 {
    let addr = stack.metrics_addr("scoria-api").expect("api metrics");
    let (code, text) = http_get(&addr, "/metrics").await.expect("scrape");
    assert_eq!(code, 200);
    sample(&text, "scoria_transfer_accept_denied_total", &[]).unwrap_or(0.0)
}

async fn a_volume_and_its_snapshot_change_hands(kind: DbKind, driver: &str) {
    let env = [
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    let stack = Stack::start_with_metrics_env(kind, &env).await;
    let volume_id = available_volume(&stack, "giver", 1).await;
    let object = stack.backend_object("volume", &volume_id);
    qemu_io_file(&object, "write -P 0x5a 0 1M").expect("write the pattern");
    let snapshot = stack
        .snapshots("giver")
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: volume_id.clone(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    stack
        .wait_snapshot_status("giver", &snapshot.id, pb::SnapshotStatus::Available)
        .await;

    let made = offer(&stack, "giver", &volume_id).await;
    let transfer = made.transfer.clone().expect("transfer");
    let volume = stack.get_volume("giver", &volume_id).await.expect("get");
    assert_eq!(volume.status(), pb::VolumeStatus::AwaitingTransfer);

    // An offered volume is neither deleted nor attached.
    let err = stack
        .volumes("giver")
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume_id.clone(),
        })
        .await
        .expect_err("delete an offered volume");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = stack
        .attachments("giver")
        .create_attachment(pb::CreateAttachmentRequest {
            volume_id: volume_id.clone(),
            connector: Some(pb::Connector {
                host: "compute-1".into(),
                ..Default::default()
            }),
            instance_id: "vm-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("attach an offered volume");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "WRONG_STATUS", "{err:?}");

    // A wrong key: PERMISSION_DENIED, counted; nothing moves.
    let before = denied_count(&stack).await;
    let err = accept(&stack, "taker", &transfer.id, "not-the-key")
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(denied_count(&stack).await, before + 1.0);

    // Over the receiver's quota (1 GiB volume + 1 GiB snapshot > 1): nothing moves.
    stack.set_quota("taker", &[("gigabytes", 1)]).await;
    let err = accept(&stack, "taker", &transfer.id, &made.auth_key)
        .await
        .expect_err("over quota");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let volume = stack
        .get_volume("giver", &volume_id)
        .await
        .expect("still the giver's");
    assert_eq!(volume.status(), pb::VolumeStatus::AwaitingTransfer);
    assert_eq!(stack.quota_usage("taker", "gigabytes").await.0, 0);
    assert_eq!(stack.quota_usage("giver", "gigabytes").await.0, 2);

    stack.set_quota("taker", &[("gigabytes", 10)]).await;
    let accepted = accept(&stack, "taker", &transfer.id, &made.auth_key)
        .await
        .unwrap_or_else(|e| panic!("accept: {e:?}\n{}", stack.logs()));
    assert!(accepted.accepted);
    assert_eq!(accepted.destination_project_id, "taker");
    let volume = stack
        .get_volume("taker", &volume_id)
        .await
        .expect("the taker's now");
    assert_eq!(volume.status(), pb::VolumeStatus::Available);
    assert_eq!(volume.project_id, "taker");
    let err = stack
        .get_volume("giver", &volume_id)
        .await
        .expect_err("gone from the giver");
    assert_eq!(err.code(), Code::NotFound);
    let snap = stack
        .as_member("taker")
        .get_snapshot(&snapshot.id)
        .await
        .expect("the snapshot went along");
    assert_eq!(snap.project_id, "taker");
    for (resource, giver, taker) in [("volumes", 0, 1), ("snapshots", 0, 1), ("gigabytes", 0, 2)] {
        assert_eq!(
            stack.quota_usage("giver", resource).await.0,
            giver,
            "{resource}"
        );
        assert_eq!(
            stack.quota_usage("taker", resource).await.0,
            taker,
            "{resource}"
        );
    }
    stack.assert_quota_exact().await;
    // The bytes are where they were.
    qemu_io_file(
        &stack.backend_object("volume", &volume_id),
        "read -P 0x5a 0 1M",
    )
    .expect("the pattern after the transfer");

    // The new owner uses it: the snapshot and the volume delete as the taker's.
    stack
        .snapshots("taker")
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("delete snapshot: {e:?}\n{}", stack.logs()));
    stack.wait_snapshot_gone("taker", &snapshot.id).await;
    stack
        .volumes("taker")
        .delete_volume(pb::DeleteVolumeRequest {
            id: volume_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("delete: {e:?}\n{}", stack.logs()));
    stack.wait_volume_gone("taker", &volume_id).await;
    assert_eq!(stack.quota_usage("taker", "gigabytes").await.0, 0);
    stack.assert_quota_exact().await;
}

#[tokio::test]
async fn a_volume_and_its_snapshot_change_hands_on_file_and_sqlite() {
    a_volume_and_its_snapshot_change_hands(DbKind::Sqlite, "file").await;
}

#[tokio::test]
async fn a_volume_and_its_snapshot_change_hands_on_qcow2_and_postgres() {
    a_volume_and_its_snapshot_change_hands(DbKind::Postgres, "qcow2").await;
}

#[tokio::test]
async fn a_lapsed_or_withdrawn_offer_gives_the_volume_back() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_TRANSFER_EXPIRY_SECS", "2")]).await;
    let volume_id = available_volume(&stack, "giver", 1).await;
    let made = offer(&stack, "giver", &volume_id).await;
    let id = made.transfer.expect("transfer").id;
    let listed = stack
        .as_member("giver")
        .transfers()
        .list_transfers(pb::ListTransfersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.transfers.len(), 1);
    // The API's sweep ends it: the volume is available again, the key worthless.
    stack
        .wait_status("giver", &volume_id, pb::VolumeStatus::Available)
        .await;
    let err = accept(&stack, "taker", &id, &made.auth_key)
        .await
        .expect_err("lapsed");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Withdrawn: available again at once, and the key worthless too.
    let made = offer(&stack, "giver", &volume_id).await;
    let id = made.transfer.expect("transfer").id;
    stack
        .as_member("giver")
        .transfers()
        .delete_transfer(pb::DeleteTransferRequest { id: id.clone() })
        .await
        .unwrap_or_else(|e| panic!("withdraw: {e:?}\n{}", stack.logs()));
    let volume = stack.get_volume("giver", &volume_id).await.expect("get");
    assert_eq!(volume.status(), pb::VolumeStatus::Available);
    let err = accept(&stack, "taker", &id, &made.auth_key)
        .await
        .expect_err("withdrawn");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    stack.assert_quota_exact().await;
}
