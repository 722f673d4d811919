//! Exports: volumes served over NBD for attachments, one real `qemu-nbd` per export.
//! An export is a volume in a mode ([`ExportKey`]): `volume-<id>` read-write,
//! `volume-<id>-ro` read-only; a volume attached both ways has two servers.
//!
//! ```text
//!  export(id, path, format, ro) ──▶ exported and alive? ──yes──▶ same ConnectionInfo
//!                                    │ no (or its server died: reuse its port)
//!                                    ▼
//!         next port of the range: held by one of ours? bind fails? ──▶ next port
//!                                    ▼
//!   qemu-nbd --persistent --shared=16 -x <export> -b <host> -p <port>
//!            --pid-file <run_dir>/<export>.pid
//!            rw: -f <format> <path>
//!            ro: --read-only --image-opts driver=<format>,force-share=on,file.filename=<path>
//!       (stderr to <run_dir>/<export>.log; own process group; killed when its
//!        handle is dropped, unless released)
//!                                    ▼
//!        port greets "NBDMAGIC" within 5 s ──▶ ConnectionInfo {nbd, host, port, <export>, ro}
//!        exits first: "Address already in use" ──▶ next port; else its stderr in the error
//!
//!  unexport(id, ro) ──▶ SIGTERM, 5 s, SIGKILL; pid file and log removed; missing = Ok
//!  release()        ──▶ the service stops: servers left running, pid files kept
//!  start-up         ──▶ adopt_or_clean(wanted): pid files of run_dir whose qemu-nbd
//!                       still serves a wanted export are adopted, the others killed
//!                       (cleanup_stale: kill them all); reexport(.., port_hint) keeps
//!                       an export on its old port when that port is free
//!  shutdown()       ──▶ SIGTERM to all at once, then wait for each
//! ```
//!
//! The read-only server opens the image without QEMU's image locks
//! (`force-share=on`), so it can serve a volume a read-write server holds. A qcow2
//! volume written through its read-write export meanwhile may show the read-only
//! reader stale data (each server caches the image's metadata); raw volumes do not
//! have that problem.
//!
//! One lock serialises the operations (an export holds it while its server starts,
//! up to 5 s), so two exports never pick the same port. A snapshot of the connection
//! infos is kept beside it for [`ExportManager::exported`], which does not wait.

mod error;
mod key;
mod nbd;
mod ports;
mod restart;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::test_ports;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use tokio::sync::Mutex;

pub use error::{ExportError, Result};
pub use key::ExportKey;
use nbd::{Server, Spec};

pub use scoria_common::model::ConnectionInfo;

/// One export for [`ExportManager::reexport_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reexport {
    /// The export.
    pub key: ExportKey,
    /// The volume's backend object.
    pub path: PathBuf,
    /// Its format.
    pub format: String,
    /// The port it had.
    pub port_hint: Option<u16>,
}

/// What [`ExportManager::adopt_or_clean`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Wanted exports whose server from an earlier run now belongs to this manager.
    pub adopted: Vec<ExportKey>,
    /// Exports of this manager that were not wanted: unexported.
    pub unexported: Vec<ExportKey>,
    /// Exports whose leftover server was killed.
    pub killed: Vec<ExportKey>,
}

/// Serves volumes over NBD, one `qemu-nbd` per export.
#[derive(Debug)]
pub struct ExportManager {
    bind_host: String,
    port_range: RangeInclusive<u16>,
    run_dir: PathBuf,
    program: PathBuf,
    state: Mutex<State>,
    /// The connection infos of `state`, for [`ExportManager::exported`].
    published: std::sync::Mutex<BTreeMap<ExportKey, ConnectionInfo>>,
}

#[derive(Debug, Default)]
struct State {
    servers: HashMap<ExportKey, Server>,
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

    /// Exports volume `volume_id` (its object at `path`, in `format`), read-only or
    /// read-write, and returns how to connect. Idempotent: an export keeps its
    /// server, and every caller (every attachment of a multiattach volume in that
    /// mode) gets the same info; the other mode is another export, on another port.
    /// Asking for another path or format is [`ExportError::Conflict`].
    #[tracing::instrument(skip(self, path), err, fields(path = %path.display()))]
    pub async fn export(
        &self,
        volume_id: &str,
        path: &Path,
        format: &str,
        read_only: bool,
    ) -> Result<ConnectionInfo> {
        let key = ExportKey::new(volume_id, read_only)?;
        self.ensure(key, path, format, None).await
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
        let key = ExportKey::new(volume_id, read_only)?;
        self.ensure(key, path, format, port_hint).await
    }

    /// Starts several exports again after a restart, each on its `port_hint` if
    /// that port is free; one that must move never takes another's hint, so a
    /// taken port moves one export, not a chain of them.
    #[tracing::instrument(skip_all)]
    pub async fn reexport_many(
        &self,
        wanted: Vec<Reexport>,
    ) -> Vec<(ExportKey, Result<ConnectionInfo>)> {
        let hints: HashSet<u16> = wanted.iter().filter_map(|w| w.port_hint).collect();
        let mut state = self.state.lock().await;
        let mut results = Vec::with_capacity(wanted.len());
        for w in wanted {
            let mut avoid = hints.clone();
            if let Some(hint) = w.port_hint {
                avoid.remove(&hint);
            }
            let result = self
                .ensure_locked(
                    &mut state,
                    w.key.clone(),
                    &w.path,
                    &w.format,
                    w.port_hint,
                    &avoid,
                )
                .await;
            results.push((w.key, result));
        }
        results
    }

    async fn ensure(
        &self,
        key: ExportKey,
        path: &Path,
        format: &str,
        port_hint: Option<u16>,
    ) -> Result<ConnectionInfo> {
        let mut state = self.state.lock().await;
        self.ensure_locked(&mut state, key, path, format, port_hint, &HashSet::new())
            .await
    }

    /// The export `key` of `path`, started if it does not run, on `port_hint` if
    /// free, else on the next free port of the range not in `avoid`.
    async fn ensure_locked(
        &self,
        state: &mut State,
        key: ExportKey,
        path: &Path,
        format: &str,
        mut port_hint: Option<u16>,
        avoid: &HashSet<u16>,
    ) -> Result<ConnectionInfo> {
        if let Some(server) = state.servers.get_mut(&key) {
            if server.is_alive() {
                return same_export(&key, &server.spec, path, format).map(|()| server.spec.info());
            }
            tracing::warn!(
                export = %key,
                port = server.spec.port,
                stderr = %server.stderr(),
                "qemu-nbd died: restarting it"
            );
            port_hint = port_hint.or(Some(server.spec.port));
            if let Some(dead) = state.servers.remove(&key) {
                dead.stop().await;
            }
            self.publish(state);
        }
        std::fs::create_dir_all(&self.run_dir).map_err(|source| ExportError::Io {
            op: "create",
            path: self.run_dir.clone(),
            source,
        })?;
        let hint = port_hint;
        let ranged = self
            .candidates(state.next_port)
            .filter(move |p| Some(*p) != hint && !avoid.contains(p));
        for port in hint.into_iter().chain(ranged) {
            if state.servers.values().any(|s| s.spec.port == port) || !self.port_free(port).await? {
                continue;
            }
            let spec = Spec {
                export_name: key.export_name(),
                path: path.to_owned(),
                format: format.to_owned(),
                read_only: key.read_only,
                host: self.bind_host.clone(),
                port,
            };
            match Server::start(&self.program, spec, &self.run_dir, &key.volume_id).await {
                Ok(server) => {
                    let info = server.spec.info();
                    if self.port_range.contains(&port) {
                        state.next_port = port.checked_add(1).unwrap_or(*self.port_range.start());
                    }
                    state.servers.insert(key.clone(), server);
                    self.publish(state);
                    tracing::info!(export = %key, uri = %info.uri(), "exported");
                    return Ok(info);
                }
                Err(err) if err.is_addr_in_use() => {
                    tracing::debug!(export = %key, port, "port taken meanwhile: next one");
                }
                Err(err) => return Err(err),
            }
        }
        Err(ExportError::PortsExhausted {
            volume_id: key.volume_id,
            first: *self.port_range.start(),
            last: *self.port_range.end(),
        })
    }

    /// Stops volume `volume_id`'s export in that mode (SIGTERM, then SIGKILL after
    /// 5 s). Whether one ran: an export that is not there is fine.
    #[tracing::instrument(skip(self), err)]
    pub async fn unexport(&self, volume_id: &str, read_only: bool) -> Result<bool> {
        let key = ExportKey::new(volume_id, read_only)?;
        let mut state = self.state.lock().await;
        let Some(server) = state.servers.remove(&key) else {
            return Ok(false);
        };
        server.stop().await;
        self.publish(&state);
        tracing::info!(export = %key, "unexported");
        Ok(true)
    }

    /// Stops both exports (read-write and read-only) of volume `volume_id`, as it
    /// is deleted. Whether any ran.
    pub async fn unexport_volume(&self, volume_id: &str) -> Result<bool> {
        let rw = self.unexport(volume_id, false).await?;
        let ro = self.unexport(volume_id, true).await?;
        Ok(rw || ro)
    }

    /// Volume `volume_id`'s export in that mode, if its server runs now.
    pub async fn serving(
        &self,
        volume_id: &str,
        read_only: bool,
    ) -> Result<Option<ConnectionInfo>> {
        let key = ExportKey::new(volume_id, read_only)?;
        let mut state = self.state.lock().await;
        let Some(server) = state.servers.get_mut(&key) else {
            return Ok(None);
        };
        Ok(server.is_alive().then(|| server.spec.info()))
    }

    /// The exports and their connection infos (as last started or stopped; a
    /// server that died since is still listed: see [`ExportManager::serving`]).
    pub fn exported(&self) -> Vec<(ExportKey, ConnectionInfo)> {
        scoria_common::sync::lock(&self.published)
            .iter()
            .map(|(key, info)| (key.clone(), info.clone()))
            .collect()
    }

    fn publish(&self, state: &State) {
        let infos = state
            .servers
            .iter()
            .map(|(key, server)| (key.clone(), server.spec.info()))
            .collect();
        *scoria_common::sync::lock(&self.published) = infos;
    }
}

/// Ok if `existing` serves what was asked for now (the mode is the key's).
fn same_export(key: &ExportKey, existing: &Spec, path: &Path, format: &str) -> Result<()> {
    if existing.path == path && existing.format == format {
        return Ok(());
    }
    let describe = |path: &Path, format: &str| format!("{} ({format})", path.display());
    Err(ExportError::Conflict {
        volume_id: key.volume_id.clone(),
        existing: describe(&existing.path, &existing.format),
        requested: describe(path, format),
    })
}
