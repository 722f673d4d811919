//! Gigabytes: creates, extends and snapshots racing for one limit never pass
//! it; a create, extend or snapshot that fails (no backend fits, the backend
//! errs) gives its usage back; deletes free it.

use scoria_tests::stack::{Caller, Clients, DbKind, Stack, channel};
use tonic::{Code, Response, Status};

use super::{
    assert_over_quota, available, create_type, delete_volume, dimension, held, try_create, typed,
};
use crate::support::{from_volume, pb, sized};

/// The gigabytes limit of the race.
const LIMIT: i64 = 40;

/// What one racing request asks for.
enum Op {
    /// A volume of 5 GiB.
    Create,
    /// Volume `.0` from 2 to 8 GiB.
    Extend(String),
    /// A snapshot (2 GiB) of volume `.0`.
    Snapshot(String),
}

/// What a racing request that got through made: a volume, an extended volume,
/// a snapshot.
enum Made {
    Volume(String),
    Extended(String),
    Snapshot(String),
}

async fn run(clients: &Clients, op: Op) -> Result<(Made, i64), Status> {
    match op {
        Op::Create => try_create(clients, sized(5))
            .await
            .map(|v| (Made::Volume(v.id), 5)),
        Op::Extend(id) => clients
            .volumes()
            .extend_volume(pb::ExtendVolumeRequest {
                id: id.clone(),
                new_size_gib: 8,
            })
            .await
            .map(|_| (Made::Extended(id), 6)),
        Op::Snapshot(volume_id) => clients
            .snapshots()
            .create_snapshot(pb::CreateSnapshotRequest {
                volume_id,
                ..Default::default()
            })
            .await
            .map(|s| (Made::Snapshot(s.into_inner().id), 2)),
    }
}

/// The GiB the project's volumes and snapshots hold as the user sees them:
/// every volume but failed creates, every snapshot but failed ones.
async fn listed_gib(clients: &Clients) -> (i64, Vec<String>, Vec<String>) {
    let volumes = clients
        .volumes()
        .list_volumes(pb::ListVolumesRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("list volumes")
        .volumes;
    let snapshots = clients
        .snapshots()
        .list_snapshots(pb::ListSnapshotsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
        .expect("list snapshots")
        .snapshots;
    let gib = |size: u64| i64::try_from(size).unwrap();
    let total = volumes
        .iter()
        .filter(|v| v.status() != pb::VolumeStatus::Error)
        .map(|v| gib(v.size_gib))
        .sum::<i64>()
        + snapshots
            .iter()
            .filter(|s| s.status() != pb::SnapshotStatus::Error)
            .map(|s| gib(s.size_gib))
            .sum::<i64>();
    (
        total,
        volumes.into_iter().map(|v| v.id).collect(),
        snapshots.into_iter().map(|s| s.id).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_extends_and_snapshots_racing_stay_within_the_gigabytes_limit() {
    let mut stack = Stack::start(DbKind::Postgres).await;
    stack.set_quota("p1", &[("gigabytes", LIMIT)]).await;
    let second = stack.start_api_instance("2").await;
    let apis = [
        stack.as_member("p1"),
        Clients::new(channel(&second), Caller::member("p1")),
    ];
    // 8 GiB in use: two volumes to extend, two to snapshot (twice each).
    let mut base = Vec::new();
    for _ in 0..4 {
        base.push(available(&stack, "p1", sized(2)).await);
    }
    assert_eq!(held(&stack, "p1", "gigabytes").await, (8, 0));

    // 8 + 6 × 5 (creates) + 2 × 6 (extends) + 4 × 2 (snapshots) = 58 GiB asked
    // for against 40.
    let mut ops: Vec<Op> = (0..6).map(|_| Op::Create).collect();
    ops.extend(base[..2].iter().map(|id| Op::Extend(id.clone())));
    for id in &base[2..] {
        ops.extend([Op::Snapshot(id.clone()), Op::Snapshot(id.clone())]);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, op) in ops.into_iter().enumerate() {
        let clients = apis[i % apis.len()].clone();
        tasks.spawn(async move { run(&clients, op).await });
    }
    let mut granted = 8;
    let mut made = Vec::new();
    let mut refused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task") {
            Ok((m, gib)) => {
                granted += gib;
                made.push(m);
            }
            Err(err) if err.code() == Code::ResourceExhausted => {
                let violation = assert_over_quota(&err, "p1", "gigabytes");
                assert_eq!(violation.quota_value, LIMIT);
                let asked = dimension(&violation, "in_use")
                    + dimension(&violation, "reserved")
                    + dimension(&violation, "requested");
                assert!(asked > LIMIT, "refused within the limit: {violation:?}");
                refused += 1;
            }
            Err(err) => panic!("request failed otherwise: {err:?}\n{}", stack.logs()),
        }
    }
    assert!(granted <= LIMIT, "{granted} GiB granted of {LIMIT}");
    assert!(refused > 0, "58 GiB asked for, none refused");
    // The requests that got through finish.
    for m in &made {
        match m {
            Made::Volume(id) => {
                stack
                    .wait_status("p1", id, pb::VolumeStatus::Available)
                    .await;
            }
            Made::Extended(id) => {
                let v = stack
                    .wait_status("p1", id, pb::VolumeStatus::Available)
                    .await;
                assert_eq!(v.size_gib, 8, "{v:?}");
            }
            Made::Snapshot(id) => {
                stack
                    .wait_snapshot_status("p1", id, pb::SnapshotStatus::Available)
                    .await;
            }
        }
    }
    let (total, volumes, snapshots) = listed_gib(&apis[1]).await;
    assert_eq!(total, granted, "what exists is what was granted");
    assert!(total <= LIMIT, "{total} GiB exist, limit {LIMIT}");
    assert_eq!(held(&stack, "p1", "gigabytes").await, (total, 0));
    stack.assert_quota_exact().await;

    // Deletes free everything: snapshots first, then their volumes.
    for id in &snapshots {
        apis[0]
            .snapshots()
            .delete_snapshot(pb::DeleteSnapshotRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("delete snapshot {id}: {e:?}"));
    }
    for id in &snapshots {
        stack.wait_snapshot_gone("p1", id).await;
    }
    assert_eq!(held(&stack, "p1", "snapshots").await, (0, 0));
    for id in &volumes {
        delete_volume(&stack, "p1", id).await;
    }
    for resource in ["gigabytes", "volumes", "snapshots"] {
        assert_eq!(held(&stack, "p1", resource).await, (0, 0), "{resource}");
    }
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creates_extends_and_snapshots_give_their_usage_back() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    stack
        .set_quota("p1", &[("gigabytes", 10), ("volumes", 3)])
        .await;
    let member = stack.as_member("p1");

    // No backend fits: the volume ends in error and holds nothing.
    create_type(&stack, "nowhere", &[("volume_backend_name", "nowhere")]).await;
    let lost = try_create(&member, typed("nowhere", 4)).await.unwrap();
    let lost = stack
        .wait_status("p1", &lost.id, pb::VolumeStatus::Error)
        .await;
    assert!(lost.error_message.contains("No valid backend"), "{lost:?}");
    for resource in [
        "volumes",
        "gigabytes",
        "volumes_nowhere",
        "gigabytes_nowhere",
    ] {
        assert_eq!(held(&stack, "p1", resource).await, (0, 0), "{resource}");
    }

    // The backend errs: a clone of a volume whose object is gone fails on
    // every attempt, and so does a snapshot of it and an extend of it.
    let source = available(&stack, "p1", sized(1)).await;
    std::fs::remove_file(stack.volume_file(&source)).expect("remove the source's object");
    let clone = pb::CreateVolumeRequest {
        source: from_volume(&source),
        ..sized(2)
    };
    let clone = try_create(&member, clone).await.unwrap();
    let clone = stack
        .wait_status("p1", &clone.id, pb::VolumeStatus::Error)
        .await;
    assert!(!clone.error_message.is_empty(), "{clone:?}");
    assert_eq!(held(&stack, "p1", "volumes").await, (1, 0));
    assert_eq!(held(&stack, "p1", "gigabytes").await, (1, 0));

    let snapshot = member
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: source.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = stack
        .wait_snapshot_status("p1", &snapshot.id, pb::SnapshotStatus::Error)
        .await;
    assert_eq!(
        held(&stack, "p1", "snapshots").await,
        (0, 0),
        "{snapshot:?}"
    );
    assert_eq!(held(&stack, "p1", "gigabytes").await, (1, 0));

    member
        .volumes()
        .extend_volume(pb::ExtendVolumeRequest {
            id: source.clone(),
            new_size_gib: 3,
        })
        .await
        .unwrap();
    let extended = stack
        .wait_status("p1", &source, pb::VolumeStatus::ErrorExtending)
        .await;
    assert_eq!(extended.size_gib, 1, "{extended:?}");
    assert_eq!(held(&stack, "p1", "gigabytes").await, (1, 0));

    // What the failures held is really free: 9 more GiB fit the 10.
    let big = available(&stack, "p1", sized(9)).await;
    assert_eq!(held(&stack, "p1", "gigabytes").await, (10, 0));
    assert_eq!(held(&stack, "p1", "volumes").await, (2, 0));
    let err = try_create(&member, sized(1)).await.expect_err("full");
    assert_over_quota(&err, "p1", "gigabytes");
    stack.assert_quota_exact().await;

    // Deleting the failed snapshot takes nothing either, however long its
    // delete waits for the volume service: a snapshot still fits a limit of one.
    stack
        .set_quota("p1", &[("snapshots", 1), ("gigabytes", 20)])
        .await;
    stack.stop_service("scoria-volume").await;
    let deleting = member
        .snapshots()
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleting.status(), pb::SnapshotStatus::Deleting);
    assert_eq!(held(&stack, "p1", "snapshots").await, (0, 0));
    assert_eq!(held(&stack, "p1", "gigabytes").await, (10, 0));
    let kept = member
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: big.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("a snapshot within the limit: {e:?}"))
        .into_inner();
    assert_eq!(held(&stack, "p1", "snapshots").await, (0, 1));
    stack.start_service("scoria-volume").await;
    stack.wait_snapshot_gone("p1", &snapshot.id).await;
    stack
        .wait_snapshot_status("p1", &kept.id, pb::SnapshotStatus::Available)
        .await;
    assert_eq!(held(&stack, "p1", "snapshots").await, (1, 0));
    assert_eq!(held(&stack, "p1", "gigabytes").await, (19, 0));
    stack.assert_quota_exact().await;

    // Deletes free the rest.
    member
        .snapshots()
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: kept.id.clone(),
        })
        .await
        .unwrap();
    stack.wait_snapshot_gone("p1", &kept.id).await;
    for id in [&lost.id, &clone.id, &source, &big] {
        delete_volume(&stack, "p1", id).await;
    }
    for resource in ["volumes", "gigabytes", "snapshots"] {
        assert_eq!(held(&stack, "p1", resource).await, (0, 0), "{resource}");
    }
    stack.assert_quota_exact().await;
}
