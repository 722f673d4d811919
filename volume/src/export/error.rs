//! The export manager's errors.

use std::{path::PathBuf, time::Duration};

/// Why an export operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The id is not a UUID (it would not make a safe export or file name).
    #[error("invalid volume id {id:?}: not a UUID")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// `qemu-nbd` is not installed.
    #[error("{program} not found: install the package {package}")]
    ToolMissing {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// Every port of the range is taken.
    #[error("no free port in {first}-{last} to export volume {volume_id}")]
    PortsExhausted {
        /// The volume.
        volume_id: String,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// `qemu-nbd` exited before it served.
    #[error("qemu-nbd exporting volume {volume_id} on port {port} exited ({status}): {stderr}")]
    Exited {
        /// The volume.
        volume_id: String,
        /// The port it was to listen on.
        port: u16,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said on stderr.
        stderr: String,
    },
    /// `qemu-nbd` runs but did not accept a connection in time (it was killed).
    #[error(
        "qemu-nbd exporting volume {volume_id} did not serve on {host}:{port} within {waited:?}"
    )]
    NotReady {
        /// The volume.
        volume_id: String,
        /// The address it was to listen on.
        host: String,
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
    },
    /// The volume is exported already, differently (path, format or mode).
    #[error("volume {volume_id} is exported as {existing}, not as {requested}: unexport it first")]
    Conflict {
        /// The volume.
        volume_id: String,
        /// How it is exported.
        existing: String,
        /// How it was asked to be.
        requested: String,
    },
    /// A port could not be tried (not "in use": the address is unusable).
    #[error("cannot bind {host}:{port}: {source}")]
    Bind {
        /// The address.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// A filesystem or process operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A `Result` alias for export operations.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

impl ExportError {
    /// Whether `qemu-nbd` failed because its port was taken (then another port is tried).
    pub(super) fn is_addr_in_use(&self) -> bool {
        matches!(self, Self::Exited { stderr, .. } if stderr.contains("Address already in use"))
    }
}
