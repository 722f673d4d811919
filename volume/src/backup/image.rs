//! Driver objects as raw bytes, for the engine: a raw object is read and
//! restored in place; a qcow2 one is converted by `qemu-img` (Debian package
//! `qemu-utils`) to a raw scratch file first, and restored through one
//! (`qemu-img convert -n` onto the existing image, which writes the zeros too,
//! so no old byte survives). A qcow2 overlay is converted with its backing
//! chain: the raw file holds what a client of the image reads.
//!
//! Scratch files are named `.scoria-backup-<id>-<uuid>.raw` and removed when
//! dropped; [`sweep_scratch`] removes those a crash left behind.

use std::path::{Path, PathBuf};

use super::{
    engine::{BackupEngine, RestoreStats},
    error::{BackupError, Result, blocking, io},
    restore::Dest,
};
use crate::driver::{ObjectKind, VolumeDriver};

/// What a scratch file's name starts with.
pub const SCRATCH_PREFIX: &str = ".scoria-backup-";

/// How much of `qemu-img`'s stderr goes into an error.
const MAX_STDERR: usize = 4096;

/// An object's bytes as a raw image, for [`BackupEngine::backup`]: the
/// object itself, or a scratch copy removed when this is dropped.
#[derive(Debug)]
pub struct RawImage {
    path: PathBuf,
    _scratch: Option<ScratchFile>,
}

impl RawImage {
    /// The raw image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a scratch copy (not the object itself).
    pub fn is_copy(&self) -> bool {
        self._scratch.is_some()
    }
}

/// A scratch file, removed on drop.
#[derive(Debug)]
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// A new name for a scratch file of `id` in `dir` (created if missing).
    fn new(dir: &Path, id: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let name = format!("{SCRATCH_PREFIX}{id}-{}.raw", uuid::Uuid::new_v4().simple());
        Ok(Self {
            path: dir.join(name),
        })
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.path.display(), %e, "scratch file not removed"),
        }
    }
}

/// The `kind` object `id` of `driver` as a raw image: the object itself for a
/// raw driver, a scratch copy in `scratch` for qcow2.
pub async fn raw_source(
    driver: &dyn VolumeDriver,
    kind: ObjectKind,
    id: &str,
    scratch: &Path,
) -> Result<RawImage> {
    let (path, what) = match kind {
        ObjectKind::Volume => (driver.volume_path(id)?, "volume"),
        ObjectKind::Snapshot => (driver.snapshot_path(id)?, "snapshot"),
    };
    require(&path, what, id).await?;
    match driver.format() {
        "raw" => Ok(RawImage {
            path,
            _scratch: None,
        }),
        "qcow2" => {
            let copy = ScratchFile::new(scratch, id)?;
            // `-U`: an attached volume's export holds QEMU's lock on it.
            let args = ["convert", "-q", "-U", "-f", "qcow2", "-O", "raw"].map(AsRef::as_ref);
            qemu_img(
                args.into_iter()
                    .chain([path.as_os_str(), copy.path.as_os_str()]),
            )
            .await?;
            Ok(RawImage {
                path: copy.path.clone(),
                _scratch: Some(copy),
            })
        }
        other => Err(BackupError::UnsupportedFormat {
            format: other.to_owned(),
        }),
    }
}

/// Restores backup `backup_id` into volume `volume_id` of `driver` (which
/// must exist and be at least the backup's size; bytes past it become zero),
/// through a raw scratch file in `scratch` for qcow2.
pub async fn restore_into_volume(
    engine: &BackupEngine,
    backup_id: &str,
    driver: &dyn VolumeDriver,
    volume_id: &str,
    scratch: &Path,
) -> Result<RestoreStats> {
    let path = driver.volume_path(volume_id)?;
    require(&path, "volume", volume_id).await?;
    let manifest = engine.manifest(backup_id).await?;
    match driver.format() {
        "raw" => engine.restore_into(manifest, &path, Dest::Existing).await,
        "qcow2" => {
            let size = driver
                .object_size(ObjectKind::Volume, volume_id)
                .await?
                .ok_or_else(|| missing("volume", volume_id))?;
            if size < manifest.size_bytes {
                return Err(BackupError::DestTooSmall {
                    path,
                    dest_bytes: size,
                    backup_id: backup_id.to_owned(),
                    backup_bytes: manifest.size_bytes,
                });
            }
            let raw = ScratchFile::new(scratch, volume_id)?;
            let at = raw.path.clone();
            blocking(move || {
                let file = std::fs::File::create_new(&at).map_err(io("create", &at))?;
                file.set_len(size).map_err(io("set length of", &at))
            })
            .await?;
            let stats = engine
                .restore_into(manifest, &raw.path, Dest::Fresh)
                .await?;
            let args = ["convert", "-q", "-n", "-f", "raw", "-O", "qcow2"].map(AsRef::as_ref);
            qemu_img(
                args.into_iter()
                    .chain([raw.path.as_os_str(), path.as_os_str()]),
            )
            .await?;
            Ok(stats)
        }
        other => Err(BackupError::UnsupportedFormat {
            format: other.to_owned(),
        }),
    }
}

/// Removes the scratch files a crash left in `dir` (which need not exist);
/// returns how many. Call it at start-up, before any backup runs.
pub fn sweep_scratch(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        tracing::info!(path = %path.display(), "removing a backup scratch file left by a crash");
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    Ok(removed)
}

fn missing(kind: &'static str, id: &str) -> BackupError {
    BackupError::ObjectMissing {
        kind,
        id: id.to_owned(),
    }
}

/// [`BackupError::ObjectMissing`] unless `path` exists.
async fn require(path: &Path, kind: &'static str, id: &str) -> Result<()> {
    let at = path.to_owned();
    if blocking(move || at.try_exists().map_err(io("stat", &at))).await? {
        Ok(())
    } else {
        Err(missing(kind, id))
    }
}

/// Runs `qemu-img` with `args`; its stderr goes into the error if it fails.
/// Dropping the future kills it.
async fn qemu_img<'a>(args: impl IntoIterator<Item = &'a std::ffi::OsStr>) -> Result<()> {
    let mut command = tokio::process::Command::new("qemu-img");
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let line = std::iter::once(command.as_std().get_program())
        .chain(command.as_std().get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "running");
    let output = command.output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BackupError::ToolMissing {
            program: "qemu-img".into(),
            package: "qemu-utils",
        },
        _ => io("run", Path::new("qemu-img"))(e),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.len() > MAX_STDERR {
        let mut end = MAX_STDERR;
        while !stderr.is_char_boundary(end) {
            end -= 1;
        }
        stderr.truncate(end);
        stderr.push('…');
    }
    Err(BackupError::Command {
        command: line,
        status: output.status,
        stderr,
    })
}
