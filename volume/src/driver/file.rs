//! The `file` driver: each volume is a sparse raw file `volume-<id>` in the
//! backend's directory (`<data_dir>/<backend>/`), each snapshot a raw file
//! `snapshot-<id>`.
//!
//! A volume is sized with `set_len` (no zeros are written, so it takes no blocks
//! until used). Snapshots and clones are whole copies, so their lifetimes are
//! independent of their sources': `cp --reflink=auto --sparse=always` shares the
//! extents where the filesystem can (btrfs, XFS) and elsewhere copies only the
//! data, leaving holes where the source has holes or zeros. (`std::fs::copy` would
//! not do: on a filesystem without reflinks, `copy_file_range` writes the holes out
//! as zeros.) [`ObjectDriver`] publishes each object atomically.

use std::{fs::Metadata, path::Path};

use async_trait::async_trait;
use nix::fcntl::{Flock, FlockArg};

use super::{
    DriverResult,
    command::Tool,
    objects::{Format, ObjectDriver, blocking, io},
};

/// The driver's name, in `volume.driver`.
pub const NAME: &str = "file";

/// Sparse raw files in a directory.
pub type FileDriver = ObjectDriver<Raw>;

impl FileDriver {
    /// A driver keeping its files in `dir` (created if missing), reporting
    /// `capacity_gib` (None: the size of the filesystem holding `dir`).
    pub fn new(
        dir: impl Into<std::path::PathBuf>,
        capacity_gib: Option<u64>,
    ) -> DriverResult<Self> {
        Self::with_format(dir, capacity_gib, Raw::new())
    }
}

/// The raw format: a file's bytes are the volume's bytes.
#[derive(Debug, Clone)]
pub struct Raw {
    cp: Tool,
}

impl Raw {
    /// Raw files, copied with coreutils' `cp`.
    pub fn new() -> Self {
        Self {
            cp: Tool::new("cp", "coreutils"),
        }
    }
}

impl Default for Raw {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Format for Raw {
    const DRIVER: &'static str = NAME;
    const FORMAT: &'static str = "raw";
    const EXTENSION: &'static str = "";

    fn virtual_size(&self, _path: &Path, meta: &Metadata) -> DriverResult<u64> {
        Ok(meta.len())
    }

    async fn create(&self, path: &Path, bytes: u64) -> DriverResult<()> {
        let path = path.to_owned();
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io("create", &path))?;
            file.set_len(bytes).map_err(io("set length of", &path))
        })
        .await
    }

    async fn copy(&self, src: &Path, dst: &Path) -> DriverResult<()> {
        let args = [
            "--reflink=auto".as_ref(),
            "--sparse=always".as_ref(),
            "--".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
        ];
        self.cp.run(args).await
    }

    async fn grow(&self, path: &Path, bytes: u64) -> DriverResult<()> {
        let path = path.to_owned();
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("open", &path))?;
            // Two extends at once must not end with the smaller size: the length
            // is checked and set under an exclusive lock (qemu-img's resize takes
            // its own image lock).
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| io("lock", &path)(e.into()))?;
            let len = file.metadata().map_err(io("stat", &path))?.len();
            if len < bytes {
                file.set_len(bytes).map_err(io("set length of", &path))?;
                file.sync_all().map_err(io("sync", &path))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::driver::{DriverError, GIB, VolumeDriver};

    fn driver() -> (tempfile::TempDir, FileDriver) {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = FileDriver::new(dir.path().join("file"), Some(100)).expect("driver");
        (dir, driver)
    }

    #[tokio::test]
    async fn create_makes_an_exact_sparse_file() {
        let (_dir, driver) = driver();
        let id = uuid::Uuid::new_v4().to_string();
        driver.create_volume(&id, 2).await.expect("create");
        let meta = std::fs::metadata(driver.volume_path(&id).expect("path")).expect("stat");
        assert_eq!(meta.len(), 2 * GIB);
        assert!(
            meta.blocks() * 512 < GIB / 1024,
            "not sparse: {} blocks",
            meta.blocks()
        );
        assert!(driver.volume_exists(&id).await.expect("exists"));
        // Nothing but the volume in the directory (no temp file left).
        let names: Vec<_> = std::fs::read_dir(driver.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("volume-{id}")]);
    }

    #[tokio::test]
    async fn create_and_delete_are_idempotent() {
        let (_dir, driver) = driver();
        let id = uuid::Uuid::new_v4().to_string();
        driver.create_volume(&id, 1).await.expect("create");
        driver.create_volume(&id, 1).await.expect("create again");
        assert!(matches!(
            driver.create_volume(&id, 3).await,
            Err(DriverError::SizeMismatch { .. })
        ));
        driver.delete_volume(&id).await.expect("delete");
        assert!(!driver.volume_exists(&id).await.expect("exists"));
        driver.delete_volume(&id).await.expect("delete again");
    }

    #[tokio::test]
    async fn bad_ids_and_sizes_are_refused() {
        let (dir, driver) = driver();
        std::fs::write(dir.path().join("victim"), b"x").expect("write");
        for id in [
            "../victim",
            "",
            "volume",
            "/etc/passwd",
            "12345678-1234-1234-1234-1234567890ab/..",
        ] {
            assert!(
                matches!(
                    driver.create_volume(id, 1).await,
                    Err(DriverError::InvalidId { .. })
                ),
                "{id}"
            );
            assert!(
                matches!(
                    driver.delete_volume(id).await,
                    Err(DriverError::InvalidId { .. })
                ),
                "{id}"
            );
        }
        assert!(dir.path().join("victim").exists());
        let id = uuid::Uuid::new_v4().to_string();
        assert!(matches!(
            driver.create_volume(&id, 0).await,
            Err(DriverError::InvalidSize { .. })
        ));
        assert!(matches!(
            driver.create_volume(&id, u64::MAX).await,
            Err(DriverError::InvalidSize { .. })
        ));
    }

    #[test]
    fn temp_files_of_a_crash_are_swept_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = dir.path().join("file");
        std::fs::create_dir_all(&backend).expect("mkdir");
        let volume = format!("volume-{}", uuid::Uuid::new_v4());
        std::fs::write(backend.join(&volume), b"kept").expect("write");
        std::fs::write(backend.join(format!(".{volume}.tmp-0123")), b"half").expect("write");
        let driver = FileDriver::new(&backend, None).expect("driver");
        let names: Vec<_> = std::fs::read_dir(driver.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![volume]);
    }

    #[tokio::test]
    async fn stats_count_provisioned_sizes() {
        let (_dir, driver) = driver();
        for size in [1, 3] {
            driver
                .create_volume(&uuid::Uuid::new_v4().to_string(), size)
                .await
                .expect("create");
        }
        let stats = driver.stats().await.expect("stats");
        assert_eq!(stats.total_gib, 100.0);
        assert_eq!(stats.allocated_gib, 4.0);
        assert!(stats.free_gib > 0.0 && stats.free_gib <= 100.0, "{stats:?}");
    }
}
