//! Active-active volume services of one shared backend (Cinder's `cluster`):
//! members configured with one `SCORIA_VOLUME_CLUSTER` serve one queue and one
//! pool for a `qcow2` backend whose objects live in one shared directory
//! (`SCORIA_VOLUME_BACKEND_DIR`), each with its own data dir, host name and
//! heartbeat. Real processes on PostgreSQL; real objects checked with `qemu-img`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack, Volumes};

const PROJECT: &str = "p-cluster";
const GIB: u64 = 1 << 30;
/// How long every create of a burst may take to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// `qemu-img info` of a backend object: its virtual size in bytes.
fn virtual_size(path: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .expect("qemu-img is needed (apt-get install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img info {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    info["virtual-size"].as_u64().expect("virtual-size")
}

/// The object `<kind>-<id>*` in the shared directory, if there is one.
fn object(shared: &Path, kind: &str, id: &str) -> Option<PathBuf> {
    let stem = format!("{kind}-{id}");
    std::fs::read_dir(shared)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == stem || n.starts_with(&format!("{stem}.")))
        })
}

/// The ids of the `<kind>-<id>` objects in the shared directory.
fn objects(shared: &Path, kind: &str) -> BTreeSet<String> {
    let prefix = format!("{kind}-");
    std::fs::read_dir(shared)
        .expect("shared dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| {
            let id = n.strip_prefix(&prefix)?;
            Some(id.split('.').next().unwrap_or(id).to_owned())
        })
        .collect()
}

/// How many volumes process `name` logged as created.
fn created_by(stack: &Stack, name: &str) -> usize {
    std::fs::read_to_string(stack.log_path(name))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("volume created"))
        .count()
}

async fn create(volumes: &mut Volumes, name: String) -> String {
    volumes
        .create_volume(pb::CreateVolumeRequest {
            name,
            size_gib: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}"))
        .into_inner()
        .id
}

/// Waits until none of `ids` is `creating`; returns their last statuses. Fails
/// with the logs when one is still creating after [`SETTLE`].
async fn settled(stack: &Stack, ids: &[String]) -> Vec<(String, pb::VolumeStatus)> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut statuses = Vec::new();
        for id in ids {
            let volume = stack.get_volume(PROJECT, id).await.expect("get volume");
            statuses.push((id.clone(), volume.status()));
        }
        let creating = statuses
            .iter()
            .filter(|(_, s)| *s == pb::VolumeStatus::Creating)
            .count();
        if creating == 0 {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{creating} volumes still creating after {SETTLE:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every volume of the project whose status is `available` has its object in
/// the shared directory, and no other volume object is there.
async fn objects_match_the_database(stack: &Stack, shared: &Path) {
    let listed = stack
        .volumes(PROJECT)
        .list_volumes(pb::ListVolumesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list volumes")
        .into_inner()
        .volumes;
    let available: BTreeSet<String> = listed
        .iter()
        .filter(|v| v.status() == pb::VolumeStatus::Available)
        .map(|v| v.id.clone())
        .collect();
    let others: Vec<_> = listed
        .iter()
        .filter(|v| v.status() != pb::VolumeStatus::Available)
        .map(|v| (v.id.clone(), v.status()))
        .collect();
    assert!(
        others.is_empty(),
        "every volume available: {others:?}\n{}",
        stack.logs()
    );
    assert_eq!(
        objects(shared, "volume"),
        available,
        "objects on disk = rows"
    );
}

/// Acting as the only member left: extends, snapshots and deletes volumes the
/// other member created, checking the shared objects with `qemu-img`.
async fn act_on(stack: &Stack, shared: &Path, [extend, snap, delete]: [&str; 3]) {
    let mut volumes = stack.volumes(PROJECT);
    volumes
        .extend_volume(pb::ExtendVolumeRequest {
            id: extend.to_owned(),
            new_size_gib: 2,
        })
        .await
        .expect("extend");
    let grown = stack
        .wait_status(PROJECT, extend, pb::VolumeStatus::Available)
        .await;
    assert_eq!(grown.size_gib, 2, "{}", stack.logs());
    let path = object(shared, "volume", extend).expect("extended object");
    assert_eq!(virtual_size(&path), 2 * GIB, "the shared object grew");

    let snapshot = stack
        .snapshots(PROJECT)
        .create_snapshot(pb::CreateSnapshotRequest {
            volume_id: snap.to_owned(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .expect("snapshot")
        .into_inner();
    stack
        .wait_snapshot_status(PROJECT, &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    let snap_object = object(shared, "snapshot", &snapshot.id).expect("snapshot object");
    assert_eq!(virtual_size(&snap_object), GIB);
    stack
        .snapshots(PROJECT)
        .delete_snapshot(pb::DeleteSnapshotRequest {
            id: snapshot.id.clone(),
        })
        .await
        .expect("delete snapshot");
    stack.wait_snapshot_gone(PROJECT, &snapshot.id).await;
    assert!(object(shared, "snapshot", &snapshot.id).is_none());

    volumes
        .delete_volume(pb::DeleteVolumeRequest {
            id: delete.to_owned(),
        })
        .await
        .expect("delete");
    stack.wait_volume_gone(PROJECT, delete).await;
    assert!(object(shared, "volume", delete).is_none(), "object removed");
}

/// Whether a `qemu-nbd` process serving volume `id` runs (from `/proc`).
fn nbd_serving(id: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .any(|c| c.contains("qemu-nbd") && c.contains(&format!("volume-{id}")))
}

/// The pid files of the exports in `run_dir`.
fn pid_files(run_dir: &Path) -> Vec<String> {
    std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".pid"))
        .collect()
}

/// Attaches each of `ids` in turn and detaches it: the export runs under the
/// member that started it (its run dir, its row's export host), and the detach
/// reaches that member (its `qemu-nbd` is gone after it).
async fn exports_stay_with_their_member(
    stack: &Stack,
    ids: &[String],
    members: [(&str, PathBuf); 2],
) {
    for id in ids {
        let attachment = stack
            .attachments(PROJECT)
            .create_attachment(pb::CreateAttachmentRequest {
                volume_id: id.clone(),
                connector: Some(pb::Connector {
                    host: "compute-1".into(),
                    ip: "10.0.0.5".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("attach {id}: {e:?}\n{}", stack.logs()))
            .into_inner();
        let owner = stack
            .db
            .export_host(&attachment.id)
            .await
            .expect("export host")
            .expect("an attached row names its export host");
        let (_, run_dir) = members
            .iter()
            .find(|(m, _)| *m == owner)
            .unwrap_or_else(|| panic!("export host {owner} is no member"));
        let (_, other_dir) = members.iter().find(|(m, _)| *m != owner).expect("other");
        let pid = format!("volume-{id}.pid");
        assert!(
            pid_files(run_dir).contains(&pid),
            "{owner} runs the export of {id}"
        );
        assert!(
            !pid_files(other_dir).contains(&pid),
            "only {owner} exports {id}"
        );
        assert!(nbd_serving(id));
        stack
            .attachments(PROJECT)
            .delete_attachment(pb::DeleteAttachmentRequest {
                id: attachment.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("detach {id}: {e:?}\n{}", stack.logs()));
        stack
            .wait_status(PROJECT, id, pb::VolumeStatus::Available)
            .await;
        assert!(
            !nbd_serving(id),
            "the detach reached {owner}: its qemu-nbd of {id} stopped"
        );
        assert!(!pid_files(run_dir).contains(&pid));
    }
}

/// Attaches one multiattach volume six times: every attachment goes to the
/// member that exported it first, which shares its one export (a second
/// `qemu-nbd` on the same qcow2 object elsewhere would fail on its lock).
async fn multiattach_shares_one_export(stack: &Stack, members: &[(&str, PathBuf); 2]) {
    stack
        .types_admin(PROJECT)
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "multi".into(),
            extra_specs: [("multiattach".to_owned(), "<is> True".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("create the multiattach type");
    let mut volumes = stack.volumes(PROJECT);
    let id = volumes
        .create_volume(pb::CreateVolumeRequest {
            name: "multi".into(),
            size_gib: 1,
            volume_type: "multi".into(),
            ..Default::default()
        })
        .await
        .expect("create the multiattach volume")
        .into_inner()
        .id;
    assert_eq!(
        settled(stack, std::slice::from_ref(&id)).await,
        [(id.clone(), pb::VolumeStatus::Available)]
    );
    let mut attachments = Vec::new();
    let mut owners = BTreeSet::new();
    for i in 0..6 {
        let attachment = stack
            .attachments(PROJECT)
            .create_attachment(pb::CreateAttachmentRequest {
                volume_id: id.clone(),
                instance_id: format!("vm-{i}"),
                connector: Some(pb::Connector {
                    host: format!("compute-{i}"),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("attach {i} of {id}: {e:?}\n{}", stack.logs()))
            .into_inner();
        owners.insert(
            stack
                .db
                .export_host(&attachment.id)
                .await
                .expect("export host")
                .expect("an attached row names its export host"),
        );
        attachments.push(attachment.id);
    }
    assert_eq!(owners.len(), 1, "one member exports {id}: {owners:?}");
    let pid = format!("volume-{id}.pid");
    let exporting: Vec<&str> = members
        .iter()
        .filter(|(_, dir)| pid_files(dir).contains(&pid))
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(
        exporting,
        owners.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for attachment in attachments {
        stack
            .attachments(PROJECT)
            .delete_attachment(pb::DeleteAttachmentRequest { id: attachment })
            .await
            .unwrap_or_else(|e| panic!("detach from {id}: {e:?}\n{}", stack.logs()));
    }
    stack
        .wait_status(PROJECT, &id, pb::VolumeStatus::Available)
        .await;
    assert!(
        !nbd_serving(&id),
        "the last detach stopped the export of {id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_one_cluster_share_the_work_and_hand_it_over() {
    let shared_dir = tempfile::tempdir().expect("shared dir");
    let shared = shared_dir.path().join("qcow2");
    let shared_s = shared.display().to_string();
    let env = [
        ("SCORIA_VOLUME_DRIVER", "qcow2"),
        ("SCORIA_VOLUME_BACKEND", "qcow2"),
        ("SCORIA_VOLUME_CLUSTER", "shared"),
        ("SCORIA_VOLUME_BACKEND_DIR", shared_s.as_str()),
    ];
    let mut stack = Stack::start_with(DbKind::Postgres, &env).await;
    let first = stack.volume_host.clone();
    let second = stack.start_volume_member("member-b", &[]).await;
    let cluster = "shared@qcow2";

    // Two service rows, both naming the cluster (written right after the
    // first heartbeat).
    let deadline = Instant::now() + SETTLE;
    loop {
        let services = stack.db.list_services().await.expect("services");
        let named = |member: &str| {
            services
                .iter()
                .any(|s| s.binary == "scoria-volume" && s.host == member && s.cluster == cluster)
        };
        if named(&first) && named(&second) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both members' rows name {cluster}: {services:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The scheduler sees one pool, the cluster's (both members report it).
    let deadline = Instant::now() + SETTLE;
    let names = loop {
        let pools = stack
            .admin(PROJECT)
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .expect("list pools")
            .into_inner()
            .pools;
        let names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
        if !names.is_empty() || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        names,
        [format!("{cluster}#qcow2")],
        "one pool, the cluster's"
    );

    // A burst: spread over both members, every volume's host the cluster's.
    let mut volumes = stack.volumes(PROJECT);
    let mut ids = Vec::new();
    let deadline = Instant::now() + SETTLE;
    while created_by(&stack, "scoria-volume") == 0
        || created_by(&stack, "scoria-volume@member-b") == 0
    {
        for _ in 0..8 {
            ids.push(create(&mut volumes, format!("v{}", ids.len())).await);
        }
        settled(&stack, &ids).await;
        assert!(
            Instant::now() < deadline,
            "both members must create some of {} volumes\n{}",
            ids.len(),
            stack.logs()
        );
    }
    for id in &ids {
        let v = stack.get_volume(PROJECT, id).await.expect("get");
        assert_eq!(v.host, cluster, "volume {id}'s host is the cluster's");
    }
    objects_match_the_database(&stack, &shared).await;

    let run_dirs = [
        (
            first.as_str(),
            stack.dir.path().join("exports").join(&first),
        ),
        (
            second.as_str(),
            stack
                .dir
                .path()
                .join("member-b")
                .join("exports")
                .join(&second),
        ),
    ];
    multiattach_shares_one_export(&stack, &run_dirs).await;
    exports_stay_with_their_member(&stack, &ids[..4.min(ids.len())], run_dirs).await;

    // SIGTERM to member b in the middle of a burst: its queued and unacked
    // work goes to the other member; every confirmed create settles.
    let burst = tokio::spawn({
        let mut volumes = stack.volumes(PROJECT);
        async move {
            let mut ids = Vec::new();
            for i in 0..24 {
                ids.push(create(&mut volumes, format!("burst-{i}")).await);
            }
            ids
        }
    });
    // Stopped while the creates come in.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let code = stack.stop_service("scoria-volume@member-b").await;
    assert_eq!(code, Some(0), "member b drains and exits cleanly");
    let burst_ids = burst.await.expect("burst");
    let statuses = settled(&stack, &burst_ids).await;
    let errors: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| *s != pb::VolumeStatus::Available)
        .collect();
    assert!(errors.is_empty(), "every create ends available: {errors:?}");
    objects_match_the_database(&stack, &shared).await;

    // Member a alone extends, snapshots and deletes what member b created.
    let by_b: Vec<String> = {
        let log =
            std::fs::read_to_string(stack.log_path("scoria-volume@member-b")).unwrap_or_default();
        ids.iter()
            .filter(|id| {
                log.lines()
                    .any(|l| l.contains("volume created") && l.contains(id.as_str()))
            })
            .cloned()
            .collect()
    };
    assert!(!by_b.is_empty(), "member b created {by_b:?}");
    let pick = |i: usize| by_b[i % by_b.len()].clone();
    let (e, s, d) = (pick(0), pick(1), pick(2));
    if by_b.len() >= 3 {
        act_on(&stack, &shared, [&e, &s, &d]).await;
    } else {
        // Fewer than three: the same volume, in that order (extend, snapshot,
        // then delete it last).
        act_on(&stack, &shared, [&e, &e, &e]).await;
    }

    // The other way round: a new member c takes over from a stopped a.
    stack.start_volume_member("member-c", &[]).await;
    let code = stack.stop_service("scoria-volume").await;
    assert_eq!(code, Some(0), "member a drains and exits cleanly");
    let by_a: Vec<String> = {
        let log = std::fs::read_to_string(stack.log_path("scoria-volume")).unwrap_or_default();
        ids.iter()
            .chain(&burst_ids)
            .filter(|id| {
                log.lines()
                    .any(|l| l.contains("volume created") && l.contains(id.as_str()))
            })
            .filter(|id| !by_b.contains(id))
            .cloned()
            .collect()
    };
    assert!(by_a.len() >= 3, "member a created {by_a:?}");
    act_on(&stack, &shared, [&by_a[0], &by_a[1], &by_a[2]]).await;
    objects_match_the_database(&stack, &shared).await;
    stack.terminate().await;
}
