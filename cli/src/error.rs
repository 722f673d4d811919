//! Why a command failed, as a person reads it, and its exit code: 1 for a
//! request that failed (or a resource that ended in error), 2 for bad usage
//! (clap's own errors exit 2 as well). A gRPC error prints its code in words,
//! its message, and each field violation or exceeded quota on its own line.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line (or a configuration file) asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The API refused or failed a request.
    #[error("{}", describe(action, status))]
    Request {
        /// What was asked (`create volume`).
        action: String,
        /// The API's answer.
        status: Status,
    },
    /// The API cannot be reached.
    #[error(
        "cannot reach the Scoria API at {url}: {reason} (is scoria-api running there? see --os-url / SCORIA_URL)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// A resource ended in an error status, or never settled.
    #[error("{0}")]
    Failed(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// A closure wrapping a status with what was asked.
    pub fn request(action: impl Into<String>) -> impl FnOnce(Status) -> CliError {
        let action = action.into();
        move |status| CliError::Request { action, status }
    }
}

/// The gRPC code as its canonical name (`NOT_FOUND`).
pub fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn describe(action: &str, status: &Status) -> String {
    let mut text = format!(
        "{action} failed: {} ({})",
        status.message(),
        code_name(status.code())
    );
    if status.code() == Code::Unavailable && status.message().contains("error trying to connect") {
        text.push_str(" — is scoria-api running at the --os-url / SCORIA_URL address?");
    }
    let details = status.get_error_details();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            let _ = fmt::write(
                &mut text,
                format_args!("\n  {}: {}", v.field, v.description),
            );
        }
    }
    if let Some(quota) = details.quota_failure() {
        for v in &quota.violations {
            let _ = fmt::write(
                &mut text,
                format_args!("\n  quota of {}: {}", v.subject, v.description),
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn codes_read_as_their_names() {
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn field_violations_go_on_their_own_lines() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid size_gib: must be at least 1",
            ErrorDetails::with_bad_request_violation("size_gib", "must be at least 1"),
        );
        let err = CliError::request("create volume")(status);
        assert_eq!(
            err.to_string(),
            "create volume failed: invalid size_gib: must be at least 1 (INVALID_ARGUMENT)\n  size_gib: must be at least 1"
        );
        assert_eq!(err.exit_code(), 1);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }
}
