//! ControllerGetVolume and ListVolumes: volumes as they are, with the nodes
//! they are published to and their condition.

use scoria_proto::v1::{self as pb, VolumeStatus};

use super::{Controller, paging, publish, volumes};
use crate::{
    error::{Error, Result},
    proto::{
        ControllerGetVolumeRequest, ControllerGetVolumeResponse, ListVolumesRequest,
        ListVolumesResponse, VolumeCondition, controller_get_volume_response,
        list_volumes_response,
    },
};

/// Whether the volume is unhealthy, and why.
pub fn condition(volume: &pb::Volume) -> VolumeCondition {
    let abnormal = matches!(
        volume.status(),
        VolumeStatus::Error
            | VolumeStatus::ErrorDeleting
            | VolumeStatus::ErrorExtending
            | VolumeStatus::ErrorManaging
    );
    let message = if abnormal {
        format!(
            "volume is {}: {}",
            status_name(volume),
            volume.error_message
        )
    } else {
        format!("volume is {}", status_name(volume))
    };
    VolumeCondition { abnormal, message }
}

fn status_name(volume: &pb::Volume) -> String {
    volume
        .status()
        .as_str_name()
        .trim_start_matches("VOLUME_STATUS_")
        .to_ascii_lowercase()
}

/// ControllerGetVolume.
pub async fn controller_get(
    ctl: &Controller,
    request: ControllerGetVolumeRequest,
) -> Result<ControllerGetVolumeResponse> {
    if request.volume_id.is_empty() {
        return Err(Error::Missing("volume_id"));
    }
    let api = ctl.api().await?;
    let volume = volumes::get(api, &request.volume_id).await?;
    let published_node_ids = publish::nodes_of(api, &volume.id).await?;
    Ok(ControllerGetVolumeResponse {
        volume: Some(volumes::to_csi(&volume)),
        status: Some(controller_get_volume_response::VolumeStatus {
            published_node_ids,
            volume_condition: Some(condition(&volume)),
        }),
    })
}

/// ListVolumes: a page of the project's volumes, each with the nodes it is
/// published to and its condition.
pub async fn list(ctl: &Controller, request: ListVolumesRequest) -> Result<ListVolumesResponse> {
    let page_size = paging::page_size(request.max_entries)?;
    let mut page_token = paging::unwrap(&request.starting_token)?;
    let api = ctl.api().await?;
    let mut volumes = Vec::new();
    let next = loop {
        let scoria = pb::ListVolumesRequest {
            page_size: page_size.min(paging::MAX_PAGE),
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = api
            .volumes()
            .list_volumes(scoria)
            .await
            .map_err(Error::scoria("ListVolumes"))
            .map_err(paging::refused(&request.starting_token))?
            .into_inner();
        volumes.extend(page.volumes);
        let all = request.max_entries == 0 && volumes.len() < paging::MAX_ALL;
        if page.next_page_token.is_empty() || !all {
            break page.next_page_token;
        }
        page_token = page.next_page_token;
    };
    let published = publish::nodes_of_all(api).await?;
    let entries = volumes
        .iter()
        .map(|v| list_volumes_response::Entry {
            volume: Some(volumes::to_csi(v)),
            status: Some(list_volumes_response::VolumeStatus {
                published_node_ids: published.get(&v.id).cloned().unwrap_or_default(),
                volume_condition: Some(condition(v)),
            }),
        })
        .collect();
    Ok(ListVolumesResponse {
        entries,
        next_token: paging::wrap(&next),
    })
}
