//! The CSI plugin as the tests meet it: the real `scoria-csi` binary as a child
//! process against a [`Stack`]'s API, on a fresh unix socket in a temp dir, and
//! the generated CSI clients on that socket. One [`Plugin`] per simulated node;
//! it acts as an admin of [`PROJECT`] (the `noauth` headers the stack's admin
//! caller sends).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use scoria_csi::proto::{
    ProbeRequest, controller_client::ControllerClient, identity_client::IdentityClient,
    node_client::NodeClient,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::stack::{Clients, Stack};

/// The project the plugin's volumes belong to.
pub const PROJECT: &str = "csi-project";
/// How long the plugin may take to answer Probe with ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `scoria-csi`; killed on drop.
pub struct Plugin {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    state_dir: PathBuf,
    node_id: String,
    args: Vec<String>,
    channel: Channel,
}

impl Plugin {
    /// Starts `scoria-csi` (all services) against `stack`'s API on a fresh
    /// unix socket in a temp dir, as node `node_id`; waits until Probe answers ready.
    pub async fn start(stack: &Stack, node_id: &str) -> Plugin {
        Self::start_with(stack, node_id, &[]).await
    }

    /// [`Plugin::start`] with extra flags (`--zone`, `--max-volumes`, `--mode` ...).
    pub async fn start_with(stack: &Stack, node_id: &str, extra: &[&str]) -> Plugin {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("csi.sock");
        let state_dir = dir.path().join("state");
        let mut args: Vec<String> = vec![
            "--endpoint".into(),
            format!("unix://{}", socket.display()),
            "--node-id".into(),
            node_id.into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--os-url".into(),
            format!("http://{}", stack.api),
            "--os-project".into(),
            PROJECT.into(),
            "--os-roles".into(),
            "admin,member".into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut plugin = Plugin {
            child: None,
            channel: scoria_csi::client::unix_channel(&socket),
            dir,
            socket,
            state_dir,
            node_id: node_id.to_owned(),
            args,
        };
        plugin.spawn().await;
        plugin
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("plugin log file");
        let mut command = Command::new(csi_binary());
        command
            .args(&self.args)
            .env("RUST_LOG", "info,scoria_csi=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        // Only the flags above say where the API is and who the plugin is.
        for key in [
            "SCORIA_URL",
            "SCORIA_TOKEN",
            "SCORIA_CLOUD",
            "SCORIA_CACERT",
            "SCORIA_CERT",
            "SCORIA_KEY",
            "SCORIA_CLOUDS_FILE",
            "CSI_ENDPOINT",
        ] {
            command.env_remove(key);
        }
        self.child = Some(command.spawn().expect("starting scoria-csi"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "scoria-csi exited during start-up with {status}\n{}",
                    self.logs()
                );
            }
            let probe = self.identity().probe(ProbeRequest {}).await;
            if let Ok(answer) = &probe
                && answer.get_ref().ready == Some(true)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "scoria-csi never answered Probe ready in {START_TIMEOUT:?}: last {probe:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Identity service.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    /// The Controller service.
    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    /// The Node service.
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// Kills the plugin (SIGKILL) and starts it again on the same socket and
    /// state dir; waits until Probe answers ready.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Kills the plugin (SIGKILL) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Where the node service keeps its state files.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// This plugin's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The unix socket it serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A temp dir of the plugin's own (for staging and target paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin's log file (stdout and stderr, every run).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("scoria-csi.log")
    }

    /// The last lines of the plugin's log, for failure messages.
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!("--- scoria-csi ---\n{}\n", tail.join("\n"))
    }

    /// Scoria's clients as the plugin's project (an admin of [`PROJECT`]).
    pub fn scoria(stack: &Stack) -> Clients {
        stack.as_admin(PROJECT)
    }
}

/// The `scoria-csi` binary, built with the services by [`crate::stack::binary`]
/// (one cargo run, so the two builds never rebuild each other's dependencies).
pub fn csi_binary() -> PathBuf {
    crate::stack::binary("scoria-csi")
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
