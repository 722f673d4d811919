//! CreateAttachment: success, validation, refusals, multiattach, failed calls.

use super::*;

#[tokio::test]
async fn attach_returns_the_export_and_detach_frees_the_volume() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;

    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert_eq!(attached.status, pb::AttachmentStatus::Attached as i32);
    assert_eq!(attached.volume_id, volume_id);
    assert_eq!(attached.project_id, "p1");
    assert_eq!(attached.volume_host, HOST);
    assert_eq!(attached.instance_id, "vm-1");
    assert_eq!(attached.mode, pb::AttachMode::Rw as i32);
    assert_eq!(
        attached.connector.as_ref().expect("connector").host,
        "compute-1"
    );
    let conn = attached.connection_info.expect("connection info");
    assert_eq!(conn.protocol, "nbd");
    assert_eq!(
        conn.uri,
        format!("nbd://127.0.0.1:10809/volume-{volume_id}")
    );
    assert!(!conn.read_only);
    assert!(attached.attached_at.is_some());
    uuid::Uuid::try_parse(&attached.id).expect("a UUID id");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    assert_eq!(
        f.bus.calls(),
        vec![("attach_volume", HOST.to_owned(), attached.id.clone())]
    );
    // The host settled it: no worker entry is left in flight.
    assert!(
        f.db.get_worker(WorkerKind::Attachment, &attached.id)
            .await
            .expect("db")
            .is_none()
    );

    let got = f
        .api
        .get_attachment(request(
            &p1,
            pb::GetAttachmentRequest {
                id: attached.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.status, pb::AttachmentStatus::Attached as i32);

    detach(&f, &p1, &attached.id).await.expect("detach");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
    assert!(all_attachments(&f).await.is_empty());
    assert_eq!(
        f.bus.calls()[1],
        ("detach_volume", HOST.to_owned(), attached.id.clone())
    );
    let status = f
        .api
        .get_attachment(request(&p1, pb::GetAttachmentRequest { id: attached.id }))
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn read_only_mode_reaches_the_row() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let req = pb::CreateAttachmentRequest {
        mode: pb::AttachMode::Ro as i32,
        ..attach_req(&volume_id)
    };
    let attached = attach(&f, &p1, req).await.expect("attach");
    assert_eq!(attached.mode, pb::AttachMode::Ro as i32);
    assert!(attached.connection_info.expect("info").read_only);
}

#[tokio::test]
async fn bad_fields_are_named_and_nothing_is_written() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let long = "x".repeat(256);
    type Set = Box<dyn Fn(&mut pb::CreateAttachmentRequest)>;
    fn connector(r: &mut pb::CreateAttachmentRequest) -> &mut pb::Connector {
        r.connector.as_mut().expect("connector")
    }
    let long2 = long.clone();
    let long3 = long.clone();
    let long4 = long.clone();
    let long5 = long.clone();
    let cases: Vec<(&str, Set)> = vec![
        ("volume_id", Box::new(|r| r.volume_id = "not-a-uuid".into())),
        ("volume_id", Box::new(|r| r.volume_id = String::new())),
        ("connector", Box::new(|r| r.connector = None)),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = String::new()),
        ),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = "  ".into()),
        ),
        (
            "connector.host",
            Box::new(move |r| connector(r).host = long.clone()),
        ),
        (
            "connector.ip",
            Box::new(move |r| connector(r).ip = long2.clone()),
        ),
        (
            "connector.initiator",
            Box::new(move |r| connector(r).initiator = long3.clone()),
        ),
        (
            "connector.properties",
            Box::new(|r| {
                connector(r).properties = (0..=validate::MAX_CONNECTOR_PROPERTIES)
                    .map(|i| (format!("k{i}"), "v".to_owned()))
                    .collect();
            }),
        ),
        (
            r#"connector.properties["k"]"#,
            Box::new(move |r| {
                connector(r).properties = BTreeMap::from([("k".to_owned(), long4.clone())]);
            }),
        ),
        (
            r#"connector.properties[""]"#,
            Box::new(|r| {
                connector(r).properties = BTreeMap::from([(String::new(), "v".to_owned())]);
            }),
        ),
        (
            "instance_id",
            Box::new(move |r| r.instance_id = long5.clone()),
        ),
        ("mode", Box::new(|r| r.mode = 7)),
    ];
    for (name, set) in cases {
        let mut req = attach_req(&volume_id);
        set(&mut req);
        let status = attach(&f, &p1, req).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(field(&status), name, "{status:?}");
        assert!(status.message().contains(name), "{}", status.message());
    }
    assert!(all_attachments(&f).await.is_empty());
    assert!(f.bus.calls().is_empty());
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
}

#[tokio::test]
async fn unknown_and_foreign_volumes_are_not_found() {
    let f = fixture().await;
    let p1 = member("p1");
    let p2 = member("p2");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (ctx, id) in [(&p1, &unknown), (&p2, &volume_id)] {
        let status = attach(&f, ctx, attach_req(id))
            .await
            .expect_err("not found");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(
            status.message().contains(id.as_str()),
            "{}",
            status.message()
        );
    }
    assert!(all_attachments(&f).await.is_empty());

    // Another project's attachment is as good as missing, for reads and deletes.
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    let status = f
        .api
        .get_attachment(request(
            &p2,
            pb::GetAttachmentRequest {
                id: attached.id.clone(),
            },
        ))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let status = detach(&f, &p2, &attached.id).await.expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let listed = f
        .api
        .list_attachments(request(&p2, pb::ListAttachmentsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.attachments.is_empty());
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    // An admin of another project sees it.
    let admin = ctx("p2", &["admin"]);
    f.api
        .get_attachment(request(
            &admin,
            pb::GetAttachmentRequest { id: attached.id },
        ))
        .await
        .expect("admin reads any");
}

#[tokio::test]
async fn volumes_in_the_wrong_status_are_refused_naming_it() {
    let f = fixture().await;
    let p1 = member("p1");
    for status in [
        VolumeStatus::Error,
        VolumeStatus::Extending,
        VolumeStatus::Deleting,
        VolumeStatus::ErrorDeleting,
    ] {
        let volume_id = volume(&f, &p1, "", status).await;
        let err = attach(&f, &p1, attach_req(&volume_id))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{status}: {err:?}");
        assert!(err.message().contains(status.as_str()), "{}", err.message());
    }
    // Still creating: no backend yet.
    let creating = f
        .volumes
        .create_volume(request(
            &p1,
            pb::CreateVolumeRequest {
                size_gib: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("create")
        .into_inner();
    let err = attach(&f, &p1, attach_req(&creating.id))
        .await
        .expect_err("creating");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("creating"), "{}", err.message());
    assert!(all_attachments(&f).await.is_empty());
    assert!(f.bus.calls().is_empty());
}

#[tokio::test]
async fn broker_down_is_unavailable_before_anything_is_written() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    let other = volume(&f, &p1, "", VolumeStatus::Available).await;
    f.h.link.set_down(true);

    let status = attach(&f, &p1, attach_req(&other)).await.expect_err("down");
    assert_eq!(status.code(), Code::Unavailable);
    let status = detach(&f, &p1, &attached.id).await.expect_err("down");
    assert_eq!(status.code(), Code::Unavailable);

    assert_eq!(volume_status(&f, &other).await, VolumeStatus::Available);
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
    let rows = all_attachments(&f).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, AttachmentStatus::Attached);
    assert_eq!(f.bus.calls().len(), 1, "only the first attach was sent");
}

#[tokio::test]
async fn a_second_attachment_needs_a_multiattach_type() {
    let f = fixture().await;
    let p1 = member("p1");
    let single = volume(&f, &p1, "", VolumeStatus::Available).await;
    let first = attach(&f, &p1, attach_req(&single)).await.expect("first");
    let err = attach(&f, &p1, attach_req(&single))
        .await
        .expect_err("second");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not multiattach"),
        "{}",
        err.message()
    );
    assert!(err.message().contains(&first.id), "{}", err.message());
    // A type saying False, or another spelling, does not make it multiattach.
    multiattach_type(&f, "shy", "<is> False").await;
    let shy = volume(&f, &p1, "shy", VolumeStatus::Available).await;
    attach(&f, &p1, attach_req(&shy)).await.expect("first");
    let err = attach(&f, &p1, attach_req(&shy)).await.expect_err("second");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(all_attachments(&f).await.len(), 2);

    multiattach_type(&f, "shared", " <IS>  true ").await;
    let shared = volume(&f, &p1, "shared", VolumeStatus::Available).await;
    let a = attach(&f, &p1, attach_req(&shared)).await.expect("first");
    let b = attach(&f, &p1, attach_req(&shared)).await.expect("second");
    assert_ne!(a.id, b.id);
    assert_eq!(volume_status(&f, &shared).await, VolumeStatus::InUse);
    detach(&f, &p1, &a.id).await.expect("detach a");
    assert_eq!(
        volume_status(&f, &shared).await,
        VolumeStatus::InUse,
        "b holds it"
    );
    detach(&f, &p1, &b.id).await.expect("detach b");
    assert_eq!(volume_status(&f, &shared).await, VolumeStatus::Available);
}

#[test]
fn multiattach_spec_values() {
    for yes in ["<is> True", "<is> true", "<IS>TRUE", "  <is>   True  "] {
        assert!(is_true(yes), "{yes}");
    }
    for no in [
        "<is> False",
        "True",
        "true",
        "",
        "<is>",
        "<is> yes",
        "<in> True",
    ] {
        assert!(!is_true(no), "{no}");
    }
}

#[tokio::test]
async fn a_failed_attach_call_marks_the_attachment_and_keeps_its_code() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let cases = [
        (
            Status::unavailable("no server is consuming volume.node1@file: start one"),
            Code::Unavailable,
        ),
        (
            Status::deadline_exceeded("call attach_volume got no reply within 60s"),
            Code::DeadlineExceeded,
        ),
        (
            Status::resource_exhausted("no free port in 10809-10810"),
            Code::ResourceExhausted,
        ),
        (Status::internal("qemu-nbd: cannot open"), Code::Internal),
    ];
    for (failure, code) in cases {
        let message = failure.message().to_owned();
        *f.bus.attach.lock().expect("lock") = Answer::Fail(failure);
        let status = attach(&f, &p1, attach_req(&volume_id))
            .await
            .expect_err("fails");
        assert_eq!(status.code(), code, "{status:?}");
        if code != Code::Internal {
            assert!(status.message().contains(&message), "{}", status.message());
        }
        // The volume is free again; the attachment says why it failed.
        assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
        let rows = all_attachments(&f).await;
        let row = rows.last().expect("a row");
        assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
        assert_eq!(f.h.notifier.events_of(&row.id), [Event::VolumeAttachError]);
        assert!(
            row.error_message.contains(&message),
            "{}",
            row.error_message
        );
        assert!(
            f.db.get_worker(WorkerKind::Attachment, &row.id)
                .await
                .expect("db")
                .is_none()
        );
    }
    // A failed attachment is deleted like any other; then the volume attaches.
    *f.bus.attach.lock().expect("lock") = Answer::Settle;
    for row in all_attachments(&f).await {
        detach(&f, &p1, &row.id)
            .await
            .expect("delete failed attachment");
    }
    assert!(all_attachments(&f).await.is_empty());
    attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach after failures");
}

#[tokio::test]
async fn an_answer_without_a_settled_row_is_settled_from_the_answer() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    *f.bus.attach.lock().expect("lock") = Answer::Reply;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert_eq!(attached.status, pb::AttachmentStatus::Attached as i32);
    assert_eq!(
        attached.connection_info.expect("info").export_name,
        format!("volume-{volume_id}")
    );
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);
}
