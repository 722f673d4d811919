//! The Node service (placeholder until its owner writes it): every call is
//! UNIMPLEMENTED.

use tonic::{Request, Response, Status};

use crate::{config::NodeConfig, proto::*};

/// The Node service of this node.
#[derive(Debug, Clone)]
pub struct Node {
    config: NodeConfig,
}

impl Node {
    /// The Node service for `config` (its state dir is read here).
    pub async fn new(config: NodeConfig) -> std::io::Result<Self> {
        Ok(Self { config })
    }

    fn unimplemented(&self, call: &str) -> Status {
        Status::unimplemented(format!("{call} on node {}: not yet", self.config.node_id))
    }
}

macro_rules! unimplemented_calls {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl node_server::Node for Node {
            $(
                async fn $name(&self, _request: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(self.unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

unimplemented_calls! {
    node_stage_volume(NodeStageVolumeRequest) -> NodeStageVolumeResponse;
    node_unstage_volume(NodeUnstageVolumeRequest) -> NodeUnstageVolumeResponse;
    node_publish_volume(NodePublishVolumeRequest) -> NodePublishVolumeResponse;
    node_unpublish_volume(NodeUnpublishVolumeRequest) -> NodeUnpublishVolumeResponse;
    node_get_volume_stats(NodeGetVolumeStatsRequest) -> NodeGetVolumeStatsResponse;
    node_expand_volume(NodeExpandVolumeRequest) -> NodeExpandVolumeResponse;
    node_get_capabilities(NodeGetCapabilitiesRequest) -> NodeGetCapabilitiesResponse;
    node_get_info(NodeGetInfoRequest) -> NodeGetInfoResponse;
}
