//! Tests of the `workers` table: the typed entry, and the reconciler's and the
//! reaper's queries, on a SQLite file.

use super::*;
use crate::db::WorkerOutcome;
use crate::model::{Snapshot, Volume};

use crate::testing::TempDb;

async fn temp_db() -> TempDb {
    TempDb::new().await
}

/// A volume in `status` with a worker entry owned by `owner`, due at `deadline_ms`.
async fn volume(db: &Db, status: VolumeStatus, owner: &str, deadline_ms: i64) -> WorkerEntry {
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
        status,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: Some("node1@file".into()),
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: status.as_str().into(),
        service: owner.into(),
        deadline_ms,
    };
    db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    worker
}

#[tokio::test]
async fn overdue_lists_only_the_owners_entries_past_their_deadline() {
    let t = temp_db().await;
    let now = now_ms();
    let late = volume(t.db(), VolumeStatus::Creating, "n1@file", now - 5_000).await;
    let later = volume(t.db(), VolumeStatus::Deleting, "n1@file", now - 1_000).await;
    let _due = volume(t.db(), VolumeStatus::Creating, "n1@file", now + 60_000).await;
    let _other = volume(t.db(), VolumeStatus::Creating, "n2@file", now - 5_000).await;

    let overdue = t.db().overdue_workers("n1@file", now).await.expect("list");
    assert_eq!(overdue, vec![late, later], "most overdue first, only n1's");
    assert!(
        t.db()
            .overdue_workers("n3@file", now)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn orphans_are_overdue_entries_of_down_or_unknown_services() {
    let t = temp_db().await;
    let now = now_ms();
    t.db()
        .heartbeat("scoria-volume", "up@file", "az")
        .await
        .expect("beat");
    t.db()
        .heartbeat("scoria-volume", "down@file", "az")
        .await
        .expect("beat");
    sqlx::query("UPDATE services SET last_heartbeat = $1 WHERE host = 'down@file'")
        .bind(now - 120_000)
        .execute(t.db().pool())
        .await
        .expect("age the heartbeat");
    let of_down = volume(t.db(), VolumeStatus::Deleting, "down@file", now - 1_000).await;
    let of_unknown = volume(t.db(), VolumeStatus::Creating, "gone@file", now - 500).await;
    let _of_up = volume(t.db(), VolumeStatus::Creating, "up@file", now - 1_000).await;
    let _down_not_overdue = volume(t.db(), VolumeStatus::Creating, "down@file", now + 60_000).await;
    let _scheduler = volume(
        t.db(),
        VolumeStatus::Creating,
        "scoria-scheduler",
        now - 1_000,
    )
    .await;

    let orphans = t
        .db()
        .orphaned_workers("scoria-volume", "scoria-scheduler", now - 60_000, now)
        .await
        .expect("list");
    assert_eq!(orphans, vec![of_down, of_unknown]);
}

#[tokio::test]
async fn work_of_a_cluster_is_orphaned_only_when_every_member_is_down() {
    let t = temp_db().await;
    let now = now_ms();
    for member in ["a@file", "b@file"] {
        t.db()
            .heartbeat("scoria-volume", member, "az")
            .await
            .expect("beat");
        assert!(
            t.db()
                .set_service_cluster("scoria-volume", member, "shared@file")
                .await
                .expect("cluster")
        );
    }
    sqlx::query("UPDATE services SET last_heartbeat = $1 WHERE host = 'a@file'")
        .bind(now - 120_000)
        .execute(t.db().pool())
        .await
        .expect("age a's heartbeat");
    let of_cluster = volume(t.db(), VolumeStatus::Deleting, "shared@file", now - 1_000).await;
    let orphans = |t: &TempDb| {
        let db = t.db().clone();
        async move {
            db.orphaned_workers("scoria-volume", "scoria-scheduler", now - 60_000, now)
                .await
                .expect("list")
        }
    };
    assert!(
        orphans(&t).await.is_empty(),
        "member b is up: the cluster's work is its"
    );
    sqlx::query("UPDATE services SET last_heartbeat = $1 WHERE host = 'b@file'")
        .bind(now - 120_000)
        .execute(t.db().pool())
        .await
        .expect("age b's heartbeat");
    assert_eq!(orphans(&t).await, vec![of_cluster], "every member down");
}

#[tokio::test]
async fn an_entry_is_moved_or_removed_only_as_it_was_read() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Creating, "n1@file", 10).await;

    assert!(
        t.db()
            .move_worker(&entry, "n2@file", 99)
            .await
            .expect("move")
    );
    assert!(
        !t.db()
            .move_worker(&entry, "n3@file", 99)
            .await
            .expect("move"),
        "the second reaper acting on what it read loses"
    );
    let now = t
        .db()
        .get_worker(WorkerKind::Volume, &entry.resource_id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!((now.service.as_str(), now.deadline_ms), ("n2@file", 99));

    assert!(
        !t.db().remove_worker_entry(&entry).await.expect("remove"),
        "the old entry is not the one stored"
    );
    assert!(t.db().remove_worker_entry(&now).await.expect("remove"));
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Volume, &entry.resource_id)
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn claim_takes_the_entry_only_in_its_status() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Deleting, "n1@file", 10).await;
    assert!(
        !t.db()
            .claim_worker(
                WorkerKind::Volume,
                &entry.resource_id,
                "extending",
                "n1@file",
                500
            )
            .await
            .expect("claim")
    );
    assert!(
        t.db()
            .claim_worker(
                WorkerKind::Volume,
                &entry.resource_id,
                "deleting",
                "n1@file",
                500
            )
            .await
            .expect("claim")
    );
    let now = t
        .db()
        .get_worker(WorkerKind::Volume, &entry.resource_id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(now.deadline_ms, 500);
}

#[tokio::test]
async fn failing_a_volume_is_a_compare_and_set_on_the_entry() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Extending, "dead@file", 10).await;

    let first = t
        .db()
        .fail_volume_worker(
            &entry,
            VolumeStatus::ErrorExtending,
            "owner dead@file is down",
        )
        .await
        .expect("fail");
    assert_eq!(first, WorkerOutcome::Done);
    let second = t
        .db()
        .fail_volume_worker(&entry, VolumeStatus::ErrorExtending, "again")
        .await
        .expect("fail");
    assert_eq!(
        second,
        WorkerOutcome::Lost,
        "a second reaper cannot fail it again"
    );
    let stored = t
        .db()
        .get_volume(&entry.resource_id)
        .await
        .expect("get")
        .expect("volume");
    assert_eq!(stored.status, VolumeStatus::ErrorExtending);
    assert_eq!(stored.error_message, "owner dead@file is down");
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Volume, &entry.resource_id)
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn a_stale_entry_is_removed_and_nothing_else_changes() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Creating, "n1@file", 10).await;
    // Settled by someone who forgot the entry.
    t.db()
        .transition_volume(
            &entry.resource_id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            None,
            None,
        )
        .await
        .expect("settle");
    assert!(t.db().worker_is_stale(&entry).await.expect("stale"));

    let outcome = t
        .db()
        .fail_volume_worker(&entry, VolumeStatus::Error, "late")
        .await
        .expect("fail");
    assert_eq!(outcome, WorkerOutcome::Stale);
    let stored = t
        .db()
        .get_volume(&entry.resource_id)
        .await
        .expect("get")
        .expect("volume");
    assert_eq!(stored.status, VolumeStatus::Available);
    assert_eq!(stored.error_message, "");
    assert_eq!(
        t.db()
            .get_worker(WorkerKind::Volume, &entry.resource_id)
            .await
            .expect("get"),
        None
    );

    let gone = WorkerEntry {
        resource_id: uuid::Uuid::new_v4().to_string(),
        ..entry
    };
    assert!(t.db().worker_is_stale(&gone).await.expect("stale"));
}

#[tokio::test]
async fn failing_a_snapshot_moves_the_snapshot() {
    let t = temp_db().await;
    let parent = volume(t.db(), VolumeStatus::Available, "n1@file", i64::MAX).await;
    let now = now_ms();
    let snapshot = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: parent.resource_id.clone(),
        name: String::new(),
        description: String::new(),
        size_gib: 1,
        status: SnapshotStatus::Deleting,
        host: Some("n1@file".into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: snapshot.id.clone(),
        status: "deleting".into(),
        service: "n1@file".into(),
        deadline_ms: 10,
    };
    assert!(
        t.db()
            .create_snapshot(&snapshot, &[VolumeStatus::Available], &entry)
            .await
            .expect("insert")
    );
    assert!(!t.db().worker_is_stale(&entry).await.expect("stale"));
    let outcome = t
        .db()
        .fail_snapshot_worker(
            &entry,
            SnapshotStatus::ErrorDeleting,
            "owner n1@file is down",
        )
        .await
        .expect("fail");
    assert_eq!(outcome, WorkerOutcome::Done);
    let stored = t
        .db()
        .get_snapshot(&snapshot.id)
        .await
        .expect("get")
        .expect("snapshot");
    assert_eq!(stored.status, SnapshotStatus::ErrorDeleting);
    assert_eq!(stored.error_message, "owner n1@file is down");
}

#[tokio::test]
async fn a_reschedule_is_noted_once() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Creating, "scoria-scheduler", 10).await;
    assert!(
        t.db()
            .note_rescheduled(&entry, "retried", 5_000)
            .await
            .expect("note")
    );
    assert!(
        !t.db()
            .note_rescheduled(&entry, "retried", 6_000)
            .await
            .expect("note"),
        "a second scheduler acting on the same entry loses"
    );
    let stored = t
        .db()
        .get_volume(&entry.resource_id)
        .await
        .expect("get")
        .expect("volume");
    assert_eq!(stored.status, VolumeStatus::Creating);
    assert_eq!(stored.error_message, "retried");
    let now = t
        .db()
        .get_worker(WorkerKind::Volume, &entry.resource_id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(now.deadline_ms, 5_000);
}

// === typed constructors ===

#[test]
fn owner_round_trips_through_the_stored_name() {
    assert_eq!(Owner::Scheduler.to_string(), "scoria-scheduler");
    assert_eq!(Owner::parse(SCHEDULER_OWNER), Owner::Scheduler);
    let host = Owner::Service("node1@file".into());
    assert_eq!(host.to_string(), "node1@file");
    assert_eq!(Owner::parse("node1@file"), host);
}

#[test]
fn typed_constructors_store_what_the_fields_held() {
    let entry = WorkerEntry::volume("v1", VolumeStatus::Creating, Owner::Scheduler, 42);
    assert_eq!(
        entry,
        WorkerEntry {
            kind: WorkerKind::Volume,
            resource_id: "v1".into(),
            status: "creating".into(),
            service: "scoria-scheduler".into(),
            deadline_ms: 42,
        }
    );
    assert_eq!(entry.owner(), Owner::Scheduler);
    assert_eq!(
        entry.transient_status().expect("status"),
        TransientStatus::Volume(VolumeStatus::Creating)
    );

    let owner = Owner::Service("n1@file".into());
    let entry = WorkerEntry::snapshot("s1", SnapshotStatus::Deleting, owner.clone(), 7);
    assert_eq!(
        (entry.kind, entry.status.as_str()),
        (WorkerKind::Snapshot, "deleting")
    );
    assert_eq!(entry.owner(), owner);
    assert_eq!(
        entry.transient_status().expect("status"),
        TransientStatus::Snapshot(SnapshotStatus::Deleting)
    );

    let entry = WorkerEntry::attachment("a1", AttachmentStatus::Attaching, owner.clone(), 9);
    assert_eq!(
        (entry.kind, entry.service.as_str()),
        (WorkerKind::Attachment, "n1@file")
    );
    assert_eq!(
        entry.transient_status().expect("status"),
        TransientStatus::Attachment(AttachmentStatus::Attaching)
    );
}

#[test]
fn a_status_of_another_kind_is_corrupt() {
    let mut entry = WorkerEntry::attachment("a1", AttachmentStatus::Detaching, Owner::Scheduler, 0);
    entry.status = "extending".into();
    assert!(matches!(
        entry.transient_status(),
        Err(DbError::Corrupt { table: "workers", ref id, .. }) if id == "a1"
    ));
}

#[test]
fn deadlines_add_to_now_and_saturate() {
    assert_eq!(deadlines::at(1_000, deadlines::ATTACH_MARGIN), 61_000);
    assert_eq!(deadlines::at(i64::MAX - 1, deadlines::OPERATION), i64::MAX);
    let before = now_ms();
    let deadline = deadlines::from_now(deadlines::VOLUME_CREATE);
    assert!(deadline >= before + 300_000 && deadline <= now_ms() + 300_000);
}

#[tokio::test]
async fn a_typed_entry_reads_back_typed() {
    let t = temp_db().await;
    let entry = volume(t.db(), VolumeStatus::Deleting, "n1@file", 5).await;
    let read = t
        .db()
        .get_worker(WorkerKind::Volume, &entry.resource_id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(read.owner(), Owner::Service("n1@file".into()));
    assert_eq!(
        read.transient_status().expect("status"),
        TransientStatus::Volume(VolumeStatus::Deleting)
    );
}
