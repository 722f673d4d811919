//! What the security tests share: one PKI, one TLS RabbitMQ node and one TLS
//! PostgreSQL cluster for the tests running at once (started by the first,
//! stopped with the last), and a lone `scoria-api` on TLS.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use scoria_tests::{
    broker::{Spare, delete_broker_objects_blocking},
    fixtures::{
        postgres::PgCluster,
        rabbit::{RabbitNode, RabbitOptions},
    },
    pki::{Ca, Pair},
    stack::{ClientTls, binary, free_port, serving, tls_channel},
    unique_exchange,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The CA, certificates and servers the tests share.
pub struct Shared {
    /// The PKI's directory.
    pub dir: tempfile::TempDir,
    /// The CA every server and client certificate of the deployment comes from.
    pub ca: Ca,
    /// The server certificate (127.0.0.1, localhost) of the API and RabbitMQ.
    pub server: Pair,
    /// The client certificate of the services (to RabbitMQ, to an mTLS API).
    pub client: Pair,
    /// The TLS RabbitMQ node.
    pub rabbit: RabbitNode,
    /// The TLS PostgreSQL cluster.
    pub pg: PgCluster,
}

static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

/// The shared fixtures: those of a test still running, or new ones.
pub fn shared() -> Arc<Shared> {
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = slot.upgrade() {
        return shared;
    }
    let dir = tempfile::Builder::new()
        .prefix("scoria-pki-")
        .tempdir()
        .expect("pki dir");
    let ca = Ca::new(dir.path(), "deploy").expect("CA");
    let server = ca.server("server", &[]).expect("server cert");
    let client = ca.client("client", "scoria-services").expect("client cert");
    let rabbit = RabbitNode::start(RabbitOptions::new(server.clone(), ca.cert.clone()))
        .expect("a TLS RabbitMQ node");
    // PostgreSQL's certificate names `localhost` only, so `127.0.0.1` is a
    // wrong host for `verify-full`.
    let pg_server = ca.server_for("pg", &["localhost"]).expect("pg cert");
    let pg = PgCluster::start(&pg_server).expect("a TLS PostgreSQL cluster");
    let shared = Arc::new(Shared {
        dir,
        ca,
        server,
        client,
        rabbit,
        pg,
    });
    *slot = Arc::downgrade(&shared);
    shared
}

/// A database of its own on the shared cluster: its name and `verify-full` URL.
pub fn database(shared: &Shared) -> (String, String) {
    let name = format!("sec_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    shared.pg.create_database(&name).expect("create database");
    let url = shared
        .pg
        .url("localhost", &name, &PgCluster::verify_full(&shared.ca.cert));
    (name, url)
}

/// `scoria-api` alone (SQLite, the machine's broker) with TLS on: the files of
/// its certificate, in a directory of its own so a test can replace them.
pub struct LoneApi {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Its files and log.
    pub dir: tempfile::TempDir,
    /// The certificate it serves (a copy the test may overwrite).
    pub cert: PathBuf,
    /// The key it serves.
    pub key: PathBuf,
    exchange: String,
    child: Child,
}

impl LoneApi {
    /// Starts it with `server` (copied), `extra_env`, and waits until `ready`
    /// answers SERVING.
    pub async fn start(
        server: &Pair,
        extra_env: &[(&str, String)],
        ready: impl Fn(&str) -> Channel,
    ) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("api.pem"), dir.path().join("api.key"));
        std::fs::copy(&server.cert, &cert).expect("copy cert");
        std::fs::copy(&server.key, &key).expect("copy key");
        let addr = format!("127.0.0.1:{}", free_port());
        let exchange = unique_exchange("sec");
        let log = std::fs::File::create(dir.path().join("api.log")).expect("log");
        let mut command = Command::new(binary("scoria-api"));
        command
            .env("SCORIA_AMQP_URL", scoria_tests::amqp_url())
            .env("SCORIA_CONTROL_EXCHANGE", &exchange)
            .env(
                "SCORIA_RPC_QUEUE_EXPIRY_MS",
                scoria_tests::QUEUE_EXPIRY_MS.to_string(),
            )
            .env("SCORIA_DATA_DIR", dir.path())
            .env("SCORIA_API_LISTEN", &addr)
            .env("SCORIA_API_TLS_CERT", &cert)
            .env("SCORIA_API_TLS_KEY", &key)
            .env(
                "RUST_LOG",
                "info,scoria_api::tls=debug,lapin=warn,sqlx=warn",
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start scoria-api");
        let mut api = Self {
            addr,
            dir,
            cert,
            key,
            exchange,
            child,
        };
        let channel = ready(&api.addr);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !serving(&channel).await {
            if let Ok(Some(status)) = api.child.try_wait() {
                panic!("scoria-api exited with {status}\n{}", api.log());
            }
            assert!(
                Instant::now() < deadline,
                "scoria-api did not serve in 60 s\n{}",
                api.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.log")).unwrap_or_default()
    }

    /// Sends it SIGHUP.
    pub async fn hangup(&self) {
        let pid = self.child.id().expect("running");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LoneApi {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
        delete_broker_objects_blocking(&self.exchange, Spare::Exclusive);
    }
}

/// A TLS channel to `addr` trusting `ca`, showing `identity`.
pub fn tls(addr: &str, ca: &std::path::Path, identity: Option<&Pair>) -> Channel {
    tls_channel(
        addr,
        &ClientTls {
            ca: ca.to_owned(),
            identity: identity.cloned(),
        },
    )
}

/// Runs `grpcurl args...`; (success, stdout + stderr).
pub async fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("grpcurl is needed (run the tests through scripts/test.sh, or scripts/setup.sh)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
