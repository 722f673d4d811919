//! Attachments stuck past their deadline, settled from what runs.

use super::*;

#[tokio::test]
async fn reconcile_settles_stuck_attaching_and_detaching() {
    let f = fixture("file").await;
    let past = now_ms() - 1;
    // Stuck attaching, no export: failed.
    let lonely = new_volume(&f).await;
    let failed = reserve_due(&f, &lonely, AttachMode::ReadWrite, past).await;
    // Stuck attaching with its export running (the attach died after exporting).
    let exported = new_volume(&f).await;
    let finished = reserve_due(&f, &exported, AttachMode::ReadWrite, past).await;
    let path = f.driver.volume_path(&exported.id).expect("path");
    let info = f
        .exports
        .export(&exported.id, &path, "raw", false)
        .await
        .expect("export");
    // Stuck detaching: its export stops, the row goes.
    let leaving = new_volume(&f).await;
    let gone = reserve(&f, &leaving, AttachMode::ReadWrite).await;
    let gone_info = attach(&f, &gone).await.expect("attach");
    start_detach(&f, &gone, past).await;
    // Attaching, not overdue: left alone.
    let waiting = reserve(&f, &new_volume(&f).await, AttachMode::ReadWrite).await;

    let report = crate::reconciler::Reconciler::new(
        f.manager.shared(),
        Arc::new(scoria_common::testing::RecordingVolumes::default()),
    )
    .reconcile_attachments()
    .await
    .expect("reconcile");
    assert_eq!(report.failed, vec![failed.clone()]);
    assert_eq!(report.attached, vec![finished.clone()]);
    assert_eq!(report.detached, vec![gone.clone()]);

    let row = get_attachment(&f, &failed).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(row.error_message.contains("deadline"), "{row:?}");
    assert_eq!(
        get_volume(&f, &lonely.id).await.status,
        VolumeStatus::Available
    );
    let row = get_attachment(&f, &finished).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::Attached);
    assert_eq!(row.connection_info, Some(info.clone()));
    assert_eq!(
        get_volume(&f, &exported.id).await.status,
        VolumeStatus::InUse
    );
    qemu_io(&info.uri(), WRITE, false)
        .await
        .expect("the settled attachment works");
    assert!(get_attachment(&f, &gone).await.is_none());
    assert!(!accepts(&gone_info).await);
    assert_eq!(
        get_volume(&f, &leaving.id).await.status,
        VolumeStatus::Available
    );
    assert_eq!(
        get_attachment(&f, &waiting).await.map(|a| a.status),
        Some(AttachmentStatus::Attaching)
    );
    let again = crate::reconciler::Reconciler::new(
        f.manager.shared(),
        Arc::new(scoria_common::testing::RecordingVolumes::default()),
    )
    .reconcile_attachments()
    .await
    .expect("again");
    assert_eq!(again, Default::default(), "nothing left to settle");
    f.exports.shutdown().await;
}

/// In a cluster, a stuck attachment whose export another member started is that
/// member's to settle while it is up (only it knows whether its export runs);
/// once it is down the others settle it.
#[tokio::test]
async fn reconcile_leaves_a_live_peers_export_to_it() {
    let f = fixture("file").await;
    const PEER: &str = "node2@file";
    let volume = new_volume(&f).await;
    let id = reserve_due(&f, &volume, AttachMode::ReadWrite, now_ms() - 1).await;
    assert!(f.db.set_export_host(&id, PEER).await.expect("export host"));
    f.db.heartbeat(crate::BINARY, PEER, "az1")
        .await
        .expect("peer's heartbeat");
    let reconcile = || async {
        crate::reconciler::Reconciler::new(
            f.manager.shared(),
            Arc::new(scoria_common::testing::RecordingVolumes::default()),
        )
        .reconcile_attachments()
        .await
        .expect("reconcile")
    };

    assert_eq!(reconcile().await, Default::default(), "the peer is up");
    assert_eq!(
        get_attachment(&f, &id).await.map(|a| a.status),
        Some(AttachmentStatus::Attaching)
    );

    sqlx::query("UPDATE services SET last_heartbeat = $1 WHERE host = $2")
        .bind(now_ms() - crate::reconciler::PEER_DOWN_MS - 1_000)
        .bind(PEER)
        .execute(f.db.pool())
        .await
        .expect("age the peer's heartbeat");
    assert_eq!(
        reconcile().await.failed,
        vec![id.clone()],
        "the peer is down"
    );
    assert_eq!(
        get_attachment(&f, &id).await.map(|a| a.status),
        Some(AttachmentStatus::ErrorAttaching)
    );
    f.exports.shutdown().await;
}
