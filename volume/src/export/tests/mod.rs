//! The export manager against the real `qemu-nbd`: bytes are written and read over
//! NBD and through the file with `qemu-io`, which fails when a pattern differs.
//! Each test takes its own block of ports ([`test_ports`]) and its own temp dir;
//! without qemu-utils the tests fail, saying so.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tempfile::TempDir;

use super::{ConnectionInfo, ExportError, ExportKey, ExportManager, nbd};

mod failures;
mod ports;
mod restart;
mod serving;

/// A manager on its own ports and run dir.
struct Fixture {
    _temp: TempDir,
    dir: PathBuf,
    manager: ExportManager,
}

fn fixture() -> Fixture {
    for tool in ["qemu-nbd", "qemu-img", "qemu-io"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "{tool} is missing: install qemu-utils"
        );
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().to_owned();
    let first = *test_ports().start();
    let manager = ExportManager::new("127.0.0.1".into(), first..=first + 9, dir.join("run"));
    Fixture {
        _temp: temp,
        dir,
        manager,
    }
}

/// 20 ports no other test of this process holds: a block of 20000-27999, from a
/// random place for each process, then the next block for each call.
pub(crate) fn test_ports() -> std::ops::RangeInclusive<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCKS: u16 = 400;
    static NEXT: AtomicU16 = AtomicU16::new(u16::MAX);
    let start = (uuid::Uuid::new_v4().as_u128() % u128::from(BLOCKS)) as u16;
    let _ = NEXT.compare_exchange(u16::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let block = NEXT.fetch_add(1, Ordering::SeqCst) % BLOCKS;
    let first = 20000 + block * 20;
    first..=first + 19
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn key(id: &str, read_only: bool) -> ExportKey {
    ExportKey::new(id, read_only).expect("a UUID")
}

/// A 16 MiB image of `format` for volume `id` in `dir`.
async fn image(dir: &Path, id: &str, format: &str) -> PathBuf {
    let path = dir.join(format!("volume-{id}.{format}"));
    let output = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(&path)
        .arg("16M")
        .output()
        .await
        .expect("qemu-img (install qemu-utils)");
    assert!(output.status.success(), "qemu-img create: {output:?}");
    path
}

/// `qemu-io [extra] -f <format> -c <command> <target>`: Ok, or Err with its output.
async fn qemu_io(extra: &[&str], format: &str, target: &str, command: &str) -> Result<(), String> {
    let output = tokio::process::Command::new("qemu-io")
        .args(extra)
        .args(["-f", format, "-c", command, target])
        .output()
        .await
        .expect("qemu-io (install qemu-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && !text.contains("error") && !text.contains("failed") {
        Ok(())
    } else {
        Err(text)
    }
}

/// Whether the export's port accepts a TCP connection now.
async fn accepts(info: &ConnectionInfo) -> bool {
    let connect = tokio::net::TcpStream::connect((info.host.as_str(), info.port));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

const WRITE: &str = "write -P 0xab 0 1M";
const READ: &str = "read -P 0xab 0 1M";
