//! NodeStageVolume and NodeUnstageVolume.
//!
//! A stage goes `attaching` (record written, then the daemon / nbd device) →
//! `attached` (the device recorded) → formatted if empty, mounted → `staged`.
//! Each step is written before the next starts, so a plugin killed anywhere leaves
//! a record the next NodeStageVolume finishes (same request, device alive) or
//! undoes and redoes, and the next NodeUnstageVolume undoes.

use std::{path::Path, time::Duration};

use super::{
    Node, attach,
    error::{NodeError, Result},
    mounts,
    state::{Access, Capability, Connection, Phase, StageRecord, VolumeFiles},
};

/// The test hook that holds a stage after its device is attached.
pub const FAILPOINT_AFTER_ATTACH: &str = "stage-after-attach";

/// What a NodeStageVolume asks, checked.
#[derive(Debug, Clone)]
pub struct StageRequest {
    /// The volume.
    pub volume_id: String,
    /// Where to stage it.
    pub staging_target_path: std::path::PathBuf,
    /// How.
    pub capability: Capability,
    /// Its export.
    pub connection: Connection,
}

impl Node {
    /// Stages `req` (idempotent: the same request again is success).
    pub(super) async fn stage(&self, req: StageRequest) -> Result<()> {
        let files = self.state.volume(&req.volume_id);
        let read_only =
            req.connection.read_only || super::validate::read_only_mode(req.capability.access_mode);
        let fresh = StageRecord {
            volume_id: req.volume_id.clone(),
            staging_target_path: req.staging_target_path.clone(),
            capability: req.capability.clone(),
            connection: req.connection.clone(),
            read_only,
            phase: Phase::Attaching,
            device: None,
        };
        let mut record = match self.state.load_stage(&req.volume_id)? {
            None => fresh,
            Some(old) if old.phase == Phase::Staged => {
                if old.staging_target_path != req.staging_target_path {
                    return Err(NodeError::Precondition(format!(
                        "volume {} is staged at {} on this node; unstage it there first",
                        req.volume_id,
                        old.staging_target_path.display()
                    )));
                }
                if old.capability != req.capability {
                    return Err(NodeError::AlreadyExists(format!(
                        "volume {} is staged at {} with another volume_capability",
                        req.volume_id,
                        old.staging_target_path.display()
                    )));
                }
                if self.healthy(&files, &old)? {
                    return Ok(());
                }
                tracing::warn!(volume_id = %req.volume_id, "staged volume lost its device or mount; staging again");
                self.undo(&files, &old).await?;
                fresh
            }
            Some(old) => {
                let same = old.staging_target_path == req.staging_target_path
                    && old.capability == req.capability
                    && old.connection == req.connection;
                let alive = old
                    .device
                    .as_ref()
                    .is_some_and(|d| attach::alive(&files, d));
                if same && alive {
                    tracing::info!(volume_id = %req.volume_id, phase = ?old.phase, "finishing an interrupted stage");
                    old
                } else {
                    tracing::info!(volume_id = %req.volume_id, phase = ?old.phase, "undoing an interrupted stage");
                    self.undo(&files, &old).await?;
                    fresh
                }
            }
        };

        if record.device.is_none() {
            record.phase = Phase::Attaching;
            self.state.save_stage(&record)?;
            // A killed attempt may have left a daemon or loop it never recorded.
            attach::detach(&files, None).await?;
            let device =
                match attach::attach(self.method, &files, &record.connection, read_only).await {
                    Ok(device) => device,
                    Err(err) => {
                        if let Err(undo) = attach::detach(&files, None).await {
                            tracing::warn!(error = %undo, "cleaning up after a failed attach");
                        }
                        self.state.remove_volume(&req.volume_id)?;
                        return Err(err);
                    }
                };
            record.device = Some(device);
            record.phase = Phase::Attached;
            self.state.save_stage(&record)?;
        }
        self.hold(FAILPOINT_AFTER_ATTACH).await;

        if let Access::Mount {
            fs_type,
            mount_flags,
        } = &record.capability.access
        {
            let device = record
                .device
                .clone()
                .ok_or_else(|| NodeError::Internal("attached without a device".into()))?;
            format_and_mount(
                device.path(),
                &record.staging_target_path,
                fs_type,
                mount_flags,
                read_only,
            )
            .await?;
        }
        record.phase = Phase::Staged;
        self.state.save_stage(&record)
    }

    /// Unstages `volume_id` from `staging` (not staged there is success).
    pub(super) async fn unstage(&self, volume_id: &str, staging: &Path) -> Result<()> {
        let Some(record) = self.state.load_stage(volume_id)? else {
            return Ok(());
        };
        if record.staging_target_path != staging {
            return Ok(());
        }
        for publish in self.state.publishes(volume_id)? {
            if mounts::mount_at(&publish.target_path)?.is_some() {
                return Err(NodeError::Precondition(format!(
                    "volume {volume_id} is still published at {}; NodeUnpublishVolume first",
                    publish.target_path.display()
                )));
            }
        }
        let files = self.state.volume(volume_id);
        self.undo(&files, &record).await?;
        self.state.remove_volume(volume_id)
    }

    /// Whether a staged volume still works: its device is alive and, for a
    /// filesystem, mounted from that device at the staging path.
    pub(super) fn healthy(&self, files: &VolumeFiles, record: &StageRecord) -> Result<bool> {
        let Some(device) = &record.device else {
            return Ok(false);
        };
        if !attach::alive(files, device) {
            return Ok(false);
        }
        match record.capability.access {
            Access::Block => Ok(true),
            Access::Mount { .. } => mounted_from(&record.staging_target_path, device.path()),
        }
    }

    /// Undoes a stage as far as it got: the staging mount if it is the volume's,
    /// then the device, the daemon and their files. The record stays.
    async fn undo(&self, files: &VolumeFiles, record: &StageRecord) -> Result<()> {
        if let Some(device) = &record.device
            && mounted_from(&record.staging_target_path, device.path())?
        {
            mounts::unmount_all(&record.staging_target_path).await?;
        }
        attach::detach(files, record.device.as_ref()).await
    }

    /// Waits while the test hook `name` is armed (see [`super::state::StateDir::failpoint`]).
    async fn hold(&self, name: &str) {
        if !self.state.failpoint(name) {
            return;
        }
        tracing::warn!(
            failpoint = name,
            "holding at a failpoint until its file goes"
        );
        while self.state.failpoint(name) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the topmost mount at `path` is a filesystem on `device`.
pub fn mounted_from(path: &Path, device: &Path) -> Result<bool> {
    let Some(mount) = mounts::mount_at(path)? else {
        return Ok(false);
    };
    Ok(mounts::device_number(device).is_ok_and(|n| n == mount.device))
}

/// Mounts `device` at `staging`, making an `fs_type` filesystem first if the
/// device holds nothing at all (never over anything `blkid` recognises).
pub(super) async fn format_and_mount(
    device: &Path,
    staging: &Path,
    fs_type: &str,
    flags: &[String],
    read_only: bool,
) -> Result<()> {
    if mounted_from(staging, device)? {
        return Ok(());
    }
    if let Some(other) = mounts::mount_at(staging)? {
        return Err(NodeError::Precondition(format!(
            "staging_target_path {} has another filesystem mounted ({} from {})",
            staging.display(),
            other.fs_type,
            other.source
        )));
    }
    std::fs::create_dir_all(staging)
        .map_err(NodeError::io(format!("create {}", staging.display())))?;
    let probe = mounts::probe(device).await?;
    let wanted = if fs_type.is_empty() {
        None
    } else {
        Some(fs_type)
    };
    let fs = match (probe.fs_type.as_deref(), wanted) {
        (Some(found), Some(want)) if found != want => {
            return Err(NodeError::Precondition(format!(
                "the volume holds a {found} filesystem, not the {want} volume_capability.mount.fs_type asks for; it is never reformatted"
            )));
        }
        (Some(found), _) if !mounts::FS_TYPES.contains(&found) => {
            return Err(NodeError::Precondition(format!(
                "the volume holds {found}, not a filesystem this node mounts ({})",
                mounts::FS_TYPES.join(", ")
            )));
        }
        (Some(found), _) => {
            // Expanded while detached (Scoria's extend is offline): grow before
            // mounting, which needs no online resize from the kernel.
            if found.starts_with("ext") && !read_only && mounts::grow_ext_offline(device).await? {
                tracing::info!(device = %device.display(), "grew the filesystem to the volume's new size");
            }
            found.to_owned()
        }
        (None, _) if probe.partition_table.is_some() => {
            return Err(NodeError::Precondition(format!(
                "the volume holds a {} partition table; it is never formatted",
                probe.partition_table.unwrap_or_default()
            )));
        }
        (None, want) => {
            let fs = want.unwrap_or(mounts::DEFAULT_FS_TYPE);
            if read_only {
                return Err(NodeError::Precondition(format!(
                    "the volume has no filesystem and is attached read-only: cannot make {fs}"
                )));
            }
            tracing::info!(device = %device.display(), fs, "making a filesystem on a new volume");
            mounts::make_fs(fs, device).await?;
            fs.to_owned()
        }
    };
    let mut options = flags.to_vec();
    if read_only {
        options.push("ro".into());
    }
    mounts::mount(device, staging, &fs, &options).await
}
