//! [`BackupError`]: why a backup, a restore or a delete failed, one variant per
//! cause, each naming the backup, the chunk, the target or the file concerned.

use std::path::PathBuf;

use crate::driver::DriverError;

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// An id that would not make a safe object name (a backup id) or is not a
    /// SHA-256 digest (a chunk name).
    #[error("invalid {what} {id:?}: {reason}")]
    InvalidId {
        /// `backup id`, `volume id` or `chunk digest`.
        what: &'static str,
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A target setting is unusable.
    #[error("backup target setting {setting}: {reason}")]
    Settings {
        /// The setting (`backup.target`, `backup.s3_endpoint` ...).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A local filesystem operation failed (the source or destination image, a
    /// scratch file, a directory target).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An object store request failed.
    #[error("backup target {target}, object {key}: {source}")]
    Target {
        /// The target ([`super::BackupTarget::describe`]).
        target: String,
        /// The object's key.
        key: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// The target has no room left (ENOSPC, a quota): nothing was stored under
    /// the object's final name.
    #[error("backup target {target} is full: cannot store {key}")]
    Full {
        /// The target.
        target: String,
        /// The object that did not fit.
        key: String,
    },
    /// A chunk's object does not hold the bytes the manifest names: it does not
    /// decompress, or to the wrong length, or to bytes of another digest.
    #[error(
        "backup {backup_id}: chunk {chunk_index} ({digest}) is corrupt in the target: {reason}"
    )]
    Corrupt {
        /// The backup being restored.
        backup_id: String,
        /// The chunk's index in the volume.
        chunk_index: u64,
        /// The digest the manifest names.
        digest: String,
        /// What was found instead.
        reason: String,
    },
    /// A chunk the manifest names is not in the target.
    #[error("backup {backup_id}: chunk {chunk_index} ({digest}) is missing from the target")]
    MissingChunk {
        /// The backup being restored.
        backup_id: String,
        /// The chunk's index in the volume.
        chunk_index: u64,
        /// The digest the manifest names.
        digest: String,
    },
    /// The backup has no manifest in the target.
    #[error("backup {backup_id} has no manifest in the target")]
    ManifestMissing {
        /// The backup.
        backup_id: String,
    },
    /// A manifest that cannot be read or does not describe a volume.
    #[error("backup {backup_id}: bad manifest: {reason}")]
    BadManifest {
        /// The backup.
        backup_id: String,
        /// What is wrong.
        reason: String,
    },
    /// zstd could not compress a chunk.
    #[error("compressing chunk {chunk_index} of {path}: {source}")]
    Compress {
        /// The image.
        path: PathBuf,
        /// The chunk's index.
        chunk_index: u64,
        /// What zstd said.
        #[source]
        source: std::io::Error,
    },
    /// The restore destination is smaller than the backup.
    #[error("{path} has {dest_bytes} bytes: it cannot hold backup {backup_id} of {backup_bytes}")]
    DestTooSmall {
        /// The destination.
        path: PathBuf,
        /// Its size.
        dest_bytes: u64,
        /// The backup.
        backup_id: String,
        /// The backup's size.
        backup_bytes: u64,
    },
    /// The driver's object to back up or restore into does not exist.
    #[error("{kind} {id} not found on the backend")]
    ObjectMissing {
        /// `volume` or `snapshot`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The driver's objects are in a format this module does not read.
    #[error("backups of {format} images are not supported")]
    UnsupportedFormat {
        /// The driver's format.
        format: String,
    },
    /// The driver could not name or size an object.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A program this module runs (`qemu-img`) is not installed.
    #[error("{program} not found: install the package {package}")]
    ToolMissing {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// A program this module ran failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said on stderr.
        stderr: String,
    },
    /// The chunk index (the reference counts) failed.
    #[error("chunk index: {0}")]
    Index(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A blocking worker died.
    #[error("backup task failed: {0}")]
    Task(String),
}

/// A `Result` alias for backup operations.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Maps an I/O error on `path` to [`BackupError::Io`].
pub(crate) fn io(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io { op, path, source }
}

/// Whether `err` says the disk (or a quota) is full.
pub(crate) fn is_full(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull
        || matches!(err.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT)
}

/// Runs blocking work off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?
}
