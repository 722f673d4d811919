//! Ports: one per export, taken ones skipped, kept on re-export, freed on shutdown.

use super::*;

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
