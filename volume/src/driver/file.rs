//! The `file` driver: each volume is a sparse raw file `volume-<id>` in the
//! backend's directory (`<data_dir>/<backend>/`).
//!
//! A file is created under a temporary name, sized with `set_len` (no zeros are
//! written, so it takes no blocks until used), synced, and renamed into place: a
//! `volume-<id>` file is always complete.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;

use super::{BackendStats, DriverError, DriverResult, GIB, VolumeDriver, volume_object_name};

/// Sparse raw files in a directory.
#[derive(Debug, Clone)]
pub struct FileDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    capacity_gib: Option<u64>,
}

impl FileDriver {
    /// A driver keeping its files in `dir` (created if missing), reporting
    /// `capacity_gib` (None: the size of the filesystem holding `dir`).
    pub fn new(dir: impl Into<PathBuf>, capacity_gib: Option<u64>) -> DriverResult<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        Ok(Self {
            inner: Arc::new(Inner { dir, capacity_gib }),
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The path of volume `id`'s file.
    pub fn volume_path(&self, id: &str) -> DriverResult<PathBuf> {
        Ok(self.inner.dir.join(volume_object_name(id)?))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> DriverResult<T> + Send + 'static,
    ) -> DriverResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| DriverError::Task(e.to_string()))?
    }
}

#[async_trait]
impl VolumeDriver for FileDriver {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn create_volume(&self, id: &str, size_gib: u64) -> DriverResult<()> {
        let path = self.volume_path(id)?;
        let id = id.to_owned();
        self.blocking(move |inner| inner.create(&id, &path, size_gib))
            .await
    }

    async fn delete_volume(&self, id: &str) -> DriverResult<()> {
        let path = self.volume_path(id)?;
        self.blocking(move |_| match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        })
        .await
    }

    async fn volume_exists(&self, id: &str) -> DriverResult<bool> {
        let path = self.volume_path(id)?;
        self.blocking(move |_| path.try_exists().map_err(io("stat", &path)))
            .await
    }

    async fn stats(&self) -> DriverResult<BackendStats> {
        self.blocking(Inner::stats).await
    }
}

// === impl Inner ===

impl Inner {
    fn create(&self, id: &str, path: &Path, size_gib: u64) -> DriverResult<()> {
        let bytes = size_gib
            .checked_mul(GIB)
            .filter(|b| *b > 0 && i64::try_from(*b).is_ok())
            .ok_or_else(|| DriverError::InvalidSize {
                id: id.to_owned(),
                size_gib,
            })?;
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() == bytes => return Ok(()),
            Ok(meta) => {
                return Err(DriverError::SizeMismatch {
                    id: id.to_owned(),
                    expected_bytes: bytes,
                    actual_bytes: meta.len(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("stat", path)(e)),
        }
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}",
            volume_object_name(id)?,
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            file.set_len(bytes).map_err(io("set length of", &tmp))?;
            file.sync_all().map_err(io("sync", &tmp))?;
            std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
            // Make the rename durable.
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync directory", &self.dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn stats(&self) -> DriverResult<BackendStats> {
        let (mut provisioned, mut used) = (0u64, 0u64);
        for entry in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            if !entry.file_name().to_string_lossy().starts_with("volume-") {
                continue;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_file() => {
                    provisioned += meta.len();
                    used += meta.blocks() * 512;
                }
                Ok(_) => {}
                // Deleted while listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("stat", &entry.path())(e)),
            }
        }
        let fs = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| io("statvfs", &self.dir)(std::io::Error::from(e)))?;
        let fragment = fs.fragment_size() as f64;
        let fs_total = fs.blocks() as f64 * fragment / GIB as f64;
        let fs_free = fs.blocks_available() as f64 * fragment / GIB as f64;
        let total = self.capacity_gib.map_or(fs_total, |c| c as f64);
        let free = (total - used as f64 / GIB as f64).min(fs_free).max(0.0);
        Ok(BackendStats {
            total_gib: total,
            free_gib: free,
            allocated_gib: provisioned as f64 / GIB as f64,
        })
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let path = path.to_owned();
    move |source| DriverError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

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
