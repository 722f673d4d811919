//! What a new volume is and where it may go, decided before its row is written:
//! its volume type (the default one if none is named) and the type's extra specs
//! for the scheduler, and for a clone the source's size, zone and `host@backend`
//! (a clone is made by the source's backend, as Cinder does).

use std::collections::BTreeMap;

use scoria_common::{
    RequestContext,
    model::{Volume, VolumeStatus, VolumeType},
};
use scoria_proto::v1 as pb;

use super::VolumeApi;
use crate::{
    error::{ApiError, ApiResult},
    scope,
    validate::VolumeSource,
};

/// The resolved type, size, zone and source of a volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The type's name, as stored on the volume.
    pub volume_type: String,
    /// The type's extra specs, for the scheduler.
    pub extra_specs: BTreeMap<String, String>,
    /// The zone asked for (a clone's: the source's), empty: any.
    pub availability_zone: String,
    /// The size (a clone asking 0: the source's).
    pub size_gib: u64,
    /// The volume cloned, if any.
    pub source_volume_id: Option<String>,
    /// The `host@backend` that must make the volume (a clone's source's), empty: any.
    pub required_host: String,
}

impl VolumeApi {
    /// Resolves the type, size, zone and source of `req` (validated already).
    pub(crate) async fn placement(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateVolumeRequest,
        source: Option<&VolumeSource>,
    ) -> ApiResult<Placement> {
        match source {
            None => {
                let volume_type = self.volume_type(&req.volume_type).await?;
                Ok(Placement {
                    volume_type: volume_type.name,
                    extra_specs: volume_type.extra_specs,
                    availability_zone: req.availability_zone.clone(),
                    size_gib: req.size_gib,
                    source_volume_id: None,
                    required_host: String::new(),
                })
            }
            Some(VolumeSource::Volume(id)) => self.clone_placement(ctx, req, id).await,
            Some(VolumeSource::Snapshot(id)) => self.snapshot_placement(ctx, req, id).await,
        }
    }

    /// The type named `name` (an id or a name), or the default type if `name` is empty.
    pub(crate) async fn volume_type(&self, name: &str) -> ApiResult<VolumeType> {
        if name.is_empty() {
            return self
                .db
                .default_volume_type()
                .await
                .map_err(ApiError::db("get the default volume type"))?
                .ok_or_else(|| ApiError::Internal("the default volume type is missing".into()));
        }
        self.db
            .get_volume_type(name)
            .await
            .map_err(ApiError::db(format!("get volume type {name}")))?
            .ok_or_else(|| ApiError::NotFound {
                kind: "volume_type",
                id: name.to_owned(),
            })
    }

    /// A clone of volume `source_id`: made on the source's backend, in its zone,
    /// at least as large; of the source's type unless another is named.
    async fn clone_placement(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateVolumeRequest,
        source_id: &str,
    ) -> ApiResult<Placement> {
        let not_found = || ApiError::NotFound {
            kind: "source_volume_id",
            id: source_id.to_owned(),
        };
        let source: Volume = self
            .db
            .get_volume(source_id)
            .await
            .map_err(ApiError::db(format!("get source volume {source_id}")))?
            .filter(|v| scope::visible(ctx, v))
            .ok_or_else(not_found)?;
        if source.status != VolumeStatus::Available {
            return Err(ApiError::SourceUnusable {
                kind: "source volume",
                id: source_id.to_owned(),
                why: format!("is {}: only available volumes can be cloned", source.status),
            });
        }
        let Some(host) = source.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::SourceUnusable {
                kind: "source volume",
                id: source_id.to_owned(),
                why: "is on no backend".to_owned(),
            });
        };
        let size_gib = match req.size_gib {
            0 => source.size_gib,
            n if n < source.size_gib => {
                return Err(ApiError::invalid(
                    "size_gib",
                    format!(
                        "a clone must be at least as large as its source ({} GiB), got {n}",
                        source.size_gib
                    ),
                ));
            }
            n => n,
        };
        let availability_zone = match req.availability_zone.as_str() {
            "" => source.availability_zone.clone(),
            zone if source.availability_zone.is_empty() || zone == source.availability_zone => {
                zone.to_owned()
            }
            zone => {
                return Err(ApiError::invalid(
                    "availability_zone",
                    format!(
                        "a clone is made in its source's zone {:?}, not {zone:?}",
                        source.availability_zone
                    ),
                ));
            }
        };
        // Cinder: a clone keeps its source's type unless it names one.
        let type_name = if req.volume_type.is_empty() {
            source.volume_type.as_str()
        } else {
            req.volume_type.as_str()
        };
        let volume_type = match self.volume_type(type_name).await {
            Err(ApiError::NotFound { .. }) if req.volume_type.is_empty() => {
                // The source's type is gone (or it predates types): the default.
                self.volume_type("").await?
            }
            other => other?,
        };
        Ok(Placement {
            volume_type: volume_type.name,
            extra_specs: volume_type.extra_specs,
            availability_zone,
            size_gib,
            source_volume_id: Some(source.id),
            required_host: host,
        })
    }
}
