//! Tests of attach, detach, restart and reconciliation against a SQLite file, the
//! real `file` and `qcow2` drivers, real `qemu-nbd` exports, and `qemu-io` over
//! NBD (it fails when a pattern differs). Each test takes its own ports and temp
//! dir.
//! The fixture and helpers are here; the tests are by area: `attach.rs` (attach,
//! detach, multiattach, failures), `restart.rs` (adopting and re-exporting),
//! `reconcile.rs` (stuck attachments) and `in_use.rs` (snapshots and deletes of
//! attached volumes).

mod attach;
mod in_use;
mod reconcile;
mod restart;

use std::{path::PathBuf, sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    db::{Db, DetachStart, WorkerEntry, WorkerKind},
    model::{
        AttachMode, Attachment, AttachmentStatus, ConnectionInfo, Connector, Snapshot,
        SnapshotStatus, Volume, VolumeStatus, now_ms,
    },
    ops::VolumeOps,
    rpc::Priority,
};
use scoria_proto::bus::{AttachVolume, CreateSnapshot, CreateVolume, DeleteVolume, DetachVolume};
use tonic::{Code, Status};

use scoria_common::events::Event;

use crate::{
    driver::{FileDriver, Qcow2Driver, VolumeDriver},
    export::{ExportKey, ExportManager},
    manager::{IdleScheduler, ManagerSettings, VolumeManager},
    testing::Recorder,
};

const HOST: &str = "node1@file";

struct Fixture {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    db: Db,
    driver: Arc<dyn VolumeDriver>,
    recorder: Arc<Recorder>,
    ports: std::ops::RangeInclusive<u16>,
    exports: Arc<ExportManager>,
    manager: VolumeManager,
}

fn require_qemu() {
    for tool in ["qemu-nbd", "qemu-img", "qemu-io"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "{tool} is missing: install qemu-utils"
        );
    }
}

/// A manager of the `driver` backend (`file` or `qcow2`) exporting through a
/// fresh export manager on its own ports.
async fn fixture(driver: &str) -> Fixture {
    fixture_with(driver, None).await
}

async fn fixture_with(driver: &str, program: Option<&str>) -> Fixture {
    require_qemu();
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_owned();
    let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
        .await
        .expect("db");
    let driver: Arc<dyn VolumeDriver> = match driver {
        "file" => Arc::new(FileDriver::new(dir.join("file"), Some(10)).expect("file driver")),
        _ => Arc::new(Qcow2Driver::new(dir.join("qcow2"), Some(10)).expect("qcow2 driver")),
    };
    let ports = crate::export::test_ports();
    let mut exports = ExportManager::new("127.0.0.1".into(), ports.clone(), dir.join("run"));
    if let Some(program) = program {
        exports = exports.with_program(program);
    }
    let exports = Arc::new(exports);
    let recorder = Recorder::following(&["volume.attach.", "volume.detach."]);
    let manager = manager(&db, &driver, &recorder, &exports);
    Fixture {
        _temp: temp,
        dir,
        db,
        driver,
        recorder,
        ports,
        exports,
        manager,
    }
}

fn manager(
    db: &Db,
    driver: &Arc<dyn VolumeDriver>,
    recorder: &Arc<Recorder>,
    exports: &Arc<ExportManager>,
) -> VolumeManager {
    let settings = ManagerSettings {
        host: HOST.into(),
        backend: "file".into(),
        availability_zone: "az1".into(),
        reserved_percentage: 0,
        max_over_subscription_ratio: 20.0,
    };
    VolumeManager::new(
        db.clone(),
        driver.clone(),
        Arc::new(IdleScheduler),
        recorder.notifier.clone(),
        settings,
    )
    .with_exports(exports.clone())
}

fn ctx() -> RequestContext {
    RequestContext::internal("test")
}

/// An `available` 1 GiB volume of this backend, made by the manager's create.
async fn new_volume(f: &Fixture) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib: 1,
        status: VolumeStatus::Creating,
        volume_type: String::new(),
        availability_zone: "az1".into(),
        host: None,
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: "creating".into(),
        service: "scoria-scheduler".into(),
        deadline_ms: now + 60_000,
    };
    f.db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    f.manager
        .create_volume(
            &ctx(),
            HOST,
            CreateVolume {
                volume_id: volume.id.clone(),
                size_gib: 1,
                pool: format!("{HOST}#file"),
                attempt: 1,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    get_volume(f, &volume.id).await
}

async fn get_volume(f: &Fixture, id: &str) -> Volume {
    f.db.get_volume(id).await.expect("get").expect("volume row")
}

async fn get_attachment(f: &Fixture, id: &str) -> Option<Attachment> {
    f.db.get_attachment(id).await.expect("get attachment")
}

fn worker(id: &str, status: &str, deadline_ms: i64) -> WorkerEntry {
    WorkerEntry {
        kind: WorkerKind::Attachment,
        resource_id: id.to_owned(),
        status: status.to_owned(),
        service: HOST.into(),
        deadline_ms,
    }
}

/// An `attaching` attachment of `volume` in `mode`, as the API reserves it, its
/// worker entry due at `deadline_ms`.
async fn reserve_due(f: &Fixture, volume: &Volume, mode: AttachMode, deadline_ms: i64) -> String {
    let now = now_ms();
    let attachment = Attachment {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: volume.id.clone(),
        project_id: volume.project_id.clone(),
        user_id: "u1".into(),
        status: AttachmentStatus::Attaching,
        instance_id: "vm-1".into(),
        connector: Connector {
            host: "compute-1".into(),
            ..Default::default()
        },
        mode,
        volume_host: HOST.into(),
        connection_info: None,
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        attached_at_ms: None,
    };
    let reserved =
        f.db.reserve_attachment(
            &attachment,
            true,
            &worker(&attachment.id, "attaching", deadline_ms),
        )
        .await
        .expect("reserve");
    assert!(
        matches!(reserved, scoria_common::db::AttachReserve::Reserved(_)),
        "{reserved:?}"
    );
    attachment.id
}

async fn reserve(f: &Fixture, volume: &Volume, mode: AttachMode) -> String {
    reserve_due(f, volume, mode, now_ms() + 60_000).await
}

async fn attach(f: &Fixture, id: &str) -> Result<ConnectionInfo, Status> {
    let result = f
        .manager
        .attach_volume(
            &ctx(),
            HOST,
            AttachVolume {
                attachment_id: id.to_owned(),
            },
        )
        .await?;
    let pb = result.connection_info.expect("connection info");
    assert_eq!(
        pb.uri,
        format!("nbd://{}:{}/{}", pb.host, pb.port, pb.export_name)
    );
    Ok(ConnectionInfo {
        protocol: pb.protocol,
        host: pb.host,
        port: u16::try_from(pb.port).expect("a port"),
        export_name: pb.export_name,
        read_only: pb.read_only,
    })
}

/// `db.start_detach` (as the API does), then the `detach_volume` call.
async fn detach(f: &Fixture, id: &str) -> Result<bool, Status> {
    start_detach(f, id, now_ms() + 60_000).await;
    detach_call(f, id).await
}

async fn start_detach(f: &Fixture, id: &str, deadline_ms: i64) {
    let started =
        f.db.start_detach(id, &worker(id, "detaching", deadline_ms))
            .await
            .expect("start detach");
    assert!(matches!(started, DetachStart::Started(_)), "{started:?}");
}

async fn detach_call(f: &Fixture, id: &str) -> Result<bool, Status> {
    f.manager
        .detach_volume(
            &ctx(),
            HOST,
            DetachVolume {
                attachment_id: id.to_owned(),
            },
        )
        .await
        .map(|r| r.unexported)
        .map_err(Status::from)
}

/// `qemu-io [-r] -f raw -c <command> <uri>`: Ok, or Err with its output.
async fn qemu_io(uri: &str, command: &str, read_only: bool) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("qemu-io");
    if read_only {
        cmd.arg("-r");
    }
    let output = cmd
        .args(["-f", "raw", "-c", command, uri])
        .output()
        .await
        .expect("qemu-io (install qemu-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && !text.contains("error") && !text.contains("failed") {
        Ok(())
    } else {
        Err(text)
    }
}

/// Whether the export's port accepts a TCP connection now.
async fn accepts(info: &ConnectionInfo) -> bool {
    let connect = tokio::net::TcpStream::connect((info.host.as_str(), info.port));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

const WRITE: &str = "write -P 0xab 0 64k";
const READ: &str = "read -P 0xab 0 64k";
