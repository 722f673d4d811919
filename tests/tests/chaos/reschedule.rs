//! A backend that fails every create, next to a healthy one: each create is
//! tried on the failing backend first (it reports far more free space), fails
//! there, goes back to the scheduler with that pool in its tried list, and ends
//! available on the healthy backend, leaving nothing on the failing one.
//!
//! The failing backend is real: a second `scoria-volume` on the `qcow2` driver
//! whose `qemu-img` (found through `PATH`, as an operator's broken install
//! would be) is `/bin/false`. No test-only code path in the service.

use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{DbKind, Stack};

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial, volumes};

const CREATES: usize = 6;

#[tokio::test(flavor = "multi_thread")]
async fn creates_failing_on_one_backend_are_rescheduled_to_the_healthy_one() {
    let _serial = serial().await;
    let mut stack = Stack::start_with(DbKind::Sqlite, CHAOS_ENV).await;
    enforce_quota(&stack).await;
    let bin = stack.dir.path().join("broken-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink("/bin/false", bin.join("qemu-img")).expect("symlink");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let broken = stack
        .start_volume_service(
            "broken",
            &[
                ("SCORIA_VOLUME_DRIVER", "qcow2"),
                ("SCORIA_VOLUME_CAPACITY_GIB", "100000"),
                ("PATH", &path),
            ],
        )
        .await;
    // A scheduler (re)started now waits for both backends' reports before it
    // takes work, so the first attempt of every create sees the failing one.
    stack.stop_service("scoria-scheduler").await;
    stack.start_service("scoria-scheduler").await;

    let api = Api::new(&stack);
    let mut ids = Vec::new();
    for n in 0..CREATES {
        let created = api
            .create(1, &request_id("resched", n))
            .await
            .unwrap_or_else(|s| panic!("create: {s:?}\n{}", stack.logs()));
        ids.push(created.id);
    }
    assert_settled(&stack).await;

    let rows = volumes(&stack).await;
    assert_eq!(rows.len(), CREATES);
    let scheduler_log = read_log(&stack, "scoria-scheduler");
    let broken_log = read_log(&stack, "scoria-volume@broken");
    for v in rows {
        assert!(ids.contains(&v.id));
        assert_eq!(v.status, VolumeStatus::Available, "{v:?}\n{}", stack.logs());
        assert_eq!(
            v.host.as_deref(),
            Some(stack.volume_host.as_str()),
            "not on the healthy backend: {v:?}"
        );
        // Placed on the failing backend first (attempt 1), which failed it.
        let tried_broken = scheduler_log.lines().any(|l| {
            l.contains(&v.id)
                && l.contains("volume scheduled")
                && l.contains("attempt=1")
                && l.contains(&format!("{broken}#"))
        });
        assert!(
            tried_broken,
            "volume {} was never scheduled to {broken} first:\n{scheduler_log}",
            v.id
        );
        let failed_there = broken_log
            .lines()
            .any(|l| l.contains(&v.id) && l.contains("backend failed to create the volume"));
        assert!(
            failed_there,
            "{broken} did not fail volume {}:\n{broken_log}",
            v.id
        );
        let rescheduled = scheduler_log.lines().any(|l| {
            l.contains(&v.id)
                && l.contains("volume scheduled")
                && l.contains("attempt=2")
                && l.contains(&format!("{}#", stack.volume_host))
        });
        assert!(
            rescheduled,
            "volume {} was not rescheduled to {}:\n{scheduler_log}",
            v.id, stack.volume_host
        );
    }
}

/// The log of process `name`, without its colours.
fn read_log(stack: &Stack, name: &str) -> String {
    let text = std::fs::read_to_string(stack.log_path(name)).expect("log");
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
