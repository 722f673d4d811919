//! The error of every port method: either the bus did not carry the request (or
//! its answer), or the service that does the work refused or failed it. Both
//! convert to `tonic::Status` without loss: a failure keeps the status its
//! handler returned, details (`ErrorInfo`, `BadRequest`) and all.

use tonic::{Code, Status};

use crate::{rpc::RpcError, status::Reason};

/// A `Result` alias for port methods.
pub type OpsResult<T> = Result<T, OpsError>;

/// Why a port method failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The bus did not deliver the request or its answer: broker down, no route,
    /// no consumer, refused by the broker, or no reply in time. Nothing was done,
    /// or it is unknown whether it was (a call that timed out).
    #[error(transparent)]
    Bus(RpcError),
    /// The serving side answered with this status (its own typed error, turned
    /// into a status by its one `From` impl).
    #[error("{}", .0.message())]
    Failed(Status),
}

impl OpsError {
    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            OpsError::Bus(err) => err.code(),
            OpsError::Failed(status) => status.code(),
        }
    }

    /// Whether the request never reached a handler (so nothing was done): the
    /// caller may compensate. A call that timed out is not "undelivered".
    pub fn is_undelivered(&self) -> bool {
        matches!(
            self,
            OpsError::Bus(
                RpcError::NoRoute { .. }
                    | RpcError::NoConsumer { .. }
                    | RpcError::Nacked { .. }
                    | RpcError::Unavailable(_)
                    | RpcError::InvalidTarget { .. }
                    | RpcError::ShuttingDown
            )
        )
    }

    /// The `ErrorInfo` reason of a failure, when its status carries one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            OpsError::Bus(_) => None,
            OpsError::Failed(status) => crate::status::reason_of(status),
        }
    }
}

impl From<RpcError> for OpsError {
    fn from(err: RpcError) -> Self {
        match err {
            // The handler's own answer, unchanged.
            RpcError::Remote { status, .. } => OpsError::Failed(status),
            other => OpsError::Bus(other),
        }
    }
}

impl From<Status> for OpsError {
    fn from(status: Status) -> Self {
        OpsError::Failed(status)
    }
}

impl From<OpsError> for Status {
    fn from(err: OpsError) -> Self {
        match err {
            OpsError::Bus(err) => err.into(),
            OpsError::Failed(status) => status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_status_passes_through_unchanged() {
        let status = crate::status::error(Code::FailedPrecondition, Reason::WrongStatus, "busy");
        let err = OpsError::from(RpcError::Remote {
            method: "m".into(),
            target: "t".into(),
            status,
        });
        assert_eq!(err.reason(), Some(Reason::WrongStatus));
        let back = Status::from(err);
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "busy");
        assert_eq!(crate::status::reason_of(&back), Some(Reason::WrongStatus));
    }

    #[test]
    fn bus_errors_keep_their_code_and_tell_undelivered_from_timeout() {
        let down = OpsError::from(RpcError::Unavailable("down".into()));
        assert_eq!(down.code(), Code::Unavailable);
        assert!(down.is_undelivered());
        let late = OpsError::from(RpcError::Timeout {
            method: "m".into(),
            target: "t".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(late.code(), Code::DeadlineExceeded);
        assert!(!late.is_undelivered());
    }
}
