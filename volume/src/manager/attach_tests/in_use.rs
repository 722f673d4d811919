//! Snapshots and deletes of attached volumes.

use super::*;

async fn snapshot_in_use(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &id).await.expect("attach");
    qemu_io(&info.uri(), WRITE, false).await.expect("write");
    let now = now_ms();
    let snapshot = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: volume.id.clone(),
        name: "forced".into(),
        description: String::new(),
        size_gib: 1,
        status: SnapshotStatus::Creating,
        host: Some(HOST.into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: snapshot.id.clone(),
        status: "creating".into(),
        service: HOST.into(),
        deadline_ms: now + 60_000,
    };
    assert!(
        f.db.create_snapshot(&snapshot, &[VolumeStatus::InUse], &entry)
            .await
            .expect("insert snapshot")
    );
    f.manager
        .create_snapshot(
            &ctx(),
            HOST,
            CreateSnapshot {
                snapshot_id: snapshot.id.clone(),
                volume_id: volume.id.clone(),
            },
        )
        .await
        .expect("snapshot");
    let row =
        f.db.get_snapshot(&snapshot.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(
        row.status,
        SnapshotStatus::Available,
        "{}",
        row.error_message
    );
    let path = f.driver.snapshot_path(&snapshot.id).expect("path");
    let output = tokio::process::Command::new("qemu-io")
        .args(["-r", "-f", f.driver.format(), "-c", READ])
        .arg(&path)
        .output()
        .await
        .expect("qemu-io");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !text.contains("failed"),
        "the snapshot holds the bytes written over NBD: {text}"
    );
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("the export still serves");
    f.exports.shutdown().await;
}

#[tokio::test]
async fn a_forced_snapshot_of_an_attached_file_volume_works() {
    snapshot_in_use("file").await;
}

#[tokio::test]
async fn a_forced_snapshot_of_an_attached_qcow2_volume_works() {
    snapshot_in_use("qcow2").await;
}

#[tokio::test]
async fn deleting_a_volume_stops_its_exports() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let path = f.driver.volume_path(&volume.id).expect("path");
    // Left exported (both modes) by attachments that failed.
    let rw = f
        .exports
        .export(&volume.id, &path, "raw", false)
        .await
        .expect("rw");
    let ro = f
        .exports
        .export(&volume.id, &path, "raw", true)
        .await
        .expect("ro");
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Available],
            VolumeStatus::Deleting,
            None,
            None,
            None,
        )
        .await
        .expect("deleting")
    );
    f.manager
        .delete_volume(
            &ctx(),
            HOST,
            DeleteVolume {
                volume_id: volume.id.clone(),
            },
        )
        .await
        .expect("delete");
    assert!(f.db.get_volume(&volume.id).await.expect("get").is_none());
    assert!(!accepts(&rw).await && !accepts(&ro).await);
    assert!(f.exports.exported().is_empty());
    assert!(!path.exists());
}
