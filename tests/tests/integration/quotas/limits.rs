//! The narrower limits: per volume type, per volume, attachments, and a limit
//! an admin lowers below what the project holds.

use scoria_tests::stack::{DbKind, Stack};
use tonic::Response;

use super::{
    assert_over_quota, available, create_type, delete_volume, dimension, held, refused_resources,
    try_create, typed,
};
use crate::support::{pb, sized};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_type_limits_refuse_only_their_type() {
    let stack = Stack::start(DbKind::Sqlite).await;
    create_type(&stack, "gold", &[]).await;
    create_type(&stack, "silver", &[]).await;
    stack
        .set_quota(
            "p1",
            &[
                ("volumes_gold", 2),
                ("gigabytes_silver", 3),
                ("snapshots_gold", 1),
            ],
        )
        .await;
    let member = stack.as_member("p1");

    let gold = [
        available(&stack, "p1", typed("gold", 1)).await,
        available(&stack, "p1", typed("gold", 1)).await,
    ];
    let err = try_create(&member, typed("gold", 1))
        .await
        .expect_err("gold is full");
    let violation = assert_over_quota(&err, "p1", "volumes_gold");
    assert_eq!(violation.quota_value, 2);
    assert_eq!(dimension(&violation, "in_use"), 2, "{violation:?}");
    assert_eq!(refused_resources(&err), ["volumes_gold"], "{err:?}");
    // Other types, and the default one, are not bound by it.
    available(&stack, "p1", typed("silver", 2)).await;
    available(&stack, "p1", sized(1)).await;
    let err = try_create(&member, typed("silver", 2))
        .await
        .expect_err("silver's gigabytes are full");
    assert_over_quota(&err, "p1", "gigabytes_silver");
    available(&stack, "p1", typed("silver", 1)).await;
    assert_eq!(
        stack.quota_usage("p1", "volumes_gold").await,
        (2, 0, 2),
        "volumes_gold"
    );
    assert_eq!(
        stack.quota_usage("p1", "gigabytes_silver").await,
        (3, 0, 3),
        "gigabytes_silver"
    );
    assert_eq!(held(&stack, "p1", "volumes").await, (5, 0));

    // Snapshots of a gold volume: one, then refused; any other type's are fine.
    let snapshot = |volume_id: &str| pb::CreateSnapshotRequest {
        volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    let first = member
        .snapshots()
        .create_snapshot(snapshot(&gold[0]))
        .await
        .map(Response::into_inner)
        .expect("first gold snapshot");
    let err = member
        .snapshots()
        .create_snapshot(snapshot(&gold[1]))
        .await
        .expect_err("gold's snapshots are full");
    assert_over_quota(&err, "p1", "snapshots_gold");
    stack
        .wait_snapshot_status("p1", &first.id, pb::SnapshotStatus::Available)
        .await;
    assert_eq!(stack.quota_usage("p1", "snapshots_gold").await, (1, 0, 1));
    stack.assert_quota_exact().await;

    // A delete makes room for the type again.
    member
        .snapshots()
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: first.id.clone(),
        })
        .await
        .expect("delete snapshot");
    stack.wait_snapshot_gone("p1", &first.id).await;
    delete_volume(&stack, "p1", &gold[0]).await;
    assert_eq!(held(&stack, "p1", "volumes_gold").await, (1, 0));
    available(&stack, "p1", typed("gold", 1)).await;
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_volume_gigabytes_bounds_creates_and_extends() {
    let stack = Stack::start(DbKind::Sqlite).await;
    stack.set_quota("p1", &[("per_volume_gigabytes", 5)]).await;
    let member = stack.as_member("p1");

    let err = try_create(&member, sized(6)).await.expect_err("too big");
    let violation = assert_over_quota(&err, "p1", "per_volume_gigabytes");
    assert_eq!(violation.quota_value, 5);
    assert_eq!(dimension(&violation, "requested"), 6, "{violation:?}");
    assert!(
        err.message()
            .contains("per_volume_gigabytes allows volumes of at most 5 GiB, 6 GiB requested"),
        "{err:?}"
    );
    assert_eq!(
        stack.db.count_volumes("p1").await.unwrap(),
        0,
        "nothing written"
    );

    available(&stack, "p1", sized(5)).await;
    let small = available(&stack, "p1", sized(3)).await;
    let extend = |new_size_gib| pb::ExtendVolumeRequest {
        id: small.clone(),
        new_size_gib,
    };
    let err = member
        .volumes()
        .extend_volume(extend(6))
        .await
        .expect_err("extend past the bound");
    assert_over_quota(&err, "p1", "per_volume_gigabytes");
    let unchanged = stack.get_volume("p1", &small).await.unwrap();
    assert_eq!(
        (unchanged.status(), unchanged.size_gib),
        (pb::VolumeStatus::Available, 3)
    );
    member
        .volumes()
        .extend_volume(extend(5))
        .await
        .expect("extend to the bound");
    let extended = stack
        .wait_status("p1", &small, pb::VolumeStatus::Available)
        .await;
    assert_eq!(extended.size_gib, 5);
    assert_eq!(held(&stack, "p1", "gigabytes").await, (10, 0));
    stack.assert_quota_exact().await;
}

/// An attachment of `volume_id` for instance `instance`.
fn attach_request(volume_id: &str, instance: &str) -> pb::CreateAttachmentRequest {
    pb::CreateAttachmentRequest {
        volume_id: volume_id.to_owned(),
        connector: Some(pb::Connector {
            host: "compute-1".into(),
            ip: "127.0.0.1".into(),
            ..Default::default()
        }),
        instance_id: instance.to_owned(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attachment_limit_refuses_a_second_attachment() {
    let stack = Stack::start(DbKind::Sqlite).await;
    stack.set_quota("p1", &[("attachments", 1)]).await;
    let a = available(&stack, "p1", sized(1)).await;
    let b = available(&stack, "p1", sized(1)).await;
    let mut attachments = stack.attachments("p1");

    let first = attachments
        .create_attachment(attach_request(&a, "vm-1"))
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("attach: {e:?}\n{}", stack.logs()));
    assert_eq!(first.status(), pb::AttachmentStatus::Attached, "{first:?}");
    assert_eq!(stack.quota_usage("p1", "attachments").await, (1, 0, 1));
    let err = attachments
        .create_attachment(attach_request(&b, "vm-2"))
        .await
        .expect_err("one attachment allowed");
    let violation = assert_over_quota(&err, "p1", "attachments");
    assert_eq!(violation.quota_value, 1);
    let other = stack.get_volume("p1", &b).await.unwrap();
    assert_eq!(other.status(), pb::VolumeStatus::Available, "{other:?}");

    attachments
        .delete_attachment(pb::DeleteAttachmentRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("detach: {e:?}\n{}", stack.logs()));
    assert_eq!(held(&stack, "p1", "attachments").await, (0, 0));
    let second = attachments
        .create_attachment(attach_request(&b, "vm-2"))
        .await
        .map(Response::into_inner)
        .unwrap_or_else(|e| panic!("attach after a detach: {e:?}\n{}", stack.logs()));
    assert_eq!(held(&stack, "p1", "attachments").await, (1, 0));
    attachments
        .delete_attachment(pb::DeleteAttachmentRequest { id: second.id })
        .await
        .unwrap_or_else(|e| panic!("detach: {e:?}\n{}", stack.logs()));
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_lowered_below_usage_holds_until_deletes_get_under_it() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let member = stack.as_member("p1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(available(&stack, "p1", sized(1)).await);
    }
    // Accepted, and shown as it is: the limit under the usage.
    let lowered = stack.set_quota("p1", &[("volumes", 2)]).await;
    let volumes = lowered
        .usages
        .iter()
        .find(|u| u.resource == "volumes")
        .unwrap_or_else(|| panic!("no volumes in {lowered:?}"));
    assert_eq!((volumes.limit, volumes.in_use), (2, 3), "{volumes:?}");
    let own = member
        .quotas()
        .get_quota(pb::GetQuotaRequest::default())
        .await
        .unwrap()
        .into_inner();
    let volumes = own.usages.iter().find(|u| u.resource == "volumes").unwrap();
    assert!(volumes.limit < volumes.in_use, "{volumes:?}");

    let err = try_create(&member, sized(1)).await.expect_err("over");
    let violation = assert_over_quota(&err, "p1", "volumes");
    assert_eq!(dimension(&violation, "in_use"), 3, "{violation:?}");
    delete_volume(&stack, "p1", &ids[0]).await;
    let err = try_create(&member, sized(1))
        .await
        .expect_err("at the limit");
    assert_over_quota(&err, "p1", "volumes");
    delete_volume(&stack, "p1", &ids[1]).await;
    available(&stack, "p1", sized(1)).await;
    assert_eq!(stack.quota_usage("p1", "volumes").await, (2, 0, 2));
    let err = try_create(&member, sized(1)).await.expect_err("full again");
    assert_over_quota(&err, "p1", "volumes");
    stack.assert_quota_exact().await;
}
