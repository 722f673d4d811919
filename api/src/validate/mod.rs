//! Field checks of the API's requests. Each check names the field it refuses, as
//! the proto spells it, so the client gets a `FieldViolation` it can act on.
//! Nothing here touches the database or the bus; the rules of free text are in
//! [`text`].

pub mod text;

use std::collections::BTreeMap;

use scoria_common::{
    db::VolumeChanges,
    model::{AttachMode, Connector, SnapshotStatus, VolumeStatus},
    translation::{attach_mode_from_proto, snapshot_status_from_proto, volume_status_from_proto},
};
use scoria_proto::v1 as pb;

use crate::error::{ApiError, ApiResult};

pub use self::text::{MAX_DESCRIPTION_CHARS, MAX_TEXT_CHARS};
/// The most metadata entries a volume may carry.
pub const MAX_METADATA_ENTRIES: usize = 128;
/// The page size of `ListVolumes` when the client sets none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page size of `ListVolumes`.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The fields `UpdateVolume` can change, as `update_mask` paths.
pub const UPDATABLE_FIELDS: [&str; 3] = ["name", "description", "metadata"];

/// Where a new volume's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A snapshot, by id.
    Snapshot(String),
    /// Another volume, by id.
    Volume(String),
}

/// What a valid `CreateVolumeRequest` asks for, beyond its plain fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCreate {
    /// The source, if any (ids in canonical form).
    pub source: Option<VolumeSource>,
    /// The idempotency key, if any.
    pub request_id: Option<String>,
}

/// Checks a `CreateVolumeRequest`; `max_size_gib` is the configured limit. With
/// a source, `size_gib` may be 0 (the source's size).
pub fn create_volume(req: &pb::CreateVolumeRequest, max_size_gib: u64) -> ApiResult<ValidCreate> {
    let sourced = req.source.as_ref().is_some_and(|source| match source {
        pb::create_volume_request::Source::SnapshotId(id)
        | pb::create_volume_request::Source::SourceVolumeId(id) => !id.is_empty(),
    });
    if (req.size_gib == 0 && !sourced) || req.size_gib > max_size_gib {
        return Err(ApiError::invalid(
            "size_gib",
            format!(
                "must be between 1 and {max_size_gib} GiB, got {}",
                req.size_gib
            ),
        ));
    }
    text::line("name", &req.name)?;
    text::description("description", &req.description)?;
    text::line("volume_type", &req.volume_type)?;
    text::line("availability_zone", &req.availability_zone)?;
    metadata(&req.metadata)?;
    text::line("request_id", &req.request_id)?;
    use pb::create_volume_request::Source;
    let source = match &req.source {
        Some(Source::SnapshotId(id)) if !id.is_empty() => {
            Some(VolumeSource::Snapshot(uuid("snapshot_id", id)?))
        }
        Some(Source::SourceVolumeId(id)) if !id.is_empty() => {
            Some(VolumeSource::Volume(uuid("source_volume_id", id)?))
        }
        _ => None,
    };
    let request_id = (!req.request_id.is_empty()).then(|| req.request_id.clone());
    Ok(ValidCreate { source, request_id })
}

/// Checks an `UpdateVolumeRequest`; returns the volume id and the changes it asks for.
pub fn update_volume(req: &pb::UpdateVolumeRequest) -> ApiResult<(String, VolumeChanges)> {
    let id = uuid("id", &req.id)?;
    let fields = masked_fields(
        req.update_mask.as_ref(),
        &UPDATABLE_FIELDS,
        |field| match field {
            "name" => !req.name.is_empty(),
            "description" => !req.description.is_empty(),
            _ => !req.metadata.is_empty(),
        },
    )?;
    let mut changes = VolumeChanges::default();
    for field in fields {
        match field {
            "name" => changes.name = Some(req.name.clone()),
            "description" => changes.description = Some(req.description.clone()),
            _ => changes.metadata = Some(req.metadata.clone()),
        }
    }
    if let Some(name) = &changes.name {
        text::line("name", name)?;
    }
    if let Some(description) = &changes.description {
        text::description("description", description)?;
    }
    if let Some(metadata_) = &changes.metadata {
        metadata(metadata_)?;
    }
    Ok((id, changes))
}

/// The fields of `updatable` an update changes (AIP-134): the `update_mask`'s
/// paths, each of which must be one of `updatable`; with no (or an empty) mask,
/// every field that `is_set` says has a non-default value. Shared by every Update
/// RPC, so they read their masks alike.
pub fn masked_fields<'a>(
    mask: Option<&prost_types::FieldMask>,
    updatable: &[&'a str],
    is_set: impl Fn(&str) -> bool,
) -> ApiResult<Vec<&'a str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(updatable.iter().copied().filter(|f| is_set(f)).collect());
    }
    paths
        .iter()
        .map(|path| {
            updatable
                .iter()
                .copied()
                .find(|f| f == path)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "update_mask",
                        format!(
                            "unknown path {}: use any of {}",
                            shown(path),
                            updatable.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// The page size of a list request: 0 means [`DEFAULT_PAGE_SIZE`]; above
/// [`MAX_PAGE_SIZE`] is clamped to it (AIP-158); negative is refused.
pub fn page_size(page_size: i32) -> ApiResult<u32> {
    match u32::try_from(page_size) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
        Err(_) => Err(ApiError::invalid(
            "page_size",
            format!("must not be negative, got {page_size}"),
        )),
    }
}

/// The status filter of a list request: `None` for unspecified.
pub fn status_filter(status: i32) -> ApiResult<Option<VolumeStatus>> {
    pb::VolumeStatus::try_from(status)
        .map(volume_status_from_proto)
        .map_err(|_| ApiError::invalid("status", format!("unknown volume status {status}")))
}

/// The status filter of a snapshot list request: `None` for unspecified.
pub fn snapshot_status_filter(status: i32) -> ApiResult<Option<SnapshotStatus>> {
    pb::SnapshotStatus::try_from(status)
        .map(snapshot_status_from_proto)
        .map_err(|_| ApiError::invalid("status", format!("unknown snapshot status {status}")))
}

/// The status filter of a backup list request: `None` for unspecified.
pub fn backup_status_filter(status: i32) -> ApiResult<Option<scoria_common::model::BackupStatus>> {
    pb::BackupStatus::try_from(status)
        .map(scoria_common::translation::backup_status_from_proto)
        .map_err(|_| ApiError::invalid("status", format!("unknown backup status {status}")))
}

/// A UUID, returned in canonical (lowercase, hyphenated) form.
pub fn uuid(field: &'static str, value: &str) -> ApiResult<String> {
    uuid::Uuid::try_parse(value)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| ApiError::invalid(field, format!("must be a UUID, got {}", shown(value))))
}

/// `value` quoted and escaped for a message, cut after 64 characters (a
/// refusal never echoes a megabyte back).
pub fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Volume metadata: at most [`MAX_METADATA_ENTRIES`] entries, keys of 1 to
/// [`MAX_TEXT_CHARS`] characters, values of at most [`MAX_TEXT_CHARS`], no
/// control characters (see [`text::entries`]).
pub fn metadata(metadata: &BTreeMap<String, String>) -> ApiResult<()> {
    text::entries("metadata", metadata, MAX_METADATA_ENTRIES)
}

/// The most connector properties an attachment may carry.
pub const MAX_CONNECTOR_PROPERTIES: usize = 50;

/// What a valid `CreateAttachmentRequest` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAttach {
    /// The volume, in canonical form.
    pub volume_id: String,
    /// The attaching host.
    pub connector: Connector,
    /// Read-write or read-only.
    pub mode: AttachMode,
}

/// Checks a `CreateAttachmentRequest`: a volume UUID, a connector with a `host`
/// (text fields of at most [`MAX_TEXT_CHARS`], at most
/// [`MAX_CONNECTOR_PROPERTIES`] properties), a known mode.
pub fn create_attachment(req: &pb::CreateAttachmentRequest) -> ApiResult<ValidAttach> {
    let volume_id = uuid("volume_id", &req.volume_id)?;
    let Some(connector) = &req.connector else {
        return Err(ApiError::invalid("connector", "is required"));
    };
    text::required_line("connector.host", &connector.host)?;
    text::line("connector.ip", &connector.ip)?;
    text::line("connector.initiator", &connector.initiator)?;
    text::entries(
        "connector.properties",
        &connector.properties,
        MAX_CONNECTOR_PROPERTIES,
    )?;
    text::line("instance_id", &req.instance_id)?;
    let mode = pb::AttachMode::try_from(req.mode)
        .map(attach_mode_from_proto)
        .map_err(|_| ApiError::invalid("mode", format!("unknown attach mode {}", req.mode)))?;
    Ok(ValidAttach {
        volume_id,
        connector: Connector::from(connector),
        mode,
    })
}

#[cfg(test)]
mod tests;
