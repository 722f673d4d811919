//! CreateVolume, DeleteVolume, ControllerExpandVolume, ControllerGetVolume,
//! ListVolumes: CSI volumes are Scoria volumes of the plugin's project, the
//! CSI volume id the Scoria id. See [`super::names`] for how a CO name finds
//! its volume again.

use std::collections::BTreeMap;

use scoria_cli::connect::Api;
use scoria_proto::v1::{self as pb, VolumeStatus};
use tonic::Code;

use super::{
    Controller, capability, capacity, names, paging,
    wait::{self, Step},
};
use crate::{
    TOPOLOGY_ZONE_KEY,
    error::{Error, Result},
    proto::{
        ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, CreateVolumeRequest,
        CreateVolumeResponse, DeleteVolumeRequest, Topology, TopologyRequirement, Volume,
        VolumeContentSource, volume_capability::AccessType, volume_content_source,
    },
};

/// The StorageClass parameter naming the Scoria volume type.
pub const TYPE_PARAMETER: &str = "type";
/// The StorageClass parameter naming the availability zone.
pub const ZONE_PARAMETER: &str = "zone";
/// Parameters the sidecars add (`--extra-create-metadata`), kept as metadata.
const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";
/// What a volume's error_message holds when the scheduler found no backend for it.
const NO_BACKEND: &str = "No valid backend";
/// How many request ids a name may go through (one per deleted predecessor).
const ATTEMPTS: u32 = 8;

/// Refuses a parameter the plugin does not know (a typo would otherwise be ignored).
pub fn known_parameter(key: &str) -> Result<()> {
    if key == TYPE_PARAMETER || key == ZONE_PARAMETER || key.starts_with(SIDECAR_PREFIX) {
        Ok(())
    } else {
        Err(Error::invalid(
            "parameters",
            format!("unknown parameter {key:?} (known: {TYPE_PARAMETER}, {ZONE_PARAMETER})"),
        ))
    }
}

/// The Scoria volume `id` of the caller's project; NOT_FOUND when there is
/// none (an id that is not a UUID included).
pub async fn get(api: &Api, id: &str) -> Result<pb::Volume> {
    let not_found = || Error::NotFound {
        kind: "volume",
        id: id.to_owned(),
    };
    let scoria_id = names::scoria_id(id).ok_or_else(not_found)?;
    let request = pb::GetVolumeRequest { id: scoria_id };
    match api.volumes().get_volume(request).await {
        Ok(v) => Ok(v.into_inner()),
        Err(s) if s.code() == Code::NotFound => Err(not_found()),
        Err(s) => Err(Error::scoria(format!("GetVolume {id}"))(s)),
    }
}

/// The CSI view of a Scoria volume.
pub fn to_csi(volume: &pb::Volume) -> Volume {
    let content_source = if !volume.snapshot_id.is_empty() {
        Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: volume.snapshot_id.clone(),
            },
        ))
    } else if !volume.source_volume_id.is_empty() {
        Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: volume.source_volume_id.clone(),
            },
        ))
    } else {
        None
    };
    Volume {
        capacity_bytes: capacity::bytes(volume.size_gib),
        volume_id: volume.id.clone(),
        volume_context: BTreeMap::from([
            ("volume_type".to_owned(), volume.volume_type.clone()),
            (
                "availability_zone".to_owned(),
                volume.availability_zone.clone(),
            ),
        ]),
        content_source: content_source.map(|t| VolumeContentSource { r#type: Some(t) }),
        accessible_topology: zone_topology(&volume.availability_zone),
    }
}

/// The topology of a volume in `zone` (none when it has no zone).
fn zone_topology(zone: &str) -> Vec<Topology> {
    if zone.is_empty() {
        return Vec::new();
    }
    vec![Topology {
        segments: BTreeMap::from([(TOPOLOGY_ZONE_KEY.to_owned(), zone.to_owned())]),
    }]
}

/// The zone a new volume goes to: the `zone` parameter, else the first zone
/// of the preferred topologies, else of the requisite ones; none when
/// nothing names one (Scoria picks). A parameter outside the requisite
/// zones is refused.
fn zone(
    parameters: &BTreeMap<String, String>,
    topology: Option<&TopologyRequirement>,
) -> Result<Option<String>> {
    let zones = |list: &[Topology]| -> Vec<String> {
        list.iter()
            .filter_map(|t| t.segments.get(TOPOLOGY_ZONE_KEY).cloned())
            .collect()
    };
    let requisite = topology.map(|t| zones(&t.requisite)).unwrap_or_default();
    let preferred = topology.map(|t| zones(&t.preferred)).unwrap_or_default();
    if let Some(zone) = parameters.get(ZONE_PARAMETER).filter(|z| !z.is_empty()) {
        if !requisite.is_empty() && !requisite.contains(zone) {
            return Err(Error::Unsupported(format!(
                "parameters: zone {zone:?} is not among accessibility_requirements.requisite {requisite:?}"
            )));
        }
        return Ok(Some(zone.clone()));
    }
    Ok(preferred.into_iter().chain(requisite).next())
}

/// Where a new volume's bytes come from: the Scoria source and its size.
struct Source {
    oneof: pb::create_volume_request::Source,
    size_gib: u64,
}

async fn source(api: &Api, content: Option<&VolumeContentSource>) -> Result<Option<Source>> {
    let Some(content) = content else {
        return Ok(None);
    };
    match &content.r#type {
        None => Err(Error::invalid(
            "volume_content_source",
            "snapshot or volume is required",
        )),
        Some(volume_content_source::Type::Snapshot(s)) => {
            if s.snapshot_id.is_empty() {
                return Err(Error::Missing("volume_content_source.snapshot.snapshot_id"));
            }
            let snapshot = super::snapshots::get(api, &s.snapshot_id).await?;
            Ok(Some(Source {
                oneof: pb::create_volume_request::Source::SnapshotId(snapshot.id),
                size_gib: snapshot.size_gib,
            }))
        }
        Some(volume_content_source::Type::Volume(v)) => {
            if v.volume_id.is_empty() {
                return Err(Error::Missing("volume_content_source.volume.volume_id"));
            }
            let volume = get(api, &v.volume_id).await?;
            Ok(Some(Source {
                oneof: pb::create_volume_request::Source::SourceVolumeId(volume.id),
                size_gib: volume.size_gib,
            }))
        }
    }
}

/// CreateVolume.
pub async fn create(
    ctl: &Controller,
    request: CreateVolumeRequest,
) -> Result<CreateVolumeResponse> {
    let name = request.name.clone();
    if name.is_empty() {
        return Err(Error::Missing("name"));
    }
    if let Some(c) = names::banned_char(&name) {
        return Err(Error::invalid(
            "name",
            format!("must not hold the control character {c:?}"),
        ));
    }
    let needs = capability::check_all("volume_capabilities", &request.volume_capabilities)?;
    for key in request.parameters.keys() {
        known_parameter(key)?;
    }
    let api = ctl.api().await?;
    let volume_type = request
        .parameters
        .get(TYPE_PARAMETER)
        .cloned()
        .unwrap_or_default();
    let zone = zone(
        &request.parameters,
        request.accessibility_requirements.as_ref(),
    )?;
    let source = source(api, request.volume_content_source.as_ref()).await?;
    let floor = source.as_ref().map_or(0, |s| s.size_gib);
    let size_gib = capacity::size_gib(request.capacity_range.as_ref(), floor)?;
    capability::require_fit(api, needs, &volume_type).await?;

    let _held = ctl.locks.lock(format!("name:{name}")).await;
    let scoria_name = names::scoria_name(&name);
    let volume = match find(api, &scoria_name).await? {
        Some(existing) => {
            compatible(
                &existing,
                &request,
                size_gib,
                source.as_ref(),
                &volume_type,
                zone.as_deref(),
            )?;
            existing
        }
        None => {
            let mut metadata =
                BTreeMap::from([(names::CREATED_BY_KEY.to_owned(), "scoria-csi".to_owned())]);
            if names::fits(&name) {
                metadata.insert(names::NAME_KEY.to_owned(), name.clone());
            }
            for (k, v) in &request.parameters {
                if k.starts_with(SIDECAR_PREFIX) && names::fits(k) && names::fits(v) {
                    metadata.insert(k.clone(), v.clone());
                }
            }
            let create = pb::CreateVolumeRequest {
                name: scoria_name.clone(),
                description: "made by scoria-csi".to_owned(),
                size_gib,
                volume_type: volume_type.clone(),
                availability_zone: zone.clone().unwrap_or_default(),
                metadata,
                source: source.as_ref().map(|s| s.oneof.clone()),
                request_id: String::new(),
            };
            create_fresh(api, &name, create).await?
        }
    };
    let volume = settle_created(api, volume).await?;
    Ok(CreateVolumeResponse {
        volume: Some(to_csi(&volume)),
    })
}

/// The plugin's volume of Scoria name `scoria_name`, if any (one being deleted does not count).
async fn find(api: &Api, scoria_name: &str) -> Result<Option<pb::Volume>> {
    let mut page_token = String::new();
    loop {
        let request = pb::ListVolumesRequest {
            page_size: paging::MAX_PAGE,
            page_token: page_token.clone(),
            name: scoria_name.to_owned(),
            ..Default::default()
        };
        let page = api
            .volumes()
            .list_volumes(request)
            .await
            .map_err(Error::scoria(format!("ListVolumes name={scoria_name:?}")))?
            .into_inner();
        let found = page.volumes.into_iter().find(|v| {
            v.name == scoria_name
                && v.metadata.contains_key(names::CREATED_BY_KEY)
                && !matches!(
                    v.status(),
                    VolumeStatus::Deleting | VolumeStatus::ErrorDeleting
                )
        });
        if found.is_some() || page.next_page_token.is_empty() {
            return Ok(found);
        }
        page_token = page.next_page_token;
    }
}

/// Refuses a volume of the same name made with other arguments (ALREADY_EXISTS).
fn compatible(
    existing: &pb::Volume,
    request: &CreateVolumeRequest,
    size_gib: u64,
    source: Option<&Source>,
    volume_type: &str,
    zone: Option<&str>,
) -> Result<()> {
    let conflict = |what: String| {
        Err(Error::AlreadyExists(format!(
            "volume {} named {:?} exists with {what}",
            existing.id, request.name
        )))
    };
    let have = capacity::bytes(existing.size_gib);
    let (required, limit) = request
        .capacity_range
        .as_ref()
        .map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if have < required
        || (limit > 0 && have > limit)
        || (required == 0 && limit == 0 && existing.size_gib != size_gib)
    {
        return conflict(format!(
            "{} GiB, outside the capacity range asked for",
            existing.size_gib
        ));
    }
    let wanted_source = source.map(|s| s.oneof.clone());
    let have_source = if !existing.snapshot_id.is_empty() {
        Some(pb::create_volume_request::Source::SnapshotId(
            existing.snapshot_id.clone(),
        ))
    } else if !existing.source_volume_id.is_empty() {
        Some(pb::create_volume_request::Source::SourceVolumeId(
            existing.source_volume_id.clone(),
        ))
    } else {
        None
    };
    if wanted_source != have_source {
        return conflict(format!("another content source ({have_source:?})"));
    }
    if !volume_type.is_empty() && existing.volume_type != volume_type {
        return conflict(format!("volume type {:?}", existing.volume_type));
    }
    if let Some(zone) = zone
        && existing.availability_zone != zone
    {
        return conflict(format!(
            "availability zone {:?}",
            existing.availability_zone
        ));
    }
    Ok(())
}

/// Creates the volume of CO name `name`, with the first request id no
/// earlier (since deleted) volume of that name used.
async fn create_fresh(
    api: &Api,
    name: &str,
    mut create: pb::CreateVolumeRequest,
) -> Result<pb::Volume> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        create.request_id = names::request_id(name, attempt);
        match api.volumes().create_volume(create.clone()).await {
            Ok(v) => {
                let volume = v.into_inner();
                tracing::info!(volume_id = %volume.id, name, size_gib = create.size_gib, "volume created");
                return Ok(volume);
            }
            // The key names a volume deleted since (the same request: NOT_FOUND;
            // another: ALREADY_EXISTS): nothing of this name exists (we looked), next key.
            Err(s) if matches!(s.code(), Code::NotFound | Code::AlreadyExists) => last = Some(s),
            Err(s) => return Err(Error::scoria_sized(format!("CreateVolume {name:?}"))(s)),
        }
    }
    Err(Error::scoria(format!("CreateVolume {name:?}"))(
        last.unwrap_or_else(|| tonic::Status::internal("no attempt made")),
    ))
}

/// Waits until a new volume is available. One that ended in error is deleted
/// (a retry of the CreateVolume makes a new one) and the error returned.
async fn settle_created(api: &Api, volume: pb::Volume) -> Result<pb::Volume> {
    let settled = wait::until::<pb::Volume, pb::Volume>(api, &volume.id, |seen| match seen {
        None => Step::Failed(Error::Internal(format!(
            "volume {} vanished while being created",
            volume.id
        ))),
        Some(v) => match v.status() {
            VolumeStatus::Creating | VolumeStatus::Unspecified => Step::Pending,
            // Available, or in error (handled below), or used already.
            _ => Step::Done(v.clone()),
        },
    })
    .await?;
    if settled.status() == VolumeStatus::Error {
        let request = pb::DeleteVolumeRequest {
            id: settled.id.clone(),
        };
        if let Err(e) = api.volumes().delete_volume(request).await {
            tracing::warn!(volume_id = %settled.id, error = %e, "cannot delete a volume that failed to create");
        }
        let why = format!(
            "volume {} failed to create: {} (deleted; a retry makes a new one)",
            settled.id, settled.error_message
        );
        // The scheduler's words for "no backend fits" (zone, capacity, type):
        // Scoria's volume has no machine-readable reason for its error.
        return Err(if settled.error_message.contains(NO_BACKEND) {
            Error::Exhausted(why)
        } else {
            Error::Internal(why)
        });
    }
    Ok(settled)
}

/// DeleteVolume: gone when it returns; an unknown id is success.
pub async fn delete(ctl: &Controller, request: DeleteVolumeRequest) -> Result<()> {
    if request.volume_id.is_empty() {
        return Err(Error::Missing("volume_id"));
    }
    let Some(id) = names::scoria_id(&request.volume_id) else {
        return Ok(());
    };
    let api = ctl.api().await?;
    let _held = ctl.locks.lock(format!("volume:{id}")).await;
    let volume = match get(api, &id).await {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if volume.status() != VolumeStatus::Deleting {
        match api
            .volumes()
            .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
            .await
        {
            Ok(_) => tracing::info!(volume_id = %id, "volume deleting"),
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => return Err(Error::scoria(format!("DeleteVolume {id}"))(s)),
        }
    }
    wait::gone::<pb::Volume>(api, &id, |v| {
        (v.status() == VolumeStatus::ErrorDeleting).then(|| {
            Error::Internal(format!(
                "volume {} failed to delete: {}",
                v.id, v.error_message
            ))
        })
    })
    .await
}

/// ControllerExpandVolume: grows an unpublished volume (Scoria extends
/// available volumes only: OFFLINE expansion) to the range's size.
pub async fn expand(
    ctl: &Controller,
    request: ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse> {
    if request.volume_id.is_empty() {
        return Err(Error::Missing("volume_id"));
    }
    let range = request
        .capacity_range
        .as_ref()
        .ok_or(Error::Missing("capacity_range"))?;
    if let Some(c) = &request.volume_capability {
        capability::check("volume_capability", c)?;
    }
    let node_expansion_required = !matches!(
        request
            .volume_capability
            .as_ref()
            .and_then(|c| c.access_type.as_ref()),
        Some(AccessType::Block(_))
    );
    let new_gib = capacity::size_gib(Some(range), 0)?;
    let api = ctl.api().await?;
    let volume = get(api, &request.volume_id).await?;
    let _held = ctl.locks.lock(format!("volume:{}", volume.id)).await;
    let answer = |gib: u64| ControllerExpandVolumeResponse {
        capacity_bytes: capacity::bytes(gib),
        node_expansion_required,
    };
    if volume.size_gib >= new_gib && volume.status() != VolumeStatus::Extending {
        return Ok(answer(volume.size_gib));
    }
    if volume.status() != VolumeStatus::Extending {
        let extend = pb::ExtendVolumeRequest {
            id: volume.id.clone(),
            new_size_gib: new_gib,
        };
        api.volumes()
            .extend_volume(extend)
            .await
            .map_err(Error::scoria_sized(format!(
                "ExtendVolume {} to {new_gib} GiB",
                volume.id
            )))?;
    }
    let gib = wait::until::<pb::Volume, u64>(api, &volume.id, |seen| match seen {
        None => Step::Failed(Error::NotFound {
            kind: "volume",
            id: volume.id.clone(),
        }),
        Some(v) => match v.status() {
            VolumeStatus::Extending => Step::Pending,
            VolumeStatus::ErrorExtending => Step::Failed(Error::Internal(format!(
                "volume {} failed to extend: {}",
                v.id, v.error_message
            ))),
            _ if v.size_gib >= new_gib => Step::Done(v.size_gib),
            _ => Step::Failed(Error::Internal(format!(
                "volume {} is {} GiB after extending to {new_gib} GiB",
                v.id, v.size_gib
            ))),
        },
    })
    .await?;
    Ok(answer(gib))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(zone: &str) -> Topology {
        Topology {
            segments: BTreeMap::from([(TOPOLOGY_ZONE_KEY.to_owned(), zone.to_owned())]),
        }
    }

    #[test]
    fn the_zone_comes_from_the_parameter_then_preferred_then_requisite() {
        let none = BTreeMap::new();
        let req = TopologyRequirement {
            requisite: vec![topology("a"), topology("b")],
            preferred: vec![topology("b")],
        };
        assert_eq!(zone(&none, Some(&req)).ok().flatten().as_deref(), Some("b"));
        let only_requisite = TopologyRequirement {
            requisite: vec![topology("a")],
            preferred: vec![],
        };
        assert_eq!(
            zone(&none, Some(&only_requisite)).ok().flatten().as_deref(),
            Some("a")
        );
        assert_eq!(zone(&none, None).ok().flatten(), None);
        let param = BTreeMap::from([("zone".to_owned(), "c".to_owned())]);
        assert!(zone(&param, Some(&req)).is_err());
        assert_eq!(zone(&param, None).ok().flatten().as_deref(), Some("c"));
    }
}
