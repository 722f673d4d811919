//! NodeGetVolumeStats and NodeExpandVolume, on a path where the volume is staged
//! or published.

use std::path::Path;

use super::{
    Node, attach,
    error::{NodeError, Result},
    mounts,
    state::{Access, Phase, StageRecord},
};

/// What NodeGetVolumeStats reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Filesystem usage (`None` for a block volume or a lost mount).
    pub usage: Option<mounts::Usage>,
    /// The device's size in bytes (block volumes).
    pub device_bytes: Option<u64>,
    /// `Some(why)` when the volume is not usable as staged / published.
    pub abnormal: Option<String>,
}

impl Node {
    /// The stage record of `volume_id` when `path` is its staging path or one of
    /// its targets; NOT_FOUND otherwise.
    fn record_at(&self, volume_id: &str, path: &Path) -> Result<StageRecord> {
        let not_found = || {
            NodeError::NotFound(format!(
                "volume {volume_id} is not staged or published at {} on this node",
                path.display()
            ))
        };
        let record = self.state.load_stage(volume_id)?.ok_or_else(not_found)?;
        if record.staging_target_path == path || self.state.load_publish(volume_id, path)?.is_some()
        {
            Ok(record)
        } else {
            Err(not_found())
        }
    }

    /// Usage and condition of `volume_id` at `path`.
    pub(super) fn stats(&self, volume_id: &str, path: &Path) -> Result<Stats> {
        let record = self.record_at(volume_id, path)?;
        let files = self.state.volume(volume_id);
        let published = record.staging_target_path != path;
        let mut stats = Stats {
            usage: None,
            device_bytes: None,
            abnormal: None,
        };
        let Some(device) = record
            .device
            .as_ref()
            .filter(|_| record.phase == Phase::Staged)
        else {
            stats.abnormal = Some(format!(
                "volume {volume_id} is not fully staged (NodeStageVolume again)"
            ));
            return Ok(stats);
        };
        if !attach::alive(&files, device) {
            stats.abnormal = Some(format!(
                "the block device of volume {volume_id} ({}) is gone or its export daemon stopped",
                device.path().display()
            ));
            return Ok(stats);
        }
        let mounted = mounts::mount_at(path)?;
        match record.capability.access {
            Access::Block => {
                if published && mounted.is_none() {
                    stats.abnormal = Some(format!("{} is no longer bind-mounted", path.display()));
                }
                stats.device_bytes = Some(mounts::device_size(device.path())?);
            }
            Access::Mount { .. } => {
                let ours = mounted.as_ref().is_some_and(|m| {
                    mounts::device_number(device.path()).is_ok_and(|n| n == m.device)
                });
                if ours {
                    stats.usage = Some(mounts::usage(path)?);
                } else {
                    stats.abnormal = Some(format!(
                        "volume {volume_id} is no longer mounted at {}",
                        path.display()
                    ));
                }
            }
        }
        Ok(stats)
    }

    /// Grows the staged device and its filesystem to what the volume now is;
    /// returns the device's size. `required_bytes` more than the device has is
    /// FAILED_PRECONDITION (Scoria grows volumes only while detached: expand
    /// with ControllerExpandVolume while unpublished, then stage again).
    pub(super) async fn expand(
        &self,
        volume_id: &str,
        path: &Path,
        required_bytes: u64,
        block_asked: Option<bool>,
    ) -> Result<u64> {
        let record = self.record_at(volume_id, path)?;
        let device = record
            .device
            .as_ref()
            .filter(|_| record.phase == Phase::Staged)
            .ok_or_else(|| {
                NodeError::Precondition(format!("volume {volume_id} is not fully staged"))
            })?;
        let block = matches!(record.capability.access, Access::Block);
        if block_asked.is_some_and(|asked| asked != block) {
            return Err(NodeError::invalid(
                "volume_capability",
                format!(
                    "volume {volume_id} is staged as {}",
                    if block { "block" } else { "mount" }
                ),
            ));
        }
        attach::refresh(device).await?;
        let size = mounts::device_size(device.path())?;
        if required_bytes > size {
            return Err(NodeError::Precondition(format!(
                "volume {volume_id}'s device has {size} bytes, less than the {required_bytes} asked: \
                 a staged volume does not grow; unstage it, expand it, and stage it again"
            )));
        }
        if block {
            return Ok(size);
        }
        if record.read_only {
            return Err(NodeError::Precondition(format!(
                "volume {volume_id} is staged read-only: its filesystem cannot grow"
            )));
        }
        let fs = mounts::probe(device.path())
            .await?
            .fs_type
            .ok_or_else(|| NodeError::Internal(format!("volume {volume_id} has no filesystem")))?;
        let online = mounts::grow_fs(&fs, device.path(), &record.staging_target_path).await;
        match online {
            Ok(()) => Ok(size),
            // This kernel refuses online resizing: offline, when nothing but the
            // staging mount holds the filesystem.
            Err(err) if fs.starts_with("ext") => {
                for publish in self.state.publishes(volume_id)? {
                    if mounts::mount_at(&publish.target_path)?.is_some() {
                        tracing::warn!(error = %err, "online resize failed");
                        return Err(NodeError::Precondition(format!(
                            "this node cannot grow a mounted {fs} filesystem; volume {volume_id} \
                             is published at {}: unpublish it and expand again",
                            publish.target_path.display()
                        )));
                    }
                }
                tracing::info!(error = %err, "online resize failed; growing offline");
                let Access::Mount {
                    fs_type,
                    mount_flags,
                } = &record.capability.access
                else {
                    return Ok(size);
                };
                mounts::unmount_all(&record.staging_target_path).await?;
                super::stage::format_and_mount(
                    device.path(),
                    &record.staging_target_path,
                    fs_type,
                    mount_flags,
                    record.read_only,
                )
                .await?;
                Ok(size)
            }
            Err(err) => Err(err),
        }
    }
}
