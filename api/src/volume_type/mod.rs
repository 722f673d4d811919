//! `scoria.v1.VolumeTypeService`: volume types and their extra specs, read by
//! everyone, written by admins only (the auth layer refuses other writers first;
//! the handlers check again, so the rule holds whatever wraps them).

use std::collections::BTreeMap;

use scoria_common::{
    RequestContext,
    db::{Db, TypeDeleted, VolumeTypeChanges},
    model::{VolumeType, now_ms},
};
use scoria_proto::v1::{self as pb, volume_type_service_server::VolumeTypeService};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    request::{handle, handle_as},
    validate::text,
};

/// The most extra specs a type may carry.
pub const MAX_EXTRA_SPECS: usize = 64;
/// The fields `UpdateVolumeType` can change, as `update_mask` paths.
pub const UPDATABLE_FIELDS: [&str; 2] = ["description", "extra_specs"];

/// The `VolumeTypeService` implementation.
#[derive(Clone)]
pub struct VolumeTypeApi {
    db: Db,
}

impl VolumeTypeApi {
    /// The service over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The type `id_or_name` (an id, else a name).
    async fn load(&self, id_or_name: &str) -> ApiResult<VolumeType> {
        if id_or_name.is_empty() {
            return Err(ApiError::invalid("id_or_name", "must not be empty"));
        }
        text::line("id_or_name", id_or_name)?;
        self.db
            .get_volume_type(id_or_name)
            .await
            .map_err(ApiError::db(format!("get volume type {id_or_name}")))?
            .ok_or_else(|| type_not_found(id_or_name))
    }

    /// ListVolumeTypes: every type (they are public).
    async fn list(&self) -> ApiResult<pb::ListVolumeTypesResponse> {
        let types = self
            .db
            .list_volume_types()
            .await
            .map_err(ApiError::db("list volume types"))?;
        Ok(pb::ListVolumeTypesResponse {
            volume_types: types.iter().map(pb::VolumeType::from).collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(name = %req.name))]
    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateVolumeTypeRequest,
    ) -> ApiResult<VolumeType> {
        require_admin(ctx, "CreateVolumeType")?;
        name(&req.name)?;
        text::description("description", &req.description)?;
        extra_specs(&req.extra_specs)?;
        let now = now_ms();
        let volume_type = VolumeType {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            description: req.description,
            extra_specs: req.extra_specs,
            is_default: false,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let inserted = self
            .db
            .create_volume_type(&volume_type)
            .await
            .map_err(ApiError::db(format!(
                "create volume type {}",
                volume_type.name
            )))?;
        if !inserted {
            return Err(ApiError::AlreadyExists {
                kind: "volume_type",
                name: volume_type.name,
            });
        }
        tracing::info!(type_id = %volume_type.id, name = %volume_type.name, "volume type created");
        Ok(volume_type)
    }

    #[tracing::instrument(skip_all, fields(id_or_name = %req.id_or_name))]
    async fn update(
        &self,
        ctx: &RequestContext,
        req: pb::UpdateVolumeTypeRequest,
    ) -> ApiResult<VolumeType> {
        require_admin(ctx, "UpdateVolumeType")?;
        let changes = changes(&req)?;
        let current = self.load(&req.id_or_name).await?;
        if changes == VolumeTypeChanges::default() {
            return Ok(current);
        }
        self.db
            .update_volume_type(&current.id, &changes)
            .await
            .map_err(ApiError::db(format!("update volume type {}", current.id)))?
            .ok_or_else(|| type_not_found(&req.id_or_name))
    }

    #[tracing::instrument(skip_all, fields(id_or_name = %id_or_name))]
    async fn delete(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
    ) -> ApiResult<pb::DeleteVolumeTypeResponse> {
        require_admin(ctx, "DeleteVolumeType")?;
        let current = self.load(id_or_name).await?;
        let outcome = self
            .db
            .delete_volume_type(&current.id)
            .await
            .map_err(ApiError::db(format!("delete volume type {}", current.id)))?;
        match outcome {
            TypeDeleted::Deleted => {
                tracing::info!(type_id = %current.id, name = %current.name, "volume type deleted");
                Ok(pb::DeleteVolumeTypeResponse {})
            }
            TypeDeleted::NotFound => Err(type_not_found(id_or_name)),
            TypeDeleted::Default => Err(ApiError::DefaultType { name: current.name }),
            TypeDeleted::InUse(n) => Err(ApiError::TypeInUse {
                name: current.name,
                volumes: n,
            }),
        }
    }
}

fn type_not_found(id_or_name: &str) -> ApiError {
    ApiError::NotFound {
        kind: "volume_type",
        id: id_or_name.to_owned(),
    }
}

/// Type writes (and the admin service) are for admins only.
pub(crate) fn require_admin(ctx: &RequestContext, method: &str) -> ApiResult<()> {
    if ctx.is_admin() {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "{method} needs the admin role; the caller has [{}]",
        ctx.roles.join(", ")
    )))
}

/// A type name: 1 to [`MAX_TEXT_CHARS`](text::MAX_TEXT_CHARS) characters, not only spaces.
pub fn name(value: &str) -> ApiResult<()> {
    text::required_line("name", value)
}

/// The changes an `UpdateVolumeTypeRequest` asks for, checked.
pub fn changes(req: &pb::UpdateVolumeTypeRequest) -> ApiResult<VolumeTypeChanges> {
    let fields =
        crate::validate::masked_fields(req.update_mask.as_ref(), &UPDATABLE_FIELDS, |field| {
            match field {
                "description" => !req.description.is_empty(),
                _ => !req.extra_specs.is_empty(),
            }
        })?;
    let mut changes = VolumeTypeChanges::default();
    for field in fields {
        match field {
            "description" => changes.description = Some(req.description.clone()),
            _ => changes.extra_specs = Some(req.extra_specs.clone()),
        }
    }
    if let Some(description) = &changes.description {
        text::description("description", description)?;
    }
    if let Some(specs) = &changes.extra_specs {
        extra_specs(specs)?;
    }
    Ok(changes)
}

/// Extra specs: at most [`MAX_EXTRA_SPECS`], keys of 1 to [`MAX_TEXT_CHARS`](text::MAX_TEXT_CHARS)
/// characters, values of at most [`MAX_TEXT_CHARS`](text::MAX_TEXT_CHARS), no control characters
/// (see [`text::entries`]); a value starting with one
/// of Cinder's operators must be complete (`<is>` a boolean, a numeric operator
/// a number, the others an operand), or no backend could ever match it.
pub fn extra_specs(specs: &BTreeMap<String, String>) -> ApiResult<()> {
    text::entries("extra_specs", specs, MAX_EXTRA_SPECS)?;
    for (key, value) in specs {
        let bad = |reason: String| ApiError::invalid(text::entry_name("extra_specs", key), reason);
        spec_value(value).map_err(bad)?;
        if key == "provisioning:type" && !matches!(value.trim(), "thin" | "thick") {
            return Err(bad(format!("must be thin or thick, got {value:?}")));
        }
    }
    Ok(())
}

/// Whether a spec value parses as the scheduler's CapabilitiesFilter reads it.
fn spec_value(value: &str) -> Result<(), String> {
    let mut words = value.split_whitespace();
    let Some(op) = words.next() else {
        return Ok(());
    };
    let operands: Vec<&str> = words.collect();
    match op {
        "<is>" => match operands.as_slice() {
            [word] if is_bool(word) => Ok(()),
            _ => Err(format!("{value:?}: <is> takes one of True or False")),
        },
        "=" | "==" | "!=" | ">=" | "<=" => match operands.as_slice() {
            [number] if number.parse::<f64>().is_ok() => Ok(()),
            _ => Err(format!("{value:?}: {op} takes one number")),
        },
        "s==" | "s!=" | "s<" | "s<=" | "s>" | "s>=" | "<in>" | "<all-in>"
            if operands.is_empty() =>
        {
            Err(format!("{value:?}: {op} takes an operand"))
        }
        "<or>" => {
            // `<or> a <or> b ...`: values at even positions, `<or>` between them.
            let shaped = !operands.is_empty()
                && operands
                    .iter()
                    .enumerate()
                    .all(|(i, w)| (i % 2 == 1) == (*w == "<or>"))
                && operands.len() % 2 == 1;
            if shaped {
                Ok(())
            } else {
                Err(format!("{value:?}: write <or> a <or> b ..."))
            }
        }
        _ => Ok(()),
    }
}

/// The words `oslo.utils` reads as a boolean.
fn is_bool(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "on" | "y" | "yes" | "0" | "f" | "false" | "off" | "n" | "no"
    )
}

#[tonic::async_trait]
impl VolumeTypeService for VolumeTypeApi {
    async fn create_volume_type(
        &self,
        request: Request<pb::CreateVolumeTypeRequest>,
    ) -> Result<Response<pb::VolumeType>, Status> {
        handle_as(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn get_volume_type(
        &self,
        request: Request<pb::GetVolumeTypeRequest>,
    ) -> Result<Response<pb::VolumeType>, Status> {
        handle_as(request, async |_, req| self.load(&req.id_or_name).await).await
    }

    async fn list_volume_types(
        &self,
        request: Request<pb::ListVolumeTypesRequest>,
    ) -> Result<Response<pb::ListVolumeTypesResponse>, Status> {
        handle(request, async |_, _| self.list().await).await
    }

    async fn update_volume_type(
        &self,
        request: Request<pb::UpdateVolumeTypeRequest>,
    ) -> Result<Response<pb::VolumeType>, Status> {
        handle_as(request, async |ctx, req| self.update(ctx, req).await).await
    }

    async fn delete_volume_type(
        &self,
        request: Request<pb::DeleteVolumeTypeRequest>,
    ) -> Result<Response<pb::DeleteVolumeTypeResponse>, Status> {
        handle(request, async |ctx, req| {
            self.delete(ctx, &req.id_or_name).await
        })
        .await
    }
}

#[cfg(test)]
mod tests;
