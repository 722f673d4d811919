//! What every Scoria service shares: configuration, the RPC layer over AMQP
//! ([`rpc`]), the request context, telemetry and graceful shutdown.
//!
//! Nothing here knows about volumes: the RPC layer could carry any service's messages.
#![forbid(unsafe_code)]

pub mod changes;
pub mod config;
pub mod context;
pub mod db;
pub mod events;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod process;
pub mod rpc;
pub mod service;
pub mod settle;
pub mod shutdown;
pub mod status;
pub mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod traceparent;
pub mod translation;

pub use context::RequestContext;
