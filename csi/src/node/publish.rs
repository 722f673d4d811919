//! NodePublishVolume and NodeUnpublishVolume: a bind mount of the staging mount
//! (a filesystem) or of the device node (block) onto the target path, which the
//! node creates (a directory, or a file for block) and removes again.

use std::path::{Path, PathBuf};

use super::{
    Node, attach,
    error::{NodeError, Result},
    mounts,
    state::{Access, Capability, Phase, PublishRecord},
    validate,
};

/// What a NodePublishVolume asks, checked.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The volume.
    pub volume_id: String,
    /// Where it was staged.
    pub staging_target_path: PathBuf,
    /// Where to publish it.
    pub target_path: PathBuf,
    /// How.
    pub capability: Capability,
    /// Read-only asked.
    pub readonly: bool,
}

impl Node {
    /// Publishes `req` (idempotent).
    pub(super) async fn publish(&self, req: PublishRequest) -> Result<()> {
        let id = &req.volume_id;
        let stage = self.state.load_stage(id)?.ok_or_else(|| {
            NodeError::NotFound(format!("volume {id} is not staged on this node"))
        })?;
        if stage.staging_target_path != req.staging_target_path || stage.phase != Phase::Staged {
            return Err(NodeError::Precondition(format!(
                "volume {id} is not staged at {} (NodeStageVolume first)",
                req.staging_target_path.display()
            )));
        }
        let block = matches!(req.capability.access, Access::Block);
        if block != matches!(stage.capability.access, Access::Block) {
            return Err(NodeError::Precondition(format!(
                "volume {id} is staged as {}, not as the {} volume_capability asks",
                kind(&stage.capability.access),
                kind(&req.capability.access)
            )));
        }
        if let Some(old) = self.state.load_publish(id, &req.target_path)?
            && mounts::mount_at(&req.target_path)?.is_some()
        {
            if old.capability == req.capability && old.readonly == req.readonly {
                return Ok(());
            }
            return Err(NodeError::AlreadyExists(format!(
                "volume {id} is published at {} with another volume_capability or readonly",
                req.target_path.display()
            )));
        }
        if !validate::many_targets(req.capability.access_mode) {
            for other in self.state.publishes(id)? {
                if other.target_path != req.target_path
                    && mounts::mount_at(&other.target_path)?.is_some()
                {
                    return Err(NodeError::Precondition(format!(
                        "volume {id} is published at {} already and its access mode allows one target",
                        other.target_path.display()
                    )));
                }
            }
        }
        let device = stage
            .device
            .as_ref()
            .ok_or_else(|| NodeError::Internal(format!("staged volume {id} has no device")))?;
        let read_only = req.readonly || stage.read_only;
        make_target(&req.target_path, block)?;
        let mut record = PublishRecord {
            volume_id: id.clone(),
            target_path: req.target_path.clone(),
            capability: req.capability.clone(),
            readonly: req.readonly,
            ro_device: None,
        };
        self.state.save_publish(&record)?;
        let (source, flags) = match &req.capability.access {
            Access::Block if read_only && !stage.read_only => {
                let ro = attach::read_only_loop(device.path()).await?;
                record.ro_device = Some(ro.clone());
                self.state.save_publish(&record)?;
                (ro, Vec::new())
            }
            Access::Block => (device.path().to_path_buf(), Vec::new()),
            Access::Mount { mount_flags, .. } => {
                (stage.staging_target_path.clone(), mount_flags.clone())
            }
        };
        if let Err(err) = mounts::bind(&source, &req.target_path, read_only, &flags).await {
            if let Some(ro) = &record.ro_device {
                attach::detach_read_only_loop(device.path(), ro).await?;
            }
            self.state.remove_publish(id, &req.target_path)?;
            return Err(err);
        }
        Ok(())
    }

    /// Unpublishes `volume_id` from `target` and removes the target (nothing
    /// there is success).
    pub(super) async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let Some(record) = self.state.load_publish(volume_id, target)? else {
            if mounts::mount_at(target)?.is_some() {
                // Something is mounted there, but not this volume by this node.
                return Err(NodeError::NotFound(format!(
                    "volume {volume_id} is not published at {}",
                    target.display()
                )));
            }
            return Ok(());
        };
        mounts::unmount_all(target).await?;
        remove_target(target)?;
        if let Some(ro) = &record.ro_device {
            let stage = self.state.load_stage(volume_id)?;
            if let Some(device) = stage.as_ref().and_then(|s| s.device.as_ref()) {
                attach::detach_read_only_loop(device.path(), ro).await?;
            }
        }
        self.state.remove_publish(volume_id, target)
    }
}

fn kind(access: &Access) -> &'static str {
    match access {
        Access::Block => "block",
        Access::Mount { .. } => "mount",
    }
}

/// Creates the target: a directory for a filesystem, a file for a block device
/// (its parent is the CO's).
fn make_target(target: &Path, block: bool) -> Result<()> {
    let what = || NodeError::io(format!("create {}", target.display()));
    if block {
        if !target.exists() {
            std::fs::File::create(target).map_err(what())?;
        }
        Ok(())
    } else {
        std::fs::create_dir_all(target).map_err(what())
    }
}

/// Removes the target the node made (a directory, or a file); missing is fine.
fn remove_target(target: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(target),
        Ok(_) => std::fs::remove_file(target),
    };
    result.map_err(NodeError::io(format!("remove {}", target.display())))
}
