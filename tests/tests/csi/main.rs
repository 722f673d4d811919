//! The CSI plugin as a container orchestrator meets it: the real `scoria-csi`
//! binary on a unix socket ([`scoria_tests::csi::Plugin`]) against a real stack
//! (API, scheduler, volume service, broker, SQLite), driven by the generated
//! CSI clients as the kubelet and the external-* sidecars would. One stack per
//! test.
#![allow(missing_docs, clippy::unwrap_used)]

mod controller;
mod identity;
mod lifecycle;
mod node;
