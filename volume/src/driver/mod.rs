//! The `VolumeDriver` trait a backend implements, and the drivers (one file each).
//!
//! A driver only touches its backend: it knows nothing of the database or the bus.
//! Every operation is idempotent, because the manager may run it again for a
//! redelivered cast: creating what exists (with the same size) or deleting what is
//! gone succeeds. Later operations (extend, snapshot, clone, export over NBD) are
//! added here as trait methods.

pub mod file;

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;

pub use file::FileDriver;

use crate::config::Config;

/// Bytes in a GiB.
pub const GIB: u64 = 1 << 30;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The id is not a UUID (it would not make a safe object name).
    #[error("invalid volume id {id:?}: not a UUID")]
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

/// What a storage backend does.
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

    /// The backend's capacity now.
    async fn stats(&self) -> DriverResult<BackendStats>;
}

/// Checks `id` is a UUID and returns the backend object name `volume-<id>`.
pub fn volume_object_name(id: &str) -> DriverResult<String> {
    let uuid =
        uuid::Uuid::parse_str(id).map_err(|_| DriverError::InvalidId { id: id.to_owned() })?;
    // The hyphenated form, whatever form was given: one id, one name.
    Ok(format!("volume-{}", uuid.hyphenated()))
}

/// The driver `config` names (validated by [`Config::validate`]), its directory created.
pub fn from_config(config: &Config) -> DriverResult<Arc<dyn VolumeDriver>> {
    // Only `file` exists yet; `Config::validate` refuses the others.
    Ok(Arc::new(FileDriver::new(
        config.backend_dir(),
        config.volume.capacity_gib,
    )?))
}
