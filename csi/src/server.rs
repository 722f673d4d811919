//! The plugin process: the services `--mode` asks for, with gRPC reflection,
//! on the unix socket of `--endpoint`, until a shutdown signal.

use std::{future::Future, path::PathBuf, sync::Arc};

use scoria_cli::connect::{Settings, clouds_path};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::{
    FILE_DESCRIPTOR_SET,
    config::{Args, NodeConfig},
    controller::Controller,
    identity::Identity,
    node::Node,
    proto::{
        controller_server::ControllerServer, identity_server::IdentityServer,
        node_server::NodeServer,
    },
    scoria::Scoria,
};

/// Why the plugin could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag or setting is wrong.
    #[error("{0}")]
    Usage(String),
    /// The socket could not be made.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node service could not start.
    #[error("cannot start the node service: {0}")]
    Node(std::io::Error),
    /// The reflection service could not load the descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The socket path of a `unix:///path` (or `unix:/path`, or a bare path) endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(ServeError::Usage(format!(
            "--endpoint {endpoint:?}: want unix:///absolute/path.sock"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Serves what `args` asks for until `shutdown` resolves; the socket is
/// removed afterwards. Logs one `serving` event with the socket once it listens.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let path = socket_path(&args.endpoint)?;
    let settings = Settings::resolve(&args.connection, clouds_path())
        .map_err(|e| ServeError::Usage(e.to_string()))?;
    let scoria = Arc::new(Scoria::new(settings));
    let node = if args.mode.node() {
        let node_id = args
            .node_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ServeError::Usage("--node-id is required unless --mode controller".into())
            })?;
        let config = NodeConfig {
            node_id,
            zone: args.zone.clone().filter(|z| !z.is_empty()),
            state_dir: args.state_dir.clone(),
            max_volumes: args.max_volumes,
        };
        Some(Node::new(config).await.map_err(ServeError::Node)?)
    } else {
        None
    };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let controller = args
        .mode
        .controller()
        .then(|| ControllerServer::new(Controller::new(scoria.clone())));
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(Identity::new(
            scoria.clone(),
            args.mode.controller(),
        )))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_optional_service(controller)
        .add_optional_service(node.map(NodeServer::new));
    // A socket left by a killed predecessor would refuse the bind.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServeError::Listen { path, source }),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ServeError::Listen {
            path: path.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(&path).map_err(|source| ServeError::Listen {
        path: path.clone(),
        source,
    })?;
    tracing::info!(socket = %path.display(), mode = ?args.mode, api = %scoria.url(), "serving");
    let served = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&path);
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_an_absolute_socket() {
        assert_eq!(
            socket_path("unix:///run/csi/csi.sock").ok(),
            Some("/run/csi/csi.sock".into())
        );
        assert_eq!(
            socket_path("unix:/tmp/a.sock").ok(),
            Some("/tmp/a.sock".into())
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }
}
