//! Node requests into what the node works with: required fields (INVALID_ARGUMENT
//! naming the field), paths, the volume capability, the publish context.

use std::{collections::BTreeMap, path::PathBuf};

use super::{
    error::{NodeError, Result},
    mounts::FS_TYPES,
    state::{Access, Capability, Connection},
};
use crate::proto::VolumeCapability;
use crate::proto::volume_capability::{AccessType, access_mode::Mode};

/// `value`, or [`NodeError::Missing`] naming `field` when it is empty.
pub fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(NodeError::Missing(field))
    } else {
        Ok(value)
    }
}

/// A required absolute path.
pub fn path(field: &'static str, value: &str) -> Result<PathBuf> {
    let value = required(field, value)?;
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(NodeError::invalid(
            field,
            format!("{value:?} is not an absolute path"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(NodeError::invalid(
            field,
            format!("{value:?} contains `..`"),
        ));
    }
    Ok(path)
}

/// The required `volume_capability`, checked: an access type, a known access mode,
/// a filesystem the node can make, and no filesystem written from several nodes.
pub fn capability(cap: Option<&VolumeCapability>) -> Result<Capability> {
    let cap = cap.ok_or(NodeError::Missing("volume_capability"))?;
    let mode = cap
        .access_mode
        .as_ref()
        .map(|m| m.mode)
        .ok_or(NodeError::Missing("volume_capability.access_mode"))?;
    match Mode::try_from(mode) {
        Ok(Mode::Unknown) => return Err(NodeError::Missing("volume_capability.access_mode.mode")),
        Ok(_) => {}
        Err(_) => {
            return Err(NodeError::invalid(
                "volume_capability.access_mode.mode",
                format!("unknown access mode {mode}"),
            ));
        }
    }
    let access = match cap.access_type.as_ref() {
        None => return Err(NodeError::Missing("volume_capability.access_type")),
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(mount)) => {
            if !mount.fs_type.is_empty() && !FS_TYPES.contains(&mount.fs_type.as_str()) {
                return Err(NodeError::Precondition(format!(
                    "volume_capability.mount.fs_type {:?} is not one this node makes ({})",
                    mount.fs_type,
                    FS_TYPES.join(", ")
                )));
            }
            if let Some(bad) = mount
                .mount_flags
                .iter()
                .find(|f| f.is_empty() || f.contains(char::is_whitespace))
            {
                return Err(NodeError::invalid(
                    "volume_capability.mount.mount_flags",
                    format!("{bad:?} is not a mount option"),
                ));
            }
            if matches!(
                Mode::try_from(mode),
                Ok(Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter)
            ) {
                return Err(NodeError::Precondition(
                    "a filesystem volume cannot be written from several nodes \
                     (volume_capability.access_mode); use block access"
                        .into(),
                ));
            }
            Access::Mount {
                fs_type: mount.fs_type.clone(),
                mount_flags: mount.mount_flags.clone(),
            }
        }
    };
    Ok(Capability {
        access,
        access_mode: mode,
    })
}

/// Whether the access mode only reads.
pub fn read_only_mode(mode: i32) -> bool {
    matches!(
        Mode::try_from(mode),
        Ok(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    )
}

/// Whether the access mode allows several targets on one node (the spec's
/// MULTI_NODE_... and SINGLE_NODE_MULTI_WRITER rows).
pub fn many_targets(mode: i32) -> bool {
    matches!(
        Mode::try_from(mode),
        Ok(Mode::MultiNodeReaderOnly
            | Mode::MultiNodeSingleWriter
            | Mode::MultiNodeMultiWriter
            | Mode::SingleNodeMultiWriter)
    )
}

/// The export from ControllerPublishVolume's publish context (keys in the
/// contract: `host`, `port`, `export_name` needed; `read_only` honoured).
pub fn connection(ctx: &BTreeMap<String, String>) -> Result<Connection> {
    let get = |key: &'static str, field: &'static str| -> Result<String> {
        match ctx.get(key) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(NodeError::Missing(field)),
        }
    };
    let host = get("host", "publish_context.host")?;
    let port = get("port", "publish_context.port")?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            NodeError::invalid(
                "publish_context.port",
                format!("{port:?} is not a TCP port"),
            )
        })?;
    let export_name = get("export_name", "publish_context.export_name")?;
    if let Some(protocol) = ctx.get("protocol").filter(|p| !p.is_empty() && *p != "nbd") {
        return Err(NodeError::invalid(
            "publish_context.protocol",
            format!("{protocol:?}: this node speaks nbd only"),
        ));
    }
    let read_only = match ctx.get("read_only").map(String::as_str) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(NodeError::invalid(
                "publish_context.read_only",
                format!("{other:?} is neither true nor false"),
            ));
        }
    };
    Ok(Connection {
        host,
        port,
        export_name,
        read_only,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(access: Option<AccessType>, mode: Option<i32>) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: mode.map(|mode| AccessMode { mode }),
        }
    }

    fn mount(fs: &str) -> Option<AccessType> {
        Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        }))
    }

    fn field_of(err: NodeError) -> String {
        match err {
            NodeError::Missing(f) => f.to_owned(),
            NodeError::Invalid { field, .. } => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        assert_eq!(field_of(capability(None).unwrap_err()), "volume_capability");
        let c = cap(mount(""), None);
        assert_eq!(
            field_of(capability(Some(&c)).unwrap_err()),
            "volume_capability.access_mode"
        );
        let c = cap(None, Some(1));
        assert_eq!(
            field_of(capability(Some(&c)).unwrap_err()),
            "volume_capability.access_type"
        );
        let c = cap(mount(""), Some(0));
        assert_eq!(
            field_of(capability(Some(&c)).unwrap_err()),
            "volume_capability.access_mode.mode"
        );
        let c = cap(mount("zfs"), Some(1));
        assert!(matches!(
            capability(Some(&c)),
            Err(NodeError::Precondition(_))
        ));
        let c = cap(mount("ext4"), Some(Mode::MultiNodeMultiWriter as i32));
        assert!(matches!(
            capability(Some(&c)),
            Err(NodeError::Precondition(_))
        ));
        let c = cap(
            Some(AccessType::Block(BlockVolume {})),
            Some(Mode::MultiNodeMultiWriter as i32),
        );
        assert_eq!(capability(Some(&c)).unwrap().access, Access::Block);
    }

    #[test]
    fn the_publish_context_gives_the_export() {
        let mut ctx: BTreeMap<String, String> = [
            ("protocol", "nbd"),
            ("host", "10.1.2.3"),
            ("port", "10809"),
            ("export_name", "volume-1"),
            ("read_only", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let conn = connection(&ctx).unwrap();
        assert_eq!((conn.port, conn.read_only), (10809, true));
        ctx.insert("port".into(), "x".into());
        assert_eq!(
            field_of(connection(&ctx).unwrap_err()),
            "publish_context.port"
        );
        ctx.remove("host");
        assert_eq!(
            field_of(connection(&ctx).unwrap_err()),
            "publish_context.host"
        );
        assert_eq!(
            field_of(connection(&BTreeMap::new()).unwrap_err()),
            "publish_context.host"
        );
    }

    #[test]
    fn paths_must_be_absolute() {
        assert_eq!(
            field_of(path("target_path", "").unwrap_err()),
            "target_path"
        );
        assert!(path("target_path", "rel/x").is_err());
        assert!(path("target_path", "/a/../b").is_err());
        assert_eq!(path("target_path", "/a/b").unwrap(), PathBuf::from("/a/b"));
    }
}
