//! Driver objects through `image.rs`, with the real drivers: bytes written and
//! checked through the object's format by `qemu-io`, raw and qcow2, restored
//! onto the other backend too.

use std::{path::Path, sync::Arc};

use crate::{
    backup::{
        BackupError, DirTarget, SCRATCH_PREFIX, raw_source, restore_into_volume, sweep_scratch,
        testkit::{Fixture, new_id},
    },
    driver::{FileDriver, ObjectKind, Qcow2Driver, VolumeDriver},
};

/// Runs `qemu-io -f <format> -c <command> <path>`; Err with its output if it fails.
async fn qemu_io(format: &str, path: &Path, command: &str) -> Result<(), String> {
    let output = tokio::process::Command::new("qemu-io")
        .args(["-f", format, "-c", command])
        .arg(path)
        .output()
        .await
        .unwrap_or_else(|e| panic!("qemu-io: {e} (install qemu-utils)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && !stdout.contains("failed") {
        Ok(())
    } else {
        Err(format!(
            "{}: {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The patterns the tests write: (byte, offset, length), as `qemu-io` takes them.
const PATTERNS: [(u8, &str, &str); 3] = [
    (0xab, "0", "1M"),
    (0xcd, "100M", "5M"),
    (0x5a, "1023M", "1M"),
];

async fn write_patterns(driver: &dyn VolumeDriver, path: &Path) {
    for (byte, at, len) in PATTERNS {
        let command = format!("write -P {byte:#x} {at} {len}");
        qemu_io(driver.format(), path, &command)
            .await
            .unwrap_or_else(|e| panic!("{command} {}: {e}", path.display()));
    }
}

async fn assert_patterns(driver: &dyn VolumeDriver, path: &Path) {
    for (byte, at, len) in PATTERNS {
        let command = format!("read -P {byte:#x} {at} {len}");
        qemu_io(driver.format(), path, &command)
            .await
            .unwrap_or_else(|e| panic!("{} lost {byte:#x} at {at}: {e}", path.display()));
    }
    // Between them, zeros (the old bytes there are gone).
    qemu_io(driver.format(), path, "read -P 0 190M 30M")
        .await
        .unwrap_or_else(|e| panic!("{} is not zero at 190M: {e}", path.display()));
}

struct Backends {
    _dir: tempfile::TempDir,
    file: Arc<dyn VolumeDriver>,
    qcow2: Arc<dyn VolumeDriver>,
    fx: Fixture,
}

fn backends() -> Backends {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = Arc::new(FileDriver::new(dir.path().join("file"), None).expect("file driver"));
    let qcow2 = Arc::new(
        Qcow2Driver::new(dir.path().join("qcow2"), None)
            .expect("qcow2 driver (install qemu-utils)"),
    );
    let target = Arc::new(DirTarget::open(dir.path().join("repo")).expect("target"));
    Backends {
        _dir: dir,
        file,
        qcow2,
        fx: Fixture::new(target),
    }
}

/// Backs `kind` object `id` of `driver` up as backup `backup_id`.
async fn backup(b: &Backends, driver: &dyn VolumeDriver, kind: ObjectKind, id: &str) -> String {
    let scratch = b.fx.engine.scratch();
    let raw = raw_source(driver, kind, id, scratch)
        .await
        .expect("raw source");
    assert_eq!(raw.is_copy(), driver.format() == "qcow2");
    let backup_id = new_id();
    b.fx.engine
        .backup(&backup_id, id, raw.path(), None)
        .await
        .expect("backup");
    drop(raw);
    assert_no_scratch(scratch);
    backup_id
}

fn assert_no_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let name = entry.expect("entry").file_name();
        assert!(
            !name.to_string_lossy().starts_with(SCRATCH_PREFIX),
            "{name:?} left"
        );
    }
}

/// A volume of `size_gib` on `driver` holding other bytes than the backup.
async fn dirty_volume(driver: &dyn VolumeDriver, size_gib: u64) -> String {
    let id = new_id();
    driver.create_volume(&id, size_gib).await.expect("create");
    let path = driver.volume_path(&id).expect("path");
    for command in [
        "write -P 0xee 0 8M",
        "write -P 0xee 100M 8M",
        "write -P 0xee 190M 30M",
        "write -P 0xee 1030M 8M",
    ] {
        qemu_io(driver.format(), &path, command)
            .await
            .expect("dirty");
    }
    id
}

#[tokio::test]
async fn volumes_restore_on_their_own_and_the_other_backend() {
    let b = backends();
    for (from, to) in [
        (&b.file, &b.qcow2),
        (&b.qcow2, &b.file),
        (&b.qcow2, &b.qcow2),
        (&b.file, &b.file),
    ] {
        let source = new_id();
        from.create_volume(&source, 1).await.expect("create");
        write_patterns(from.as_ref(), &from.volume_path(&source).expect("path")).await;
        let backup_id = backup(&b, from.as_ref(), ObjectKind::Volume, &source).await;
        // Into a larger volume holding other bytes: the patterns, zeros elsewhere.
        let dest = dirty_volume(to.as_ref(), 2).await;
        let scratch = b.fx.engine.scratch();
        restore_into_volume(&b.fx.engine, &backup_id, to.as_ref(), &dest, scratch)
            .await
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.name(), to.name()));
        assert_no_scratch(scratch);
        let path = to.volume_path(&dest).expect("path");
        assert_patterns(to.as_ref(), &path).await;
        qemu_io(to.format(), &path, "read -P 0 1030M 8M")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} -> {}: the tail kept old bytes: {e}",
                    from.name(),
                    to.name()
                )
            });
    }
}

#[tokio::test]
async fn a_qcow2_overlay_backs_up_with_its_backing_chain() {
    let b = backends();
    let driver = b.qcow2.as_ref();
    let base = new_id();
    driver.create_volume(&base, 1).await.expect("create");
    let base_path = driver.volume_path(&base).expect("path");
    qemu_io("qcow2", &base_path, "write -P 0x11 0 2M")
        .await
        .expect("write base");
    // A snapshot made as an overlay on the volume, written over in part.
    let snapshot = new_id();
    let overlay = driver.snapshot_path(&snapshot).expect("path");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base_path)
        .arg(&overlay)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    qemu_io("qcow2", &overlay, "write -P 0x22 1M 1M")
        .await
        .expect("write overlay");
    let backup_id = backup(&b, driver, ObjectKind::Snapshot, &snapshot).await;
    let dest = new_id();
    b.file.create_volume(&dest, 1).await.expect("create");
    let scratch = b.fx.engine.scratch();
    restore_into_volume(&b.fx.engine, &backup_id, b.file.as_ref(), &dest, scratch)
        .await
        .expect("restore");
    let path = b.file.volume_path(&dest).expect("path");
    qemu_io("raw", &path, "read -P 0x11 0 1M")
        .await
        .expect("the base's bytes");
    qemu_io("raw", &path, "read -P 0x22 1M 1M")
        .await
        .expect("the overlay's bytes");
}

#[tokio::test]
async fn missing_objects_small_volumes_and_scratch_leftovers() {
    let b = backends();
    let scratch = b.fx.engine.scratch().to_owned();
    for driver in [&b.file, &b.qcow2] {
        let err = raw_source(driver.as_ref(), ObjectKind::Snapshot, &new_id(), &scratch)
            .await
            .expect_err("no such snapshot");
        assert!(
            matches!(
                err,
                BackupError::ObjectMissing {
                    kind: "snapshot",
                    ..
                }
            ),
            "{err}"
        );
        let err = restore_into_volume(
            &b.fx.engine,
            &new_id(),
            driver.as_ref(),
            &new_id(),
            &scratch,
        )
        .await
        .expect_err("no such volume");
        assert!(
            matches!(err, BackupError::ObjectMissing { kind: "volume", .. }),
            "{err}"
        );
    }
    // A 2 GiB backup does not fit a 1 GiB volume.
    let big = new_id();
    b.qcow2.create_volume(&big, 2).await.expect("create");
    let backup_id = backup(&b, b.qcow2.as_ref(), ObjectKind::Volume, &big).await;
    for driver in [&b.file, &b.qcow2] {
        let small = new_id();
        driver.create_volume(&small, 1).await.expect("create");
        let err = restore_into_volume(&b.fx.engine, &backup_id, driver.as_ref(), &small, &scratch)
            .await
            .expect_err("too small");
        assert!(
            matches!(err, BackupError::DestTooSmall { .. }),
            "{}: {err}",
            driver.name()
        );
    }

    std::fs::create_dir_all(&scratch).expect("scratch");
    std::fs::write(scratch.join(format!("{SCRATCH_PREFIX}x-1.raw")), b"left").expect("leftover");
    std::fs::write(scratch.join("unrelated"), b"kept").expect("other");
    assert_eq!(sweep_scratch(&scratch).expect("sweep"), 1);
    assert!(scratch.join("unrelated").exists());
    assert_no_scratch(&scratch);
    assert_eq!(sweep_scratch(&b.fx.path("none")).expect("no dir"), 0);
}
