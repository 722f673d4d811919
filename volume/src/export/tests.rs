//! The export manager against the real `qemu-nbd`: bytes are written and read over
//! NBD and through the file with `qemu-io`, which fails when a pattern differs.
//! Each test takes its own block of ports ([`test_ports`]) and its own temp dir;
//! without qemu-utils the tests fail, saying so.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tempfile::TempDir;

use super::{ConnectionInfo, ExportError, ExportKey, ExportManager, nbd};

/// A manager on its own ports and run dir.
struct Fixture {
    _temp: TempDir,
    dir: PathBuf,
    manager: ExportManager,
}

fn fixture() -> Fixture {
    for tool in ["qemu-nbd", "qemu-img", "qemu-io"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "{tool} is missing: install qemu-utils"
        );
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_owned();
    let first = *test_ports().start();
    let manager = ExportManager::new("127.0.0.1".into(), first..=first + 9, dir.join("run"));
    Fixture {
        _temp: temp,
        dir,
        manager,
    }
}

/// 20 ports no other test of this process holds: a block of 20000-27999, from a
/// random place for each process, then the next block for each call.
pub(crate) fn test_ports() -> std::ops::RangeInclusive<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCKS: u16 = 400;
    static NEXT: AtomicU16 = AtomicU16::new(u16::MAX);
    let start = (uuid::Uuid::new_v4().as_u128() % u128::from(BLOCKS)) as u16;
    let _ = NEXT.compare_exchange(u16::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let block = NEXT.fetch_add(1, Ordering::SeqCst) % BLOCKS;
    let first = 20000 + block * 20;
    first..=first + 19
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn key(id: &str, read_only: bool) -> ExportKey {
    ExportKey::new(id, read_only).expect("a UUID")
}

/// A 16 MiB image of `format` for volume `id` in `dir`.
async fn image(dir: &Path, id: &str, format: &str) -> PathBuf {
    let path = dir.join(format!("volume-{id}.{format}"));
    let output = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(&path)
        .arg("16M")
        .output()
        .await
        .expect("qemu-img (install qemu-utils)");
    assert!(output.status.success(), "qemu-img create: {output:?}");
    path
}

/// `qemu-io [extra] -f <format> -c <command> <target>`: Ok, or Err with its output.
async fn qemu_io(extra: &[&str], format: &str, target: &str, command: &str) -> Result<(), String> {
    let output = tokio::process::Command::new("qemu-io")
        .args(extra)
        .args(["-f", format, "-c", command, target])
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

const WRITE: &str = "write -P 0xab 0 1M";
const READ: &str = "read -P 0xab 0 1M";

async fn round_trip(format: &str) {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, format).await;
    let info = f
        .manager
        .export(&id, &path, format, false)
        .await
        .expect("export");
    assert_eq!(info.protocol, "nbd");
    assert_eq!(info.host, "127.0.0.1");
    assert_eq!(info.export_name, format!("volume-{id}"));
    assert!(f.manager.port_range.contains(&info.port), "{info:?}");
    // Over NBD the client sees raw bytes, whatever the image's format.
    qemu_io(&[], "raw", &info.uri(), WRITE)
        .await
        .expect("write over NBD");

    let again = f
        .manager
        .export(&id, &path, format, false)
        .await
        .expect("export again");
    assert_eq!(again, info, "a second export is the same export");
    qemu_io(&[], "raw", &again.uri(), READ)
        .await
        .expect("read over NBD");
    assert!(!info.read_only);
    assert_eq!(f.manager.exported(), vec![(key(&id, false), info.clone())]);

    assert!(f.manager.unexport(&id, false).await.expect("unexport"));
    assert!(!accepts(&info).await, "the port is closed");
    assert!(f.manager.exported().is_empty());
    let pid_file = f.manager.run_dir().join(format!("volume-{id}.pid"));
    assert!(!pid_file.exists(), "the pid file is removed");
    qemu_io(&[], format, path.to_str().expect("utf-8"), READ)
        .await
        .expect("the bytes are in the file");
    assert!(
        !f.manager
            .unexport(&id, false)
            .await
            .expect("unexport twice"),
        "nothing ran the second time"
    );
}

#[tokio::test]
async fn a_raw_file_round_trips() {
    round_trip("raw").await;
}

#[tokio::test]
async fn a_qcow2_image_round_trips() {
    round_trip("qcow2").await;
}

#[tokio::test]
async fn a_read_only_export_refuses_writes() {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let info = f
        .manager
        .export(&id, &path, "raw", true)
        .await
        .expect("export");
    assert!(info.read_only);
    assert_eq!(info.export_name, format!("volume-{id}-ro"));
    let refused = qemu_io(&[], "raw", &info.uri(), WRITE).await;
    assert!(refused.is_err(), "a write to a read-only export succeeded");
    qemu_io(&["-r"], "raw", &info.uri(), "read -P 0 0 1M")
        .await
        .expect("reads are served");
    let err = f
        .manager
        .export(&id, &path, "qcow2", true)
        .await
        .expect_err("another format over the same export");
    assert!(matches!(err, ExportError::Conflict { .. }), "{err}");
    f.manager.shutdown().await;
}

/// A volume served read-write and read-only at once (multiattach in two modes):
/// two servers, the read-only one sees what was written and refuses its own writes.
/// A raw volume's later writes show through too; a qcow2 reader keeps the image's
/// metadata it read at its open (the module's documentation).
async fn both_modes(format: &str) {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, format).await;
    let rw = f
        .manager
        .export(&id, &path, format, false)
        .await
        .expect("read-write export");
    qemu_io(&[], "raw", &rw.uri(), WRITE)
        .await
        .expect("write through the read-write export");
    let ro = f
        .manager
        .export(&id, &path, format, true)
        .await
        .expect("read-only export beside it (no image lock taken)");
    assert_ne!(rw.port, ro.port);
    assert_ne!(rw.export_name, ro.export_name);
    qemu_io(&["-r"], "raw", &ro.uri(), READ)
        .await
        .expect("the read-only export reads the bytes");
    if format == "raw" {
        qemu_io(&[], "raw", &rw.uri(), "write -P 0x5c 1M 64k")
            .await
            .expect("write again");
        qemu_io(&["-r"], "raw", &ro.uri(), "read -P 0x5c 1M 64k")
            .await
            .expect("the read-only export reads a write made after it opened");
    }
    assert!(
        qemu_io(&[], "raw", &ro.uri(), WRITE).await.is_err(),
        "the read-only export took a write"
    );
    let mut listed = f.manager.exported();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        listed,
        vec![(key(&id, false), rw.clone()), (key(&id, true), ro.clone())]
    );
    assert!(f.manager.unexport(&id, true).await.expect("unexport ro"));
    assert!(!accepts(&ro).await, "the read-only export stopped");
    qemu_io(&[], "raw", &rw.uri(), READ)
        .await
        .expect("the read-write export still serves");
    assert!(f.manager.unexport_volume(&id).await.expect("unexport all"));
    assert!(!accepts(&rw).await);
}

#[tokio::test]
async fn a_raw_volume_serves_both_modes_at_once() {
    both_modes("raw").await;
}

#[tokio::test]
async fn a_qcow2_volume_serves_both_modes_at_once() {
    both_modes("qcow2").await;
}

#[test]
fn a_read_only_command_line_reads_back() {
    let spec = nbd::Spec {
        export_name: "volume-x-ro".into(),
        path: "/data/a,b/volume-x.qcow2".into(),
        format: "qcow2".into(),
        read_only: true,
        host: "127.0.0.1".into(),
        port: 10809,
    };
    let cmdline: Vec<String> = std::iter::once("qemu-nbd".to_owned())
        .chain(
            spec.args(Path::new("/run/x.pid"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect();
    assert!(
        cmdline.iter().any(|a| a.contains("force-share=on")),
        "{cmdline:?}"
    );
    assert_eq!(nbd::Spec::from_cmdline(&cmdline), Some(spec.clone()));
    let rw = nbd::Spec {
        read_only: false,
        export_name: "volume-x".into(),
        ..spec
    };
    let cmdline: Vec<String> = std::iter::once("qemu-nbd".to_owned())
        .chain(
            rw.args(Path::new("/run/x.pid"))
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect();
    assert_eq!(nbd::Spec::from_cmdline(&cmdline), Some(rw));
}

#[tokio::test]
async fn two_volumes_get_two_ports_and_a_taken_port_is_skipped() {
    let f = fixture();
    // Another program holds the first port of the range.
    let first = *f.manager.port_range.start();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", first));
    let (a, b) = (new_id(), new_id());
    let (path_a, path_b) = (
        image(&f.dir, &a, "raw").await,
        image(&f.dir, &b, "raw").await,
    );
    let info_a = f
        .manager
        .export(&a, &path_a, "raw", false)
        .await
        .expect("export a");
    let info_b = f
        .manager
        .export(&b, &path_b, "raw", false)
        .await
        .expect("export b");
    assert_ne!(info_a.port, info_b.port);
    assert_ne!(info_a.port, first, "the held port is skipped");
    qemu_io(&[], "raw", &info_b.uri(), WRITE)
        .await
        .expect("write b");
    let mut listed = f.manager.exported();
    listed.sort_by_key(|(_, info)| info.port);
    let mut expected = vec![(key(&a, false), info_a), (key(&b, false), info_b)];
    expected.sort_by_key(|(_, info)| info.port);
    assert_eq!(listed, expected);
    f.manager.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_every_export() {
    let f = fixture();
    let mut infos = Vec::new();
    for _ in 0..3 {
        let id = new_id();
        let path = image(&f.dir, &id, "raw").await;
        infos.push(
            f.manager
                .export(&id, &path, "raw", false)
                .await
                .expect("export"),
        );
    }
    f.manager.shutdown().await;
    for info in &infos {
        assert!(!accepts(info).await, "{} still accepts", info.uri());
    }
    assert!(f.manager.exported().is_empty());
}

#[tokio::test]
async fn reexport_keeps_the_port_when_it_is_free() {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let first = f
        .manager
        .export(&id, &path, "raw", false)
        .await
        .expect("export");
    f.manager.unexport(&id, false).await.expect("unexport");
    // A plain export would move on to the next port; the hint keeps this one.
    let again = f
        .manager
        .reexport(&id, &path, "raw", false, Some(first.port))
        .await
        .expect("reexport");
    assert_eq!(again, first);
    qemu_io(&[], "raw", &again.uri(), WRITE)
        .await
        .expect("write");
    f.manager.shutdown().await;
}

/// Starts `qemu-nbd` for volume `id` as an earlier run would have, pid file included,
/// and waits until it serves.
async fn leftover(f: &Fixture, id: &str, port: u16) -> (tokio::process::Child, ConnectionInfo) {
    let path = image(&f.dir, id, "raw").await;
    let spec = nbd::Spec {
        export_name: format!("volume-{id}"),
        path,
        format: "raw".into(),
        read_only: false,
        host: "127.0.0.1".into(),
        port,
    };
    let info = spec.info();
    std::fs::create_dir_all(f.manager.run_dir()).expect("run dir");
    let pid_file = f.manager.run_dir().join(format!("volume-{id}.pid"));
    let child = tokio::process::Command::new("qemu-nbd")
        .args(spec.args(&pid_file))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("qemu-nbd (install qemu-utils)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while nbd::read_pid_file(&pid_file).is_none() || !accepts(&info).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leftover does not serve"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, info)
}

#[tokio::test]
async fn cleanup_stale_kills_leftovers_and_keeps_exports() {
    let f = fixture();
    // The ten ports after the manager's range are this test's too.
    let base = *f.manager.port_range.end() + 1;
    let (stale, kept) = (new_id(), new_id());
    let (mut child, stale_info) = leftover(&f, &stale, base).await;
    // A pid file whose process is gone is removed without a kill.
    let dead_pid_file = f.manager.run_dir().join(format!("volume-{}.pid", new_id()));
    std::fs::write(&dead_pid_file, "999999999\n").expect("pid file");
    let path = image(&f.dir, &kept, "raw").await;
    let kept_info = f
        .manager
        .export(&kept, &path, "raw", false)
        .await
        .expect("export");

    let killed = f.manager.cleanup_stale().await.expect("cleanup");
    assert_eq!(killed, vec![key(&stale, false)]);
    tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the leftover exits")
        .expect("wait");
    assert!(!accepts(&stale_info).await);
    assert!(!dead_pid_file.exists());
    assert!(accepts(&kept_info).await, "our own export is kept");
    f.manager.shutdown().await;
}

#[tokio::test]
async fn adopt_or_clean_adopts_the_wanted_and_kills_the_rest() {
    let f = fixture();
    // The ten ports after the manager's range are this test's too.
    let base = *f.manager.port_range.end() + 1;
    let (wanted, unwanted, ours) = (new_id(), new_id(), new_id());
    let (mut wanted_child, wanted_info) = leftover(&f, &wanted, base).await;
    let (mut unwanted_child, _) = leftover(&f, &unwanted, base + 1).await;
    let path = image(&f.dir, &ours, "raw").await;
    f.manager
        .export(&ours, &path, "raw", false)
        .await
        .expect("export");

    let cleanup = f
        .manager
        .adopt_or_clean(&[key(&wanted, false)])
        .await
        .expect("adopt or clean");
    assert_eq!(cleanup.adopted, vec![key(&wanted, false)]);
    assert_eq!(cleanup.killed, vec![key(&unwanted, false)]);
    assert_eq!(cleanup.unexported, vec![key(&ours, false)]);
    tokio::time::timeout(Duration::from_secs(5), unwanted_child.wait())
        .await
        .expect("the unwanted leftover exits")
        .expect("wait");
    assert_eq!(
        f.manager.exported(),
        vec![(key(&wanted, false), wanted_info.clone())]
    );
    // The adopted server is the export now: exporting returns it, and it serves.
    let wanted_path = f.dir.join(format!("volume-{wanted}.raw"));
    let info = f
        .manager
        .export(&wanted, &wanted_path, "raw", false)
        .await
        .expect("export");
    assert_eq!(info, wanted_info);
    qemu_io(&[], "raw", &info.uri(), WRITE)
        .await
        .expect("write to the adopted");

    // Reap it here (it is this test's child) while the manager stops it.
    let (stopped, exited) = tokio::join!(f.manager.unexport(&wanted, false), wanted_child.wait());
    stopped.expect("unexport");
    exited.expect("the adopted server exits");
    assert!(!accepts(&info).await);
}

#[tokio::test]
async fn an_early_exit_carries_stderr() {
    let f = fixture();
    let id = new_id();
    let missing = f.dir.join("no-such-volume");
    let err = f
        .manager
        .export(&id, &missing, "raw", false)
        .await
        .expect_err("nothing to serve");
    let message = err.to_string();
    assert!(matches!(err, ExportError::Exited { .. }), "{message}");
    assert!(message.contains("no-such-volume"), "{message}");
    assert!(f.manager.exported().is_empty());
}

#[tokio::test]
async fn a_taken_port_is_told_apart_from_other_failures() {
    let f = fixture();
    let port = *f.manager.port_range.start();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold a port");
    let id = new_id();
    let spec = nbd::Spec {
        export_name: format!("volume-{id}"),
        path: image(&f.dir, &id, "raw").await,
        format: "raw".into(),
        read_only: false,
        host: "127.0.0.1".into(),
        port,
    };
    std::fs::create_dir_all(f.manager.run_dir()).expect("run dir");
    let err = nbd::Server::start(Path::new("qemu-nbd"), spec, f.manager.run_dir(), &id)
        .await
        .expect_err("the port is taken");
    assert!(err.is_addr_in_use(), "{err}");
}

#[tokio::test]
async fn a_missing_qemu_nbd_names_its_package() {
    let f = fixture();
    let manager = ExportManager::new("127.0.0.1".into(), test_ports(), f.dir.join("run"))
        .with_program("scoria-no-such-qemu-nbd");
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let err = manager
        .export(&id, &path, "raw", false)
        .await
        .expect_err("missing");
    assert!(
        err.to_string().contains("install the package qemu-utils"),
        "{err}"
    );
}

#[tokio::test]
async fn ids_must_be_uuids() {
    let f = fixture();
    let err = f
        .manager
        .export("../etc", Path::new("/dev/null"), "raw", false)
        .await
        .expect_err("not a UUID");
    assert!(matches!(err, ExportError::InvalidId { .. }), "{err}");
    let upper = new_id().to_uppercase();
    f.manager
        .unexport(&upper, false)
        .await
        .expect("unexporting nothing is fine");
}

#[tokio::test]
async fn an_exhausted_range_is_an_error() {
    let f = fixture();
    let port = *f.manager.port_range.start();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold a port");
    let manager = ExportManager::new("127.0.0.1".into(), port..=port, f.dir.join("run"));
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let err = manager
        .export(&id, &path, "raw", false)
        .await
        .expect_err("no port");
    assert!(matches!(err, ExportError::PortsExhausted { .. }), "{err}");
}

#[tokio::test]
async fn a_dead_server_is_restarted_on_its_port() {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let info = f
        .manager
        .export(&id, &path, "raw", false)
        .await
        .expect("export");
    qemu_io(&[], "raw", &info.uri(), WRITE)
        .await
        .expect("write");
    let pid_file = f.manager.run_dir().join(format!("volume-{id}.pid"));
    let pid = nbd::read_pid_file(&pid_file).expect("pid file");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while accepts(&info).await {
        assert!(tokio::time::Instant::now() < deadline, "still serves");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = f
        .manager
        .export(&id, &path, "raw", false)
        .await
        .expect("export again");
    assert_eq!(again, info, "the new server takes the old port");
    qemu_io(&[], "raw", &again.uri(), READ).await.expect("read");
    f.manager.shutdown().await;
}

/// The pid `manager` recorded for `key`'s server.
fn pid_of(manager: &ExportManager, key: &ExportKey) -> nix::unistd::Pid {
    let pid_file = manager.run_dir().join(format!("{}.pid", key.export_name()));
    nbd::read_pid_file(&pid_file).expect("pid file")
}

#[tokio::test]
async fn released_exports_outlive_their_manager_and_are_adopted_by_the_next() {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let rw = f
        .manager
        .export(&id, &path, "raw", false)
        .await
        .expect("export rw");
    let ro = f
        .manager
        .export(&id, &path, "raw", true)
        .await
        .expect("export ro");
    let pid = pid_of(&f.manager, &key(&id, false));
    // Its own process group: a signal to the service's group does not reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // `pid (comm) state ppid pgrp ...`
    let pgrp = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .expect("pgrp field");
    assert_eq!(
        pgrp,
        pid.to_string(),
        "qemu-nbd leads its own process group"
    );
    qemu_io(&[], "raw", &rw.uri(), WRITE).await.expect("write");
    let mut released = f.manager.release().await;
    released.sort();
    assert_eq!(released, vec![key(&id, false), key(&id, true)]);
    assert!(f.manager.exported().is_empty());
    let Fixture {
        _temp,
        dir,
        manager,
    } = f;
    let run_dir = manager.run_dir().to_owned();
    let range = manager.port_range.clone();
    drop(manager);
    assert!(accepts(&rw).await && accepts(&ro).await, "both still serve");

    // The next run adopts both; their clients see the same bytes.
    let next = ExportManager::new("127.0.0.1".into(), range, run_dir);
    let cleanup = next
        .adopt_or_clean(&[key(&id, false), key(&id, true)])
        .await
        .expect("adopt");
    let mut adopted = cleanup.adopted.clone();
    adopted.sort();
    assert_eq!(adopted, vec![key(&id, false), key(&id, true)]);
    assert!(cleanup.killed.is_empty());
    assert_eq!(
        next.serving(&id, true).await.expect("serving"),
        Some(ro.clone())
    );
    qemu_io(&["-r"], "raw", &ro.uri(), READ)
        .await
        .expect("read through the adopted read-only export");
    let again = next
        .export(&id, &path, "raw", false)
        .await
        .expect("export returns the adopted one");
    assert_eq!(again, rw);
    next.shutdown().await;
    assert!(!accepts(&rw).await && !accepts(&ro).await);
    drop(dir);
}

#[tokio::test]
async fn dropping_a_manager_kills_what_it_did_not_release() {
    let f = fixture();
    let id = new_id();
    let path = image(&f.dir, &id, "raw").await;
    let info = f
        .manager
        .export(&id, &path, "raw", false)
        .await
        .expect("export");
    let Fixture { _temp, manager, .. } = f;
    drop(manager);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while accepts(&info).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export outlived its dropped manager"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
