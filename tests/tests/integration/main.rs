//! Scoria's cross-process integration tests: real RabbitMQ, real PostgreSQL and
//! SQLite, real binaries, spoken to through the generated tonic clients. One
//! binary, a module per area.
#![allow(missing_docs, clippy::unwrap_used)]

mod admin;
mod attachments;
mod backup;
mod backup_target;
mod broker;
mod calls;
mod db;
mod grpcurl;
mod malformed;
mod manage;
mod migration;
mod quotas;
mod reconcile;
mod revert;
mod rpc;
mod snapshots;
mod support;
mod transfers;
mod volumes;
