//! The CSI Node service: a volume's NBD export (from ControllerPublishVolume's
//! publish context) made a block device on this node, formatted on first use,
//! mounted at the staging path, bind-mounted to each target.
//!
//! ```text
//!  NodeStage   export ─qemu-storage-daemon (NBD client, FUSE export)─▶ export.img ─losetup─▶ /dev/loopN
//!              (or, with the kernel nbd module: qemu-nbd --connect ─▶ /dev/nbdN)
//!              /dev/loopN ─mkfs if empty─▶ mount ─▶ staging_target_path
//!  NodePublish staging_target_path (or the device, block) ─mount --bind [ro]─▶ target_path
//! ```
//!
//! Files: `validate` (requests), `stage`, `publish`, `stats` (the calls), `attach`
//! and `daemon` (export → device), `mounts` (mount tools, blkid, mkfs, statvfs),
//! `state` (what was done, on disk, for a restarted plugin), `cmd`, `error`.
//! Calls on one volume are serialised; a second one while the first runs is
//! ABORTED, as the spec suggests.

pub mod attach;
pub mod cmd;
pub mod daemon;
pub mod error;
pub mod mounts;
pub mod publish;
pub mod stage;
pub mod state;
pub mod stats;
pub mod validate;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use tonic::{Request, Response, Status};

use self::{
    error::{NodeError, Result},
    publish::PublishRequest,
    stage::StageRequest,
    state::StateDir,
};
use crate::{
    TOPOLOGY_ZONE_KEY,
    config::NodeConfig,
    proto::{
        node_service_capability::{Rpc, Type, rpc::Type as RpcType},
        volume_capability::AccessType,
        volume_usage::Unit,
        *,
    },
};

/// The Node service of this node.
#[derive(Debug, Clone)]
pub struct Node {
    config: NodeConfig,
    state: StateDir,
    method: attach::Method,
    busy: Arc<Mutex<HashSet<String>>>,
}

/// A volume's turn: other calls on it are ABORTED until this drops.
struct Turn {
    busy: Arc<Mutex<HashSet<String>>>,
    volume_id: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(&self.volume_id);
        }
    }
}

impl Node {
    /// The Node service for `config`: opens (creates) its state dir and picks how
    /// exports are attached (kernel NBD where the module is loaded, FUSE + loop
    /// otherwise).
    pub async fn new(config: NodeConfig) -> std::io::Result<Self> {
        let state = StateDir::open(&config.state_dir).map_err(std::io::Error::other)?;
        let method = attach::Method::detect();
        tracing::info!(state_dir = %config.state_dir.display(), ?method, "node service ready");
        Ok(Self {
            config,
            state,
            method,
            busy: Arc::default(),
        })
    }

    /// Takes `volume_id`'s turn, or ABORTED when another call holds it.
    fn turn(&self, volume_id: &str) -> Result<Turn> {
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| NodeError::Internal("the volume lock is poisoned".into()))?;
        if !busy.insert(volume_id.to_owned()) {
            return Err(NodeError::Busy(volume_id.to_owned()));
        }
        Ok(Turn {
            busy: self.busy.clone(),
            volume_id: volume_id.to_owned(),
        })
    }

    /// The capabilities this node implements.
    fn capabilities() -> Vec<NodeServiceCapability> {
        [
            RpcType::StageUnstageVolume,
            RpcType::GetVolumeStats,
            RpcType::ExpandVolume,
            RpcType::VolumeCondition,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        })
        .collect()
    }
}

/// One usage entry.
fn usage(unit: Unit, total: u64, available: Option<u64>, used: Option<u64>) -> VolumeUsage {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    VolumeUsage {
        available: available.map(n).unwrap_or_default(),
        total: n(total),
        used: used.map(n).unwrap_or_default(),
        unit: unit as i32,
    }
}

#[tonic::async_trait]
impl node_server::Node for Node {
    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let staging_target_path = validate::path("staging_target_path", &req.staging_target_path)?;
        let capability = validate::capability(req.volume_capability.as_ref())?;
        let connection = validate::connection(&req.publish_context)?;
        let _turn = self.turn(volume_id)?;
        self.stage(StageRequest {
            volume_id: volume_id.to_owned(),
            staging_target_path,
            capability,
            connection,
        })
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let staging = validate::path("staging_target_path", &req.staging_target_path)?;
        let _turn = self.turn(volume_id)?;
        self.unstage(volume_id, &staging).await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let target_path = validate::path("target_path", &req.target_path)?;
        let capability = validate::capability(req.volume_capability.as_ref())?;
        if req.staging_target_path.is_empty() {
            return Err(NodeError::Precondition(
                "staging_target_path is required: this node stages volumes (STAGE_UNSTAGE_VOLUME)"
                    .into(),
            )
            .into());
        }
        let staging_target_path = validate::path("staging_target_path", &req.staging_target_path)?;
        let _turn = self.turn(volume_id)?;
        self.publish(PublishRequest {
            volume_id: volume_id.to_owned(),
            staging_target_path,
            target_path,
            capability,
            readonly: req.readonly,
        })
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let target = validate::path("target_path", &req.target_path)?;
        let _turn = self.turn(volume_id)?;
        self.unpublish(volume_id, &target).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let path = validate::path("volume_path", &req.volume_path)?;
        if !req.staging_target_path.is_empty() {
            validate::path("staging_target_path", &req.staging_target_path)?;
        }
        let stats = self.stats(volume_id, &path)?;
        let mut usages = Vec::new();
        if let Some(u) = stats.usage {
            usages.push(usage(
                Unit::Bytes,
                u.total_bytes,
                Some(u.available_bytes),
                Some(u.used_bytes),
            ));
            usages.push(usage(
                Unit::Inodes,
                u.total_inodes,
                Some(u.available_inodes),
                Some(u.used_inodes),
            ));
        }
        if let Some(bytes) = stats.device_bytes {
            usages.push(usage(Unit::Bytes, bytes, None, None));
        }
        let condition = match stats.abnormal {
            Some(message) => VolumeCondition {
                abnormal: true,
                message,
            },
            None => VolumeCondition {
                abnormal: false,
                message: "volume is attached and mounted".into(),
            },
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage: usages,
            volume_condition: Some(condition),
        }))
    }

    #[tracing::instrument(skip_all, err, fields(volume_id = %request.get_ref().volume_id))]
    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume_id = validate::required("volume_id", &req.volume_id)?;
        let path = validate::path("volume_path", &req.volume_path)?;
        if !req.staging_target_path.is_empty() {
            validate::path("staging_target_path", &req.staging_target_path)?;
        }
        let required = match req.capacity_range {
            None => 0,
            Some(range) => {
                if range.required_bytes < 0 || range.limit_bytes < 0 {
                    return Err(
                        NodeError::invalid("capacity_range", "bytes must not be negative").into(),
                    );
                }
                if range.limit_bytes > 0 && range.required_bytes > range.limit_bytes {
                    return Err(NodeError::invalid(
                        "capacity_range",
                        "required_bytes is more than limit_bytes",
                    )
                    .into());
                }
                u64::try_from(range.required_bytes).unwrap_or_default()
            }
        };
        let block_asked = req
            .volume_capability
            .as_ref()
            .and_then(|c| c.access_type.as_ref())
            .map(|t| matches!(t, AccessType::Block(_)));
        let _turn = self.turn(volume_id)?;
        let size = self.expand(volume_id, &path, required, block_asked).await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: Self::capabilities(),
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let accessible_topology = self.config.zone.as_ref().map(|zone| Topology {
            segments: [(TOPOLOGY_ZONE_KEY.to_owned(), zone.clone())].into(),
        });
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes.max(0),
            accessible_topology,
        }))
    }
}
