//! Running the node's tools (`mount`, `losetup`, `blkid`, `mkfs.*`, `qemu-*`): a tool
//! that is not installed is an error naming the package to install, a tool that
//! fails is an error carrying its exit code and stderr (logged in full by the
//! caller's error mapping, never parsed by handlers except where noted).

use std::{ffi::OsStr, process::Stdio};

use tokio::process::Command;

use super::error::{NodeError, Result};

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The Debian package that provides `program`, for the "install ..." message.
pub fn package_of(program: &str) -> &'static str {
    match program {
        "qemu-storage-daemon" | "qemu-nbd" => "qemu-utils",
        "losetup" | "blkid" | "blockdev" => "util-linux",
        "mount" | "umount" => "mount",
        "mkfs.ext2" | "mkfs.ext3" | "mkfs.ext4" | "resize2fs" | "e2fsck" | "dumpe2fs" => {
            "e2fsprogs"
        }
        "mkfs.xfs" | "xfs_growfs" => "xfsprogs",
        _ => "the package that provides it",
    }
}

/// Runs `program args...` to its end, whatever its exit code.
pub async fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .output()
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => NodeError::NotInstalled {
                program: program.to_owned(),
                package: package_of(program),
            },
            _ => NodeError::Io {
                what: format!("start {program}"),
                source,
            },
        })?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `program args...` and returns its stdout; a non-zero exit is
/// [`NodeError::Command`].
pub async fn check<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let output = run(program, args).await?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(failed(program, args, &output))
    }
}

/// The error of `program args...` that ended as `output`.
pub fn failed<S: AsRef<OsStr>>(program: &str, args: &[S], output: &Output) -> NodeError {
    NodeError::Command {
        command: command_line(program, args),
        code: output.code,
        stderr: output.stderr.trim().to_owned(),
    }
}

/// `program args...` as one string, for messages.
pub fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_program_names_its_package() {
        let err = run("mkfs.ext2-not-here", &["x"]).await.unwrap_err();
        assert!(matches!(err, NodeError::NotInstalled { .. }), "{err:?}");
        assert_eq!(package_of("qemu-storage-daemon"), "qemu-utils");
    }

    #[tokio::test]
    async fn a_failing_program_carries_code_and_stderr() {
        let err = check("sh", &["-c", "echo boom >&2; exit 3"])
            .await
            .unwrap_err();
        match err {
            NodeError::Command {
                command,
                code,
                stderr,
            } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr, "boom");
                assert!(command.starts_with("sh -c"), "{command}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(check("sh", &["-c", "echo ok"]).await.unwrap(), "ok\n");
    }
}
