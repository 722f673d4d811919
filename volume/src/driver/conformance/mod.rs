//! The conformance suite every driver passes: one set of tests, instantiated for
//! each driver by [`instantiate!`], each on its own temp dir and built through
//! [`registry::build`] as the service builds it.
//!
//! Bytes are written and read through the object's real format with `qemu-io`
//! (`read -P` fails when the pattern differs) and sizes are checked with
//! `qemu-img info`, so a test cannot pass on what the driver believes of itself.
//! Without `qemu-io` / `qemu-img` the tests fail, naming the package to install.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use tempfile::TempDir;

use super::{DriverError, DriverSettings, GIB, ObjectKind, VolumeDriver, registry};

mod adopt;

use adopt::{
    an_existing_object_is_adopted_with_its_bytes,
    objects_that_cannot_be_adopted_are_refused_and_left_alone,
};

/// Runs every test below (and those of `adopt.rs`) for each driver.
macro_rules! instantiate {
    ($($test:ident),* $(,)?) => {
        mod file {
            $( #[tokio::test] async fn $test() { super::$test(super::super::file::NAME).await } )*
        }
        mod qcow2 {
            $( #[tokio::test] async fn $test() { super::$test(super::super::qcow2::NAME).await } )*
        }
    };
}

instantiate!(
    lifecycle_keeps_the_bytes,
    repeats_do_no_harm,
    missing_sources_and_bad_sizes_are_refused,
    ids_must_be_uuids,
    copies_are_thin,
    racing_creates_keep_one_object,
    stats_count_the_volumes,
    object_size_is_the_virtual_size,
    a_revert_brings_the_snapshot_bytes_back,
    an_existing_object_is_adopted_with_its_bytes,
    objects_that_cannot_be_adopted_are_refused_and_left_alone,
);

/// The first pattern written, the one the snapshot keeps.
const FIRST: u8 = 0xab;
/// The pattern written over it after the snapshot.
const SECOND: u8 = 0xcd;

/// A backend under test and its temp dir.
struct Backend {
    _dir: TempDir,
    dir: PathBuf,
    driver: Arc<dyn VolumeDriver>,
}

fn backend(name: &str) -> Backend {
    let temp = tempfile::tempdir().expect("tempdir");
    let settings = DriverSettings {
        name: name.to_owned(),
        dir: temp.path().join("backend"),
        capacity_gib: Some(100),
    };
    let driver = registry::build(&settings)
        .unwrap_or_else(|e| panic!("driver {name}: {e} (install qemu-utils for qcow2)"));
    assert_eq!(driver.name(), name);
    let dir = std::fs::canonicalize(&settings.dir).expect("backend dir");
    Backend {
        _dir: temp,
        dir,
        driver,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Backend {
    fn volume(&self, id: &str) -> PathBuf {
        let path = self.driver.volume_path(id).expect("volume path");
        assert!(path.is_absolute(), "{}", path.display());
        assert_eq!(path.parent(), Some(self.dir.as_path()));
        path
    }

    fn snapshot(&self, id: &str) -> PathBuf {
        let path = self.driver.snapshot_path(id).expect("snapshot path");
        assert!(path.is_absolute(), "{}", path.display());
        assert_eq!(path.parent(), Some(self.dir.as_path()));
        path
    }

    /// Writes `pattern` over the first MiB of `path`.
    async fn write(&self, path: &Path, pattern: u8) {
        let command = format!("write -P {pattern:#x} 0 1M");
        qemu_io(self.driver.format(), path, &command)
            .await
            .unwrap_or_else(|e| panic!("{command} {}: {e}", path.display()));
    }

    /// Whether the first MiB of `path` is all `pattern`.
    async fn holds(&self, path: &Path, pattern: u8) -> bool {
        let command = format!("read -P {pattern:#x} 0 1M");
        qemu_io(self.driver.format(), path, &command).await.is_ok()
    }

    async fn assert_holds(&self, path: &Path, pattern: u8) {
        assert!(
            self.holds(path, pattern).await,
            "{} does not hold {pattern:#x}",
            path.display()
        );
    }

    async fn size(&self, path: &Path) -> u64 {
        virtual_size(self.driver.format(), path).await
    }

    /// The names in the backend dir (temp files included).
    fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Runs `qemu-io -f <format> -c <command> <path>`; Err with its output if it fails.
pub(crate) async fn qemu_io(format: &str, path: &Path, command: &str) -> Result<(), String> {
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

/// The virtual size `qemu-img info` reports for `path`.
async fn virtual_size(format: &str, path: &Path) -> u64 {
    let output = tokio::process::Command::new("qemu-img")
        .args(["info", "-f", format, "--output=json"])
        .arg(path)
        .output()
        .await
        .unwrap_or_else(|e| panic!("qemu-img: {e} (install qemu-utils)"));
    assert!(
        output.status.success(),
        "qemu-img info {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(info["format"], format, "{info}");
    info["virtual-size"].as_u64().expect("virtual-size")
}

async fn lifecycle_keeps_the_bytes(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, from_snap, clone) = (new_id(), new_id(), new_id(), new_id());

    d.create_volume(&vol, 1).await.expect("create");
    assert!(d.volume_exists(&vol).await.expect("exists"));
    assert_eq!(b.size(&b.volume(&vol)).await, GIB);
    b.write(&b.volume(&vol), FIRST).await;
    b.assert_holds(&b.volume(&vol), FIRST).await;
    assert!(!b.holds(&b.volume(&vol), SECOND).await, "read -P must fail");

    assert!(!d.snapshot_exists(&snap).await.expect("exists"));
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    assert!(d.snapshot_exists(&snap).await.expect("exists"));
    assert_eq!(b.size(&b.snapshot(&snap)).await, GIB);
    b.write(&b.volume(&vol), SECOND).await;
    b.assert_holds(&b.snapshot(&snap), FIRST).await;

    d.create_volume_from_snapshot(&from_snap, &snap, 2)
        .await
        .expect("from snapshot");
    b.assert_holds(&b.volume(&from_snap), FIRST).await;
    assert_eq!(b.size(&b.volume(&from_snap)).await, 2 * GIB);

    d.create_cloned_volume(&clone, &vol, 3)
        .await
        .expect("clone");
    b.assert_holds(&b.volume(&clone), SECOND).await;
    assert_eq!(b.size(&b.volume(&clone)).await, 3 * GIB);

    d.extend_volume(&vol, 4).await.expect("extend");
    assert_eq!(b.size(&b.volume(&vol)).await, 4 * GIB);
    b.assert_holds(&b.volume(&vol), SECOND).await;
    d.extend_volume(&vol, 4)
        .await
        .expect("extend to the same size");
    let err = d.extend_volume(&vol, 2).await.expect_err("shrink");
    assert!(matches!(err, DriverError::Shrink { .. }), "{err}");
    assert_eq!(b.size(&b.volume(&vol)).await, 4 * GIB);

    // Lifetimes are independent: the source goes first.
    d.delete_volume(&vol).await.expect("delete volume");
    b.assert_holds(&b.snapshot(&snap), FIRST).await;
    b.assert_holds(&b.volume(&clone), SECOND).await;
    d.delete_snapshot(&snap).await.expect("delete snapshot");
    assert!(!d.snapshot_exists(&snap).await.expect("exists"));
    b.assert_holds(&b.volume(&from_snap), FIRST).await;
    for id in [&from_snap, &clone] {
        d.delete_volume(id).await.expect("delete");
        assert!(!d.volume_exists(id).await.expect("exists"));
    }
    assert_eq!(b.names(), Vec::<String>::new());
}

async fn repeats_do_no_harm(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, from_snap, clone) = (new_id(), new_id(), new_id(), new_id());

    d.create_volume(&vol, 1).await.expect("create");
    b.write(&b.volume(&vol), FIRST).await;
    d.create_volume(&vol, 1).await.expect("create again");
    b.assert_holds(&b.volume(&vol), FIRST).await;
    let err = d.create_volume(&vol, 2).await.expect_err("other size");
    assert!(matches!(err, DriverError::SizeMismatch { .. }), "{err}");

    // A redelivered snapshot keeps the point in time of the first.
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    b.write(&b.volume(&vol), SECOND).await;
    d.create_snapshot(&snap, &vol)
        .await
        .expect("snapshot again");
    b.assert_holds(&b.snapshot(&snap), FIRST).await;

    // A redelivered create never overwrites what was written since.
    d.create_volume_from_snapshot(&from_snap, &snap, 1)
        .await
        .expect("from snapshot");
    b.write(&b.volume(&from_snap), SECOND).await;
    d.create_volume_from_snapshot(&from_snap, &snap, 1)
        .await
        .expect("from snapshot again");
    b.assert_holds(&b.volume(&from_snap), SECOND).await;
    let err = d
        .create_volume_from_snapshot(&from_snap, &snap, 2)
        .await
        .expect_err("other size");
    assert!(matches!(err, DriverError::SizeMismatch { .. }), "{err}");

    d.create_cloned_volume(&clone, &vol, 1)
        .await
        .expect("clone");
    b.write(&b.volume(&clone), FIRST).await;
    d.create_cloned_volume(&clone, &vol, 1)
        .await
        .expect("clone again");
    b.assert_holds(&b.volume(&clone), FIRST).await;

    d.extend_volume(&vol, 2).await.expect("extend");
    d.extend_volume(&vol, 2).await.expect("extend again");
    assert_eq!(b.size(&b.volume(&vol)).await, 2 * GIB);

    // Redelivered after the source is gone: the new object is there, Ok.
    d.delete_snapshot(&snap).await.expect("delete snapshot");
    d.create_volume_from_snapshot(&from_snap, &snap, 1)
        .await
        .expect("from a deleted snapshot, again");
    for _ in 0..2 {
        d.delete_snapshot(&snap).await.expect("delete snapshot");
        for id in [&vol, &from_snap, &clone] {
            d.delete_volume(id).await.expect("delete");
        }
    }
    d.delete_snapshot(&new_id()).await.expect("never existed");
    assert_eq!(b.names(), Vec::<String>::new());
}

async fn missing_sources_and_bad_sizes_are_refused(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, other) = (new_id(), new_id(), new_id());
    let not_found = |r: Result<(), DriverError>| {
        let err = r.expect_err("missing source");
        assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    };
    not_found(d.create_snapshot(&snap, &vol).await);
    not_found(d.create_volume_from_snapshot(&other, &snap, 1).await);
    not_found(d.create_cloned_volume(&other, &vol, 1).await);
    not_found(d.extend_volume(&vol, 2).await);
    assert_eq!(b.names(), Vec::<String>::new());

    d.create_volume(&vol, 2).await.expect("create");
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    for result in [
        d.create_volume_from_snapshot(&other, &snap, 1).await,
        d.create_cloned_volume(&other, &vol, 1).await,
    ] {
        let err = result.expect_err("smaller than the source");
        assert!(matches!(err, DriverError::TooSmall { .. }), "{err}");
    }
    for result in [
        d.create_volume(&other, 0).await,
        d.extend_volume(&vol, 0).await,
        d.extend_volume(&vol, u64::MAX).await,
        d.create_cloned_volume(&other, &vol, u64::MAX).await,
    ] {
        let err = result.expect_err("bad size");
        assert!(matches!(err, DriverError::InvalidSize { .. }), "{err}");
    }
    assert!(!d.volume_exists(&other).await.expect("exists"));
    d.delete_snapshot(&snap).await.expect("delete");
    d.delete_volume(&vol).await.expect("delete");
    assert_eq!(b.names(), Vec::<String>::new());
}

async fn ids_must_be_uuids(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let victim = b.dir.parent().expect("parent").join("victim");
    std::fs::write(&victim, b"x").expect("write");
    let good = new_id();
    d.create_volume(&good, 1).await.expect("create");
    for bad in [
        "../victim",
        "",
        "volume",
        "/etc/passwd",
        "12345678-1234-1234-1234-1234567890ab/..",
    ] {
        let invalid = |r: Result<(), DriverError>| {
            let err = r.expect_err(bad);
            assert!(matches!(err, DriverError::InvalidId { .. }), "{bad}: {err}");
        };
        assert!(d.volume_path(bad).is_err() && d.snapshot_path(bad).is_err());
        invalid(d.extend_volume(bad, 2).await);
        invalid(d.create_snapshot(bad, &good).await);
        invalid(d.create_snapshot(&new_id(), bad).await);
        invalid(d.delete_snapshot(bad).await);
        invalid(d.snapshot_exists(bad).await.map(drop));
        invalid(d.create_volume_from_snapshot(bad, &new_id(), 1).await);
        invalid(d.create_volume_from_snapshot(&new_id(), bad, 1).await);
        invalid(d.create_cloned_volume(bad, &good, 1).await);
        invalid(d.create_cloned_volume(&new_id(), bad, 1).await);
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"x");
    // One id, one name, whatever form the UUID was given in.
    let upper = good.to_uppercase();
    assert_eq!(d.volume_path(&upper).expect("path"), b.volume(&good));
    d.delete_volume(&upper).await.expect("delete");
    assert_eq!(b.names(), Vec::<String>::new());
}

async fn copies_are_thin(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, clone) = (new_id(), new_id(), new_id());
    d.create_volume(&vol, 4).await.expect("create");
    b.write(&b.volume(&vol), FIRST).await;
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    d.create_cloned_volume(&clone, &vol, 8)
        .await
        .expect("clone");
    for path in [b.volume(&vol), b.snapshot(&snap), b.volume(&clone)] {
        let used = std::fs::metadata(&path).expect("stat").blocks() * 512;
        assert!(
            used < 64 << 20,
            "{} takes {used} bytes for 1 MiB written",
            path.display()
        );
    }
    b.assert_holds(&b.volume(&clone), FIRST).await;
}

async fn racing_creates_keep_one_object(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, clone) = (new_id(), new_id(), new_id());
    let (first, second) = tokio::join!(d.create_volume(&vol, 1), d.create_volume(&vol, 1));
    first.and(second).expect("both creates");
    b.write(&b.volume(&vol), FIRST).await;
    let (first, second) = tokio::join!(
        d.create_snapshot(&snap, &vol),
        d.create_snapshot(&snap, &vol)
    );
    first.and(second).expect("both snapshots");
    let (first, second) = tokio::join!(
        d.create_cloned_volume(&clone, &vol, 2),
        d.create_cloned_volume(&clone, &vol, 2)
    );
    first.and(second).expect("both clones");
    b.assert_holds(&b.snapshot(&snap), FIRST).await;
    b.assert_holds(&b.volume(&clone), FIRST).await;
    let mut names = [b.volume(&vol), b.volume(&clone), b.snapshot(&snap)]
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    names.sort();
    assert_eq!(b.names(), names, "one object each, no temp file");
}

async fn stats_count_the_volumes(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    assert!(["raw", "qcow2"].contains(&d.format()), "{}", d.format());
    let (one, two, snap) = (new_id(), new_id(), new_id());
    d.create_volume(&one, 1).await.expect("create");
    d.create_volume(&two, 3).await.expect("create");
    d.create_snapshot(&snap, &two).await.expect("snapshot");
    d.extend_volume(&one, 2).await.expect("extend");
    let stats = d.stats().await.expect("stats");
    assert_eq!(stats.total_gib, 100.0);
    // Snapshots are not provisioned volumes.
    assert_eq!(stats.allocated_gib, 5.0);
    // Thin: nothing written, so free is near the capacity or the filesystem's free.
    assert!(stats.free_gib > 0.0 && stats.free_gib <= 100.0, "{stats:?}");
}

async fn object_size_is_the_virtual_size(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let format = d.format();
    let (vol, snap) = (new_id(), new_id());
    assert_eq!(
        d.object_size(ObjectKind::Volume, &vol).await.expect("size"),
        None
    );
    d.create_volume(&vol, 1).await.expect("create");
    b.write(&b.volume(&vol), FIRST).await;
    let size = d.object_size(ObjectKind::Volume, &vol).await.expect("size");
    assert_eq!(size, Some(GIB));
    assert_eq!(size, Some(virtual_size(format, &b.volume(&vol)).await));
    d.extend_volume(&vol, 3).await.expect("extend");
    assert_eq!(
        d.object_size(ObjectKind::Volume, &vol).await.expect("size"),
        Some(3 * GIB)
    );
    assert_eq!(
        d.object_size(ObjectKind::Snapshot, &snap)
            .await
            .expect("size"),
        None
    );
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    assert_eq!(
        d.object_size(ObjectKind::Snapshot, &snap)
            .await
            .expect("size"),
        Some(virtual_size(format, &b.snapshot(&snap)).await)
    );
    let err = d
        .object_size(ObjectKind::Volume, "not-a-uuid")
        .await
        .expect_err("bad id");
    assert!(matches!(err, DriverError::InvalidId { .. }), "{err}");
}

async fn a_revert_brings_the_snapshot_bytes_back(name: &str) {
    let b = backend(name);
    let d = &b.driver;
    let (vol, snap, other) = (new_id(), new_id(), new_id());
    d.create_volume(&vol, 1).await.expect("create");
    b.write(&b.volume(&vol), FIRST).await;
    d.create_snapshot(&snap, &vol).await.expect("snapshot");
    b.write(&b.volume(&vol), SECOND).await;
    b.assert_holds(&b.volume(&vol), SECOND).await;

    d.revert_to_snapshot(&vol, &snap).await.expect("revert");
    b.assert_holds(&b.volume(&vol), FIRST).await;
    assert_eq!(b.size(&b.volume(&vol)).await, GIB);
    b.assert_holds(&b.snapshot(&snap), FIRST).await;
    // Again (a redelivered cast, the reconciler's redo): the same bytes.
    d.revert_to_snapshot(&vol, &snap)
        .await
        .expect("revert again");
    b.assert_holds(&b.volume(&vol), FIRST).await;
    // The volume is still writable, and the snapshot independent of it.
    b.write(&b.volume(&vol), SECOND).await;
    b.assert_holds(&b.snapshot(&snap), FIRST).await;

    // Refused, leaving the volume as it is: a missing snapshot or volume, an
    // extended volume.
    let err = d
        .revert_to_snapshot(&vol, &other)
        .await
        .expect_err("no snapshot");
    assert!(
        matches!(
            err,
            DriverError::NotFound {
                kind: "snapshot",
                ..
            }
        ),
        "{err}"
    );
    let err = d
        .revert_to_snapshot(&other, &snap)
        .await
        .expect_err("no volume");
    assert!(
        matches!(err, DriverError::NotFound { kind: "volume", .. }),
        "{err}"
    );
    d.extend_volume(&vol, 2).await.expect("extend");
    let err = d
        .revert_to_snapshot(&vol, &snap)
        .await
        .expect_err("sizes differ");
    assert!(matches!(err, DriverError::SizeMismatch { .. }), "{err}");
    b.assert_holds(&b.volume(&vol), SECOND).await;
    // No temporary file is left behind.
    let names = b.names();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}
