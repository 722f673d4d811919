//! `scoria-scheduler`: the scheduler: picks a backend for each volume (cinder-scheduler).
#![forbid(unsafe_code)]

use scoria_common::{config::BaseConfig, rpc::Broker};
use tokio_util::sync::CancellationToken;

/// The binary's name, as it appears in logs and on the bus.
pub const BINARY: &str = "scoria-scheduler";

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: BaseConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let broker = Broker::start(config.bus.clone(), format!("{BINARY}@{}", config.service.host));
    tracing::info!(host = %config.service.host, exchange = %config.bus.control_exchange, "{BINARY} started");
    shutdown.cancelled().await;
    broker.close().await;
    tracing::info!("{BINARY} stopped");
    Ok(())
}
