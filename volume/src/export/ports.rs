//! The export port range: which port to try next, and whether it is free.

use super::{ExportError, ExportManager, Result};

// === impl ExportManager ===

impl ExportManager {
    /// The ports of the range, from `cursor` round to just before it.
    pub(super) fn candidates(&self, cursor: u16) -> impl Iterator<Item = u16> + use<> {
        let (first, last) = (*self.port_range.start(), *self.port_range.end());
        let start = if self.port_range.contains(&cursor) {
            cursor
        } else {
            first
        };
        (start..=last).chain(first..start)
    }

    /// Whether `port` can be bound on the bind host now.
    pub(super) async fn port_free(&self, port: u16) -> Result<bool> {
        match tokio::net::TcpListener::bind((self.bind_host.as_str(), port)).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
            Err(source) => Err(ExportError::Bind {
                host: self.bind_host.clone(),
                port,
                source,
            }),
        }
    }
}
