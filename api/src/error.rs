//! The API's errors and the one place that decides their gRPC status.
//!
//! Handlers and the auth layer return [`ApiError`]; [`ApiError::into_status`] is a
//! single exhaustive `match`. A bad field carries a `google.rpc.BadRequest`
//! `FieldViolation` naming it; an unexpected error is logged in full and the client
//! gets a bare `INTERNAL`.

use scoria_common::db::DbError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A `Result` alias for API operations.
pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, as named in the proto (`size_gib`, `metadata`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The resource does not exist, or belongs to another project.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `volume`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// An idempotency key was used before for a different request.
    #[error(
        "request_id {request_id:?} was already used for a different request (volume {volume_id})"
    )]
    RequestIdReused {
        /// The key.
        request_id: String,
        /// The volume the key created.
        volume_id: String,
    },
    /// A resource of that name exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// `volume_type`.
        kind: &'static str,
        /// The name taken.
        name: String,
    },
    /// The resource is in the wrong status for the action.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The feature is not there yet.
    #[error("{0}")]
    Unimplemented(&'static str),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's roles do not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
    /// The message broker is not connected, so nothing can be started.
    #[error("message broker unavailable: {0}")]
    BrokerDown(String),
    /// A cast on the bus failed.
    #[error("{action}: {}", status.message())]
    Bus {
        /// What was being sent.
        action: String,
        /// The bus client's status.
        status: Status,
    },
    /// A call on the bus failed: its status's code is kept (UNAVAILABLE when
    /// no server took it, DEADLINE_EXCEEDED on a timeout, a remote handler's own
    /// code otherwise).
    #[error("{action}: {}", status.message())]
    Call {
        /// What was being asked.
        action: String,
        /// The bus client's (or the remote handler's) status.
        status: Status,
    },
    /// A database operation failed.
    #[error("{action}: {source}")]
    Db {
        /// What was being done.
        action: String,
        /// Why it failed.
        source: DbError,
    },
    /// A bug: something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An [`ApiError::InvalidField`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// A volume that is not there (or not the caller's).
    pub fn volume_not_found(id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind: "volume",
            id: id.into(),
        }
    }

    /// A snapshot that is not there (or not the caller's).
    pub fn snapshot_not_found(id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind: "snapshot",
            id: id.into(),
        }
    }

    /// An attachment that is not there (or not the caller's).
    pub fn attachment_not_found(id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind: "attachment",
            id: id.into(),
        }
    }

    /// A closure wrapping a [`DbError`] with what was being done.
    pub fn db(action: impl Into<String>) -> impl FnOnce(DbError) -> Self {
        let action = action.into();
        move |source| ApiError::Db { action, source }
    }

    /// The gRPC status of this error: the single place that decides it.
    pub fn into_status(self) -> Status {
        let message = self.to_string();
        match self {
            ApiError::InvalidField { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            ApiError::NotFound { .. } => Status::not_found(message),
            ApiError::RequestIdReused { .. } | ApiError::AlreadyExists { .. } => {
                Status::already_exists(message)
            }
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::Unimplemented(_) => Status::unimplemented(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::BrokerDown(_) => Status::unavailable(message),
            ApiError::Bus { status, .. } => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded => Status::unavailable(message),
                _ => internal(&message),
            },
            ApiError::Call { status, .. } => match status.code() {
                Code::Internal | Code::Unknown | Code::DataLoss => internal(&message),
                code => Status::new(code, message),
            },
            ApiError::Db {
                source: DbError::Unavailable(_),
                ..
            } => Status::unavailable(message),
            ApiError::Db {
                source: DbError::Query(_) | DbError::Corrupt { .. } | DbError::UnsupportedUrl(_),
                ..
            }
            | ApiError::Internal(_) => internal(&message),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        err.into_status()
    }
}

/// Logs `message` in full; the client learns only that something broke.
fn internal(message: &str) -> Status {
    tracing::error!(error = %message, "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_the_field_in_details() {
        let status = ApiError::invalid("size_gib", "must be at least 1").into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("size_gib"),
            "{}",
            status.message()
        );
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "size_gib");
        assert_eq!(bad.field_violations[0].description, "must be at least 1");
    }

    #[test]
    fn codes() {
        let cases = [
            (ApiError::volume_not_found("v1"), Code::NotFound),
            (
                ApiError::RequestIdReused {
                    request_id: "r".into(),
                    volume_id: "v".into(),
                },
                Code::AlreadyExists,
            ),
            (
                ApiError::AlreadyExists {
                    kind: "volume_type",
                    name: "gold".into(),
                },
                Code::AlreadyExists,
            ),
            (
                ApiError::FailedPrecondition("busy".into()),
                Code::FailedPrecondition,
            ),
            (ApiError::Unimplemented("later"), Code::Unimplemented),
            (
                ApiError::Unauthenticated("who".into()),
                Code::Unauthenticated,
            ),
            (
                ApiError::PermissionDenied("no".into()),
                Code::PermissionDenied,
            ),
            (ApiError::BrokerDown("down".into()), Code::Unavailable),
            (
                ApiError::Bus {
                    action: "cast".into(),
                    status: Status::unavailable("no route"),
                },
                Code::Unavailable,
            ),
            (
                ApiError::Bus {
                    action: "cast".into(),
                    status: Status::invalid_argument("bad target"),
                },
                Code::Internal,
            ),
            (
                ApiError::Call {
                    action: "attach".into(),
                    status: Status::deadline_exceeded("no reply"),
                },
                Code::DeadlineExceeded,
            ),
            (
                ApiError::Call {
                    action: "attach".into(),
                    status: Status::unavailable("no server is consuming"),
                },
                Code::Unavailable,
            ),
            (
                ApiError::Call {
                    action: "attach".into(),
                    status: Status::resource_exhausted("no free export port"),
                },
                Code::ResourceExhausted,
            ),
            (
                ApiError::Call {
                    action: "attach".into(),
                    status: Status::internal("qemu-nbd crashed"),
                },
                Code::Internal,
            ),
            (
                ApiError::db("get")(DbError::Unavailable(sqlx_pool_timeout())),
                Code::Unavailable,
            ),
            (
                ApiError::db("get")(DbError::Corrupt {
                    table: "volumes",
                    id: "v".into(),
                    reason: "x".into(),
                }),
                Code::Internal,
            ),
            (ApiError::Internal("oops".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            assert_eq!(err.into_status().code(), code, "{text}");
        }
    }

    #[test]
    fn not_found_names_the_id() {
        let status = ApiError::volume_not_found("0b5c").into_status();
        assert_eq!(status.message(), "volume 0b5c not found");
    }

    #[test]
    fn internal_errors_hide_details() {
        let err = ApiError::db("get volume")(DbError::UnsupportedUrl("mysql://secret".into()));
        let status = err.into_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    fn sqlx_pool_timeout() -> sqlx::Error {
        sqlx::Error::PoolTimedOut
    }
}
