//! Identity, policy, encryption and limits, through the real processes.
#![allow(missing_docs, clippy::unwrap_used)]

mod jwt;
mod policy;
