//! Work in flight when the volume service dies (kill -9): resolved when it comes
//! back (redelivered casts, its reconciler), or failed by the scheduler's reaper
//! naming the dead owner when it does not. Deadlines and intervals are shortened
//! through their env vars, so the tests take seconds.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use scoria_common::{
    db::WorkerKind,
    model::{Volume, VolumeStatus},
};
use scoria_tests::stack::{DbKind, Stack};

use crate::support::{pb, sized};

/// Bytes of real data in the source of the slow clone (a copy that takes a
/// while, so the service can be killed in the middle of it).
const SOURCE_DATA: usize = 1 << 30;

/// Creates volume `name` of `size_gib` in project `p1` (a clone of `source`,
/// when given); its id.
async fn create(stack: &Stack, name: &str, size_gib: u64, source: Option<&str>) -> String {
    let request = pb::CreateVolumeRequest {
        name: name.to_owned(),
        source: source.and_then(crate::support::from_volume),
        ..sized(size_gib)
    };
    stack
        .volumes("p1")
        .create_volume(request)
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", stack.logs()))
        .into_inner()
        .id
}

/// A 2 GiB available volume holding 1 GiB of non-zero bytes.
async fn full_source(stack: &Stack) -> String {
    let id = create(stack, "source", 2, None).await;
    stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    let path = stack.volume_file(&id);
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the source's file");
        let chunk = vec![0xabu8; 1 << 20];
        for _ in 0..SOURCE_DATA / chunk.len() {
            file.write_all(&chunk).expect("write");
        }
        file.sync_all().expect("sync");
    })
    .await
    .expect("writer");
    id
}

/// Waits until the volume service has claimed volume `id` (its worker entry
/// names the service): the clone is being copied now.
async fn wait_claimed(stack: &Stack, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = stack
            .db
            .get_worker(WorkerKind::Volume, id)
            .await
            .expect("worker");
        if entry.is_some_and(|e| e.service == stack.volume_host) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the volume service never claimed {id}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until no volume is in a transient status; returns every volume.
async fn settled(stack: &Stack, within: Duration) -> Vec<Volume> {
    let deadline = Instant::now() + within;
    loop {
        let volumes = stack
            .db
            .list_volumes(&scoria_common::db::VolumeQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list");
        let stuck: Vec<_> = volumes
            .iter()
            .filter(|v| !matches!(v.status, VolumeStatus::Available | VolumeStatus::Error))
            .map(|v| format!("{} {} {:?}", v.id, v.status, v.error_message))
            .collect();
        if stuck.is_empty() {
            return volumes;
        }
        assert!(
            Instant::now() < deadline,
            "volumes stuck: {stuck:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backend holds exactly one object per available volume, and nothing else
/// named after a volume (no leftover of an error or a deleted one, no temp file).
fn assert_backend_matches(stack: &Stack, volumes: &[Volume]) {
    let mut expected: Vec<String> = volumes
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
        .map(|v| format!("volume-{}", v.id))
        .collect();
    expected.sort();
    let files = stack.backend_files();
    assert_eq!(
        files,
        expected,
        "backend files against the rows\n{}",
        stack.logs()
    );
}

#[tokio::test]
async fn work_cut_by_kill_9_is_finished_or_failed_after_a_restart() {
    restart_settles_cut_work(DbKind::Sqlite).await;
}

#[tokio::test]
async fn work_cut_by_kill_9_settles_after_a_restart_on_postgres() {
    restart_settles_cut_work(DbKind::Postgres).await;
}

async fn restart_settles_cut_work(kind: DbKind) {
    let mut stack = Stack::start_with(
        kind,
        &[
            ("SCORIA_OPERATION_DEADLINE_SECS", "2"),
            ("SCORIA_RECONCILE_INTERVAL_SECS", "1"),
            ("SCORIA_HEARTBEAT_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let source = full_source(&stack).await;
    let doomed: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(create(&stack, &format!("d{n}"), 1, None).await);
        }
        for id in &ids {
            stack
                .wait_status("p1", id, pb::VolumeStatus::Available)
                .await;
        }
        ids
    };

    let clone = create(&stack, "clone", 2, Some(&source)).await;
    wait_claimed(&stack, &clone).await;
    stack.kill_service("scoria-volume").await;
    let cut = stack
        .db
        .get_volume(&clone)
        .await
        .expect("get")
        .expect("clone row");
    assert_eq!(cut.status, VolumeStatus::Creating, "killed mid-copy");
    // Work that arrives while the service is down waits in its queue.
    let mut burst = Vec::new();
    for n in 0..5 {
        burst.push(create(&stack, &format!("b{n}"), 1, None).await);
    }
    for id in &doomed {
        stack
            .volumes("p1")
            .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("delete: {e:?}"));
    }

    stack.start_service("scoria-volume").await;
    let volumes = settled(&stack, Duration::from_secs(60)).await;

    for id in &doomed {
        assert!(
            volumes.iter().all(|v| &v.id != id),
            "deleted volume {id} is gone"
        );
    }
    for id in burst.iter().chain([&clone, &source]) {
        let v = volumes
            .iter()
            .find(|v| &v.id == id)
            .unwrap_or_else(|| panic!("volume {id} exists"));
        if v.status == VolumeStatus::Error {
            assert!(
                v.error_message.contains("did not finish"),
                "{id}: {}",
                v.error_message
            );
        }
    }
    assert_backend_matches(&stack, &volumes);
    for v in &volumes {
        assert_eq!(
            stack
                .db
                .get_worker(WorkerKind::Volume, &v.id)
                .await
                .expect("worker"),
            None,
            "settled volume {} keeps no worker entry",
            v.id
        );
    }
}

#[tokio::test]
async fn the_reaper_fails_the_work_of_a_volume_service_that_stays_down() {
    reaper_fails_orphaned_work(DbKind::Sqlite).await;
}

#[tokio::test]
async fn the_reaper_fails_orphaned_work_on_postgres() {
    reaper_fails_orphaned_work(DbKind::Postgres).await;
}

async fn reaper_fails_orphaned_work(kind: DbKind) {
    let mut stack = Stack::start_with(
        kind,
        &[
            ("SCORIA_OPERATION_DEADLINE_SECS", "2"),
            ("SCORIA_HEARTBEAT_INTERVAL_SECS", "1"),
            ("SCORIA_SERVICE_DOWN_TIME_SECS", "6"),
            ("SCORIA_REAPER_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let source = full_source(&stack).await;
    // Writing the source floods the disk, which can hold the volume service's
    // heartbeats back past the short down time: the clone is asked for only once
    // the service beats again, so the scheduler sees it up.
    stack
        .wait_heartbeat("scoria-volume", scoria_common::model::now_ms())
        .await;
    let clone = create(&stack, "clone", 2, Some(&source)).await;
    wait_claimed(&stack, &clone).await;
    stack.kill_service("scoria-volume").await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let v = stack
            .db
            .get_volume(&clone)
            .await
            .expect("get")
            .expect("row");
        if v.status != VolumeStatus::Creating {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the reaper never failed {clone}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.status, VolumeStatus::Error);
    assert!(
        failed
            .error_message
            .contains(&format!("its owner {} is down", stack.volume_host)),
        "{}",
        failed.error_message
    );
    let shown = stack.get_volume("p1", &clone).await.expect("get");
    assert_eq!(shown.status(), pb::VolumeStatus::Error);
    assert_eq!(
        stack
            .db
            .get_worker(WorkerKind::Volume, &clone)
            .await
            .expect("worker"),
        None
    );
}
