//! A restart: exports adopted, or started again.

use super::*;

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
