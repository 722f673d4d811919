//! `RevertVolumeToSnapshot`: the volume `available` -> `reverting` and its
//! newest snapshot `available` -> `restoring` in one transaction (with a worker
//! entry owned by the volume's host), then a cast to that host, which copies the
//! snapshot's bytes over the volume and settles both. Cinder's rules: the
//! snapshot must be the volume's newest and of the volume's size (not extended
//! since), the volume not attached. A cast that cannot be sent puts both back.

use scoria_common::{
    RequestContext,
    db::{Owner, RevertStart, WorkerEntry, deadlines},
    model::{Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms},
};
use scoria_proto::{bus::RevertToSnapshot, v1 as pb};

use super::VolumeApi;
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    scope, validate,
};

impl VolumeApi {
    #[tracing::instrument(skip_all, fields(volume_id = %req.id, snapshot_id = %req.snapshot_id))]
    pub(super) async fn revert(
        &self,
        ctx: &RequestContext,
        req: pb::RevertVolumeToSnapshotRequest,
    ) -> ApiResult<Volume> {
        let id = validate::uuid("id", &req.id)?;
        let snapshot_id = validate::uuid("snapshot_id", &req.snapshot_id)?;
        let volume = self.load(ctx, &id).await?;
        let snapshot: Snapshot = scope::load_source(
            ctx,
            "snapshot_id",
            &format!("snapshot {snapshot_id}"),
            &snapshot_id,
            self.db.get_snapshot(&snapshot_id),
        )
        .await?;
        if snapshot.volume_id != id {
            return Err(ApiError::invalid(
                "snapshot_id",
                format!("snapshot {snapshot_id} is not a snapshot of volume {id}"),
            ));
        }
        if volume.status != VolumeStatus::Available {
            return Err(ApiError::not_available(&volume, "reverted"));
        }
        if snapshot.status != SnapshotStatus::Available {
            return Err(ApiError::WrongStatus {
                kind: "snapshot",
                id: snapshot_id,
                status: snapshot.status.to_string(),
                detail: ": only an available snapshot can be reverted to".to_owned(),
            });
        }
        if snapshot.size_gib != volume.size_gib {
            return Err(ApiError::WrongStatus {
                kind: "volume",
                id,
                status: format!(
                    "{} GiB, the snapshot {} GiB",
                    volume.size_gib, snapshot.size_gib
                ),
                detail: ": a volume extended since its snapshot cannot be reverted to it"
                    .to_owned(),
            });
        }
        let newest = self
            .db
            .newest_snapshot(&id)
            .await
            .map_err(ApiError::db(format!(
                "find the newest snapshot of volume {id}"
            )))?;
        if let Some(newest) = newest.filter(|n| *n != snapshot_id) {
            return Err(not_latest(&snapshot_id, &newest));
        }
        let Some(host) = volume.host.clone() else {
            return Err(ApiError::NoBackend { kind: "volume", id });
        };
        let intent = Intent::cast(&self.ports, format!("revert volume {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Reverting,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::VOLUME_REVERT),
        );
        let start = self
            .db
            .start_revert(&id, &snapshot_id, &worker)
            .await
            .map_err(ApiError::db(format!("mark volume {id} reverting")))?;
        match start {
            RevertStart::Started => {}
            RevertStart::NotLatest(newest) => return Err(not_latest(&snapshot_id, &newest)),
            RevertStart::VolumeMoved => {
                return Err(match self.load(ctx, &id).await {
                    Ok(now) => ApiError::not_available(&now, "reverted"),
                    Err(err) => err,
                });
            }
            RevertStart::SnapshotMoved => {
                return Err(ApiError::WrongStatus {
                    kind: "snapshot",
                    id: snapshot_id,
                    status: "changed".to_owned(),
                    detail: ": it is no longer available".to_owned(),
                });
            }
        }
        let request = RevertToSnapshot {
            volume_id: id.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let (db, volume_id, snap) = (self.db.clone(), id.clone(), snapshot_id.clone());
        intent
            .send(
                self.ports.volumes.revert_to_snapshot(ctx, &host, request),
                |why| async move {
                    // Nothing will revert it: both back as they were.
                    tracing::warn!(volume_id = %volume_id, error = %why, "revert not sent");
                    db.finish_revert(&volume_id, &snap, None).await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, snapshot_id = %snapshot_id, host = %host, "volume revert requested");
        Ok(Volume {
            status: VolumeStatus::Reverting,
            updated_at_ms: now_ms(),
            ..volume
        })
    }
}

fn not_latest(snapshot_id: &str, newest: &str) -> ApiError {
    ApiError::WrongStatus {
        kind: "snapshot",
        id: snapshot_id.to_owned(),
        status: "not the newest".to_owned(),
        detail: format!(": a volume reverts only to its newest snapshot, {newest}"),
    }
}
