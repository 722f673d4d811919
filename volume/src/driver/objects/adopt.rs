//! Adopting objects Scoria does not manage yet (ManageVolume /
//! ManageSnapshot): an object is inspected (a regular, non-empty, standalone
//! image of the format, a plain name in the directory), then grown to whole
//! GiB and linked under its new name, never over an existing object.

use std::path::{Path, PathBuf};

use scoria_common::model::reference_problem;

use super::{Format, Inner, ObjectDriver, io, sync_dir};
use crate::driver::{DriverError, DriverResult, ObjectKind, size_bytes};

impl<F: Format> ObjectDriver<F> {
    /// The path of object `reference`, checked to be a plain name here.
    fn reference_path(&self, reference: &str) -> DriverResult<PathBuf> {
        match reference_problem(reference) {
            Some(reason) => Err(unadoptable(reference, reason)),
            None => Ok(self.inner.dir.join(reference)),
        }
    }

    /// The virtual size of object `reference`, if it can be adopted.
    pub(super) async fn inspect(&self, reference: &str) -> DriverResult<u64> {
        let path = self.reference_path(reference)?;
        let reference = reference.to_owned();
        self.blocking(move |inner| inner.adoptable_size(&path, &reference))
            .await
    }

    /// Adopts `reference` as the `kind` object `id` of `size_gib` (see
    /// [`VolumeDriver::manage_existing`](crate::driver::VolumeDriver::manage_existing)).
    pub(super) async fn adopt(
        &self,
        kind: ObjectKind,
        id: &str,
        reference: &str,
        size_gib: u64,
    ) -> DriverResult<()> {
        let source = self.reference_path(reference)?;
        let target = self.object_path(kind, id)?;
        let bytes = size_bytes(id, size_gib)?;
        let mismatch = |actual_bytes| DriverError::SizeMismatch {
            id: id.to_owned(),
            expected_bytes: bytes,
            actual_bytes,
        };
        // Adopted already (a redelivered cast), or gone: the target says.
        let adopted = async || match self.size(&target).await? {
            Some(actual) if actual == bytes => Ok(()),
            Some(actual) => Err(mismatch(actual)),
            None => Err(DriverError::NotFound {
                kind: "object",
                id: reference.to_owned(),
            }),
        };
        if source == target {
            return adopted().await;
        }
        let found = match self.inspect(reference).await {
            Ok(found) => found,
            Err(DriverError::NotFound { .. }) => return adopted().await,
            Err(err) => return Err(err),
        };
        if found > bytes {
            // It grew since it was inspected: the row would be too small.
            return Err(mismatch(found));
        }
        if found < bytes {
            self.inner.format.grow(&source, bytes).await?;
        }
        let reference = reference.to_owned();
        self.blocking(move |inner| {
            // A link, not a rename: a rename would replace an existing object.
            match std::fs::hard_link(&source, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(unadoptable(
                        &reference,
                        &format!("{} exists already", target.display()),
                    ));
                }
                Err(e) => return Err(io("link into place", &target)(e)),
            }
            std::fs::remove_file(&source).map_err(io("remove the old name", &source))?;
            sync_dir(&inner.dir)
        })
        .await
    }
}

impl<F: Format> Inner<F> {
    /// The virtual size of the existing object at `path` (`reference`), if it
    /// can be adopted (blocking). A symbolic link is refused, not followed: it
    /// could name any file of the machine.
    fn adoptable_size(&self, path: &Path, reference: &str) -> DriverResult<u64> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::NotFound {
                    kind: "object",
                    id: reference.to_owned(),
                });
            }
            Err(e) => return Err(io("stat", path)(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(unadoptable(reference, "it is a symbolic link"));
        }
        if !meta.is_file() {
            return Err(unadoptable(reference, "it is not a regular file"));
        }
        self.format.check_standalone(path)?;
        let bytes = self.format.virtual_size(path, &meta)?;
        if bytes == 0 {
            return Err(unadoptable(reference, "it is empty"));
        }
        Ok(bytes)
    }
}

/// The error of adopting `reference`, for `reason`.
pub(super) fn unadoptable(reference: &str, reason: &str) -> DriverError {
    DriverError::Unadoptable {
        reference: reference.to_owned(),
        reason: reason.to_owned(),
    }
}
