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

use scoria_common::{RequestContext, db::IdempotencyKey, model::Volume};
use scoria_proto::v1 as pb;

use super::{VolumeApi, placement::Placement};
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
        let not_found = || ApiError::NotFound {
            kind: "snapshot_id",
            id: snapshot_id.to_owned(),
        };
        let snapshot = self
            .db
            .get_snapshot(snapshot_id)
            .await
            .map_err(ApiError::db(format!("get snapshot {snapshot_id}")))?
            .filter(|s| scope::visible(ctx, s))
            .ok_or_else(not_found)?;
        if snapshot.status != scoria_common::model::SnapshotStatus::Available {
            return Err(ApiError::SourceUnusable {
                kind: "snapshot",
                id: snapshot_id.to_owned(),
                why: format!(
                    "is {}: volumes can only be made from available snapshots",
                    snapshot.status
                ),
            });
        }
        let Some(host) = snapshot.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::SourceUnusable {
                kind: "snapshot",
                id: snapshot_id.to_owned(),
                why: "is on no backend".to_owned(),
            });
        };
        let size_gib = match req.size_gib {
            0 => snapshot.size_gib,
            n if n < snapshot.size_gib => {
                return Err(ApiError::invalid(
                    "size_gib",
                    format!(
                        "a volume from a snapshot must be at least as large as the snapshot ({} GiB), got {n}",
                        snapshot.size_gib
                    ),
                ));
            }
            n => n,
        };
        // The snapshot's volume still exists (it cannot be deleted while it has
        // snapshots); its zone and type are the snapshot's.
        let parent = self
            .db
            .get_volume(&snapshot.volume_id)
            .await
            .map_err(ApiError::db(format!("get volume {}", snapshot.volume_id)))?;
        let parent_zone = parent
            .as_ref()
            .map(|v| v.availability_zone.clone())
            .unwrap_or_default();
        let availability_zone = match req.availability_zone.as_str() {
            "" => parent_zone,
            zone if parent_zone.is_empty() || zone == parent_zone => zone.to_owned(),
            zone => {
                return Err(ApiError::invalid(
                    "availability_zone",
                    format!(
                        "a volume from a snapshot is made in the snapshot's zone {parent_zone:?}, not {zone:?}"
                    ),
                ));
            }
        };
        let type_name = match (&req.volume_type, &parent) {
            (named, _) if !named.is_empty() => named.as_str(),
            (_, Some(parent)) => parent.volume_type.as_str(),
            (_, None) => "",
        };
        let volume_type = match self.volume_type(type_name).await {
            Err(ApiError::NotFound { .. }) if req.volume_type.is_empty() => {
                // The parent's type is gone (or it predates types): the default.
                self.volume_type("").await?
            }
            other => other?,
        };
        Ok(Placement {
            volume_type: volume_type.name,
            extra_specs: volume_type.extra_specs,
            availability_zone,
            size_gib,
            source_volume_id: None,
            required_host: host,
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
