//! Two API instances, two schedulers and three volume services on PostgreSQL
//! ([`Fleet`]): either API gives the same answers and racing requests through
//! both have one winner ([`parity`]), two schedulers racing for a backend's last
//! space never overfill it ([`capacity`]), and killing a scheduler or an API
//! instance in the middle of a burst loses nothing ([`kills`]), and a database
//! cut with all of them running is answered and recovered from ([`database`]).

mod capacity;
mod database;
mod kills;
mod parity;

use std::time::{Duration, Instant};

use scoria_common::{
    db::{VolumeQuery, WorkerKind},
    model::{Volume, VolumeStatus},
};
use scoria_proto::v1 as pb;
use scoria_tests::stack::{Clients, Fleet};
use tonic::Status;

/// How long a fleet may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// CreateVolume of `size_gib` with idempotency key `request_id` through `api`.
async fn create(api: &Clients, size_gib: u64, request_id: &str) -> Result<pb::Volume, Status> {
    let body = pb::CreateVolumeRequest {
        name: format!("fleet-{request_id}"),
        size_gib,
        request_id: request_id.to_owned(),
        ..Default::default()
    };
    Ok(api.volumes().create_volume(body).await?.into_inner())
}

/// A request id unique to this run.
fn request_id(tag: &str, n: usize) -> String {
    format!(
        "{tag}-{n}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Every volume row of the fleet's database.
async fn rows(fleet: &Fleet) -> Vec<Volume> {
    fleet
        .stack
        .db
        .list_volumes(&VolumeQuery {
            limit: 100_000,
            ..VolumeQuery::default()
        })
        .await
        .expect("list volumes")
}

/// Waits until no volume of the fleet is transient, then asserts every one is
/// `available` or `error` (saying why), none keeps a worker entry, and the
/// quota usage equals a recount of the rows. Returns the rows.
async fn assert_settled(fleet: &Fleet) -> Vec<Volume> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let volumes = loop {
        let volumes = rows(fleet).await;
        let stuck: Vec<String> = volumes
            .iter()
            .filter(|v| !matches!(v.status, VolumeStatus::Available | VolumeStatus::Error))
            .map(|v| format!("{} {} on {:?}", v.id, v.status, v.host))
            .collect();
        if stuck.is_empty() {
            break volumes;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {SETTLE_TIMEOUT:?}: {stuck:#?}\n{}",
            fleet.stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for v in &volumes {
        if v.status == VolumeStatus::Error {
            assert!(
                !v.error_message.is_empty(),
                "{} in error without a reason",
                v.id
            );
        }
        let worker = fleet
            .stack
            .db
            .get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("get worker");
        assert!(worker.is_none(), "settled {} keeps {worker:?}", v.id);
    }
    fleet.stack.assert_quota_exact().await;
    volumes
}

/// Polls GetVolume through `api` until `id` is in `status` (within 60 s).
async fn wait_status(
    fleet: &Fleet,
    api: &Clients,
    id: &str,
    status: pb::VolumeStatus,
) -> pb::Volume {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = api.get_volume(id).await;
        if let Ok(v) = &got
            && v.status() == status
        {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "volume {id} never reached {status:?}: last {got:?}\n{}",
            fleet.stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
