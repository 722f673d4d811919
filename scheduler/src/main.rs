//! Wires config -> tracing -> `run` for `scoria-scheduler`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use scoria_scheduler::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config_path = config_path_from_args()?;
    let config = Config::load(config_path.as_deref()).context("loading configuration")?;
    scoria_common::telemetry::init(config.service.log_format);
    let shutdown = scoria_common::shutdown::on_signal();
    scoria_scheduler::run(config, shutdown)
        .await
        .context("scoria-scheduler")
}

/// `--config <file>`, the only argument.
fn config_path_from_args() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--config"), Some(path)) => Ok(Some(PathBuf::from(path))),
        (Some(other), _) => {
            anyhow::bail!("usage: scoria-scheduler [--config <file.toml>] (got {other:?})")
        }
    }
}
