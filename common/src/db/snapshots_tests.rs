//! Tests of the snapshot queries and their race guards, on a SQLite file.

use super::*;
use crate::{
    db::{Created, WorkerKind},
    model::Volume,
};

use crate::testing::TempDb;

async fn temp_db() -> TempDb {
    TempDb::new().await
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn volume(db: &Db, status: VolumeStatus, snapshot_id: Option<&str>) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: new_id(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: String::new(),
        description: String::new(),
        size_gib: 2,
        status,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: Some("node1@file".into()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: snapshot_id.map(str::to_owned),
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = worker(WorkerKind::Volume, &volume.id, "creating");
    let created = db
        .create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    assert!(matches!(created, Created::New(_)));
    volume
}

fn worker(kind: WorkerKind, id: &str, status: &str) -> WorkerEntry {
    WorkerEntry {
        kind,
        resource_id: id.to_owned(),
        status: status.to_owned(),
        service: "node1@file".into(),
        deadline_ms: now_ms() + 60_000,
    }
}

fn snapshot_of(volume: &Volume, created_at_ms: i64) -> Snapshot {
    Snapshot {
        id: new_id(),
        project_id: volume.project_id.clone(),
        user_id: "u1".into(),
        volume_id: volume.id.clone(),
        name: "s".into(),
        description: "d".into(),
        size_gib: volume.size_gib,
        status: SnapshotStatus::Creating,
        host: volume.host.clone(),
        error_message: String::new(),
        created_at_ms,
        updated_at_ms: created_at_ms,
    }
}

async fn snapshot(db: &Db, volume: &Volume, status: SnapshotStatus) -> Snapshot {
    let mut snapshot = snapshot_of(volume, now_ms());
    let w = worker(WorkerKind::Snapshot, &snapshot.id, "creating");
    assert!(
        db.create_snapshot(&snapshot, &[volume.status], &w)
            .await
            .expect("create")
    );
    if status != SnapshotStatus::Creating {
        assert!(
            db.transition_snapshot(
                &snapshot.id,
                &[SnapshotStatus::Creating],
                status,
                None,
                None
            )
            .await
            .expect("cas")
        );
        snapshot.status = status;
    }
    snapshot
}

#[tokio::test]
async fn create_inserts_row_and_worker_and_reads_back() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available, None).await;
    let s = snapshot_of(&v, now_ms());
    let w = worker(WorkerKind::Snapshot, &s.id, "creating");
    assert!(
        t.db()
            .create_snapshot(&s, &[VolumeStatus::Available], &w)
            .await
            .expect("create")
    );
    assert_eq!(
        t.db().get_snapshot(&s.id).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        Some(w)
    );
    assert_eq!(t.db().get_snapshot(&new_id()).await.expect("get"), None);
    assert_eq!(
        t.db().count_volume_snapshots(&v.id).await.expect("count"),
        1
    );
    assert_eq!(
        t.db().volume_snapshot_ids(&v.id).await.expect("ids"),
        vec![s.id]
    );
}

#[tokio::test]
async fn create_refuses_a_volume_in_another_status_and_writes_nothing() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::InUse, None).await;
    let s = snapshot_of(&v, now_ms());
    let w = worker(WorkerKind::Snapshot, &s.id, "creating");
    assert!(
        !t.db()
            .create_snapshot(&s, &[VolumeStatus::Available], &w)
            .await
            .expect("create")
    );
    assert_eq!(t.db().get_snapshot(&s.id).await.expect("get"), None);
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        None
    );
    // With force, in-use is allowed.
    assert!(
        t.db()
            .create_snapshot(&s, &[VolumeStatus::Available, VolumeStatus::InUse], &w)
            .await
            .expect("create")
    );
    // A missing volume is refused too.
    let mut orphan = snapshot_of(&v, now_ms());
    orphan.volume_id = new_id();
    assert!(
        !t.db()
            .create_snapshot(&orphan, &[VolumeStatus::Available], &w)
            .await
            .expect("create")
    );
}

#[tokio::test]
async fn list_filters_and_pages() {
    let t = temp_db().await;
    let v1 = volume(t.db(), VolumeStatus::Available, None).await;
    let v2 = volume(t.db(), VolumeStatus::Available, None).await;
    let mut all = Vec::new();
    for (i, v) in [&v1, &v2, &v1, &v1].into_iter().enumerate() {
        // Two share a timestamp: the id breaks the tie.
        let mut s = snapshot_of(v, 1_000 + (i as i64 / 2));
        if i == 3 {
            s.project_id = "p2".into();
        }
        let w = worker(WorkerKind::Snapshot, &s.id, "creating");
        assert!(
            t.db()
                .create_snapshot(&s, &[VolumeStatus::Available], &w)
                .await
                .expect("create")
        );
        all.push(s);
    }
    t.db()
        .transition_snapshot(
            &all[0].id,
            &[SnapshotStatus::Creating],
            SnapshotStatus::Available,
            None,
            None,
        )
        .await
        .expect("cas");
    let ids = |list: Vec<Snapshot>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let p1 = SnapshotQuery {
        project_id: Some("p1".into()),
        limit: 10,
        ..Default::default()
    };
    let mut expected: Vec<_> = all[..3]
        .iter()
        .map(|s| (s.created_at_ms, s.id.clone()))
        .collect();
    expected.sort();
    let expected: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        ids(t.db().list_snapshots(&p1).await.expect("list")),
        expected
    );

    let first = t
        .db()
        .list_snapshots(&SnapshotQuery {
            limit: 2,
            ..p1.clone()
        })
        .await
        .expect("page 1");
    assert_eq!(ids(first.clone()), expected[..2]);
    let last = first.last().expect("last");
    let rest = t
        .db()
        .list_snapshots(&SnapshotQuery {
            after: Some((last.created_at_ms, last.id.clone())),
            ..p1.clone()
        })
        .await
        .expect("page 2");
    assert_eq!(ids(rest), expected[2..]);

    let of_v1 = SnapshotQuery {
        volume_id: Some(v1.id.clone()),
        ..p1.clone()
    };
    assert_eq!(
        ids(t.db().list_snapshots(&of_v1).await.expect("list")).len(),
        2
    );
    let available = SnapshotQuery {
        status: Some(SnapshotStatus::Available),
        ..p1.clone()
    };
    assert_eq!(
        ids(t.db().list_snapshots(&available).await.expect("list")),
        vec![all[0].id.clone()]
    );
}

#[tokio::test]
async fn transition_is_compare_and_set_and_moves_the_worker() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available, None).await;
    let s = snapshot(t.db(), &v, SnapshotStatus::Creating).await;
    assert!(
        !t.db()
            .transition_snapshot(
                &s.id,
                &[SnapshotStatus::Available],
                SnapshotStatus::Deleting,
                None,
                None
            )
            .await
            .expect("cas")
    );
    assert!(
        t.db()
            .transition_snapshot(
                &s.id,
                &[SnapshotStatus::Creating],
                SnapshotStatus::Error,
                Some("boom"),
                None
            )
            .await
            .expect("cas")
    );
    let now = t.db().get_snapshot(&s.id).await.expect("get").expect("row");
    assert_eq!(now.status, SnapshotStatus::Error);
    assert_eq!(now.error_message, "boom");
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        None
    );
    let w = worker(WorkerKind::Snapshot, &s.id, "deleting");
    assert!(
        t.db()
            .transition_snapshot(
                &s.id,
                &[SnapshotStatus::Error],
                SnapshotStatus::Deleting,
                None,
                Some(&w)
            )
            .await
            .expect("cas")
    );
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        Some(w)
    );
    assert!(t.db().delete_snapshot_row(&s.id).await.expect("delete"));
    assert!(!t.db().delete_snapshot_row(&s.id).await.expect("again"));
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        None
    );
}

#[tokio::test]
async fn volume_delete_is_refused_while_snapshots_exist() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available, None).await;
    let s1 = snapshot(t.db(), &v, SnapshotStatus::Available).await;
    let s2 = snapshot(t.db(), &v, SnapshotStatus::Error).await;
    let w = worker(WorkerKind::Volume, &v.id, "deleting");
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, Some(&w))
            .await
            .expect("delete"),
        // Oldest first, ties (the same millisecond) broken by id.
        VolumeDeleteStart::HasSnapshots(by_age(&[&s1, &s2]))
    );
    let row = t.db().get_volume(&v.id).await.expect("get").expect("row");
    assert_eq!(row.status, VolumeStatus::Available, "nothing changed");
    for s in [&s1, &s2] {
        t.db().delete_snapshot_row(&s.id).await.expect("delete");
    }
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, Some(&w))
            .await
            .expect("delete"),
        VolumeDeleteStart::Started
    );
    assert_eq!(
        t.db()
            .get_volume(&v.id)
            .await
            .expect("get")
            .expect("row")
            .status,
        VolumeStatus::Deleting
    );
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("worker"),
        Some(w.clone())
    );
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, Some(&w))
            .await
            .expect("again"),
        VolumeDeleteStart::WrongStatus
    );
    // A deleting volume cannot be snapshotted.
    let s = snapshot_of(&v, now_ms());
    let sw = worker(WorkerKind::Snapshot, &s.id, "creating");
    assert!(
        !t.db()
            .create_snapshot(&s, &[VolumeStatus::Available], &sw)
            .await
            .expect("create")
    );
}

#[tokio::test]
async fn volume_delete_without_worker_removes_the_entry() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Error, None).await;
    assert_eq!(
        t.db()
            .start_volume_delete(&v.id, None)
            .await
            .expect("delete"),
        VolumeDeleteStart::Started
    );
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("worker"),
        None
    );
}

#[tokio::test]
async fn snapshot_delete_is_refused_while_a_volume_is_made_from_it() {
    let t = temp_db().await;
    let v = volume(t.db(), VolumeStatus::Available, None).await;
    let s = snapshot(t.db(), &v, SnapshotStatus::Available).await;
    let child = volume(t.db(), VolumeStatus::Creating, Some(&s.id)).await;
    assert!(
        t.db()
            .confirm_snapshot_available(&s.id)
            .await
            .expect("confirm")
    );
    let w = worker(WorkerKind::Snapshot, &s.id, "deleting");
    assert_eq!(
        t.db()
            .start_snapshot_delete(&s.id, Some(&w))
            .await
            .expect("delete"),
        SnapshotDeleteStart::InUse(vec![child.id.clone()])
    );
    assert_eq!(
        t.db()
            .get_snapshot(&s.id)
            .await
            .expect("get")
            .expect("row")
            .status,
        SnapshotStatus::Available
    );
    t.db()
        .transition_volume(
            &child.id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            None,
            None,
        )
        .await
        .expect("cas");
    assert_eq!(
        t.db()
            .start_snapshot_delete(&s.id, Some(&w))
            .await
            .expect("delete"),
        SnapshotDeleteStart::Started
    );
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Snapshot, &s.id)
            .await
            .expect("worker"),
        Some(w.clone())
    );
    // Once deleting, a new volume from it is refused, and deleting again is too.
    assert!(
        !t.db()
            .confirm_snapshot_available(&s.id)
            .await
            .expect("confirm")
    );
    assert_eq!(
        t.db()
            .start_snapshot_delete(&s.id, Some(&w))
            .await
            .expect("again"),
        SnapshotDeleteStart::WrongStatus
    );
    let creating = snapshot(t.db(), &v, SnapshotStatus::Creating).await;
    assert_eq!(
        t.db()
            .start_snapshot_delete(&creating.id, None)
            .await
            .expect("creating"),
        SnapshotDeleteStart::WrongStatus
    );
}

#[tokio::test]
async fn migrations_run_twice() {
    let t = temp_db().await;
    let url = format!("sqlite://{}", t.dir().join("scoria.db").display());
    Db::connect(&url)
        .await
        .expect("second connect re-runs nothing");
}

/// The ids of `snapshots` in the order the database lists them: by creation
/// time, then id.
fn by_age(snapshots: &[&Snapshot]) -> Vec<String> {
    let mut sorted = snapshots.to_vec();
    sorted.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    sorted.into_iter().map(|s| s.id.clone()).collect()
}
