//! The command line: where to listen, which services to run, who this node
//! is, and the CLI's connection flags (`--os-url`, `--os-token`, ... with the
//! same environment variables and `clouds.toml`) for the Scoria API.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use scoria_cli::args::ConnectionArgs;

/// `scoria-csi`: Scoria's CSI plugin.
#[derive(Debug, Clone, Parser)]
#[command(name = "scoria-csi", version, about)]
pub struct Args {
    /// The unix socket to serve CSI on (`unix:///run/csi/csi.sock`).
    #[arg(long, env = "CSI_ENDPOINT", value_name = "URL")]
    pub endpoint: String,
    /// This node's id (NodeGetInfo; the attachments' connector host). Needed
    /// unless `--mode controller`.
    #[arg(long, env = "SCORIA_CSI_NODE_ID", value_name = "NODE")]
    pub node_id: Option<String>,
    /// This node's availability zone (NodeGetInfo's topology).
    #[arg(long, env = "SCORIA_CSI_ZONE", value_name = "AZ")]
    pub zone: Option<String>,
    /// Where the node service keeps what it staged, so a restart finds it.
    #[arg(
        long,
        env = "SCORIA_CSI_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/scoria-csi"
    )]
    pub state_dir: PathBuf,
    /// At most this many volumes on this node (NodeGetInfo; 0: no limit).
    #[arg(
        long,
        env = "SCORIA_CSI_MAX_VOLUMES",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_volumes: i64,
    /// Which services to serve (Identity always).
    #[arg(long, env = "SCORIA_CSI_MODE", value_enum, default_value_t = Mode::All)]
    pub mode: Mode,
    /// Where the Scoria API is and who the plugin acts as.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Which CSI services a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Identity, Controller and Node.
    All,
    /// Identity and Controller (the Deployment beside the sidecars).
    Controller,
    /// Identity and Node (the DaemonSet on every node).
    Node,
}

impl Mode {
    /// Whether the Controller service is served.
    pub fn controller(self) -> bool {
        matches!(self, Mode::All | Mode::Controller)
    }

    /// Whether the Node service is served.
    pub fn node(self) -> bool {
        matches!(self, Mode::All | Mode::Node)
    }
}

/// What the Node service is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: String,
    /// Its availability zone, if any.
    pub zone: Option<String>,
    /// Where its state files live.
    pub state_dir: PathBuf,
    /// NodeGetInfo's max_volumes_per_node (0: no limit).
    pub max_volumes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_the_cli_connection_flags() {
        let args = Args::try_parse_from([
            "scoria-csi",
            "--endpoint",
            "unix:///tmp/csi.sock",
            "--node-id",
            "n1",
            "--mode",
            "controller",
            "--os-url",
            "http://127.0.0.1:1",
            "--os-project",
            "p",
        ])
        .expect("parse");
        assert_eq!(args.mode, Mode::Controller);
        assert!(args.mode.controller() && !args.mode.node());
        assert_eq!(args.connection.url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/scoria-csi"));
        assert!(
            Args::try_parse_from(["scoria-csi"]).is_err(),
            "--endpoint is required"
        );
    }
}
