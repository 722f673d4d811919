//! Why the scheduler refuses or fails a request: one variant per cause, and one
//! exhaustive `match` ([`From<SchedulerError> for Status`]) that decides every
//! gRPC code and `ErrorInfo` reason, so a caller across the bus (the API) gets a
//! code and a reason, never a string to parse.

use scoria_common::{
    db::DbError,
    ops::OpsError,
    status::{self, Reason},
};
use tonic::{Code, Status};

/// A `Result` alias for the scheduler's handlers.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

/// Why the scheduler could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// No backend passed the filters, or none of those that did could be reached.
    /// `detail` is the elimination report (and what could not be reached).
    #[error("No valid backend was found: {detail}")]
    NoValidBackend {
        /// Why every backend was ruled out.
        detail: String,
    },
    /// The volume was scheduled as often as allowed already.
    #[error(
        "No valid backend was found: exceeded the maximum number of scheduling attempts \
         ({max_attempts}) for volume {volume_id}{last_error}"
    )]
    TooManyAttempts {
        /// The volume.
        volume_id: String,
        /// The configured maximum.
        max_attempts: u32,
        /// `; last error: ...` when the last attempt carried one, else empty.
        last_error: String,
    },
    /// A `get_pools` host filter that is neither empty nor `host@backend`.
    #[error(
        "invalid host filter {host:?}: must be empty or host@backend (no pool part, no spaces)"
    )]
    BadHostFilter {
        /// The filter as given.
        host: String,
    },
    /// The database did not answer while the scheduler changed `volume_id`.
    #[error("cannot {action} volume {volume_id}: database unavailable: {source}")]
    DatabaseUnavailable {
        /// What the scheduler was doing (`fail`, `read`).
        action: &'static str,
        /// The volume.
        volume_id: String,
        /// The database's error.
        source: DbError,
    },
    /// The database failed unexpectedly (a bug or a corrupt row).
    #[error("cannot {action} volume {volume_id}: {source}")]
    Database {
        /// What the scheduler was doing (`fail`, `read`).
        action: &'static str,
        /// The volume.
        volume_id: String,
        /// The database's error.
        source: DbError,
    },
}

impl SchedulerError {
    /// The error of a database failure while doing `action` to `volume_id`:
    /// [`SchedulerError::DatabaseUnavailable`] when the database is unreachable.
    pub fn db(action: &'static str, volume_id: &str) -> impl FnOnce(DbError) -> Self {
        let volume_id = volume_id.to_owned();
        move |source| match source {
            DbError::Unavailable(_) => SchedulerError::DatabaseUnavailable {
                action,
                volume_id,
                source,
            },
            source => SchedulerError::Database {
                action,
                volume_id,
                source,
            },
        }
    }
}

impl From<SchedulerError> for Status {
    fn from(err: SchedulerError) -> Self {
        let message = err.to_string();
        match err {
            SchedulerError::NoValidBackend { .. } | SchedulerError::TooManyAttempts { .. } => {
                status::error(Code::ResourceExhausted, Reason::NoValidBackend, message)
            }
            SchedulerError::BadHostFilter { .. } => status::invalid_field(
                "host",
                "must be empty or host@backend (no pool part, no spaces)",
            ),
            SchedulerError::DatabaseUnavailable { .. } => {
                status::error(Code::Unavailable, Reason::DatabaseUnavailable, message)
            }
            SchedulerError::Database {
                action, volume_id, ..
            } => {
                tracing::error!(error = %message, "unexpected database error");
                status::error(
                    Code::Internal,
                    Reason::Internal,
                    format!("cannot {action} volume {volume_id}"),
                )
            }
        }
    }
}

impl From<SchedulerError> for OpsError {
    fn from(err: SchedulerError) -> Self {
        OpsError::Failed(err.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_and_reason() {
        let cases = [
            (
                SchedulerError::NoValidBackend {
                    detail: "0 hosts known".into(),
                },
                Code::ResourceExhausted,
                Reason::NoValidBackend,
            ),
            (
                SchedulerError::TooManyAttempts {
                    volume_id: "v".into(),
                    max_attempts: 3,
                    last_error: String::new(),
                },
                Code::ResourceExhausted,
                Reason::NoValidBackend,
            ),
            (
                SchedulerError::BadHostFilter { host: "a#b".into() },
                Code::InvalidArgument,
                Reason::InvalidField,
            ),
            (
                SchedulerError::db("fail", "v")(DbError::Corrupt {
                    table: "volumes",
                    id: "v".into(),
                    reason: "test".into(),
                }),
                Code::Internal,
                Reason::Internal,
            ),
        ];
        for (err, code, reason) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{}", status.message());
            assert_eq!(status::reason_of(&status), Some(reason));
        }
    }

    #[tokio::test]
    async fn a_closed_database_is_unavailable() {
        let db = scoria_common::testing::TempDb::new().await;
        db.close().await;
        let err = db
            .get_volume("v")
            .await
            .map_err(SchedulerError::db("read", "v"))
            .expect_err("closed");
        assert!(
            matches!(err, SchedulerError::DatabaseUnavailable { .. }),
            "{err:?}"
        );
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status::reason_of(&status),
            Some(Reason::DatabaseUnavailable)
        );
    }

    #[test]
    fn the_no_valid_backend_message_is_the_volumes_error_message() {
        let err = SchedulerError::NoValidBackend {
            detail: "0 hosts known".into(),
        };
        assert_eq!(err.to_string(), "No valid backend was found: 0 hosts known");
        let status = Status::from(err);
        assert_eq!(
            status.message(),
            "No valid backend was found: 0 hosts known"
        );
    }
}
