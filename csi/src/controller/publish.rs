//! ControllerPublishVolume / ControllerUnpublishVolume: one Scoria attachment
//! per volume and node, its connector's host the CSI node id. The publish
//! context is the attachment's NBD connection info, which NodeStageVolume
//! connects to.

use std::collections::{BTreeMap, HashMap};

use scoria_cli::connect::Api;
use scoria_proto::v1::{self as pb, AttachMode, AttachmentStatus};
use tonic::Code;

use super::{
    Controller, capability, names, paging, volumes,
    wait::{self, Step},
};
use crate::{
    error::{Error, Result},
    proto::{
        ControllerPublishVolumeRequest, ControllerPublishVolumeResponse,
        ControllerUnpublishVolumeRequest, volume_capability::access_mode::Mode,
    },
};

/// The connector property naming the CSI node (the host is the node id too).
const NODE_PROPERTY: &str = "csi_node_id";

/// The publish context keys (NodeStageVolume reads them).
pub mod keys {
    /// Always `nbd`.
    pub const PROTOCOL: &str = "protocol";
    /// The export's address.
    pub const HOST: &str = "host";
    /// Its TCP port.
    pub const PORT: &str = "port";
    /// The NBD export name.
    pub const EXPORT_NAME: &str = "export_name";
    /// `nbd://host:port/export_name`.
    pub const URI: &str = "uri";
    /// `true` when the export refuses writes.
    pub const READ_ONLY: &str = "read_only";
    /// The Scoria attachment behind it.
    pub const ATTACHMENT_ID: &str = "attachment_id";
}

/// Every attachment of `volume_id` (every one of the project's when empty).
async fn attachments(api: &Api, volume_id: &str) -> Result<Vec<pb::Attachment>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListAttachmentsRequest {
            volume_id: volume_id.to_owned(),
            page_size: paging::MAX_PAGE as u32,
            page_token,
        };
        let page = api
            .attachments()
            .list_attachments(request)
            .await
            .map_err(Error::scoria(format!(
                "ListAttachments volume={volume_id:?}"
            )))?
            .into_inner();
        all.extend(page.attachments);
        if page.next_page_token.is_empty() || all.len() >= paging::MAX_ALL {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

fn node_of(attachment: &pb::Attachment) -> Option<&str> {
    attachment.connector.as_ref().map(|c| c.host.as_str())
}

/// Whether the attachment holds the volume on its node (not on its way out).
fn holds(attachment: &pb::Attachment) -> bool {
    matches!(
        attachment.status(),
        AttachmentStatus::Reserved | AttachmentStatus::Attaching | AttachmentStatus::Attached
    )
}

/// The nodes volume `volume_id` is published to.
pub async fn nodes_of(api: &Api, volume_id: &str) -> Result<Vec<String>> {
    let mut nodes: Vec<String> = attachments(api, volume_id)
        .await?
        .iter()
        .filter(|a| holds(a))
        .filter_map(|a| node_of(a).map(str::to_owned))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// The nodes each volume of the project is published to.
pub async fn nodes_of_all(api: &Api) -> Result<HashMap<String, Vec<String>>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for a in attachments(api, "").await?.iter().filter(|a| holds(a)) {
        if let Some(node) = node_of(a) {
            let nodes = map.entry(a.volume_id.clone()).or_default();
            if !nodes.iter().any(|n| n == node) {
                nodes.push(node.to_owned());
            }
        }
    }
    Ok(map)
}

/// The publish context of an attached attachment.
fn context(attachment: &pb::Attachment) -> Result<BTreeMap<String, String>> {
    let info = attachment.connection_info.as_ref().ok_or_else(|| {
        Error::Internal(format!(
            "attachment {} is attached without connection info",
            attachment.id
        ))
    })?;
    Ok(BTreeMap::from([
        (keys::PROTOCOL.to_owned(), info.protocol.clone()),
        (keys::HOST.to_owned(), info.host.clone()),
        (keys::PORT.to_owned(), info.port.to_string()),
        (keys::EXPORT_NAME.to_owned(), info.export_name.clone()),
        (keys::URI.to_owned(), info.uri.clone()),
        (keys::READ_ONLY.to_owned(), info.read_only.to_string()),
        (keys::ATTACHMENT_ID.to_owned(), attachment.id.clone()),
    ]))
}

/// Waits until attachment `id` is attached; an attach that failed is
/// removed (a retry attaches afresh) and its error returned.
async fn attached(api: &Api, id: &str) -> Result<pb::Attachment> {
    let settled = wait::until::<pb::Attachment, pb::Attachment>(api, id, |seen| match seen {
        None => Step::Failed(Error::Internal(format!(
            "attachment {id} vanished while attaching"
        ))),
        Some(a) => match a.status() {
            AttachmentStatus::Attached | AttachmentStatus::ErrorAttaching => Step::Done(a.clone()),
            AttachmentStatus::Reserved
            | AttachmentStatus::Attaching
            | AttachmentStatus::Unspecified => Step::Pending,
            other => Step::Failed(Error::Internal(format!(
                "attachment {id} is {other:?} while attaching"
            ))),
        },
    })
    .await?;
    if settled.status() == AttachmentStatus::ErrorAttaching {
        let _ = detach(api, &settled).await;
        return Err(Error::Internal(format!(
            "attaching volume {} failed: {} (removed; a retry attaches again)",
            settled.volume_id, settled.error_message
        )));
    }
    Ok(settled)
}

/// ControllerPublishVolume.
pub async fn publish(
    ctl: &Controller,
    request: ControllerPublishVolumeRequest,
) -> Result<ControllerPublishVolumeResponse> {
    if request.volume_id.is_empty() {
        return Err(Error::Missing("volume_id"));
    }
    if request.node_id.is_empty() {
        return Err(Error::Missing("node_id"));
    }
    let capability = request
        .volume_capability
        .as_ref()
        .ok_or(Error::Missing("volume_capability"))?;
    let needs = capability::check("volume_capability", capability)?;
    let reader_only = capability.access_mode.as_ref().is_some_and(|m| {
        matches!(
            m.mode(),
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
        )
    });
    let read_only = request.readonly || reader_only;
    let api = ctl.api().await?;
    let volume = volumes::get(api, &request.volume_id).await?;
    capability::require_fit(api, needs, &volume.volume_type).await?;
    let _held = ctl.locks.lock(format!("volume:{}", volume.id)).await;
    let existing = attachments(api, &volume.id).await?;
    let mine = existing
        .iter()
        .find(|a| holds(a) && node_of(a) == Some(request.node_id.as_str()));
    if let Some(attachment) = mine {
        let was_ro = attachment.mode() == AttachMode::Ro;
        if was_ro != read_only {
            return Err(Error::AlreadyExists(format!(
                "volume {} is published to node {} {} already",
                volume.id,
                request.node_id,
                if was_ro { "read-only" } else { "read-write" }
            )));
        }
        let attachment = attached(api, &attachment.id).await?;
        return Ok(ControllerPublishVolumeResponse {
            publish_context: context(&attachment)?,
        });
    }
    if !needs.multi_node
        && let Some(other) = existing.iter().filter(|a| holds(a)).find_map(node_of)
    {
        return Err(Error::FailedPrecondition(format!(
            "volume {} is published to node {other} and its access mode is single-node",
            volume.id
        )));
    }
    let create = pb::CreateAttachmentRequest {
        volume_id: volume.id.clone(),
        connector: Some(pb::Connector {
            host: request.node_id.clone(),
            properties: [(NODE_PROPERTY.to_owned(), request.node_id.clone())].into(),
            ..Default::default()
        }),
        instance_id: format!("csi:{}", request.node_id),
        mode: if read_only {
            AttachMode::Ro
        } else {
            AttachMode::Rw
        } as i32,
    };
    let attachment = api
        .attachments()
        .create_attachment(create)
        .await
        .map_err(Error::scoria(format!(
            "CreateAttachment of volume {} to node {}",
            volume.id, request.node_id
        )))?
        .into_inner();
    tracing::info!(volume_id = %volume.id, node_id = %request.node_id, attachment_id = %attachment.id, read_only, "publishing");
    let attachment = attached(api, &attachment.id).await?;
    Ok(ControllerPublishVolumeResponse {
        publish_context: context(&attachment)?,
    })
}

/// Deletes `attachment` and waits until it is gone.
async fn detach(api: &Api, attachment: &pb::Attachment) -> Result<()> {
    let request = pb::DeleteAttachmentRequest {
        id: attachment.id.clone(),
    };
    // One on its way out already: only wait.
    if attachment.status() != AttachmentStatus::Detaching {
        match api.attachments().delete_attachment(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => {
                return Err(Error::scoria(format!("DeleteAttachment {}", attachment.id))(s));
            }
        }
    }
    wait::gone::<pb::Attachment>(api, &attachment.id, |a| {
        (a.status() == AttachmentStatus::ErrorDetaching).then(|| {
            Error::Internal(format!(
                "detaching attachment {} failed: {}",
                a.id, a.error_message
            ))
        })
    })
    .await
}

/// ControllerUnpublishVolume: the node's attachments of the volume (every
/// node's when node_id is empty) are gone when it returns; an unknown volume
/// or node is success.
pub async fn unpublish(ctl: &Controller, request: ControllerUnpublishVolumeRequest) -> Result<()> {
    if request.volume_id.is_empty() {
        return Err(Error::Missing("volume_id"));
    }
    let Some(id) = names::scoria_id(&request.volume_id) else {
        return Ok(());
    };
    let api = ctl.api().await?;
    let _held = ctl.locks.lock(format!("volume:{id}")).await;
    let found = match attachments(api, &id).await {
        Ok(found) => found,
        Err(Error::Scoria { status, .. }) if status.code() == Code::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for attachment in found
        .iter()
        .filter(|a| request.node_id.is_empty() || node_of(a) == Some(request.node_id.as_str()))
    {
        detach(api, attachment).await?;
        tracing::info!(volume_id = %id, node_id = ?node_of(attachment), attachment_id = %attachment.id, "unpublished");
    }
    Ok(())
}
