//! Why a CSI call failed, and the one `match` that decides its gRPC code (the
//! codes the CSI spec lists per call). A refusal from the Scoria API keeps its
//! code where the spec means the same thing, with what was asked in front.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A failed CSI call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required field is missing or empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field holds something the plugin cannot take.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the CSI proto spells it.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The volume, snapshot or node named does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `volume`, `snapshot`, `node`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Something of that name exists, incompatible with the request.
    #[error("{0}")]
    AlreadyExists(String),
    /// A capacity the plugin cannot satisfy.
    #[error("{0}")]
    OutOfRange(String),
    /// No backend can hold the volume (where the topology asks, of that size):
    /// the CO may try another node's topology.
    #[error("{0}")]
    Exhausted(String),
    /// The resource is in a state that forbids the call (in use, has snapshots, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A starting token the plugin never handed out.
    #[error("starting_token {0:?} is not one this plugin returned")]
    BadToken(String),
    /// A capability or access mode the volume cannot have.
    #[error("{0}")]
    Unsupported(String),
    /// The Scoria API cannot be reached.
    #[error("the Scoria API is unavailable: {0}")]
    Unavailable(String),
    /// A volume, snapshot or attachment did not settle in time.
    #[error("{0}")]
    Timeout(String),
    /// The Scoria API refused or failed a request.
    #[error("{action}: {}", status.message())]
    Scoria {
        /// What was asked (`CreateVolume pvc-1`).
        action: String,
        /// The API's answer.
        status: Status,
    },
    /// A bug, or an answer that makes no sense.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of a CSI call's parts.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A closure wrapping a Scoria status with what was asked.
    pub fn scoria(action: impl Into<String>) -> impl FnOnce(Status) -> Error {
        let action = action.into();
        move |status| Error::Scoria { action, status }
    }

    /// [`Error::scoria`] for a request that sets a size: Scoria's refusal of
    /// the size field (`size_gib`, `new_size_gib`: above its largest volume)
    /// is a capacity the plugin cannot provide, OUT_OF_RANGE.
    pub fn scoria_sized(action: impl Into<String>) -> impl FnOnce(Status) -> Error {
        let action = action.into();
        move |status| {
            let size = status.code() == Code::InvalidArgument
                && status.get_details_bad_request().is_some_and(|bad| {
                    bad.field_violations
                        .iter()
                        .any(|v| v.field == "size_gib" || v.field == "new_size_gib")
                });
            if size {
                Error::OutOfRange(format!("{action}: {}", status.message()))
            } else {
                Error::Scoria { action, status }
            }
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The gRPC code the spec wants for it.
    pub fn code(&self) -> Code {
        match self {
            Error::Missing(_) | Error::Invalid { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Exhausted(_) => Code::ResourceExhausted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::BadToken(_) => Code::Aborted,
            Error::Unsupported(_) => Code::InvalidArgument,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Scoria { status, .. } => scoria_code(status.code()),
            Error::Internal(_) => Code::Internal,
        }
    }
}

/// A Scoria API code as a CSI answer: the codes both mean alike pass through
/// (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED for
/// quotas, UNAVAILABLE, ...); anything unexpected is INTERNAL.
fn scoria_code(code: Code) -> Code {
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::Cancelled => code,
        Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
            Code::Internal
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        if code == Code::Internal {
            tracing::error!(error = %err, "CSI call failed");
        }
        Status::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_the_spec_code() {
        assert_eq!(
            Status::from(Error::Missing("volume_id")).code(),
            Code::InvalidArgument
        );
        assert!(
            Status::from(Error::Missing("volume_id"))
                .message()
                .contains("volume_id")
        );
        assert_eq!(
            Status::from(Error::BadToken("x".into())).code(),
            Code::Aborted
        );
        let quota = Error::scoria("CreateVolume pvc-1")(Status::resource_exhausted("quota"));
        assert_eq!(quota.code(), Code::ResourceExhausted);
        let odd = Error::scoria("GetVolume v")(Status::unimplemented("?"));
        assert_eq!(odd.code(), Code::Internal);
    }
}
