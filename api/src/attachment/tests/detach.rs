//! DeleteAttachment, ListAttachments, roles, and the in-use rules of
//! DeleteVolume, ExtendVolume and CreateSnapshot.

use super::*;

#[tokio::test]
async fn a_failed_detach_call_leaves_error_detaching_and_can_be_retried() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    *f.bus.detach.lock().expect("lock") =
        Answer::Fail(Status::deadline_exceeded("no reply within 60s"));
    let status = detach(&f, &p1, &attached.id).await.expect_err("fails");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let row =
        f.db.get_attachment(&attached.id)
            .await
            .expect("db")
            .expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorDetaching);
    assert_eq!(
        f.h.notifier.events_of(&attached.id),
        [Event::VolumeDetachError]
    );
    assert!(
        row.error_message.contains("no reply"),
        "{}",
        row.error_message
    );
    // The export may still run: the volume stays in use.
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);

    *f.bus.detach.lock().expect("lock") = Answer::Settle;
    detach(&f, &p1, &attached.id).await.expect("retry");
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
    assert!(all_attachments(&f).await.is_empty());
}

#[tokio::test]
async fn deletes_are_refused_by_status_and_id() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");
    assert!(
        f.db.set_attachment_status(
            &attached.id,
            &[AttachmentStatus::Attached],
            AttachmentStatus::Detaching,
            None,
        )
        .await
        .expect("db")
    );
    let status = detach(&f, &p1, &attached.id).await.expect_err("detaching");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("detaching"),
        "{}",
        status.message()
    );

    let status = detach(&f, &p1, "nope").await.expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field(&status), "id");
    let status = detach(&f, &p1, &uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = f
        .api
        .get_attachment(request(&p1, pb::GetAttachmentRequest { id: "x".into() }))
        .await
        .expect_err("bad id");
    assert_eq!(field(&status), "id");
    assert_eq!(
        f.bus.calls().len(),
        1,
        "no detach was sent for refused deletes"
    );
}

#[tokio::test]
async fn list_pages_and_filters_by_volume() {
    let f = fixture().await;
    let p1 = member("p1");
    multiattach_type(&f, "shared", "<is> True").await;
    let shared = volume(&f, &p1, "shared", VolumeStatus::Available).await;
    let other = volume(&f, &p1, "", VolumeStatus::Available).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            attach(&f, &p1, attach_req(&shared))
                .await
                .expect("attach")
                .id,
        );
        // Distinct milliseconds, so the creation order is the list order.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let lone = attach(&f, &p1, attach_req(&other))
        .await
        .expect("attach")
        .id;

    let list = |req: pb::ListAttachmentsRequest| {
        let api = f.api.clone();
        let p1 = p1.clone();
        async move {
            api.list_attachments(request(&p1, req))
                .await
                .map(Response::into_inner)
        }
    };
    let page = list(pb::ListAttachmentsRequest {
        volume_id: shared.clone(),
        page_size: 2,
        page_token: String::new(),
    })
    .await
    .expect("page 1");
    let got: Vec<_> = page.attachments.iter().map(|a| a.id.clone()).collect();
    assert_eq!(got, ids[..2]);
    assert!(!page.next_page_token.is_empty());
    let next = list(pb::ListAttachmentsRequest {
        volume_id: shared.clone(),
        page_size: 2,
        page_token: page.next_page_token.clone(),
    })
    .await
    .expect("page 2");
    let got: Vec<_> = next.attachments.iter().map(|a| a.id.clone()).collect();
    assert_eq!(got, ids[2..]);
    assert!(next.next_page_token.is_empty());

    let all = list(pb::ListAttachmentsRequest::default())
        .await
        .expect("all");
    assert_eq!(all.attachments.len(), 4);
    assert_eq!(all.attachments[3].id, lone);

    // A token is bound to its filter.
    let status = list(pb::ListAttachmentsRequest {
        volume_id: other.clone(),
        page_size: 2,
        page_token: page.next_page_token,
    })
    .await
    .expect_err("token of another filter");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field(&status), "page_token");
    let status = list(pb::ListAttachmentsRequest {
        volume_id: "x".into(),
        ..Default::default()
    })
    .await
    .expect_err("bad volume id");
    assert_eq!(field(&status), "volume_id");
    // Above the maximum is clamped (AIP-158), not refused.
    for size in [1001, u32::MAX] {
        list(pb::ListAttachmentsRequest {
            page_size: size,
            ..Default::default()
        })
        .await
        .expect("clamped");
    }
}

#[test]
fn readers_may_only_read_attachments() {
    let reader = ctx("p1", &["reader"]);
    let member = member("p1");
    for method in ["GetAttachment", "ListAttachments"] {
        authorize(&reader, path_of(method)).expect(method);
        authorize(&member, path_of(method)).expect(method);
    }
    for method in ["CreateAttachment", "DeleteAttachment"] {
        let err = authorize(&reader, path_of(method)).expect_err(method);
        assert_eq!(err.into_status().code(), Code::PermissionDenied);
        authorize(&member, path_of(method)).expect(method);
        authorize(&ctx("p1", &["admin"]), path_of(method)).expect(method);
    }
}

#[tokio::test]
async fn attached_volumes_cannot_be_deleted_extended_or_snapshotted_without_force() {
    use scoria_proto::v1::snapshot_service_server::SnapshotService;

    let f = fixture().await;
    let p1 = member("p1");
    let volume_id = volume(&f, &p1, "", VolumeStatus::Available).await;
    let attached = attach(&f, &p1, attach_req(&volume_id))
        .await
        .expect("attach");

    let status = f
        .volumes
        .delete_volume(request(
            &p1,
            pb::DeleteVolumeRequest {
                id: volume_id.clone(),
            },
        ))
        .await
        .expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("in-use"), "{}", status.message());
    assert!(
        status.message().contains("attachments first"),
        "{}",
        status.message()
    );

    let status = f
        .volumes
        .extend_volume(request(
            &p1,
            pb::ExtendVolumeRequest {
                id: volume_id.clone(),
                new_size_gib: 2,
            },
        ))
        .await
        .expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("detach"), "{}", status.message());

    let snapshots = crate::snapshot::SnapshotApi::new(f.db.clone(), f.h.ports_with(f.bus.clone()));
    let snap = |force: bool| pb::CreateSnapshotRequest {
        volume_id: volume_id.clone(),
        name: "s".into(),
        description: String::new(),
        force,
    };
    let status = snapshots
        .create_snapshot(request(&p1, snap(false)))
        .await
        .expect_err("in use, no force");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("force"), "{}", status.message());
    let forced = snapshots
        .create_snapshot(request(&p1, snap(true)))
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(forced.status, pb::SnapshotStatus::Creating as i32);
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::InUse);

    // An operator's status reset does not free an attached volume for deletion.
    assert!(
        f.db.transition_volume_with_worker(
            &volume_id,
            &[VolumeStatus::InUse],
            VolumeStatus::Available,
            None,
            None,
            None,
        )
        .await
        .expect("db")
    );
    let status = f
        .volumes
        .delete_volume(request(
            &p1,
            pb::DeleteVolumeRequest {
                id: volume_id.clone(),
            },
        ))
        .await
        .expect_err("still attached");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains(&attached.id),
        "{}",
        status.message()
    );
    assert_eq!(volume_status(&f, &volume_id).await, VolumeStatus::Available);
}
