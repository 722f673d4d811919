//! What a new volume is and where it may go, decided before its row is written:
//! its volume type (the default one if none is named) and the type's extra specs
//! for the scheduler, and for a clone the source's size, zone and `host@backend`
//! (a clone is made by the source's backend, as Cinder does).

use std::collections::BTreeMap;

use scoria_common::{
    RequestContext,
    db::Db,
    model::{VolumeStatus, VolumeType},
};
use scoria_proto::v1 as pb;

use super::VolumeApi;
use crate::{
    error::{ApiError, ApiResult},
    scope,
    validate::VolumeSource,
};

/// The type named `name` (an id or a name) in `db`, or the default type if
/// `name` is empty; NOT_FOUND naming `volume_type`.
pub(crate) async fn resolve_volume_type(db: &Db, name: &str) -> ApiResult<VolumeType> {
    if name.is_empty() {
        return db
            .default_volume_type()
            .await
            .map_err(ApiError::db("get the default volume type"))?
            .ok_or_else(|| ApiError::Internal("the default volume type is missing".into()));
    }
    db.get_volume_type(name)
        .await
        .map_err(ApiError::db(format!("get volume type {name}")))?
        .ok_or_else(|| ApiError::NotFound {
            kind: "volume_type",
            id: name.to_owned(),
        })
}

/// The resolved type, size, zone and source of a volume to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
            None => Ok(Placement {
                availability_zone: req.availability_zone.clone(),
                size_gib: req.size_gib,
                ..self.inherit_type(req, "").await?
            }),
            Some(VolumeSource::Volume(id)) => self.clone_placement(ctx, req, id).await,
            Some(VolumeSource::Snapshot(id)) => self.snapshot_placement(ctx, req, id).await,
        }
    }

    /// The type named `name` (an id or a name), or the default type if `name` is empty.
    pub(crate) async fn volume_type(&self, name: &str) -> ApiResult<VolumeType> {
        resolve_volume_type(&self.db, name).await
    }

    /// A clone of volume `source_id`: made on the source's backend, in its zone,
    /// at least as large; of the source's type unless another is named.
    async fn clone_placement(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateVolumeRequest,
        source_id: &str,
    ) -> ApiResult<Placement> {
        let what = format!("source volume {source_id}");
        let read = self.db.get_volume(source_id);
        let source = scope::load_source(ctx, "source_volume_id", &what, source_id, read).await?;
        let origin = Origin {
            kind: "source volume",
            id: source_id,
            unavailable: (source.status != VolumeStatus::Available)
                .then(|| format!("is {}: only available volumes can be cloned", source.status)),
            host: source.host.clone(),
            size_gib: source.size_gib,
            words: ("a clone", "its source"),
        };
        let (required_host, size_gib) = origin.check(req)?;
        Ok(Placement {
            availability_zone: origin.zone(req, &source.availability_zone)?,
            size_gib,
            source_volume_id: Some(source.id.clone()),
            required_host,
            // Cinder: a clone keeps its source's type unless it names one.
            ..self.inherit_type(req, &source.volume_type).await?
        })
    }

    /// A placement with only its type set: the one `req` names, else the
    /// `inherited` one (the default if that is empty or gone); the caller sets
    /// the other fields.
    pub(super) async fn inherit_type(
        &self,
        req: &pb::CreateVolumeRequest,
        inherited: &str,
    ) -> ApiResult<Placement> {
        let named = if req.volume_type.is_empty() {
            inherited
        } else {
            req.volume_type.as_str()
        };
        let volume_type = match self.volume_type(named).await {
            // The origin's type is gone (or it predates types): the default.
            Err(ApiError::NotFound { .. }) if req.volume_type.is_empty() => {
                self.volume_type("").await?
            }
            other => other?,
        };
        Ok(Placement {
            volume_type: volume_type.name,
            extra_specs: volume_type.extra_specs,
            ..Placement::default()
        })
    }
}

/// What a new volume is made from: a volume it clones, or a snapshot. Both are
/// checked and inherited from alike (as Cinder does); only the words differ.
pub(super) struct Origin<'a> {
    /// How errors name it: `source volume`, `snapshot`.
    pub kind: &'static str,
    /// Its id.
    pub id: &'a str,
    /// Why it cannot be used (it is not `available`), if so.
    pub unavailable: Option<String>,
    /// The `host@backend` holding it.
    pub host: Option<String>,
    /// Its size.
    pub size_gib: u64,
    /// How the errors name the new volume and the origin: `("a clone", "its source")`.
    pub words: (&'static str, &'static str),
}

impl Origin<'_> {
    /// The `host@backend` that must make the new volume and its size (`size_gib`
    /// 0: the origin's), or why it cannot be made from this origin.
    pub(super) fn check(&self, req: &pb::CreateVolumeRequest) -> ApiResult<(String, u64)> {
        let unusable = |why: String| ApiError::SourceUnusable {
            kind: self.kind,
            id: self.id.to_owned(),
            why,
        };
        if let Some(why) = &self.unavailable {
            return Err(unusable(why.clone()));
        }
        let Some(host) = self.host.clone().filter(|h| !h.is_empty()) else {
            return Err(unusable("is on no backend".to_owned()));
        };
        let (new, of) = self.words;
        let size_gib = match req.size_gib {
            0 => self.size_gib,
            n if n < self.size_gib => {
                return Err(ApiError::invalid(
                    "size_gib",
                    format!(
                        "{new} must be at least as large as {of} ({} GiB), got {n}",
                        self.size_gib
                    ),
                ));
            }
            n => n,
        };
        Ok((host, size_gib))
    }

    /// The new volume's zone: the origin's `zone` (empty: any), or the one `req`
    /// asks for if it is that zone or the origin has none.
    pub(super) fn zone(&self, req: &pb::CreateVolumeRequest, zone: &str) -> ApiResult<String> {
        let (new, of) = self.words;
        match req.availability_zone.as_str() {
            "" => Ok(zone.to_owned()),
            asked if zone.is_empty() || asked == zone => Ok(asked.to_owned()),
            asked => Err(ApiError::invalid(
                "availability_zone",
                format!("{new} is made in {of}'s zone {zone:?}, not {asked:?}"),
            )),
        }
    }
}
