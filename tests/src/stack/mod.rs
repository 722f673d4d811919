//! The fixture that starts the real binaries: `scoria-api`, `scoria-scheduler` and
//! `scoria-volume`, on a free port, in a temp dir, with their own control exchange
//! and database (a SQLite file, or a fresh PostgreSQL database), waiting on health
//! and heartbeats (never a fixed sleep), and killing everything on drop. Tests
//! speak to its API through the generated clients ([`Stack::volumes`],
//! [`Stack::as_admin`], ... acting as a [`Caller`]); when it ends ([`Stack::terminate`]
//! or drop) it deletes every exchange and queue of its control exchange.

mod backups;
mod clients;
mod cluster;
mod env;
mod fleet;
mod metrics;
mod services;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use scoria_common::db::Db;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub use self::{
    backups::qemu_io_file,
    clients::{
        Admin, Attachments, Authed, Backups, Caller, Clients, Quotas, Snapshots, Transfers,
        VolumeTypes, Volumes, Zones, channel, health_status, serving, tls_channel,
    },
    env::{binary, free_port, postgres_url, require_postgres},
    fleet::{APIS, Fleet, FleetOptions, QUEUE_TYPE, SCHEDULERS, VOLUME_SERVICES, strip_sgr},
    metrics::{http_get, sample},
};
use crate::{
    amqp_url,
    broker::{self, Spare},
    require_rabbitmq, unique_exchange,
};

/// How long start-up may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGKILL before the stack's broker
/// objects are deleted anyway.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A window of 64 ports for one stack's NBD exports, from the random bytes of a
/// fresh UUID: stacks that run at once almost never share one (and a port taken
/// by anything else is skipped by the volume service anyway).
fn export_ports() -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    // 12000 to 32479: above the default range, below Linux's ephemeral ports.
    let window = u16::from_le_bytes([bytes[0], bytes[1]]) % 320;
    let first = 12_000 + window * 64;
    format!("{first}-{}", first + 63)
}

/// The database engine of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A SQLite file in the stack's temp dir (the default deployment).
    Sqlite,
    /// A fresh database on the test PostgreSQL (`SCORIA_TEST_DATABASE_URL`).
    Postgres,
}

/// What a stack uses instead of the machine's defaults ([`Stack::start_options`]).
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// An existing database for the processes and the stack's own connection
    /// (none is created or dropped), e.g. on a test's own PostgreSQL cluster.
    pub database_url: Option<String>,
    /// Speak TLS to the API with these files (set its `SCORIA_API_TLS_*` in the
    /// extra environment).
    pub api_tls: Option<ClientTls>,
    /// The broker the stack's objects are deleted from when it ends, when it
    /// is not the machine's (a cluster of the test's own: set its
    /// `SCORIA_AMQP_URL` in the extra environment too).
    pub broker: Option<broker::BrokerAccess>,
}

/// The files a client speaks TLS to the API with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA the API's certificate chains to.
    pub ca: PathBuf,
    /// A client certificate and key (mTLS).
    pub identity: Option<crate::pki::Pair>,
}

/// A running stack of the three services.
pub struct Stack {
    /// The temp dir holding data and logs.
    pub dir: tempfile::TempDir,
    /// The control exchange.
    pub exchange: String,
    /// The API's `host:port`.
    pub api: String,
    /// The volume service's `host@backend`.
    pub volume_host: String,
    /// The volume service's backend name (the folder of its objects).
    pub backend: String,
    /// The database URL all three use (unless [`Stack::start_routed`] routes
    /// theirs elsewhere: then the one the test's [`Stack::db`] uses).
    pub database_url: String,
    /// The database, for assertions.
    pub db: Db,
    /// The channel every client of the stack shares.
    channel: Channel,
    /// Whether the broker objects are deleted already.
    broker_clean: bool,
    /// The broker they are deleted from.
    broker_access: broker::BrokerAccess,
    kind: DbKind,
    pg_database: Option<String>,
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
    extra_backends: Vec<String>,
    /// Whether each process gets its own metrics listener.
    serve_metrics: bool,
    /// The metrics listener of each process started: (name, `host:port`).
    metrics: Vec<(String, String)>,
}

impl Stack {
    /// Starts api, scheduler and volume on `kind` and waits until they serve.
    pub async fn start(kind: DbKind) -> Self {
        Self::start_with(kind, &[]).await
    }

    /// [`Stack::start`] with extra environment for every process.
    pub async fn start_with(kind: DbKind, extra_env: &[(&str, &str)]) -> Self {
        Self::start_routed(kind, extra_env, str::to_owned).await
    }

    /// [`Stack::start_with`], the services reaching the database at
    /// `route(database_url)` (through a proxy, say) while the test's own
    /// connection ([`Stack::db`], [`Stack::database_url`]) goes straight to it.
    pub async fn start_routed(
        kind: DbKind,
        extra_env: &[(&str, &str)],
        route: impl FnOnce(&str) -> String,
    ) -> Self {
        Self::start_inner(kind, extra_env, route, false, StackOptions::default()).await
    }

    /// [`Stack::start_with`] with `options`: a database of the test's own, TLS
    /// to the API. `kind` is that of the database.
    pub async fn start_options(
        kind: DbKind,
        extra_env: &[(&str, &str)],
        options: StackOptions,
    ) -> Self {
        Self::start_inner(kind, extra_env, str::to_owned, false, options).await
    }

    async fn start_inner(
        kind: DbKind,
        extra_env: &[(&str, &str)],
        route: impl FnOnce(&str) -> String,
        serve_metrics: bool,
        options: StackOptions,
    ) -> Self {
        require_rabbitmq();
        let dir = tempfile::tempdir().expect("temp dir");
        let exchange = unique_exchange("stack");
        let (database_url, pg_database) = match (kind, options.database_url) {
            (_, Some(url)) => (url, None),
            (DbKind::Sqlite, None) => {
                (format!("sqlite://{}/scoria.db", dir.path().display()), None)
            }
            (DbKind::Postgres, None) => {
                require_postgres();
                let name = format!("scoria_{}", exchange.replace('-', "_"));
                let admin = Db::connect(&postgres_url())
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(admin.pool())
                    .await
                    .expect("create test database");
                admin.close().await;
                let base = postgres_url();
                let prefix = base
                    .rsplit_once('/')
                    .map(|(p, _)| p.to_owned())
                    .unwrap_or(base);
                (format!("{prefix}/{name}"), Some(name))
            }
        };
        let db = Db::connect(&database_url)
            .await
            .expect("connect to the stack's database");
        let port = free_port();
        let api = format!("127.0.0.1:{port}");
        let host = format!("node-{}", &exchange[exchange.len() - 6..]);
        let backend = extra_env
            .iter()
            .find(|(k, _)| *k == "SCORIA_VOLUME_BACKEND")
            .map_or("file", |(_, v)| *v)
            .to_owned();
        let mut stack = Self {
            volume_host: format!("{host}@{backend}"),
            backend: backend.clone(),
            dir,
            exchange,
            channel: match &options.api_tls {
                None => channel(&api),
                Some(tls) => tls_channel(&api, tls),
            },
            api,
            database_url,
            db,
            broker_clean: false,
            broker_access: options
                .broker
                .clone()
                .unwrap_or_else(broker::BrokerAccess::machine),
            kind,
            pg_database,
            children: Vec::new(),
            env: Vec::new(),
            extra_backends: Vec::new(),
            serve_metrics,
            metrics: Vec::new(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("SCORIA_AMQP_URL".into(), amqp_url()),
            ("SCORIA_CONTROL_EXCHANGE".into(), stack.exchange.clone()),
            ("SCORIA_DATABASE_URL".into(), route(&stack.database_url)),
            (
                "SCORIA_DATA_DIR".into(),
                stack.dir.path().display().to_string(),
            ),
            ("SCORIA_HOST".into(), host),
            ("SCORIA_API_LISTEN".into(), stack.api.clone()),
            ("SCORIA_AUTH_MODE".into(), "noauth".into()),
            (
                "SCORIA_RPC_QUEUE_EXPIRY_MS".into(),
                crate::QUEUE_EXPIRY_MS.to_string(),
            ),
            ("SCORIA_VOLUME_CAPACITY_GIB".into(), "1000".into()),
            // Its own window of NBD export ports: stacks running at once on one
            // range race for a port, and a new qemu-nbd that lost the race can
            // take another stack's greeting on it for its own before it exits
            // (`Address already in use`).
            ("SCORIA_EXPORT_PORTS".into(), export_ports()),
            ("SCORIA_SCHEDULER_STARTUP_WAIT_MS".into(), "10000".into()),
            // No limits unless a test sets them (its own env, or UpdateQuota):
            // many tests make more than Cinder's 10 volumes in one project.
            ("SCORIA_QUOTA_VOLUMES".into(), "-1".into()),
            ("SCORIA_QUOTA_GIGABYTES".into(), "-1".into()),
            ("SCORIA_QUOTA_SNAPSHOTS".into(), "-1".into()),
            ("SCORIA_QUOTA_BACKUPS".into(), "-1".into()),
            ("SCORIA_QUOTA_BACKUP_GIGABYTES".into(), "-1".into()),
            // One backup target for every volume service of the stack.
            (
                "SCORIA_BACKUP_TARGET".into(),
                stack.dir.path().join("backups").display().to_string(),
            ),
            ("RUST_LOG".into(), "info,lapin=warn,sqlx=warn".into()),
        ];
        for (k, v) in extra_env {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        for name in ["scoria-volume", "scoria-scheduler", "scoria-api"] {
            stack.spawn(name, &env);
        }
        stack.env = env;
        stack.wait_ready().await;
        stack
    }

    fn spawn(&mut self, name: &str, env: &[(String, String)]) {
        self.spawn_as(name, name, env);
    }

    /// Spawns `program` under the name `name` (its log file, its handle for
    /// [`Stack::kill_service`] and friends).
    fn spawn_as(&mut self, name: &str, program: &str, env: &[(String, String)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .expect("log file");
        let env = self.env_for(name, env);
        let mut command = Command::new(binary(program));
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push((name.to_owned(), child));
    }

    /// The log file of process `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out += &format!("--- {name} ---\n{}\n", tail.join("\n"));
        }
        out
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.children.iter_mut().find_map(|(name, child)| {
                child.try_wait().ok().flatten().map(|s| (name.clone(), s))
            });
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited during start-up with {status}\n{}",
                    self.logs()
                );
            }
            let healthy = self.serving().await;
            let services = self.db.list_services().await.unwrap_or_default();
            let beating = |binary: &str| services.iter().any(|s| s.binary == binary);
            if healthy && beating("scoria-scheduler") && beating("scoria-volume") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not become ready in {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The backing file of volume `id` on the `file` backend.
    pub fn volume_file(&self, id: &str) -> PathBuf {
        self.backend_object("volume", id)
    }

    /// The backend object `<kind>-<id>` (with whatever extension the driver
    /// gives it), or the bare name if there is none.
    pub fn backend_object(&self, kind: &str, id: &str) -> PathBuf {
        self.backend_object_in(&self.backend, kind, id)
    }

    /// [`Stack::backend_object`] on backend `backend` (one of [`Stack::backends`]).
    pub fn backend_object_in(&self, backend: &str, kind: &str, id: &str) -> PathBuf {
        let dir = self.dir.path().join(backend);
        let stem = format!("{kind}-{id}");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n == stem
                        || n.strip_prefix(&stem)
                            .is_some_and(|rest| rest.starts_with('.'))
                })
            })
            .unwrap_or_else(|| dir.join(stem))
    }

    /// Every file in the backend's folder (for leftover checks).
    pub fn backend_files(&self) -> Vec<String> {
        let dir = self.dir.path().join(&self.backend);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// The pids of the running processes, by binary name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|(name, child)| Some((name.clone(), child.id()?)))
            .collect()
    }

    /// The database engine.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The backends of the stack's volume services: [`Stack::backend`] first,
    /// then those of [`Stack::start_volume_service`].
    pub fn backends(&self) -> Vec<String> {
        std::iter::once(self.backend.clone())
            .chain(self.extra_backends.iter().cloned())
            .collect()
    }

    /// Sends SIGTERM to every process and waits for them; returns each exit code.
    /// Once all have exited, deletes the stack's exchanges and queues from the
    /// broker (else its drop does).
    pub async fn terminate(&mut self) -> Vec<(String, Option<i32>)> {
        let mut codes = Vec::new();
        for (name, child) in &mut self.children {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            codes.push((
                name.clone(),
                status.ok().and_then(|s| s.ok()).and_then(|s| s.code()),
            ));
        }
        let all_exited = self
            .children
            .iter_mut()
            .all(|(_, child)| matches!(child.try_wait(), Ok(Some(_))));
        if all_exited {
            match broker::delete_broker_objects_on(
                &self.broker_access,
                &self.exchange,
                Spare::Exclusive,
            )
            .await
            {
                Ok(_) => self.broker_clean = true,
                Err(e) => eprintln!("cleaning up the broker: {e}"),
            }
        }
        codes
    }

    /// Kills every process (SIGKILL) and waits up to [`KILL_TIMEOUT`] for them
    /// to exit, without an async runtime (for `Drop`).
    fn kill_all_blocking(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        for (_, child) in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill_all_blocking();
        // Then nothing of the stack holds the broker objects any more.
        if !self.broker_clean {
            broker::delete_broker_objects_blocking_on(
                &self.broker_access,
                &self.exchange,
                Spare::Exclusive,
            );
        }
        // Exports (`qemu-nbd`) outlive the volume service by design; the stack's
        // own go with it (their command lines name files under its dir).
        let _ = std::process::Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("qemu-nbd.*{}", self.dir.path().display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(name) = &self.pg_database {
            // Best effort; a leftover test database is harmless.
            let _ = std::process::Command::new("psql")
                .args([
                    &postgres_url(),
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
