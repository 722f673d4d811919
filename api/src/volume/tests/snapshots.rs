//! SnapshotService and DeleteVolume of a volume with snapshots (CreateVolume
//! from a snapshot is in `from_snapshot.rs`).

use scoria_common::model::{Snapshot, SnapshotStatus};
use scoria_proto::v1::snapshot_service_server::SnapshotService;
use tonic_types::StatusExt;

use super::*;
use crate::snapshot::SnapshotApi;

pub(super) const HOST: &str = "node1@file";

/// The field a status's `BadRequest` details name.
pub(super) fn field(status: &Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

pub(super) fn snapshots(f: &Fixture) -> SnapshotApi {
    SnapshotApi::new(f.db.clone(), f.h.ports())
}

/// A volume of `size_gib` on [`HOST`] in `status`, as a backend would leave it.
pub(super) async fn volume_in(
    f: &Fixture,
    ctx: &RequestContext,
    size_gib: u64,
    status: VolumeStatus,
) -> pb::Volume {
    let req = pb::CreateVolumeRequest {
        size_gib,
        ..create_req("v")
    };
    let volume = f
        .api
        .create_volume(request(ctx, req))
        .await
        .expect("create")
        .into_inner();
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Creating],
            status,
            Some(HOST),
            None,
            None,
        )
        .await
        .expect("db")
    );
    volume
}

pub(super) fn snap_req(volume_id: &str) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        volume_id: volume_id.into(),
        name: "s".into(),
        description: "d".into(),
        force: false,
    }
}

pub(super) async fn snapshot(
    f: &Fixture,
    ctx: &RequestContext,
    volume_id: &str,
) -> Result<pb::Snapshot, Status> {
    snapshots(f)
        .create_snapshot(request(ctx, snap_req(volume_id)))
        .await
        .map(Response::into_inner)
}

/// A snapshot of `volume_id`, settled in `status` as the backend would.
pub(super) async fn snapshot_in(
    f: &Fixture,
    ctx: &RequestContext,
    volume_id: &str,
    status: SnapshotStatus,
) -> pb::Snapshot {
    let s = snapshot(f, ctx, volume_id).await.expect("snapshot");
    assert!(
        f.db.transition_snapshot(&s.id, &[SnapshotStatus::Creating], status, None, None)
            .await
            .expect("db")
    );
    s
}

pub(super) fn casts(f: &Fixture) -> Vec<(&'static str, String, String)> {
    f.snapshot_casts()
}

pub(super) async fn row(f: &Fixture, id: &str) -> Option<Snapshot> {
    f.db.get_snapshot(id).await.expect("db")
}

#[tokio::test]
async fn create_snapshot_checks_each_field() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 2, VolumeStatus::Available).await;
    let long = "x".repeat(256);
    type Set = fn(&mut pb::CreateSnapshotRequest, String);
    let cases: [(&str, Set); 3] = [
        ("volume_id", |r, _| r.volume_id = "not-a-uuid".into()),
        ("name", |r, long| r.name = long),
        ("description", |r, long| r.description = long),
    ];
    for (name, set) in cases {
        let mut req = snap_req(&v.id);
        set(&mut req, long.clone());
        let status = snapshots(&f)
            .create_snapshot(request(&p1, req))
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert_eq!(field(&status), name);
    }
    for missing in [uuid::Uuid::new_v4().to_string()] {
        let status = snapshot(&f, &p1, &missing).await.expect_err("missing");
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains(&missing), "{}", status.message());
    }
    let status = snapshot(&f, &member("p2"), &v.id)
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    assert!(casts(&f).is_empty());
}

#[tokio::test]
async fn create_snapshot_copies_the_volume_and_casts_to_its_host() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 3, VolumeStatus::Available).await;
    let s = snapshot(&f, &p1, &v.id).await.expect("snapshot");
    assert_eq!(s.status, pb::SnapshotStatus::Creating as i32);
    assert_eq!((s.size_gib, s.volume_id.as_str()), (3, v.id.as_str()));
    assert_eq!((s.name.as_str(), s.description.as_str()), ("s", "d"));
    assert_eq!(s.project_id, "p1");
    assert_eq!(
        casts(&f),
        vec![("create_snapshot", HOST.to_owned(), s.id.clone())]
    );
    let worker =
        f.db.get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("db")
            .expect("worker");
    assert_eq!(
        (worker.status.as_str(), worker.service.as_str()),
        ("creating", HOST)
    );
    assert_eq!(
        row(&f, &s.id).await.expect("row").host.as_deref(),
        Some(HOST)
    );
}

#[tokio::test]
async fn create_snapshot_status_rules_and_force() {
    let f = fixture().await;
    let p1 = member("p1");
    let creating = f
        .api
        .create_volume(request(&p1, create_req("c")))
        .await
        .expect("create")
        .into_inner();
    let status = snapshot(&f, &p1, &creating.id).await.expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("creating"),
        "{}",
        status.message()
    );

    let in_use = volume_in(&f, &p1, 1, VolumeStatus::InUse).await;
    let status = snapshot(&f, &p1, &in_use.id).await.expect_err("in-use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("in-use"), "{}", status.message());
    assert!(status.message().contains("force"), "{}", status.message());
    let forced = snapshots(&f)
        .create_snapshot(request(
            &p1,
            pb::CreateSnapshotRequest {
                force: true,
                ..snap_req(&in_use.id)
            },
        ))
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(forced.volume_id, in_use.id);

    // Force does not open other statuses.
    let error = volume_in(&f, &p1, 1, VolumeStatus::Error).await;
    let status = snapshots(&f)
        .create_snapshot(request(
            &p1,
            pb::CreateSnapshotRequest {
                force: true,
                ..snap_req(&error.id)
            },
        ))
        .await
        .expect_err("error volume");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("error"), "{}", status.message());
}

#[tokio::test]
async fn create_snapshot_leaves_nothing_when_the_bus_fails() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    f.fail_casts(true);
    let status = snapshot(&f, &p1, &v.id).await.expect_err("cast fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(f.h.notifier.events(), [Event::SnapshotCreateError]);
    f.fail_casts(false);
    f.h.link.set_down(true);
    let status = snapshot(&f, &p1, &v.id).await.expect_err("broker down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        f.db.volume_snapshot_ids(&v.id).await.expect("db"),
        Vec::<String>::new()
    );
    // And the volume can be deleted: no snapshot row blocks it.
    f.h.link.set_down(false);
    f.api
        .delete_volume(request(&p1, pb::DeleteVolumeRequest { id: v.id.clone() }))
        .await
        .expect("delete");
}

#[tokio::test]
async fn get_and_list_snapshots_of_own_project() {
    let f = fixture().await;
    let p1 = member("p1");
    let v1 = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let v2 = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    // Lists are ordered by (created_at in ms, id): keep the three in distinct
    // milliseconds so creation order is the expected order.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
    let a = snapshot_in(&f, &p1, &v1.id, SnapshotStatus::Available).await;
    tick().await;
    let b = snapshot(&f, &p1, &v2.id).await.expect("b");
    tick().await;
    let c = snapshot_in(&f, &p1, &v1.id, SnapshotStatus::Error).await;
    let other = volume_in(&f, &member("p2"), 1, VolumeStatus::Available).await;
    let foreign = snapshot(&f, &member("p2"), &other.id).await.expect("p2");
    let api = snapshots(&f);

    let get = |ctx: RequestContext, id: String| {
        let api = api.clone();
        async move {
            api.get_snapshot(request(&ctx, pb::GetSnapshotRequest { id }))
                .await
        }
    };
    let got = get(p1.clone(), a.id.clone())
        .await
        .expect("own")
        .into_inner();
    assert_eq!(
        (got.id, got.status),
        (a.id.clone(), pb::SnapshotStatus::Available as i32)
    );
    let status = get(p1.clone(), foreign.id.clone())
        .await
        .expect_err("foreign");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains(&foreign.id),
        "{}",
        status.message()
    );
    get(ctx("p1", &["admin"]), foreign.id.clone())
        .await
        .expect("admin");
    let status = get(p1.clone(), "x".into()).await.expect_err("bad id");
    assert_eq!(field(&status), "id");

    let list = |req: pb::ListSnapshotsRequest| {
        let api = api.clone();
        let p1 = p1.clone();
        async move {
            api.list_snapshots(request(&p1, req))
                .await
                .map(Response::into_inner)
        }
    };
    let ids = |r: &pb::ListSnapshotsResponse| {
        r.snapshots.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListSnapshotsRequest {
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .expect("page");
        assert!(page.snapshots.len() <= 2);
        seen.extend(ids(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec![a.id.clone(), b.id.clone(), c.id.clone()]);

    let of_v1 = list(pb::ListSnapshotsRequest {
        volume_id: v1.id.clone(),
        ..Default::default()
    })
    .await
    .expect("of v1");
    assert_eq!(ids(&of_v1), vec![a.id.clone(), c.id.clone()]);
    let errors = list(pb::ListSnapshotsRequest {
        status: pb::SnapshotStatus::Error as i32,
        ..Default::default()
    })
    .await
    .expect("errors");
    assert_eq!(ids(&errors), vec![c.id.clone()]);

    let bad = [
        (
            pb::ListSnapshotsRequest {
                volume_id: "x".into(),
                ..Default::default()
            },
            "volume_id",
        ),
        (
            pb::ListSnapshotsRequest {
                status: 42,
                ..Default::default()
            },
            "status",
        ),
        (
            pb::ListSnapshotsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
    ];
    for (req, name) in bad {
        let status = list(req).await.expect_err(name);
        assert_eq!(field(&status), name);
    }
    // A token continues only the list it came from.
    let first = list(pb::ListSnapshotsRequest {
        page_size: 1,
        ..Default::default()
    })
    .await
    .expect("first");
    let status = list(pb::ListSnapshotsRequest {
        page_token: first.next_page_token,
        volume_id: v1.id.clone(),
        ..Default::default()
    })
    .await
    .expect_err("other filters");
    assert_eq!(field(&status), "page_token");
}

#[tokio::test]
async fn delete_snapshot_status_rules_and_cast() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let api = snapshots(&f);
    let delete = |id: &str| {
        let api = api.clone();
        let req = request(&p1, pb::DeleteSnapshotRequest { id: id.to_owned() });
        async move { api.delete_snapshot(req).await.map(Response::into_inner) }
    };
    let creating = snapshot(&f, &p1, &v.id).await.expect("creating");
    let status = delete(&creating.id).await.expect_err("creating");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("creating"),
        "{}",
        status.message()
    );
    assert_eq!(field(&delete("x").await.expect_err("bad id")), "id");
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        delete(&missing).await.expect_err("missing").code(),
        Code::NotFound
    );

    for settled in [
        SnapshotStatus::Available,
        SnapshotStatus::Error,
        SnapshotStatus::ErrorDeleting,
    ] {
        let s = snapshot_in(&f, &p1, &v.id, settled).await;
        let deleted = delete(&s.id).await.expect("delete");
        assert_eq!(deleted.status, pb::SnapshotStatus::Deleting as i32);
        assert_eq!(
            row(&f, &s.id).await.expect("row").status,
            SnapshotStatus::Deleting
        );
        assert_eq!(
            casts(&f).last().cloned(),
            Some(("delete_snapshot", HOST.to_owned(), s.id.clone()))
        );
        let worker =
            f.db.get_worker(WorkerKind::Snapshot, &s.id)
                .await
                .expect("db")
                .expect("worker");
        assert_eq!(worker.status, "deleting");
        // Deleting again is refused.
        assert_eq!(
            delete(&s.id).await.expect_err("twice").code(),
            Code::FailedPrecondition
        );
    }

    let s = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    f.fail_casts(true);
    assert_eq!(
        delete(&s.id).await.expect_err("cast fails").code(),
        Code::Unavailable
    );
    let now = row(&f, &s.id).await.expect("row");
    assert_eq!(now.status, SnapshotStatus::ErrorDeleting);
    assert_eq!(f.h.notifier.events_of(&s.id), [Event::SnapshotDeleteError]);
    assert!(now.error_message.contains(HOST), "{}", now.error_message);
}

#[tokio::test]
async fn delete_snapshot_without_backend_removes_the_row() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let now = now_ms();
    let s = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: v.id.clone(),
        name: String::new(),
        description: String::new(),
        size_gib: 1,
        status: SnapshotStatus::Error,
        host: None,
        error_message: "never sent".into(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: s.id.clone(),
        status: "creating".into(),
        service: HOST.into(),
        deadline_ms: now,
    };
    assert!(
        f.db.create_snapshot(&s, &[VolumeStatus::Available], &worker)
            .await
            .expect("db")
    );
    f.h.link.set_down(true);
    snapshots(&f)
        .delete_snapshot(request(&p1, pb::DeleteSnapshotRequest { id: s.id.clone() }))
        .await
        .expect("delete");
    assert_eq!(row(&f, &s.id).await, None);
    assert!(casts(&f).is_empty());
}

#[tokio::test]
async fn delete_volume_with_snapshots_is_refused_naming_them() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let s1 = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Available).await;
    let s2 = snapshot_in(&f, &p1, &v.id, SnapshotStatus::Error).await;
    let delete = || {
        f.api
            .delete_volume(request(&p1, pb::DeleteVolumeRequest { id: v.id.clone() }))
    };
    let status = delete().await.expect_err("has snapshots");
    assert_eq!(status.code(), Code::FailedPrecondition);
    for s in [&s1, &s2] {
        assert!(status.message().contains(&s.id), "{}", status.message());
    }
    let volume = f.db.get_volume(&v.id).await.expect("db").expect("row");
    assert_eq!(volume.status, VolumeStatus::Available);
    assert!(f.deleted().is_empty());
    for s in [&s1, &s2] {
        f.db.delete_snapshot_row(&s.id).await.expect("db");
    }
    let deleted = delete().await.expect("no snapshots left").into_inner();
    assert_eq!(deleted.status, pb::VolumeStatus::Deleting as i32);
}
