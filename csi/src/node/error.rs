//! The Node service's errors: one variant per cause, and the one `match` that
//! decides each one's gRPC code (the CSI spec's codes for the node RPCs).

use tonic::{Code, Status};

/// The Node service's result.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A required request field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A request field has a value the node cannot take.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the spec names it (`volume_capability.mount.fs_type`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The volume is unknown to this node (not staged, not at that path), or its
    /// export is unknown to its server.
    #[error("{0}")]
    NotFound(String),
    /// The volume is staged or published there already, differently.
    #[error("{0}")]
    AlreadyExists(String),
    /// The call cannot be done in the volume's current state on this node.
    #[error("{0}")]
    Precondition(String),
    /// Another call on the same volume is running.
    #[error("an operation on volume {0} is already in progress")]
    Busy(String),
    /// A capacity the node cannot provide.
    #[error("{0}")]
    OutOfRange(String),
    /// The export's server does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A tool the node needs is not installed.
    #[error("{program} is not installed on this node (install {package})")]
    NotInstalled {
        /// The missing program.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A tool exited with an error.
    #[error("`{command}` failed (exit {code:?}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Something that should not happen (a corrupt state file, a timeout of a tool).
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// [`NodeError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`NodeError::Io`] error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::Missing(_) | Self::Invalid { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Precondition(_) | Self::NotInstalled { .. } => Code::FailedPrecondition,
            Self::Busy(_) => Code::Aborted,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Command { .. } | Self::Io { .. } | Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Self {
        let code = err.code();
        match code {
            // Unexpected: logged in full, answered with what failed but not its
            // details (the plugin's log has them).
            Code::Internal => {
                tracing::error!(error = %err, "node call failed");
                let what = match &err {
                    NodeError::Command { command, .. } => {
                        let program = command.split(' ').next().unwrap_or("a tool");
                        format!("{program} failed on the node; see the plugin's log")
                    }
                    _ => "internal error on the node; see the plugin's log".to_owned(),
                };
                Status::internal(what)
            }
            _ => {
                tracing::info!(error = %err, ?code, "node call refused");
                Status::new(code, err.to_string())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let s = Status::from(NodeError::Missing("volume_id"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "volume_id is required");
        let s = Status::from(NodeError::Command {
            command: "mkfs.ext4 -F /dev/loop0".into(),
            code: Some(1),
            stderr: "secret detail".into(),
        });
        assert_eq!(s.code(), Code::Internal);
        assert!(
            s.message().starts_with("mkfs.ext4 failed"),
            "{}",
            s.message()
        );
        assert!(!s.message().contains("secret"));
        assert_eq!(
            Status::from(NodeError::Busy("v".into())).code(),
            Code::Aborted
        );
    }
}
