//! A CSI client's side of the unix socket: a channel to a plugin at a path,
//! for tests and tools (`tonic` speaks HTTP/2 over any stream).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A lazy channel to the plugin listening on the unix socket `path`: it
/// connects on first use, and again after the plugin restarts.
pub fn unix_channel(path: &Path) -> Channel {
    let path: PathBuf = path.to_owned();
    // The URI is a placeholder: the connector below ignores it.
    Endpoint::from_static("http://csi.invalid").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        },
    ))
}
