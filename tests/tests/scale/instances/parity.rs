//! The same answers through either API instance, one winner for requests racing
//! through both, both schedulers placing work, and two reapers settling each
//! overdue entry exactly once.

use std::{collections::BTreeSet, time::Duration};

use scoria_common::{
    db::{DEFAULT_VOLUME_TYPE_ID, Owner, WorkerEntry},
    model::{Volume, VolumeStatus, now_ms},
};
use scoria_proto::v1 as pb;
use scoria_tests::stack::{Clients, Fleet, FleetOptions, SCHEDULERS};
use tonic::Code;

use super::{assert_settled, create, request_id, rows, wait_status};

const PROJECT: &str = "parity";

#[tokio::test(flavor = "multi_thread")]
async fn either_api_gives_the_same_answers_and_races_through_both_have_one_winner() {
    let fleet = Fleet::start(FleetOptions {
        // Two reapers that run every second (the overdue phase at the end).
        env: vec![("SCORIA_REAPER_INTERVAL_SECS".into(), "1".into())],
        ..FleetOptions::default()
    })
    .await;
    let apis = [fleet.member(0, PROJECT), fleet.member(1, PROJECT)];

    // Lifecycle: each volume made through one API, seen the same through both.
    let mut ids = Vec::new();
    for n in 0..8 {
        let made = create(&apis[n % 2], 1, &request_id("life", n))
            .await
            .unwrap_or_else(|s| panic!("create: {s:?}\n{}", fleet.stack.logs()));
        ids.push(made.id);
    }
    for (n, id) in ids.iter().enumerate() {
        let seen = wait_status(&fleet, &apis[(n + 1) % 2], id, pb::VolumeStatus::Available).await;
        let other = apis[n % 2].get_volume(id).await.expect("get");
        assert_eq!(seen, other, "the two APIs disagree on volume {id}");
    }
    let listed = |api: &Clients| {
        let mut client = api.volumes();
        async move {
            let response = client
                .list_volumes(pb::ListVolumesRequest::default())
                .await
                .expect("list")
                .into_inner();
            response
                .volumes
                .into_iter()
                .map(|v| v.id)
                .collect::<BTreeSet<_>>()
        }
    };
    let (first, second) = (listed(&apis[0]).await, listed(&apis[1]).await);
    assert_eq!(first, second, "ListVolumes differs between the APIs");
    assert_eq!(first, ids.iter().cloned().collect::<BTreeSet<_>>());

    // Extend through B, seen through A.
    let body = pb::ExtendVolumeRequest {
        id: ids[0].clone(),
        new_size_gib: 2,
    };
    apis[1].volumes().extend_volume(body).await.expect("extend");
    let mut extended = wait_status(&fleet, &apis[0], &ids[0], pb::VolumeStatus::Available).await;
    while extended.size_gib != 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        extended = wait_status(&fleet, &apis[0], &ids[0], pb::VolumeStatus::Available).await;
    }

    // A snapshot made through A, seen and deleted through B, gone through A.
    let snapshot = apis[0]
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: ids[1].clone(),
            name: "snap".into(),
            ..Default::default()
        })
        .await
        .expect("create snapshot")
        .into_inner();
    fleet
        .stack
        .wait_snapshot_status(PROJECT, &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    let (sa, sb) = (
        apis[0].get_snapshot(&snapshot.id).await.expect("get"),
        apis[1].get_snapshot(&snapshot.id).await.expect("get"),
    );
    assert_eq!(sa, sb, "the two APIs disagree on snapshot {}", snapshot.id);
    apis[1]
        .snapshots()
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .expect("delete snapshot");
    fleet.stack.wait_snapshot_gone(PROJECT, &snapshot.id).await;
    assert_eq!(
        apis[1]
            .get_snapshot(&snapshot.id)
            .await
            .map_err(|s| s.code()),
        Err(Code::NotFound)
    );

    // Attached through B, seen through A, detached through A.
    let attachment = attach(&apis[1], &ids[2]).await.expect("attach");
    let through_a = apis[0]
        .attachments()
        .get_attachment(pb::GetAttachmentRequest {
            id: attachment.id.clone(),
        })
        .await
        .expect("get attachment")
        .into_inner();
    assert_eq!(through_a.status(), attachment.status());
    assert_eq!(through_a.volume_id, ids[2]);
    wait_status(&fleet, &apis[0], &ids[2], pb::VolumeStatus::InUse).await;
    apis[0]
        .attachments()
        .delete_attachment(pb::DeleteAttachmentRequest {
            id: attachment.id.clone(),
        })
        .await
        .expect("detach");
    wait_status(&fleet, &apis[1], &ids[2], pb::VolumeStatus::Available).await;

    // Deleted through A, gone through B.
    delete(&apis[0], &ids[3]).await.expect("delete");
    fleet.stack.wait_volume_gone(PROJECT, &ids[3]).await;

    // Races through the two APIs: one winner each.
    let (d0, d1) = tokio::join!(delete(&apis[0], &ids[4]), delete(&apis[1], &ids[4]));
    // The loser finds the volume deleting, or already gone.
    let late = [Code::FailedPrecondition, Code::NotFound];
    assert_one_winner("two deletes", &[d0.map(drop), d1.map(drop)], &late);
    let (d, a) = tokio::join!(delete(&apis[0], &ids[5]), attach(&apis[1], &ids[5]));
    if let Ok(attachment) = &a {
        // The attach won: the volume is in use; detached, it settles.
        apis[0]
            .attachments()
            .delete_attachment(pb::DeleteAttachmentRequest {
                id: attachment.id.clone(),
            })
            .await
            .expect("detach the winner");
    }
    assert_one_winner("delete against attach", &[d.map(drop), a.map(drop)], &late);

    // Two creates against a quota of one volume, one through each API.
    let single = "parity-one";
    fleet.stack.set_quota(single, &[("volumes", 1)]).await;
    let tight = [fleet.member(0, single), fleet.member(1, single)];
    let keys = [request_id("quota", 0), request_id("quota", 1)];
    let (c0, c1) = tokio::join!(
        create(&tight[0], 1, &keys[0]),
        create(&tight[1], 1, &keys[1])
    );
    let winner = c0.as_ref().or(c1.as_ref()).ok().map(|v| v.id.clone());
    assert_one_winner(
        "two creates, quota of one",
        &[c0.map(drop), c1.map(drop)],
        &[Code::ResourceExhausted],
    );
    if let Some(id) = winner {
        ids.push(id);
    }
    // One request id through both APIs at once: one volume.
    let key = request_id("same-key", 0);
    let (k0, k1) = tokio::join!(create(&apis[0], 1, &key), create(&apis[1], 1, &key));
    let (k0, k1) = (k0.expect("first"), k1.expect("second"));
    assert_eq!(k0.id, k1.id, "one request id made two volumes");
    ids.push(k0.id);

    // Both schedulers placed some of these volumes.
    let placed: Vec<Vec<&String>> = SCHEDULERS
        .iter()
        .map(|s| fleet.placed_by(s, &ids))
        .collect();
    assert!(
        placed.iter().all(|p| !p.is_empty()),
        "each scheduler should place some volumes: {:?} of {ids:?}\n{}",
        placed.iter().map(Vec::len).collect::<Vec<_>>(),
        fleet.stack.logs()
    );
    assert_settled(&fleet).await;

    reapers_settle_each_overdue_entry_once(&fleet).await;
}

/// Overdue work with both schedulers' reapers running every second: volumes the
/// scheduler owns past their deadline (a lost cast) are scheduled once more,
/// each by exactly one reaper, and end available; work of a volume service that
/// no longer exists is failed, each entry by exactly one reaper, naming it.
async fn reapers_settle_each_overdue_entry_once(fleet: &Fleet) {
    let past = now_ms() - 60_000;
    let mut lost = Vec::new();
    let mut orphaned = Vec::new();
    for n in 0..16 {
        let (owner, host) = if n % 2 == 0 {
            (Owner::Scheduler, None)
        } else {
            (
                Owner::Service("ghost@nowhere".into()),
                Some("ghost@nowhere"),
            )
        };
        let volume = overdue_volume(host);
        let entry = WorkerEntry::volume(&volume.id, VolumeStatus::Creating, owner, past);
        fleet
            .stack
            .db
            .create_volume(&volume, None, &entry)
            .await
            .expect("insert overdue volume");
        if host.is_none() {
            lost.push(volume.id)
        } else {
            orphaned.push(volume.id)
        }
    }
    let volumes = assert_settled(fleet).await;
    let logs: Vec<String> = SCHEDULERS.iter().map(|s| fleet.log(s)).collect();
    let count = |id: &str, what: &str| {
        logs.iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains(id) && l.contains(what))
            .count()
    };
    for id in &lost {
        let v = volumes.iter().find(|v| &v.id == id).expect("row");
        assert_eq!(
            v.status,
            VolumeStatus::Available,
            "{v:?}\n{}",
            fleet.stack.logs()
        );
        assert_eq!(
            count(id, "scheduling the volume once more"),
            1,
            "volume {id} was not scheduled once more exactly once"
        );
    }
    for id in &orphaned {
        let v = volumes.iter().find(|v| &v.id == id).expect("row");
        assert_eq!(v.status, VolumeStatus::Error, "{v:?}");
        assert!(v.error_message.contains("ghost@nowhere"), "{v:?}");
        assert_eq!(
            count(id, "owner down: work failed"),
            1,
            "volume {id} was not failed exactly once"
        );
    }
    let reaped: Vec<usize> = logs
        .iter()
        .map(|l| {
            l.lines()
                .filter(|l| l.contains("reaped overdue work"))
                .count()
        })
        .collect();
    eprintln!("passes that reaped something, per scheduler: {reaped:?}");
    assert!(rows(fleet).await.len() >= lost.len() + orphaned.len());
}

/// A `creating` volume row of [`PROJECT`] on `host`.
fn overdue_volume(host: Option<&str>) -> Volume {
    let now = now_ms();
    Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: PROJECT.into(),
        user_id: "u1".into(),
        name: "overdue".into(),
        description: String::new(),
        size_gib: 1,
        status: VolumeStatus::Creating,
        volume_type: DEFAULT_VOLUME_TYPE_ID.into(),
        availability_zone: "default".into(),
        host: host.map(str::to_owned),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

async fn delete(api: &Clients, id: &str) -> Result<pb::Volume, tonic::Status> {
    let body = pb::DeleteVolumeRequest { id: id.to_owned() };
    Ok(api.volumes().delete_volume(body).await?.into_inner())
}

async fn attach(api: &Clients, id: &str) -> Result<pb::Attachment, tonic::Status> {
    let body = pb::CreateAttachmentRequest {
        volume_id: id.to_owned(),
        connector: Some(pb::Connector {
            host: "client-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(api
        .attachments()
        .create_attachment(body)
        .await?
        .into_inner())
}

/// Exactly one of `results` succeeded and the others failed with one of `losers`.
fn assert_one_winner(what: &str, results: &[Result<(), tonic::Status>], losers: &[Code]) {
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{what}: {results:?}");
    let lost_well = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|s| losers.contains(&s.code()));
    assert!(
        lost_well,
        "{what}: the loser's code is not one of {losers:?}: {results:?}"
    );
}
