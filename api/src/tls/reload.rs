//! Reloading the certificate, key and client CA: on SIGHUP, and when a poll
//! (every `api.tls.reload_secs`) finds a file changed. A file that does not load
//! is logged with its variable and the configuration in use is kept; connections
//! already open keep the configuration they were accepted with.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::ServerTls;

/// Why a reload happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Poll,
}

impl ServerTls {
    /// Loads the files again now: swaps the configuration in on success, keeps
    /// the old one (and logs why) on failure. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        match self.files.load() {
            Ok(config) => {
                self.swap(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "TLS reload failed: keeping the certificate in use");
                false
            }
        }
    }

    /// Starts the reload task on `tasks`: SIGHUP reloads at once, the poll
    /// reloads when a file's bytes changed; until `shutdown`.
    pub fn watch(&self, tasks: &TaskTracker, shutdown: CancellationToken) -> std::io::Result<()> {
        let mut hangup = signal(SignalKind::hangup())?;
        let tls = self.clone();
        let poll = (self.reload_secs > 0).then(|| Duration::from_secs(self.reload_secs));
        tasks.spawn(async move {
            let mut seen = tls.files.snapshot();
            loop {
                let trigger = tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = hangup.recv() => Trigger::Signal,
                    () = sleep_or_never(poll) => Trigger::Poll,
                };
                let now = tls.files.snapshot();
                if trigger == Trigger::Poll && now == seen {
                    continue;
                }
                tracing::debug!(?trigger, "reloading the TLS files");
                // A failed reload is retried at the next change (or signal).
                tls.reload();
                seen = now;
            }
        });
        Ok(())
    }
}

async fn sleep_or_never(poll: Option<Duration>) {
    match poll {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}
