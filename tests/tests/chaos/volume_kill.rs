//! `kill -9` of the volume service with 30 creates in flight, then a restart:
//! casts are acked only after their handler finished, so the unfinished ones
//! are delivered again to the restarted service and every volume is made.

use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{DbKind, Stack};

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial, volumes};

const BURST: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn volume_service_killed_mid_burst_finishes_every_create_after_restart() {
    let _serial = serial().await;
    let mut stack = Stack::start_with(DbKind::Sqlite, CHAOS_ENV).await;
    enforce_quota(&stack).await;
    let api = Api::new(&stack);
    let burst: Vec<_> = (0..BURST)
        .map(|n| {
            let api = api.clone();
            tokio::spawn(async move { api.create(1, &request_id("kill", n)).await })
        })
        .collect();

    // Kill as soon as the service has finished its first volume: the rest are
    // in its hands, in its queue, or not even sent yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = volumes(&stack).await;
        if rows.iter().any(|v| v.status == VolumeStatus::Available) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no volume became available\n{}",
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stack.kill_service("scoria-volume").await;
    let at_kill = volumes(&stack).await;
    let done = at_kill
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
        .count();
    assert!(
        done < BURST,
        "all {BURST} creates had finished before the kill: nothing was in flight"
    );

    // The API does not need the volume service: every create is accepted.
    let mut ids = Vec::new();
    for task in burst {
        let created = task
            .await
            .expect("join")
            .unwrap_or_else(|s| panic!("create during the outage: {s:?}\n{}", stack.logs()));
        ids.push(created.id);
    }
    let rows = volumes(&stack).await;
    let unfinished = rows
        .iter()
        .filter(|v| v.status == VolumeStatus::Creating)
        .count();
    assert!(
        unfinished > 0,
        "no create was left to the restarted service"
    );
    eprintln!("killed with {done} of {BURST} available; {unfinished} left creating");
    stack.start_service("scoria-volume").await;
    assert_settled(&stack).await;
    // Nothing failed: every create ends available on the one backend.
    for id in &ids {
        let v = stack
            .db
            .get_volume(id)
            .await
            .expect("db")
            .unwrap_or_else(|| panic!("volume {id} vanished"));
        assert_eq!(
            v.status,
            VolumeStatus::Available,
            "volume {id}: {v:?}\n{}",
            stack.logs()
        );
        assert_eq!(v.host.as_deref(), Some(stack.volume_host.as_str()));
    }
    assert_eq!(volumes(&stack).await.len(), BURST);
}
