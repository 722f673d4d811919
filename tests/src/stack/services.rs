//! The stack's processes one by one: killed, stopped, started again, a further
//! volume service or API instance, and the heartbeats and health checks that
//! tell they are ready.

use std::time::{Duration, Instant};

use tokio::process::Command;
use tonic::transport::Channel;

use super::{START_TIMEOUT, Stack, channel, serving};

/// What tells that a process just spawned is ready.
pub(super) enum Ready<'a> {
    /// A heartbeat it writes.
    Beat(Heartbeat<'a>),
    /// The health check of the API behind the channel answering SERVING.
    Serving(Channel),
}

/// A heartbeat to wait for: of `binary` (on `host`, when given), written at or
/// after `since_ms`.
pub(super) struct Heartbeat<'a> {
    pub(super) binary: &'a str,
    pub(super) host: Option<&'a str>,
    pub(super) since_ms: i64,
}

// === impl Stack ===

impl Stack {
    /// Kills process `name` (`scoria-volume`, ...) with SIGKILL and waits for it.
    pub async fn kill_service(&mut self, name: &str) {
        self.signal_and_wait(name, "-KILL").await;
    }

    /// Stops process `name` with SIGTERM; returns its exit code (None: killed by a
    /// signal, or still running after 30 s).
    pub async fn stop_service(&mut self, name: &str) -> Option<i32> {
        self.signal_and_wait(name, "-TERM").await
    }

    async fn signal_and_wait(&mut self, name: &str, signal: &str) -> Option<i32> {
        let index = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running in this stack"));
        let (_, mut child) = self.children.remove(index);
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .await;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        status.ok().and_then(|s| s.ok()).and_then(|s| s.code())
    }

    /// Starts process `name` again with the stack's environment (its log goes on
    /// in the same file) and, for the volume service and the scheduler, waits for
    /// a heartbeat written after this call (the service is ready then).
    pub async fn start_service(&mut self, name: &str) {
        assert!(
            !self.children.iter().any(|(n, _)| n == name),
            "{name} runs already"
        );
        let since = scoria_common::model::now_ms();
        let env = self.env.clone();
        self.spawn(name, &env);
        let ready = if name == "scoria-api" {
            Ready::Serving(self.channel())
        } else {
            Ready::Beat(Heartbeat {
                binary: name,
                host: None,
                since_ms: since,
            })
        };
        self.wait_started(name, ready).await;
    }

    /// Starts a further `scoria-volume` owning backend `backend` on the stack's
    /// host (its objects under `<dir>/<backend>`), with the stack's environment
    /// plus `extra_env`, and waits for its first heartbeat. Its process is named
    /// `scoria-volume@<backend>` (log file, [`Stack::kill_service`]); returns its
    /// `host@backend`.
    pub async fn start_volume_service(
        &mut self,
        backend: &str,
        extra_env: &[(&str, &str)],
    ) -> String {
        let name = format!("scoria-volume@{backend}");
        assert!(
            !self.children.iter().any(|(n, _)| *n == name),
            "{name} runs already"
        );
        let mut env = self.env.clone();
        let overrides = [("SCORIA_VOLUME_BACKEND", backend)];
        for (k, v) in overrides.iter().chain(extra_env) {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let host = self
            .volume_host
            .split_once('@')
            .map_or(self.volume_host.as_str(), |(h, _)| h);
        let volume_host = format!("{host}@{backend}");
        let since = scoria_common::model::now_ms();
        self.spawn_as(&name, "scoria-volume", &env);
        self.extra_backends.push(backend.to_owned());
        let beat = Heartbeat {
            binary: "scoria-volume",
            host: Some(&volume_host),
            since_ms: since,
        };
        self.wait_started(&name, Ready::Beat(beat)).await;
        volume_host
    }

    /// Starts a further `scoria-api` with the stack's environment but its own
    /// listen address (a free port), on the same database, broker and control
    /// exchange as the first, and waits until its health check answers
    /// SERVING. Its process is named `scoria-api@<suffix>` (log file,
    /// [`Stack::kill_service`]) and is killed with the stack; returns its
    /// `host:port` (clients: `Clients::new(channel(&addr), caller)`).
    pub async fn start_api_instance(&mut self, suffix: &str) -> String {
        let name = format!("scoria-api@{suffix}");
        assert!(
            !self.children.iter().any(|(n, _)| *n == name),
            "{name} runs already"
        );
        let addr = format!("127.0.0.1:{}", super::free_port());
        let mut env = self.env.clone();
        env.retain(|(key, _)| key != "SCORIA_API_LISTEN");
        env.push(("SCORIA_API_LISTEN".to_owned(), addr.clone()));
        self.spawn_as(&name, "scoria-api", &env);
        self.wait_started(&name, Ready::Serving(channel(&addr)))
            .await;
        addr
    }

    /// Starts a further `scoria-scheduler` with the stack's environment plus
    /// `extra_env`, under its own `SCORIA_HOST` (`<stack host>-<suffix>`, so its
    /// heartbeat is its own), on the same database, broker and control exchange:
    /// it competes for the one scheduler queue. Its process is named
    /// `scoria-scheduler@<suffix>` (log file, [`Stack::kill_service`]); waits
    /// for its first heartbeat and returns its host.
    pub async fn start_scheduler_instance(
        &mut self,
        suffix: &str,
        extra_env: &[(&str, &str)],
    ) -> String {
        let name = format!("scoria-scheduler@{suffix}");
        assert!(
            !self.children.iter().any(|(n, _)| *n == name),
            "{name} runs already"
        );
        let stack_host = self
            .volume_host
            .split_once('@')
            .map_or(self.volume_host.as_str(), |(h, _)| h);
        let host = format!("{stack_host}-{suffix}");
        let mut env = self.env.clone();
        let overrides = [("SCORIA_HOST", host.as_str())];
        for (k, v) in overrides.iter().chain(extra_env) {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let since = scoria_common::model::now_ms();
        self.spawn_as(&name, "scoria-scheduler", &env);
        let beat = Heartbeat {
            binary: "scoria-scheduler",
            host: Some(&host),
            since_ms: since,
        };
        self.wait_started(&name, Ready::Beat(beat)).await;
        host
    }

    /// Waits until process `name`, just spawned, is `ready` (its heartbeat
    /// written, or its health check serving). Panics with the logs if it exits or
    /// is not ready within the start timeout.
    pub(super) async fn wait_started(&mut self, name: &str, ready: Ready<'_>) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name)
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{name} exited during start-up with {status}\n{}",
                    self.logs()
                );
            }
            let is_ready = match &ready {
                Ready::Beat(beat) => self.has_beaten(beat).await,
                Ready::Serving(channel) => serving(channel).await,
            };
            if is_ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not become ready in {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to the start timeout) for a heartbeat of `binary` written at or
    /// after `since_ms`.
    pub async fn wait_heartbeat(&self, binary: &str, since_ms: i64) {
        let beat = Heartbeat {
            binary,
            host: None,
            since_ms,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.has_beaten(&beat).await {
            assert!(
                Instant::now() < deadline,
                "no heartbeat of {binary} since {since_ms}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn has_beaten(&self, beat: &Heartbeat<'_>) -> bool {
        let services = self.db.list_services().await.unwrap_or_default();
        services.iter().any(|s| {
            s.binary == beat.binary
                && beat.host.is_none_or(|host| s.host == host)
                && s.last_heartbeat_ms >= beat.since_ms
        })
    }
}
