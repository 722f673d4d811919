//! Turning a volume's NBD export into a block device on this node, and back:
//!
//! - with the kernel's `nbd` module (`/sys/module/nbd` and `/dev/nbd0` exist):
//!   `qemu-nbd --connect /dev/nbdN` on the export;
//! - without it: a `qemu-storage-daemon` (see [`super::daemon`]) exports the volume
//!   through FUSE onto `export.img`, and `losetup` makes a loop device of that file.
//!
//! [`detach`] removes whatever an attach (finished or killed half-way) left: it
//! looks at the system (sysfs, the pid file, mountinfo), not only at the record.

use std::path::{Path, PathBuf};

use super::{
    cmd, daemon,
    error::{NodeError, Result},
    state::{Connection, Device, VolumeFiles},
};

/// How the node attaches exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `qemu-storage-daemon` + FUSE + loop device.
    Fuse,
    /// `qemu-nbd --connect` on a kernel NBD device.
    KernelNbd,
}

impl Method {
    /// Kernel NBD where the module is loaded, FUSE + loop otherwise.
    pub fn detect() -> Self {
        if Path::new("/sys/module/nbd").exists() && Path::new("/dev/nbd0").exists() {
            Self::KernelNbd
        } else {
            Self::Fuse
        }
    }
}

/// Attaches the export `conn` as a block device (read-only when asked). Leftovers
/// of an earlier attempt must have been [detached](detach) first.
pub async fn attach(
    method: Method,
    files: &VolumeFiles,
    conn: &Connection,
    read_only: bool,
) -> Result<Device> {
    match method {
        Method::Fuse => {
            daemon::start(files, conn, read_only).await?;
            match loop_attach(&files.export_file(), read_only).await {
                Ok(dev) => Ok(Device::Loop(dev)),
                Err(err) => {
                    // Not half an attach: the caller sees the loop's error.
                    if let Err(stop) = daemon::stop(files).await {
                        tracing::warn!(error = %stop, "stopping the daemon after a failed losetup");
                    }
                    Err(err)
                }
            }
        }
        Method::KernelNbd => nbd_attach(files, conn, read_only).await.map(Device::Nbd),
    }
}

/// Whether `device` (as recorded) still is the volume: the node exists and, for a
/// loop device, its file is the volume's export with its daemon running.
pub fn alive(files: &VolumeFiles, device: &Device) -> bool {
    match device {
        Device::Loop(dev) => {
            daemon::running(files) && loops_of(&files.export_file()).iter().any(|l| l == dev)
        }
        Device::Nbd(dev) => {
            let name = dev.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| Path::new("/sys/block").join(n).join("pid").exists())
        }
    }
}

/// Detaches whatever attach made for these files (`device` as recorded, if it got
/// that far): every loop device on the export file, a recorded NBD device, the
/// daemon and its files. Nothing attached is fine.
pub async fn detach(files: &VolumeFiles, device: Option<&Device>) -> Result<()> {
    // Read-only loops of read-only block publishes first, then the volume's own.
    let mut devices: Vec<PathBuf> = loops_of(&files.export_file());
    devices.extend(device.map(|d| d.path().to_path_buf()));
    devices.dedup();
    for dev in &devices {
        for ro in loops_of(dev) {
            cmd::check("losetup", &[Path::new("-d"), &ro]).await?;
        }
    }
    for dev in loops_of(&files.export_file()) {
        cmd::check("losetup", &[Path::new("-d"), &dev]).await?;
    }
    if let Some(Device::Nbd(dev)) = device {
        let pid = dev
            .file_name()
            .map(|n| Path::new("/sys/block").join(n).join("pid"));
        if pid.is_some_and(|p| p.exists()) {
            cmd::check("qemu-nbd", &[Path::new("--disconnect"), dev]).await?;
        }
    }
    daemon::stop(files).await
}

/// A read-only loop device on top of `device`, for a read-only block publish of a
/// read-write stage (a read-only bind mount of a device node does not stop writes).
pub async fn read_only_loop(device: &Path) -> Result<PathBuf> {
    loop_attach(device, true).await
}

/// Detaches a loop device made by [`read_only_loop`] on `device` (gone is fine).
pub async fn detach_read_only_loop(device: &Path, ro: &Path) -> Result<()> {
    if loops_of(device).iter().any(|l| l == ro) {
        cmd::check("losetup", &[Path::new("-d"), ro]).await?;
    }
    Ok(())
}

/// Re-reads the size of `device` (a loop device follows its file's size).
pub async fn refresh(device: &Device) -> Result<()> {
    match device {
        Device::Loop(dev) => cmd::check("losetup", &[Path::new("-c"), dev])
            .await
            .map(drop),
        // The kernel client learns a new size only on reconnect.
        Device::Nbd(_) => Ok(()),
    }
}

/// `losetup --find --show` on `file`, with direct I/O (no second page cache over
/// the FUSE file's) when the kernel takes it.
async fn loop_attach(file: &Path, read_only: bool) -> Result<PathBuf> {
    let mut args = vec!["--find", "--show", "--direct-io=on"];
    if read_only {
        args.push("--read-only");
    }
    let file = file.display().to_string();
    args.push(&file);
    let output = cmd::run("losetup", &args).await?;
    let output = if output.success() {
        output
    } else {
        // Some kernels refuse direct I/O on FUSE files: a buffered loop then.
        tracing::info!(stderr = %output.stderr.trim(), "losetup with direct I/O failed; retrying without");
        args.retain(|a| *a != "--direct-io=on");
        let retry = cmd::run("losetup", &args).await?;
        if !retry.success() {
            return Err(cmd::failed("losetup", &args, &retry));
        }
        retry
    };
    let dev = output.stdout.trim();
    if dev.starts_with("/dev/") {
        Ok(PathBuf::from(dev))
    } else {
        Err(NodeError::Internal(format!(
            "losetup printed no device for {file}: {dev:?}"
        )))
    }
}

/// The loop devices whose backing file is `file` (from sysfs).
pub fn loops_of(file: &Path) -> Vec<PathBuf> {
    let wanted = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim()) == wanted)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// `qemu-nbd --connect` on the first free `/dev/nbdN`.
async fn nbd_attach(files: &VolumeFiles, conn: &Connection, read_only: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(&files.dir)
        .map_err(NodeError::io(format!("create {}", files.dir.display())))?;
    let dev = free_nbd().ok_or_else(|| {
        NodeError::Precondition(
            "no free /dev/nbdN on this node (load nbd with more nbds_max)".into(),
        )
    })?;
    let image = format!(
        "driver=nbd,server.type=inet,server.host={},server.port={},export={}",
        conn.host.replace(',', ",,"),
        conn.port,
        conn.export_name.replace(',', ",,")
    );
    let mut args = vec![
        format!("--connect={}", dev.display()),
        "--image-opts".to_owned(),
    ];
    if read_only {
        args.push("--read-only".to_owned());
    }
    args.push(image);
    cmd::check("qemu-nbd", &args).await?;
    Ok(dev)
}

/// The first `/dev/nbdN` no client holds.
fn free_nbd() -> Option<PathBuf> {
    (0..256)
        .map(|n| format!("nbd{n}"))
        .take_while(|name| Path::new("/sys/block").join(name).exists())
        .find(|name| !Path::new("/sys/block").join(name).join("pid").exists())
        .map(|name| Path::new("/dev").join(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_loops_has_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(loops_of(&tmp.path().join("nothing")).is_empty());
    }

    /// A real attach and detach through qemu-storage-daemon, FUSE and a loop
    /// device, on a `qemu-nbd` export of a temp file (needs root, qemu-utils).
    #[tokio::test]
    async fn fuse_attach_and_detach_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("vol.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pid_file = tmp.path().join("nbd.pid");
        let status = std::process::Command::new("qemu-nbd")
            .args([
                "--fork",
                "--persistent",
                "-f",
                "raw",
                "-b",
                "127.0.0.1",
                "-x",
                "exp",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(&image)
            .status()
            .expect("qemu-nbd must be installed (apt install qemu-utils)");
        assert!(status.success());
        let files = VolumeFiles {
            dir: tmp.path().join("v"),
        };
        let conn = Connection {
            host: "127.0.0.1".into(),
            port,
            export_name: "exp".into(),
            read_only: false,
        };
        let missing = Connection {
            export_name: "nope".into(),
            ..conn.clone()
        };
        let err = attach(Method::Fuse, &files, &missing, false)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::NotFound(_)), "{err:?}");
        detach(&files, None).await.unwrap();

        let dev = attach(Method::Fuse, &files, &conn, false).await.unwrap();
        assert!(alive(&files, &dev), "{dev:?}");
        assert_eq!(
            super::super::mounts::device_size(dev.path()).unwrap(),
            16 << 20
        );
        detach(&files, Some(&dev)).await.unwrap();
        detach(&files, Some(&dev)).await.unwrap();
        assert!(!alive(&files, &dev));
        assert!(loops_of(&files.export_file()).is_empty());
        assert!(!daemon::running(&files));
        assert!(!files.export_file().exists());
        let nbd_pid = std::fs::read_to_string(&pid_file).unwrap();
        let _ = std::process::Command::new("kill")
            .arg(nbd_pid.trim())
            .status();
    }
}
