//! The API's errors and the one place that decides their gRPC status.
//!
//! Handlers and the auth layer return [`ApiError`], one variant per cause;
//! [`ApiError::into_status`] is a single exhaustive `match` deciding the code and
//! the `google.rpc.ErrorInfo` reason ([`Reason`], domain `scoria.v1`) every error
//! carries. A bad field also carries a `google.rpc.BadRequest` `FieldViolation`
//! naming it; an unexpected error is logged in full and the client gets a bare
//! `INTERNAL`.

use std::{borrow::Cow, time::Duration};

use scoria_common::{
    db::{DbError, quota::OverQuota},
    model::{Volume, VolumeStatus},
    status::{self, Reason},
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, QuotaViolation};

/// A `Result` alias for API operations.
pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, as named in the proto (`size_gib`, `connector.host`, ...;
        /// a map entry as `metadata["key"]`).
        field: Cow<'static, str>,
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
    /// The resource's status does not allow the action.
    #[error("{kind} {id} is {status}{detail}")]
    WrongStatus {
        /// `volume`, `snapshot`, `attachment`.
        kind: &'static str,
        /// Its id.
        id: String,
        /// Its status now.
        status: String,
        /// What is allowed (`: only available volumes can be extended`).
        detail: String,
    },
    /// The volume is attached (or attaching, detaching), which the action does
    /// not allow.
    #[error("volume {id} is {status}{detail}")]
    VolumeInUse {
        /// The volume.
        id: String,
        /// Its status now.
        status: String,
        /// What to do (`: delete its attachments first`).
        detail: String,
    },
    /// The resource never reached a backend, which the action needs.
    #[error("{kind} {id} is on no backend")]
    NoBackend {
        /// `volume`, `snapshot`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The volume has snapshots.
    #[error("volume {id} has snapshots ({}): {then}", snapshots.join(", "))]
    HasSnapshots {
        /// The volume.
        id: String,
        /// Its snapshots.
        snapshots: Vec<String>,
        /// What to do first (`delete them first`).
        then: &'static str,
    },
    /// The volume has attachments.
    #[error(
        "volume {id} has attachments ({attachment_id} is {status}): delete its attachments first"
    )]
    HasAttachments {
        /// The volume.
        id: String,
        /// One of its attachments.
        attachment_id: String,
        /// That attachment's status.
        status: String,
    },
    /// The snapshot is the source of volumes being created.
    #[error("snapshot {id} is in use: volumes are being created from it ({})", volumes.join(", "))]
    SnapshotInUse {
        /// The snapshot.
        id: String,
        /// The volumes being made from it.
        volumes: Vec<String>,
    },
    /// The volume is attached and its type does not allow another attachment.
    #[error(
        "volume {id} is attached already ({}) and is not multiattach: \
         its volume type needs the extra spec {spec}=\"<is> True\"",
        attachments.join(", ")
    )]
    NotMultiattach {
        /// The volume.
        id: String,
        /// Its attachments.
        attachments: Vec<String>,
        /// The extra spec that allows more.
        spec: &'static str,
    },
    /// Incremental backups build on the backup.
    #[error("backup {id} has dependent incremental backups ({}): delete them first", children.join(", "))]
    BackupHasDependents {
        /// The backup.
        id: String,
        /// The incremental backups built on it.
        children: Vec<String>,
    },
    /// An incremental backup was asked of a volume without an available backup.
    #[error(
        "volume {volume_id} has no available backup for an incremental one to build on: \
         create a full backup first (incremental unset)"
    )]
    NoParentBackup {
        /// The volume.
        volume_id: String,
    },
    /// The volume type is used by volumes.
    #[error("volume type {name} is used by {volumes} volumes: it cannot be deleted")]
    TypeInUse {
        /// The type.
        name: String,
        /// How many volumes use it.
        volumes: i64,
    },
    /// The default volume type cannot be deleted.
    #[error("volume type {name} is the default type: it cannot be deleted")]
    DefaultType {
        /// The type.
        name: String,
    },
    /// The source a create names (snapshot, volume to clone) cannot be used.
    #[error("{kind} {id} {why}")]
    SourceUnusable {
        /// `snapshot`, `source volume`.
        kind: &'static str,
        /// Its id.
        id: String,
        /// Why (`is deleting: ...`, `is on no backend`).
        why: String,
    },
    /// The project sends requests faster than its rate allows.
    #[error(
        "project {project_id} is over its request rate ({rate}/s, burst {burst}): retry in {} ms",
        retry_after.as_millis().max(1)
    )]
    RateLimited {
        /// The project.
        project_id: String,
        /// Its rate, in requests per second.
        rate: u32,
        /// Its burst.
        burst: u32,
        /// When a request would pass again.
        retry_after: Duration,
    },
    /// The request message is larger than the server accepts.
    #[error("request too large: {bytes} bytes, the limit is {limit} bytes")]
    RequestTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The request's headers are larger than the server accepts.
    #[error("request metadata too large: {bytes} bytes of headers, the limit is {limit} bytes")]
    MetadataTooLarge {
        /// Their size (names and values).
        bytes: usize,
        /// The limit.
        limit: usize,
    },
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
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
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

    /// An action only an available volume allows (`done`: `migrated`,
    /// `retyped`, ...): [`ApiError::VolumeInUse`], with a hint to detach, when
    /// the volume is attached or being attached or detached, else
    /// [`ApiError::WrongStatus`].
    pub fn not_available(volume: &Volume, done: &str) -> Self {
        let in_use = matches!(
            volume.status,
            VolumeStatus::InUse
                | VolumeStatus::Attaching
                | VolumeStatus::Reserved
                | VolumeStatus::Detaching
        );
        let hint = if in_use {
            format!(
                ": detach it first (delete its attachments), only available volumes can be {done}"
            )
        } else {
            format!(": only available volumes can be {done}")
        };
        Self::volume_refused(volume, in_use, &hint)
    }

    /// A volume whose status refuses an action: [`ApiError::VolumeInUse`] when
    /// `in_use`, else [`ApiError::WrongStatus`]; `hint` ends the message.
    pub fn volume_refused(volume: &Volume, in_use: bool, hint: &str) -> Self {
        let (id, status, detail) = (
            volume.id.clone(),
            volume.status.to_string(),
            hint.to_owned(),
        );
        if in_use {
            ApiError::VolumeInUse { id, status, detail }
        } else {
            ApiError::WrongStatus {
                kind: "volume",
                id,
                status,
                detail,
            }
        }
    }

    /// A closure wrapping a [`DbError`] with what was being done.
    pub fn db(action: impl Into<String>) -> impl FnOnce(DbError) -> Self {
        let action = action.into();
        move |source| ApiError::Db { action, source }
    }

    /// The gRPC status of this error: the single place that decides its code and
    /// its `ErrorInfo` reason. A status passed through from another service keeps
    /// its reason (and its other details).
    pub fn into_status(self) -> Status {
        let message = capped(self.to_string());
        let (code, reason) = match self {
            ApiError::InvalidField { field, reason } => {
                // The proto field every List request names its cursor by.
                let why = if field == "page_token" {
                    Reason::InvalidPageToken
                } else {
                    Reason::InvalidField
                };
                return status::with_details(
                    Code::InvalidArgument,
                    why,
                    message,
                    ErrorDetails::with_bad_request_violation(field, capped(reason)),
                );
            }
            ApiError::RateLimited { retry_after, .. } => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(retry_after));
                return status::with_details(
                    Code::ResourceExhausted,
                    Reason::RateLimited,
                    message,
                    details,
                );
            }
            ApiError::RequestTooLarge { .. } => (Code::ResourceExhausted, Reason::RequestTooLarge),
            ApiError::MetadataTooLarge { .. } => {
                (Code::ResourceExhausted, Reason::MetadataTooLarge)
            }
            ApiError::NotFound { .. } => (Code::NotFound, Reason::NotFound),
            ApiError::RequestIdReused { .. } => (Code::AlreadyExists, Reason::RequestIdReused),
            ApiError::AlreadyExists { .. } => (Code::AlreadyExists, Reason::AlreadyExists),
            ApiError::WrongStatus { .. }
            | ApiError::NoBackend { .. }
            | ApiError::SnapshotInUse { .. }
            | ApiError::DefaultType { .. } => (Code::FailedPrecondition, Reason::WrongStatus),
            ApiError::VolumeInUse { .. } => (Code::FailedPrecondition, Reason::VolumeInUse),
            ApiError::HasSnapshots { .. } => (Code::FailedPrecondition, Reason::HasSnapshots),
            ApiError::HasAttachments { .. } => (Code::FailedPrecondition, Reason::HasAttachments),
            ApiError::NotMultiattach { .. } => (Code::FailedPrecondition, Reason::NotMultiattach),
            ApiError::TypeInUse { .. } => (Code::FailedPrecondition, Reason::TypeInUse),
            ApiError::BackupHasDependents { .. } => {
                (Code::FailedPrecondition, Reason::BackupHasDependents)
            }
            ApiError::NoParentBackup { .. } => (Code::FailedPrecondition, Reason::NoParentBackup),
            ApiError::SourceUnusable { .. } => (Code::FailedPrecondition, Reason::SourceUnusable),
            ApiError::Unimplemented(_) => (Code::Unimplemented, Reason::Unimplemented),
            ApiError::Unauthenticated(_) => (Code::Unauthenticated, Reason::Unauthenticated),
            ApiError::PermissionDenied(_) => (Code::PermissionDenied, Reason::PermissionDenied),
            ApiError::BrokerDown(_) => (Code::Unavailable, Reason::BrokerUnavailable),
            ApiError::Bus { status, .. } => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded => {
                    return passed_through(Code::Unavailable, &status, message);
                }
                _ => return internal(&message),
            },
            ApiError::Call { status, .. } => match status.code() {
                Code::Internal | Code::Unknown | Code::DataLoss => return internal(&message),
                code => return passed_through(code, &status, message),
            },
            ApiError::Db {
                source: DbError::Unavailable(_),
                ..
            } => (Code::Unavailable, Reason::DatabaseUnavailable),
            ApiError::Db {
                source: DbError::OverQuota(over),
                ..
            } => return over_quota(&over),
            ApiError::Db {
                source: DbError::Query(_) | DbError::Corrupt { .. } | DbError::UnsupportedUrl(_),
                ..
            }
            | ApiError::Internal(_) => return internal(&message),
        };
        status::error(code, reason, message)
    }
}

/// The most characters of a message sent to the client: the message and the
/// details travel in response headers, which clients bound (16 KiB by default),
/// and a refusal that echoes a huge value must still reach the client.
const MAX_MESSAGE_CHARS: usize = 1024;

/// `text` cut to [`MAX_MESSAGE_CHARS`] (an ellipsis says so).
fn capped(text: String) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// RESOURCE_EXHAUSTED with a `google.rpc.QuotaFailure` violation per exceeded
/// resource: `subject` the project, `quota_id` / `quota_metric` the resource,
/// `quota_value` the limit, and `in_use`, `reserved`, `requested` as dimensions
/// (besides `project_id`), for clients that act on numbers.
fn over_quota(over: &OverQuota) -> Status {
    let violations: Vec<QuotaViolation> = over
        .excesses
        .iter()
        .map(|e| {
            let resource = e.resource.name();
            QuotaViolation {
                subject: over.project_id.clone(),
                description: format!(
                    "{resource}: limit {}, in use {}, reserved {}, requested {}",
                    e.limit, e.in_use, e.reserved, e.requested
                ),
                api_service: "scoria.v1".to_owned(),
                quota_metric: resource.clone(),
                quota_id: resource,
                quota_dimensions: [
                    ("project_id".to_owned(), over.project_id.clone()),
                    ("in_use".to_owned(), e.in_use.to_string()),
                    ("reserved".to_owned(), e.reserved.to_string()),
                    ("requested".to_owned(), e.requested.to_string()),
                ]
                .into(),
                quota_value: e.limit,
                futura_quota_value: None,
            }
        })
        .collect();
    let mut details = ErrorDetails::new();
    details.set_quota_failure(violations);
    status::with_details(
        Code::ResourceExhausted,
        Reason::QuotaExceeded,
        over.to_string(),
        details,
    )
}

/// A status from another service (or the bus client) as `code` with `message`:
/// its details (`ErrorInfo` and all) kept, a reason added if it had none.
fn passed_through(code: Code, from: &Status, message: String) -> Status {
    status::ensure_reason(Status::with_details(
        code,
        message,
        from.details().to_vec().into(),
    ))
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        err.into_status()
    }
}

/// Logs `message` in full; the client learns only that something broke.
fn internal(message: &str) -> Status {
    tracing::error!(error = %message, "internal error");
    status::error(Code::Internal, Reason::Internal, "internal error")
}

#[cfg(test)]
mod tests;
