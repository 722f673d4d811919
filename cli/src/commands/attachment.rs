//! `scoria attachment ...`: CreateAttachment answers once the volume is
//! exported (the connection info, with its NBD URI); `--wait` also follows an
//! attachment the API answered while it was still being made.

use scoria_proto::v1 as pb;

use crate::{
    args::{AttachmentCommand, Mode},
    connect::Api,
    error::CliError,
    output::Shown,
    records, resolve,
    wait::{Step, watch},
};

/// Runs an `attachment` command.
pub async fn run(api: &Api, command: AttachmentCommand) -> Result<Shown, CliError> {
    match command {
        AttachmentCommand::Create {
            volume,
            host,
            ip,
            instance,
            mode,
            wait,
        } => {
            let volume_id = resolve::volume(api, &volume).await?.id;
            let request = pb::CreateAttachmentRequest {
                volume_id,
                connector: Some(pb::Connector {
                    host,
                    ip,
                    ..Default::default()
                }),
                instance_id: instance,
                mode: match mode {
                    Mode::Rw => pb::AttachMode::Rw,
                    Mode::Ro => pb::AttachMode::Ro,
                }
                .into(),
            };
            let attachment = api
                .attachments()
                .create_attachment(request)
                .await
                .map_err(CliError::request("create attachment"))?
                .into_inner();
            let attachment = if wait.wait && attachment.status() != pb::AttachmentStatus::Attached {
                let id = attachment.id.clone();
                let classify = |a: pb::Attachment| {
                    let status = records::attachment_status(a.status());
                    match a.status() {
                        pb::AttachmentStatus::Attached => Step::Done(status, a),
                        pb::AttachmentStatus::ErrorAttaching => {
                            Step::Failed(status, a.error_message)
                        }
                        _ => Step::Pending(status),
                    }
                };
                watch(
                    &format!("attachment {id}"),
                    wait.timeout(),
                    || async {
                        api.attachments()
                            .watch_attachment(pb::WatchAttachmentRequest { id: id.clone() })
                            .await
                            .map(tonic::Response::into_inner)
                    },
                    |m: pb::WatchAttachmentResponse| {
                        if m.deleted {
                            return Err(CliError::Failed(format!("attachment {id} was deleted")));
                        }
                        Ok(classify(m.attachment.unwrap_or_default()))
                    },
                    || async { Ok(classify(get(api, &id).await?)) },
                )
                .await?
            } else {
                attachment
            };
            Ok(Shown::One(records::attachment(&attachment)))
        }
        AttachmentCommand::List { volume } => {
            let volume_id = match volume {
                Some(v) => resolve::volume(api, &v).await?.id,
                None => String::new(),
            };
            let request = pb::ListAttachmentsRequest {
                volume_id,
                ..Default::default()
            };
            let all = resolve::all_attachments(api, request).await?;
            Ok(Shown::Many {
                columns: records::attachment_columns(),
                rows: all.iter().map(records::attachment_row).collect(),
            })
        }
        AttachmentCommand::Show { attachment } => Ok(Shown::One(records::attachment(
            &get(api, &attachment).await?,
        ))),
        AttachmentCommand::Delete { attachments } => {
            for id in attachments {
                api.attachments()
                    .delete_attachment(pb::DeleteAttachmentRequest { id: id.clone() })
                    .await
                    .map_err(CliError::request(format!("delete attachment {id}")))?;
            }
            Ok(Shown::Nothing)
        }
    }
}

async fn get(api: &Api, id: &str) -> Result<pb::Attachment, CliError> {
    api.attachments()
        .get_attachment(pb::GetAttachmentRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
        .map_err(CliError::request(format!("get attachment {id}")))
}
