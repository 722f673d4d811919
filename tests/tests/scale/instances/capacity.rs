//! Two schedulers racing for the last space of a backend: each consumes a
//! backend's space only in its own view until the next capability report, so
//! together they place more on the roomiest backend than it holds. The volume
//! service refuses the creates it has no space for; those are rescheduled to
//! another backend (or end in error saying so), and no backend ever holds more
//! than its capacity.

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{Fleet, FleetOptions, SCHEDULERS, VOLUME_SERVICES};

use super::{assert_settled, create, request_id};

const PROJECT: &str = "capacity";
/// The volume services' default over-subscription ratio: what a thin backend
/// may provision is its capacity times this.
const RATIO: u64 = 20;
/// The capacities: 40, 20 and 20 GiB provisionable.
const CAPACITIES: [u64; 3] = [2, 1, 1];
/// Every create's size: 8, 4 and 4 fit.
const SIZE: u64 = 5;
/// As many creates as fit in all three together.
const CREATES: usize = 16;
/// What a volume service logs when it refuses a create.
const REFUSED: &str = "no space for the volume: refused";

#[tokio::test(flavor = "multi_thread")]
async fn schedulers_racing_for_the_last_space_never_overfill_a_backend() {
    let fleet = Fleet::start(FleetOptions {
        capacities_gib: CAPACITIES,
        // No fresh report during the burst: each scheduler keeps its own view.
        env: vec![("SCORIA_VOLUME_REPORT_INTERVAL_SECS".into(), "3600".into())],
        ..FleetOptions::default()
    })
    .await;
    let apis = [fleet.member(0, PROJECT), fleet.member(1, PROJECT)];
    // All at once, half through each API (and so spread over both schedulers).
    let made: Vec<String> = stream::iter(0..CREATES)
        .map(|n| {
            let api = apis[n % 2].clone();
            async move { create(&api, SIZE, &request_id("cap", n)).await }
        })
        .buffer_unordered(CREATES)
        .map(|r| r.unwrap_or_else(|s| panic!("create: {s:?}")).id)
        .collect()
        .await;
    let volumes = assert_settled(&fleet).await;
    assert_eq!(volumes.len(), CREATES);

    // No backend holds more than it can.
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for v in volumes
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
    {
        let host = v.host.clone().unwrap_or_default();
        let host = host.split('#').next().unwrap_or_default().to_owned();
        *held.entry(host).or_default() += v.size_gib;
    }
    for (i, host) in fleet.volume_hosts.iter().enumerate() {
        let limit = CAPACITIES[i] * RATIO;
        let got = held.get(host).copied().unwrap_or(0);
        assert!(
            got <= limit,
            "{host} holds {got} GiB, more than its {limit}: {held:?}\n{}",
            fleet.stack.logs()
        );
    }
    // Both schedulers placed, and together more than fits on the roomiest.
    for scheduler in SCHEDULERS {
        assert!(
            !fleet.placed_by(scheduler, &made).is_empty(),
            "{scheduler} placed nothing\n{}",
            fleet.stack.logs()
        );
    }
    // Some create was refused for want of space, and each refused one was
    // rescheduled: it ended available on another backend, or in error saying
    // why.
    let refused: Vec<(usize, &String)> = VOLUME_SERVICES
        .iter()
        .enumerate()
        .flat_map(|(i, service)| {
            let log = fleet.log(service);
            made.iter()
                .filter(|id| {
                    log.lines()
                        .any(|l| l.contains(REFUSED) && l.contains(id.as_str()))
                })
                .map(|id| (i, id))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !refused.is_empty(),
        "no volume service refused a create: {held:?}\n{}",
        fleet.stack.logs()
    );
    for (i, id) in &refused {
        let v = volumes.iter().find(|v| &v.id == *id).expect("row");
        match v.status {
            VolumeStatus::Available => assert!(
                v.host.as_deref().unwrap_or_default().split('#').next()
                    != Some(fleet.volume_hosts[*i].as_str()),
                "{id} was refused by {} but is available there: {v:?}",
                fleet.volume_hosts[*i]
            ),
            _ => assert!(
                v.error_message.contains("no space")
                    || v.error_message.contains("No valid backend"),
                "{id} ended in error without the reason: {v:?}"
            ),
        }
    }
    let available = volumes
        .iter()
        .filter(|v| v.status == VolumeStatus::Available)
        .count();
    eprintln!(
        "{} creates refused for space; {available} of {CREATES} available; held {held:?}",
        refused.len()
    );
}
