//! OTLP/gRPC export of spans (`SCORIA_OTLP_ENDPOINT`): a batch span processor
//! (its own thread, a bounded queue: a slow or absent collector drops spans,
//! it never blocks a request) over the tonic exporter, behind a wrapper that
//! logs failed exports at most once per [`ERROR_LOG_INTERVAL`].

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};

/// How long one export may take before it counts as failed.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// At most one log line per this interval about failing exports.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why the OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not an `http://host:port` URL.
    #[error(
        "SCORIA_OTLP_ENDPOINT (service.otlp_endpoint) {value:?} is not an OTLP/gRPC endpoint: {reason} (expected e.g. http://127.0.0.1:4317)"
    )]
    Endpoint {
        /// The configured value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("building the OTLP exporter for {endpoint}")]
    Build {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Checks `value` is an `http://host:port` URL (TLS is not built in).
pub fn check_endpoint(value: &str) -> Result<(), OtlpError> {
    let bad = |reason: &str| OtlpError::Endpoint {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = value
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported (no TLS in this build)")),
        Some(_) | None => return Err(bad("the scheme must be http://")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => Ok(()),
        _ => Err(bad("no host")),
    }
}

/// A tracer provider exporting to `endpoint` with the resource of `binary` on
/// `host`. Must be called inside the Tokio runtime (the tonic channel lives there).
pub fn provider(endpoint: &str, binary: &str, host: &str) -> Result<SdkTracerProvider, OtlpError> {
    check_endpoint(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| OtlpError::Build {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let resource = Resource::builder_empty()
        .with_service_name(binary.to_owned())
        .with_attribute(KeyValue::new("host.name", host.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(Logged::new(exporter, endpoint))
        .build())
}

// === impl Logged ===

/// An exporter whose failures are logged, rate-limited.
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    last_log: Mutex<Option<Instant>>,
    failed: AtomicU64,
}

impl<E> Logged<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        Self {
            inner,
            endpoint: endpoint.to_owned(),
            last_log: Mutex::new(None),
            failed: AtomicU64::new(0),
        }
    }

    fn note_failure(&self, error: &dyn std::fmt::Display, spans: usize) {
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < ERROR_LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            endpoint = %self.endpoint,
            %error,
            dropped_spans = spans,
            failed_exports = failed,
            "could not export spans to the OTLP collector (logged at most every 30 s)"
        );
    }
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(err) = &result {
            self.note_failure(err, spans);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_endpoint("http://collector:4317").is_ok());
        for bad in [
            "127.0.0.1:4317",
            "grpc://x:1",
            "https://x:4317",
            "http://",
            "not a url",
        ] {
            let err = check_endpoint(bad).expect_err(bad);
            assert!(err.to_string().starts_with("SCORIA_OTLP_ENDPOINT"), "{err}");
        }
    }
}
