//! Logs and traces. Logs: `tracing` to stderr, human (coloured only on a
//! terminal) or JSON lines with the span fields flattened ([`json`]), filtered
//! by `RUST_LOG` with a sensible default so nobody has to set it. Traces: when
//! `SCORIA_OTLP_ENDPOINT` is set, our crates' spans are exported over OTLP/gRPC
//! ([`otlp`]) and joined across processes by the W3C `traceparent`
//! ([`context`]); when it is empty no exporter or OpenTelemetry layer exists.
//!
//! Spans of the inner steps (DB writes, driver calls) are at `debug` level:
//! the log filter leaves them out by default, the export takes them. The
//! single-row reads are at `trace`: exported only with `SCORIA_OTLP_READS`.

pub mod context;
pub mod json;
pub mod otlp;

use std::{io::IsTerminal, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{self, FilterExt, LevelFilter},
    fmt,
    prelude::*,
};

use crate::config::{LogFormat, ServiceConfig};
pub use otlp::OtlpError;

/// The filter used when `RUST_LOG` is unset: our crates at info, the noisy
/// protocol libraries at warn.
pub const DEFAULT_FILTER: &str =
    "info,lapin=warn,amq_protocol=warn,h2=warn,tower=warn,sqlx=warn,hyper=warn";

/// How long shutdown waits for the last spans to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`install`] set up; [`Telemetry::shutdown`] flushes the spans not yet
/// exported.
#[derive(Debug)]
#[must_use = "call shutdown() to flush the spans not yet exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is queued (bounded by [`FLUSH_TIMEOUT`]) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not flush the last spans"),
            Err(err) => tracing::warn!(error = %err, "could not flush the last spans"),
        }
    }
}

/// Installs the global subscriber for `binary`: logs as `service.log_format`
/// says and, when `service.otlp_endpoint` is set, the OTLP export (call it
/// inside the Tokio runtime). A second call keeps the first subscriber.
pub fn install(binary: &str, service: &ServiceConfig) -> Result<Telemetry, OtlpError> {
    let endpoint = service.otlp_endpoint.trim();
    let provider = if endpoint.is_empty() {
        None
    } else {
        Some(otlp::provider(endpoint, binary, &service.host)?)
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(binary.to_owned()))
            .with_context_activation(false)
            .with_threads(false)
            // busy_ns / idle_ns: two clock reads at every poll of every span.
            .with_tracked_inactivity(false)
            // code.file.path / code.module.name / code.line.number: three more
            // attributes on every span to build and export; the span names
            // (`db.create_volume`, `driver.create_volume`) already say where.
            .with_location(false)
            .with_filter(exporter(service.otlp_reads))
    });
    let installed = tracing_subscriber::registry()
        .with(log_layer(service.log_format).with_filter(log_filter()))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        context::set_exporting();
    }
    Ok(Telemetry { provider })
}

/// Installs logging only (no export), for tools and test servers. Calling it
/// twice is harmless (the second call keeps the first subscriber).
pub fn init(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(log_filter()))
        .try_init();
}

fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Human => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .event_format(json::FlatJson)
            .fmt_fields(fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// What the OpenTelemetry layer sees: our crates' spans down to `debug` (the
/// DB writes and driver steps; with `reads`, down to `trace`: the single-row
/// reads too), their events from `info` (span events). Nothing of the
/// libraries, so the exporter's own transport is never traced.
///
/// The target is matched by [`filter::Targets`], which decides once per
/// callsite and gives the level hint: a library's `debug!` or `trace!` (h2,
/// lapin, sqlx log every frame and query) is then never enabled again after
/// its first call, instead of asking both layers' filters at every call.
fn exporter<S: Subscriber>(reads: bool) -> impl tracing_subscriber::layer::Filter<S> {
    let spans = if reads {
        LevelFilter::TRACE
    } else {
        LevelFilter::DEBUG
    };
    let ours = filter::Targets::new().with_target("scoria", spans);
    let kinds =
        filter::filter_fn(|meta: &Metadata<'_>| meta.is_span() || *meta.level() <= Level::INFO)
            .with_max_level_hint(spans);
    ours.and(kinds)
}
