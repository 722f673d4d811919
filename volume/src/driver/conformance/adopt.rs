//! The conformance tests of adopting objects made outside the driver
//! (ManageVolume / ManageSnapshot), instantiated with the rest in `mod.rs`.

use std::path::PathBuf;

use super::{Backend, FIRST, SECOND, backend, new_id};
use crate::driver::{DriverError, GIB, ObjectKind};

/// Makes object `name` in the backend's folder outside the driver, with
/// `qemu-img create` in the driver's format, of `size` (as qemu-img reads it).
async fn foreign(b: &Backend, name: &str, size: &str) -> PathBuf {
    let path = b.dir.join(name);
    let output = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", b.driver.format()])
        .arg(&path)
        .arg(size)
        .output()
        .await
        .unwrap_or_else(|e| panic!("qemu-img: {e} (install qemu-utils)"));
    assert!(
        output.status.success(),
        "qemu-img create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

pub(super) async fn an_existing_object_is_adopted_with_its_bytes(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let legacy = foreign(&b, "legacy disk", "1536M").await;
    b.write(&legacy, FIRST).await;
    let bytes = d
        .inspect_existing(ObjectKind::Volume, "legacy disk")
        .await
        .expect("inspect");
    assert_eq!(bytes, 3 * GIB / 2);

    let vol = new_id();
    d.manage_existing(ObjectKind::Volume, &vol, "legacy disk", 2)
        .await
        .expect("manage");
    assert!(!legacy.exists(), "the old name is gone");
    assert_eq!(b.size(&b.volume(&vol)).await, 2 * GIB, "grown to whole GiB");
    b.assert_holds(&b.volume(&vol), FIRST).await;
    // Again (a redelivered cast): done already.
    d.manage_existing(ObjectKind::Volume, &vol, "legacy disk", 2)
        .await
        .expect("manage again");
    // A managed volume is an ordinary one.
    d.extend_volume(&vol, 3).await.expect("extend");
    b.write(&b.volume(&vol), SECOND).await;

    // A snapshot, of a whole size: not grown, just renamed.
    let snap_file = foreign(&b, "legacy-snap.img", "1G").await;
    b.write(&snap_file, FIRST).await;
    let snap = new_id();
    d.manage_existing(ObjectKind::Snapshot, &snap, "legacy-snap.img", 1)
        .await
        .expect("manage snapshot");
    assert!(d.snapshot_exists(&snap).await.expect("exists"));
    let from = new_id();
    d.create_volume_from_snapshot(&from, &snap, 1)
        .await
        .expect("from snapshot");
    b.assert_holds(&b.volume(&from), FIRST).await;
    let names = b.names();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

pub(super) async fn objects_that_cannot_be_adopted_are_refused_and_left_alone(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let kept = foreign(&b, "kept", "1G").await;
    std::fs::create_dir(b.dir.join("a-dir")).expect("dir");
    std::fs::File::create(b.dir.join("empty")).expect("empty file");
    std::os::unix::fs::symlink(&kept, b.dir.join("link")).expect("symlink");
    for (reference, why) in [
        ("", "empty name"),
        ("../kept", "a path"),
        ("..", "the parent"),
        (".kept.tmp-1", "a temp name"),
        ("a-dir", "a directory"),
        ("empty", "an empty file"),
        ("link", "a symbolic link"),
    ] {
        let err = d
            .inspect_existing(ObjectKind::Volume, reference)
            .await
            .expect_err(why);
        assert!(
            matches!(
                err,
                DriverError::Unadoptable { .. } | DriverError::BadFormat { .. }
            ),
            "{why}: {err}"
        );
        let err = d
            .manage_existing(ObjectKind::Volume, &new_id(), reference, 1)
            .await
            .expect_err(why);
        assert!(
            !matches!(err, DriverError::Unsupported { .. }),
            "{why}: {err}"
        );
    }
    let err = d
        .inspect_existing(ObjectKind::Volume, "missing")
        .await
        .expect_err("missing");
    assert!(
        matches!(err, DriverError::NotFound { kind: "object", .. }),
        "{err}"
    );
    // Never over an existing object, never shrinking one.
    let vol = new_id();
    d.create_volume(&vol, 1).await.expect("create");
    b.write(&b.volume(&vol), SECOND).await;
    let err = d
        .manage_existing(ObjectKind::Volume, &vol, "kept", 1)
        .await
        .expect_err("target exists");
    assert!(matches!(err, DriverError::Unadoptable { .. }), "{err}");
    b.assert_holds(&b.volume(&vol), SECOND).await;
    let err = d
        .manage_existing(ObjectKind::Volume, &new_id(), "kept", 0)
        .await
        .expect_err("no size");
    assert!(matches!(err, DriverError::InvalidSize { .. }), "{err}");
    assert!(kept.exists() && b.dir.join("link").exists() && b.dir.join("empty").exists());
    assert_eq!(b.size(&kept).await, GIB, "left as it was");
}
