//! `scoria snapshot ...`.

use scoria_proto::v1 as pb;
use tonic::Code;

use crate::{
    args::{ManageSnapshotArgs, SnapshotCommand, UnmanageSnapshotArgs, WaitArgs},
    connect::Api,
    error::CliError,
    output::Shown,
    records, resolve,
    wait::{Step, watch},
};

/// Runs a `snapshot` command.
pub async fn run(api: &Api, command: SnapshotCommand) -> Result<Shown, CliError> {
    match command {
        SnapshotCommand::Create {
            volume,
            name,
            description,
            force,
            wait,
        } => {
            let volume_id = resolve::volume(api, &volume).await?.id;
            let snapshot = api
                .snapshots()
                .create_snapshot(pb::CreateSnapshotRequest {
                    volume_id,
                    name,
                    description,
                    force,
                })
                .await
                .map_err(CliError::request("create snapshot"))?
                .into_inner();
            let snapshot = if wait.wait {
                until_available(api, &snapshot.id, wait).await?
            } else {
                snapshot
            };
            Ok(Shown::One(records::snapshot(&snapshot)))
        }
        SnapshotCommand::List {
            volume,
            status,
            long,
        } => {
            let volume_id = match volume {
                Some(v) => resolve::volume(api, &v).await?.id,
                None => String::new(),
            };
            let status = status
                .as_deref()
                .map(records::parse_snapshot_status)
                .transpose()?
                .unwrap_or(pb::SnapshotStatus::Unspecified);
            let request = pb::ListSnapshotsRequest {
                volume_id,
                status: status.into(),
                ..Default::default()
            };
            let snapshots = resolve::all_snapshots(api, request).await?;
            Ok(Shown::Many {
                columns: records::snapshot_columns(long),
                rows: snapshots.iter().map(records::snapshot_row).collect(),
            })
        }
        SnapshotCommand::Show { snapshot } => Ok(Shown::One(records::snapshot(
            &resolve::snapshot(api, &snapshot).await?,
        ))),
        SnapshotCommand::Delete { snapshots, wait } => {
            let mut ids = Vec::new();
            for s in &snapshots {
                let id = resolve::snapshot(api, s).await?.id;
                api.snapshots()
                    .delete_snapshot(pb::DeleteSnapshotRequest { id: id.clone() })
                    .await
                    .map_err(CliError::request(format!("delete snapshot {id}")))?;
                ids.push(id);
            }
            if wait.wait {
                for id in &ids {
                    until_gone(api, id, wait).await?;
                }
            }
            Ok(Shown::Nothing)
        }
        SnapshotCommand::Manage(args) => manage(api, args).await,
        SnapshotCommand::Unmanage(args) => unmanage(api, args).await,
    }
}

/// `snapshot manage`.
async fn manage(api: &Api, args: ManageSnapshotArgs) -> Result<Shown, CliError> {
    let volume_id = resolve::volume(api, &args.volume).await?.id;
    let reference = args.reference;
    let managing = api
        .admin()
        .manage_snapshot(pb::ManageSnapshotRequest {
            volume_id: volume_id.clone(),
            reference: reference.clone(),
            name: args.name,
            description: args.description,
        })
        .await
        .map_err(CliError::request(format!(
            "manage {reference:?} as a snapshot of volume {volume_id}"
        )))?
        .into_inner();
    let snapshot = if args.wait.wait {
        until_available(api, &managing.id, args.wait).await?
    } else {
        managing
    };
    Ok(Shown::One(records::snapshot(&snapshot)))
}

/// `snapshot unmanage`: shows the snapshot as it was.
async fn unmanage(api: &Api, args: UnmanageSnapshotArgs) -> Result<Shown, CliError> {
    let id = resolve::snapshot(api, &args.snapshot).await?.id;
    let unmanaged = api
        .admin()
        .unmanage_snapshot(pb::UnmanageSnapshotRequest {
            snapshot_id: id.clone(),
        })
        .await
        .map_err(CliError::request(format!("unmanage snapshot {id}")))?
        .into_inner();
    Ok(Shown::One(records::snapshot(&unmanaged)))
}

async fn get(api: &Api, id: &str) -> Result<pb::Snapshot, tonic::Status> {
    api.snapshots()
        .get_snapshot(pb::GetSnapshotRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
}

async fn until_available(api: &Api, id: &str, wait: WaitArgs) -> Result<pb::Snapshot, CliError> {
    let classify = |s: pb::Snapshot| {
        let status = records::snapshot_status(s.status());
        match s.status() {
            pb::SnapshotStatus::Available => Step::Done(status, s),
            pb::SnapshotStatus::Error
            | pb::SnapshotStatus::ErrorDeleting
            | pb::SnapshotStatus::ErrorManaging => Step::Failed(status, s.error_message),
            _ => Step::Pending(status),
        }
    };
    watch(
        &format!("snapshot {id}"),
        wait.timeout(),
        || open(api, id),
        |m: pb::WatchSnapshotResponse| {
            if m.deleted {
                return Err(CliError::Failed(format!("snapshot {id} was deleted")));
            }
            Ok(classify(m.snapshot.unwrap_or_default()))
        },
        || async {
            let s = get(api, id)
                .await
                .map_err(CliError::request(format!("get snapshot {id}")))?;
            Ok(classify(s))
        },
    )
    .await
}

/// WatchSnapshot `id`.
async fn open(
    api: &Api,
    id: &str,
) -> Result<tonic::Streaming<pb::WatchSnapshotResponse>, tonic::Status> {
    api.snapshots()
        .watch_snapshot(pb::WatchSnapshotRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
}

async fn until_gone(api: &Api, id: &str, wait: WaitArgs) -> Result<(), CliError> {
    let classify = |s: pb::Snapshot| {
        let status = records::snapshot_status(s.status());
        match s.status() {
            pb::SnapshotStatus::ErrorDeleting => Step::Failed(status, s.error_message),
            _ => Step::Pending(status),
        }
    };
    watch(
        &format!("snapshot {id}"),
        wait.timeout(),
        || open(api, id),
        |m: pb::WatchSnapshotResponse| {
            Ok(if m.deleted {
                Step::Done("deleted".into(), ())
            } else {
                classify(m.snapshot.unwrap_or_default())
            })
        },
        || async {
            match get(api, id).await {
                Err(status) if status.code() == Code::NotFound => {
                    Ok(Step::Done("deleted".into(), ()))
                }
                Err(status) => Err(CliError::request(format!("get snapshot {id}"))(status)),
                Ok(s) => Ok(classify(s)),
            }
        },
    )
    .await
}
