//! Export keys: a volume in a mode, and its NBD export name.

use super::{ExportError, Result};

/// One export: a volume served read-write (`volume-<id>`) or read-only
/// (`volume-<id>-ro`). A volume may have both at once, each its own `qemu-nbd`
/// (a server serves one export) on its own port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportKey {
    /// The volume, as one hyphenated, lower-case UUID.
    pub volume_id: String,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl ExportKey {
    /// The export of volume `volume_id` (any UUID form) in that mode.
    pub fn new(volume_id: &str, read_only: bool) -> Result<Self> {
        Ok(Self {
            volume_id: canonical_id(volume_id)?,
            read_only,
        })
    }

    /// The NBD export name, also the stem of its pid file and log.
    pub fn export_name(&self) -> String {
        if self.read_only {
            format!("volume-{}-ro", self.volume_id)
        } else {
            format!("volume-{}", self.volume_id)
        }
    }

    /// The key whose [`ExportKey::export_name`] is `name`, if it is one.
    pub(super) fn from_export_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("volume-")?;
        let (id, read_only) = match rest.strip_suffix("-ro") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        Self::new(id, read_only).ok()
    }
}

impl std::fmt::Display for ExportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.export_name())
    }
}

/// `id` as one hyphenated, lower-case UUID, whatever form was given.
fn canonical_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| ExportError::InvalidId { id: id.to_owned() })
}
