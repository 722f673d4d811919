//! [`ObjectDriver`]: a [`VolumeDriver`] keeping each volume and snapshot as one file
//! in a directory, in some image [`Format`]. The drivers differ only in how they
//! make, copy and grow an image (`file.rs`: sparse raw files; `qcow2.rs`:
//! `qemu-img`); the rules every operation must keep live here, once:
//!
//! ```text
//!  create / snapshot / from-snapshot / clone of object X:
//!     X exists? ── yes ──▶ same size (or a snapshot): Ok, left as it is
//!        │ no                other size: SizeMismatch
//!     source exists, fits? ── no ──▶ NotFound / TooSmall
//!        │ yes
//!     make .X.tmp-<uuid> (create, or copy + grow), fsync
//!     link it to X (never replaces: a racing create that won is kept), fsync dir
//!     remove the temp name (always: on error, cancellation, or a lost race)
//! ```
//!
//! A crash leaves at most a `.…tmp-…` file, never a half `X`; the temp files are
//! swept when the driver starts (one service owns a backend directory).

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;

mod adopt;
mod temp;

use temp::{Temp, sweep_temps, sync_dir};

use super::{
    BackendStats, DriverError, DriverResult, GIB, ObjectKind, VolumeDriver, size_bytes,
    snapshot_object_name, volume_object_name,
};

/// What a driver does with its image files; [`ObjectDriver`] does the rest.
#[async_trait]
pub trait Format: Send + Sync + 'static {
    /// The driver's name, its `driver` capability.
    const DRIVER: &'static str;
    /// The image format, as `qemu-img` names it.
    const FORMAT: &'static str;
    /// Appended to the object names (`""` or `".qcow2"`).
    const EXTENSION: &'static str;

    /// The virtual size of the image at `path`, in bytes (blocking).
    fn virtual_size(&self, path: &Path, meta: &Metadata) -> DriverResult<u64>;

    /// Makes an empty image of `bytes` at `path`, which does not exist.
    async fn create(&self, path: &Path, bytes: u64) -> DriverResult<()>;

    /// Copies the image at `src` to `dst`, which does not exist, thinly.
    async fn copy(&self, src: &Path, dst: &Path) -> DriverResult<()>;

    /// Grows the image at `path` to `bytes`, which is larger than it is.
    async fn grow(&self, path: &Path, bytes: u64) -> DriverResult<()>;

    /// Whether the image at `path` stands alone, so it can be adopted
    /// (blocking): an image reading another file (a backing file) would
    /// expose that file. Default: every file does.
    fn check_standalone(&self, _path: &Path) -> DriverResult<()> {
        Ok(())
    }
}

/// Volumes and snapshots as image files of format `F` in one directory.
#[derive(Debug)]
pub struct ObjectDriver<F> {
    inner: Arc<Inner<F>>,
}

impl<F> Clone for ObjectDriver<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<F> {
    dir: PathBuf,
    capacity_gib: Option<u64>,
    format: F,
}

/// What a new object is made from.
enum Source {
    /// An empty image of this many bytes.
    Empty(u64),
    /// A copy of another object.
    Copy {
        kind: &'static str,
        id: String,
        path: PathBuf,
    },
}

impl<F: Format> ObjectDriver<F> {
    /// A driver keeping its objects in `dir` (created if missing, made absolute,
    /// temp files of an earlier run removed), reporting `capacity_gib` (None: the
    /// size of the filesystem holding `dir`).
    pub fn with_format(
        dir: impl Into<PathBuf>,
        capacity_gib: Option<u64>,
        format: F,
    ) -> DriverResult<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let dir = std::fs::canonicalize(&dir).map_err(io("resolve", &dir))?;
        sweep_temps(&dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                capacity_gib,
                format,
            }),
        })
    }

    /// The directory holding the objects (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn path(&self, name: DriverResult<String>) -> DriverResult<PathBuf> {
        Ok(self.inner.dir.join(name? + F::EXTENSION))
    }

    /// The virtual size of the object at `path`, None if it does not exist.
    async fn size(&self, path: &Path) -> DriverResult<Option<u64>> {
        let path = path.to_owned();
        self.blocking(move |inner| match std::fs::metadata(&path) {
            Ok(meta) => inner.format.virtual_size(&path, &meta).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", &path)(e)),
        })
        .await
    }

    /// Makes the object at `target` from `source`, of `bytes` if given (at least
    /// the source's size): the algorithm in the module's documentation.
    async fn make(
        &self,
        (kind, id): (&'static str, &str),
        target: PathBuf,
        bytes: Option<u64>,
        source: Source,
    ) -> DriverResult<()> {
        let settled = |actual: u64| match bytes {
            Some(expected) if expected != actual => Err(DriverError::SizeMismatch {
                id: id.to_owned(),
                expected_bytes: expected,
                actual_bytes: actual,
            }),
            _ => Ok(()),
        };
        if let Some(actual) = self.size(&target).await? {
            return settled(actual);
        }
        if let Source::Copy {
            kind: source_kind,
            id: src,
            path,
        } = &source
        {
            let source_bytes = self
                .size(path)
                .await?
                .ok_or_else(|| DriverError::NotFound {
                    kind: source_kind,
                    id: src.clone(),
                })?;
            if let Some(requested) = bytes.filter(|b| *b < source_bytes) {
                return Err(DriverError::TooSmall {
                    id: id.to_owned(),
                    requested_bytes: requested,
                    source_kind,
                    source_id: src.clone(),
                    source_bytes,
                });
            }
        }
        let temp = Temp::new(&target);
        let format = &self.inner.format;
        match &source {
            Source::Empty(bytes) => format.create(&temp.path, *bytes).await?,
            Source::Copy { path, .. } => {
                format.copy(path, &temp.path).await?;
                if let Some(bytes) = bytes
                    && self.size(&temp.path).await?.is_some_and(|b| b < bytes)
                {
                    format.grow(&temp.path, bytes).await?;
                }
            }
        }
        let published = {
            let target = target.clone();
            self.blocking(move |inner| temp.publish(&target, &inner.dir))
                .await?
        };
        if published {
            return Ok(());
        }
        // A racing create published first: keep its object (unless it is gone
        // already, deleted by a later request: then this one is stale).
        match self.size(&target).await? {
            Some(actual) => settled(actual),
            None => Err(DriverError::NotFound {
                kind,
                id: id.to_owned(),
            }),
        }
    }

    /// The path of the `kind` object `id`.
    fn object_path(&self, kind: ObjectKind, id: &str) -> DriverResult<PathBuf> {
        match kind {
            ObjectKind::Volume => self.volume_path(id),
            ObjectKind::Snapshot => self.snapshot_path(id),
        }
    }

    /// Makes volume `volume_id` of `size_gib` as a copy of the `source` object
    /// (a snapshot, or a volume to clone).
    async fn make_copy(
        &self,
        volume_id: &str,
        size_gib: u64,
        (kind, id): (ObjectKind, &str),
    ) -> DriverResult<()> {
        let target = self.volume_path(volume_id)?;
        let path = self.object_path(kind, id)?;
        let bytes = size_bytes(volume_id, size_gib)?;
        let source = Source::Copy {
            kind: match kind {
                ObjectKind::Volume => "volume",
                ObjectKind::Snapshot => "snapshot",
            },
            id: id.to_owned(),
            path,
        };
        self.make(("volume", volume_id), target, Some(bytes), source)
            .await
    }

    async fn remove(&self, path: PathBuf) -> DriverResult<()> {
        self.blocking(move |inner| match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&inner.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        })
        .await
    }

    async fn exists(&self, path: PathBuf) -> DriverResult<bool> {
        self.blocking(move |_| path.try_exists().map_err(io("stat", &path)))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner<F>) -> DriverResult<T> + Send + 'static,
    ) -> DriverResult<T> {
        let inner = self.inner.clone();
        blocking(move || f(&inner)).await
    }
}

#[async_trait]
impl<F: Format> VolumeDriver for ObjectDriver<F> {
    fn name(&self) -> &'static str {
        F::DRIVER
    }

    fn format(&self) -> &'static str {
        F::FORMAT
    }

    fn volume_path(&self, id: &str) -> DriverResult<PathBuf> {
        self.path(volume_object_name(id))
    }

    fn snapshot_path(&self, id: &str) -> DriverResult<PathBuf> {
        self.path(snapshot_object_name(id))
    }

    #[tracing::instrument(name = "driver.create_volume", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %id, size_gib))]
    async fn create_volume(&self, id: &str, size_gib: u64) -> DriverResult<()> {
        let target = self.volume_path(id)?;
        let bytes = size_bytes(id, size_gib)?;
        let source = Source::Empty(bytes);
        self.make(("volume", id), target, Some(bytes), source).await
    }

    #[tracing::instrument(name = "driver.delete_volume", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %id))]
    async fn delete_volume(&self, id: &str) -> DriverResult<()> {
        self.remove(self.volume_path(id)?).await
    }

    async fn volume_exists(&self, id: &str) -> DriverResult<bool> {
        self.exists(self.volume_path(id)?).await
    }

    async fn object_size(&self, kind: ObjectKind, id: &str) -> DriverResult<Option<u64>> {
        let path = self.object_path(kind, id)?;
        self.size(&path).await
    }

    async fn stats(&self) -> DriverResult<BackendStats> {
        self.blocking(Inner::stats).await
    }

    #[tracing::instrument(name = "driver.extend_volume", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %id, new_size_gib))]
    async fn extend_volume(&self, id: &str, new_size_gib: u64) -> DriverResult<()> {
        let path = self.volume_path(id)?;
        let bytes = size_bytes(id, new_size_gib)?;
        let current = self
            .size(&path)
            .await?
            .ok_or_else(|| DriverError::NotFound {
                kind: "volume",
                id: id.to_owned(),
            })?;
        if current > bytes {
            return Err(DriverError::Shrink {
                id: id.to_owned(),
                current_bytes: current,
                requested_bytes: bytes,
            });
        }
        if current < bytes {
            self.inner.format.grow(&path, bytes).await?;
        }
        Ok(())
    }

    #[tracing::instrument(name = "driver.create_snapshot", level = "debug", skip_all, fields(driver = F::DRIVER, snapshot_id = %snapshot_id, volume_id = %volume_id))]
    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> DriverResult<()> {
        let target = self.snapshot_path(snapshot_id)?;
        let path = self.volume_path(volume_id)?;
        let source = Source::Copy {
            kind: "volume",
            id: volume_id.to_owned(),
            path,
        };
        self.make(("snapshot", snapshot_id), target, None, source)
            .await
    }

    #[tracing::instrument(name = "driver.delete_snapshot", level = "debug", skip_all, fields(driver = F::DRIVER, snapshot_id = %snapshot_id))]
    async fn delete_snapshot(&self, snapshot_id: &str) -> DriverResult<()> {
        self.remove(self.snapshot_path(snapshot_id)?).await
    }

    async fn snapshot_exists(&self, snapshot_id: &str) -> DriverResult<bool> {
        self.exists(self.snapshot_path(snapshot_id)?).await
    }

    #[tracing::instrument(name = "driver.create_volume_from_snapshot", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %volume_id, snapshot_id = %snapshot_id))]
    async fn create_volume_from_snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        size_gib: u64,
    ) -> DriverResult<()> {
        let source = (ObjectKind::Snapshot, snapshot_id);
        self.make_copy(volume_id, size_gib, source).await
    }

    #[tracing::instrument(name = "driver.create_cloned_volume", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %volume_id, source_volume_id = %source_volume_id))]
    async fn create_cloned_volume(
        &self,
        volume_id: &str,
        source_volume_id: &str,
        size_gib: u64,
    ) -> DriverResult<()> {
        let source = (ObjectKind::Volume, source_volume_id);
        self.make_copy(volume_id, size_gib, source).await
    }

    #[tracing::instrument(name = "driver.revert_to_snapshot", level = "debug", skip_all, fields(driver = F::DRIVER, volume_id = %volume_id, snapshot_id = %snapshot_id))]
    async fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str) -> DriverResult<()> {
        let target = self.volume_path(volume_id)?;
        let source = self.snapshot_path(snapshot_id)?;
        let not_found = |kind, id: &str| DriverError::NotFound {
            kind,
            id: id.to_owned(),
        };
        let volume_bytes = self
            .size(&target)
            .await?
            .ok_or_else(|| not_found("volume", volume_id))?;
        let snapshot_bytes = self
            .size(&source)
            .await?
            .ok_or_else(|| not_found("snapshot", snapshot_id))?;
        if snapshot_bytes != volume_bytes {
            return Err(DriverError::SizeMismatch {
                id: volume_id.to_owned(),
                expected_bytes: snapshot_bytes,
                actual_bytes: volume_bytes,
            });
        }
        let temp = Temp::new(&target);
        self.inner.format.copy(&source, &temp.path).await?;
        self.blocking(move |inner| temp.replace(&target, &inner.dir))
            .await
    }

    async fn inspect_existing(&self, _kind: ObjectKind, reference: &str) -> DriverResult<u64> {
        self.inspect(reference).await
    }

    #[tracing::instrument(name = "driver.manage_existing", level = "debug", skip_all, fields(driver = F::DRIVER, id = %id, reference = %reference))]
    async fn manage_existing(
        &self,
        kind: ObjectKind,
        id: &str,
        reference: &str,
        size_gib: u64,
    ) -> DriverResult<()> {
        self.adopt(kind, id, reference, size_gib).await
    }
}

// === impl Inner ===

impl<F: Format> Inner<F> {
    /// Provisioned: the volumes' virtual sizes; used: the blocks of every file
    /// (snapshots and temp files take space too).
    fn stats(&self) -> DriverResult<BackendStats> {
        let (mut provisioned, mut used) = (0u64, 0u64);
        for entry in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                // Deleted while listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat", &path)(e)),
            };
            used += meta.blocks() * 512;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("volume-") && name.ends_with(F::EXTENSION) {
                // One unreadable volume must not hide the backend from the
                // schedulers: it is logged and counted as nothing.
                match self.format.virtual_size(&path, &meta) {
                    Ok(bytes) => provisioned += bytes,
                    Err(err) => tracing::warn!(%err, "volume size unknown"),
                }
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

/// Runs blocking filesystem work off the runtime's threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> DriverResult<T> + Send + 'static,
) -> DriverResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DriverError::Task(e.to_string()))?
}

/// Maps an I/O error on `path` to [`DriverError::Io`].
pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let path = path.to_owned();
    move |source| DriverError::Io { op, path, source }
}
