//! `scoria type ...`.

use scoria_proto::v1 as pb;

use crate::{args::TypeCommand, connect::Api, error::CliError, output::Shown, records};

/// Runs a `type` command.
pub async fn run(api: &Api, command: TypeCommand) -> Result<Shown, CliError> {
    match command {
        TypeCommand::Create {
            name,
            description,
            properties,
        } => {
            let created = api
                .types()
                .create_volume_type(pb::CreateVolumeTypeRequest {
                    name: name.clone(),
                    description,
                    extra_specs: properties.into_iter().collect(),
                })
                .await
                .map_err(CliError::request(format!("create volume type {name}")))?
                .into_inner();
            Ok(Shown::One(records::volume_type(&created)))
        }
        TypeCommand::List { long } => {
            let types = api
                .types()
                .list_volume_types(pb::ListVolumeTypesRequest {})
                .await
                .map_err(CliError::request("list volume types"))?
                .into_inner()
                .volume_types;
            Ok(Shown::Many {
                columns: records::type_columns(long),
                rows: types.iter().map(records::type_row).collect(),
            })
        }
        TypeCommand::Show { volume_type } => Ok(Shown::One(records::volume_type(
            &get(api, &volume_type).await?,
        ))),
        TypeCommand::Set {
            volume_type,
            description,
            properties,
        } => {
            let current = get(api, &volume_type).await?;
            let mut paths = Vec::new();
            if description.is_some() {
                paths.push("description".to_owned());
            }
            let mut specs = current.extra_specs.clone();
            if !properties.is_empty() {
                specs.extend(properties);
                paths.push("extra_specs".to_owned());
            }
            if paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to set: give --description or --property".into(),
                ));
            }
            update(api, &current, paths, description.unwrap_or_default(), specs).await
        }
        TypeCommand::Unset {
            volume_type,
            properties,
        } => {
            let current = get(api, &volume_type).await?;
            let mut specs = current.extra_specs.clone();
            for key in &properties {
                if specs.remove(key).is_none() {
                    return Err(CliError::Failed(format!(
                        "volume type {} has no property {key:?}",
                        current.name
                    )));
                }
            }
            let paths = vec!["extra_specs".to_owned()];
            update(api, &current, paths, String::new(), specs).await
        }
        TypeCommand::Delete { volume_types } => {
            for t in volume_types {
                api.types()
                    .delete_volume_type(pb::DeleteVolumeTypeRequest {
                        id_or_name: t.clone(),
                    })
                    .await
                    .map_err(CliError::request(format!("delete volume type {t}")))?;
            }
            Ok(Shown::Nothing)
        }
    }
}

async fn get(api: &Api, id_or_name: &str) -> Result<pb::VolumeType, CliError> {
    api.types()
        .get_volume_type(pb::GetVolumeTypeRequest {
            id_or_name: id_or_name.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(CliError::request(format!("get volume type {id_or_name}")))
}

async fn update(
    api: &Api,
    current: &pb::VolumeType,
    paths: Vec<String>,
    description: String,
    extra_specs: std::collections::BTreeMap<String, String>,
) -> Result<Shown, CliError> {
    let updated = api
        .types()
        .update_volume_type(pb::UpdateVolumeTypeRequest {
            id_or_name: current.id.clone(),
            update_mask: Some(prost_types::FieldMask { paths }),
            description,
            extra_specs,
        })
        .await
        .map_err(CliError::request(format!(
            "update volume type {}",
            current.name
        )))?
        .into_inner();
    Ok(Shown::One(records::volume_type(&updated)))
}
