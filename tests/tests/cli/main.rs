//! The `scoria` command line as a user meets it: the real binary, run as a
//! child process against a real stack (API, scheduler, volume service, broker,
//! SQLite), its exit code, stdout and stderr asserted, and the state it left
//! checked with the typed clients. One stack per test; the CLI never sees the
//! developer's environment (`SCORIA_*`, `HOME`, `clouds.toml`).
#![allow(missing_docs, clippy::unwrap_used)]

mod errors;
mod manage;
mod others;
mod transfers;
mod tty;
mod volumes;

use std::{
    fmt,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use scoria_tests::stack::{self, Stack};
use serde_json::Value;
use tokio::{io::AsyncReadExt, process::Command};

/// How long one CLI run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a run of the CLI left: its exit code (-1 if a signal ended it) and
/// what it printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts the run exited 0; itself.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }

    /// Asserts the run exited `code`; itself.
    #[track_caller]
    pub fn exits(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit {code}:\n{self}");
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Stdout without its trailing newline.
    pub fn text(&self) -> &str {
        self.stdout.trim_end_matches('\n')
    }
}

/// The folder the CLI takes for `HOME` (inside the stack's temp dir, empty).
pub fn home(stack: &Stack) -> PathBuf {
    let home = stack.dir.path().join("cli-home");
    std::fs::create_dir_all(&home).expect("cli home");
    home
}

/// Where `SCORIA_CLOUDS_FILE` points (nothing there unless a test writes it).
pub fn clouds_file(stack: &Stack) -> PathBuf {
    stack.dir.path().join("clouds.toml")
}

/// The stack's API as the CLI's `--os-url`.
pub fn url(stack: &Stack) -> String {
    format!("http://{}", stack.api)
}

/// `program` with a clean environment for the CLI: none of the caller's
/// `SCORIA_*` or `XDG_CONFIG_HOME`, `HOME` an empty folder of the stack,
/// `SCORIA_CLOUDS_FILE` in the stack's dir, and `SCORIA_URL` / `SCORIA_PROJECT`
/// naming the stack and project `p1`, `SCORIA_ROLES` `member` (without
/// `x-roles` the API's noauth mode takes a caller for `admin,member`).
pub fn command(stack: &Stack, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SCORIA_") {
            command.env_remove(&key);
        }
    }
    command
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home(stack))
        .env("SCORIA_CLOUDS_FILE", clouds_file(stack))
        .env("SCORIA_URL", url(stack))
        .env("SCORIA_PROJECT", "p1")
        .env("SCORIA_ROLES", "member")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The `scoria` binary.
pub fn binary() -> PathBuf {
    stack::binary("scoria")
}

/// Runs `command` to its end (at most [`RUN_TIMEOUT`]).
pub async fn run(mut command: Command) -> Output {
    let out = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} ran longer than {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `scoria <args>` as a member of project `p1`.
pub async fn scoria(stack: &Stack, args: &[&str]) -> Output {
    let mut command = command(stack, binary());
    command.args(args);
    run(command).await
}

/// `scoria <args>` as an admin (and member) of project `p1`.
pub async fn scoria_admin(stack: &Stack, args: &[&str]) -> Output {
    let mut command = command(stack, binary());
    command.env("SCORIA_ROLES", "admin,member").args(args);
    run(command).await
}

/// The string `key` of a JSON object (empty if missing).
#[track_caller]
pub fn field<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {value:#}"))
}

/// A CLI run still going: what it printed so far can be awaited.
pub struct Running {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// Copies everything `from` gives into `into`, as it comes.
fn copy_into(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            into.lock().expect("buffer").extend_from_slice(&buf[..n]);
        }
    })
}

impl Running {
    /// Starts `command` (stdout and stderr piped, as [`command`] sets them).
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            copy_into(child.stdout.take().expect("piped stdout"), stdout.clone()),
            copy_into(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn printed(&self) -> (String, String) {
        let text =
            |b: &Mutex<Vec<u8>>| String::from_utf8_lossy(&b.lock().expect("buffer")).into_owned();
        (text(&self.stdout), text(&self.stderr))
    }

    /// Waits (up to [`RUN_TIMEOUT`]) until stdout or stderr contains `needle`.
    pub async fn wait_for(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        loop {
            let (stdout, stderr) = self.printed();
            if stdout.contains(needle) || stderr.contains(needle) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{needle:?} never printed:\n--- stdout ---\n{stdout:?}\n--- stderr ---\n{stderr:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the end (at most [`RUN_TIMEOUT`]) and everything printed.
    pub async fn finish(mut self) -> Output {
        let status = tokio::time::timeout(RUN_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {RUN_TIMEOUT:?}: {:?}", self.printed()))
            .expect("wait");
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        let (stdout, stderr) = self.printed();
        Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to the stack's `scoria-volume`: stopped,
/// it takes no work, so a create stays `creating` until it goes on.
pub async fn signal_volume_service(stack: &Stack, signal: &str) {
    let (_, pid) = stack
        .pids()
        .into_iter()
        .find(|(name, _)| name == "scoria-volume")
        .expect("the stack runs scoria-volume");
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}
