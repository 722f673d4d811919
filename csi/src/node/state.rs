//! What this node did, in files under `--state-dir`, so a restarted plugin knows:
//!
//! ```text
//! <state-dir>/volumes/<volume>/stage.json        the stage record (phase, device, path)
//! <state-dir>/volumes/<volume>/qsd.pid           qemu-storage-daemon's pid file
//! <state-dir>/volumes/<volume>/qmp.sock          its QMP socket
//! <state-dir>/volumes/<volume>/export.img        its FUSE export (the loop device's file)
//! <state-dir>/volumes/<volume>/publish/<h>.json  one record per target path
//! <state-dir>/failpoints/<name>                  test hooks (see `Failpoint`)
//! ```
//!
//! Intent is written before the act: the stage record says `attaching` before the
//! daemon starts, so a plugin killed in between finds it and cleans up; records are
//! replaced atomically (write, fsync, rename).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::error::{NodeError, Result};

/// How a volume is used (the CSI `VolumeCapability`, as far as the node cares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Block device or filesystem.
    pub access: Access,
    /// The CSI access mode's number (`VolumeCapability.AccessMode.Mode`).
    pub access_mode: i32,
}

/// The CSI access type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Access {
    /// A raw block device.
    Block,
    /// A mounted filesystem.
    Mount {
        /// `ext4` unless the capability names another.
        fs_type: String,
        /// Passed to `mount -o`.
        mount_flags: Vec<String>,
    },
}

/// Where the volume's NBD export is (from the publish context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The server's address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The export name.
    pub export_name: String,
    /// Whether the export refuses writes.
    pub read_only: bool,
}

/// How far a stage got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The daemon / nbd device may be starting: nothing is known to be usable.
    Attaching,
    /// The block device exists (`device` is set); not yet formatted or mounted.
    Attached,
    /// Done: mounted at the staging path (or, for block, the device is ready).
    Staged,
}

/// The block device a stage made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Device {
    /// A loop device on the volume's FUSE export file.
    Loop(PathBuf),
    /// A kernel NBD device (`qemu-nbd --connect`).
    Nbd(PathBuf),
}

impl Device {
    /// The device node.
    pub fn path(&self) -> &Path {
        match self {
            Self::Loop(path) | Self::Nbd(path) => path,
        }
    }
}

/// One staged (or being staged) volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The CSI volume id.
    pub volume_id: String,
    /// Where it is staged.
    pub staging_target_path: PathBuf,
    /// How.
    pub capability: Capability,
    /// Its export.
    pub connection: Connection,
    /// Whether the device is attached read-only (a read-only export or access mode).
    pub read_only: bool,
    /// How far it got.
    pub phase: Phase,
    /// Its device, once attached.
    pub device: Option<Device>,
}

/// One published target path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRecord {
    /// The CSI volume id.
    pub volume_id: String,
    /// Where it is published.
    pub target_path: PathBuf,
    /// How.
    pub capability: Capability,
    /// Whether read-only was asked.
    pub readonly: bool,
    /// The read-only loop device bound there (a read-only block publish of a
    /// read-write stage).
    #[serde(default)]
    pub ro_device: Option<PathBuf>,
}

/// The plugin's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The files of one volume under the state directory.
#[derive(Debug, Clone)]
pub struct VolumeFiles {
    /// `<state-dir>/volumes/<volume>`.
    pub dir: PathBuf,
}

impl VolumeFiles {
    /// The stage record.
    pub fn stage(&self) -> PathBuf {
        self.dir.join("stage.json")
    }
    /// The daemon's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("qsd.pid")
    }
    /// The daemon's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The FUSE export's mount point (a regular file).
    pub fn export_file(&self) -> PathBuf {
        self.dir.join("export.img")
    }
    /// The publish records' directory.
    pub fn publish_dir(&self) -> PathBuf {
        self.dir.join("publish")
    }
}

impl StateDir {
    /// The state directory at `root`, created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("volumes")).map_err(NodeError::io(format!(
            "create state dir {}",
            root.display()
        )))?;
        Ok(Self { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files of `volume_id` (nothing is created).
    pub fn volume(&self, volume_id: &str) -> VolumeFiles {
        VolumeFiles {
            dir: self.root.join("volumes").join(file_key(volume_id)),
        }
    }

    /// The stage record of `volume_id`, if any.
    pub fn load_stage(&self, volume_id: &str) -> Result<Option<StageRecord>> {
        read_json(&self.volume(volume_id).stage())
    }

    /// Writes `record` (atomically), creating the volume's directory.
    pub fn save_stage(&self, record: &StageRecord) -> Result<()> {
        let files = self.volume(&record.volume_id);
        write_json(&files.stage(), record)
    }

    /// Removes everything of `volume_id` (its daemon must be gone).
    pub fn remove_volume(&self, volume_id: &str) -> Result<()> {
        let dir = self.volume(volume_id).dir;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NodeError::Io {
                what: format!("remove {}", dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// The record file of a publish of `volume_id` at `target`.
    fn publish_file(&self, volume_id: &str, target: &Path) -> PathBuf {
        let hash = fnv1a(target.as_os_str().as_encoded_bytes());
        self.volume(volume_id)
            .publish_dir()
            .join(format!("{hash:016x}.json"))
    }

    /// The publish record of `volume_id` at `target`, if any.
    pub fn load_publish(&self, volume_id: &str, target: &Path) -> Result<Option<PublishRecord>> {
        let record: Option<PublishRecord> = read_json(&self.publish_file(volume_id, target))?;
        Ok(record.filter(|r| r.target_path == target))
    }

    /// Every publish record of `volume_id`.
    pub fn publishes(&self, volume_id: &str) -> Result<Vec<PublishRecord>> {
        let dir = self.volume(volume_id).publish_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NodeError::io(format!("read {}", dir.display()))(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(NodeError::io(format!("read {}", dir.display())))?;
            if entry.path().extension().is_some_and(|e| e == "json") {
                records.extend(read_json::<PublishRecord>(&entry.path())?);
            }
        }
        Ok(records)
    }

    /// Writes a publish record.
    pub fn save_publish(&self, record: &PublishRecord) -> Result<()> {
        write_json(
            &self.publish_file(&record.volume_id, &record.target_path),
            record,
        )
    }

    /// Removes the publish record of `volume_id` at `target` (none is fine).
    pub fn remove_publish(&self, volume_id: &str, target: &Path) -> Result<()> {
        remove_file_if_exists(&self.publish_file(volume_id, target))
    }

    /// Whether the test hook `name` is armed (`<state-dir>/failpoints/<name>` exists).
    pub fn failpoint(&self, name: &str) -> bool {
        self.root.join("failpoints").join(name).exists()
    }
}

/// A file name for `volume_id`: itself when it is plain (`[A-Za-z0-9_-]`, as
/// Scoria's UUIDs are), else `x` and its bytes in hex, so no id escapes the dir.
pub fn file_key(volume_id: &str) -> String {
    let plain = !volume_id.is_empty()
        && volume_id.len() <= 128
        && volume_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        volume_id.to_owned()
    } else {
        let mut key = String::from("x");
        for b in volume_id.bytes().take(100) {
            key.push_str(&format!("{b:02x}"));
        }
        // Long ids: the prefix above plus a hash of the whole id.
        key.push_str(&format!("-{:016x}", fnv1a(volume_id.as_bytes())));
        key
    }
}

/// The 64-bit FNV-1a hash (stable across builds, unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Removes `path`; a missing one is fine.
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NodeError::Io {
            what: format!("remove {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::io(format!("read {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| NodeError::Internal(format!("corrupt state file {}: {e}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| NodeError::Internal(format!("{} has no parent", path.display())))?;
    fs::create_dir_all(dir).map_err(NodeError::io(format!("create {}", dir.display())))?;
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| NodeError::Internal(format!("encode {}: {e}", path.display())))?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(NodeError::io(format!("write {}", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(dir: &Path) -> StageRecord {
        StageRecord {
            volume_id: "0b6c5d1e-7f2a-4c3b-9d8e-1a2b3c4d5e6f".into(),
            staging_target_path: dir.join("staging"),
            capability: Capability {
                access: Access::Mount {
                    fs_type: "ext4".into(),
                    mount_flags: vec!["noatime".into()],
                },
                access_mode: 1,
            },
            connection: Connection {
                host: "127.0.0.1".into(),
                port: 10809,
                export_name: "volume-x".into(),
                read_only: false,
            },
            read_only: false,
            phase: Phase::Attached,
            device: Some(Device::Loop("/dev/loop3".into())),
        }
    }

    #[test]
    fn stage_records_round_trip_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path().join("state")).unwrap();
        let rec = record(tmp.path());
        assert_eq!(state.load_stage(&rec.volume_id).unwrap(), None);
        state.save_stage(&rec).unwrap();
        assert_eq!(state.load_stage(&rec.volume_id).unwrap(), Some(rec.clone()));
        state.remove_volume(&rec.volume_id).unwrap();
        state.remove_volume(&rec.volume_id).unwrap();
        assert_eq!(state.load_stage(&rec.volume_id).unwrap(), None);
    }

    #[test]
    fn publish_records_are_per_target() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let rec = record(tmp.path());
        let publish = |t: &str| PublishRecord {
            volume_id: rec.volume_id.clone(),
            target_path: tmp.path().join(t),
            capability: rec.capability.clone(),
            readonly: false,
            ro_device: None,
        };
        state.save_publish(&publish("a")).unwrap();
        state.save_publish(&publish("b")).unwrap();
        assert_eq!(state.publishes(&rec.volume_id).unwrap().len(), 2);
        let a = tmp.path().join("a");
        assert_eq!(
            state.load_publish(&rec.volume_id, &a).unwrap(),
            Some(publish("a"))
        );
        state.remove_publish(&rec.volume_id, &a).unwrap();
        state.remove_publish(&rec.volume_id, &a).unwrap();
        assert_eq!(state.load_publish(&rec.volume_id, &a).unwrap(), None);
        assert_eq!(state.publishes(&rec.volume_id).unwrap(), vec![publish("b")]);
    }

    #[test]
    fn odd_ids_stay_inside_the_state_dir() {
        assert_eq!(file_key("abc-123_x"), "abc-123_x");
        let key = file_key("../../etc");
        assert!(key.starts_with('x') && !key.contains('/'), "{key}");
        assert_ne!(file_key("a/b"), file_key("a_b"));
        assert!(file_key(&"y".repeat(500)).len() < 255);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let files = state.volume("v");
        fs::create_dir_all(&files.dir).unwrap();
        fs::write(files.stage(), b"{not json").unwrap();
        let err = state.load_stage("v").unwrap_err();
        assert!(err.to_string().contains("stage.json"), "{err}");
    }
}
