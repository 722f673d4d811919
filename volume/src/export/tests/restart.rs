//! Leftovers of an earlier run: killed, adopted, released; dead servers restarted.

use super::*;

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
