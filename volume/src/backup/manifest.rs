//! [`Manifest`]: what one backup holds, chunk by chunk.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    chunk::{check_digest, check_id},
    error::{BackupError, Result},
};

/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// One backup's full chunk map: every chunk index of the volume, not only the
/// ones that changed since the parent, so a restore needs this manifest alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest format ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The backup.
    pub backup_id: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// The backup this one is incremental to, if any (informational: this
    /// manifest names every chunk itself).
    pub parent_id: Option<String>,
    /// The volume's size, in bytes.
    pub size_bytes: u64,
    /// The chunk size, in bytes (the last chunk may be shorter).
    pub chunk_bytes: u64,
    /// Per chunk index, the SHA-256 (lower-case hex) of its uncompressed
    /// bytes; `None` for a chunk that is all zero (not stored).
    pub chunks: Vec<Option<String>>,
    /// When the backup was taken, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

impl Manifest {
    /// The distinct digests of the chunks that are not all zero.
    pub fn digests(&self) -> BTreeSet<&str> {
        self.chunks.iter().flatten().map(String::as_str).collect()
    }

    /// The number of chunks a volume of `size_bytes` has with `chunk_bytes` chunks.
    pub fn chunk_count(size_bytes: u64, chunk_bytes: u64) -> u64 {
        size_bytes.div_ceil(chunk_bytes.max(1))
    }

    /// The offset and length of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, usize) {
        chunk_range(self.size_bytes, self.chunk_bytes, index)
    }

    /// Checks the manifest is one this build reads and that it describes a
    /// volume consistently (so a restore can trust its sizes and names).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| BackupError::BadManifest {
            backup_id: self.backup_id.clone(),
            reason,
        };
        check_id("backup id", &self.backup_id)?;
        if self.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "version {} (this build reads {MANIFEST_VERSION})",
                self.version
            )));
        }
        if self.chunk_bytes == 0 || usize::try_from(self.chunk_bytes).is_err() {
            return Err(bad(format!("chunk size {}", self.chunk_bytes)));
        }
        let expected = Self::chunk_count(self.size_bytes, self.chunk_bytes);
        if self.chunks.len() as u64 != expected {
            return Err(bad(format!(
                "{} chunks for {} bytes in chunks of {} (expected {expected})",
                self.chunks.len(),
                self.size_bytes,
                self.chunk_bytes
            )));
        }
        for digest in self.chunks.iter().flatten() {
            check_digest(digest).map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    }

    /// The manifest as stored (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a stored manifest of `backup_id` and validates it.
    pub fn from_json(backup_id: &str, bytes: &[u8]) -> Result<Self> {
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| BackupError::BadManifest {
                backup_id: backup_id.to_owned(),
                reason: e.to_string(),
            })?;
        if manifest.backup_id != backup_id {
            return Err(BackupError::BadManifest {
                backup_id: backup_id.to_owned(),
                reason: format!("it names backup {}", manifest.backup_id),
            });
        }
        manifest.validate()?;
        Ok(manifest)
    }
}

/// The offset and length of chunk `index` of a volume of `size_bytes`.
pub(crate) fn chunk_range(size_bytes: u64, chunk_bytes: u64, index: u64) -> (u64, usize) {
    let offset = index * chunk_bytes;
    let len = chunk_bytes.min(size_bytes.saturating_sub(offset));
    // `chunk_bytes` fits a usize (validated).
    (offset, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::chunk::digest;

    fn manifest() -> Manifest {
        let d = digest(b"x");
        Manifest {
            version: MANIFEST_VERSION,
            backup_id: "b1".into(),
            volume_id: "v1".into(),
            parent_id: None,
            size_bytes: 10,
            chunk_bytes: 4,
            chunks: vec![Some(d.clone()), None, Some(d)],
            created_at_ms: 1,
        }
    }

    #[test]
    fn round_trips_and_counts_distinct_digests() {
        let m = manifest();
        assert_eq!(m.digests().len(), 1);
        assert_eq!(m.chunk_range(2), (8, 2));
        let back = Manifest::from_json("b1", &m.to_json()).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let m = manifest();
        assert!(matches!(
            Manifest::from_json("b2", &m.to_json()),
            Err(BackupError::BadManifest { .. })
        ));
        let short = Manifest {
            chunks: vec![None],
            ..m.clone()
        };
        assert!(short.validate().is_err());
        let bad_digest = Manifest {
            chunks: vec![Some("../x".into()), None, None],
            ..m.clone()
        };
        assert!(bad_digest.validate().is_err());
        let future = Manifest { version: 9, ..m };
        assert!(future.validate().is_err());
        assert!(Manifest::from_json("b1", b"{").is_err());
    }
}
