//! Unit tests of the host state: reports, virtual consumption, liveness.

use super::*;
use scoria_common::translation::timestamp;

/// A report of `host` with one pool per `(name, total, free)`.
pub(crate) fn report(host: &str, at_ms: i64, pools: &[(&str, f64, f64)]) -> Capabilities {
    Capabilities {
        host: host.to_owned(),
        backend_name: host.split('@').nth(1).unwrap_or("file").to_owned(),
        availability_zone: "default".to_owned(),
        driver: "file".to_owned(),
        pools: pools
            .iter()
            .map(|(name, total, free)| Pool {
                name: (*name).to_owned(),
                total_capacity_gib: *total,
                free_capacity_gib: *free,
                allocated_capacity_gib: total - free,
                thick_provisioning_support: true,
                ..Pool::default()
            })
            .collect(),
        reported_at: Some(timestamp(at_ms)),
    }
}

pub(crate) fn service(host: &str, heartbeat_ms: i64, disabled: bool) -> Service {
    Service {
        binary: VOLUME_BINARY.to_owned(),
        host: host.to_owned(),
        availability_zone: "default".to_owned(),
        disabled,
        disabled_reason: String::new(),
        last_heartbeat_ms: heartbeat_ms,
        cluster: String::new(),
    }
}

fn manager() -> HostManager {
    HostManager::new(Duration::from_secs(180), Duration::from_secs(60))
}

fn usable_keys(hosts: &HostManager, now: i64) -> Vec<String> {
    hosts
        .choose(now, 0, |usable, _| {
            Err(usable
                .iter()
                .map(|p| p.pool_key.clone())
                .collect::<Vec<_>>())
        })
        .expect_err("listing only")
}

#[test]
fn report_builds_pool_states_with_capabilities() {
    let hosts = manager();
    let mut r = report("n1@file", 1_000, &[("p1", 100.0, 60.0)]);
    r.pools[0]
        .capabilities
        .insert("multiattach".into(), "True".into());
    assert_eq!(
        hosts.update(&r, 2_000),
        ReportOutcome::Applied {
            known_service: false
        }
    );
    let p = hosts.pool("n1@file#p1").expect("pool");
    assert_eq!(p.host, "n1@file");
    assert_eq!(p.total_capacity, Capacity::Known(100.0));
    assert_eq!(p.free_capacity, Capacity::Known(60.0));
    assert_eq!(p.allocated_capacity_gib, 40.0);
    assert_eq!(p.reported_at_ms, 1_000);
    assert_eq!(p.received_at_ms, 2_000);
    assert_eq!(
        p.max_over_subscription_ratio, 1.0,
        "0 on the wire means not reported"
    );
    for (k, v) in [
        ("multiattach", "True"),
        ("volume_backend_name", "file"),
        ("driver", "file"),
        ("availability_zone", "default"),
    ] {
        assert_eq!(p.capabilities.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn capacity_from_wire() {
    assert_eq!(Capacity::from_report(5.0), Capacity::Known(5.0));
    assert_eq!(Capacity::from_report(f64::INFINITY), Capacity::Infinite);
    assert_eq!(Capacity::from_report(-1.0), Capacity::Unknown);
    assert_eq!(Capacity::from_report(f64::NAN), Capacity::Unknown);
}

#[test]
fn virtual_consumption_until_next_report() {
    let hosts = manager();
    hosts.set_services(&[service("n1@file", 10_000, false)]);
    hosts.update(&report("n1@file", 1_000, &[("p1", 100.0, 60.0)]), 10_000);
    let chosen = hosts
        .choose(10_000, 10, |usable, _| usable.first().copied().ok_or(()))
        .expect("chosen");
    assert_eq!(chosen.host, "n1@file");
    let p = hosts.pool("n1@file#p1").expect("pool");
    assert_eq!(
        (p.free_capacity, p.allocated_capacity_gib, p.consumed_gib),
        (Capacity::Known(50.0), 50.0, 10)
    );

    // Released: back as it was.
    hosts.release(&chosen);
    let p = hosts.pool("n1@file#p1").expect("pool");
    assert_eq!(
        (p.free_capacity, p.consumed_gib),
        (Capacity::Known(60.0), 0)
    );

    // Consumed again, then a new report replaces the counter.
    let chosen = hosts
        .choose(10_000, 25, |usable, _| usable.first().copied().ok_or(()))
        .expect("chosen");
    hosts.update(&report("n1@file", 2_000, &[("p1", 100.0, 58.0)]), 11_000);
    let p = hosts.pool("n1@file#p1").expect("pool");
    assert_eq!(
        (p.free_capacity, p.consumed_gib),
        (Capacity::Known(58.0), 0)
    );
    // A release of the old report's consumption does not touch the new one.
    hosts.release(&chosen);
    assert_eq!(
        hosts.pool("n1@file#p1").expect("pool").free_capacity,
        Capacity::Known(58.0)
    );
}

#[test]
fn thin_pools_consume_provisioned_space_not_free_space() {
    let mut r = report("n1@file", 1, &[("p1", 100.0, 40.0)]);
    r.pools[0].thin_provisioning_support = true;
    r.pools[0].allocated_capacity_gib = 10.0;
    let mut p = HostState::from_report(&r, &r.pools[0], 1, 1);
    p.consume(30);
    assert_eq!(
        (p.free_capacity, p.allocated_capacity_gib),
        (Capacity::Known(40.0), 40.0)
    );
    p.release(30);
    assert_eq!(p.allocated_capacity_gib, 10.0);
}

#[test]
fn unknown_free_is_not_consumed() {
    let mut r = report("n1@file", 1, &[("p1", 100.0, -1.0)]);
    r.pools[0].allocated_capacity_gib = 0.0;
    let mut p = HostState::from_report(&r, &r.pools[0], 1, 1);
    p.consume(5);
    assert_eq!(
        (p.free_capacity, p.allocated_capacity_gib),
        (Capacity::Unknown, 5.0)
    );
}

#[test]
fn report_replaces_all_pools_of_its_host_and_older_reports_are_ignored() {
    let hosts = manager();
    hosts.update(
        &report("n1@file", 5_000, &[("a", 10.0, 10.0), ("b", 10.0, 10.0)]),
        5_000,
    );
    hosts.update(&report("n2@file", 5_000, &[("a", 10.0, 10.0)]), 5_000);
    hosts.update(&report("n1@file", 6_000, &[("b", 10.0, 9.0)]), 6_000);
    assert!(hosts.pool("n1@file#a").is_none());
    assert!(hosts.pool("n2@file#a").is_some());
    assert_eq!(
        hosts.update(&report("n1@file", 5_500, &[("c", 1.0, 1.0)]), 7_000),
        ReportOutcome::Outdated
    );
    assert!(hosts.pool("n1@file#c").is_none());
    assert_eq!(hosts.len(), 2);
}

#[test]
fn stale_reports_and_down_or_disabled_services_are_not_usable() {
    let hosts = HostManager::new(Duration::from_secs(180), Duration::from_secs(60));
    let now = 1_000_000;
    hosts.set_services(&[
        service("up@file", now - 1_000, false),
        service("down@file", now - 61_000, false),
        service("off@file", now, true),
        service("stale@file", now, false),
    ]);
    for host in ["up@file", "down@file", "off@file", "unregistered@file"] {
        hosts.update(&report(host, now, &[("p", 10.0, 10.0)]), now);
    }
    hosts.update(
        &report("stale@file", now - 181_000, &[("p", 10.0, 10.0)]),
        now - 181_000,
    );
    assert_eq!(usable_keys(&hosts, now), ["up@file#p"]);
    let skipped = hosts
        .choose(now, 0, |_, skipped| Err(skipped))
        .expect_err("count");
    assert_eq!(skipped, 4);
    assert_eq!(hosts.live_services(now), ["stale@file", "up@file"]);
    assert!(hosts.has_reports_from(&["up@file".into(), "stale@file".into()]));
    assert!(!hosts.has_reports_from(&["nobody@file".into()]));

    assert_eq!(hosts.prune(now), 1, "only the stale report is dropped");
    assert!(hosts.pool("stale@file#p").is_none());
    assert!(!hosts.has_reports_from(&["stale@file".into()]));
    // A fresh report brings it back.
    hosts.update(&report("stale@file", now, &[("p", 10.0, 10.0)]), now);
    assert_eq!(usable_keys(&hosts, now), ["stale@file#p", "up@file#p"]);
}

#[test]
fn reserved_gib_is_floored() {
    let mut r = report("n1@file", 1, &[("p", 99.0, 50.0)]);
    r.pools[0].reserved_percentage = 10;
    let p = HostState::from_report(&r, &r.pools[0], 1, 1);
    assert_eq!(p.reserved_gib(), Some(9.0));
}

#[test]
fn pools_lists_every_fresh_pool_whatever_its_service_state() {
    let hosts = manager();
    let now = 1_000_000;
    hosts.set_services(&[
        service("up@file", now, false),
        service("down@file", now - 61_000, false),
        service("off@file", now, true),
    ]);
    for host in ["up@file", "down@file", "off@file", "unregistered@file"] {
        hosts.update(&report(host, now, &[("p", 10.0, 10.0)]), now);
    }
    hosts.update(
        &report("stale@file", now - 181_000, &[("p", 10.0, 10.0)]),
        now - 181_000,
    );
    let keys = |host: &str| -> Vec<String> {
        hosts
            .pools(host, now)
            .into_iter()
            .map(|p| p.pool_key)
            .collect()
    };
    assert_eq!(
        keys(""),
        [
            "down@file#p",
            "off@file#p",
            "unregistered@file#p",
            "up@file#p"
        ],
        "stale reports are left out before the prune"
    );
    assert_eq!(keys("off@file"), ["off@file#p"]);
    assert!(keys("stale@file").is_empty());
    assert!(keys("nobody@file").is_empty());
    assert!(keys("up").is_empty(), "the host filter is exact");
}

#[test]
fn storage_pool_shows_virtual_consumption_and_the_pools_own_capabilities() {
    let hosts = manager();
    hosts.set_services(&[service("n1@file", 10_000, false)]);
    let mut r = report("n1@file", 9_000, &[("p1", 100.0, 60.0)]);
    r.pools[0].reserved_percentage = 5;
    r.pools[0]
        .capabilities
        .insert("multiattach".into(), "True".into());
    hosts.update(&r, 10_000);
    hosts
        .choose(10_000, 10, |usable, _| usable.first().copied().ok_or(()))
        .expect("chosen");
    let pools = hosts.pools("", 10_000);
    assert_eq!(pools.len(), 1);
    let pool = pools[0].to_storage_pool();
    assert_eq!(pool.name, "n1@file#p1");
    assert_eq!(pool.host, "n1@file");
    assert_eq!(pool.backend_name, "file");
    assert_eq!(pool.availability_zone, "default");
    assert_eq!(pool.driver, "file");
    assert_eq!(pool.total_capacity_gib, 100.0);
    assert_eq!(pool.free_capacity_gib, 50.0, "60 reported less 10 consumed");
    assert_eq!(pool.allocated_capacity_gib, 50.0, "40 reported plus 10");
    assert_eq!(pool.reserved_percentage, 5);
    assert!(pool.thick_provisioning_support);
    assert!(!pool.thin_provisioning_support);
    assert_eq!(pool.max_over_subscription_ratio, 1.0);
    assert_eq!(
        pool.capabilities.into_iter().collect::<Vec<_>>(),
        [("multiattach".to_owned(), "True".to_owned())],
        "the figures are fields, not capabilities"
    );
    assert_eq!(pool.updated_at, Some(timestamp(9_000)));

    let mut r = report("n2@file", 1, &[("p", f64::INFINITY, -1.0)]);
    r.pools[0].allocated_capacity_gib = 0.0;
    let p = HostState::from_report(&r, &r.pools[0], 1, 1).to_storage_pool();
    assert_eq!(
        (p.total_capacity_gib, p.free_capacity_gib),
        (f64::INFINITY, -1.0)
    );
}

#[test]
fn a_cluster_is_one_pool_usable_while_one_member_is_up_and_enabled() {
    let hosts = manager();
    let now = 1_000_000;
    let member = |host: &str, beat: i64, disabled: bool| Service {
        cluster: "shared@file".to_owned(),
        ..service(host, beat, disabled)
    };
    hosts.set_services(&[
        member("a@file", now - 61_000, false),
        member("b@file", now - 1_000, false),
    ]);
    // Both members report the cluster's one pool; the second report replaces the first.
    hosts.update(
        &report("shared@file", now - 10, &[("file", 10.0, 10.0)]),
        now,
    );
    hosts.update(&report("shared@file", now, &[("file", 10.0, 9.0)]), now);
    assert_eq!(usable_keys(&hosts, now), ["shared@file#file"]);
    assert_eq!(
        hosts.live_services(now),
        ["shared@file"],
        "the cluster, not its members"
    );
    assert!(hosts.has_reports_from(&hosts.live_services(now)));

    // One member disabled, the other up: still usable.
    hosts.set_services(&[
        member("a@file", now, true),
        member("b@file", now - 1_000, false),
    ]);
    assert_eq!(usable_keys(&hosts, now), ["shared@file#file"]);
    // Every member down (or disabled): not usable.
    hosts.set_services(&[
        member("a@file", now, true),
        member("b@file", now - 61_000, false),
    ]);
    assert!(usable_keys(&hosts, now).is_empty());
    hosts.set_services(&[member("a@file", now, true), member("b@file", now, true)]);
    assert!(usable_keys(&hosts, now).is_empty());
}
