//! The `VolumeDriver` trait a backend implements, and the drivers (one file each).
//!
//! A driver only touches its backend: it knows nothing of the database or the bus.
//! Every operation is idempotent, because the manager may run it again for a
//! redelivered cast: creating what exists (with the same size) or deleting what is
//! gone succeeds, and a repeated create never overwrites the object the first one
//! made (it may have been written to since). Objects are named after their ids,
//! `volume-<id>` and `snapshot-<id>` (plus the format's extension), and each is
//! written under a temporary name and published only when complete (see
//! [`objects`]), so a crash never leaves a half object under a final name.
//!
//! Every driver passes the same conformance suite (`conformance.rs`), which reads
//! and writes the objects through their real format with `qemu-io`.

pub(crate) mod command;
#[cfg(test)]
pub(crate) mod conformance;
pub mod file;
pub mod objects;
pub mod qcow2;
pub mod registry;

use std::path::PathBuf;

use async_trait::async_trait;

pub use file::FileDriver;
pub use qcow2::Qcow2Driver;
pub use registry::{DRIVERS, DriverSettings};

/// Bytes in a GiB.
pub const GIB: u64 = 1 << 30;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The id is not a UUID (it would not make a safe object name).
    #[error("invalid id {id:?}: not a UUID")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// A size that cannot be made.
    #[error("invalid size {size_gib} GiB for volume {id}")]
    InvalidSize {
        /// The volume.
        id: String,
        /// The size asked for.
        size_gib: u64,
    },
    /// The object exists with another size than the one asked for.
    #[error("volume {id} already exists with {actual_bytes} bytes, not {expected_bytes}")]
    SizeMismatch {
        /// The volume.
        id: String,
        /// The size asked for, in bytes.
        expected_bytes: u64,
        /// The size found, in bytes.
        actual_bytes: u64,
    },
    /// The volume or snapshot an operation needs does not exist.
    #[error("{kind} {id} not found on the backend")]
    NotFound {
        /// `volume` or `snapshot`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// An extend asked for a smaller size than the volume has.
    #[error("volume {id} has {current_bytes} bytes: it cannot shrink to {requested_bytes}")]
    Shrink {
        /// The volume.
        id: String,
        /// Its size now, in bytes.
        current_bytes: u64,
        /// The size asked for, in bytes.
        requested_bytes: u64,
    },
    /// A volume made from a snapshot or a volume would be smaller than its source.
    #[error(
        "volume {id} of {requested_bytes} bytes cannot hold {source_kind} {source_id} \
         of {source_bytes} bytes"
    )]
    TooSmall {
        /// The new volume.
        id: String,
        /// Its size asked for, in bytes.
        requested_bytes: u64,
        /// `volume` or `snapshot`.
        source_kind: &'static str,
        /// The source's id.
        source_id: String,
        /// The source's size, in bytes.
        source_bytes: u64,
    },
    /// An object offered for adoption (ManageVolume / ManageSnapshot) cannot
    /// be one: a name that is not a plain object name here, a symbolic link,
    /// a directory, an empty file, an image that depends on another file.
    #[error("object {reference:?} cannot be managed: {reason}")]
    Unadoptable {
        /// The name given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An object is not in the format the driver writes.
    #[error("{path} is not a {format} image: {reason}")]
    BadFormat {
        /// The object.
        path: PathBuf,
        /// The format expected.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A program the driver runs is not installed.
    #[error("{program} not found: install the package {package}")]
    ToolMissing {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// A program the driver ran failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said on stderr.
        stderr: String,
    },
    /// The driver does not implement the operation.
    #[error("driver {driver} does not support {op}")]
    Unsupported {
        /// The driver's name.
        driver: &'static str,
        /// The operation.
        op: &'static str,
    },
    /// The configuration names a driver this build does not have.
    #[error("unknown volume driver {name:?}")]
    UnknownDriver {
        /// The name configured.
        name: String,
    },
    /// The blocking worker running the operation died.
    #[error("driver task failed: {0}")]
    Task(String),
}

/// A `Result` alias for driver operations.
pub type DriverResult<T, E = DriverError> = std::result::Result<T, E>;

/// The capacity of a backend, for the capability report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendStats {
    /// The capacity, GiB.
    pub total_gib: f64,
    /// What is still physically free, GiB (thin backends: what is not written yet).
    pub free_gib: f64,
    /// The sum of the provisioned sizes of the volumes, GiB.
    pub allocated_gib: f64,
}

/// The kinds of backend objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A volume, `volume-<id>`.
    Volume,
    /// A snapshot, `snapshot-<id>`.
    Snapshot,
}

/// What a storage backend does.
///
/// The operations added after create and delete have default bodies that return
/// [`DriverError::Unsupported`], so a test double need not implement them; the real
/// drivers implement them all, and the conformance suite checks that they do.
#[async_trait]
pub trait VolumeDriver: Send + Sync + 'static {
    /// The driver's name (`file`), reported as the `driver` capability.
    fn name(&self) -> &'static str;

    /// Makes volume `id` of exactly `size_gib` GiB; succeeds if it exists with that size.
    async fn create_volume(&self, id: &str, size_gib: u64) -> DriverResult<()>;

    /// Removes volume `id`; succeeds if it does not exist.
    async fn delete_volume(&self, id: &str) -> DriverResult<()>;

    /// Whether volume `id` exists on the backend.
    async fn volume_exists(&self, id: &str) -> DriverResult<bool>;

    /// The virtual size, in bytes, of the `kind` object `id` (what a client of
    /// its export sees), None if it does not exist.
    async fn object_size(&self, _kind: ObjectKind, _id: &str) -> DriverResult<Option<u64>> {
        Err(unsupported(self.name(), "object_size"))
    }

    /// The backend's capacity now.
    async fn stats(&self) -> DriverResult<BackendStats>;

    /// The format of the objects, as `qemu-img` / `qemu-nbd` name it (`raw`, `qcow2`).
    /// Always pass it explicitly: probing a raw volume a client wrote into could
    /// read the client's bytes as a qcow2 header. Default: `raw`.
    fn format(&self) -> &'static str {
        "raw"
    }

    /// The absolute path of volume `id`'s object (it need not exist).
    fn volume_path(&self, _id: &str) -> DriverResult<PathBuf> {
        Err(unsupported(self.name(), "volume_path"))
    }

    /// The absolute path of snapshot `id`'s object (it need not exist).
    fn snapshot_path(&self, _id: &str) -> DriverResult<PathBuf> {
        Err(unsupported(self.name(), "snapshot_path"))
    }

    /// Grows volume `id` to `new_size_gib` GiB, keeping its bytes: succeeds if it
    /// has that size already; [`DriverError::Shrink`] if it is larger.
    async fn extend_volume(&self, _id: &str, _new_size_gib: u64) -> DriverResult<()> {
        Err(unsupported(self.name(), "extend_volume"))
    }

    /// Makes snapshot `snapshot_id`, a point-in-time copy of volume `volume_id`'s
    /// bytes now; succeeds, leaving it as it is, if the snapshot exists.
    async fn create_snapshot(&self, _snapshot_id: &str, _volume_id: &str) -> DriverResult<()> {
        Err(unsupported(self.name(), "create_snapshot"))
    }

    /// Removes snapshot `snapshot_id`; succeeds if it does not exist.
    async fn delete_snapshot(&self, _snapshot_id: &str) -> DriverResult<()> {
        Err(unsupported(self.name(), "delete_snapshot"))
    }

    /// Whether snapshot `snapshot_id` exists on the backend.
    async fn snapshot_exists(&self, _snapshot_id: &str) -> DriverResult<bool> {
        Err(unsupported(self.name(), "snapshot_exists"))
    }

    /// Makes volume `volume_id` of `size_gib` GiB holding snapshot `snapshot_id`'s
    /// bytes (grown if larger than the snapshot); succeeds, leaving it as it is, if
    /// the volume exists with that size.
    async fn create_volume_from_snapshot(
        &self,
        _volume_id: &str,
        _snapshot_id: &str,
        _size_gib: u64,
    ) -> DriverResult<()> {
        Err(unsupported(self.name(), "create_volume_from_snapshot"))
    }

    /// Replaces volume `volume_id`'s bytes with snapshot `snapshot_id`'s (of
    /// the same size), crash-safely: the copy is made under a temporary name and
    /// renamed over the volume, so the volume holds either its old bytes or the
    /// snapshot's, never a mix. Repeating it gives the same result.
    async fn revert_to_snapshot(&self, _volume_id: &str, _snapshot_id: &str) -> DriverResult<()> {
        Err(unsupported(self.name(), "revert_to_snapshot"))
    }

    /// The virtual size, in bytes, of object `reference`, which Scoria does not
    /// manage, to adopt it as a `kind` object: [`DriverError::NotFound`]
    /// (kind `object`) if it is missing, [`DriverError::Unadoptable`] or
    /// [`DriverError::BadFormat`] if it cannot be adopted.
    async fn inspect_existing(&self, _kind: ObjectKind, _reference: &str) -> DriverResult<u64> {
        Err(unsupported(self.name(), "inspect_existing"))
    }

    /// Adopts object `reference` as the `kind` object `id` of `size_gib` GiB:
    /// grown to that size if smaller (the bytes kept), then renamed to the
    /// object name of `id`, never over an existing object. Succeeds if that
    /// was done already (`reference` gone, the object of `id` there with the
    /// size): a redelivered cast, the reconciler's redo.
    async fn manage_existing(
        &self,
        _kind: ObjectKind,
        _id: &str,
        _reference: &str,
        _size_gib: u64,
    ) -> DriverResult<()> {
        Err(unsupported(self.name(), "manage_existing"))
    }

    /// Makes volume `volume_id` of `size_gib` GiB holding volume
    /// `source_volume_id`'s bytes now (grown if larger); succeeds, leaving it as it
    /// is, if the volume exists with that size.
    async fn create_cloned_volume(
        &self,
        _volume_id: &str,
        _source_volume_id: &str,
        _size_gib: u64,
    ) -> DriverResult<()> {
        Err(unsupported(self.name(), "create_cloned_volume"))
    }
}

/// The error of operation `op`, which `driver` lacks.
fn unsupported(driver: &'static str, op: &'static str) -> DriverError {
    DriverError::Unsupported { driver, op }
}

/// Checks `id` is a UUID and returns the backend object name `volume-<id>`.
pub fn volume_object_name(id: &str) -> DriverResult<String> {
    object_name("volume", id)
}

/// Checks `id` is a UUID and returns the backend object name `snapshot-<id>`.
pub fn snapshot_object_name(id: &str) -> DriverResult<String> {
    object_name("snapshot", id)
}

fn object_name(prefix: &str, id: &str) -> DriverResult<String> {
    let uuid =
        uuid::Uuid::parse_str(id).map_err(|_| DriverError::InvalidId { id: id.to_owned() })?;
    // The hyphenated form, whatever form was given: one id, one name.
    Ok(format!("{prefix}-{}", uuid.hyphenated()))
}

/// `size_gib` in bytes, if a volume can have that size (at least 1 GiB, and a
/// length a file can have).
pub fn size_bytes(id: &str, size_gib: u64) -> DriverResult<u64> {
    size_gib
        .checked_mul(GIB)
        .filter(|b| *b > 0 && i64::try_from(*b).is_ok())
        .ok_or_else(|| DriverError::InvalidSize {
            id: id.to_owned(),
            size_gib,
        })
}
