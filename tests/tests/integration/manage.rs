//! ManageVolume / ManageSnapshot / UnmanageVolume / UnmanageSnapshot through the
//! real processes, on the `file` and the `qcow2` drivers: an object made by
//! `qemu-img` outside Scoria (of a size that is no whole GiB) is adopted with
//! its real size rounded up and its bytes (checked with `qemu-io`), charged to
//! the project's quota; an unmanaged volume's object stays with its bytes and
//! can be managed again by its name; bad references are refused naming the
//! field, with nothing written.

use std::path::Path;

use scoria_tests::stack::{DbKind, Stack, qemu_io_file};
use tonic::Code;

use crate::support::pb;

/// Bytes in a GiB.
const GIB: u64 = 1 << 30;

/// Makes `name` in the stack's backend folder with `qemu-img create` (the
/// driver's format), `size` as qemu-img reads it, and writes `pattern` over
/// its first MiB.
fn foreign_object(stack: &Stack, format: &str, name: &str, size: &str, pattern: u8) {
    let path = stack.dir.path().join(&stack.backend).join(name);
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(&path)
        .arg(size)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img: {e} (install qemu-utils)"));
    assert!(
        out.status.success(),
        "qemu-img create {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    qemu_io_file(&path, &format!("write -P {pattern:#x} 0 1M")).expect("write the pattern");
}

/// The virtual size `qemu-img info` reports of `path`.
fn virtual_size(path: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .expect("qemu-img info");
    assert!(out.status.success(), "qemu-img info {}", path.display());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    info["virtual-size"].as_u64().expect("virtual-size")
}

fn manage_request(stack: &Stack, reference: &str) -> pb::ManageVolumeRequest {
    pb::ManageVolumeRequest {
        host: stack.volume_host.clone(),
        reference: reference.to_owned(),
        name: "legacy".into(),
        project_id: "p1".into(),
        ..Default::default()
    }
}

async fn an_object_is_adopted_and_given_up_with_its_bytes(driver: &str) {
    let env = [
        ("SCORIA_VOLUME_DRIVER", driver),
        ("SCORIA_VOLUME_BACKEND", driver),
    ];
    let (format, ext) = match driver {
        "qcow2" => ("qcow2", ".qcow2"),
        _ => ("raw", ""),
    };
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let admin = || stack.admin("admin-project");
    let disk = format!("legacy-disk{ext}");
    foreign_object(&stack, format, &disk, "1536M", 0x5a);

    // Adopted: 1.5 GiB becomes a 2 GiB volume of p1, the object renamed.
    let managing = admin()
        .manage_volume(manage_request(&stack, &disk))
        .await
        .unwrap_or_else(|e| panic!("manage: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(managing.status(), pb::VolumeStatus::Managing);
    assert_eq!(
        managing.size_gib, 2,
        "the real size rounded up to whole GiB"
    );
    assert_eq!(managing.project_id, "p1");
    let id = managing.id.clone();
    let volume = stack
        .wait_status("p1", &id, pb::VolumeStatus::Available)
        .await;
    assert_eq!(volume.host, stack.volume_host);
    let object = stack.backend_object("volume", &id);
    assert!(
        object.exists(),
        "{}: {:?}",
        object.display(),
        stack.backend_files()
    );
    assert!(
        !stack.dir.path().join(&stack.backend).join(&disk).exists(),
        "the old name is gone"
    );
    assert_eq!(virtual_size(&object), 2 * GIB, "grown to the volume's size");
    qemu_io_file(&object, "read -P 0x5a 0 1M")
        .unwrap_or_else(|e| panic!("the adopted bytes: {e}\n{}", stack.logs()));
    assert_eq!(stack.quota_usage("p1", "volumes").await.0, 1);
    assert_eq!(stack.quota_usage("p1", "gigabytes").await.0, 2);
    stack.assert_quota_exact().await;

    // A snapshot adopted for it, usable as any other: a volume made from it
    // holds its bytes.
    let snap_disk = format!("legacy-snap{ext}");
    foreign_object(&stack, format, &snap_disk, "2G", 0x6b);
    let snapshot = admin()
        .manage_snapshot(pb::ManageSnapshotRequest {
            volume_id: id.clone(),
            reference: snap_disk.clone(),
            name: "legacy snap".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("manage snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(snapshot.status(), pb::SnapshotStatus::Managing);
    assert_eq!(snapshot.size_gib, 2);
    stack
        .wait_snapshot_status("p1", &snapshot.id, pb::SnapshotStatus::Available)
        .await;
    let snap_object = stack.backend_object("snapshot", &snapshot.id);
    assert!(snap_object.exists(), "{:?}", stack.backend_files());
    let copy = stack
        .volumes("p1")
        .create_volume(pb::CreateVolumeRequest {
            size_gib: 2,
            source: Some(pb::create_volume_request::Source::SnapshotId(
                snapshot.id.clone(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("from snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    stack
        .wait_status("p1", &copy.id, pb::VolumeStatus::Available)
        .await;
    qemu_io_file(
        &stack.backend_object("volume", &copy.id),
        "read -P 0x6b 0 1M",
    )
    .unwrap_or_else(|e| panic!("the managed snapshot's bytes: {e}\n{}", stack.logs()));

    // Not while it has a snapshot; then the snapshot, then the volume, go
    // without their objects.
    let err = admin()
        .unmanage_volume(pb::UnmanageVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .expect_err("has a snapshot");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&snapshot.id), "{err:?}");
    assert!(
        err.message().contains("unmanage"),
        "says what to do: {err:?}"
    );
    let gone = admin()
        .unmanage_snapshot(pb::UnmanageSnapshotRequest {
            snapshot_id: snapshot.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("unmanage snapshot: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(gone.id, snapshot.id);
    let err = stack
        .as_member("p1")
        .get_snapshot(&snapshot.id)
        .await
        .expect_err("unmanaged");
    assert_eq!(err.code(), Code::NotFound);
    assert!(snap_object.exists(), "the snapshot's object stays");
    let gone = admin()
        .unmanage_volume(pb::UnmanageVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("unmanage: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(gone.id, id);
    let err = stack.get_volume("p1", &id).await.expect_err("unmanaged");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        stack.quota_usage("p1", "gigabytes").await.0,
        2,
        "only the volume made from the snapshot is charged now"
    );
    stack.assert_quota_exact().await;
    // Give the services time to act on anything they (wrongly) still hold.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(object.exists(), "the unmanaged volume's object stays");
    qemu_io_file(&object, "read -P 0x5a 0 1M").expect("with its bytes");

    // Managed again by the name it was left under.
    let name = object
        .file_name()
        .and_then(|n| n.to_str())
        .expect("object name")
        .to_owned();
    let again = admin()
        .manage_volume(manage_request(&stack, &name))
        .await
        .unwrap_or_else(|e| panic!("manage again: {e:?}\n{}", stack.logs()))
        .into_inner();
    assert_eq!(again.size_gib, 2);
    stack
        .wait_status("p1", &again.id, pb::VolumeStatus::Available)
        .await;
    qemu_io_file(
        &stack.backend_object("volume", &again.id),
        "read -P 0x5a 0 1M",
    )
    .expect("the bytes, adopted twice");

    // A managed volume's object cannot be adopted a second time.
    let managed = stack.backend_object("volume", &again.id);
    let managed = managed.file_name().and_then(|n| n.to_str()).expect("name");
    let err = admin()
        .manage_volume(manage_request(&stack, managed))
        .await
        .expect_err("managed already");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    stack.assert_quota_exact().await;
}

#[tokio::test]
async fn an_object_is_adopted_and_given_up_with_its_bytes_on_file() {
    an_object_is_adopted_and_given_up_with_its_bytes("file").await;
}

#[tokio::test]
async fn an_object_is_adopted_and_given_up_with_its_bytes_on_qcow2() {
    an_object_is_adopted_and_given_up_with_its_bytes("qcow2").await;
}

/// Every refusal names its field (or says what is wrong) and writes nothing.
#[tokio::test]
async fn bad_manage_requests_are_refused_and_write_nothing() {
    let env = [
        ("SCORIA_VOLUME_DRIVER", "qcow2"),
        ("SCORIA_VOLUME_BACKEND", "qcow2"),
    ];
    let stack = Stack::start_with(DbKind::Sqlite, &env).await;
    let dir = stack.dir.path().join(&stack.backend);
    foreign_object(&stack, "qcow2", "base.qcow2", "1G", 0x11);
    // An overlay reads its backing file: adopting it would expose that file.
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(dir.join("base.qcow2"))
        .arg(dir.join("overlay.qcow2"))
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("raw.img"), vec![0u8; 4096]).expect("a raw file");
    std::os::unix::fs::symlink(dir.join("base.qcow2"), dir.join("link.qcow2")).expect("symlink");

    let refused = [
        ("missing.qcow2", Code::NotFound, "reference"),
        ("../base.qcow2", Code::InvalidArgument, "reference"),
        ("", Code::InvalidArgument, "reference"),
        (".hidden", Code::InvalidArgument, "reference"),
        ("overlay.qcow2", Code::InvalidArgument, "backing file"),
        ("raw.img", Code::InvalidArgument, "qcow2"),
        ("link.qcow2", Code::InvalidArgument, "symbolic link"),
    ];
    for (reference, code, says) in refused {
        let err = stack
            .admin("admin-project")
            .manage_volume(manage_request(&stack, reference))
            .await
            .expect_err(reference);
        assert_eq!(err.code(), code, "{reference:?}: {err:?}");
        assert!(err.message().contains(says), "{reference:?}: {err:?}");
    }
    let mut bad_host = manage_request(&stack, "base.qcow2");
    bad_host.host = "nowhere@qcow2".into();
    let err = stack
        .admin("admin-project")
        .manage_volume(bad_host)
        .await
        .expect_err("unknown host");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("host"), "{err:?}");
    let mut bad_type = manage_request(&stack, "base.qcow2");
    bad_type.volume_type = "no-such-type".into();
    let err = stack
        .admin("admin-project")
        .manage_volume(bad_type)
        .await
        .expect_err("unknown type");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A type whose extra specs the backend does not satisfy.
    stack
        .types_admin("admin-project")
        .create_volume_type(pb::CreateVolumeTypeRequest {
            name: "elsewhere".to_owned(),
            extra_specs: [("volume_backend_name".to_owned(), "other".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .expect("type elsewhere");
    let mut unfit = manage_request(&stack, "base.qcow2");
    unfit.volume_type = "elsewhere".into();
    let err = stack
        .admin("admin-project")
        .manage_volume(unfit)
        .await
        .expect_err("a type the backend does not satisfy");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("volume_type"), "{err:?}");
    // Admins only.
    let err = stack
        .as_member("p1")
        .admin()
        .manage_volume(manage_request(&stack, "base.qcow2"))
        .await
        .expect_err("a member");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let volumes = stack
        .db
        .list_volumes(&scoria_common::db::VolumeQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(volumes.is_empty(), "nothing written: {volumes:?}");
    for name in ["base.qcow2", "overlay.qcow2", "raw.img", "link.qcow2"] {
        assert!(
            dir.join(name).symlink_metadata().is_ok(),
            "{name} left alone"
        );
    }
    assert_eq!(stack.quota_usage("p1", "volumes").await.0, 0);
}
