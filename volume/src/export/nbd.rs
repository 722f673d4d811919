//! One `qemu-nbd` server: its command line, its start (it is ready once its port
//! answers with the NBD greeting), its stop (SIGTERM, then SIGKILL), and the
//! processes an earlier run left behind (found through pid files and `/proc`).
//!
//! A server is either our child (a [`tokio::process::Child`], killed when dropped
//! unless [released](Server::release)) or an adopted process of an earlier run,
//! known only by its pid. Children run in their own process group, so a signal to
//! the service's group (a terminal's Ctrl-C) does not reach them: an export
//! outlives the service that started it unless the service stops it.
//!
//! A read-write server opens the image with `-f <format>` and takes QEMU's image
//! locks; a read-only one opens it with `--image-opts ...,force-share=on`, taking
//! no lock, so it can serve a volume a read-write server holds (multiattach).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{io::AsyncReadExt, net::TcpStream, process::Child, time::Instant};

use super::{ConnectionInfo, ExportError, Result};

/// The Debian package that provides `qemu-nbd`.
pub(super) const PACKAGE: &str = "qemu-utils";
/// How many clients one export serves at once (`--shared`): every attachment of a
/// multiattach volume shares its export, and the readiness probe takes one briefly.
pub(super) const SHARED_CLIENTS: u32 = 16;
/// How long a new server has to accept a connection.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server has to exit after SIGTERM before it gets SIGKILL.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The greeting every NBD server sends first.
const NBD_MAGIC: &[u8; 8] = b"NBDMAGIC";
/// How often a start or a stop looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How much of the server's stderr goes into an error message.
const MAX_STDERR: usize = 4096;

/// What a server serves, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spec {
    /// The export name, `volume-<id>` (read-write) or `volume-<id>-ro`.
    pub export_name: String,
    /// The backend object.
    pub path: PathBuf,
    /// Its format, as `qemu-nbd -f` names it.
    pub format: String,
    /// Whether writes are refused.
    pub read_only: bool,
    /// The address the server listens on.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Spec {
    /// The arguments of `qemu-nbd` serving this spec, writing its pid to `pid_file`.
    /// The image comes last: its path (read-write), or its `--image-opts` string
    /// (read-only, with `force-share=on`).
    pub fn args(&self, pid_file: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--persistent".into(),
            format!("--shared={SHARED_CLIENTS}").into(),
            "-x".into(),
            self.export_name.clone().into(),
            "-b".into(),
            self.host.clone().into(),
            "-p".into(),
            self.port.to_string().into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if self.read_only {
            args.extend(["--read-only".into(), IMAGE_OPTS.into()]);
            args.push(image_opts(&self.format, &self.path).into());
        } else {
            args.extend(["-f".into(), self.format.clone().into()]);
            args.push(self.path.clone().into());
        }
        args
    }

    /// The spec a `qemu-nbd` command line that [`Spec::args`] wrote serves, if it is one.
    pub fn from_cmdline(cmdline: &[String]) -> Option<Self> {
        let value = |flag: &str| {
            let at = cmdline.iter().position(|a| a == flag)?;
            cmdline.get(at + 1).cloned()
        };
        let image = cmdline.last()?;
        let (format, path) = if cmdline.iter().any(|a| a == IMAGE_OPTS) {
            parse_image_opts(image)?
        } else {
            (value("-f")?, PathBuf::from(image))
        };
        Some(Self {
            export_name: value("-x")?,
            path,
            format,
            read_only: cmdline.iter().any(|a| a == "--read-only"),
            host: value("-b")?,
            port: value("-p")?.parse().ok()?,
        })
    }

    /// What a client needs to connect.
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            protocol: "nbd".to_owned(),
            host: self.host.clone(),
            port: self.port,
            export_name: self.export_name.clone(),
            read_only: self.read_only,
        }
    }
}

/// The flag that makes `qemu-nbd` read its image as a set of options.
const IMAGE_OPTS: &str = "--image-opts";

/// The `--image-opts` of a read-only, lock-free open of the `format` image at
/// `path` (a comma in the path is doubled, as QEMU's option syntax wants).
fn image_opts(format: &str, path: &Path) -> String {
    let path = path.to_string_lossy().replace(',', ",,");
    format!("driver={format},force-share=on,file.driver=file,file.filename={path}")
}

/// The format and the path of an [`image_opts`] string.
fn parse_image_opts(opts: &str) -> Option<(String, PathBuf)> {
    // Split on single commas; a doubled one is a comma inside a value.
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = opts.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                field.push(',');
            }
            ',' => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    let value = |key: &str| {
        fields
            .iter()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
    };
    Some((value("driver")?, PathBuf::from(value("file.filename")?)))
}

/// The process behind a server.
#[derive(Debug)]
enum Process {
    /// Started by this manager.
    Child(Child),
    /// Left by an earlier run and adopted: not our child, so watched through `/proc`.
    Adopted(Pid),
}

/// A running `qemu-nbd`.
#[derive(Debug)]
pub(super) struct Server {
    /// What it serves.
    pub spec: Spec,
    process: Process,
    pid_file: PathBuf,
    log_file: PathBuf,
    /// Whether dropping it leaves the process running (see [`Server::release`]).
    released: bool,
}

// === impl Server ===

impl Server {
    /// Starts `program` serving `spec`, its pid file and stderr log in `run_dir`, and
    /// waits (up to [`READY_TIMEOUT`]) until its port greets like an NBD server.
    /// [`ExportError::Exited`] carries its stderr if it exits first.
    pub async fn start(
        program: &Path,
        spec: Spec,
        run_dir: &Path,
        volume_id: &str,
    ) -> Result<Self> {
        let (pid_file, log_file) = files(run_dir, &spec.export_name);
        // stderr goes to a file, not a pipe: nobody reads a pipe while the server runs,
        // and a full pipe would block it.
        let log = std::fs::File::create(&log_file).map_err(|source| ExportError::Io {
            op: "create",
            path: log_file.clone(),
            source,
        })?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(spec.args(&pid_file))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Not killed with the service's process group, nor when the Child is
            // dropped: `Drop for Server` kills it unless it was released.
            .process_group(0)
            .kill_on_drop(false);
        tracing::debug!(?command, "starting qemu-nbd");
        let child = command.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ExportError::ToolMissing {
                program: program.display().to_string(),
                package: PACKAGE,
            },
            _ => ExportError::Io {
                op: "spawn",
                path: program.to_owned(),
                source,
            },
        })?;
        let mut server = Self {
            spec,
            process: Process::Child(child),
            pid_file,
            log_file,
            released: false,
        };
        match server.wait_ready(volume_id).await {
            Ok(()) => Ok(server),
            Err(err) => {
                server.stop().await;
                Err(err)
            }
        }
    }

    /// Adopts `pid`, a `qemu-nbd` an earlier run started with `spec`.
    pub fn adopt(pid: Pid, spec: Spec, run_dir: &Path) -> Self {
        let (pid_file, log_file) = files(run_dir, &spec.export_name);
        Self {
            spec,
            process: Process::Adopted(pid),
            pid_file,
            log_file,
            released: false,
        }
    }

    /// Lets the server go on when this handle is dropped (the service stops, its
    /// clients stay connected); its pid file stays for the next run to adopt.
    pub fn release(mut self) {
        self.released = true;
    }

    async fn wait_ready(&mut self, volume_id: &str) -> Result<()> {
        let Process::Child(child) = &mut self.process else {
            return Ok(());
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = child.try_wait().map_err(|source| ExportError::Io {
                op: "wait for",
                path: self.pid_file.clone(),
                source,
            })?;
            if let Some(status) = exited {
                return Err(ExportError::Exited {
                    volume_id: volume_id.to_owned(),
                    port: self.spec.port,
                    status,
                    stderr: read_log(&self.log_file),
                });
            }
            // A greeting with the child still alive is ours: had another process
            // held the port, the child would have exited on "Address already in use".
            if greets(&self.spec.host, self.spec.port).await && matches!(child.try_wait(), Ok(None))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ExportError::NotReady {
                    volume_id: volume_id.to_owned(),
                    host: self.spec.host.clone(),
                    port: self.spec.port,
                    waited: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the server said on stderr (the end of it).
    pub fn stderr(&self) -> String {
        read_log(&self.log_file)
    }

    /// Whether the server still runs.
    pub fn is_alive(&mut self) -> bool {
        match &mut self.process {
            Process::Child(child) => matches!(child.try_wait(), Ok(None)),
            Process::Adopted(pid) => pid_alive(*pid),
        }
    }

    /// Sends SIGTERM, without waiting: [`Server::stop`] then waits.
    pub fn terminate(&mut self) {
        let pid = match &self.process {
            Process::Child(child) => child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
            Process::Adopted(pid) => Some(*pid),
        };
        if let Some(pid) = pid {
            // ESRCH: it is gone already.
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    /// Stops the server: SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL; then
    /// removes its pid file and log.
    pub async fn stop(mut self) {
        self.terminate();
        match &mut self.process {
            Process::Child(child) => {
                if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(export = %self.spec.export_name, "qemu-nbd ignored SIGTERM: killing it");
                    // `kill` waits for the exit, so the child is reaped.
                    let _ = child.kill().await;
                }
            }
            Process::Adopted(pid) => terminate_pid(*pid).await,
        }
        for file in [&self.pid_file, &self.log_file] {
            remove_file(file);
        }
    }
}

impl Drop for Server {
    /// A child that was neither stopped nor released is killed (SIGKILL), as a
    /// `kill_on_drop` child would be; an adopted process is left alone.
    fn drop(&mut self) {
        if let (Process::Child(child), false) = (&mut self.process, self.released) {
            // An error means it exited already.
            let _ = child.start_kill();
        }
    }
}

/// The pid file and the stderr log of export `export_name`'s server in `run_dir`.
pub(super) fn files(run_dir: &Path, export_name: &str) -> (PathBuf, PathBuf) {
    (
        run_dir.join(format!("{export_name}.pid")),
        run_dir.join(format!("{export_name}.log")),
    )
}

/// Removes `path`; a missing file is fine, any other failure is logged.
pub(super) fn remove_file(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %err, "cannot remove");
    }
}

/// The end of the log at `path`, for an error message.
fn read_log(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    let mut start = text.len().saturating_sub(MAX_STDERR);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Whether `host:port` accepts a connection and greets with the NBD magic.
async fn greets(host: &str, port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((host, port)).await.ok()?;
        let mut magic = [0u8; 8];
        stream.read_exact(&mut magic).await.ok()?;
        Some(&magic == NBD_MAGIC)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

// === earlier runs' processes ===

/// The pid written in the pid file at `path`, if it holds one.
pub(super) fn read_pid_file(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0).then(|| Pid::from_raw(pid))
}

/// The command line of process `pid`, if it runs.
fn cmdline(pid: Pid) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// The command line of `pid` if it is a running `qemu-nbd` serving `export_name`
/// (a pid file may outlive its process, and the pid be reused by another program).
pub(super) fn qemu_nbd_serving(pid: Pid, export_name: &str) -> Option<Vec<String>> {
    let args = cmdline(pid)?;
    let is_qemu_nbd = args.iter().any(|a| a.contains("qemu-nbd"));
    let serves = args.iter().any(|a| a == export_name);
    (pid_alive(pid) && is_qemu_nbd && serves).then_some(args)
}

/// Whether `pid` runs: one of its threads is not a zombie (a zombie only waits
/// for its parent to reap it).
fn pid_alive(pid: Pid) -> bool {
    // The leader of a thread group shows `Z` as soon as its own thread exited, while
    // the other threads still run (and hold the listening socket): look at every one.
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // `tid (comm) S ...`: the state follows the last parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, None | Some('Z' | 'X'))
    })
}

/// Stops `pid`, which is not our child: SIGTERM, up to [`STOP_TIMEOUT`], SIGKILL.
pub(super) async fn terminate_pid(pid: Pid) {
    for (signal, patience) in [
        (Signal::SIGTERM, STOP_TIMEOUT),
        (Signal::SIGKILL, STOP_TIMEOUT),
    ] {
        if kill(pid, signal) == Err(Errno::ESRCH) {
            return;
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if !pid_alive(pid) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(%pid, ?signal, "qemu-nbd still runs");
    }
}
