//! Hundreds of creates of one project at once against a volume limit: exactly
//! the limit gets through, the rest is refused with a QuotaFailure, on one API
//! over SQLite and on two APIs sharing PostgreSQL.

use std::time::Instant;

use scoria_tests::stack::{Caller, Clients, DbKind, Stack, channel};
use tonic::Code;

use super::{assert_over_quota, dimension, try_create};
use crate::support::{pb, sized};

/// How many creates race.
const CREATES: usize = 200;
/// The volume limit they race for.
const LIMIT: i64 = 50;

/// Sends [`CREATES`] CreateVolume (1 GiB) of project `project` at once, the
/// i-th through `apis[i % apis.len()]`, and checks that exactly [`LIMIT`] got
/// through and every other one is a quota refusal naming `volumes`; then waits
/// for the volumes, and checks what the user sees of them and the quota.
async fn race_for_the_limit(stack: &Stack, project: &str, apis: &[Clients]) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CREATES {
        let clients = apis[i % apis.len()].clone();
        tasks.spawn(async move {
            let request = pb::CreateVolumeRequest {
                name: format!("race-{i}"),
                ..sized(1)
            };
            // As a client does: UNAVAILABLE (a pool that stayed busy for its
            // acquire timeout on a loaded machine) wrote nothing and is retried.
            let mut attempt = 1;
            loop {
                match try_create(&clients, request.clone()).await {
                    Err(err) if err.code() == Code::Unavailable && attempt < 5 => {
                        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                        attempt += 1;
                    }
                    outcome => break outcome,
                }
            }
        });
    }
    let mut created = Vec::new();
    let mut refused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("create task") {
            Ok(volume) => created.push(volume.id),
            Err(err) if err.code() == Code::ResourceExhausted => {
                let violation = assert_over_quota(&err, project, "volumes");
                assert_eq!(violation.quota_value, LIMIT, "{violation:?}");
                assert_eq!(dimension(&violation, "requested"), 1, "{violation:?}");
                assert_eq!(
                    dimension(&violation, "in_use") + dimension(&violation, "reserved"),
                    LIMIT,
                    "a refusal saw the project short of its limit: {violation:?}"
                );
                refused += 1;
            }
            Err(err) => panic!("create failed otherwise: {err:?}\n{}", stack.logs()),
        }
    }
    eprintln!(
        "{CREATES} creates through {} API(s) answered in {:?}",
        apis.len(),
        started.elapsed()
    );
    assert_eq!(created.len(), LIMIT as usize, "creates that got through");
    assert_eq!(refused, CREATES - LIMIT as usize, "creates refused");

    // While some may still be creating: reserved and in use add up to the limit.
    let (in_use, reserved, limit) = stack.quota_usage(project, "volumes").await;
    assert_eq!(limit, LIMIT);
    assert_eq!(
        in_use + reserved,
        LIMIT,
        "in use {in_use}, reserved {reserved}"
    );
    assert_eq!(
        stack.db.count_volumes(project).await.expect("count"),
        LIMIT,
        "volume rows"
    );
    for id in &created {
        stack
            .wait_status(project, id, pb::VolumeStatus::Available)
            .await;
    }

    // What the member sees: the volumes, and its own quota full.
    let listed = apis[0]
        .volumes()
        .list_volumes(pb::ListVolumesRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.volumes.len(), LIMIT as usize, "listed volumes");
    assert!(
        listed.next_page_token.is_empty(),
        "{}",
        listed.next_page_token
    );
    for api in apis {
        let quota = api
            .quotas()
            .get_quota(pb::GetQuotaRequest::default())
            .await
            .expect("own quota")
            .into_inner();
        assert_eq!(quota.project_id, project);
        let volumes = quota
            .usages
            .iter()
            .find(|u| u.resource == "volumes")
            .unwrap_or_else(|| panic!("no volumes in {quota:?}"));
        assert_eq!(
            (volumes.in_use, volumes.reserved, volumes.limit),
            (LIMIT, 0, LIMIT),
            "{volumes:?}"
        );
        let gigabytes = quota
            .usages
            .iter()
            .find(|u| u.resource == "gigabytes")
            .unwrap_or_else(|| panic!("no gigabytes in {quota:?}"));
        assert_eq!((gigabytes.in_use, gigabytes.reserved), (LIMIT, 0));
    }
    // Still full: one more is refused by either API.
    for api in apis {
        let err = try_create(api, sized(1)).await.expect_err("over the limit");
        assert_over_quota(&err, project, "volumes");
    }
    stack.assert_quota_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_stop_exactly_at_the_volume_limit_on_sqlite() {
    let limit = LIMIT.to_string();
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_QUOTA_VOLUMES", &limit)]).await;
    race_for_the_limit(&stack, "p1", &[stack.as_member("p1")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_on_postgres_together_stop_exactly_at_the_volume_limit() {
    let mut stack = Stack::start(DbKind::Postgres).await;
    // A per-project limit set through one API binds the other as well.
    stack.set_quota("p1", &[("volumes", LIMIT)]).await;
    let second = stack.start_api_instance("2").await;
    let apis = [
        stack.as_member("p1"),
        Clients::new(channel(&second), Caller::member("p1")),
    ];
    race_for_the_limit(&stack, "p1", &apis).await;
}
