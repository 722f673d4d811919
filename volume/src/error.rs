//! The volume service's errors: one variant per cause, and the one exhaustive
//! `match` ([`From<VolumeError> for Status`](#impl-From<VolumeError>-for-Status))
//! that decides each cause's gRPC code and `ErrorInfo` reason. Handlers return
//! [`Result`]; the `VolumeOps` impl of the manager converts at that edge.
//!
//! ```text
//!  cause                                    code                 reason
//!  missing field, object not adoptable      INVALID_ARGUMENT     INVALID_FIELD
//!  attachment / volume not found, removed   NOT_FOUND            RESOURCE_NOT_FOUND
//!  wrong status, changed meanwhile          FAILED_PRECONDITION  WRONG_STATUS
//!  volume on another host (not mine)        FAILED_PRECONDITION  WRONG_STATUS
//!  no export manager here                   UNAVAILABLE          SERVICE_UNAVAILABLE
//!  backend failed, object missing           INTERNAL             BACKEND_FAILED
//!  export / unexport / restore failed       INTERNAL             EXPORT_FAILED
//!    (an export of an id that is no UUID)   INVALID_ARGUMENT     INVALID_FIELD
//!  no free export port                      RESOURCE_EXHAUSTED   RESOURCE_EXHAUSTED
//!  database down or busy                    UNAVAILABLE          DATABASE_UNAVAILABLE
//!                                           (the bus requeues the cast)
//!  database error, corrupt row (bugs)       INTERNAL             INTERNAL (logged, bare)
//!  the scheduler's answer                   its own status, unchanged
//! ```

use scoria_common::{
    db::DbError,
    ops::OpsError,
    status::{self, Reason},
};
use tonic::{Code, Status};

use crate::{driver::DriverError, export::ExportError};

/// Why a volume service handler failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A required request field is empty.
    #[error("{field} is required")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// The resource does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `attachment`, `volume`, ...
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The resource went while the handler worked on it.
    #[error("{kind} {id} was removed while it was being {doing}")]
    Removed {
        /// `attachment`, `volume`, ...
        kind: &'static str,
        /// Its id.
        id: String,
        /// What the handler did (`attached`, ...).
        doing: &'static str,
    },
    /// The resource's status does not allow the request.
    #[error("{kind} {id} is {status}, not {expected}")]
    WrongStatus {
        /// `attachment`, `volume`, ...
        kind: &'static str,
        /// Its id.
        id: String,
        /// Its status.
        status: String,
        /// The status the request needs.
        expected: &'static str,
    },
    /// The resource's status changed while the handler worked on it.
    #[error("{kind} {id} became {status} while it was being {doing}")]
    Changed {
        /// `attachment`, `volume`, ...
        kind: &'static str,
        /// Its id.
        id: String,
        /// Its status now.
        status: String,
        /// What the handler did (`attached`, ...).
        doing: &'static str,
    },
    /// The volume is not this service's (another host, or none).
    #[error("volume {volume_id} is on {}, not on {host}", on.as_deref().unwrap_or("no host"))]
    NotMine {
        /// The volume.
        volume_id: String,
        /// The host its row names.
        on: Option<String>,
        /// This service's `host@backend`.
        host: String,
    },
    /// This service exports nothing (it has no export manager).
    #[error("volume service {host} has no export manager")]
    NoExports {
        /// This service's `host@backend`.
        host: String,
    },
    /// An object offered for adoption cannot be one (ManageVolume).
    #[error("object {reference:?} cannot be managed: {reason}")]
    Unadoptable {
        /// The name given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The volume's row is here, its backend object is not.
    #[error("volume {volume_id} has no backend object on {host}")]
    NoObject {
        /// The volume.
        volume_id: String,
        /// This service's `host@backend`.
        host: String,
    },
    /// The backend failed an operation.
    #[error("the backend failed to {op} {id}: {source}")]
    Backend {
        /// What was asked (`read the capacity of backend`, `find volume`, ...).
        op: &'static str,
        /// Of what.
        id: String,
        /// Why.
        #[source]
        source: DriverError,
    },
    /// A volume could not be exported.
    #[error("exporting volume {volume_id} failed: {source}")]
    Export {
        /// The volume.
        volume_id: String,
        /// Why.
        #[source]
        source: ExportError,
    },
    /// Every port of the export range is taken.
    #[error("no free port in {first}-{last} to export volume {volume_id}")]
    NoFreePort {
        /// The volume.
        volume_id: String,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },
    /// A volume's export could not be stopped.
    #[error("stopping the export of volume {volume_id} failed: {source}")]
    Unexport {
        /// The volume.
        volume_id: String,
        /// Why.
        #[source]
        source: ExportError,
    },
    /// The exports of the last run could not be settled at start-up.
    #[error("settling the exports of the last run failed: {0}")]
    Restore(#[source] ExportError),
    /// The database cannot be reached or is too busy now (try again).
    #[error("{0}")]
    DatabaseUnavailable(#[source] DbError),
    /// A query failed (a bug, or a schema that does not match).
    #[error("{0}")]
    Database(#[source] DbError),
    /// A row holds what the code cannot read, or a combination it never writes.
    #[error("corrupt {table} row {id}: {reason}")]
    RowCorrupt {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The scheduler refused or failed a request of this service, or the bus did
    /// not carry it.
    #[error("scheduler: {0}")]
    Scheduler(#[source] OpsError),
}

/// A `Result` alias for the volume service's handlers.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

// === impl VolumeError ===

impl VolumeError {
    /// The error of exporting volume `volume_id` failing with `err` (a full port
    /// range is [`VolumeError::NoFreePort`]).
    pub fn export(volume_id: &str, err: ExportError) -> Self {
        match err {
            ExportError::PortsExhausted {
                volume_id,
                first,
                last,
            } => VolumeError::NoFreePort {
                volume_id,
                first,
                last,
            },
            source => VolumeError::Export {
                volume_id: volume_id.to_owned(),
                source,
            },
        }
    }

    /// The gRPC code and the `ErrorInfo` reason of this error: the one table.
    pub fn code_and_reason(&self) -> (Code, Reason) {
        use VolumeError as E;
        match self {
            E::MissingField { .. } | E::Unadoptable { .. } => {
                (Code::InvalidArgument, Reason::InvalidField)
            }
            E::NotFound { .. } | E::Removed { .. } => (Code::NotFound, Reason::NotFound),
            E::WrongStatus { .. } | E::Changed { .. } | E::NotMine { .. } => {
                (Code::FailedPrecondition, Reason::WrongStatus)
            }
            E::NoExports { .. } => (Code::Unavailable, Reason::ServiceUnavailable),
            E::NoObject { .. } | E::Backend { .. } => (Code::Internal, Reason::BackendFailed),
            E::Export {
                source: ExportError::InvalidId { .. },
                ..
            } => (Code::InvalidArgument, Reason::InvalidField),
            E::Export { .. } | E::Unexport { .. } | E::Restore(_) => {
                (Code::Internal, Reason::ExportFailed)
            }
            E::NoFreePort { .. } => (Code::ResourceExhausted, Reason::Exhausted),
            E::DatabaseUnavailable(_) => (Code::Unavailable, Reason::DatabaseUnavailable),
            E::Database(_) | E::RowCorrupt { .. } => (Code::Internal, Reason::Internal),
            E::Scheduler(err) => (
                err.code(),
                err.reason().unwrap_or_else(|| Reason::for_code(err.code())),
            ),
        }
    }
}

impl From<DbError> for VolumeError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) => VolumeError::DatabaseUnavailable(err),
            DbError::Corrupt { table, id, reason } => VolumeError::RowCorrupt { table, id, reason },
            // The volume service writes nothing a quota limits (the API does).
            DbError::Query(_) | DbError::UnsupportedUrl(_) | DbError::OverQuota(_) => {
                VolumeError::Database(err)
            }
        }
    }
}

impl From<OpsError> for VolumeError {
    fn from(err: OpsError) -> Self {
        VolumeError::Scheduler(err)
    }
}

impl From<VolumeError> for Status {
    fn from(err: VolumeError) -> Self {
        let (code, reason) = err.code_and_reason();
        match err {
            // The scheduler's own status (or the bus's), details and all.
            VolumeError::Scheduler(err) => status::ensure_reason(err.into()),
            VolumeError::Database(_) | VolumeError::RowCorrupt { .. } => {
                tracing::error!(%err, "internal error");
                status::error(code, reason, "internal error")
            }
            VolumeError::DatabaseUnavailable(_) => {
                tracing::warn!(%err, "database unavailable");
                status::error(code, reason, err.to_string())
            }
            VolumeError::MissingField { .. }
            | VolumeError::Unadoptable { .. }
            | VolumeError::NotFound { .. }
            | VolumeError::Removed { .. }
            | VolumeError::WrongStatus { .. }
            | VolumeError::Changed { .. }
            | VolumeError::NotMine { .. }
            | VolumeError::NoExports { .. }
            | VolumeError::NoObject { .. }
            | VolumeError::Backend { .. }
            | VolumeError::Export { .. }
            | VolumeError::NoFreePort { .. }
            | VolumeError::Unexport { .. }
            | VolumeError::Restore(_) => status::error(code, reason, err.to_string()),
        }
    }
}

impl From<VolumeError> for OpsError {
    fn from(err: VolumeError) -> Self {
        match err {
            // What the bus or the scheduler said stays what it was.
            VolumeError::Scheduler(err) => err,
            other => OpsError::Failed(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use scoria_common::rpc::RpcError;

    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::other("disk on fire")
    }

    #[test]
    fn every_cause_gets_its_code_and_reason() {
        let export = || ExportError::Io {
            op: "create",
            path: "/run".into(),
            source: io(),
        };
        let cases: Vec<(VolumeError, Code, Reason)> = vec![
            (
                VolumeError::MissingField {
                    field: "attachment_id",
                },
                Code::InvalidArgument,
                Reason::InvalidField,
            ),
            (
                VolumeError::NotFound {
                    kind: "attachment",
                    id: "a1".into(),
                },
                Code::NotFound,
                Reason::NotFound,
            ),
            (
                VolumeError::Removed {
                    kind: "attachment",
                    id: "a1".into(),
                    doing: "attached",
                },
                Code::NotFound,
                Reason::NotFound,
            ),
            (
                VolumeError::WrongStatus {
                    kind: "attachment",
                    id: "a1".into(),
                    status: "attached".into(),
                    expected: "detaching",
                },
                Code::FailedPrecondition,
                Reason::WrongStatus,
            ),
            (
                VolumeError::Changed {
                    kind: "attachment",
                    id: "a1".into(),
                    status: "error_attaching".into(),
                    doing: "attached",
                },
                Code::FailedPrecondition,
                Reason::WrongStatus,
            ),
            (
                VolumeError::NotMine {
                    volume_id: "v1".into(),
                    on: Some("node2@file".into()),
                    host: "node1@file".into(),
                },
                Code::FailedPrecondition,
                Reason::WrongStatus,
            ),
            (
                VolumeError::NoExports {
                    host: "node1@file".into(),
                },
                Code::Unavailable,
                Reason::ServiceUnavailable,
            ),
            (
                VolumeError::NoObject {
                    volume_id: "v1".into(),
                    host: "node1@file".into(),
                },
                Code::Internal,
                Reason::BackendFailed,
            ),
            (
                VolumeError::Backend {
                    op: "find volume",
                    id: "v1".into(),
                    source: DriverError::InvalidId { id: "v1".into() },
                },
                Code::Internal,
                Reason::BackendFailed,
            ),
            (
                VolumeError::export("v1", export()),
                Code::Internal,
                Reason::ExportFailed,
            ),
            (
                VolumeError::export("v1", ExportError::InvalidId { id: "v1".into() }),
                Code::InvalidArgument,
                Reason::InvalidField,
            ),
            (
                VolumeError::export(
                    "v1",
                    ExportError::PortsExhausted {
                        volume_id: "v1".into(),
                        first: 1,
                        last: 2,
                    },
                ),
                Code::ResourceExhausted,
                Reason::Exhausted,
            ),
            (
                VolumeError::Unexport {
                    volume_id: "v1".into(),
                    source: export(),
                },
                Code::Internal,
                Reason::ExportFailed,
            ),
            (
                VolumeError::Restore(export()),
                Code::Internal,
                Reason::ExportFailed,
            ),
            (
                VolumeError::from(DbError::Unavailable(sqlx_io())),
                Code::Unavailable,
                Reason::DatabaseUnavailable,
            ),
            (
                VolumeError::from(DbError::Query(sqlx::Error::RowNotFound)),
                Code::Internal,
                Reason::Internal,
            ),
            (
                VolumeError::from(DbError::Corrupt {
                    table: "volumes",
                    id: "v1".into(),
                    reason: "bad status".into(),
                }),
                Code::Internal,
                Reason::Internal,
            ),
            (
                VolumeError::from(OpsError::from(status::error(
                    Code::ResourceExhausted,
                    Reason::NoValidBackend,
                    "no valid backend",
                ))),
                Code::ResourceExhausted,
                Reason::NoValidBackend,
            ),
        ];
        for (err, code, reason) in cases {
            let text = format!("{err:?}");
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status::reason_of(&status), Some(reason), "{text}");
        }
    }

    #[test]
    fn bugs_are_bare_and_the_rest_name_the_resource() {
        let bug = Status::from(VolumeError::from(DbError::Corrupt {
            table: "volumes",
            id: "v1".into(),
            reason: "secret detail".into(),
        }));
        assert_eq!(bug.message(), "internal error");
        let named = Status::from(VolumeError::NotMine {
            volume_id: "v1".into(),
            on: None,
            host: "node1@file".into(),
        });
        assert_eq!(
            named.message(),
            "volume v1 is on no host, not on node1@file"
        );
    }

    #[test]
    fn a_bus_error_of_the_scheduler_stays_one_on_the_port() {
        let bus = VolumeError::from(OpsError::from(RpcError::Unavailable("down".into())));
        let ops = OpsError::from(bus);
        assert!(matches!(ops, OpsError::Bus(_)), "{ops:?}");
        assert!(ops.is_undelivered());
        let failed = OpsError::from(VolumeError::DatabaseUnavailable(DbError::Unavailable(
            sqlx_io(),
        )));
        assert_eq!(failed.code(), Code::Unavailable);
        assert_eq!(failed.reason(), Some(Reason::DatabaseUnavailable));
    }

    fn sqlx_io() -> sqlx::Error {
        sqlx::Error::Io(io())
    }
}
