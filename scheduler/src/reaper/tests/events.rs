//! Defect 9: the reaper's failures announce the operation's `.error` event, as
//! the volume service would; a volume scheduled once more announces nothing.

use scoria_common::{
    events::Event,
    model::{Attachment, AttachmentStatus, Connector},
};

use super::*;

/// An `attaching` attachment of `volume` owned by `owner`, due in the past.
async fn attaching(f: &Fixture, volume: &Volume, owner: &str) -> Attachment {
    let now = now_ms();
    let attachment = Attachment {
        id: format!("att-{}", volume.id),
        volume_id: volume.id.clone(),
        project_id: volume.project_id.clone(),
        user_id: "u1".into(),
        status: AttachmentStatus::Attaching,
        instance_id: "vm-1".into(),
        connector: Connector {
            host: "compute-1".into(),
            ..Default::default()
        },
        mode: Default::default(),
        volume_host: owner.into(),
        connection_info: None,
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        attached_at_ms: None,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Attachment,
        resource_id: attachment.id.clone(),
        status: "attaching".into(),
        service: owner.into(),
        deadline_ms: now - 1,
    };
    let reserved =
        f.db.reserve_attachment(&attachment, true, &entry)
            .await
            .expect("reserve");
    assert!(
        matches!(reserved, scoria_common::db::AttachReserve::Reserved(_)),
        "{reserved:?}"
    );
    attachment
}

/// The one event announced about `id`, with its status and message.
fn only_event(f: &Fixture, id: &str) -> (Event, String, String) {
    let about: Vec<_> = f
        .notifier
        .announced()
        .into_iter()
        .filter(|a| a.id == id)
        .collect();
    assert_eq!(about.len(), 1, "{id}: {about:?}");
    let a = &about[0];
    (a.event, a.status.clone(), a.error_message.clone())
}

#[tokio::test]
async fn a_down_owners_failed_volumes_announce_their_error_events() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let past = now_ms() - 1;
    let creating = f.volume(VolumeStatus::Creating, "dead@file", past).await;
    let deleting = f.volume(VolumeStatus::Deleting, "dead@file", past).await;
    let extending = f.volume(VolumeStatus::Extending, "dead@file", past).await;

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(report.failed.len(), 3, "{report:?}");
    for (volume, event, status) in [
        (&creating, Event::VolumeCreateError, "error"),
        (&deleting, Event::VolumeDeleteError, "error_deleting"),
        (&extending, Event::VolumeResizeError, "error_extending"),
    ] {
        let (announced, announced_status, message) = only_event(&f, &volume.id);
        assert_eq!(announced, event, "{}", volume.id);
        assert_eq!(announced_status, status);
        assert!(message.contains("its owner dead@file is down"), "{message}");
        assert_eq!(message, f.get(&volume.id).await.error_message);
    }
}

#[tokio::test]
async fn a_down_owners_failed_snapshots_announce_their_error_events() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let parent = f
        .volume(VolumeStatus::Available, "dead@file", i64::MAX)
        .await;
    let now = now_ms();
    let mut ids = Vec::new();
    for status in [SnapshotStatus::Creating, SnapshotStatus::Deleting] {
        let snapshot = Snapshot {
            id: format!("snap-{}", status.as_str()),
            project_id: "p1".into(),
            user_id: "u1".into(),
            volume_id: parent.id.clone(),
            name: String::new(),
            description: String::new(),
            size_gib: 2,
            status,
            host: Some("dead@file".into()),
            error_message: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let entry = WorkerEntry {
            kind: WorkerKind::Snapshot,
            resource_id: snapshot.id.clone(),
            status: status.as_str().into(),
            service: "dead@file".into(),
            deadline_ms: now - 1,
        };
        assert!(
            f.db.create_snapshot(&snapshot, &[VolumeStatus::Available], &entry)
                .await
                .expect("insert")
        );
        ids.push(snapshot.id);
    }

    f.reaper(&[]).run_once().await.expect("run");
    let (event, status, message) = only_event(&f, &ids[0]);
    assert_eq!(
        (event, status.as_str()),
        (Event::SnapshotCreateError, "error")
    );
    assert!(message.contains("dead@file is down"), "{message}");
    let (event, status, _) = only_event(&f, &ids[1]);
    assert_eq!(
        (event, status.as_str()),
        (Event::SnapshotDeleteError, "error_deleting")
    );
}

#[tokio::test]
async fn a_down_owners_failed_attachments_announce_attach_and_detach_errors() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let first = f
        .volume(VolumeStatus::Available, "dead@file", i64::MAX)
        .await;
    let second = f
        .volume(VolumeStatus::Available, "dead@file", i64::MAX)
        .await;
    let stuck_attaching = attaching(&f, &first, "dead@file").await;
    // The second one is detaching: its attach is settled, a detach entry written.
    let stuck_detaching = attaching(&f, &second, "dead@file").await;
    assert!(
        f.db.set_attachment_status(
            &stuck_detaching.id,
            &[AttachmentStatus::Attaching],
            AttachmentStatus::Detaching,
            None,
        )
        .await
        .expect("detaching")
    );
    f.db.upsert_worker(&WorkerEntry {
        kind: WorkerKind::Attachment,
        resource_id: stuck_detaching.id.clone(),
        status: "detaching".into(),
        service: "dead@file".into(),
        deadline_ms: now_ms() - 1,
    })
    .await
    .expect("entry");

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    let (event, status, message) = only_event(&f, &stuck_attaching.id);
    assert_eq!(
        (event, status.as_str()),
        (Event::VolumeAttachError, "error_attaching")
    );
    assert!(message.contains("its owner dead@file is down"), "{message}");
    let (event, status, _) = only_event(&f, &stuck_detaching.id);
    assert_eq!(
        (event, status.as_str()),
        (Event::VolumeDetachError, "error_detaching")
    );
}

#[tokio::test]
async fn a_volume_scheduled_once_more_is_quiet_then_its_failure_announces_create_error() {
    let f = fixture().await;
    let lost = f
        .volume(VolumeStatus::Creating, SCHEDULER_OWNER, now_ms() - 1)
        .await;
    let reaper = f.reaper(&[]);
    reaper.run_once().await.expect("run");
    assert!(
        f.notifier.announced().is_empty(),
        "scheduled once more: not a failure"
    );

    let entry = f.worker(&lost.id).await.expect("entry");
    f.db.move_worker(&entry, SCHEDULER_OWNER, now_ms() - 1)
        .await
        .expect("age the entry");
    reaper.run_once().await.expect("run");
    let (event, status, message) = only_event(&f, &lost.id);
    assert_eq!(
        (event, status.as_str()),
        (Event::VolumeCreateError, "error")
    );
    assert!(
        message.starts_with("No valid backend was found in time"),
        "{message}"
    );
}

#[tokio::test]
async fn two_reapers_announce_one_failure() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let stuck = f
        .volume(VolumeStatus::Extending, "dead@file", now_ms() - 1)
        .await;
    let (a, b) = (f.reaper(&[]), f.reaper(&[]));
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    ra.expect("a");
    rb.expect("b");
    assert_eq!(f.notifier.events_of(&stuck.id), [Event::VolumeResizeError]);
}
