//! `scoria volume retype|migrate|revert|manage|unmanage`: a volume moved to
//! another type or backend, rolled back to its newest snapshot, adopted from an
//! object a backend holds, or given up without its data.
//!
//! ```text
//!  retype  --wait: retyping ─▶ available, new type         (done)
//!                           └▶ available, old type         (failed: migration_error)
//!  migrate --wait: maintenance ─▶ available, migration success   (done)
//!                              └▶ available, migration error     (failed: migration_error)
//!  revert  --wait: reverting ─▶ available | error
//!  manage  --wait: managing  ─▶ available | error_managing
//! ```

use scoria_proto::v1 as pb;

use super::volume::{follow, until_available};
use crate::{
    args::{
        ManageVolumeArgs, MigrateArgs, MigrationPolicy, RetypeArgs, RevertArgs, UnmanageVolumeArgs,
    },
    connect::Api,
    error::CliError,
    output::Shown,
    records, resolve,
    wait::Step,
};

/// `volume retype`.
pub(super) async fn retype(api: &Api, args: RetypeArgs) -> Result<Shown, CliError> {
    let id = resolve::volume(api, &args.volume).await?.id;
    let policy = match args.migration_policy {
        MigrationPolicy::Never => pb::MigrationPolicy::Never,
        MigrationPolicy::OnDemand => pb::MigrationPolicy::OnDemand,
    };
    let retyping = api
        .volumes()
        .retype_volume(pb::RetypeVolumeRequest {
            id: id.clone(),
            new_volume_type: args.volume_type.clone(),
            migration_policy: policy.into(),
        })
        .await
        .map_err(CliError::request(format!("retype volume {id}")))?
        .into_inner();
    if !args.wait.wait {
        return Ok(Shown::One(records::volume(&retyping)));
    }
    // The type changes only when the retype succeeds; a failed one leaves the
    // volume available with its old type and `migration_error`.
    let old_type = retyping.volume_type.clone();
    let new_type = args.volume_type;
    let volume = follow(api, &id, args.wait, |v: pb::Volume| {
        let status = records::volume_status(v.status());
        match v.status() {
            pb::VolumeStatus::Available | pb::VolumeStatus::InUse if v.volume_type != old_type => {
                Step::Done(status, v)
            }
            pb::VolumeStatus::Available | pb::VolumeStatus::InUse => Step::Failed(
                format!("{status} with its type {old_type:?}"),
                format!("the retype to {new_type:?} failed: {}", v.migration_error),
            ),
            pb::VolumeStatus::Error => Step::Failed(status, v.error_message),
            _ => Step::Pending(status),
        }
    })
    .await?;
    Ok(Shown::One(records::volume(&volume)))
}

/// `volume migrate`.
pub(super) async fn migrate(api: &Api, args: MigrateArgs) -> Result<Shown, CliError> {
    let id = resolve::volume(api, &args.volume).await?.id;
    let migrating = api
        .admin()
        .migrate_volume(pb::MigrateVolumeRequest {
            volume_id: id.clone(),
            host: args.host,
        })
        .await
        .map_err(CliError::request(format!("migrate volume {id}")))?
        .into_inner();
    if !args.wait.wait {
        return Ok(Shown::One(records::volume(&migrating)));
    }
    let volume = follow(api, &id, args.wait, |v: pb::Volume| {
        let status = records::volume_status(v.status());
        match (v.status(), v.migration_status()) {
            (pb::VolumeStatus::Maintenance, _) => Step::Pending(status),
            (pb::VolumeStatus::Error, _) => Step::Failed(status, v.error_message),
            (_, pb::MigrationStatus::Error) => Step::Failed(
                format!("{status} on {} (migration_status error)", v.host),
                v.migration_error,
            ),
            _ => Step::Done(status, v),
        }
    })
    .await?;
    Ok(Shown::One(records::volume(&volume)))
}

/// `volume revert`.
pub(super) async fn revert(api: &Api, args: RevertArgs) -> Result<Shown, CliError> {
    let id = resolve::volume(api, &args.volume).await?.id;
    let snapshot_id = resolve::snapshot(api, &args.snapshot).await?.id;
    let reverting = api
        .volumes()
        .revert_volume_to_snapshot(pb::RevertVolumeToSnapshotRequest {
            id: id.clone(),
            snapshot_id: snapshot_id.clone(),
        })
        .await
        .map_err(CliError::request(format!(
            "revert volume {id} to snapshot {snapshot_id}"
        )))?
        .into_inner();
    let volume = if args.wait.wait {
        until_available(api, &id, args.wait, None).await?
    } else {
        reverting
    };
    Ok(Shown::One(records::volume(&volume)))
}

/// `volume manage`.
pub(super) async fn manage(api: &Api, args: ManageVolumeArgs) -> Result<Shown, CliError> {
    let reference = args.reference;
    let host = args.host;
    let managing = api
        .admin()
        .manage_volume(pb::ManageVolumeRequest {
            host: host.clone(),
            reference: reference.clone(),
            name: args.name,
            description: args.description,
            volume_type: args.volume_type,
            metadata: args.properties.into_iter().collect(),
            project_id: args.project,
        })
        .await
        .map_err(CliError::request(format!("manage {reference:?} on {host}")))?
        .into_inner();
    let volume = if args.wait.wait {
        until_available(api, &managing.id, args.wait, None).await?
    } else {
        managing
    };
    Ok(Shown::One(records::volume(&volume)))
}

/// `volume unmanage`: shows the volume as it was (its host holds the object).
pub(super) async fn unmanage(api: &Api, args: UnmanageVolumeArgs) -> Result<Shown, CliError> {
    let id = resolve::volume(api, &args.volume).await?.id;
    let unmanaged = api
        .admin()
        .unmanage_volume(pb::UnmanageVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .map_err(CliError::request(format!("unmanage volume {id}")))?
        .into_inner();
    Ok(Shown::One(records::volume(&unmanaged)))
}
