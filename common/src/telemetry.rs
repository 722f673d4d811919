//! Logging set-up: `tracing` to stderr, human or JSON, filtered by `RUST_LOG` with a
//! sensible default so nobody has to set it.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset: our crates at info, the noisy
/// protocol libraries at warn.
pub const DEFAULT_FILTER: &str =
    "info,lapin=warn,amq_protocol=warn,h2=warn,tower=warn,sqlx=warn,hyper=warn";

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// keeps the first subscriber).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Human => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
