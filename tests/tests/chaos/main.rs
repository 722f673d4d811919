//! Chaos tests (issue 6): the real processes, broker and database disturbed
//! while volumes are being made, each test ending with every volume `available`
//! or `error`, none stuck, the backends' objects matching the database, and the
//! quota usage exact ([`support::assert_settled`]). Every scenario runs with a
//! quota enforced on its project ([`support::enforce_quota`]: limits far above
//! what it makes, so each write checks them and none is refused).
//!
//! Some scenarios disturb the shared broker for everyone (a RabbitMQ restart),
//! so every test here takes [`support::serial`] first: one at a time, whatever
//! `--test-threads` says. (A poison message on every queue is covered by the
//! integration tests' `malformed` module, not here.)
#![allow(missing_docs, clippy::unwrap_used)]

mod backup;
mod broker;
mod database;
mod migration;
mod rabbit_cluster;
mod races;
mod reschedule;
mod scheduler_down;
mod support;
mod volume_kill;
