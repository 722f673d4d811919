//! Error statuses as clients branch on them: every status Scoria returns carries a
//! `google.rpc.ErrorInfo` with a stable UPPER_SNAKE_CASE [`Reason`] and the domain
//! [`DOMAIN`] (AIP-193), beside `BadRequest` field violations where a field is
//! wrong. Clients match on the reason, never on the message text.
//!
//! The reasons are one enum in this one file; a status built on the volume
//! service or the scheduler keeps its reason across the bus (the reply carries
//! the status details unchanged).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Scoria error.
pub const DOMAIN: &str = "scoria.v1";

macro_rules! reasons {
    ($($(#[doc = $doc:expr])* $variant:ident => $text:literal,)*) => {
        /// Why a request failed, as `ErrorInfo.reason`: stable, UPPER_SNAKE_CASE.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The reason as sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $text,)*
                }
            }

            /// The reason `text` names.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// A request field is invalid (see the `BadRequest` field violations).
    InvalidField => "INVALID_FIELD",
    /// A `page_token` is not one this server issued for this query.
    InvalidPageToken => "INVALID_PAGE_TOKEN",
    /// The resource does not exist, or the caller may not see it.
    NotFound => "RESOURCE_NOT_FOUND",
    /// A resource of that name exists already.
    AlreadyExists => "RESOURCE_ALREADY_EXISTS",
    /// The `request_id` was used before for a different request.
    RequestIdReused => "REQUEST_ID_REUSED",
    /// The resource's status does not allow the action.
    WrongStatus => "WRONG_STATUS",
    /// The volume has snapshots (delete them first).
    HasSnapshots => "VOLUME_HAS_SNAPSHOTS",
    /// The volume has attachments (delete them first).
    HasAttachments => "VOLUME_HAS_ATTACHMENTS",
    /// The volume is attached, which the action does not allow (detach it first).
    VolumeInUse => "VOLUME_IN_USE",
    /// The volume is attached already and its type does not allow multiattach.
    NotMultiattach => "VOLUME_NOT_MULTIATTACH",
    /// The volume type is used by volumes.
    TypeInUse => "VOLUME_TYPE_IN_USE",
    /// Incremental backups build on the backup (delete them first).
    BackupHasDependents => "BACKUP_HAS_DEPENDENTS",
    /// An incremental backup needs an available backup of the volume first.
    NoParentBackup => "NO_PARENT_BACKUP",
    /// The source (snapshot or volume) cannot be used for the request.
    SourceUnusable => "SOURCE_UNUSABLE",
    /// No backend can take the volume.
    NoValidBackend => "NO_VALID_BACKEND",
    /// A quota would be exceeded.
    QuotaExceeded => "QUOTA_EXCEEDED",
    /// No usable credentials.
    Unauthenticated => "UNAUTHENTICATED",
    /// The caller's roles or project do not allow the action.
    PermissionDenied => "PERMISSION_DENIED",
    /// The message broker is not reachable (or blocks publishers).
    BrokerUnavailable => "BROKER_UNAVAILABLE",
    /// The database is not reachable.
    DatabaseUnavailable => "DATABASE_UNAVAILABLE",
    /// No service consumes the work (none of the kind runs, or the one that owns
    /// the resource is down).
    ServiceUnavailable => "SERVICE_UNAVAILABLE",
    /// The service that does the work did not answer in time.
    Timeout => "TIMEOUT",
    /// The storage backend failed the operation.
    BackendFailed => "BACKEND_FAILED",
    /// An export (NBD server) could not be started or checked.
    ExportFailed => "EXPORT_FAILED",
    /// No free resource of a bounded kind (an export port, say).
    Exhausted => "RESOURCE_EXHAUSTED",
    /// The project sends requests faster than its rate (see the `RetryInfo`).
    RateLimited => "RATE_LIMITED",
    /// The request message is larger than the server accepts.
    RequestTooLarge => "REQUEST_TOO_LARGE",
    /// The request's headers (metadata) are larger than the server accepts.
    MetadataTooLarge => "METADATA_TOO_LARGE",
    /// The service is shutting down.
    ShuttingDown => "SHUTTING_DOWN",
    /// The feature is not there.
    Unimplemented => "UNIMPLEMENTED",
    /// A bug; the details are in the server's log.
    Internal => "INTERNAL",
}

impl Reason {
    /// The reason a bare status of `code` gets when nothing more is known.
    pub fn for_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Reason::InvalidField,
            Code::NotFound => Reason::NotFound,
            Code::AlreadyExists => Reason::AlreadyExists,
            Code::FailedPrecondition | Code::Aborted => Reason::WrongStatus,
            Code::ResourceExhausted => Reason::Exhausted,
            Code::Unauthenticated => Reason::Unauthenticated,
            Code::PermissionDenied => Reason::PermissionDenied,
            Code::Unavailable => Reason::ServiceUnavailable,
            Code::DeadlineExceeded => Reason::Timeout,
            Code::Unimplemented => Reason::Unimplemented,
            Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
                Reason::Internal
            }
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status of `code` with `message` and an `ErrorInfo` of `reason`.
pub fn error(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    with_details(code, reason, message, ErrorDetails::new())
}

/// A status of `code` with `message`, the `details` given, and an `ErrorInfo` of
/// `reason` added to them.
pub fn with_details(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    mut details: ErrorDetails,
) -> Status {
    details.set_error_info(
        reason.as_str(),
        DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    Status::with_error_details(code, message, details)
}

/// An INVALID_ARGUMENT naming `field` in the message and in a `BadRequest`
/// field violation.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    with_details(
        Code::InvalidArgument,
        Reason::InvalidField,
        format!("invalid {field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// The `ErrorInfo` reason `status` carries, if it carries one of ours.
pub fn reason_of(status: &Status) -> Option<Reason> {
    let info = status.get_details_error_info()?;
    (info.domain == DOMAIN)
        .then(|| Reason::parse(&info.reason))
        .flatten()
}

/// `status` with an `ErrorInfo` added when it has none: the reason its code
/// implies. Its code, message and other details stay.
pub fn ensure_reason(status: Status) -> Status {
    if status.code() == Code::Ok || status.get_details_error_info().is_some() {
        return status;
    }
    let mut details = status.get_error_details();
    details.set_error_info(
        Reason::for_code(status.code()).as_str(),
        DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    let mut with = Status::with_error_details(status.code(), status.message(), details);
    *with.metadata_mut() = status.metadata().clone();
    with
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_upper_snake_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{text}"
            );
            assert_eq!(Reason::parse(text), Some(*reason));
        }
    }

    #[test]
    fn an_invalid_field_has_both_details() {
        let status = invalid_field("size_gib", "must be at least 1");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid size_gib: must be at least 1");
        let bad = status.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "size_gib");
        assert_eq!(reason_of(&status), Some(Reason::InvalidField));
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.domain, DOMAIN);
    }

    #[test]
    fn ensure_reason_adds_one_and_keeps_an_existing_one() {
        let bare = ensure_reason(Status::unavailable("broker down"));
        assert_eq!(bare.code(), Code::Unavailable);
        assert_eq!(bare.message(), "broker down");
        assert_eq!(reason_of(&bare), Some(Reason::ServiceUnavailable));
        let kept = ensure_reason(error(Code::Unavailable, Reason::BrokerUnavailable, "x"));
        assert_eq!(reason_of(&kept), Some(Reason::BrokerUnavailable));
        let with_field = ensure_reason(Status::with_error_details(
            Code::InvalidArgument,
            "bad",
            ErrorDetails::with_bad_request_violation("name", "too long"),
        ));
        assert!(with_field.get_details_bad_request().is_some());
        assert_eq!(reason_of(&with_field), Some(Reason::InvalidField));
    }
}
