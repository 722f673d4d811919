//! Names or ids, wherever a command names a volume or a snapshot: an id is
//! looked up as such; anything else is a name, which must match exactly one of
//! the caller's resources (several are an error listing their ids).

use scoria_proto::v1 as pb;
use tonic::Code;

use crate::{connect::Api, error::CliError};

fn is_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok()
}

/// The one of `matches` (ids), or why not.
fn one(kind: &str, name: &str, matches: Vec<String>) -> Result<String, CliError> {
    match matches.as_slice() {
        [id] => Ok(id.clone()),
        [] => Err(CliError::Failed(format!(
            "no {kind} with the name or id {name:?}"
        ))),
        ids => Err(CliError::Failed(format!(
            "{} {kind}s are named {name:?}: use an id ({})",
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// The volume `name_or_id` names.
pub async fn volume(api: &Api, name_or_id: &str) -> Result<pb::Volume, CliError> {
    if is_id(name_or_id) {
        let got = api
            .volumes()
            .get_volume(pb::GetVolumeRequest {
                id: name_or_id.to_owned(),
            })
            .await;
        match got {
            Ok(v) => return Ok(v.into_inner()),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => {
                return Err(CliError::request(format!("get volume {name_or_id}"))(
                    status,
                ));
            }
        }
    }
    let request = pb::ListVolumesRequest {
        name: name_or_id.to_owned(),
        ..Default::default()
    };
    let matches = all_volumes(api, request).await?;
    let id = one(
        "volume",
        name_or_id,
        matches.iter().map(|v| v.id.clone()).collect(),
    )?;
    Ok(matches.into_iter().find(|v| v.id == id).unwrap_or_default())
}

/// The snapshot `name_or_id` names.
pub async fn snapshot(api: &Api, name_or_id: &str) -> Result<pb::Snapshot, CliError> {
    if is_id(name_or_id) {
        let got = api
            .snapshots()
            .get_snapshot(pb::GetSnapshotRequest {
                id: name_or_id.to_owned(),
            })
            .await;
        match got {
            Ok(s) => return Ok(s.into_inner()),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => {
                return Err(CliError::request(format!("get snapshot {name_or_id}"))(
                    status,
                ));
            }
        }
    }
    let matches: Vec<pb::Snapshot> = all_snapshots(api, pb::ListSnapshotsRequest::default())
        .await?
        .into_iter()
        .filter(|s| s.name == name_or_id)
        .collect();
    let id = one(
        "snapshot",
        name_or_id,
        matches.iter().map(|s| s.id.clone()).collect(),
    )?;
    Ok(matches.into_iter().find(|s| s.id == id).unwrap_or_default())
}

/// Every volume `request` lists, across pages.
pub async fn all_volumes(
    api: &Api,
    mut request: pb::ListVolumesRequest,
) -> Result<Vec<pb::Volume>, CliError> {
    let mut all = Vec::new();
    request.page_size = 1000;
    loop {
        let page = api
            .volumes()
            .list_volumes(request.clone())
            .await
            .map_err(CliError::request("list volumes"))?
            .into_inner();
        all.extend(page.volumes);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

/// Every attachment `request` lists, across pages.
pub async fn all_attachments(
    api: &Api,
    mut request: pb::ListAttachmentsRequest,
) -> Result<Vec<pb::Attachment>, CliError> {
    let mut all = Vec::new();
    request.page_size = 1000;
    loop {
        let page = api
            .attachments()
            .list_attachments(request.clone())
            .await
            .map_err(CliError::request("list attachments"))?
            .into_inner();
        all.extend(page.attachments);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

/// Every snapshot `request` lists, across pages.
pub async fn all_snapshots(
    api: &Api,
    mut request: pb::ListSnapshotsRequest,
) -> Result<Vec<pb::Snapshot>, CliError> {
    let mut all = Vec::new();
    request.page_size = 1000;
    loop {
        let page = api
            .snapshots()
            .list_snapshots(request.clone())
            .await
            .map_err(CliError::request("list snapshots"))?
            .into_inner();
        all.extend(page.snapshots);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_must_match_exactly_one() {
        assert_eq!(one("volume", "a", vec!["x".into()]).expect("one"), "x");
        let none = one("volume", "a", vec![]).expect_err("none");
        assert!(
            none.to_string()
                .contains("no volume with the name or id \"a\""),
            "{none}"
        );
        let many = one("volume", "a", vec!["x".into(), "y".into()]).expect_err("many");
        assert_eq!(
            many.to_string(),
            "2 volumes are named \"a\": use an id (x, y)"
        );
    }
}
