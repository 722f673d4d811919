//! The bridge between our [`TraceParent`] (what travels in gRPC metadata and AMQP
//! headers) and the OpenTelemetry context of `tracing` spans.
//!
//! When no exporter is installed every function here returns at once, without
//! touching the span: the W3C context then travels as before (a new span id per
//! hop, no spans recorded anywhere).

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::traceparent::TraceParent;

/// Whether an OTLP exporter (and so the OpenTelemetry layer) is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Marks the OpenTelemetry layer installed (by [`super::install`]).
pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Release);
}

/// Whether spans are exported (`SCORIA_OTLP_ENDPOINT` set).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Makes `span` continue the remote trace `parent` gives (the incoming
/// `traceparent`; `None` starts a new trace) and returns the span's own trace
/// context, to become the request context's `traceparent` so logs and bus
/// headers name the trace the exported spans are in.
///
/// Returns `None`, and `parent` is never called, when nothing is exported: the
/// caller keeps the context it has.
pub fn continue_trace(
    span: &tracing::Span,
    parent: impl FnOnce() -> Option<TraceParent>,
) -> Option<TraceParent> {
    if !exporting() {
        return None;
    }
    if let Some(parent) = parent() {
        // Fails only for a disabled span (filtered out): it has no context then.
        let _ = span.set_parent(remote_context(&parent));
    }
    span_traceparent(span)
}

/// The trace context of the current span, for the `traceparent` of an outgoing
/// message; `None` when nothing is exported or no span is current.
pub fn current() -> Option<TraceParent> {
    if !exporting() {
        return None;
    }
    span_traceparent(&tracing::Span::current())
}

fn span_traceparent(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    Some(TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    })
}

fn remote_context(parent: &TraceParent) -> opentelemetry::Context {
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        OtelTraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.span_id.to_be_bytes()),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    ))
}

/// A trace id as the 32 lowercase hex digits W3C writes, for log fields
/// (`trace_id = %TraceId(ctx.traceparent.trace_id)`): formatted only when a
/// log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Records `trace_id` (a field the span declared `Empty`) on `span`.
pub fn record_trace_id(span: &tracing::Span, traceparent: &TraceParent) {
    span.record(
        "trace_id",
        tracing::field::display(TraceId(traceparent.trace_id)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_32_hex_digits() {
        assert_eq!(TraceId(0xab).to_string(), format!("{:030}ab", 0));
    }

    #[test]
    fn nothing_happens_when_not_exporting() {
        let span = tracing::Span::none();
        let called = std::cell::Cell::new(false);
        let got = continue_trace(&span, || {
            called.set(true);
            None
        });
        assert!(!exporting());
        assert_eq!(got, None);
        assert!(
            !called.get(),
            "parent looked up although nothing is exported"
        );
        assert_eq!(current(), None);
    }
}
