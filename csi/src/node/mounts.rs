//! Filesystems on the node: what is mounted where (`/proc/self/mountinfo`), mount,
//! bind, remount read-only and unmount (the `mount` tools), probing a device for a
//! filesystem (`blkid`), making and growing one, and usage (`statvfs`).

use std::path::{Path, PathBuf};

use super::{
    cmd,
    error::{NodeError, Result},
};

/// The filesystems the node makes and grows.
pub const FS_TYPES: &[&str] = &["ext4", "ext3", "ext2", "xfs"];

/// The filesystem made when the capability names none.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem's device.
    pub device: String,
    /// The path inside that filesystem which is mounted (`/` unless a bind).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The per-mount options (`rw`/`ro`, ...).
    pub options: Vec<String>,
    /// The filesystem type.
    pub fs_type: String,
    /// The mount source (a device path for block filesystems).
    pub source: String,
}

impl MountEntry {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Parses `/proc/self/mountinfo` text (lines it cannot read are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(MountEntry {
                device: (*left.get(2)?).to_owned(),
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                options: left.get(5)?.split(',').map(str::to_owned).collect(),
                fs_type: right.next()?.to_owned(),
                source: unescape(right.next()?),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything mounted, as this process sees it.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(NodeError::io("read /proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

/// `path` as mountinfo spells it (symlinks resolved when it exists).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The mounts at `path`, the topmost last.
pub fn mounts_at(path: &Path) -> Result<Vec<MountEntry>> {
    let path = canonical(path);
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// The topmost mount at `path`, if it is a mount point.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts_at(path)?.pop())
}

/// `major:minor` of the device node `device`.
pub fn device_number(device: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(device)
        .map_err(NodeError::io(format!("stat {}", device.display())))?
        .rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    Ok(format!("{major}:{minor}"))
}

/// Mounts `device` at `target` as `fs_type` with `options`.
pub async fn mount(device: &Path, target: &Path, fs_type: &str, options: &[String]) -> Result<()> {
    let mut args: Vec<String> = vec!["-t".into(), fs_type.into()];
    if !options.is_empty() {
        args.extend(["-o".into(), options.join(",")]);
    }
    args.push(device.display().to_string());
    args.push(target.display().to_string());
    cmd::check("mount", &args).await.map(drop)
}

/// Bind-mounts `source` (a directory or a device node) onto `target`, then
/// remounts it read-only and/or with `options` when asked (a bind ignores them).
pub async fn bind(source: &Path, target: &Path, read_only: bool, options: &[String]) -> Result<()> {
    cmd::check("mount", &[Path::new("--bind"), source, target]).await?;
    if read_only || !options.is_empty() {
        let mut opts = vec!["remount".to_owned(), "bind".to_owned()];
        if read_only {
            opts.push("ro".to_owned());
        }
        opts.extend(options.iter().cloned());
        let args = [
            "-o".to_owned(),
            opts.join(","),
            target.display().to_string(),
        ];
        if let Err(err) = cmd::check("mount", &args).await {
            // Never leave a writable bind behind a failed read-only publish.
            let _ = cmd::check("umount", &[target]).await;
            return Err(err);
        }
    }
    Ok(())
}

/// Unmounts everything mounted at `target` (stacked mounts too).
pub async fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..16 {
        if mount_at(target)?.is_none() {
            return Ok(());
        }
        cmd::check("umount", &[target]).await?;
    }
    Err(NodeError::Internal(format!(
        "{} is still mounted after 16 unmounts",
        target.display()
    )))
}

/// What `blkid` found on a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    /// `TYPE` (a filesystem such as `ext4`, or `swap`, ...).
    pub fs_type: Option<String>,
    /// `PTTYPE`: a partition table.
    pub partition_table: Option<String>,
}

impl Probe {
    /// Whether nothing at all was found: only then may the node format it.
    pub fn is_empty(&self) -> bool {
        self.fs_type.is_none() && self.partition_table.is_none()
    }
}

/// Probes `device` (low-level, no cache): exit 2 is "nothing found".
pub async fn probe(device: &Path) -> Result<Probe> {
    let args = [
        Path::new("-p"),
        Path::new("-o"),
        Path::new("export"),
        device,
    ];
    let output = cmd::run("blkid", &args).await?;
    match output.code {
        Some(0) => Ok(parse_probe(&output.stdout)),
        Some(2) => Ok(Probe::default()),
        _ => Err(cmd::failed("blkid", &args, &output)),
    }
}

fn parse_probe(stdout: &str) -> Probe {
    let mut probe = Probe::default();
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("TYPE", v)) => probe.fs_type = Some(v.to_owned()),
            Some(("PTTYPE", v)) => probe.partition_table = Some(v.to_owned()),
            _ => {}
        }
    }
    probe
}

/// Makes an `fs_type` filesystem on `device` (the caller checked it is empty).
pub async fn make_fs(fs_type: &str, device: &Path) -> Result<()> {
    let program = format!("mkfs.{fs_type}");
    let dev = device.display().to_string();
    let args: Vec<&str> = match fs_type {
        "xfs" => vec!["-q", &dev],
        // Lazy inode tables and no discard pass: a first stage takes seconds, not a
        // write of the whole volume through NBD.
        _ => vec!["-F", "-q", "-E", "nodiscard,lazy_itable_init=1", &dev],
    };
    cmd::check(&program, &args).await.map(drop)
}

/// Grows the filesystem mounted from `device` at `mount_point` to the device's size.
pub async fn grow_fs(fs_type: &str, device: &Path, mount_point: &Path) -> Result<()> {
    match fs_type {
        "xfs" => cmd::check("xfs_growfs", &[mount_point]).await.map(drop),
        t if t.starts_with("ext") => cmd::check("resize2fs", &[device]).await.map(drop),
        other => Err(NodeError::Precondition(format!(
            "cannot grow a {other} filesystem (only {})",
            FS_TYPES.join(", ")
        ))),
    }
}

/// The size in bytes of the ext2/3/4 filesystem on `device` (`dumpe2fs -h`).
pub async fn ext_fs_size(device: &Path) -> Result<u64> {
    let out = cmd::check("dumpe2fs", &[Path::new("-h"), device]).await?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(count), Some(size)) => Ok(count * size),
        _ => Err(NodeError::Internal(format!(
            "dumpe2fs -h {} printed no block count and size",
            device.display()
        ))),
    }
}

/// Grows the unmounted ext2/3/4 filesystem on `device` to the device's size when
/// it is smaller (after a forced check, as resize2fs wants). Kernels that refuse
/// online resizing (EPERM from the resize ioctl) still grow volumes this way.
pub async fn grow_ext_offline(device: &Path) -> Result<bool> {
    if ext_fs_size(device).await? >= device_size(device)? {
        return Ok(false);
    }
    let args = [Path::new("-f"), Path::new("-p"), device];
    let fsck = cmd::run("e2fsck", &args).await?;
    // 0: clean; 1: errors fixed. Anything else needs a human.
    if !matches!(fsck.code, Some(0 | 1)) {
        return Err(cmd::failed("e2fsck", &args, &fsck));
    }
    cmd::check("resize2fs", &[device]).await?;
    Ok(true)
}

/// Bytes and inodes of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes free for unprivileged users.
    pub available_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Total inodes.
    pub total_inodes: u64,
    /// Free inodes.
    pub available_inodes: u64,
    /// Inodes in use.
    pub used_inodes: u64,
}

/// `statvfs(path)`.
pub fn usage(path: &Path) -> Result<Usage> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| NodeError::Io {
        what: format!("statvfs {}", path.display()),
        source: e.into(),
    })?;
    let frsize = wide(st.fragment_size());
    let blocks = wide(st.blocks());
    let files = wide(st.files());
    Ok(Usage {
        total_bytes: blocks * frsize,
        available_bytes: wide(st.blocks_available()) * frsize,
        used_bytes: blocks.saturating_sub(wide(st.blocks_free())) * frsize,
        total_inodes: files,
        available_inodes: wide(st.files_available()),
        used_inodes: files.saturating_sub(wide(st.files_free())),
    })
}

/// A statvfs count (its C type differs between targets) as a `u64`.
fn wide<T: Into<u64>>(n: T) -> u64 {
    n.into()
}

/// The size in bytes of the block device `device` (from sysfs).
pub fn device_size(device: &Path) -> Result<u64> {
    let name = device
        .file_name()
        .ok_or_else(|| NodeError::Internal(format!("{} is no device", device.display())))?;
    let sys = Path::new("/sys/class/block").join(name).join("size");
    let text =
        std::fs::read_to_string(&sys).map_err(NodeError::io(format!("read {}", sys.display())))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .map_err(|e| NodeError::Internal(format!("{}: {e}", sys.display())))?;
    Ok(sectors * 512)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
61 22 7:3 / /var/lib/k\\040s/staging rw,noatime shared:30 - ext4 /dev/loop3 rw
62 22 7:3 / /pods/t1 ro,relatime shared:30 - ext4 /dev/loop3 rw
63 22 0:5 /loop3 /pods/blk rw,nosuid master:2 - devtmpfs udev rw,size=1k
bad line
";

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_binds() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, Path::new("/var/lib/k s/staging"));
        assert_eq!(m[1].device, "7:3");
        assert_eq!(m[1].source, "/dev/loop3");
        assert!(!m[1].read_only());
        assert!(m[2].read_only());
        assert_eq!(m[3].root, "/loop3");
        assert_eq!(m[3].fs_type, "devtmpfs");
    }

    #[test]
    fn probe_output_is_read() {
        let p = parse_probe("DEVNAME=/dev/loop0\nUUID=x\nTYPE=ext4\nUSAGE=filesystem\n");
        assert_eq!(p.fs_type.as_deref(), Some("ext4"));
        assert!(!p.is_empty());
        assert!(parse_probe("PTTYPE=gpt\n").partition_table.is_some());
        assert!(Probe::default().is_empty());
    }

    #[test]
    fn usage_of_the_root_filesystem_adds_up() {
        let u = usage(Path::new("/")).unwrap();
        assert!(u.total_bytes > 0);
        assert!(u.used_bytes <= u.total_bytes);
        assert!(u.available_bytes <= u.total_bytes);
    }

    #[test]
    fn this_process_sees_its_root_mount() {
        assert!(mount_at(Path::new("/")).unwrap().is_some());
        assert_eq!(device_number(Path::new("/dev/null")).unwrap(), "1:3");
    }
}
