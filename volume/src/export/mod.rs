//! Exports: volumes served over NBD for attachments, one real `qemu-nbd` per volume.
//!
//! ```text
//!  export(id, path, format, ro) ──▶ exported and alive? ──yes──▶ same ConnectionInfo
//!                                    │ no (or its server died: reuse its port)
//!                                    ▼
//!         next port of the range: held by one of ours? bind fails? ──▶ next port
//!                                    ▼
//!   qemu-nbd --persistent --shared=16 -f <format> -x volume-<id> -b <host> -p <port>
//!            [--read-only] --pid-file <run_dir>/volume-<id>.pid <path>
//!       (stderr to <run_dir>/volume-<id>.log; the Child is kept, killed on drop)
//!                                    ▼
//!        port greets "NBDMAGIC" within 5 s ──▶ ConnectionInfo {nbd, host, port, volume-<id>}
//!        exits first: "Address already in use" ──▶ next port; else its stderr in the error
//!
//!  unexport(id) ──▶ SIGTERM, 5 s, SIGKILL; pid file and log removed; missing = Ok
//!  start-up     ──▶ adopt_or_clean(wanted): pid files of run_dir whose qemu-nbd still
//!                   serves a wanted volume are adopted, the others killed
//!                   (cleanup_stale: kill them all); reexport(.., port_hint) keeps
//!                   a volume on its old port when that port is free
//!  shutdown()   ──▶ SIGTERM to all at once, then wait for each
//! ```
//!
//! One lock serialises the operations (an export holds it while its server starts,
//! up to 5 s), so two exports never pick the same port. A snapshot of the connection
//! infos is kept beside it for [`ExportManager::exported`], which does not wait.

mod nbd;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::Mutex;

use nbd::{Server, Spec};

/// Why an export operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The id is not a UUID (it would not make a safe export or file name).
    #[error("invalid volume id {id:?}: not a UUID")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// `qemu-nbd` is not installed.
    #[error("{program} not found: install the package {package}")]
    ToolMissing {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// Every port of the range is taken.
    #[error("no free port in {first}-{last} to export volume {volume_id}")]
    PortsExhausted {
        /// The volume.
        volume_id: String,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// `qemu-nbd` exited before it served.
    #[error("qemu-nbd exporting volume {volume_id} on port {port} exited ({status}): {stderr}")]
    Exited {
        /// The volume.
        volume_id: String,
        /// The port it was to listen on.
        port: u16,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said on stderr.
        stderr: String,
    },
    /// `qemu-nbd` runs but did not accept a connection in time (it was killed).
    #[error(
        "qemu-nbd exporting volume {volume_id} did not serve on {host}:{port} within {waited:?}"
    )]
    NotReady {
        /// The volume.
        volume_id: String,
        /// The address it was to listen on.
        host: String,
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
    },
    /// The volume is exported already, differently (path, format or mode).
    #[error("volume {volume_id} is exported as {existing}, not as {requested}: unexport it first")]
    Conflict {
        /// The volume.
        volume_id: String,
        /// How it is exported.
        existing: String,
        /// How it was asked to be.
        requested: String,
    },
    /// A port could not be tried (not "in use": the address is unusable).
    #[error("cannot bind {host}:{port}: {source}")]
    Bind {
        /// The address.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// A filesystem or process operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A `Result` alias for export operations.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

impl ExportError {
    /// Whether `qemu-nbd` failed because its port was taken (then another port is tried).
    fn is_addr_in_use(&self) -> bool {
        matches!(self, Self::Exited { stderr, .. } if stderr.contains("Address already in use"))
    }
}

/// What a client needs to reach an exported volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConnectionInfo {
    /// Always `nbd`.
    pub protocol: String,
    /// The address the server listens on.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// The export name, `volume-<id>`.
    pub export_name: String,
}

impl ConnectionInfo {
    /// The export as an NBD URI, `nbd://<host>:<port>/<export_name>` (as `qemu-io` and
    /// `qemu-img` take it; an IPv6 host is bracketed).
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("nbd://{host}:{}/{}", self.port, self.export_name)
    }
}

/// What [`ExportManager::adopt_or_clean`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Wanted volumes whose server from an earlier run now belongs to this manager.
    pub adopted: Vec<String>,
    /// Volumes this manager exported that were not wanted: unexported.
    pub unexported: Vec<String>,
    /// Volumes whose leftover server was killed.
    pub killed: Vec<String>,
}

/// Serves volumes over NBD, one `qemu-nbd` child per exported volume.
#[derive(Debug)]
pub struct ExportManager {
    bind_host: String,
    port_range: RangeInclusive<u16>,
    run_dir: PathBuf,
    program: PathBuf,
    state: Mutex<State>,
    /// The connection infos of `state`, for [`ExportManager::exported`].
    published: std::sync::Mutex<BTreeMap<String, ConnectionInfo>>,
}

#[derive(Debug, Default)]
struct State {
    servers: HashMap<String, Server>,
    /// Where the next search for a free port starts, so a port just freed is not
    /// handed out again at once.
    next_port: u16,
}

// === impl ExportManager ===

impl ExportManager {
    /// A manager whose servers listen on `bind_host` (the address clients connect
    /// to: it is their connection info's host), on ports of `port_range`, with their
    /// pid files and logs in `run_dir` (created when needed).
    pub fn new(bind_host: String, port_range: RangeInclusive<u16>, run_dir: PathBuf) -> Self {
        let next_port = *port_range.start();
        Self {
            bind_host,
            port_range,
            run_dir,
            program: PathBuf::from("qemu-nbd"),
            state: Mutex::new(State {
                servers: HashMap::new(),
                next_port,
            }),
            published: std::sync::Mutex::default(),
        }
    }

    /// This manager running `program` instead of `qemu-nbd` from `PATH`.
    pub fn with_program(self, program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            ..self
        }
    }

    /// The directory of the pid files and logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Exports volume `volume_id` (its object at `path`, in `format`) and returns how
    /// to connect. Idempotent: an exported volume keeps its server, and every caller
    /// (every attachment of a multiattach volume) gets the same info; asking for
    /// another path, format or mode is [`ExportError::Conflict`].
    #[tracing::instrument(skip(self, path), err, fields(path = %path.display()))]
    pub async fn export(
        &self,
        volume_id: &str,
        path: &Path,
        format: &str,
        read_only: bool,
    ) -> Result<ConnectionInfo> {
        self.ensure(volume_id, path, format, read_only, None).await
    }

    /// As [`ExportManager::export`], on `port_hint` if that port is free: a volume
    /// re-exported after a restart keeps the connection info its attachments hold.
    /// Another port of the range is taken when the hint is busy.
    #[tracing::instrument(skip(self, path), err, fields(path = %path.display()))]
    pub async fn reexport(
        &self,
        volume_id: &str,
        path: &Path,
        format: &str,
        read_only: bool,
        port_hint: Option<u16>,
    ) -> Result<ConnectionInfo> {
        self.ensure(volume_id, path, format, read_only, port_hint)
            .await
    }

    async fn ensure(
        &self,
        volume_id: &str,
        path: &Path,
        format: &str,
        read_only: bool,
        mut port_hint: Option<u16>,
    ) -> Result<ConnectionInfo> {
        let id = canonical_id(volume_id)?;
        let mut state = self.state.lock().await;
        if let Some(server) = state.servers.get_mut(&id) {
            if server.is_alive() {
                return same_export(&id, &server.spec, path, format, read_only)
                    .map(|()| server.spec.info());
            }
            tracing::warn!(
                volume_id = %id,
                port = server.spec.port,
                stderr = %server.stderr(),
                "qemu-nbd died: restarting it"
            );
            port_hint = port_hint.or(Some(server.spec.port));
            if let Some(dead) = state.servers.remove(&id) {
                dead.stop().await;
            }
            self.publish(&state);
        }
        std::fs::create_dir_all(&self.run_dir).map_err(|source| ExportError::Io {
            op: "create",
            path: self.run_dir.clone(),
            source,
        })?;
        let hint = port_hint;
        let ranged = self
            .candidates(state.next_port)
            .filter(move |p| Some(*p) != hint);
        for port in hint.into_iter().chain(ranged) {
            if state.servers.values().any(|s| s.spec.port == port) || !self.port_free(port).await? {
                continue;
            }
            let spec = Spec {
                export_name: format!("volume-{id}"),
                path: path.to_owned(),
                format: format.to_owned(),
                read_only,
                host: self.bind_host.clone(),
                port,
            };
            match Server::start(&self.program, spec, &self.run_dir, &id).await {
                Ok(server) => {
                    let info = server.spec.info();
                    if self.port_range.contains(&port) {
                        state.next_port = port.checked_add(1).unwrap_or(*self.port_range.start());
                    }
                    state.servers.insert(id.clone(), server);
                    self.publish(&state);
                    tracing::info!(volume_id = %id, uri = %info.uri(), read_only, "exported");
                    return Ok(info);
                }
                Err(err) if err.is_addr_in_use() => {
                    tracing::debug!(volume_id = %id, port, "port taken meanwhile: next one");
                }
                Err(err) => return Err(err),
            }
        }
        Err(ExportError::PortsExhausted {
            volume_id: id,
            first: *self.port_range.start(),
            last: *self.port_range.end(),
        })
    }

    /// Stops volume `volume_id`'s export (SIGTERM, then SIGKILL after 5 s). A volume
    /// that is not exported is fine.
    #[tracing::instrument(skip(self), err)]
    pub async fn unexport(&self, volume_id: &str) -> Result<()> {
        let id = canonical_id(volume_id)?;
        let mut state = self.state.lock().await;
        if let Some(server) = state.servers.remove(&id) {
            server.stop().await;
            self.publish(&state);
            tracing::info!(volume_id = %id, "unexported");
        }
        Ok(())
    }

    /// The exported volumes and their connection infos, by volume id.
    pub fn exported(&self) -> Vec<(String, ConnectionInfo)> {
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(id, info)| (id.clone(), info.clone()))
            .collect()
    }

    /// At start-up: the `qemu-nbd` of an earlier run that still serves a volume of
    /// `wanted` (found through the pid files of the run dir) is adopted, keeping its
    /// clients connected; the other leftovers are killed, and this manager's own
    /// exports of volumes not wanted are stopped. Wanted volumes with no server left
    /// are for the caller to [`reexport`](ExportManager::reexport).
    #[tracing::instrument(skip(self, wanted), err)]
    pub async fn adopt_or_clean(&self, wanted: &[String]) -> Result<Cleanup> {
        let wanted = wanted
            .iter()
            .map(|id| canonical_id(id))
            .collect::<Result<HashSet<_>>>()?;
        let mut cleanup = Cleanup::default();
        let mut state = self.state.lock().await;
        let unwanted: Vec<String> = state
            .servers
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in unwanted {
            if let Some(server) = state.servers.remove(&id) {
                server.stop().await;
            }
            cleanup.unexported.push(id);
        }
        self.sweep(&mut state, Some(&wanted), &mut cleanup).await?;
        self.publish(&state);
        tracing::info!(?cleanup, "exports of an earlier run settled");
        Ok(cleanup)
    }

    /// Kills the `qemu-nbd` processes recorded in the run dir's pid files that this
    /// manager does not export (checking first, in `/proc`, that the pid is a
    /// `qemu-nbd` serving that volume), and removes stale pid files. Returns the
    /// volumes whose server was killed.
    #[tracing::instrument(skip(self), err)]
    pub async fn cleanup_stale(&self) -> Result<Vec<String>> {
        let mut cleanup = Cleanup::default();
        let mut state = self.state.lock().await;
        self.sweep(&mut state, None, &mut cleanup).await?;
        Ok(cleanup.killed)
    }

    /// Goes through the pid files: adopts the servers of `adopt`, kills the others.
    async fn sweep(
        &self,
        state: &mut State,
        adopt: Option<&HashSet<String>>,
        cleanup: &mut Cleanup,
    ) -> Result<()> {
        let entries = match std::fs::read_dir(&self.run_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ExportError::Io {
                    op: "read",
                    path: self.run_dir.clone(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("volume-")?.strip_suffix(".pid"))
                .and_then(|id| canonical_id(id).ok())
            else {
                continue;
            };
            if state.servers.contains_key(&id) {
                continue;
            }
            let (pid_file, log_file) = nbd::files(&self.run_dir, &id);
            let export_name = format!("volume-{id}");
            let running = nbd::read_pid_file(&pid_file)
                .and_then(|pid| Some((pid, nbd::qemu_nbd_serving(pid, &export_name)?)));
            let Some((pid, cmdline)) = running else {
                nbd::remove_file(&pid_file);
                nbd::remove_file(&log_file);
                continue;
            };
            let spec = Spec::from_cmdline(&cmdline).filter(|s| s.export_name == export_name);
            match spec {
                Some(spec) if adopt.is_some_and(|wanted| wanted.contains(&id)) => {
                    tracing::info!(volume_id = %id, %pid, uri = %spec.info().uri(), "adopted");
                    let server = Server::adopt(pid, spec, &self.run_dir, &id);
                    state.servers.insert(id.clone(), server);
                    cleanup.adopted.push(id);
                }
                _ => {
                    tracing::info!(volume_id = %id, %pid, "killing a leftover qemu-nbd");
                    nbd::terminate_pid(pid).await;
                    nbd::remove_file(&pid_file);
                    nbd::remove_file(&log_file);
                    cleanup.killed.push(id);
                }
            }
        }
        Ok(())
    }

    /// Stops every export (SIGTERM to all, then waits for each), as the service drains.
    #[tracing::instrument(skip(self))]
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let mut servers: Vec<Server> = state.servers.drain().map(|(_, s)| s).collect();
        self.publish(&state);
        for server in &mut servers {
            server.terminate();
        }
        for server in servers {
            server.stop().await;
        }
        tracing::info!("every export stopped");
    }

    /// The ports of the range, from `cursor` round to just before it.
    fn candidates(&self, cursor: u16) -> impl Iterator<Item = u16> + use<> {
        let (first, last) = (*self.port_range.start(), *self.port_range.end());
        let start = if self.port_range.contains(&cursor) {
            cursor
        } else {
            first
        };
        (start..=last).chain(first..start)
    }

    /// Whether `port` can be bound on the bind host now.
    async fn port_free(&self, port: u16) -> Result<bool> {
        match tokio::net::TcpListener::bind((self.bind_host.as_str(), port)).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
            Err(source) => Err(ExportError::Bind {
                host: self.bind_host.clone(),
                port,
                source,
            }),
        }
    }

    fn publish(&self, state: &State) {
        let infos = state
            .servers
            .iter()
            .map(|(id, server)| (id.clone(), server.spec.info()))
            .collect();
        *self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = infos;
    }
}

/// `id` as one hyphenated, lower-case UUID, whatever form was given.
fn canonical_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| ExportError::InvalidId { id: id.to_owned() })
}

/// Ok if `existing` serves what was asked for now.
fn same_export(
    id: &str,
    existing: &Spec,
    path: &Path,
    format: &str,
    read_only: bool,
) -> Result<()> {
    let describe = |path: &Path, format: &str, read_only: bool| {
        let mode = if read_only { "read-only" } else { "read-write" };
        format!("{} ({format}, {mode})", path.display())
    };
    if existing.path == path && existing.format == format && existing.read_only == read_only {
        return Ok(());
    }
    Err(ExportError::Conflict {
        volume_id: id.to_owned(),
        existing: describe(&existing.path, &existing.format, existing.read_only),
        requested: describe(path, format, read_only),
    })
}
