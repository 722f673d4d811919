//! What the API makes of a request before any work: idempotency keys, bad
//! fields, other projects' volumes, opaque page tokens and list filters.

use scoria_tests::stack::{Caller, DbKind, Stack};
use tonic::Code;

use crate::{
    calls::Call,
    support::{create, mask, pb, sized},
};

#[tokio::test(flavor = "multi_thread")]
async fn request_id_makes_create_idempotent() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let request = pb::CreateVolumeRequest {
        name: "once".into(),
        request_id: "req-abc".into(),
        ..sized(1)
    };
    let first = create(&stack, "p1", request.clone()).await;
    let again = stack
        .volumes("p1")
        .create_volume(request.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.id, first.id, "the same key returns the same volume");
    let other_project = create(&stack, "p2", request.clone()).await;
    assert_ne!(other_project.id, first.id, "keys are per project");
    let err = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            name: "different".into(),
            ..request
        })
        .await
        .expect_err("same key, different request");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("req-abc"), "{err:?}");
    let listed = stack
        .volumes("p1")
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.volumes.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_names_the_field_and_writes_nothing() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let long = "x".repeat(256);
    let many = (0..129)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let cases: Vec<(Call, &str)> = vec![
        (sized(0).into(), "size_gib"),
        (sized(100_000_000).into(), "size_gib"),
        (
            pb::CreateVolumeRequest {
                name: long.clone(),
                ..sized(1)
            }
            .into(),
            "name",
        ),
        (
            pb::CreateVolumeRequest {
                description: long.clone(),
                ..sized(1)
            }
            .into(),
            "description",
        ),
        (
            pb::CreateVolumeRequest {
                metadata: many,
                ..sized(1)
            }
            .into(),
            "metadata",
        ),
        (
            pb::CreateVolumeRequest {
                source: crate::support::from_snapshot("not-a-uuid"),
                ..sized(1)
            }
            .into(),
            "snapshot_id",
        ),
        (
            pb::CreateVolumeRequest {
                source: crate::support::from_volume("nope"),
                ..sized(1)
            }
            .into(),
            "source_volume_id",
        ),
        (
            pb::GetVolumeRequest {
                id: "not-a-uuid".into(),
            }
            .into(),
            "id",
        ),
        (
            pb::DeleteVolumeRequest {
                id: "../../etc".into(),
            }
            .into(),
            "id",
        ),
        (
            pb::ListVolumesRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            }
            .into(),
            "page_token",
        ),
        (
            pb::UpdateVolumeRequest {
                id: uuid::Uuid::new_v4().to_string(),
                update_mask: mask(&["size_gib"]),
                ..Default::default()
            }
            .into(),
            "update_mask",
        ),
    ];
    let member = stack.as_member("p1");
    for (call, field) in cases {
        let err = call.send(&member).await.expect_err("must be rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{call:?}: {err:?}");
        assert!(
            err.message().contains(field),
            "{call:?}: message does not name {field}: {err:?}"
        );
    }
    assert_eq!(
        stack.db.count_volumes("p1").await.expect("count"),
        0,
        "a rejected request wrote a row"
    );
    let missing = stack
        .get_volume("p1", &uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("404");
    assert_eq!(missing.code(), Code::NotFound);
    let unauthenticated = stack
        .clients(Caller::anonymous())
        .volumes()
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .expect_err("no project header");
    assert_eq!(
        unauthenticated.code(),
        Code::Unauthenticated,
        "{unauthenticated:?}"
    );
}

/// ListVolumes as a member of `project`.
async fn list(
    stack: &Stack,
    project: &str,
    request: pb::ListVolumesRequest,
) -> Result<pb::ListVolumesResponse, tonic::Status> {
    stack
        .volumes(project)
        .list_volumes(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_only_see_their_own_volumes_and_pages_are_opaque() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let request = pb::CreateVolumeRequest {
            name: format!("v{i}"),
            ..sized(1)
        };
        ids.push(create(&stack, "alice", request).await.id);
    }
    let err = stack
        .get_volume("bob", &ids[0])
        .await
        .expect_err("foreign volume");
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another project's volume must look absent: {err:?}"
    );
    let err = stack
        .volumes("bob")
        .delete_volume(pb::DeleteVolumeRequest { id: ids[0].clone() })
        .await
        .expect_err("foreign delete");
    assert_eq!(err.code(), Code::NotFound);
    let bob = list(&stack, "bob", pb::ListVolumesRequest::default())
        .await
        .expect("list");
    assert!(bob.volumes.is_empty(), "{bob:?}");
    // AIP-158: a page_size above the maximum is clamped, not refused.
    let huge = list(
        &stack,
        "alice",
        pb::ListVolumesRequest {
            page_size: 5000,
            ..Default::default()
        },
    )
    .await
    .expect("a page_size above the maximum is clamped");
    assert_eq!(huge.volumes.len(), 7, "{huge:?}");

    let page_of = |token: &str| pb::ListVolumesRequest {
        page_size: 3,
        page_token: token.to_owned(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&stack, "alice", page_of(&token)).await.expect("page");
        pages += 1;
        seen.extend(page.volumes.into_iter().map(|v| v.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        if pages == 1 {
            let foreign = list(&stack, "bob", page_of(&token)).await;
            assert_eq!(
                foreign.expect_err("foreign token").code(),
                Code::InvalidArgument
            );
            let other_filter = pb::ListVolumesRequest {
                name: "v1".into(),
                ..page_of(&token)
            };
            let other_filter = list(&stack, "alice", other_filter).await;
            assert_eq!(
                other_filter.expect_err("token of other filters").code(),
                Code::InvalidArgument
            );
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "pages return every volume once, oldest first");

    let by_name = pb::ListVolumesRequest {
        name: "v3".into(),
        ..Default::default()
    };
    let named = list(&stack, "alice", by_name).await.expect("by name");
    assert_eq!(named.volumes.len(), 1);
    for v in &ids {
        stack
            .wait_status("alice", v, pb::VolumeStatus::Available)
            .await;
    }
    let by_status = |status: pb::VolumeStatus| pb::ListVolumesRequest {
        status: status.into(),
        ..Default::default()
    };
    let available = list(&stack, "alice", by_status(pb::VolumeStatus::Available))
        .await
        .expect("by status");
    assert_eq!(available.volumes.len(), 7);
    let creating = list(&stack, "alice", by_status(pb::VolumeStatus::Creating))
        .await
        .expect("by status");
    assert!(creating.volumes.is_empty(), "{creating:?}");
}
