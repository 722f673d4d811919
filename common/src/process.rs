//! What a service binary's `main` does, once: the `--config` argument, then the
//! configuration, then tracing, then the service's `run` until a signal
//! (linkerd2-proxy's `main.rs`: config → tracing → `run(config, shutdown)`).

use std::{future::Future, path::PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ProcessConfig};

/// Why a service binary stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// The command line is not `[--config <file.toml>]`.
    #[error("usage: {binary} [--config <file.toml>] (got {got:?})")]
    Usage {
        /// The binary.
        binary: &'static str,
        /// The first argument not understood.
        got: String,
    },
    /// The configuration could not be loaded.
    #[error("loading configuration")]
    Config(#[source] ConfigError),
    /// Telemetry could not be set up (a bad `SCORIA_OTLP_ENDPOINT`).
    #[error(transparent)]
    Telemetry(crate::telemetry::OtlpError),
    /// The service failed.
    #[error("{binary}")]
    Run {
        /// The binary.
        binary: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Loads `C` from the file named by `--config` (if any) and the environment,
/// installs tracing (and the OTLP export), runs `run` until SIGTERM or SIGINT,
/// then flushes the spans not yet exported.
pub async fn run_main<C, F, Fut, E>(binary: &'static str, run: F) -> Result<(), MainError>
where
    C: ProcessConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let path = config_path(binary, std::env::args().skip(1))?;
    let config = C::load(path.as_deref()).map_err(MainError::Config)?;
    let telemetry =
        crate::telemetry::install(binary, &config.base().service).map_err(MainError::Telemetry)?;
    let shutdown = crate::shutdown::on_signal();
    let outcome = run(config, shutdown).await.map_err(|err| MainError::Run {
        binary,
        source: Box::new(err),
    });
    telemetry.shutdown().await;
    outcome
}

/// `--config <file>`, the only argument.
fn config_path(
    binary: &'static str,
    mut args: impl Iterator<Item = String>,
) -> Result<Option<PathBuf>, MainError> {
    match (args.next(), args.next()) {
        (None, _) => Ok(None),
        (Some(flag), Some(path)) if flag == "--config" => Ok(Some(PathBuf::from(path))),
        (Some(got), _) => Err(MainError::Usage { binary, got }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(args: &[&str]) -> Result<Option<PathBuf>, MainError> {
        config_path("scoria-x", args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn only_config_is_understood() {
        assert_eq!(path(&[]).expect("none"), None);
        assert_eq!(
            path(&["--config", "a.toml"]).expect("file"),
            Some(PathBuf::from("a.toml"))
        );
        let err = path(&["--verbose"]).expect_err("unknown flag");
        assert_eq!(
            err.to_string(),
            "usage: scoria-x [--config <file.toml>] (got \"--verbose\")"
        );
        assert!(path(&["--config"]).is_err(), "missing file");
    }
}
