//! The scheduler down while creates arrive, then up. The API casts a create to
//! the `scheduler` topic; its durable queue outlives the scheduler (and is
//! declared before the scheduler's start-up wait), so the cast is routed and
//! confirmed: the API accepts every create (CREATING), they wait in the queue,
//! and the scheduler places them all once it is back.

use std::time::Duration;

use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{DbKind, Stack};

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial, volumes};

const CREATES: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn creates_wait_in_the_queue_while_the_scheduler_is_down() {
    let _serial = serial().await;
    let mut stack = Stack::start_with(DbKind::Sqlite, CHAOS_ENV).await;
    enforce_quota(&stack).await;
    let api = Api::new(&stack);
    let code = stack.stop_service("scoria-scheduler").await;
    assert_eq!(
        code,
        Some(0),
        "the scheduler did not drain and exit cleanly"
    );

    let mut ids = Vec::new();
    for n in 0..CREATES {
        let created = api
            .create(1, &request_id("nosched", n))
            .await
            .unwrap_or_else(|s| panic!("create with the scheduler down: {s:?}\n{}", stack.logs()));
        assert_eq!(created.status(), scoria_proto::v1::VolumeStatus::Creating);
        ids.push(created.id);
    }
    // Nobody places them meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for v in volumes(&stack).await {
        assert_eq!(v.status, VolumeStatus::Creating, "{v:?}");
        assert!(
            v.host.as_deref().unwrap_or_default().is_empty(),
            "placed without a scheduler: {v:?}"
        );
    }

    stack.start_service("scoria-scheduler").await;
    assert_settled(&stack).await;
    let rows = volumes(&stack).await;
    assert_eq!(rows.len(), CREATES);
    for v in rows {
        assert!(ids.contains(&v.id));
        assert_eq!(v.status, VolumeStatus::Available, "{v:?}\n{}", stack.logs());
        assert_eq!(v.host.as_deref(), Some(stack.volume_host.as_str()));
    }
}
