//! Tests of attach, detach, restart and reconciliation against a SQLite file, the
//! real `file` and `qcow2` drivers, real `qemu-nbd` exports, and `qemu-io` over
//! NBD (it fails when a pattern differs). Each test takes its own ports and temp
//! dir.

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

// === attach and detach ===

async fn attach_then_detach(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Attaching
    );

    let info = attach(&f, &id).await.expect("attach");
    assert_eq!(info.protocol, "nbd");
    assert_eq!(info.host, "127.0.0.1");
    assert_eq!(info.export_name, format!("volume-{}", volume.id));
    assert!(!info.read_only);
    qemu_io(&info.uri(), WRITE, false)
        .await
        .expect("write over NBD");
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("read it back over NBD");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::Attached);
    assert_eq!(row.connection_info.as_ref(), Some(&info));
    assert!(row.attached_at_ms.is_some());
    assert_eq!(get_volume(&f, &volume.id).await.status, VolumeStatus::InUse);
    assert_eq!(
        f.db.get_worker(WorkerKind::Attachment, &id)
            .await
            .expect("worker"),
        None,
        "the worker entry goes with the attach"
    );

    let again = attach(&f, &id).await.expect("a retried attach");
    assert_eq!(again, info, "a retried attach returns the same info");

    assert!(
        detach(&f, &id).await.expect("detach"),
        "the last user unexports"
    );
    assert!(!accepts(&info).await, "the export stopped");
    assert!(get_attachment(&f, &id).await.is_none(), "the row is gone");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
    assert!(
        !detach_call(&f, &id).await.expect("a retried detach"),
        "nothing to stop the second time"
    );
    assert_eq!(
        f.recorder.event_types(),
        [
            "volume.attach.start",
            "volume.attach.end",
            "volume.detach.start",
            "volume.detach.end"
        ]
    );
    // The bytes stayed in the volume: attached again, they read back.
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &id).await.expect("attach again");
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("the written bytes persist");
    f.exports.shutdown().await;
}

#[tokio::test]
async fn attach_serves_a_file_volume_and_detach_stops_it() {
    attach_then_detach("file").await;
}

#[tokio::test]
async fn attach_serves_a_qcow2_volume_and_detach_stops_it() {
    attach_then_detach("qcow2").await;
}

#[tokio::test]
async fn wrong_statuses_and_unknown_ids_get_their_codes() {
    let f = fixture("file").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let err = attach(&f, &unknown).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&unknown), "{err:?}");
    let err = attach(&f, "").await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("attachment_id"), "{err:?}");

    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let err = detach_call(&f, &id).await.expect_err("not detaching");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("attaching"), "{err:?}");
    f.db.fail_attach(&id, "given up").await.expect("fail");
    let err = attach(&f, &id).await.expect_err("error_attaching");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("error_attaching"), "{err:?}");
    assert!(f.exports.exported().is_empty(), "nothing was exported");
}

#[tokio::test]
async fn multiattach_shares_one_export_until_the_last_detach() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let a = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info_a = attach(&f, &a).await.expect("attach a");
    let b = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info_b = attach(&f, &b).await.expect("attach b");
    assert_eq!(info_a, info_b, "one export for both");
    assert_eq!(f.exports.exported().len(), 1);
    qemu_io(&info_a.uri(), WRITE, false).await.expect("write a");
    qemu_io(&info_b.uri(), READ, false)
        .await
        .expect("b reads a's write");

    assert!(!detach(&f, &a).await.expect("detach a"), "b still uses it");
    assert_eq!(get_volume(&f, &volume.id).await.status, VolumeStatus::InUse);
    qemu_io(&info_b.uri(), READ, false)
        .await
        .expect("b still works");
    assert!(detach(&f, &b).await.expect("detach b"));
    assert!(!accepts(&info_b).await, "stopped after the last detach");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
}

async fn read_only_beside_read_write(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let rw = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let rw_info = attach(&f, &rw).await.expect("attach rw");
    qemu_io(&rw_info.uri(), WRITE, false)
        .await
        .expect("write through rw");
    let ro = reserve(&f, &volume, AttachMode::ReadOnly).await;
    let ro_info = attach(&f, &ro).await.expect("attach ro beside rw");
    assert!(ro_info.read_only);
    assert_eq!(ro_info.export_name, format!("volume-{}-ro", volume.id));
    assert_ne!(ro_info.port, rw_info.port);
    assert!(
        qemu_io(&ro_info.uri(), "write -P 0x11 0 64k", false)
            .await
            .is_err(),
        "a write through the read-only export worked"
    );
    qemu_io(&ro_info.uri(), READ, true)
        .await
        .expect("the read-only export reads");
    qemu_io(&rw_info.uri(), READ, false)
        .await
        .expect("the refused write changed nothing");

    assert!(detach(&f, &ro).await.expect("detach ro"), "ro export stops");
    assert!(!accepts(&ro_info).await);
    qemu_io(&rw_info.uri(), "write -P 0x22 0 64k", false)
        .await
        .expect("rw still serves");
    assert!(detach(&f, &rw).await.expect("detach rw"));
    assert!(!accepts(&rw_info).await);
}

#[tokio::test]
async fn a_read_only_attachment_refuses_writes_while_a_file_volume_is_attached_rw() {
    read_only_beside_read_write("file").await;
}

#[tokio::test]
async fn a_read_only_attachment_refuses_writes_while_a_qcow2_volume_is_attached_rw() {
    read_only_beside_read_write("qcow2").await;
}

#[tokio::test]
async fn a_failed_export_leaves_error_attaching_and_the_volume_available() {
    let f = fixture_with("file", Some("scoria-no-such-qemu-nbd")).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let err = attach(&f, &id).await.expect_err("qemu-nbd missing");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("qemu-utils"), "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(row.error_message.contains("qemu-utils"), "{row:?}");
    assert_eq!(
        get_volume(&f, &volume.id).await.status,
        VolumeStatus::Available
    );
    assert_eq!(
        f.recorder.event_types(),
        ["volume.attach.start", "volume.attach.error"]
    );
    let events = f.recorder.announced();
    assert_eq!(
        (
            events[1].event.priority(),
            events[1].event,
            events[1].status.as_str()
        ),
        (
            Priority::Error,
            Event::VolumeAttachError,
            AttachmentStatus::ErrorAttaching.as_str()
        )
    );
}

#[tokio::test]
async fn attaching_a_volume_of_another_host_fails_it() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Attaching],
            VolumeStatus::Attaching,
            Some("node2@file"),
            None,
            None,
        )
        .await
        .expect("move the volume")
    );
    let err = attach(&f, &id).await.expect_err("not here");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node2@file"), "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(f.exports.exported().is_empty());
}

/// Defect 5: the export of an attach that fails after it started (a first
/// delivery exported, then died before recording it) is stopped, unless another
/// active attachment in the same mode uses it.
#[tokio::test]
async fn a_failed_check_stops_the_export_the_attach_left_running() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let path = f.driver.volume_path(&volume.id).expect("path");
    let info = f
        .exports
        .export(&volume.id, &path, "raw", false)
        .await
        .expect("the first delivery's export");
    // The check that the backend object exists fails now.
    f.driver
        .delete_volume(&volume.id)
        .await
        .expect("remove object");
    let err = attach(&f, &id).await.expect_err("no backend object");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    let row = get_attachment(&f, &id).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(
        f.exports.exported().is_empty(),
        "the export of a failed attach was left: {:?}",
        f.exports.exported()
    );
    assert!(!accepts(&info).await, "qemu-nbd still serves");
}

#[tokio::test]
async fn a_failed_check_keeps_an_export_another_attachment_uses() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let user = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &user).await.expect("attach the user");
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    f.driver
        .delete_volume(&volume.id)
        .await
        .expect("remove object");
    attach(&f, &id).await.expect_err("no backend object");
    assert_eq!(
        get_attachment(&f, &id).await.map(|a| a.status),
        Some(AttachmentStatus::ErrorAttaching)
    );
    assert_eq!(f.exports.exported().len(), 1, "the user's export stays");
    assert!(accepts(&info).await, "the user's export still serves");
    f.exports.shutdown().await;
}

// === restart ===

/// The pid of `key`'s server, from the run dir.
fn pid_of(exports: &ExportManager, key: &ExportKey) -> nix::unistd::Pid {
    let text =
        std::fs::read_to_string(exports.run_dir().join(format!("{}.pid", key.export_name())))
            .expect("pid file");
    nix::unistd::Pid::from_raw(text.trim().parse().expect("a pid"))
}

/// A manager as a restarted service builds it: a new export manager on the same
/// run dir and ports, the same database and backend.
fn restarted(f: &Fixture) -> (Arc<ExportManager>, VolumeManager) {
    let exports = Arc::new(ExportManager::new(
        "127.0.0.1".into(),
        f.ports.clone(),
        f.dir.join("run"),
    ));
    let manager = manager(&f.db, &f.driver, &f.recorder, &exports);
    (exports, manager)
}

#[tokio::test]
async fn a_restart_adopts_running_exports_and_kills_unknown_ones() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &id).await.expect("attach");
    qemu_io(&info.uri(), WRITE, false).await.expect("write");
    // An export no attachment knows (its attachment's row was removed by hand).
    let stray = new_volume(&f).await;
    let stray_path = f.driver.volume_path(&stray.id).expect("path");
    let stray_info = f
        .exports
        .export(&stray.id, &stray_path, "raw", false)
        .await
        .expect("stray export");

    // The service stops: its exports go on serving.
    f.manager.release_exports().await;
    assert!(accepts(&info).await && accepts(&stray_info).await);

    let (_exports, next) = restarted(&f);
    let report = next.restore_exports().await.expect("restore");
    let key = ExportKey::new(&volume.id, false).expect("key");
    assert_eq!(report.adopted, vec![key.clone()]);
    assert_eq!(
        report.killed,
        vec![ExportKey::new(&stray.id, false).expect("key")]
    );
    assert!(report.reexported.is_empty() && report.moved.is_empty());
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("the adopted export still serves the bytes");
    assert!(!accepts(&stray_info).await, "the unknown export was killed");

    // The adopted export is the new manager's: the detach stops it.
    let detaching =
        f.db.start_detach(&id, &worker(&id, "detaching", now_ms() + 60_000))
            .await
            .expect("start detach");
    assert!(matches!(detaching, DetachStart::Started(_)));
    let unexported = next
        .detach_volume(
            &ctx(),
            HOST,
            DetachVolume {
                attachment_id: id.clone(),
            },
        )
        .await
        .expect("detach");
    assert!(unexported.unexported);
    assert!(!accepts(&info).await);
}

#[tokio::test]
async fn a_restart_exports_again_what_died_and_moves_a_taken_port() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let a = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &a).await.expect("attach");
    qemu_io(&info.uri(), WRITE, false).await.expect("write");
    let ro = reserve(&f, &volume, AttachMode::ReadOnly).await;
    let ro_info = attach(&f, &ro).await.expect("attach ro");
    f.manager.release_exports().await;
    // The machine rebooted, say: both servers are gone, and another program took
    // the read-write export's port meanwhile.
    let (rw_key, ro_key) = (
        ExportKey::new(&volume.id, false).expect("key"),
        ExportKey::new(&volume.id, true).expect("key"),
    );
    for key in [&rw_key, &ro_key] {
        nix::sys::signal::kill(pid_of(&f.exports, key), nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while accepts(&info).await || accepts(&ro_info).await {
        assert!(tokio::time::Instant::now() < deadline, "still serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _holder = std::net::TcpListener::bind(("127.0.0.1", info.port)).expect("take the port");

    let (exports, next) = restarted(&f);
    let report = next.restore_exports().await.expect("restore");
    assert!(report.adopted.is_empty(), "{report:?}");
    assert_eq!(report.reexported, vec![rw_key, ro_key]);
    assert_eq!(report.moved, vec![a.clone()], "only the rw export moved");
    let moved = get_attachment(&f, &a)
        .await
        .and_then(|row| row.connection_info)
        .expect("connection info");
    assert_ne!(moved.port, info.port);
    qemu_io(&moved.uri(), READ, false)
        .await
        .expect("the bytes through the new port");
    let kept = get_attachment(&f, &ro)
        .await
        .and_then(|row| row.connection_info)
        .expect("connection info");
    assert_eq!(kept, ro_info, "the read-only export got its old port back");
    qemu_io(&kept.uri(), READ, true)
        .await
        .expect("read-only again");
    exports.shutdown().await;
}

// === reconcile ===

#[tokio::test]
async fn reconcile_settles_stuck_attaching_and_detaching() {
    let f = fixture("file").await;
    let past = now_ms() - 1;
    // Stuck attaching, no export: failed.
    let lonely = new_volume(&f).await;
    let failed = reserve_due(&f, &lonely, AttachMode::ReadWrite, past).await;
    // Stuck attaching with its export running (the attach died after exporting).
    let exported = new_volume(&f).await;
    let finished = reserve_due(&f, &exported, AttachMode::ReadWrite, past).await;
    let path = f.driver.volume_path(&exported.id).expect("path");
    let info = f
        .exports
        .export(&exported.id, &path, "raw", false)
        .await
        .expect("export");
    // Stuck detaching: its export stops, the row goes.
    let leaving = new_volume(&f).await;
    let gone = reserve(&f, &leaving, AttachMode::ReadWrite).await;
    let gone_info = attach(&f, &gone).await.expect("attach");
    start_detach(&f, &gone, past).await;
    // Attaching, not overdue: left alone.
    let waiting = reserve(&f, &new_volume(&f).await, AttachMode::ReadWrite).await;

    let report = crate::reconciler::Reconciler::new(
        f.manager.shared(),
        Arc::new(scoria_common::testing::RecordingVolumes::default()),
    )
    .reconcile_attachments()
    .await
    .expect("reconcile");
    assert_eq!(report.failed, vec![failed.clone()]);
    assert_eq!(report.attached, vec![finished.clone()]);
    assert_eq!(report.detached, vec![gone.clone()]);

    let row = get_attachment(&f, &failed).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::ErrorAttaching);
    assert!(row.error_message.contains("deadline"), "{row:?}");
    assert_eq!(
        get_volume(&f, &lonely.id).await.status,
        VolumeStatus::Available
    );
    let row = get_attachment(&f, &finished).await.expect("row");
    assert_eq!(row.status, AttachmentStatus::Attached);
    assert_eq!(row.connection_info, Some(info.clone()));
    assert_eq!(
        get_volume(&f, &exported.id).await.status,
        VolumeStatus::InUse
    );
    qemu_io(&info.uri(), WRITE, false)
        .await
        .expect("the settled attachment works");
    assert!(get_attachment(&f, &gone).await.is_none());
    assert!(!accepts(&gone_info).await);
    assert_eq!(
        get_volume(&f, &leaving.id).await.status,
        VolumeStatus::Available
    );
    assert_eq!(
        get_attachment(&f, &waiting).await.map(|a| a.status),
        Some(AttachmentStatus::Attaching)
    );
    let again = crate::reconciler::Reconciler::new(
        f.manager.shared(),
        Arc::new(scoria_common::testing::RecordingVolumes::default()),
    )
    .reconcile_attachments()
    .await
    .expect("again");
    assert_eq!(again, Default::default(), "nothing left to settle");
    f.exports.shutdown().await;
}

// === snapshots and deletes of attached volumes ===

async fn snapshot_in_use(driver: &str) {
    let f = fixture(driver).await;
    let volume = new_volume(&f).await;
    let id = reserve(&f, &volume, AttachMode::ReadWrite).await;
    let info = attach(&f, &id).await.expect("attach");
    qemu_io(&info.uri(), WRITE, false).await.expect("write");
    let now = now_ms();
    let snapshot = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        volume_id: volume.id.clone(),
        name: "forced".into(),
        description: String::new(),
        size_gib: 1,
        status: SnapshotStatus::Creating,
        host: Some(HOST.into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let entry = WorkerEntry {
        kind: WorkerKind::Snapshot,
        resource_id: snapshot.id.clone(),
        status: "creating".into(),
        service: HOST.into(),
        deadline_ms: now + 60_000,
    };
    assert!(
        f.db.create_snapshot(&snapshot, &[VolumeStatus::InUse], &entry)
            .await
            .expect("insert snapshot")
    );
    f.manager
        .create_snapshot(
            &ctx(),
            HOST,
            CreateSnapshot {
                snapshot_id: snapshot.id.clone(),
                volume_id: volume.id.clone(),
            },
        )
        .await
        .expect("snapshot");
    let row =
        f.db.get_snapshot(&snapshot.id)
            .await
            .expect("get")
            .expect("row");
    assert_eq!(
        row.status,
        SnapshotStatus::Available,
        "{}",
        row.error_message
    );
    let path = f.driver.snapshot_path(&snapshot.id).expect("path");
    let output = tokio::process::Command::new("qemu-io")
        .args(["-r", "-f", f.driver.format(), "-c", READ])
        .arg(&path)
        .output()
        .await
        .expect("qemu-io");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !text.contains("failed"),
        "the snapshot holds the bytes written over NBD: {text}"
    );
    qemu_io(&info.uri(), READ, false)
        .await
        .expect("the export still serves");
    f.exports.shutdown().await;
}

#[tokio::test]
async fn a_forced_snapshot_of_an_attached_file_volume_works() {
    snapshot_in_use("file").await;
}

#[tokio::test]
async fn a_forced_snapshot_of_an_attached_qcow2_volume_works() {
    snapshot_in_use("qcow2").await;
}

#[tokio::test]
async fn deleting_a_volume_stops_its_exports() {
    let f = fixture("file").await;
    let volume = new_volume(&f).await;
    let path = f.driver.volume_path(&volume.id).expect("path");
    // Left exported (both modes) by attachments that failed.
    let rw = f
        .exports
        .export(&volume.id, &path, "raw", false)
        .await
        .expect("rw");
    let ro = f
        .exports
        .export(&volume.id, &path, "raw", true)
        .await
        .expect("ro");
    assert!(
        f.db.transition_volume_with_worker(
            &volume.id,
            &[VolumeStatus::Available],
            VolumeStatus::Deleting,
            None,
            None,
            None,
        )
        .await
        .expect("deleting")
    );
    f.manager
        .delete_volume(
            &ctx(),
            HOST,
            DeleteVolume {
                volume_id: volume.id.clone(),
            },
        )
        .await
        .expect("delete");
    assert!(f.db.get_volume(&volume.id).await.expect("get").is_none());
    assert!(!accepts(&rw).await && !accepts(&ro).await);
    assert!(f.exports.exported().is_empty());
    assert!(!path.exists());
}
