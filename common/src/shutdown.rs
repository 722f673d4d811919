//! Graceful shutdown: SIGTERM or Ctrl-C cancels one [`CancellationToken`]; every
//! task that must drain holds a child of it and is tracked by its owner, who waits
//! for it under a timeout.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled at the first SIGTERM or SIGINT. A second signal
/// exits the process at once.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Signal handlers could not be installed; fall back to Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
