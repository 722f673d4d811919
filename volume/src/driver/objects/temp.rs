//! Temporary files: every object is written under `.<name>.tmp-<uuid>` and
//! published only when complete; a crash leaves at most such a file, swept
//! when the driver starts.

use std::path::{Path, PathBuf};

use super::io;
use crate::driver::DriverResult;

/// A temporary file `.<name>.tmp-<uuid>` next to its target, removed when dropped.
pub(super) struct Temp {
    pub(super) path: PathBuf,
}

/// What marks a temp file's name.
const TEMP_MARK: &str = ".tmp-";

impl Temp {
    pub(super) fn new(target: &Path) -> Self {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = target.with_file_name(format!(
            ".{name}{TEMP_MARK}{}",
            uuid::Uuid::new_v4().simple()
        ));
        Self { path }
    }

    /// Makes the file durable and links it to `target` in `dir`; false if `target`
    /// exists already (it is never replaced). The temp name is removed either way.
    pub(super) fn publish(self, target: &Path, dir: &Path) -> DriverResult<bool> {
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", &self.path))?;
        match std::fs::hard_link(&self.path, target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("link into place", target)(e)),
        }
        drop(self);
        sync_dir(dir)?;
        Ok(true)
    }
}

impl Temp {
    /// Makes the file durable and renames it over `target` in `dir` (which it
    /// replaces atomically: a reader sees the old file or the new one).
    pub(super) fn replace(self, target: &Path, dir: &Path) -> DriverResult<()> {
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", &self.path))?;
        std::fs::rename(&self.path, target).map_err(io("rename into place", target))?;
        sync_dir(dir)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.path.display(), %e, "temp file not removed"),
        }
    }
}

/// Removes the temp files a crash left in `dir`.
pub(super) fn sweep_temps(dir: &Path) -> DriverResult<()> {
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARK) {
            tracing::info!(path = %entry.path().display(), "removing a temp file left by a crash");
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &entry.path())(e)),
            }
        }
    }
    Ok(())
}

/// Makes the directory's entries (a link, an unlink) durable.
pub(super) fn sync_dir(dir: &Path) -> DriverResult<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}
