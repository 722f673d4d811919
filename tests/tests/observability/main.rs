//! What an operator sees: Prometheus metrics, OpenTelemetry traces, watch streams,
//! notification settings and bounded queues, against real processes.

mod logs;
mod metrics;
mod notifications;
mod traces;
mod watch;
