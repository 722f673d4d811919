//! RevertVolumeToSnapshot through the real processes: bytes written after the
//! snapshot are gone after the revert, the snapshot's are back (checked with
//! `qemu-io` on the backend object), the snapshot stays available, quota usage
//! is unchanged; on the `file` and the `qcow2` drivers.

use scoria_tests::stack::{DbKind, Stack, qemu_io_file};
use tonic::Code;

use crate::support::{new_volume, pb, sized};

async fn a_revert_brings_the_snapshot_bytes_back(driver: &str) {
    let env = [
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let id = new_volume(&stack, sized(1)).await;
    let object = || stack.backend_object("volume", &id);
    qemu_io_file(&object(), "write -P 0x11 0 1M").expect("write the first pattern");
    let snapshot = stack
        .snapshots("p1")
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: id.clone(),
            name: "before".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    stack
        .wait_snapshot_status("p1", &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    qemu_io_file(&object(), "write -P 0x22 0 1M").expect("write the second pattern");
    let gib_before = stack.quota_usage("p1", "gigabytes").await.0;

    let reverting = stack
        .volumes("p1")
        .revert_volume_to_snapshot(pb::RevertVolumeToSnapshotRequest {
            id: id.clone(),
            snapshot_id: snapshot.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("revert: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(reverting.status(), pb::VolumeStatus::Reverting);
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    qemu_io_file(&object(), "read -P 0x11 0 1M").unwrap_or_else(|e| {
        panic!(
            "the snapshot's bytes after the revert: {e}\n{}",
            stack.logs()
        )
    });
    assert!(
        qemu_io_file(&object(), "read -P 0x22 0 1M").is_err(),
        "the bytes written after the snapshot survived the revert"
    );
    let snap = stack
        .as_member("p1")
        .get_snapshot(&snapshot.id)
        .await
        .expect("snapshot");
    assert_eq!(snap.status(), pb::SnapshotStatus::Available);
    assert_eq!(stack.quota_usage("p1", "gigabytes").await.0, gib_before);
    stack.assert_quota_exact().await;
    // No temporary object is left in the backend's folder.
    let names = stack.backend_files();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // Extended since the snapshot: refused, nothing changes.
    stack
        .volumes("p1")
        .extend_volume(pb::ExtendVolumeRequest {
            id: id.clone(),
            new_size_gib: 2,
        })
        .await
        .unwrap_or_else(|e| panic!("extend: {e:?}\n{}", stack.logs()));
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    let err = stack
        .volumes("p1")
        .revert_volume_to_snapshot(pb::RevertVolumeToSnapshotRequest {
            id: id.clone(),
            snapshot_id: snapshot.id.clone(),
        })
        .await
        .expect_err("extended since");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn a_revert_brings_the_snapshot_bytes_back_on_file() {
    a_revert_brings_the_snapshot_bytes_back("file").await;
}

#[tokio::test]
async fn a_revert_brings_the_snapshot_bytes_back_on_qcow2() {
    a_revert_brings_the_snapshot_bytes_back("qcow2").await;
}
