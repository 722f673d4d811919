//! CreateVolume from a snapshot (`snapshot_id`): sizes, placement, the one
//! visibility rule, and the guards between the snapshot and the new volume.

use scoria_common::model::SnapshotStatus;
use scoria_proto::v1::snapshot_service_server::SnapshotService;

use super::{
    snapshots::{HOST, field, snapshot, snapshot_in, snapshots, volume_in},
    *,
};

fn from_snapshot(snapshot_id: &str, size_gib: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        size_gib,
        source: Some(pb::create_volume_request::Source::SnapshotId(
            snapshot_id.into(),
        )),
        ..create_req("from-snap")
    }
}

#[tokio::test]
async fn create_volume_from_snapshot_sizes_and_placement() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 4, VolumeStatus::Available).await;
    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    let create = |req: pb::CreateVolumeRequest| {
        let api = f.api.clone();
        let p1 = p1.clone();
        async move {
            api.create_volume(request(&p1, req))
                .await
                .map(Response::into_inner)
        }
    };

    let status = create(from_snapshot(&s.id, 3)).await.expect_err("smaller");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field(&status), "size_gib");

    let same = create(from_snapshot(&s.id, 0)).await.expect("size 0");
    assert_eq!(same.size_gib, 4);
    assert_eq!(same.snapshot_id, s.id);
    let scheduled =
        f.h.scheduler
            .scheduled()
            .last()
            .cloned()
            .expect("scheduled");
    assert_eq!(scheduled.volume_id, same.id);
    assert_eq!(scheduled.snapshot_id, s.id);
    assert_eq!(scheduled.required_host, HOST);
    assert_eq!(scheduled.size_gib, 4);
    let row = f.db.get_volume(&same.id).await.expect("db").expect("row");
    assert_eq!(row.snapshot_id.as_deref(), Some(s.id.as_str()));

    let larger = create(from_snapshot(&s.id, 6)).await.expect("larger");
    assert_eq!(larger.size_gib, 6);
}

#[tokio::test]
async fn create_volume_from_snapshot_must_find_an_available_one() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let create = |ctx: RequestContext, req: pb::CreateVolumeRequest| {
        let api = f.api.clone();
        async move {
            api.create_volume(request(&ctx, req))
                .await
                .map(Response::into_inner)
        }
    };
    let missing = uuid::Uuid::new_v4().to_string();
    let status = create(p1.clone(), from_snapshot(&missing, 0))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("snapshot_id"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(&missing), "{}", status.message());

    let creating = snapshot(&f, &p1, &v.id).await.expect("creating");
    let status = create(p1.clone(), from_snapshot(&creating.id, 0))
        .await
        .expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("creating"),
        "{}",
        status.message()
    );

    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    let status = create(member("p2"), from_snapshot(&s.id, 0))
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    let status = create(p1.clone(), from_snapshot("nope", 0))
        .await
        .expect_err("bad id");
    assert_eq!(field(&status), "snapshot_id");
    assert_eq!(f.h.scheduler.scheduled().len(), 1, "only the source volume");
}

/// Defect 10: one visibility rule everywhere. An admin who can read another
/// project's snapshot (and volume) can also make a volume from it; a member of
/// a third project still cannot, and reads NOT_FOUND both ways.
#[tokio::test]
async fn an_admin_makes_volumes_from_what_it_can_read() {
    let f = fixture().await;
    let p1 = member("p1");
    let admin = ctx("ops", &["admin"]);
    let v = volume_in(&f, &p1, 2, VolumeStatus::Available).await;
    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    let get = pb::GetSnapshotRequest { id: s.id.clone() };
    snapshots(&f)
        .get_snapshot(request(&admin, get.clone()))
        .await
        .expect("the admin reads it");
    let made = f
        .api
        .create_volume(request(&admin, from_snapshot(&s.id, 0)))
        .await
        .expect("the admin makes a volume from it")
        .into_inner();
    assert_eq!(
        (made.snapshot_id.as_str(), made.size_gib),
        (s.id.as_str(), 2)
    );
    let clone = pb::CreateVolumeRequest {
        source: Some(pb::create_volume_request::Source::SourceVolumeId(
            v.id.clone(),
        )),
        size_gib: 0,
        ..create_req("clone")
    };
    f.api
        .create_volume(request(&admin, clone.clone()))
        .await
        .expect("the admin clones it");

    let p2 = member("p2");
    let status = snapshots(&f)
        .get_snapshot(request(&p2, get))
        .await
        .expect_err("foreign read");
    assert_eq!(status.code(), Code::NotFound);
    for req in [from_snapshot(&s.id, 0), clone] {
        let status = f
            .api
            .create_volume(request(&p2, req))
            .await
            .expect_err("foreign source");
        assert_eq!(status.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn snapshot_and_volume_made_from_it_guard_each_other() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    let child = f
        .api
        .create_volume(request(&p1, from_snapshot(&s.id, 0)))
        .await
        .expect("child")
        .into_inner();
    // While the volume is being made from it, the snapshot stays.
    let status = snapshots(&f)
        .delete_snapshot(request(&p1, pb::DeleteSnapshotRequest { id: s.id.clone() }))
        .await
        .expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&child.id), "{}", status.message());
    // A snapshot being deleted cannot be the source of a new volume, and no row is left.
    assert!(
        f.db.transition_volume(
            &child.id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            None,
            None
        )
        .await
        .expect("db")
    );
    snapshots(&f)
        .delete_snapshot(request(&p1, pb::DeleteSnapshotRequest { id: s.id.clone() }))
        .await
        .expect("delete");
    let status = f
        .api
        .create_volume(request(&p1, from_snapshot(&s.id, 0)))
        .await
        .expect_err("deleting");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("deleting"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn confirm_snapshot_undoes_a_volume_whose_snapshot_vanished() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
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
        status: VolumeStatus::Creating,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: None,
        metadata: BTreeMap::new(),
        error_message: String::new(),
        snapshot_id: Some(s.id.clone()),
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: "creating".into(),
        service: "scoria-scheduler".into(),
        deadline_ms: now,
    };
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("db");
    f.api
        .confirm_snapshot(&volume, None)
        .await
        .expect("available");
    // The racing delete got in first (as if between the read and the insert).
    assert!(
        f.db.transition_snapshot(
            &s.id,
            &[SnapshotStatus::Available],
            SnapshotStatus::Deleting,
            None,
            None
        )
        .await
        .expect("db")
    );
    let err = f
        .api
        .confirm_snapshot(&volume, None)
        .await
        .expect_err("gone");
    assert!(matches!(err, ApiError::SourceUnusable { .. }), "{err}");
    assert_eq!(f.db.get_volume(&volume.id).await.expect("db"), None);
}
