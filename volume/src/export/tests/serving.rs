//! Serving bytes over NBD: formats and modes.

use super::*;

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
