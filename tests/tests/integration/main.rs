//! Scoria's cross-process integration tests: real RabbitMQ, real binaries.
//! One binary, a module per area.
#![allow(missing_docs, clippy::unwrap_used)]

mod rpc;
