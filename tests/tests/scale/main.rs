//! Several of everything (issue 14): several API, scheduler and volume instances
//! on PostgreSQL with quorum queues ([`instances`]), and volume services of one
//! shared backend serving it as an active-active cluster ([`cluster`]).
#![allow(missing_docs, clippy::unwrap_used)]

mod cluster;
mod instances;
