//! Scoria's cross-process integration tests: real RabbitMQ, real PostgreSQL and
//! SQLite, real binaries. One binary, a module per area.
#![allow(missing_docs, clippy::unwrap_used)]

mod admin;
mod attachments;
mod db;
mod malformed;
mod reconcile;
mod rpc;
mod snapshots;
mod volumes;
