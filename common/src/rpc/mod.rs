//! The RPC layer over AMQP: `call`, `cast` and `fanout_cast` to a topic or to one
//! server of it, a server that dispatches on the method name, and a notifier.
//!
//! The topology is the one the OpenStack RPC design uses (see [`names`]); every AMQP
//! name starts with the `control_exchange` setting so deployments sharing one broker
//! never see each other's messages. A message is AMQP properties plus a protobuf
//! body: `type` names the method, headers carry the [`RequestContext`], and the reply
//! to a call is one `RpcReply` holding the result or a typed error.
//!
//! ```text
//!   RpcClient ──call/cast──▶ <cx> (topic) ──key topic──▶ <cx>.<topic>          ─┐
//!                                         └─key topic.server─▶ <cx>.<topic>.<server> ├▶ RpcServer
//!   RpcClient ──fanout────▶ <cx>.<topic>.fanout ─────▶ exclusive queue per server ─┘     │
//!   RpcClient ◀── <cx>.reply (direct) ◀── RpcReply, key = caller's reply queue ──────────┘
//!   rejected (undecodable / unknown method / a cast still UNAVAILABLE after the
//!   redelivery cap) ──▶ <cx>.dlx ──▶ <cx>.dead
//! ```
//!
//! [`Broker`] owns the connection and re-establishes it with jittered backoff;
//! clients and servers ask it for the current session and resume by themselves.
//!
//! [`RequestContext`]: crate::RequestContext

mod backoff;
pub mod broker;
pub mod client;
pub mod error;
pub mod headers;
pub mod names;
pub mod notifier;
mod queues;
pub mod reply;
pub mod server;

pub use broker::Broker;
pub use client::{CallOptions, RpcClient};
pub use error::{RpcError, RpcResult};
pub use names::{Names, Target};
pub use notifier::{Notifier, Priority};
pub use server::{Dispatcher, RpcServer, ServerOptions};

/// The AMQP `content_type` of every Scoria message.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
