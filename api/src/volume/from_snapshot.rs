//! CreateVolume from a snapshot: the snapshot must be the caller's and
//! `available`; the new volume is at least as large as the snapshot (`size_gib` 0:
//! the snapshot's size), in its volume's zone, of its volume's type unless another
//! is named, and is made by the backend holding the snapshot (`required_host`), as
//! Cinder schedules it.
//!
//! A DeleteSnapshot racing the create is settled in the database: once the volume
//! row (`creating`, with `snapshot_id`) is written, [`VolumeApi::confirm_snapshot`]
//! takes the snapshot's row by compare-and-set; DeleteSnapshot refuses a snapshot a
//! volume is being created from. Whichever comes second loses.

use scoria_common::{
    RequestContext,
    db::IdempotencyKey,
    model::{SnapshotStatus, Volume},
};
use scoria_proto::v1 as pb;

use super::{
    VolumeApi,
    placement::{Origin, Placement},
};
use crate::{
    error::{ApiError, ApiResult},
    scope,
    validate::VolumeSource,
};

/// The snapshot a create names, if any.
pub(super) fn snapshot_id(source: Option<&VolumeSource>) -> Option<String> {
    match source {
        Some(VolumeSource::Snapshot(id)) => Some(id.clone()),
        _ => None,
    }
}

impl VolumeApi {
    /// Where a volume from snapshot `snapshot_id` goes, and what it is.
    pub(super) async fn snapshot_placement(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateVolumeRequest,
        snapshot_id: &str,
    ) -> ApiResult<Placement> {
        let what = format!("snapshot {snapshot_id}");
        let read = self.db.get_snapshot(snapshot_id);
        let snapshot = scope::load_source(ctx, "snapshot_id", &what, snapshot_id, read).await?;
        let origin = Origin {
            kind: "snapshot",
            id: snapshot_id,
            unavailable: (snapshot.status != SnapshotStatus::Available).then(|| {
                format!(
                    "is {}: volumes can only be made from available snapshots",
                    snapshot.status
                )
            }),
            host: snapshot.host.clone(),
            size_gib: snapshot.size_gib,
            words: ("a volume from a snapshot", "the snapshot"),
        };
        let (required_host, size_gib) = origin.check(req)?;
        // The snapshot's volume still exists (it cannot be deleted while it has
        // snapshots); its zone and type are the snapshot's.
        let parent = self
            .db
            .get_volume(&snapshot.volume_id)
            .await
            .map_err(ApiError::db(format!("get volume {}", snapshot.volume_id)))?;
        let (zone, volume_type) = parent
            .as_ref()
            .map(|v| (v.availability_zone.as_str(), v.volume_type.as_str()))
            .unwrap_or_default();
        Ok(Placement {
            availability_zone: origin.zone(req, zone)?,
            size_gib,
            source_volume_id: None,
            required_host,
            ..self.inherit_type(req, volume_type).await?
        })
    }

    /// After `volume`'s row is written: if it is made from a snapshot, holds the
    /// snapshot `available` against a racing DeleteSnapshot, or undoes the row (and
    /// its idempotency key) and refuses.
    pub(super) async fn confirm_snapshot(
        &self,
        volume: &Volume,
        key: Option<&IdempotencyKey>,
    ) -> ApiResult<()> {
        let Some(snapshot_id) = &volume.snapshot_id else {
            return Ok(());
        };
        let available = self
            .db
            .confirm_snapshot_available(snapshot_id)
            .await
            .map_err(ApiError::db(format!("check snapshot {snapshot_id}")));
        if let Ok(true) = available {
            return Ok(());
        }
        if let Err(err) = self.db.discard_created_volume(volume, key).await {
            tracing::error!(volume_id = %volume.id, error = %err, "cannot remove volume of a vanished snapshot");
        }
        available?;
        Err(ApiError::SourceUnusable {
            kind: "snapshot",
            id: snapshot_id.to_owned(),
            why: "is no longer available (being deleted)".to_owned(),
        })
    }
}
