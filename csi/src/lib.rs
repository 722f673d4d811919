//! `scoria-csi`: Scoria's Kubernetes CSI plugin. The CSI v1 Identity,
//! Controller and Node services on a unix socket, the Controller a client of
//! Scoria's public API with the CLI's connection settings.
//!
//! ```text
//!  kubelet / external-* sidecars ─CSI gRPC, unix socket─▶ server::serve
//!     ├─ identity::Identity     plugin info, capabilities, Probe (asks the API)
//!     ├─ controller::Controller volumes, attachments, snapshots ─▶ scoria::Scoria ─gRPC─▶ scoria-api
//!     └─ node::Node             stage / publish on this node (NBD export ─▶ a block device ─▶ mounts)
//! ```
//!
//! Volume ids are Scoria volume ids, snapshot ids Scoria snapshot ids; the
//! node id of ControllerPublishVolume becomes the attachment's connector host.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod controller;
pub mod error;
pub mod identity;
pub mod node;
pub mod scoria;
pub mod server;

/// The CSI v1 messages and services, generated from `proto/csi/v1/csi.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `csi.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));

/// The plugin's name (GetPluginInfo; the CSIDriver object's name).
pub const DRIVER_NAME: &str = "block.scoria.dev";

/// The topology segment that names a volume's (and a node's) availability zone.
pub const TOPOLOGY_ZONE_KEY: &str = "topology.block.scoria.dev/zone";

/// The plugin's version (GetPluginInfo's vendor_version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One GiB, the unit of Scoria's sizes.
pub const GIB: i64 = 1 << 30;
