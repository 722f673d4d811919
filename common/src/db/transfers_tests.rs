//! Transfers on SQLite and on PostgreSQL: an offer holds its volume, an accept
//! moves the volume, its snapshots and their quota usage exactly (or nothing,
//! over quota or with a wrong key), and a withdrawal or the expiry sweep gives
//! the volume back.

use super::{
    Db, DbError, Owner, TransferAccept, TransferCreate, TransferQuery, WorkerEntry,
    migrate_tests::{drop_postgres, fresh_postgres},
    quota::Resource,
};
use crate::model::{Snapshot, SnapshotStatus, Transfer, Volume, VolumeStatus, now_ms};

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(super) async fn volume(db: &Db, project: &str, size_gib: u64) -> Volume {
    let now = now_ms();
    let v = Volume {
        id: new_id(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib,
        status: VolumeStatus::Creating,
        volume_type: "gold".into(),
        availability_zone: "default".into(),
        host: None,
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
        migration_status: Default::default(),
        migration_error: String::new(),
    };
    let w = WorkerEntry::volume(
        &v.id,
        VolumeStatus::Creating,
        Owner::Scheduler,
        now + 60_000,
    );
    db.create_volume(&v, None, &w).await.expect("create");
    assert!(
        db.transition_volume_with_worker(
            &v.id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            Some("node1@file"),
            None,
            None
        )
        .await
        .expect("available")
    );
    v
}

pub(super) async fn snapshot(db: &Db, v: &Volume) -> Snapshot {
    let now = now_ms();
    let s = Snapshot {
        id: new_id(),
        project_id: v.project_id.clone(),
        user_id: "u1".into(),
        volume_id: v.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib: v.size_gib,
        status: SnapshotStatus::Creating,
        host: Some("node1@file".into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let w = WorkerEntry::snapshot(
        &s.id,
        SnapshotStatus::Creating,
        Owner::Service("node1@file".into()),
        now + 60_000,
    );
    assert!(
        db.create_snapshot(&s, &[VolumeStatus::Available], &w)
            .await
            .expect("snapshot")
    );
    assert!(
        db.transition_snapshot(
            &s.id,
            &[SnapshotStatus::Creating],
            SnapshotStatus::Available,
            None,
            None
        )
        .await
        .expect("available")
    );
    s
}

fn transfer(v: &Volume, expires_in_ms: i64) -> Transfer {
    let now = now_ms();
    Transfer {
        id: new_id(),
        volume_id: v.id.clone(),
        name: "gift".into(),
        source_project_id: v.project_id.clone(),
        user_id: "u1".into(),
        salt: "00".into(),
        key_hash: "11".into(),
        no_snapshots: false,
        failed_attempts: 0,
        created_at_ms: now,
        expires_at_ms: now + expires_in_ms,
        destination_project_id: None,
    }
}

pub(super) async fn usage(db: &Db, project: &str, resource: Resource) -> i64 {
    db.project_quota(project)
        .await
        .expect("quota")
        .into_iter()
        .find(|l| l.resource == resource)
        .map_or(0, |l| l.in_use)
}

async fn status(db: &Db, id: &str) -> VolumeStatus {
    db.get_volume(id)
        .await
        .expect("get")
        .expect("volume")
        .status
}

async fn an_accept_moves_the_volume_its_snapshots_and_their_usage(db: &Db) {
    let v = volume(db, "giver", 3).await;
    let s = snapshot(db, &v).await;
    let t = transfer(&v, 60_000);
    assert_eq!(
        db.create_transfer(&t).await.expect("offer"),
        TransferCreate::Created
    );
    assert_eq!(status(db, &v.id).await, VolumeStatus::AwaitingTransfer);
    // A second offer of the same volume loses its compare-and-set.
    assert_eq!(
        db.create_transfer(&transfer(&v, 60_000))
            .await
            .expect("offer"),
        TransferCreate::WrongStatus
    );
    // The wrong key is counted, in a write of its own; nothing moves.
    let wrong = db
        .accept_transfer(&t.id, "taker", "u2", now_ms(), |_| false)
        .await
        .expect("accept");
    assert_eq!(wrong, TransferAccept::WrongKey);
    let kept = db.get_transfer(&t.id).await.expect("get").expect("kept");
    assert_eq!(kept.failed_attempts, 1);
    // Its own project cannot take it.
    let own = db
        .accept_transfer(&t.id, "giver", "u1", now_ms(), |_| true)
        .await
        .expect("accept");
    assert_eq!(own, TransferAccept::OwnProject);

    let accepted = db
        .accept_transfer(&t.id, "taker", "u2", now_ms(), |_| true)
        .await
        .expect("accept");
    let TransferAccept::Accepted(done) = accepted else {
        panic!("not accepted: {accepted:?}");
    };
    let (offer, moved) = *done;
    assert_eq!(offer.destination_project_id.as_deref(), Some("taker"));
    assert_eq!(moved.project_id, "taker");
    assert_eq!(moved.user_id, "u2");
    assert_eq!(moved.status, VolumeStatus::Available);
    let snap = db.get_snapshot(&s.id).await.expect("get").expect("snap");
    assert_eq!(snap.project_id, "taker");
    assert!(db.get_transfer(&t.id).await.expect("get").is_none());
    assert_eq!(usage(db, "giver", Resource::Volumes).await, 0);
    assert_eq!(usage(db, "giver", Resource::Gigabytes).await, 0);
    assert_eq!(usage(db, "giver", Resource::Snapshots).await, 0);
    assert_eq!(usage(db, "taker", Resource::Volumes).await, 1);
    assert_eq!(usage(db, "taker", Resource::Gigabytes).await, 6);
    assert_eq!(usage(db, "taker", Resource::Snapshots).await, 1);
    assert_eq!(
        usage(db, "taker", Resource::GigabytesOfType("gold".into())).await,
        6
    );
    assert!(db.check_quota_usage(None).await.expect("check").is_empty());
    // Accepted once: a second accept finds nothing.
    let again = db
        .accept_transfer(&t.id, "third", "u3", now_ms(), |_| true)
        .await
        .expect("accept");
    assert_eq!(again, TransferAccept::NotFound);
}

async fn over_quota_moves_nothing(db: &Db) {
    let v = volume(db, "giver2", 5).await;
    let t = transfer(&v, 60_000);
    db.create_transfer(&t).await.expect("offer");
    db.set_project_quota("small", &[(Resource::Gigabytes, 4)])
        .await
        .expect("quota");
    let err = db
        .accept_transfer(&t.id, "small", "u2", now_ms(), |_| true)
        .await
        .expect_err("over quota");
    assert!(matches!(err, DbError::OverQuota(_)), "{err}");
    assert!(db.get_transfer(&t.id).await.expect("get").is_some());
    let v2 = db.get_volume(&v.id).await.expect("get").expect("volume");
    assert_eq!(v2.project_id, "giver2");
    assert_eq!(v2.status, VolumeStatus::AwaitingTransfer);
    assert_eq!(usage(db, "small", Resource::Gigabytes).await, 0);
    assert_eq!(usage(db, "giver2", Resource::Gigabytes).await, 5);
}

async fn withdrawal_and_expiry_give_the_volume_back(db: &Db) {
    let v = volume(db, "giver3", 1).await;
    let t = transfer(&v, 60_000);
    db.create_transfer(&t).await.expect("offer");
    let listed = db
        .list_transfers(&TransferQuery {
            project_id: Some("giver3".into()),
            pending_at_ms: Some(now_ms()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let gone = db.delete_transfer(&t.id).await.expect("withdraw");
    assert_eq!(gone.map(|t| t.id), Some(t.id.clone()));
    assert_eq!(status(db, &v.id).await, VolumeStatus::Available);
    assert!(db.delete_transfer(&t.id).await.expect("again").is_none());

    // An offer past its time: not acceptable, and the sweep gives it back.
    let late = transfer(&v, 1);
    db.create_transfer(&late).await.expect("offer");
    let now = now_ms() + 10;
    let accept = db
        .accept_transfer(&late.id, "taker3", "u2", now, |_| true)
        .await
        .expect("accept");
    assert_eq!(accept, TransferAccept::NotFound);
    let ended = db.expire_transfers(now, 100).await.expect("sweep");
    assert_eq!(ended.iter().map(|t| &t.id).collect::<Vec<_>>(), [&late.id]);
    assert_eq!(status(db, &v.id).await, VolumeStatus::Available);
    assert!(
        db.expire_transfers(now, 100)
            .await
            .expect("sweep")
            .is_empty()
    );

    // no_snapshots on a volume with snapshots: refused, nothing written.
    snapshot(db, &v).await;
    let alone = Transfer {
        no_snapshots: true,
        ..transfer(&v, 60_000)
    };
    let refused = db.create_transfer(&alone).await.expect("offer");
    assert!(matches!(refused, TransferCreate::HasSnapshots(ref s) if s.len() == 1));
    assert_eq!(status(db, &v.id).await, VolumeStatus::Available);
    assert!(db.get_transfer(&alone.id).await.expect("get").is_none());
}

async fn all(db: &Db) {
    an_accept_moves_the_volume_its_snapshots_and_their_usage(db).await;
    over_quota_moves_nothing(db).await;
    withdrawal_and_expiry_give_the_volume_back(db).await;
}

#[tokio::test]
async fn transfers_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    all(&db).await;
}

#[tokio::test]
async fn transfers_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.expect("connect");
    all(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}
