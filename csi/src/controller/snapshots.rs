//! CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot: CSI snapshots
//! are Scoria snapshots, found again by name (Scoria keeps the CO's name as
//! the snapshot's, see [`super::names`]).

use scoria_cli::connect::Api;
use scoria_proto::v1::{self as pb, SnapshotStatus};
use tonic::Code;

use super::{
    Controller, capacity, names, paging, volumes,
    wait::{self, Step},
};
use crate::{
    error::{Error, Result},
    proto::{
        CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, GetSnapshotRequest,
        GetSnapshotResponse, ListSnapshotsRequest, ListSnapshotsResponse, Snapshot,
        list_snapshots_response,
    },
};

/// The description of the plugin's snapshots.
const DESCRIPTION: &str = "made by scoria-csi";

/// The Scoria snapshot `id`; NOT_FOUND when there is none.
pub async fn get(api: &Api, id: &str) -> Result<pb::Snapshot> {
    let not_found = || Error::NotFound {
        kind: "snapshot",
        id: id.to_owned(),
    };
    let scoria_id = names::scoria_id(id).ok_or_else(not_found)?;
    let request = pb::GetSnapshotRequest { id: scoria_id };
    match api.snapshots().get_snapshot(request).await {
        Ok(s) => Ok(s.into_inner()),
        Err(s) if s.code() == Code::NotFound => Err(not_found()),
        Err(s) => Err(Error::scoria(format!("GetSnapshot {id}"))(s)),
    }
}

/// The CSI view of a Scoria snapshot.
pub fn to_csi(snapshot: &pb::Snapshot) -> Snapshot {
    Snapshot {
        size_bytes: capacity::bytes(snapshot.size_gib),
        snapshot_id: snapshot.id.clone(),
        source_volume_id: snapshot.volume_id.clone(),
        creation_time: snapshot.created_at,
        ready_to_use: snapshot.status() == SnapshotStatus::Available,
        group_snapshot_id: String::new(),
    }
}

/// A page of the project's snapshots (of `volume_id` when not empty).
async fn page(
    api: &Api,
    volume_id: &str,
    page_size: i32,
    page_token: String,
) -> Result<pb::ListSnapshotsResponse> {
    let request = pb::ListSnapshotsRequest {
        page_size,
        page_token,
        volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    api.snapshots()
        .list_snapshots(request)
        .await
        .map(|r| r.into_inner())
        .map_err(Error::scoria(format!("ListSnapshots volume={volume_id:?}")))
}

/// The snapshot of Scoria name `scoria_name`, if any (one being deleted does not count).
async fn find(api: &Api, scoria_name: &str) -> Result<Option<pb::Snapshot>> {
    let mut token = String::new();
    loop {
        let answer = page(api, "", paging::MAX_PAGE, token).await?;
        let found = answer.snapshots.into_iter().find(|s| {
            s.name == scoria_name
                && !matches!(
                    s.status(),
                    SnapshotStatus::Deleting | SnapshotStatus::ErrorDeleting
                )
        });
        if found.is_some() || answer.next_page_token.is_empty() {
            return Ok(found);
        }
        token = answer.next_page_token;
    }
}

/// CreateSnapshot: idempotent by name; returns once the snapshot is cut
/// (ready_to_use once Scoria says available).
pub async fn create(
    ctl: &Controller,
    request: CreateSnapshotRequest,
) -> Result<CreateSnapshotResponse> {
    if request.name.is_empty() {
        return Err(Error::Missing("name"));
    }
    if request.source_volume_id.is_empty() {
        return Err(Error::Missing("source_volume_id"));
    }
    if let Some(c) = names::banned_char(&request.name) {
        return Err(Error::invalid(
            "name",
            format!("must not hold the control character {c:?}"),
        ));
    }
    if let Some(key) = request.parameters.keys().next() {
        return Err(Error::invalid(
            "parameters",
            format!("unknown parameter {key:?} (snapshots take none)"),
        ));
    }
    let api = ctl.api().await?;
    let _held = ctl.locks.lock(format!("snapshot:{}", request.name)).await;
    let scoria_name = names::scoria_name(&request.name);
    let snapshot = match find(api, &scoria_name).await? {
        Some(existing)
            if names::scoria_id(&request.source_volume_id).as_deref()
                != Some(existing.volume_id.as_str()) =>
        {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} named {:?} is of volume {}, not {}",
                existing.id, request.name, existing.volume_id, request.source_volume_id
            )));
        }
        Some(existing) => existing,
        None => {
            let volume = volumes::get(api, &request.source_volume_id).await?;
            let create = pb::CreateSnapshotRequest {
                volume_id: volume.id.clone(),
                name: scoria_name,
                description: DESCRIPTION.to_owned(),
                // Kubernetes snapshots volumes in use.
                force: true,
            };
            let snapshot = api
                .snapshots()
                .create_snapshot(create)
                .await
                .map_err(Error::scoria(format!(
                    "CreateSnapshot {:?} of volume {}",
                    request.name, volume.id
                )))?
                .into_inner();
            tracing::info!(snapshot_id = %snapshot.id, volume_id = %volume.id, name = %request.name, "snapshot created");
            snapshot
        }
    };
    let snapshot =
        wait::until::<pb::Snapshot, pb::Snapshot>(api, &snapshot.id, |seen| match seen {
            None => Step::Failed(Error::Internal(format!(
                "snapshot {} vanished while being created",
                snapshot.id
            ))),
            Some(s) => match s.status() {
                SnapshotStatus::Creating | SnapshotStatus::Unspecified => Step::Pending,
                _ => Step::Done(s.clone()),
            },
        })
        .await?;
    if snapshot.status() == SnapshotStatus::Error {
        let _ = api
            .snapshots()
            .delete_snapshot(pb::DeleteSnapshotRequest {
                id: snapshot.id.clone(),
            })
            .await;
        return Err(Error::Internal(format!(
            "snapshot {} failed: {} (deleted; a retry cuts a new one)",
            snapshot.id, snapshot.error_message
        )));
    }
    Ok(CreateSnapshotResponse {
        snapshot: Some(to_csi(&snapshot)),
    })
}

/// DeleteSnapshot: gone when it returns; an unknown id is success.
pub async fn delete(ctl: &Controller, request: DeleteSnapshotRequest) -> Result<()> {
    if request.snapshot_id.is_empty() {
        return Err(Error::Missing("snapshot_id"));
    }
    let Some(id) = names::scoria_id(&request.snapshot_id) else {
        return Ok(());
    };
    let api = ctl.api().await?;
    let snapshot = match get(api, &id).await {
        Ok(s) => s,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if snapshot.status() != SnapshotStatus::Deleting {
        match api
            .snapshots()
            .delete_snapshot(pb::DeleteSnapshotRequest { id: id.clone() })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => return Ok(()),
            Err(s) => return Err(Error::scoria(format!("DeleteSnapshot {id}"))(s)),
        }
    }
    wait::gone::<pb::Snapshot>(api, &id, |s| {
        (s.status() == SnapshotStatus::ErrorDeleting).then(|| {
            Error::Internal(format!(
                "snapshot {} failed to delete: {}",
                s.id, s.error_message
            ))
        })
    })
    .await
}

/// ListSnapshots: one snapshot (by id), a volume's, or all of the project's, a page at a time.
pub async fn list(
    ctl: &Controller,
    request: ListSnapshotsRequest,
) -> Result<ListSnapshotsResponse> {
    let page_size = paging::page_size(request.max_entries)?;
    let mut token = paging::unwrap(&request.starting_token)?;
    let api = ctl.api().await?;
    let entry = |s: &pb::Snapshot| list_snapshots_response::Entry {
        snapshot: Some(to_csi(s)),
    };
    if !request.snapshot_id.is_empty() {
        let entries = match get(api, &request.snapshot_id).await {
            Ok(s)
                if request.source_volume_id.is_empty()
                    || s.volume_id == request.source_volume_id =>
            {
                vec![entry(&s)]
            }
            Ok(_) | Err(Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        return Ok(ListSnapshotsResponse {
            entries,
            next_token: String::new(),
        });
    }
    let volume_id = if request.source_volume_id.is_empty() {
        String::new()
    } else {
        match names::scoria_id(&request.source_volume_id) {
            Some(id) => id,
            None => return Ok(ListSnapshotsResponse::default()),
        }
    };
    let mut snapshots = Vec::new();
    let next = loop {
        let answer = page(api, &volume_id, page_size, token)
            .await
            .map_err(paging::refused(&request.starting_token))?;
        snapshots.extend(answer.snapshots);
        let all = request.max_entries == 0 && snapshots.len() < paging::MAX_ALL;
        if answer.next_page_token.is_empty() || !all {
            break answer.next_page_token;
        }
        token = answer.next_page_token;
    };
    Ok(ListSnapshotsResponse {
        entries: snapshots.iter().map(entry).collect(),
        next_token: paging::wrap(&next),
    })
}

/// GetSnapshot (alpha).
pub async fn get_one(ctl: &Controller, request: GetSnapshotRequest) -> Result<GetSnapshotResponse> {
    if request.snapshot_id.is_empty() {
        return Err(Error::Missing("snapshot_id"));
    }
    let api = ctl.api().await?;
    let snapshot = get(api, &request.snapshot_id).await?;
    Ok(GetSnapshotResponse {
        snapshot: Some(to_csi(&snapshot)),
    })
}
