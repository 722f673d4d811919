//! What outlives a run: adopting the servers of an earlier run, killing the
//! leftovers, and stopping or releasing the servers as the service stops.

use std::collections::HashSet;

use super::{
    Cleanup, ExportError, ExportKey, ExportManager, Result, State,
    nbd::{self, Server, Spec},
};

// === impl ExportManager ===

impl ExportManager {
    /// At start-up: the `qemu-nbd` of an earlier run that still serves an export
    /// of `wanted` (found through the pid files of the run dir) is adopted, keeping
    /// its clients connected; the other leftovers are killed, and this manager's
    /// own exports not wanted are stopped. Wanted exports with no server left are
    /// for the caller to [`reexport`](ExportManager::reexport).
    #[tracing::instrument(skip(self, wanted), err)]
    pub async fn adopt_or_clean(&self, wanted: &[ExportKey]) -> Result<Cleanup> {
        let wanted = wanted
            .iter()
            .map(|key| ExportKey::new(&key.volume_id, key.read_only))
            .collect::<Result<HashSet<_>>>()?;
        let mut cleanup = Cleanup::default();
        let mut state = self.state.lock().await;
        let unwanted: Vec<ExportKey> = state
            .servers
            .keys()
            .filter(|key| !wanted.contains(*key))
            .cloned()
            .collect();
        for key in unwanted {
            if let Some(server) = state.servers.remove(&key) {
                server.stop().await;
            }
            cleanup.unexported.push(key);
        }
        self.sweep(&mut state, Some(&wanted), &mut cleanup).await?;
        self.publish(&state);
        tracing::info!(?cleanup, "exports of an earlier run settled");
        Ok(cleanup)
    }

    /// Kills the `qemu-nbd` processes recorded in the run dir's pid files that this
    /// manager does not export (checking first, in `/proc`, that the pid is a
    /// `qemu-nbd` serving that export), and removes stale pid files. Returns the
    /// exports whose server was killed.
    #[tracing::instrument(skip(self), err)]
    pub async fn cleanup_stale(&self) -> Result<Vec<ExportKey>> {
        let mut cleanup = Cleanup::default();
        let mut state = self.state.lock().await;
        self.sweep(&mut state, None, &mut cleanup).await?;
        Ok(cleanup.killed)
    }

    /// Goes through the pid files: adopts the servers of `adopt`, kills the others.
    async fn sweep(
        &self,
        state: &mut State,
        adopt: Option<&HashSet<ExportKey>>,
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
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pid"))
                .and_then(ExportKey::from_export_name)
            else {
                continue;
            };
            if state.servers.contains_key(&key) {
                continue;
            }
            let export_name = key.export_name();
            let (pid_file, log_file) = nbd::files(&self.run_dir, &export_name);
            let running = nbd::read_pid_file(&pid_file)
                .and_then(|pid| Some((pid, nbd::qemu_nbd_serving(pid, &export_name)?)));
            let Some((pid, cmdline)) = running else {
                nbd::remove_file(&pid_file);
                nbd::remove_file(&log_file);
                continue;
            };
            let spec = Spec::from_cmdline(&cmdline)
                .filter(|s| s.export_name == export_name && s.read_only == key.read_only);
            match spec {
                Some(spec) if adopt.is_some_and(|wanted| wanted.contains(&key)) => {
                    tracing::info!(export = %key, %pid, uri = %spec.info().uri(), "adopted");
                    let server = Server::adopt(pid, spec, &self.run_dir);
                    state.servers.insert(key.clone(), server);
                    cleanup.adopted.push(key);
                }
                _ => {
                    tracing::info!(export = %key, %pid, "killing a leftover qemu-nbd");
                    nbd::terminate_pid(pid).await;
                    nbd::remove_file(&pid_file);
                    nbd::remove_file(&log_file);
                    cleanup.killed.push(key);
                }
            }
        }
        Ok(())
    }

    /// Stops every export (SIGTERM to all, then waits for each).
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

    /// Lets every export go on serving without this manager, as the service stops:
    /// clients stay connected, and the pid files stay for the next run's
    /// [`adopt_or_clean`](ExportManager::adopt_or_clean). Returns the exports left.
    #[tracing::instrument(skip(self))]
    pub async fn release(&self) -> Vec<ExportKey> {
        let mut state = self.state.lock().await;
        let mut keys = Vec::new();
        for (key, server) in state.servers.drain() {
            server.release();
            keys.push(key);
        }
        self.publish(&state);
        keys.sort();
        tracing::info!(
            exports = keys.len(),
            "exports left running for the next start"
        );
        keys
    }
}
