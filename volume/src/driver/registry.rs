//! The driver registry: which drivers this build knows, and the one that plain
//! [`DriverSettings`] name, built. It knows nothing of the service's config: the
//! caller (`run`) turns the config into settings.

use std::{path::PathBuf, sync::Arc};

use super::{DriverError, DriverResult, FileDriver, Qcow2Driver, VolumeDriver, file, qcow2};

/// The names of the drivers this build knows.
pub const DRIVERS: &[&str] = &[file::NAME, qcow2::NAME];

/// What a driver is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSettings {
    /// The driver's name, one of [`DRIVERS`].
    pub name: String,
    /// The directory of its objects (created if missing).
    pub dir: PathBuf,
    /// The capacity it reports, GiB (None: the size of the filesystem of `dir`).
    pub capacity_gib: Option<u64>,
}

/// The driver `settings` name, its directory created;
/// [`DriverError::UnknownDriver`] for a name not in [`DRIVERS`].
pub fn build(settings: &DriverSettings) -> DriverResult<Arc<dyn VolumeDriver>> {
    let (dir, capacity) = (settings.dir.clone(), settings.capacity_gib);
    Ok(match settings.name.as_str() {
        file::NAME => Arc::new(FileDriver::new(dir, capacity)?),
        qcow2::NAME => Arc::new(Qcow2Driver::new(dir, capacity)?),
        other => {
            return Err(DriverError::UnknownDriver {
                name: other.to_owned(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_driver_is_refused_by_name() {
        let temp = tempfile::tempdir().expect("tempdir");
        let err = build(&DriverSettings {
            name: "ceph".into(),
            dir: temp.path().join("b"),
            capacity_gib: None,
        })
        .err()
        .expect("unknown");
        assert!(err.to_string().contains("ceph"), "{err}");
    }
}
