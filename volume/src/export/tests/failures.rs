//! Failures: early exits, taken ports, a missing `qemu-nbd`, bad ids, a full range.

use super::*;

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
