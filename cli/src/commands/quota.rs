//! `scoria quota show|set|delete`.

use scoria_proto::v1 as pb;

use crate::{args::QuotaCommand, connect::Api, error::CliError, output::Shown, records};

/// Runs a `quota` command.
pub async fn run(api: &Api, command: QuotaCommand) -> Result<Shown, CliError> {
    let quota = match command {
        QuotaCommand::Show {
            project,
            default: true,
        } => {
            let _ = project;
            api.quotas()
                .get_default_quota(pb::GetDefaultQuotaRequest {})
                .await
                .map_err(CliError::request("get the default quota"))?
        }
        QuotaCommand::Show { project, .. } => {
            let project_id = project.unwrap_or_default();
            api.quotas()
                .get_quota(pb::GetQuotaRequest {
                    project_id: project_id.clone(),
                })
                .await
                .map_err(CliError::request(if project_id.is_empty() {
                    "get your project's quota".to_owned()
                } else {
                    format!("get the quota of project {project_id}")
                }))?
        }
        QuotaCommand::Set {
            project,
            volumes,
            gigabytes,
            snapshots,
            attachments,
            per_volume_gigabytes,
            limits,
        } => {
            let mut all: std::collections::BTreeMap<String, i64> = [
                ("volumes", volumes),
                ("gigabytes", gigabytes),
                ("snapshots", snapshots),
                ("attachments", attachments),
                ("per_volume_gigabytes", per_volume_gigabytes),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
            all.extend(limits);
            if all.is_empty() {
                return Err(CliError::Usage(
                    "nothing to set: give --volumes, --gigabytes, ... or --limit RESOURCE=LIMIT"
                        .into(),
                ));
            }
            api.quotas()
                .update_quota(pb::UpdateQuotaRequest {
                    project_id: project.clone(),
                    limits: all.into_iter().collect(),
                })
                .await
                .map_err(CliError::request(format!(
                    "set the quota of project {project}"
                )))?
        }
        QuotaCommand::Delete { project } => api
            .quotas()
            .delete_quota(pb::DeleteQuotaRequest {
                project_id: project.clone(),
            })
            .await
            .map_err(CliError::request(format!(
                "delete the quota of project {project}"
            )))?,
    }
    .into_inner();
    Ok(Shown::Many {
        columns: records::QUOTA_COLUMNS.to_vec(),
        rows: quota.usages.iter().map(records::quota_row).collect(),
    })
}
