//! One `qemu-storage-daemon` per staged volume, for nodes without the kernel's
//! `nbd` module: an NBD client blockdev on the volume's export, exported through
//! FUSE onto a regular file (`export.img` in the volume's state dir), which a loop
//! device then turns into a block device.
//!
//! The daemon runs `--daemonize`d with a pid file and a QMP socket in the volume's
//! state dir: it is no child of the plugin, so it survives a plugin restart, and
//! the next plugin finds it by its pid file (checking `/proc/<pid>/cmdline` names
//! that pid file, so a recycled pid is never taken for it).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    time::{Instant, sleep, timeout},
};

use super::{
    cmd,
    error::{NodeError, Result},
    mounts,
    state::{Connection, VolumeFiles},
};

/// The program.
const PROGRAM: &str = "qemu-storage-daemon";
/// How long a QMP `quit` or a SIGTERM has before the next step.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a stop looks again.
const POLL: Duration = Duration::from_millis(50);

/// A QEMU option value with its commas doubled (QEMU's escape).
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The daemon's command line (without the program).
pub fn args(files: &VolumeFiles, conn: &Connection, read_only: bool) -> Vec<String> {
    let ro = if read_only { ",read-only=on" } else { "" };
    let writable = if read_only { "off" } else { "on" };
    vec![
        "--daemonize".into(),
        "--pidfile".into(),
        files.pid_file().display().to_string(),
        "--chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            opt(&files.qmp_socket().display().to_string())
        ),
        "--monitor".into(),
        "chardev=qmp".into(),
        "--blockdev".into(),
        format!(
            "driver=nbd,node-name=volume,server.type=inet,server.host={},server.port={},export={}{ro}",
            opt(&conn.host),
            conn.port,
            opt(&conn.export_name)
        ),
        "--export".into(),
        format!(
            "type=fuse,id=fuse,node-name=volume,mountpoint={},writable={writable}",
            opt(&files.export_file().display().to_string())
        ),
    ]
}

/// Starts the daemon: once this returns, `export.img` is the volume. Its errors
/// say whether the export is unknown (NOT_FOUND) or its server unreachable.
pub async fn start(files: &VolumeFiles, conn: &Connection, read_only: bool) -> Result<()> {
    std::fs::create_dir_all(&files.dir)
        .map_err(NodeError::io(format!("create {}", files.dir.display())))?;
    let export = files.export_file();
    if !export.exists() {
        std::fs::File::create(&export)
            .map_err(NodeError::io(format!("create {}", export.display())))?;
    }
    let args = args(files, conn, read_only);
    let output = cmd::run(PROGRAM, &args).await?;
    if output.success() {
        return Ok(());
    }
    let target = format!("export {} on {}:{}", conn.export_name, conn.host, conn.port);
    let stderr = output.stderr.as_str();
    if stderr.contains("export not available") || stderr.contains("not present") {
        Err(NodeError::NotFound(format!(
            "{target} does not exist (was the volume published to this node?)"
        )))
    } else if stderr.contains("Failed to connect") || stderr.contains("Connection refused") {
        Err(NodeError::Unavailable(format!("cannot reach {target}")))
    } else if stderr.contains("fuse") || stderr.contains("FUSE") {
        Err(NodeError::Precondition(format!(
            "{PROGRAM} cannot export over FUSE on this node (is /dev/fuse there?): {}",
            stderr.trim()
        )))
    } else {
        Err(cmd::failed(PROGRAM, &args, &output))
    }
}

/// The daemon's pid, if one runs for these files.
pub fn pid(files: &VolumeFiles) -> Option<i32> {
    let pid_file = files.pid_file();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
    let ours = String::from_utf8_lossy(&cmdline).contains(&pid_file.display().to_string());
    (ours && !zombie(&proc)).then_some(pid)
}

/// Whether `/proc/<pid>` is a zombie (dead, not yet reaped).
fn zombie(proc: &Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(true)
}

/// Whether the daemon runs.
pub fn running(files: &VolumeFiles) -> bool {
    pid(files).is_some()
}

/// Stops the daemon (QMP `quit`, then SIGTERM, then SIGKILL), unmounts its FUSE
/// export if it left it behind, and removes its files. Nothing running is fine.
pub async fn stop(files: &VolumeFiles) -> Result<()> {
    if let Some(pid) = pid(files) {
        if let Err(err) = quit(&files.qmp_socket()).await {
            tracing::warn!(pid, error = %err, "QMP quit failed; sending SIGTERM");
        }
        if !gone(files, STOP_TIMEOUT).await {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if !gone(files, STOP_TIMEOUT).await {
                tracing::warn!(pid, "{PROGRAM} ignored SIGTERM; sending SIGKILL");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                if !gone(files, STOP_TIMEOUT).await {
                    return Err(NodeError::Internal(format!(
                        "{PROGRAM} (pid {pid}) of {} does not exit",
                        files.dir.display()
                    )));
                }
            }
        }
    }
    // A killed daemon leaves its FUSE mount behind, disconnected.
    let export = files.export_file();
    if mounts::mount_at(&export)?.is_some() {
        let plain = cmd::run("umount", &[&export]).await?;
        if !plain.success() {
            cmd::check("umount", &[Path::new("-l"), &export]).await?;
        }
    }
    for path in [files.pid_file(), files.qmp_socket(), export] {
        super::state::remove_file_if_exists(&path)?;
    }
    Ok(())
}

/// Waits up to `limit` for the daemon to be gone.
async fn gone(files: &VolumeFiles, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running(files) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
    true
}

/// Asks the daemon on `socket` to quit (it flushes and unmounts its export).
async fn quit(socket: &Path) -> std::io::Result<()> {
    let talk = async {
        let stream = UnixStream::connect(socket).await?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        lines.next_line().await?; // the greeting
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await?;
        lines.next_line().await?;
        write.write_all(b"{\"execute\":\"quit\"}\n").await?;
        lines.next_line().await?;
        Ok(())
    };
    timeout(STOP_TIMEOUT, talk)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("QMP did not answer")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_export_and_files() {
        let files = VolumeFiles {
            dir: PathBuf::from("/state/volumes/v"),
        };
        let conn = Connection {
            host: "10.0.0.1".into(),
            port: 10809,
            export_name: "volume-a,b".into(),
            read_only: false,
        };
        let args = args(&files, &conn, true);
        assert!(args.contains(&"/state/volumes/v/qsd.pid".to_owned()));
        let blockdev = &args[args.iter().position(|a| a == "--blockdev").unwrap() + 1];
        assert!(
            blockdev
                .contains("server.host=10.0.0.1,server.port=10809,export=volume-a,,b,read-only=on"),
            "{blockdev}"
        );
        let export = args.last().unwrap();
        assert!(export.ends_with("mountpoint=/state/volumes/v/export.img,writable=off"));
    }

    #[test]
    fn no_pid_file_is_no_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        let files = VolumeFiles {
            dir: tmp.path().into(),
        };
        assert!(!running(&files));
        // A pid file naming a process that is not a daemon of these files.
        std::fs::write(files.pid_file(), std::process::id().to_string()).unwrap();
        assert!(!running(&files));
    }
}
