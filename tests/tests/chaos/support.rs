//! What every chaos scenario shares: the lock that runs them one at a time, the
//! calls they make on the API (over the stack's typed clients, as a member of
//! [`PROJECT`]), the quota they run under ([`enforce_quota`]), and
//! [`assert_settled`], the end state every scenario must reach.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use scoria_common::{
    db::{SnapshotQuery, VolumeQuery, WorkerKind},
    model::{SnapshotStatus, VolumeStatus},
};
use scoria_proto::v1 as pb;
use scoria_tests::stack::{Attachments, Stack, Volumes};
use tokio::sync::{Mutex, MutexGuard};
use tonic::{Code, Status};

/// How long a stack may take to settle after the disturbance ends.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The project every chaos volume belongs to.
pub const PROJECT: &str = "chaos";

/// Environment of every chaos stack: publishing gives up after 3 s of broker
/// outage (the API answers UNAVAILABLE instead of waiting 10 s).
pub const CHAOS_ENV: &[(&str, &str)] = &[("SCORIA_RPC_PUBLISH_TIMEOUT_MS", "3000")];

/// The limits of [`PROJECT`] in every chaos scenario ([`enforce_quota`]): far
/// above what any scenario makes, so none is refused, but finite, so every
/// create, extend and attach takes the project's quota lock and checks its
/// usage in the transaction that writes it.
pub const QUOTA: &[(&str, i64)] = &[
    ("attachments", 10_000),
    ("gigabytes", 100_000),
    ("snapshots", 10_000),
    ("volumes", 10_000),
];

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Taken first by every chaos test: one scenario at a time in this binary.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The API as a member of [`PROJECT`], over the stack's channel.
#[derive(Clone)]
pub struct Api {
    volumes: Volumes,
    attachments: Attachments,
}

impl Api {
    /// A client of `stack`'s API; every call gives up after 30 s.
    pub fn new(stack: &Stack) -> Self {
        Self {
            volumes: stack.volumes(PROJECT),
            attachments: stack.attachments(PROJECT),
        }
    }

    /// CreateVolume of `size_gib` with idempotency key `request_id`.
    pub async fn create(&self, size_gib: u64, request_id: &str) -> Result<pb::Volume, Status> {
        let body = pb::CreateVolumeRequest {
            name: format!("chaos-{request_id}"),
            size_gib,
            request_id: request_id.to_owned(),
            ..Default::default()
        };
        let mut client = self.volumes.clone();
        Ok(client.create_volume(body).await?.into_inner())
    }

    /// GetVolume.
    pub async fn get(&self, id: &str) -> Result<pb::Volume, Status> {
        let body = pb::GetVolumeRequest { id: id.to_owned() };
        let mut client = self.volumes.clone();
        Ok(client.get_volume(body).await?.into_inner())
    }

    /// ListVolumes (first page).
    pub async fn list(&self) -> Result<Vec<pb::Volume>, Status> {
        let body = pb::ListVolumesRequest::default();
        let mut client = self.volumes.clone();
        Ok(client.list_volumes(body).await?.into_inner().volumes)
    }

    /// DeleteVolume.
    pub async fn delete(&self, id: &str) -> Result<pb::Volume, Status> {
        let body = pb::DeleteVolumeRequest { id: id.to_owned() };
        let mut client = self.volumes.clone();
        Ok(client.delete_volume(body).await?.into_inner())
    }

    /// ExtendVolume to `new_size_gib`.
    pub async fn extend(&self, id: &str, new_size_gib: u64) -> Result<pb::Volume, Status> {
        let body = pb::ExtendVolumeRequest {
            id: id.to_owned(),
            new_size_gib,
        };
        let mut client = self.volumes.clone();
        Ok(client.extend_volume(body).await?.into_inner())
    }

    /// CreateAttachment of `volume_id` to host `host`.
    pub async fn attach(&self, volume_id: &str, host: &str) -> Result<pb::Attachment, Status> {
        let body = pb::CreateAttachmentRequest {
            volume_id: volume_id.to_owned(),
            connector: Some(pb::Connector {
                host: host.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut client = self.attachments.clone();
        Ok(client.create_attachment(body).await?.into_inner())
    }

    /// DeleteAttachment.
    pub async fn detach(&self, id: &str) -> Result<(), Status> {
        let body = pb::DeleteAttachmentRequest { id: id.to_owned() };
        let mut client = self.attachments.clone();
        client.delete_attachment(body).await?;
        Ok(())
    }

    /// Creates with `request_id` until the API accepts it: UNAVAILABLE is
    /// retried (the same key never makes two volumes), anything else fails the
    /// test. Gives up after `within`.
    pub async fn create_retrying(
        &self,
        size_gib: u64,
        request_id: &str,
        within: Duration,
    ) -> pb::Volume {
        let deadline = Instant::now() + within;
        loop {
            match self.create(size_gib, request_id).await {
                Ok(v) => return v,
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("create {request_id}: {status:?}"),
            }
        }
    }

    /// Polls GetVolume until `id` is in `status` (within 60 s); returns it.
    pub async fn wait_status(&self, id: &str, status: pb::VolumeStatus) -> pb::Volume {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.get(id).await;
            if let Ok(v) = &got
                && v.status() == status
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "volume {id} never reached {status:?}: last {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls GetVolume until `id` is gone (NOT_FOUND, within 60 s).
    pub async fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.get(id).await;
            if matches!(&got, Err(s) if s.code() == Code::NotFound) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "volume {id} was never deleted: last {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sets [`QUOTA`] as [`PROJECT`]'s limits (UpdateQuota): called by every
/// scenario right after its stack starts, before any volume is made
/// ([`assert_settled`] fails a scenario that did not).
pub async fn enforce_quota(stack: &Stack) {
    let quota = stack.set_quota(PROJECT, QUOTA).await;
    for (resource, limit) in QUOTA {
        let line = quota.usages.iter().find(|u| u.resource == *resource);
        assert_eq!(
            line.map(|u| (u.limit, u.in_use, u.reserved)),
            Some((*limit, 0, 0)),
            "the quota of {PROJECT} after UpdateQuota: {quota:?}"
        );
    }
}

/// A request id unique to this run: `<tag>-<n>-<random>`.
pub fn request_id(tag: &str, n: usize) -> String {
    format!(
        "{tag}-{n}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Waits until the database rows of `stack` hold `at_least` volumes (or the
/// deadline of 30 s passes: then fails).
pub async fn wait_rows(stack: &Stack, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while volumes(stack).await.len() < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} volumes were ever written\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every volume row of the stack's database, any project.
pub async fn volumes(stack: &Stack) -> Vec<scoria_common::model::Volume> {
    stack
        .db
        .list_volumes(&VolumeQuery {
            limit: 100_000,
            ..VolumeQuery::default()
        })
        .await
        .expect("list volumes")
}

fn transient_volume(status: VolumeStatus) -> bool {
    matches!(
        status,
        VolumeStatus::Creating
            | VolumeStatus::BackingUp
            | VolumeStatus::RestoringBackup
            | VolumeStatus::Reserved
            | VolumeStatus::Attaching
            | VolumeStatus::Detaching
            | VolumeStatus::Extending
            | VolumeStatus::Deleting
    )
}

fn transient_snapshot(status: SnapshotStatus) -> bool {
    matches!(status, SnapshotStatus::Creating | SnapshotStatus::Deleting)
}

/// The `backend` part of `host@backend[#pool]`.
fn backend_of(host: &str) -> Option<&str> {
    let backend = host.split_once('@')?.1;
    Some(backend.split_once('#').map_or(backend, |(b, _)| b))
}

/// Whether file `name` is the object `<kind>-<id>` (bare, or with an extension).
fn is_object(name: &str, kind: &str, id: &str) -> bool {
    name.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Waits (up to [`SETTLE_TIMEOUT`]) until no volume or snapshot of `stack` is in
/// a transient status, then asserts the end state every chaos scenario must
/// reach: every volume `available` or `error` (an `error` one says why, none
/// keeps a `workers` entry), and
/// the objects in every backend folder exactly the `available` volumes and
/// snapshots of that backend (no leftover object, no row without its object),
/// and the quota usage exact ([`assert_quota_held`]).
pub async fn assert_settled(stack: &Stack) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let (volumes, snapshots) = loop {
        let volumes = volumes(stack).await;
        let snapshots = stack
            .db
            .list_snapshots(&SnapshotQuery {
                limit: 100_000,
                ..SnapshotQuery::default()
            })
            .await
            .expect("list snapshots");
        let stuck: Vec<String> = volumes
            .iter()
            .filter(|v| transient_volume(v.status))
            .map(|v| format!("volume {} {} on {:?}", v.id, v.status, v.host))
            .chain(
                snapshots
                    .iter()
                    .filter(|s| transient_snapshot(s.status))
                    .map(|s| format!("snapshot {} {}", s.id, s.status)),
            )
            .collect();
        if stuck.is_empty() {
            break (volumes, snapshots);
        }
        assert!(
            Instant::now() < deadline,
            "{} still transient after {SETTLE_TIMEOUT:?}: {stuck:#?}\n{}",
            stuck.len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for v in &volumes {
        assert!(
            matches!(v.status, VolumeStatus::Available | VolumeStatus::Error),
            "volume {} settled in {} (not available or error): {v:?}\n{}",
            v.id,
            v.status,
            stack.logs()
        );
        if v.status == VolumeStatus::Error {
            assert!(
                !v.error_message.is_empty(),
                "volume {} is in error without an error_message",
                v.id
            );
        }
        // A settled volume has no owner left that could still act on it.
        let worker = stack
            .db
            .get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("get worker");
        assert!(
            worker.is_none(),
            "volume {} settled in {} but still has a worker entry {worker:?}",
            v.id,
            v.status
        );
    }
    for backend in stack.backends() {
        let dir = stack.dir.path().join(&backend);
        let files: BTreeSet<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        let here = |host: Option<&str>| host.and_then(backend_of) == Some(backend.as_str());
        let mut expected: Vec<(&str, &str)> = volumes
            .iter()
            .filter(|v| v.status == VolumeStatus::Available && here(v.host.as_deref()))
            .map(|v| ("volume", v.id.as_str()))
            .collect();
        for s in &snapshots {
            let on_backend = volumes
                .iter()
                .any(|v| v.id == s.volume_id && here(v.host.as_deref()));
            if s.status == SnapshotStatus::Available && on_backend {
                expected.push(("snapshot", s.id.as_str()));
            }
        }
        let missing: Vec<String> = expected
            .iter()
            .filter(|(kind, id)| !files.iter().any(|f| is_object(f, kind, id)))
            .map(|(kind, id)| format!("{kind}-{id}"))
            .collect();
        let leftovers: Vec<&String> = files
            .iter()
            .filter(|f| !expected.iter().any(|(kind, id)| is_object(f, kind, id)))
            .collect();
        assert!(
            missing.is_empty() && leftovers.is_empty(),
            "backend {backend} does not match the database: rows without their object \
             {missing:?}, objects without an available row {leftovers:?}\n{}",
            stack.logs()
        );
    }
    assert_quota_held(stack, &volumes, &snapshots).await;
}

/// The ids of the volumes whose create failed (`create_failed`: an `error`
/// volume that never was available, or one on its way out after that). The
/// API does not show it, so this one fact comes from the row.
async fn failed_creates(stack: &Stack) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT id FROM volumes WHERE create_failed = 1")
        .fetch_all(stack.db.pool())
        .await
        .expect("select failed creates")
        .into_iter()
        .collect()
}

/// The quota of a settled stack: [`PROJECT`] runs under [`QUOTA`]
/// ([`enforce_quota`] was called); GetQuota shows what its surviving rows hold
/// and nothing reserved (no operation is in flight any more): `volumes` the
/// volumes but failed creates, `gigabytes` their sizes plus those of the
/// snapshots but failed ones, `snapshots` those; and AdminService.CheckQuotaUsage
/// finds every project's recorded usage equal to a recount of the rows.
async fn assert_quota_held(
    stack: &Stack,
    volumes: &[scoria_common::model::Volume],
    snapshots: &[scoria_common::model::Snapshot],
) {
    let failed = failed_creates(stack).await;
    let held: Vec<&scoria_common::model::Volume> = volumes
        .iter()
        .filter(|v| v.project_id == PROJECT && !failed.contains(&v.id))
        .collect();
    let snaps: Vec<&scoria_common::model::Snapshot> = snapshots
        .iter()
        .filter(|s| s.project_id == PROJECT && s.status != SnapshotStatus::Error)
        .collect();
    let count = |n: usize| i64::try_from(n).expect("a count fits i64");
    let gib: u64 = held.iter().map(|v| v.size_gib).sum::<u64>()
        + snaps.iter().map(|s| s.size_gib).sum::<u64>();
    let expected = [
        ("volumes", count(held.len())),
        ("gigabytes", i64::try_from(gib).expect("GiB fit i64")),
        ("snapshots", count(snaps.len())),
    ];
    let quota = stack
        .quotas_admin("admin-project")
        .get_quota(pb::GetQuotaRequest {
            project_id: PROJECT.to_owned(),
        })
        .await
        .unwrap_or_else(|s| panic!("GetQuota of {PROJECT}: {s:?}\n{}", stack.logs()))
        .into_inner();
    let line = |resource: &str| {
        quota
            .usages
            .iter()
            .find(|u| u.resource == resource)
            .unwrap_or_else(|| panic!("no {resource} in the quota of {PROJECT}: {quota:?}"))
    };
    for (resource, limit) in QUOTA {
        assert_eq!(
            line(resource).limit,
            *limit,
            "the scenario did not run under the chaos quota (support::enforce_quota): {quota:?}"
        );
    }
    for (resource, in_use) in expected {
        assert_eq!(
            line(resource).in_use,
            in_use,
            "{resource} in use in the quota of {PROJECT} ({} volumes held of {} rows, \
             {} failed creates): {quota:#?}\n{}",
            held.len(),
            volumes.len(),
            failed.len(),
            stack.logs()
        );
    }
    let reserved: Vec<&pb::QuotaUsage> = quota.usages.iter().filter(|u| u.reserved != 0).collect();
    assert!(
        reserved.is_empty(),
        "reserved quota of {PROJECT} with nothing in flight: {reserved:#?}\n{}",
        stack.logs()
    );
    stack.assert_quota_exact().await;
    eprintln!(
        "quota of {PROJECT} exact: {} volumes, {gib} GiB, {} snapshots held",
        held.len(),
        snaps.len()
    );
}
