//! The `qcow2` driver: each volume is a qcow2 image `volume-<id>.qcow2` in the
//! backend's directory, each snapshot a qcow2 image `snapshot-<id>.qcow2`, all made
//! by the real `qemu-img` (Debian package `qemu-utils`).
//!
//! A snapshot is a standalone copy (`qemu-img convert -O qcow2`, which writes only
//! the allocated clusters), not a backing-file overlay or an internal snapshot: the
//! volume and its snapshots can then be deleted in any order, and a volume made
//! from a snapshot does not depend on it either. The price is a full copy of the
//! data written so far at each snapshot.
//!
//! Every `qemu-img` call names the format (`-f qcow2`, never probing), and paths
//! are absolute, so `qemu-img` never reads a name as a `protocol:` URL. The virtual
//! size of an image is read from its header (big-endian at byte 24, after the magic
//! `QFI\xfb`, in QEMU's `docs/interop/qcow2.txt`): no process per image for stats.

use std::{fs::Metadata, io::Read, path::Path};

use async_trait::async_trait;

use super::{
    DriverError, DriverResult,
    command::Tool,
    objects::{Format, ObjectDriver, io},
};

/// The driver's name, in `volume.driver`.
pub const NAME: &str = "qcow2";

/// The first bytes of a qcow2 image.
const MAGIC: &[u8; 4] = b"QFI\xfb";

/// qcow2 images in a directory, through `qemu-img`.
pub type Qcow2Driver = ObjectDriver<Qcow2>;

impl Qcow2Driver {
    /// A driver keeping its images in `dir` (created if missing), reporting
    /// `capacity_gib` (None: the size of the filesystem holding `dir`); fails with
    /// [`DriverError::ToolMissing`] if `qemu-img` is not installed.
    pub fn new(
        dir: impl Into<std::path::PathBuf>,
        capacity_gib: Option<u64>,
    ) -> DriverResult<Self> {
        Self::with_format(dir, capacity_gib, Qcow2::new()?)
    }
}

/// The qcow2 format, through `qemu-img`.
#[derive(Debug, Clone)]
pub struct Qcow2 {
    qemu_img: Tool,
}

impl Qcow2 {
    /// The format with `qemu-img` found in `PATH`.
    pub fn new() -> DriverResult<Self> {
        Ok(Self {
            qemu_img: Tool::new("qemu-img", "qemu-utils").resolved()?,
        })
    }
}

#[async_trait]
impl Format for Qcow2 {
    const DRIVER: &'static str = NAME;
    const FORMAT: &'static str = "qcow2";
    const EXTENSION: &'static str = ".qcow2";

    fn virtual_size(&self, path: &Path, _meta: &Metadata) -> DriverResult<u64> {
        let mut header = [0u8; 32];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad(path, "shorter than a header"),
                _ => io("read header of", path)(e),
            })?;
        if &header[..4] != MAGIC {
            return Err(bad(path, "no qcow2 magic"));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&header[24..32]);
        Ok(u64::from_be_bytes(size))
    }

    fn check_standalone(&self, path: &Path) -> DriverResult<()> {
        // qcow2.txt: version at byte 4, backing_file_offset at 8 (0: none);
        // from version 3 on, incompatible_features at 72, whose bit 2 is an
        // external data file.
        let mut header = [0u8; 80];
        let mut file = std::fs::File::open(path).map_err(io("open", path))?;
        let mut read = 0;
        while read < header.len() {
            match file.read(&mut header[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("read header of", path)(e)),
            }
        }
        if read < 72 || &header[..4] != MAGIC {
            return Err(bad(path, "no qcow2 header"));
        }
        let be = |range: std::ops::Range<usize>| {
            let mut word = [0u8; 8];
            word[8 - range.len()..].copy_from_slice(&header[range]);
            u64::from_be_bytes(word)
        };
        if be(8..16) != 0 {
            return Err(bad(
                path,
                "it has a backing file (only standalone images are adopted)",
            ));
        }
        if be(4..8) >= 3 && read == 80 && be(72..80) & 0b100 != 0 {
            return Err(bad(
                path,
                "it has an external data file (only standalone images are adopted)",
            ));
        }
        Ok(())
    }

    async fn create(&self, path: &Path, bytes: u64) -> DriverResult<()> {
        let size = bytes.to_string();
        let args = ["create", "-q", "-f", "qcow2"].map(AsRef::as_ref);
        let args = args.into_iter().chain([path.as_os_str(), size.as_ref()]);
        self.qemu_img.run(args).await
    }

    async fn copy(&self, src: &Path, dst: &Path) -> DriverResult<()> {
        // `-U` (force-share): the source may be attached, its export (`qemu-nbd`)
        // holding QEMU's write lock on it; a snapshot of an in-use volume reads it
        // anyway, as Cinder's forced snapshot does.
        let args = ["convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2"].map(AsRef::as_ref);
        let args = args.into_iter().chain([src.as_os_str(), dst.as_os_str()]);
        self.qemu_img.run(args).await
    }

    async fn grow(&self, path: &Path, bytes: u64) -> DriverResult<()> {
        let size = bytes.to_string();
        let args = ["resize", "-q", "-f", "qcow2"].map(AsRef::as_ref);
        let args = args.into_iter().chain([path.as_os_str(), size.as_ref()]);
        self.qemu_img.run(args).await
    }
}

fn bad(path: &Path, reason: &str) -> DriverError {
    DriverError::BadFormat {
        path: path.to_owned(),
        format: "qcow2",
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{GIB, VolumeDriver};

    #[tokio::test]
    async fn the_header_size_is_what_qemu_img_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = Qcow2Driver::new(dir.path(), None).expect("qemu-img (install qemu-utils)");
        let id = uuid::Uuid::new_v4().to_string();
        driver.create_volume(&id, 3).await.expect("create");
        let path = driver.volume_path(&id).expect("path");
        assert!(path.is_absolute() && path.to_string_lossy().ends_with(".qcow2"));
        let meta = std::fs::metadata(&path).expect("stat");
        let size = Qcow2::new().expect("qemu-img").virtual_size(&path, &meta);
        assert_eq!(size.expect("size"), 3 * GIB);
        // A raw file is not taken for an image.
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [0u8; 64]).expect("write");
        let meta = std::fs::metadata(&raw).expect("stat");
        let err = Qcow2::new().expect("qemu-img").virtual_size(&raw, &meta);
        assert!(matches!(err, Err(DriverError::BadFormat { .. })), "{err:?}");
    }
}
