//! Attach and detach: serving, retries, multiattach, modes and failures.

use super::*;

async fn attach_then_detach(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Attaching
    );

    let info = attach(&f, &id).await.expect("attach");
    assert_eq!(info.protocol, "nbd");
    assert_eq!(info.host, "127.0.0.1");
    assert_eq!(info.export_name, format!("volume-{}", volume.id));
    assert!(!info.read_only);
    qemu_io(&info.uri(), WRITE, false)
        .await
        .expect("write over NBD");
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("read it back over NBD");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::Attached);
    assert_eq!(row.connection_info.as_ref(), Some(&info));
    assert!(row.attached_at_ms.is_some());
    assert_eq!(get_volume(&f, &volume.id).await.status, VolumeStatus::InUse);
    assert_eq!(
        f.db.get_worker(WorkerKind::Attachment, &id)
            .await
            .expect("worker"),
        None,
        "the worker entry goes with the attach"
    );

    let again = attach(&f, &id).await.expect("a retried attach");
    assert_eq!(again, info, "a retried attach returns the same info");

    assert!(
        detach(&f, &id).await.expect("detach"),
        "the last user unexports"
    );
    assert!(!accepts(&info).await, "the export stopped");
    assert!(get_attachment(&f, &id).await.is_none(), "the row is gone");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
    assert!(
        !detach_call(&f, &id).await.expect("a retried detach"),
        "nothing to stop the second time"
    );
    assert_eq!(
        f.recorder.event_types(),
        [
            "volume.attach.start",
            "volume.attach.end",
            "volume.detach.start",
            "volume.detach.end"
        ]
    );
    // The bytes stayed in the volume: attached again, they read back.
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &id).await.expect("attach again");
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("the written bytes persist");
    f.exports.shutdown().await;
}

#[tokio::test]
async fn attach_serves_a_file_volume_and_detach_stops_it() {
    attach_then_detach("file").await;
}

#[tokio::test]
async fn attach_serves_a_qcow2_volume_and_detach_stops_it() {
    attach_then_detach("qcow2").await;
}

#[tokio::test]
async fn wrong_statuses_and_unknown_ids_get_their_codes() {
    let f = fixture("file").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let err = attach(&f, &unknown).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&unknown), "{err:?}");
    let err = attach(&f, "").await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("attachment_id"), "{err:?}");

    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let err = detach_call(&f, &id).await.expect_err("not detaching");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("attaching"), "{err:?}");
    f.db.fail_attach(&id, "given up").await.expect("fail");
    let err = attach(&f, &id).await.expect_err("error_attaching");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("error_attaching"), "{err:?}");
    assert!(f.exports.exported().is_empty(), "nothing was exported");
}

#[tokio::test]
async fn multiattach_shares_one_export_until_the_last_detach() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let a = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info_a = attach(&f, &a).await.expect("attach a");
    let b = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info_b = attach(&f, &b).await.expect("attach b");
    assert_eq!(info_a, info_b, "one export for both");
    assert_eq!(f.exports.exported().len(), 1);
    qemu_io(&info_a.uri(), WRITE, false).await.expect("write a");
    qemu_io(&info_b.uri(), READ, false)
        .await
        .expect("b reads a's write");

    assert!(!detach(&f, &a).await.expect("detach a"), "b still uses it");
    assert_eq!(get_volume(&f, &volume.id).await.status, VolumeStatus::InUse);
    qemu_io(&info_b.uri(), READ, false)
        .await
        .expect("b still works");
    assert!(detach(&f, &b).await.expect("detach b"));
    assert!(!accepts(&info_b).await, "stopped after the last detach");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
}

async fn read_only_beside_read_write(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let rw = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let rw_info = attach(&f, &rw).await.expect("attach rw");
    qemu_io(&rw_info.uri(), WRITE, false)
        .await
        .expect("write through rw");
    let ro = reserve(&f, &volume, AttachMode::ReadOnly).await;
    let ro_info = attach(&f, &ro).await.expect("attach ro beside rw");
    assert!(ro_info.read_only);
    assert_eq!(ro_info.export_name, format!("volume-{}-ro", volume.id));
    assert_ne!(ro_info.port, rw_info.port);
    assert!(
        qemu_io(&ro_info.uri(), "write -P 0x11 0 64k", false)
            .await
            .is_err(),
        "a write through the read-only export worked"
    );
    qemu_io(&ro_info.uri(), READ, true)
        .await
        .expect("the read-only export reads");
    qemu_io(&rw_info.uri(), READ, false)
        .await
        .expect("the refused write changed nothing");

    assert!(detach(&f, &ro).await.expect("detach ro"), "ro export stops");
    assert!(!accepts(&ro_info).await);
    qemu_io(&rw_info.uri(), "write -P 0x22 0 64k", false)
        .await
        .expect("rw still serves");
    assert!(detach(&f, &rw).await.expect("detach rw"));
    assert!(!accepts(&rw_info).await);
}

#[tokio::test]
async fn a_read_only_attachment_refuses_writes_while_a_file_volume_is_attached_rw() {
    read_only_beside_read_write("file").await;
}

#[tokio::test]
async fn a_read_only_attachment_refuses_writes_while_a_qcow2_volume_is_attached_rw() {
    read_only_beside_read_write("qcow2").await;
}

#[tokio::test]
async fn a_failed_export_leaves_error_attaching_and_the_volume_available() {
    let f = fixture_with("file", Some("scoria-no-such-qemu-nbd")).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let err = attach(&f, &id).await.expect_err("qemu-nbd missing");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("qemu-utils"), "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(row.error_message.contains("qemu-utils"), "{row:?}");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
    assert_eq!(
        f.recorder.event_types(),
        ["volume.attach.start", "volume.attach.error"]
    );
    let events = f.recorder.announced();
    assert_eq!(
        (
            events[1].event.priority(),
            events[1].event,
            events[1].status.as_str()
        ),
        (
            Priority::Error,
            Event::VolumeAttachError,
            AttachmentStatus::ErrorAttaching.as_str()
        )
    );
}

#[tokio::test]
async fn attaching_a_volume_of_another_host_fails_it() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Attaching],
            VolumeStatus::Attaching,
            Some("node2@file"),
            None,
            None,
        )
        .await
        .expect("move the volume")
    );
    let err = attach(&f, &id).await.expect_err("not here");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node2@file"), "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(f.exports.exported().is_empty());
}

/// Defect 5: the export of an attach that fails after it started (a first
/// delivery exported, then died before recording it) is stopped, unless another
/// active attachment in the same mode uses it.
#[tokio::test]
async fn a_failed_check_stops_the_export_the_attach_left_running() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let path = f.driver.volume_path(&volume.id).expect("path");
    let info = f
        .exports
        .export(&volume.id, &path, "raw", false)
        .await
        .expect("the first delivery's export");
    // The check that the backend object exists fails now.
    f.driver
        .delete_volume(&volume.id)
        .await
        .expect("remove object");
    let err = attach(&f, &id).await.expect_err("no backend object");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(
        f.exports.exported().is_empty(),
        "the export of a failed attach was left: {:?}",
        f.exports.exported()
    );
    assert!(!accepts(&info).await, "qemu-nbd still serves");
}

#[tokio::test]
async fn a_failed_check_keeps_an_export_another_attachment_uses() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let user = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &user).await.expect("attach the user");
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    f.driver
        .delete_volume(&volume.id)
        .await
        .expect("remove object");
    attach(&f, &id).await.expect_err("no backend object");
    assert_eq!(
        get_attachment(&f, &id).await.map(|a| a.status),
        Some(AttachmentStatus::ErrorAttaching)
    );
    assert_eq!(f.exports.exported().len(), 1, "the user's export stays");
    assert!(accepts(&info).await, "the user's export still serves");
    f.exports.shutdown().await;
}
