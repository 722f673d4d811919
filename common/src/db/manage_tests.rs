//! Unmanaging on SQLite and on PostgreSQL: a row goes only when nothing
//! depends on it, and its quota usage goes with it.

use super::{
    Db, Owner, Unmanaged, WorkerEntry,
    migrate_tests::{drop_postgres, fresh_postgres},
    quota::Resource,
    transfers_tests::{new_id, snapshot, usage, volume},
};
use crate::model::{Volume, VolumeStatus, now_ms};

async fn a_row_goes_only_when_nothing_depends_on_it(db: &Db) {
    let v = volume(db, "owner", 3).await;
    let s = snapshot(db, &v).await;
    assert_eq!(usage(db, "owner", Resource::Gigabytes).await, 6);

    // A volume with a snapshot stays.
    let refused = db.unmanage_volume(&v.id).await.expect("unmanage");
    assert_eq!(refused, Unmanaged::InUse(vec![s.id.clone()]));
    assert!(db.get_volume(&v.id).await.expect("get").is_some());

    // A snapshot a volume is being made from stays.
    let now = now_ms();
    let copy = Volume {
        id: new_id(),
        snapshot_id: Some(s.id.clone()),
        status: VolumeStatus::Creating,
        created_at_ms: now,
        updated_at_ms: now,
        ..v.clone()
    };
    let entry = WorkerEntry::volume(
        &copy.id,
        VolumeStatus::Creating,
        Owner::Scheduler,
        now + 60_000,
    );
    db.create_volume(&copy, None, &entry).await.expect("copy");
    let refused = db.unmanage_snapshot(&s.id).await.expect("unmanage");
    assert_eq!(refused, Unmanaged::InUse(vec![copy.id.clone()]));
    assert!(db.delete_volume_row(&copy.id).await.expect("drop the copy"));

    // Then both go, with their usage.
    assert_eq!(
        db.unmanage_snapshot(&s.id).await.expect("unmanage"),
        Unmanaged::Removed
    );
    assert!(db.get_snapshot(&s.id).await.expect("get").is_none());
    assert_eq!(usage(db, "owner", Resource::Snapshots).await, 0);
    assert_eq!(
        db.unmanage_volume(&v.id).await.expect("unmanage"),
        Unmanaged::Removed
    );
    assert!(db.get_volume(&v.id).await.expect("get").is_none());
    assert_eq!(usage(db, "owner", Resource::Gigabytes).await, 0);
    assert_eq!(usage(db, "owner", Resource::Volumes).await, 0);

    // Gone, or not available: nothing changes.
    assert_eq!(
        db.unmanage_volume(&v.id).await.expect("again"),
        Unmanaged::WrongStatus
    );
    let busy = volume(db, "owner", 1).await;
    assert!(
        db.transition_volume(
            &busy.id,
            &[VolumeStatus::Available],
            VolumeStatus::Extending,
            None,
            None
        )
        .await
        .expect("extending")
    );
    assert_eq!(
        db.unmanage_volume(&busy.id).await.expect("busy"),
        Unmanaged::WrongStatus
    );
    assert!(db.get_volume(&busy.id).await.expect("get").is_some());
    assert!(
        db.check_quota_usage(None)
            .await
            .expect("recount")
            .is_empty()
    );
}

#[tokio::test]
async fn unmanage_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    a_row_goes_only_when_nothing_depends_on_it(&db).await;
}

#[tokio::test]
async fn unmanage_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.expect("connect");
    a_row_goes_only_when_nothing_depends_on_it(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}
