//! GetVolume, ListVolumes, UpdateVolume and DeleteVolume.

use super::*;

#[tokio::test]
async fn get_hides_other_projects() {
    let f = fixture().await;
    let volume = create(&f, &member("p1"), "db").await;
    let get = |ctx: RequestContext, id: String| {
        let api = f.api.clone();
        async move {
            api.get_volume(request(&ctx, pb::GetVolumeRequest { id }))
                .await
        }
    };
    assert_eq!(
        get(member("p1"), volume.id.clone())
            .await
            .expect("own")
            .into_inner()
            .id,
        volume.id
    );
    let status = get(member("p2"), volume.id.clone())
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains(&volume.id),
        "{}",
        status.message()
    );
    get(ctx("p2", &["admin"]), volume.id.clone())
        .await
        .expect("admin sees all");
    assert_eq!(
        get(member("p1"), "nope".into())
            .await
            .expect_err("bad id")
            .code(),
        Code::InvalidArgument
    );
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        get(member("p1"), missing)
            .await
            .expect_err("missing")
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn list_pages_through_own_volumes() {
    let f = fixture().await;
    let p1 = member("p1");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(&f, &p1, if i % 2 == 0 { "even" } else { "odd" })
                .await
                .id,
        );
    }
    create(&f, &member("p2"), "even").await;

    let list = |ctx: RequestContext, req: pb::ListVolumesRequest| {
        let api = f.api.clone();
        async move {
            api.list_volumes(request(&ctx, req))
                .await
                .map(Response::into_inner)
        }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListVolumesRequest {
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = list(p1.clone(), req).await.expect("page");
        assert!(page.volumes.len() <= 2);
        seen.extend(page.volumes.into_iter().map(|v| v.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(sorted_seen, sorted_ids, "every own volume exactly once");

    let evens = list(
        p1.clone(),
        pb::ListVolumesRequest {
            name: "even".into(),
            ..Default::default()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(evens.volumes.len(), 3);
    assert!(evens.next_page_token.is_empty());

    let first = list(
        p1.clone(),
        pb::ListVolumesRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .expect("p");
    let foreign = pb::ListVolumesRequest {
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    assert_eq!(
        list(member("p2"), foreign)
            .await
            .expect_err("foreign token")
            .code(),
        Code::InvalidArgument
    );
    let refiltered = pb::ListVolumesRequest {
        page_token: first.next_page_token,
        name: "odd".into(),
        ..Default::default()
    };
    assert_eq!(
        list(p1.clone(), refiltered)
            .await
            .expect_err("other filters")
            .code(),
        Code::InvalidArgument
    );
    let bad_status = pb::ListVolumesRequest {
        status: 42,
        ..Default::default()
    };
    assert_eq!(
        list(p1.clone(), bad_status)
            .await
            .expect_err("status")
            .code(),
        Code::InvalidArgument
    );
    let by_status = pb::ListVolumesRequest {
        status: pb::VolumeStatus::Available as i32,
        ..Default::default()
    };
    assert!(
        list(p1, by_status)
            .await
            .expect("status filter")
            .volumes
            .is_empty()
    );
}

#[tokio::test]
async fn update_changes_masked_fields() {
    let f = fixture().await;
    let p1 = member("p1");
    let volume = create(&f, &p1, "db").await;
    let req = pb::UpdateVolumeRequest {
        id: volume.id.clone(),
        update_mask: Some(FieldMask {
            paths: vec!["description".into(), "metadata".into()],
        }),
        name: "ignored".into(),
        description: "main database".into(),
        metadata: BTreeMap::from([("tier".into(), "gold".into())]),
    };
    let updated = f
        .api
        .update_volume(request(&p1, req.clone()))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "db");
    assert_eq!(updated.description, "main database");
    assert_eq!(
        updated.metadata.get("tier").map(String::as_str),
        Some("gold")
    );
    let status = f
        .api
        .update_volume(request(&member("p2"), req))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
}

async fn place(f: &Fixture, id: &str, host: &str) {
    let won =
        f.db.transition_volume_with_worker(
            id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            Some(host),
            None,
            None,
        )
        .await
        .expect("db");
    assert!(won);
}

#[tokio::test]
async fn delete_follows_the_volume_status_and_host() {
    let f = fixture().await;
    let p1 = member("p1");
    let delete = |ctx: RequestContext, id: String| {
        let api = f.api.clone();
        async move {
            api.delete_volume(request(&ctx, pb::DeleteVolumeRequest { id }))
                .await
        }
    };

    let creating = create(&f, &p1, "busy").await;
    let status = delete(p1.clone(), creating.id.clone())
        .await
        .expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is creating"),
        "{}",
        status.message()
    );

    // Never scheduled (error without host): the row goes at once.
    f.db.transition_volume(
        &creating.id,
        &[VolumeStatus::Creating],
        VolumeStatus::Error,
        None,
        Some("no host"),
    )
    .await
    .expect("db");
    let gone = delete(p1.clone(), creating.id.clone())
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(gone.status, pb::VolumeStatus::Deleting as i32);
    assert!(f.db.get_volume(&creating.id).await.expect("db").is_none());

    // On a backend: deleting, owned by the host, and a cast to it.
    let placed = create(&f, &p1, "placed").await;
    place(&f, &placed.id, "h1@file").await;
    assert_eq!(
        delete(member("p2"), placed.id.clone())
            .await
            .expect_err("foreign")
            .code(),
        Code::NotFound
    );
    let deleting = delete(p1.clone(), placed.id.clone())
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleting.status, pb::VolumeStatus::Deleting as i32);
    let worker =
        f.db.get_worker(WorkerKind::Volume, &placed.id)
            .await
            .expect("db")
            .expect("worker");
    assert_eq!(
        (worker.service.as_str(), worker.status.as_str()),
        ("h1@file", "deleting")
    );
    assert_eq!(f.deleted(), vec![("h1@file".to_owned(), placed.id.clone())]);
    let status = delete(p1.clone(), placed.id.clone())
        .await
        .expect_err("already deleting");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A failed cast settles in error_deleting with the reason.
    let unlucky = create(&f, &p1, "unlucky").await;
    place(&f, &unlucky.id, "h2@file").await;
    f.fail_casts(true);
    assert_eq!(
        delete(p1.clone(), unlucky.id.clone())
            .await
            .expect_err("cast")
            .code(),
        Code::Unavailable
    );
    let row =
        f.db.get_volume(&unlucky.id)
            .await
            .expect("db")
            .expect("row");
    assert_eq!(row.status, VolumeStatus::ErrorDeleting);
    assert_eq!(
        f.h.notifier.events_of(&unlucky.id),
        [Event::VolumeDeleteError]
    );
    assert!(
        row.error_message.contains("h2@file"),
        "{}",
        row.error_message
    );
    assert!(
        f.db.get_worker(WorkerKind::Volume, &unlucky.id)
            .await
            .expect("db")
            .is_none()
    );
}

#[tokio::test]
async fn all_projects_lists_every_project_for_admins_only() {
    let f = fixture().await;
    let mine = create(&f, &member("p1"), "a").await;
    let theirs = create(&f, &member("p2"), "b").await;
    let all = pb::ListVolumesRequest {
        all_projects: true,
        ..Default::default()
    };
    let denied = f
        .api
        .list_volumes(request(&member("p1"), all.clone()))
        .await
        .expect_err("a member");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let admin = ctx("ops", &["admin", "member"]);
    let listed = f
        .api
        .list_volumes(request(&admin, all))
        .await
        .expect("an admin")
        .into_inner();
    let mut ids: Vec<String> = listed.volumes.into_iter().map(|v| v.id).collect();
    ids.sort();
    let mut want = vec![mine.id, theirs.id];
    want.sort();
    assert_eq!(ids, want);
    let own = f
        .api
        .list_volumes(request(&admin, pb::ListVolumesRequest::default()))
        .await
        .expect("own")
        .into_inner();
    assert!(
        own.volumes.is_empty(),
        "without it an admin lists its own project"
    );
}
