//! CreateVolume: intent first, validation, idempotency.

use super::*;

#[tokio::test]
async fn create_writes_intent_then_casts() {
    let f = fixture().await;
    let volume = create(&f, &member("p1"), "db").await;
    assert_eq!(volume.status, pb::VolumeStatus::Creating as i32);
    assert_eq!(
        (volume.project_id.as_str(), volume.user_id.as_str()),
        ("p1", "u1")
    );
    assert!(volume.host.is_empty());
    let row = f.db.get_volume(&volume.id).await.expect("db").expect("row");
    assert_eq!(row.status, VolumeStatus::Creating);
    let worker =
        f.db.get_worker(WorkerKind::Volume, &volume.id)
            .await
            .expect("db")
            .expect("worker");
    assert_eq!(worker.service, scoria_common::db::SCHEDULER_OWNER);
    let scheduled = f.h.scheduler.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(
        (scheduled[0].volume_id.as_str(), scheduled[0].attempt),
        (volume.id.as_str(), 1)
    );
}

#[tokio::test]
async fn rejected_creates_write_nothing() {
    let f = fixture().await;
    let ctx = member("p1");
    let bad = pb::CreateVolumeRequest {
        size_gib: 101,
        ..create_req("big")
    };
    let status = f
        .api
        .create_volume(request(&ctx, bad))
        .await
        .expect_err("too big");
    assert_eq!(status.code(), Code::InvalidArgument);

    use pb::create_volume_request::Source;
    let from_snapshot = pb::CreateVolumeRequest {
        source: Some(Source::SnapshotId(uuid::Uuid::new_v4().to_string())),
        ..create_req("clone")
    };
    let status = f
        .api
        .create_volume(request(&ctx, from_snapshot))
        .await
        .expect_err("no such snapshot");
    assert_eq!(status.code(), Code::NotFound);

    f.h.link.set_down(true);
    let status = f
        .api
        .create_volume(request(&ctx, create_req("x")))
        .await
        .expect_err("broker down");
    assert_eq!(status.code(), Code::Unavailable);
    f.h.link.set_down(false);

    f.fail_casts(true);
    let keyed = pb::CreateVolumeRequest {
        request_id: "r1".into(),
        ..create_req("x")
    };
    let status = f
        .api
        .create_volume(request(&ctx, keyed.clone()))
        .await
        .expect_err("cast fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(f.db.count_volumes("p1").await.expect("count"), 0);
    // The compensation announces the failed create.
    assert_eq!(f.h.notifier.events(), [Event::VolumeCreateError]);

    // The key was taken back with the row: a retry succeeds.
    f.fail_casts(false);
    f.api
        .create_volume(request(&ctx, keyed))
        .await
        .expect("retry");
    assert_eq!(f.db.count_volumes("p1").await.expect("count"), 1);
}

#[tokio::test]
async fn request_id_makes_create_idempotent() {
    let f = fixture().await;
    let ctx = member("p1");
    let req = pb::CreateVolumeRequest {
        request_id: "r1".into(),
        metadata: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
        ..create_req("db")
    };
    let first = f
        .api
        .create_volume(request(&ctx, req.clone()))
        .await
        .expect("first")
        .into_inner();
    let again = f
        .api
        .create_volume(request(&ctx, req.clone()))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first.id, again.id);
    assert_eq!(f.h.scheduler.scheduled().len(), 1, "a retry casts nothing");

    let different = pb::CreateVolumeRequest {
        size_gib: 2,
        ..req.clone()
    };
    let status = f
        .api
        .create_volume(request(&ctx, different))
        .await
        .expect_err("reused key");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("request_id"),
        "{}",
        status.message()
    );

    // Keys are per project.
    let other = f
        .api
        .create_volume(request(&member("p2"), req))
        .await
        .expect("other project")
        .into_inner();
    assert_ne!(other.id, first.id);
}

#[test]
fn request_hash_ignores_only_the_request_id() {
    let req = pb::CreateVolumeRequest {
        request_id: "a".into(),
        ..create_req("x")
    };
    let same = pb::CreateVolumeRequest {
        request_id: "b".into(),
        ..create_req("x")
    };
    let other = pb::CreateVolumeRequest {
        request_id: "a".into(),
        ..create_req("y")
    };
    assert_eq!(request_hash(&req), request_hash(&same));
    assert_ne!(request_hash(&req), request_hash(&other));
    assert_eq!(request_hash(&req).len(), 64);
}
