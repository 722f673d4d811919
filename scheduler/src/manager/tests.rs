//! Unit tests of the manager: a real SQLite database in a temp dir, the
//! recording volume services of `scoria_common::testing`.

use std::{collections::BTreeMap, time::Duration};

use scoria_common::{
    db::{WorkerEntry, WorkerKind},
    model::Volume,
    testing::{RecordingNotifier, RecordingVolumes, TempDb},
};

use super::*;
use crate::host_state::tests::{report, service};

mod events;

struct Fixture {
    db: TempDb,
    notifier: Arc<RecordingNotifier>,
    hosts: Arc<HostManager>,
    caster: Arc<RecordingVolumes>,
    manager: SchedulerManager,
}

async fn fixture(unreachable: &[&str], settings: SchedulerSection) -> Fixture {
    let db = TempDb::new().await;
    let hosts = Arc::new(HostManager::new(
        settings.capability_stale(),
        settings.service_down_time(),
    ));
    let caster = Arc::new(RecordingVolumes::default());
    for host in unreachable {
        caster.set_host_unreachable(host, true);
    }
    let notifier = Arc::new(RecordingNotifier::default());
    let settler = Settler::new(db.db().clone(), notifier.clone());
    let manager =
        SchedulerManager::new(&settings, hosts.clone(), caster.clone(), settler).expect("manager");
    Fixture {
        db,
        notifier,
        hosts,
        caster,
        manager,
    }
}

impl Fixture {
    /// Registers live volume services with one pool each: `(host, total, free)`.
    fn backends(&self, backends: &[(&str, f64, f64)]) {
        let now = now_ms();
        let services: Vec<_> = backends
            .iter()
            .map(|(host, ..)| service(host, now, false))
            .collect();
        self.hosts.set_services(&services);
        for (host, total, free) in backends {
            self.hosts
                .update(&report(host, now, &[("pool", *total, *free)]), now);
        }
    }

    async fn creating_volume(&self, size_gib: u64) -> String {
        let id = format!("vol-{}", self.db.count_volumes("p").await.expect("count"));
        let volume = Volume {
            migration_status: Default::default(),
            migration_error: String::new(),
            id: id.clone(),
            project_id: "p".into(),
            user_id: "u".into(),
            name: String::new(),
            description: String::new(),
            size_gib,
            status: VolumeStatus::Creating,
            volume_type: String::new(),
            availability_zone: String::new(),
            host: None,
            metadata: BTreeMap::new(),
            error_message: String::new(),
            snapshot_id: None,
            source_volume_id: None,
            created_at_ms: now_ms(),
            updated_at_ms: now_ms(),
        };
        let worker = WorkerEntry {
            kind: WorkerKind::Volume,
            resource_id: id.clone(),
            status: "creating".into(),
            service: scoria_common::service::SCHEDULER_OWNER.into(),
            deadline_ms: now_ms() + 60_000,
        };
        self.db
            .create_volume(&volume, None, &worker)
            .await
            .expect("insert");
        id
    }

    async fn volume(&self, id: &str) -> Volume {
        self.db.get_volume(id).await.expect("get").expect("exists")
    }

    async fn schedule(&self, request: ScheduleCreateVolume) {
        let ctx = RequestContext::internal("test");
        self.manager
            .create_volume(&ctx, request)
            .await
            .expect("handled");
    }
}

fn request(volume_id: &str, size_gib: u64) -> ScheduleCreateVolume {
    ScheduleCreateVolume {
        volume_id: volume_id.into(),
        size_gib,
        attempt: 1,
        ..ScheduleCreateVolume::default()
    }
}

#[tokio::test]
async fn casts_to_the_emptiest_pool_and_consumes_virtually() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 40.0), ("b@file", 100.0, 50.0)]);
    let mut r = request("v1", 20);
    r.volume_type = "gold".into();
    r.extra_specs
        .insert("volume_backend_name".into(), "file".into());
    f.schedule(r).await;
    f.schedule(request("v2", 20)).await;

    let casts = f.caster.creates();
    assert_eq!(casts.len(), 2);
    let (host, cast) = &casts[0];
    assert_eq!(host, "b@file");
    assert_eq!(cast.pool, "b@file#pool");
    assert_eq!(cast.tried_hosts, ["b@file#pool"]);
    assert_eq!(cast.attempt, 1);
    assert_eq!(cast.volume_type, "gold");
    assert_eq!(
        cast.availability_zone, "default",
        "the pool's zone when none was asked"
    );
    assert_eq!(
        cast.extra_specs
            .get("volume_backend_name")
            .map(String::as_str),
        Some("file")
    );
    // b had 50 free, now 30 virtually: the second goes to a (40).
    assert_eq!(casts[1].0, "a@file");
    assert_eq!(f.hosts.pool("b@file#pool").expect("pool").consumed_gib, 20);
}

#[tokio::test]
async fn a_clone_goes_to_its_source_host_with_its_source() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 90.0), ("b@file", 100.0, 10.0)]);
    let mut r = request("v1", 5);
    r.source_volume_id = "src".into();
    r.required_host = "b@file".into();
    f.schedule(r).await;
    let casts = f.caster.creates();
    assert_eq!(casts.len(), 1);
    assert_eq!(casts[0].0, "b@file", "the emptier pool holds no source");
    assert_eq!(
        (
            casts[0].1.source_volume_id.as_str(),
            casts[0].1.snapshot_id.as_str()
        ),
        ("src", "")
    );

    // The source's host is gone: no valid backend, saying why.
    let id = f.creating_volume(5).await;
    let mut r = request(&id, 5);
    r.source_volume_id = "src".into();
    r.required_host = "c@file".into();
    f.schedule(r).await;
    let v = f.volume(&id).await;
    assert_eq!(v.status, VolumeStatus::Error);
    assert!(
        v.error_message.contains("RequiredHostFilter removed 2"),
        "{}",
        v.error_message
    );
}

#[tokio::test]
async fn no_valid_backend_sets_error_with_the_elimination_report() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 5.0), ("b@file", 100.0, 8.0)]);
    let id = f.creating_volume(10).await;
    let mut r = request(&id, 10);
    r.attempt = 2;
    r.last_error = "disk on fire".into();
    r.tried_hosts = vec!["c@file#pool".into()];
    f.schedule(r).await;

    assert!(f.caster.creates().is_empty());
    let v = f.volume(&id).await;
    assert_eq!(v.status, VolumeStatus::Error);
    assert_eq!(
        v.error_message,
        "No valid backend was found: 2 hosts known; AvailabilityZoneFilter removed 0, CapacityFilter removed 2; \
         last error: disk on fire"
    );
    assert!(
        f.db.get_worker(WorkerKind::Volume, &id)
            .await
            .expect("worker")
            .is_none(),
        "settled: no worker entry"
    );
}

#[tokio::test]
async fn no_hosts_at_all() {
    let f = fixture(&[], SchedulerSection::default()).await;
    let id = f.creating_volume(1).await;
    f.schedule(request(&id, 1)).await;
    assert_eq!(
        f.volume(&id).await.error_message,
        "No valid backend was found: 0 hosts known"
    );
}

#[tokio::test]
async fn too_many_attempts_fails_at_once() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 100.0)]);
    let id = f.creating_volume(1).await;
    let mut r = request(&id, 1);
    r.attempt = 4;
    r.last_error = "driver said no".into();
    f.schedule(r).await;
    assert!(f.caster.creates().is_empty());
    let v = f.volume(&id).await;
    assert_eq!(v.status, VolumeStatus::Error);
    assert!(
        v.error_message
            .contains("maximum number of scheduling attempts (3)"),
        "{}",
        v.error_message
    );
    assert!(
        v.error_message.ends_with("last error: driver said no"),
        "{}",
        v.error_message
    );
}

#[tokio::test]
async fn undeliverable_cast_moves_to_the_next_best() {
    let f = fixture(&["b@file"], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 40.0), ("b@file", 100.0, 50.0)]);
    f.schedule(request("v1", 10)).await;
    let casts = f.caster.creates();
    assert_eq!(
        casts.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["b@file", "a@file"]
    );
    assert_eq!(casts[1].1.tried_hosts, ["b@file#pool", "a@file#pool"]);
    assert_eq!(
        f.hosts.pool("b@file#pool").expect("pool").consumed_gib,
        0,
        "released"
    );
    assert_eq!(f.hosts.pool("a@file#pool").expect("pool").consumed_gib, 10);
}

#[tokio::test]
async fn all_casts_undeliverable_errors_the_volume() {
    let f = fixture(&["a@file", "b@file"], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 40.0), ("b@file", 100.0, 50.0)]);
    let id = f.creating_volume(10).await;
    f.schedule(request(&id, 10)).await;
    assert_eq!(f.caster.creates().len(), 2);
    let v = f.volume(&id).await;
    assert_eq!(v.status, VolumeStatus::Error);
    assert!(
        v.error_message
            .starts_with("No valid backend was found: 2 hosts known;"),
        "{}",
        v.error_message
    );
    assert!(
        v.error_message.contains("RetryFilter removed 2"),
        "{}",
        v.error_message
    );
    assert!(
        v.error_message.contains("could not reach b@file#pool"),
        "{}",
        v.error_message
    );
}

#[tokio::test]
async fn casts_are_bounded_by_max_attempts() {
    let settings = SchedulerSection {
        max_attempts: 2,
        ..SchedulerSection::default()
    };
    let f = fixture(&["a@file", "b@file", "c@file"], settings).await;
    f.backends(&[
        ("a@file", 100.0, 40.0),
        ("b@file", 100.0, 50.0),
        ("c@file", 100.0, 60.0),
    ]);
    let id = f.creating_volume(1).await;
    f.schedule(request(&id, 1)).await;
    assert_eq!(f.caster.creates().len(), 2);
    let v = f.volume(&id).await;
    assert!(
        v.error_message
            .starts_with("No valid backend was found: could not reach c@file#pool"),
        "{}",
        v.error_message
    );
}

#[tokio::test]
async fn retry_skips_tried_pools() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 40.0), ("b@file", 100.0, 50.0)]);
    let mut r = request("v1", 1);
    r.attempt = 2;
    r.tried_hosts = vec!["b@file#pool".into()];
    f.schedule(r).await;
    let casts = f.caster.creates();
    assert_eq!(casts[0].0, "a@file");
    assert_eq!(casts[0].1.tried_hosts, ["b@file#pool", "a@file#pool"]);
    assert_eq!(casts[0].1.attempt, 2);
}

#[tokio::test]
async fn volume_no_longer_creating_is_left_alone() {
    let f = fixture(&[], SchedulerSection::default()).await;
    let id = f.creating_volume(1).await;
    f.db.transition_volume(
        &id,
        &[VolumeStatus::Creating],
        VolumeStatus::Deleting,
        None,
        None,
    )
    .await
    .expect("cas");
    f.schedule(request(&id, 1)).await;
    assert_eq!(f.volume(&id).await.status, VolumeStatus::Deleting);
}

#[tokio::test]
async fn reports_from_unknown_services_ask_for_a_refresh() {
    let f = fixture(&[], SchedulerSection::default()).await;
    let notify = f.manager.services_changed();
    let ctx = RequestContext::internal("test");
    f.manager
        .update_service_capabilities(&ctx, report("new@file", now_ms(), &[("p", 1.0, 1.0)]))
        .await
        .expect("ok");
    tokio::time::timeout(Duration::from_secs(1), notify.notified())
        .await
        .expect("notified");
    assert!(f.hosts.pool("new@file#p").is_some());
    // Known now: no notification.
    f.hosts
        .set_services(&[service("new@file", now_ms(), false)]);
    f.manager
        .update_service_capabilities(&ctx, report("new@file", now_ms(), &[("p", 1.0, 1.0)]))
        .await
        .expect("ok");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), notify.notified())
            .await
            .is_err()
    );
    // A report without a host is ignored.
    f.manager
        .update_service_capabilities(&ctx, Capabilities::default())
        .await
        .expect("ignored");
    assert_eq!(f.hosts.len(), 1);
}

#[tokio::test]
async fn get_pools_answers_the_scheduler_view_with_the_host_filter() {
    let f = fixture(&[], SchedulerSection::default()).await;
    f.backends(&[("a@file", 100.0, 40.0), ("b@file", 100.0, 50.0)]);
    f.schedule(request("v1", 20)).await;
    let ctx = RequestContext::internal("test");

    let all = f
        .manager
        .get_pools(&ctx, GetPools::default())
        .await
        .expect("pools")
        .pools;
    let figures: Vec<(&str, f64, f64)> = all
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.free_capacity_gib,
                p.allocated_capacity_gib,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [("a@file#pool", 40.0, 60.0), ("b@file#pool", 30.0, 70.0)],
        "b took the 20 GiB volume"
    );

    let only_a = f
        .manager
        .get_pools(
            &ctx,
            GetPools {
                host: "a@file".into(),
            },
        )
        .await
        .expect("pools")
        .pools;
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0].host, "a@file");
    let none = f
        .manager
        .get_pools(
            &ctx,
            GetPools {
                host: "c@file".into(),
            },
        )
        .await
        .expect("pools")
        .pools;
    assert!(none.is_empty(), "an unknown host lists nothing");
}
