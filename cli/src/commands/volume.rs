//! `scoria volume ...`.

use scoria_proto::v1 as pb;
use tonic::{Code, Status};

use super::volume_admin;
use crate::{
    args::{VolumeCommand, WaitArgs},
    connect::Api,
    error::CliError,
    output::Shown,
    records, resolve,
    wait::{Step, watch},
};

/// Runs a `volume` command.
pub async fn run(api: &Api, command: VolumeCommand) -> Result<Shown, CliError> {
    match command {
        VolumeCommand::Create {
            size,
            name,
            description,
            volume_type,
            availability_zone,
            snapshot,
            source,
            properties,
            request_id,
            wait,
        } => {
            let source = match (snapshot, source) {
                (Some(s), _) => Some(pb::create_volume_request::Source::SnapshotId(
                    resolve::snapshot(api, &s).await?.id,
                )),
                (None, Some(v)) => Some(pb::create_volume_request::Source::SourceVolumeId(
                    resolve::volume(api, &v).await?.id,
                )),
                (None, None) => None,
            };
            let request = pb::CreateVolumeRequest {
                name,
                description,
                size_gib: size,
                volume_type,
                availability_zone,
                metadata: properties.into_iter().collect(),
                source,
                request_id,
            };
            let volume = api
                .volumes()
                .create_volume(request)
                .await
                .map_err(CliError::request("create volume"))?
                .into_inner();
            let volume = if wait.wait {
                until_available(api, &volume.id, wait, None).await?
            } else {
                volume
            };
            Ok(Shown::One(records::volume(&volume)))
        }
        VolumeCommand::List {
            long,
            status,
            name,
            all_projects,
            limit,
            marker,
        } => {
            let status = status
                .as_deref()
                .map(records::parse_volume_status)
                .transpose()?
                .unwrap_or(pb::VolumeStatus::Unspecified);
            let volumes = list(
                api,
                status,
                name.unwrap_or_default(),
                all_projects,
                limit,
                marker,
            )
            .await?;
            Ok(Shown::Many {
                columns: records::volume_columns(long),
                rows: volumes.iter().map(records::volume_row).collect(),
            })
        }
        VolumeCommand::Show { volume } => Ok(Shown::One(records::volume(
            &resolve::volume(api, &volume).await?,
        ))),
        VolumeCommand::Set {
            volume,
            name,
            description,
            properties,
            unset,
        } => {
            let current = resolve::volume(api, &volume).await?;
            let mut paths = Vec::new();
            if name.is_some() {
                paths.push("name".to_owned());
            }
            if description.is_some() {
                paths.push("description".to_owned());
            }
            let mut metadata = current.metadata.clone();
            if !properties.is_empty() || !unset.is_empty() {
                for key in &unset {
                    if metadata.remove(key).is_none() {
                        return Err(CliError::Failed(format!(
                            "volume {} has no property {key:?}",
                            current.id
                        )));
                    }
                }
                metadata.extend(properties);
                paths.push("metadata".to_owned());
            }
            if paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to set: give --name, --description, --property or --unset-property"
                        .into(),
                ));
            }
            let updated = api
                .volumes()
                .update_volume(pb::UpdateVolumeRequest {
                    id: current.id.clone(),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    name: name.unwrap_or_default(),
                    description: description.unwrap_or_default(),
                    metadata,
                })
                .await
                .map_err(CliError::request(format!("update volume {}", current.id)))?
                .into_inner();
            Ok(Shown::One(records::volume(&updated)))
        }
        VolumeCommand::Delete { volumes, wait } => {
            let mut ids = Vec::new();
            for v in &volumes {
                let id = resolve::volume(api, v).await?.id;
                api.volumes()
                    .delete_volume(pb::DeleteVolumeRequest { id: id.clone() })
                    .await
                    .map_err(CliError::request(format!("delete volume {id}")))?;
                ids.push(id);
            }
            if wait.wait {
                for id in &ids {
                    until_gone(api, id, wait).await?;
                }
            }
            Ok(Shown::Nothing)
        }
        VolumeCommand::Extend { volume, size, wait } => {
            let id = resolve::volume(api, &volume).await?.id;
            let extended = api
                .volumes()
                .extend_volume(pb::ExtendVolumeRequest {
                    id: id.clone(),
                    new_size_gib: size,
                })
                .await
                .map_err(CliError::request(format!("extend volume {id}")))?
                .into_inner();
            let volume = if wait.wait {
                until_available(api, &id, wait, Some(size)).await?
            } else {
                extended
            };
            Ok(Shown::One(records::volume(&volume)))
        }
        VolumeCommand::ResetState { volume, state } => {
            let status = records::parse_volume_status(&state)?;
            let id = resolve::volume(api, &volume).await?.id;
            let reset = api
                .admin()
                .reset_volume_status(pb::ResetVolumeStatusRequest {
                    volume_id: id.clone(),
                    status: status.into(),
                })
                .await
                .map_err(CliError::request(format!(
                    "reset the status of volume {id}"
                )))?
                .into_inner();
            Ok(Shown::One(records::volume(&reset)))
        }
        VolumeCommand::Retype(args) => volume_admin::retype(api, args).await,
        VolumeCommand::Migrate(args) => volume_admin::migrate(api, args).await,
        VolumeCommand::Revert(args) => volume_admin::revert(api, args).await,
        VolumeCommand::Manage(args) => volume_admin::manage(api, args).await,
        VolumeCommand::Unmanage(args) => volume_admin::unmanage(api, args).await,
    }
}

/// ListVolumes across pages, starting after `marker` (an id), at most `limit`.
async fn list(
    api: &Api,
    status: pb::VolumeStatus,
    name: String,
    all_projects: bool,
    limit: Option<usize>,
    marker: Option<String>,
) -> Result<Vec<pb::Volume>, CliError> {
    let request = pb::ListVolumesRequest {
        status: status.into(),
        name,
        all_projects,
        ..Default::default()
    };
    let mut volumes = resolve::all_volumes(api, request).await?;
    if let Some(marker) = marker {
        let at = volumes.iter().position(|v| v.id == marker).ok_or_else(|| {
            CliError::Failed(format!("--marker {marker}: no such volume in this list"))
        })?;
        volumes.drain(..=at);
    }
    if let Some(limit) = limit {
        volumes.truncate(limit);
    }
    Ok(volumes)
}

async fn get(api: &Api, id: &str) -> Result<pb::Volume, tonic::Status> {
    api.volumes()
        .get_volume(pb::GetVolumeRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
}

/// Follows volume `id` until it is `available` (with `size` GiB, when given).
pub(super) async fn until_available(
    api: &Api,
    id: &str,
    wait: WaitArgs,
    size: Option<u64>,
) -> Result<pb::Volume, CliError> {
    follow(api, id, wait, |v: pb::Volume| {
        let status = records::volume_status(v.status());
        match v.status() {
            pb::VolumeStatus::Available | pb::VolumeStatus::InUse
                if size.is_none_or(|s| v.size_gib >= s) =>
            {
                Step::Done(status, v)
            }
            pb::VolumeStatus::Error
            | pb::VolumeStatus::ErrorExtending
            | pb::VolumeStatus::ErrorDeleting
            | pb::VolumeStatus::ErrorManaging => Step::Failed(status, v.error_message),
            _ => Step::Pending(status),
        }
    })
    .await
}

/// Follows volume `id` until `classify` says it settled (its deletion
/// meanwhile is an error).
pub(super) async fn follow(
    api: &Api,
    id: &str,
    wait: WaitArgs,
    classify: impl Fn(pb::Volume) -> Step<pb::Volume>,
) -> Result<pb::Volume, CliError> {
    watch(
        &format!("volume {id}"),
        wait.timeout(),
        || open(api, id),
        |m: pb::WatchVolumeResponse| {
            if m.deleted {
                return Err(CliError::Failed(format!("volume {id} was deleted")));
            }
            Ok(classify(m.volume.unwrap_or_default()))
        },
        || async {
            let v = get(api, id)
                .await
                .map_err(CliError::request(format!("get volume {id}")))?;
            Ok(classify(v))
        },
    )
    .await
}

/// WatchVolume `id`.
async fn open(api: &Api, id: &str) -> Result<tonic::Streaming<pb::WatchVolumeResponse>, Status> {
    api.volumes()
        .watch_volume(pb::WatchVolumeRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
}

/// Follows volume `id` until it is gone.
async fn until_gone(api: &Api, id: &str, wait: WaitArgs) -> Result<(), CliError> {
    let classify = |v: pb::Volume| {
        let status = records::volume_status(v.status());
        match v.status() {
            pb::VolumeStatus::ErrorDeleting | pb::VolumeStatus::Error => {
                Step::Failed(status, v.error_message)
            }
            _ => Step::Pending(status),
        }
    };
    watch(
        &format!("volume {id}"),
        wait.timeout(),
        || open(api, id),
        |m: pb::WatchVolumeResponse| {
            Ok(if m.deleted {
                Step::Done("deleted".into(), ())
            } else {
                classify(m.volume.unwrap_or_default())
            })
        },
        || async {
            match get(api, id).await {
                Err(status) if status.code() == Code::NotFound => {
                    Ok(Step::Done("deleted".into(), ()))
                }
                Err(status) => Err(CliError::request(format!("get volume {id}"))(status)),
                Ok(v) => Ok(classify(v)),
            }
        },
    )
    .await
}
