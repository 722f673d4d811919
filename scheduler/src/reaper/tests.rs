//! Unit tests of the reaper: a real SQLite database in a temp dir, the recording
//! scheduler and volume services of `scoria_common::testing`.

use std::sync::atomic::{AtomicUsize, Ordering};

use scoria_common::{
    model::{Snapshot, SnapshotStatus},
    testing::{RecordingNotifier, RecordingScheduler, RecordingVolumes, TempDb, VolumeCall},
};

use scoria_proto::bus::DeleteVolume;

use super::*;

mod events;

struct Fixture {
    db: TempDb,
    notifier: Arc<RecordingNotifier>,
    scheduler: Arc<RecordingScheduler>,
    volumes: Arc<RecordingVolumes>,
}

impl Fixture {
    fn reaper(&self, shared: &[&str]) -> Reaper {
        Reaper::new(
            Settler::new(self.db.db().clone(), self.notifier.clone()),
            self.scheduler.clone(),
            self.volumes.clone(),
            ReaperSettings {
                service_down_time: Duration::from_secs(1),
                max_attempts: 3,
                deadline: Duration::from_secs(300),
                shared_backends: shared.iter().map(|s| (*s).to_owned()).collect(),
            },
        )
    }

    async fn volume(&self, status: VolumeStatus, owner: &str, deadline_ms: i64) -> Volume {
        static N: AtomicUsize = AtomicUsize::new(0);
        let now = now_ms();
        let volume = Volume {
            migration_status: Default::default(),
            migration_error: String::new(),
            id: format!("vol-{}", N.fetch_add(1, Ordering::Relaxed)),
            project_id: "p1".into(),
            user_id: "u1".into(),
            name: String::new(),
            description: String::new(),
            size_gib: 2,
            status,
            volume_type: "__DEFAULT__".into(),
            availability_zone: "az1".into(),
            host: owner.contains('@').then(|| owner.to_owned()),
            metadata: Default::default(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let entry = WorkerEntry {
            kind: WorkerKind::Volume,
            resource_id: volume.id.clone(),
            status: status.as_str().into(),
            service: owner.into(),
            deadline_ms,
        };
        self.db
            .create_volume(&volume, None, &entry)
            .await
            .expect("insert");
        volume
    }

    async fn get(&self, id: &str) -> Volume {
        self.db.get_volume(id).await.expect("get").expect("volume")
    }

    async fn worker(&self, id: &str) -> Option<WorkerEntry> {
        self.db
            .get_worker(WorkerKind::Volume, id)
            .await
            .expect("worker")
    }

    /// Registers `dead` (a heartbeat older than the 1 s down time), then `up`.
    async fn services(&self, dead: &[&str], up: &[&str]) {
        for host in dead {
            self.db
                .heartbeat(VOLUME_BINARY, host, "az1")
                .await
                .expect("beat");
        }
        if !dead.is_empty() {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
        }
        for host in up {
            self.db
                .heartbeat(VOLUME_BINARY, host, "az1")
                .await
                .expect("beat");
        }
    }
}

async fn fixture() -> Fixture {
    Fixture {
        db: TempDb::new().await,
        notifier: Arc::default(),
        scheduler: Arc::default(),
        volumes: Arc::default(),
    }
}

#[tokio::test]
async fn an_unscheduled_volume_is_scheduled_once_more_then_failed() {
    let f = fixture().await;
    let lost = f
        .volume(VolumeStatus::Creating, SCHEDULER_OWNER, now_ms() - 1)
        .await;
    let reaper = f.reaper(&[]);

    let report = reaper.run_once().await.expect("run");
    assert_eq!(report.rescheduled, vec![lost.id.clone()]);
    let scheduled = f.scheduler.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].volume_id, lost.id);
    assert_eq!(scheduled[0].size_gib, 2);
    assert_eq!(
        scheduled[0].attempt, 3,
        "the last attempt: no reschedules after it"
    );
    let now = f.get(&lost.id).await;
    assert_eq!(now.status, VolumeStatus::Creating);
    assert_eq!(now.error_message, RESCHEDULED_NOTE);
    let entry = f.worker(&lost.id).await.expect("entry");
    assert!(entry.deadline_ms > now_ms() + 200_000, "a new deadline");

    // Not overdue now: nothing happens.
    assert_eq!(reaper.run_once().await.expect("run"), ReapReport::default());

    // Overdue again: no second try.
    f.db.move_worker(&entry, SCHEDULER_OWNER, now_ms() - 1)
        .await
        .expect("age the entry");
    let report = reaper.run_once().await.expect("run");
    assert_eq!(report.failed, vec![lost.id.clone()]);
    assert_eq!(f.scheduler.scheduled().len(), 1);
    let now = f.get(&lost.id).await;
    assert_eq!(now.status, VolumeStatus::Error);
    assert!(
        now.error_message
            .starts_with("No valid backend was found in time"),
        "{}",
        now.error_message
    );
    assert_eq!(f.worker(&lost.id).await, None);
}

#[tokio::test]
async fn work_of_a_down_service_is_failed_naming_the_owner() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let past = now_ms() - 1;
    let creating = f.volume(VolumeStatus::Creating, "dead@file", past).await;
    let deleting = f.volume(VolumeStatus::Deleting, "dead@file", past).await;
    let extending = f.volume(VolumeStatus::Extending, "dead@file", past).await;
    // Owned by a service that never registered at all: down too.
    let unknown = f.volume(VolumeStatus::Deleting, "ghost@file", past).await;

    let mut report = f.reaper(&[]).run_once().await.expect("run");
    report.failed.sort();
    let mut expected = vec![
        creating.id.clone(),
        deleting.id.clone(),
        extending.id.clone(),
        unknown.id.clone(),
    ];
    expected.sort();
    assert_eq!(report.failed, expected);
    for (volume, status, owner) in [
        (&creating, VolumeStatus::Error, "dead@file"),
        (&deleting, VolumeStatus::ErrorDeleting, "dead@file"),
        (&extending, VolumeStatus::ErrorExtending, "dead@file"),
        (&unknown, VolumeStatus::ErrorDeleting, "ghost@file"),
    ] {
        let now = f.get(&volume.id).await;
        assert_eq!(now.status, status);
        assert!(
            now.error_message
                .contains(&format!("its owner {owner} is down")),
            "{}",
            now.error_message
        );
        assert_eq!(f.worker(&volume.id).await, None);
    }
    assert!(f.volumes.calls().is_empty());
}

#[tokio::test]
async fn a_down_services_snapshot_work_is_failed() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let parent = f
        .volume(VolumeStatus::Available, "dead@file", i64::MAX)
        .await;
    let now = now_ms();
    let snapshot = Snapshot {
        id: "snap-1".into(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: parent.id.clone(),
        name: String::new(),
        description: String::new(),
        size_gib: 2,
        status: SnapshotStatus::Creating,
        host: Some("dead@file".into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: snapshot.id.clone(),
        status: "creating".into(),
        service: "dead@file".into(),
        deadline_ms: now - 1,
    };
    assert!(
        f.db.create_snapshot(&snapshot, &[VolumeStatus::Available], &entry)
            .await
            .expect("insert")
    );

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert!(report.failed.contains(&snapshot.id), "{report:?}");
    let stored =
        f.db.get_snapshot(&snapshot.id)
            .await
            .expect("get")
            .expect("snapshot");
    assert_eq!(stored.status, SnapshotStatus::Error);
    assert!(
        stored.error_message.contains("dead@file is down"),
        "{}",
        stored.error_message
    );
}

#[tokio::test]
async fn work_of_a_live_owner_or_not_overdue_is_left_alone() {
    let f = fixture().await;
    f.services(&["dead@file"], &["live@file"]).await;
    let live = f
        .volume(VolumeStatus::Deleting, "live@file", now_ms() - 1)
        .await;
    let due = f
        .volume(VolumeStatus::Deleting, "dead@file", now_ms() + 60_000)
        .await;

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(report, ReapReport::default());
    for volume in [&live, &due] {
        assert_eq!(f.get(&volume.id).await.status, VolumeStatus::Deleting);
        assert!(f.worker(&volume.id).await.is_some());
    }
}

#[tokio::test]
async fn a_plain_create_is_handed_to_a_live_service_of_the_same_backend() {
    let f = fixture().await;
    f.services(&["dead@file"], &["live@file", "other@lvm"])
        .await;
    let creating = f
        .volume(VolumeStatus::Creating, "dead@file", now_ms() - 1)
        .await;

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(report.taken_over, vec![creating.id.clone()]);
    let entry = f.worker(&creating.id).await.expect("entry");
    assert_eq!(entry.service, "live@file");
    assert!(entry.deadline_ms > now_ms());
    let taken = f.volumes.calls();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].host(), Some("live@file"));
    match &taken[0] {
        VolumeCall::Create(_, request) => {
            assert_eq!(request.volume_id, creating.id);
            assert_eq!(request.pool, "live@file#file");
            assert_eq!(request.size_gib, 2);
        }
        other => panic!("expected a create, got {other:?}"),
    }
    assert_eq!(f.get(&creating.id).await.status, VolumeStatus::Creating);
}

#[tokio::test]
async fn a_delete_is_handed_over_only_on_a_shared_backend() {
    let f = fixture().await;
    f.services(&["dead@file"], &["live@file"]).await;
    let local = f
        .volume(VolumeStatus::Deleting, "dead@file", now_ms() - 1)
        .await;
    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(
        report.failed,
        vec![local.id.clone()],
        "objects are local to dead@file"
    );
    assert_eq!(f.get(&local.id).await.status, VolumeStatus::ErrorDeleting);

    let shared = f
        .volume(VolumeStatus::Deleting, "dead@file", now_ms() - 1)
        .await;
    let report = f.reaper(&["file"]).run_once().await.expect("run");
    assert_eq!(report.taken_over, vec![shared.id.clone()]);
    let taken = f.volumes.calls();
    assert_eq!(
        taken,
        vec![VolumeCall::Delete(
            "live@file".to_owned(),
            DeleteVolume {
                volume_id: shared.id.clone()
            }
        )]
    );
    assert_eq!(
        f.worker(&shared.id).await.expect("entry").service,
        "live@file"
    );
}

#[tokio::test]
async fn two_reapers_cannot_both_fail_the_same_work() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let stuck = f
        .volume(VolumeStatus::Extending, "dead@file", now_ms() - 1)
        .await;
    let (a, b) = (f.reaper(&[]), f.reaper(&[]));

    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!(
        ra.failed.len() + rb.failed.len(),
        1,
        "exactly one fails it: {ra:?} {rb:?}"
    );
    assert_eq!(f.get(&stuck.id).await.status, VolumeStatus::ErrorExtending);
}

#[tokio::test]
async fn stale_entries_are_removed() {
    let f = fixture().await;
    f.services(&["dead@file"], &[]).await;
    let settled = f
        .volume(VolumeStatus::Deleting, "dead@file", now_ms() - 1)
        .await;
    f.db.transition_volume(
        &settled.id,
        &[VolumeStatus::Deleting],
        VolumeStatus::Available,
        None,
        None,
    )
    .await
    .expect("settled without its entry");

    let report = f.reaper(&[]).run_once().await.expect("run");
    assert_eq!(report.stale, vec![settled.id.clone()]);
    assert_eq!(f.get(&settled.id).await.status, VolumeStatus::Available);
    assert_eq!(f.worker(&settled.id).await, None);
}
