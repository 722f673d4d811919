//! Support for Scoria's integration tests: where the real services are, unique
//! bus configurations per test (and their removal from the broker afterwards),
//! the messages the RPC tests exchange, and a child process wrapper that reads
//! its output lines and kills it on drop.
#![forbid(unsafe_code)]

pub mod broker;
pub mod calls;
pub mod csi;
pub mod fixtures;
pub mod jwt;
pub mod otlp;
pub mod pki;
pub mod stack;

use std::{
    net::{TcpStream, ToSocketAddrs},
    process::Stdio,
    time::Duration,
};

use scoria_common::config::BusConfig;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// The broker the tests use (`SCORIA_TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("SCORIA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Panics with what to start when RabbitMQ is not reachable: a test that needs
/// it must fail, never pass by skipping.
pub fn require_rabbitmq() {
    let url = amqp_url();
    let hostport = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let hostport = if hostport.contains(':') {
        hostport
    } else {
        format!("{hostport}:5672")
    };
    let reachable = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "RabbitMQ is not reachable at {hostport} (SCORIA_TEST_AMQP_URL={url}). \
         Start it: `rabbitmq-server -detached`, or run `scripts/setup.sh` as root."
    );
}

/// A control exchange no other test run uses.
pub fn unique_exchange(tag: &str) -> String {
    format!(
        "test-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// `x-expires` of every durable queue a test declares (all processes of one
/// exchange must agree: the broker refuses a redeclaration with other arguments).
pub const QUEUE_EXPIRY_MS: u64 = 300_000;

/// A bus configuration on the test broker with its own control exchange; its
/// durable queues expire two minutes after last use, so runs leave nothing.
pub fn bus_config(exchange: &str) -> BusConfig {
    require_rabbitmq();
    BusConfig {
        amqp_url: amqp_url(),
        control_exchange: exchange.to_owned(),
        call_timeout_ms: 10_000,
        publish_timeout_ms: 20_000,
        queue_expiry_ms: Some(QUEUE_EXPIRY_MS),
        reconnect_max_backoff_ms: 1_000,
        ..BusConfig::default()
    }
}

/// Closes, on the broker side, every connection whose client properties
/// mention `needle` (our connection names carry the control exchange), as
/// `rabbitmqctl close_all_connections` would but without touching other test
/// runs sharing the broker. Returns how many were closed.
pub async fn close_broker_connections(needle: &str) -> anyhow::Result<usize> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl list_connections failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(needle)) {
        let Some(pid) = line.split('\t').next() else {
            continue;
        };
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a Scoria test"])
            .output()
            .await?;
        if status.status.success() {
            closed += 1;
        }
    }
    Ok(closed)
}

/// Messages the RPC tests and the test server exchange.
pub mod msg {
    /// A request or reply carrying a sequence number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Echo {
        /// Free text; the echo handler prefixes it with the server's name.
        #[prost(string, tag = "1")]
        pub text: String,
        /// A sequence number, to tell messages apart.
        #[prost(uint64, tag = "2")]
        pub seq: u64,
        /// How long the handler sleeps before answering.
        #[prost(uint32, tag = "3")]
        pub sleep_ms: u32,
    }
}

/// A child process whose stdout lines can be awaited; killed on drop.
pub struct ChildProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl ChildProcess {
    /// Spawns `program` with `args` and `envs`, stdout piped, stderr inherited.
    pub fn spawn(program: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits up to `within` for a line equal to `line`.
    pub async fn wait_line(&mut self, line: &str, within: Duration) -> anyhow::Result<()> {
        if self.seen.iter().any(|l| l == line) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l == line => {
                    self.seen.push(l);
                    return Ok(());
                }
                Ok(Some(l)) => self.seen.push(l),
                Ok(None) => anyhow::bail!(
                    "process exited before printing {line:?}; printed {:?}",
                    self.seen
                ),
                Err(_) => anyhow::bail!(
                    "no line {line:?} within {within:?}; printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    pub async fn terminate(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("already exited"))?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(within, self.child.wait()).await??)
    }
}
