//! Running the programs a driver drives (`cp`, `qemu-img`): stderr is captured into
//! the error, a program that is not installed is named with its package, and a
//! cancelled operation kills its child.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Stdio,
};

use super::{DriverError, DriverResult};

/// How much of a program's stderr goes into an error message.
const MAX_STDERR: usize = 4096;

/// A program and the Debian package that provides it.
#[derive(Debug, Clone)]
pub struct Tool {
    program: PathBuf,
    package: &'static str,
}

impl Tool {
    /// `program` (a name looked up in `PATH`, or a path), from `package`.
    pub fn new(program: impl Into<PathBuf>, package: &'static str) -> Self {
        Self {
            program: program.into(),
            package,
        }
    }

    /// This tool with its program resolved to a path through `PATH`, or
    /// [`DriverError::ToolMissing`]: a service without its tools fails at start-up,
    /// not on the first request.
    pub fn resolved(self) -> DriverResult<Self> {
        let found = if self.program.components().count() > 1 {
            is_executable(&self.program).then(|| self.program.clone())
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(&self.program))
                    .find(|path| is_executable(path))
            })
        };
        match found {
            Some(program) => Ok(Self { program, ..self }),
            None => Err(self.missing()),
        }
    }

    /// Runs the program with `args`, stdin and stdout closed; fails with its stderr
    /// if it does not exit with status 0. Dropping the future kills the child.
    pub async fn run<I, S>(&self, args: I) -> DriverResult<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let line = render(command.as_std());
        tracing::debug!(command = %line, "running");
        let output = command.output().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => self.missing(),
            _ => DriverError::Io {
                op: "run",
                path: self.program.clone(),
                source: e,
            },
        })?;
        if output.status.success() {
            return Ok(());
        }
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.len() > MAX_STDERR {
            let mut end = MAX_STDERR;
            while !stderr.is_char_boundary(end) {
                end -= 1;
            }
            stderr.truncate(end);
            stderr.push('…');
        }
        Err(DriverError::Command {
            command: line,
            status: output.status,
            stderr,
        })
    }

    fn missing(&self) -> DriverError {
        DriverError::ToolMissing {
            program: self.program.display().to_string(),
            package: self.package,
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command line, for messages.
fn render(command: &std::process::Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_program_names_its_package() {
        let tool = Tool::new("scoria-no-such-program", "qemu-utils");
        let err = tool.clone().resolved().expect_err("not installed");
        assert!(
            err.to_string().contains("install the package qemu-utils"),
            "{err}"
        );
        let err = tool.run(["x"]).await.expect_err("not installed");
        assert!(matches!(err, DriverError::ToolMissing { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_failure_carries_stderr() {
        let tool = Tool::new("sh", "dash").resolved().expect("sh");
        tool.run(["-c", "true"]).await.expect("true");
        let err = tool
            .run(["-c", "echo broken >&2; exit 3"])
            .await
            .expect_err("fails");
        let message = err.to_string();
        assert!(
            message.contains("broken") && message.contains('3'),
            "{message}"
        );
    }
}
