//! Tests of the attachment queries and of the volume status they settle, on a
//! SQLite file.

use super::*;
use crate::model::{
    AttachMode, Attachment, AttachmentStatus, ConnectionInfo, Connector, Volume, VolumeStatus,
    now_ms,
};

use crate::testing::TempDb;

async fn temp_db() -> TempDb {
    TempDb::new().await
}

async fn volume(db: &Db, status: VolumeStatus) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: String::new(),
        description: String::new(),
        size_gib: 1,
        status,
        volume_type: String::new(),
        availability_zone: "default".into(),
        host: Some("node1@file".into()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    db.create_volume(&volume, None, &worker(WorkerKind::Volume, &volume.id))
        .await
        .expect("insert");
    db.transition_volume_with_worker(&volume.id, &[status], status, None, None, None)
        .await
        .expect("drop the worker entry");
    volume
}

fn worker(kind: WorkerKind, id: &str) -> WorkerEntry {
    WorkerEntry {
        kind,
        resource_id: id.into(),
        status: "attaching".into(),
        service: "node1@file".into(),
        deadline_ms: now_ms() + 60_000,
    }
}

fn attachment(volume: &Volume, mode: AttachMode) -> Attachment {
    let now = now_ms();
    Attachment {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: volume.id.clone(),
        project_id: volume.project_id.clone(),
        user_id: "u1".into(),
        status: AttachmentStatus::Attaching,
        instance_id: "vm-1".into(),
        connector: Connector {
            host: "compute-1".into(),
            ip: "10.0.0.1".into(),
            ..Default::default()
        },
        mode,
        volume_host: "node1@file".into(),
        connection_info: None,
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        attached_at_ms: None,
    }
}

fn info(port: u16) -> ConnectionInfo {
    ConnectionInfo {
        protocol: "nbd".into(),
        host: "127.0.0.1".into(),
        port,
        export_name: "volume-x".into(),
        read_only: false,
    }
}

async fn status_of(db: &Db, id: &str) -> VolumeStatus {
    db.get_volume(id).await.expect("get").expect("row").status
}

async fn reserve(db: &Db, a: &Attachment, multiattach: bool) -> AttachReserve {
    db.reserve_attachment(a, multiattach, &worker(WorkerKind::Attachment, &a.id))
        .await
        .expect("reserve")
}

#[tokio::test]
async fn attach_and_detach_walk_the_volume_through_its_statuses() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let a = attachment(&v, AttachMode::ReadWrite);
    match reserve(t.db(), &a, false).await {
        AttachReserve::Reserved(volume) => assert_eq!(volume.status, VolumeStatus::Attaching),
        other => panic!("not reserved: {other:?}"),
    }
    assert!(
        t.db()
            .get_worker(WorkerKind::Attachment, &a.id)
            .await
            .expect("w")
            .is_some()
    );

    let attached = t
        .db()
        .finish_attach(&a.id, &info(10809))
        .await
        .expect("finish");
    let attached = attached.expect("was attaching");
    assert_eq!(attached.status, AttachmentStatus::Attached);
    assert_eq!(attached.connection_info, Some(info(10809)));
    assert_eq!(attached.connector.host, "compute-1");
    assert!(attached.attached_at_ms.is_some());
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::InUse);
    assert!(
        t.db()
            .get_worker(WorkerKind::Attachment, &a.id)
            .await
            .expect("w")
            .is_none()
    );
    // A second finish (a redelivery) changes nothing.
    assert_eq!(
        t.db().finish_attach(&a.id, &info(1)).await.expect("again"),
        None
    );

    match t
        .db()
        .start_detach(&a.id, &worker(WorkerKind::Attachment, &a.id))
        .await
        .expect("detach")
    {
        DetachStart::Started(att) => assert_eq!(att.status, AttachmentStatus::Detaching),
        other => panic!("not started: {other:?}"),
    }
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Detaching);
    // Detaching cannot be detached again.
    assert_eq!(
        t.db()
            .start_detach(&a.id, &worker(WorkerKind::Attachment, &a.id))
            .await
            .expect("again"),
        DetachStart::WrongStatus(AttachmentStatus::Detaching)
    );
    assert!(t.db().finish_detach(&a.id).await.expect("finish detach"));
    assert_eq!(t.db().get_attachment(&a.id).await.expect("get"), None);
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Available);
    assert!(!t.db().finish_detach(&a.id).await.expect("twice"));
    assert_eq!(
        t.db()
            .start_detach(&a.id, &worker(WorkerKind::Attachment, &a.id))
            .await
            .expect("gone"),
        DetachStart::NotFound
    );
}

#[tokio::test]
async fn a_second_attachment_needs_multiattach_and_nothing_is_written_without() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let first = attachment(&v, AttachMode::ReadWrite);
    assert!(matches!(
        reserve(t.db(), &first, false).await,
        AttachReserve::Reserved(_)
    ));
    t.db()
        .finish_attach(&first.id, &info(10809))
        .await
        .expect("finish");

    let second = attachment(&v, AttachMode::ReadOnly);
    assert_eq!(
        reserve(t.db(), &second, false).await,
        AttachReserve::NotMultiattach(vec![first.id.clone()])
    );
    assert_eq!(t.db().get_attachment(&second.id).await.expect("get"), None);
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::InUse);

    assert!(matches!(
        reserve(t.db(), &second, true).await,
        AttachReserve::Reserved(_)
    ));
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Attaching);
    t.db()
        .finish_attach(&second.id, &info(10810))
        .await
        .expect("finish");
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::InUse);

    // Detaching one of two leaves the volume in use.
    t.db()
        .start_detach(&first.id, &worker(WorkerKind::Attachment, &first.id))
        .await
        .expect("d");
    t.db().finish_detach(&first.id).await.expect("fd");
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::InUse);
    let listed = t
        .db()
        .list_attachments(&AttachmentQuery {
            volume_id: Some(v.id.clone()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str()]
    );
    assert_eq!(listed[0].mode, AttachMode::ReadOnly);
}

#[tokio::test]
async fn volumes_in_other_statuses_refuse_attachments() {
    let t = temp_db().await;
    for status in [
        VolumeStatus::Creating,
        VolumeStatus::Error,
        VolumeStatus::Deleting,
        VolumeStatus::Extending,
    ] {
        let v = volume(t.db(), status).await;
        let a = attachment(&v, AttachMode::ReadWrite);
        assert_eq!(
            reserve(t.db(), &a, true).await,
            AttachReserve::WrongStatus(status)
        );
        assert_eq!(t.db().get_attachment(&a.id).await.expect("get"), None);
        assert_eq!(status_of(t.db(), &v.id).await, status);
    }
    let mut ghost = attachment(
        &volume(t.db(), VolumeStatus::Available).await,
        AttachMode::ReadWrite,
    );
    ghost.volume_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        reserve(t.db(), &ghost, false).await,
        AttachReserve::VolumeNotFound
    );
}

#[tokio::test]
async fn a_failed_attach_frees_the_volume_and_an_attach_beats_a_delete() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let a = attachment(&v, AttachMode::ReadWrite);
    assert!(matches!(
        reserve(t.db(), &a, false).await,
        AttachReserve::Reserved(_)
    ));
    // The volume is attaching: a delete's CAS loses.
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, None)
            .await
            .expect("delete"),
        VolumeDeleteStart::WrongStatus
    );
    assert!(
        t.db()
            .fail_attach(&a.id, "qemu-nbd exited")
            .await
            .expect("fail")
    );
    let failed = t
        .db()
        .get_attachment(&a.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(failed.status, AttachmentStatus::ErrorAttaching);
    assert_eq!(failed.error_message, "qemu-nbd exited");
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Available);
    // A failed attachment does not hold the volume: another attach works.
    let b = attachment(&v, AttachMode::ReadWrite);
    assert!(matches!(
        reserve(t.db(), &b, false).await,
        AttachReserve::Reserved(_)
    ));
    assert!(t.db().fail_attach(&b.id, "again").await.expect("fail"));
    // And the volume's row takes its failed attachments with it.
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, None)
            .await
            .expect("delete"),
        VolumeDeleteStart::Started
    );
    assert!(t.db().delete_volume_row(&v.id).await.expect("row"));
    assert_eq!(t.db().get_attachment(&a.id).await.expect("get"), None);
}

#[tokio::test]
async fn a_failed_detach_keeps_the_volume_in_use_and_can_be_retried() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let a = attachment(&v, AttachMode::ReadWrite);
    reserve(t.db(), &a, false).await;
    t.db()
        .finish_attach(&a.id, &info(10809))
        .await
        .expect("finish");
    t.db()
        .start_detach(&a.id, &worker(WorkerKind::Attachment, &a.id))
        .await
        .expect("d");
    assert!(
        t.db()
            .fail_detach(&a.id, "kill failed")
            .await
            .expect("fail")
    );
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::InUse);
    assert!(matches!(
        t.db()
            .start_detach(&a.id, &worker(WorkerKind::Attachment, &a.id))
            .await
            .expect("retry"),
        DetachStart::Started(_)
    ));
    // An operator's reset is not overwritten by an attachment's change.
    t.db()
        .reset_volume_status(&v.id, VolumeStatus::Error)
        .await
        .expect("reset");
    t.db().finish_detach(&a.id).await.expect("fd");
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Error);
}

#[tokio::test]
async fn list_filters_by_host_and_status_and_pages() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut a = attachment(&v, AttachMode::ReadWrite);
        a.created_at_ms += i;
        reserve(t.db(), &a, true).await;
        ids.push(a.id);
    }
    t.db()
        .finish_attach(&ids[1], &info(10809))
        .await
        .expect("finish");
    let attached = t
        .db()
        .list_attachments(&AttachmentQuery {
            volume_host: Some("node1@file".into()),
            statuses: vec![AttachmentStatus::Attached],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].id, ids[1]);
    let first = t
        .db()
        .list_attachments(&AttachmentQuery {
            project_id: Some("p1".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page 1");
    assert_eq!(
        first.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        ids[..2]
    );
    let last = first.last().expect("two");
    let rest = t
        .db()
        .list_attachments(&AttachmentQuery {
            project_id: Some("p1".into()),
            after: Some((last.created_at_ms, last.id.clone())),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page 2");
    assert_eq!(
        rest.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        ids[2..]
    );
    let other = t
        .db()
        .list_attachments(&AttachmentQuery {
            project_id: Some("p2".into()),
            ..Default::default()
        })
        .await
        .expect("other project");
    assert!(other.is_empty());
}

#[tokio::test]
async fn a_volume_with_an_attachment_cannot_be_deleted_even_after_a_status_reset() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available).await;
    let a = attachment(&v, AttachMode::ReadWrite);
    reserve(t.db(), &a, false).await;
    t.db()
        .finish_attach(&a.id, &info(10809))
        .await
        .expect("finish");
    // An operator forces the volume to `available`; the attachment still holds it.
    t.db()
        .reset_volume_status(&v.id, VolumeStatus::Available)
        .await
        .expect("reset");
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, None)
            .await
            .expect("delete"),
        VolumeDeleteStart::WrongStatus
    );
    assert_eq!(status_of(t.db(), &v.id).await, VolumeStatus::Available);
}
