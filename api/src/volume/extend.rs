//! `ExtendVolume`: `available` -> `extending` (compare-and-set, with a worker entry
//! owned by the volume's host), then a cast to that host, which grows the backend
//! object and settles the volume (`available` with the new size, or
//! `error_extending`). A cast that cannot be sent puts the volume back.

use scoria_common::{
    RequestContext,
    db::{Owner, WorkerEntry, deadlines},
    events::Event,
    model::{Volume, VolumeStatus, now_ms},
    settle::VolumeChange,
};
use scoria_proto::{bus::ExtendVolume, v1 as pb};

use super::VolumeApi;
use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    validate,
};

impl VolumeApi {
    #[tracing::instrument(skip_all, fields(volume_id = %req.id, new_size_gib = req.new_size_gib))]
    pub(super) async fn extend(
        &self,
        ctx: &RequestContext,
        req: pb::ExtendVolumeRequest,
    ) -> ApiResult<Volume> {
        let id = validate::uuid("id", &req.id)?;
        let new_size = req.new_size_gib;
        if new_size == 0 || new_size > self.max_size_gib {
            return Err(ApiError::invalid(
                "new_size_gib",
                format!(
                    "must be between 1 and {} GiB, got {new_size}",
                    self.max_size_gib
                ),
            ));
        }
        let volume = self.load(ctx, &id).await?;
        if new_size <= volume.size_gib {
            return Err(ApiError::invalid(
                "new_size_gib",
                format!(
                    "must be larger than the volume's size ({} GiB), got {new_size}",
                    volume.size_gib
                ),
            ));
        }
        if volume.status != VolumeStatus::Available {
            return Err(not_extendable(&volume));
        }
        self.start_extend(ctx, volume, new_size).await
    }

    /// ExtendVolume after its checks: `volume` as it was read and checked,
    /// `new_size` larger than its size then.
    pub(super) async fn start_extend(
        &self,
        ctx: &RequestContext,
        volume: Volume,
        new_size: u64,
    ) -> ApiResult<Volume> {
        let id = volume.id.clone();
        let Some(host) = volume.host.clone() else {
            return Err(ApiError::Internal(format!(
                "available volume {id} has no host"
            )));
        };
        let intent = Intent::cast(&self.ports, format!("extend volume {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::volume(
            &id,
            VolumeStatus::Extending,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::VOLUME_EXTEND),
        );
        // The size it was checked against is part of the compare-and-set: a
        // request checked before another extend finished loses.
        let won = self
            .db
            .start_extend(&id, volume.size_gib, new_size, &worker)
            .await
            .map_err(ApiError::db(format!("mark volume {id} extending")))?;
        if !won {
            let checked = volume.size_gib;
            return Err(match self.load(ctx, &id).await {
                Ok(now) if now.status == VolumeStatus::Available => ApiError::WrongStatus {
                    kind: "volume",
                    id,
                    status: format!("{} with {} GiB", now.status, now.size_gib),
                    detail: format!(
                        ": the request was checked against {checked} GiB, \
                         another extend finished meanwhile"
                    ),
                },
                Ok(now) => not_extendable(&now),
                Err(err) => err,
            });
        }
        let request = ExtendVolume {
            volume_id: id.clone(),
            new_size_gib: new_size,
            previous_status: VolumeStatus::Available.as_str().to_owned(),
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = Volume {
            status: VolumeStatus::Extending,
            ..volume.clone()
        };
        intent
            .send(
                self.ports.volumes.extend_volume(ctx, &host, request),
                |why| async move {
                    // Nothing will extend it: put it back as it was.
                    tracing::warn!(volume_id = %failed.id, error = %why, "extend not sent");
                    let change =
                        VolumeChange::new(&[VolumeStatus::Extending], VolumeStatus::Available);
                    settler
                        .volume(ctx, &mut failed, change, Some(Event::VolumeResizeError))
                        .await
                },
            )
            .await?;
        tracing::info!(volume_id = %id, host = %host, new_size_gib = new_size, "volume extension requested");
        Ok(Volume {
            status: VolumeStatus::Extending,
            updated_at_ms: now_ms(),
            ..volume
        })
    }
}

fn not_extendable(volume: &Volume) -> ApiError {
    let hint = if volume.status == VolumeStatus::InUse {
        ": detach it first (delete its attachments), only available volumes can be extended"
    } else {
        ": only available volumes can be extended"
    };
    ApiError::volume_refused(volume, volume.status == VolumeStatus::InUse, hint)
}
