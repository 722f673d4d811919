//! Errors of the RPC layer, and the one place that decides their gRPC code.

use std::time::Duration;

use tonic::{Code, Status};

/// A `Result` alias for RPC operations.
pub type RpcResult<T, E = RpcError> = std::result::Result<T, E>;

/// Why an RPC operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The remote handler returned an error; the status is the one it returned.
    #[error("{method} on {target} failed remotely: {status}")]
    Remote {
        /// The method called.
        method: String,
        /// The target it was sent to.
        target: String,
        /// The handler's status, unchanged.
        status: Status,
    },
    /// No reply arrived before the call's timeout.
    #[error("call {method} to {target} got no reply within {timeout:?}")]
    Timeout {
        /// The method called.
        method: String,
        /// The target it was sent to.
        target: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The broker returned the message: no queue is bound for the target.
    #[error("no queue is bound for {target}: no server of it has ever started ({reply_text})")]
    NoRoute {
        /// The target.
        target: String,
        /// The broker's reason.
        reply_text: String,
    },
    /// The target's queue exists but no server consumes it.
    #[error("no server is consuming {target}: start one")]
    NoConsumer {
        /// The target.
        target: String,
    },
    /// The broker negatively acknowledged a publish (it could not take the message).
    #[error("the broker refused a message for {target}")]
    Nacked {
        /// The target.
        target: String,
    },
    /// The broker could not be reached, or the connection failed, for too long.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// A reply could not be decoded.
    #[error("undecodable reply to {method}: {source}")]
    BadReply {
        /// The method called.
        method: String,
        /// Why.
        source: prost::DecodeError,
    },
    /// A topic or server name that cannot be used as an AMQP name.
    #[error("invalid rpc target {name:?}: {reason}")]
    InvalidTarget {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A durable queue exists with other arguments (another queue type, say)
    /// than this process declares; the message says what to do.
    #[error("{0}")]
    QueueMismatch(Box<super::broker::QueueMismatch>),
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl RpcError {
    /// The gRPC code of this error: the single place that decides it.
    pub fn code(&self) -> Code {
        match self {
            RpcError::Remote { status, .. } => status.code(),
            RpcError::Timeout { .. } => Code::DeadlineExceeded,
            RpcError::NoRoute { .. }
            | RpcError::NoConsumer { .. }
            | RpcError::Nacked { .. }
            | RpcError::Unavailable(_)
            | RpcError::ShuttingDown => Code::Unavailable,
            RpcError::BadReply { .. } => Code::Internal,
            RpcError::InvalidTarget { .. } => Code::InvalidArgument,
            RpcError::QueueMismatch(_) => Code::FailedPrecondition,
        }
    }
}

impl From<RpcError> for Status {
    fn from(err: RpcError) -> Self {
        match err {
            // A remote status passes through unchanged (details and metadata too).
            RpcError::Remote { status, .. } => status,
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

impl From<lapin::Error> for RpcError {
    fn from(err: lapin::Error) -> Self {
        RpcError::Unavailable(err.to_string())
    }
}
