//! `scoria transfer ...`: offer a volume to another project, accept, list,
//! show, withdraw.

use scoria_proto::v1 as pb;

use crate::{
    args::TransferCommand, connect::Api, error::CliError, output::Shown, records, resolve,
};

/// Runs a `transfer` command.
pub async fn run(api: &Api, command: TransferCommand) -> Result<Shown, CliError> {
    match command {
        TransferCommand::Create {
            volume,
            name,
            no_snapshots,
        } => {
            let volume_id = resolve::volume(api, &volume).await?.id;
            let made = api
                .transfers()
                .create_transfer(pb::CreateTransferRequest {
                    volume_id,
                    name,
                    no_snapshots,
                })
                .await
                .map_err(CliError::request("create transfer"))?
                .into_inner();
            let transfer = made.transfer.unwrap_or_default();
            Ok(Shown::One(records::transfer(
                &transfer,
                Some(&made.auth_key),
            )))
        }
        TransferCommand::Accept { transfer, auth_key } => {
            let accepted = api
                .transfers()
                .accept_transfer(pb::AcceptTransferRequest {
                    id: transfer.clone(),
                    auth_key,
                })
                .await
                .map_err(CliError::request(format!("accept transfer {transfer}")))?
                .into_inner();
            Ok(Shown::One(records::transfer(&accepted, None)))
        }
        TransferCommand::List { volume } => {
            let volume_id = match volume {
                Some(v) => resolve::volume(api, &v).await?.id,
                None => String::new(),
            };
            let mut transfers = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .transfers()
                    .list_transfers(pb::ListTransfersRequest {
                        page_size: 0,
                        page_token,
                        volume_id: volume_id.clone(),
                    })
                    .await
                    .map_err(CliError::request("list transfers"))?
                    .into_inner();
                transfers.extend(page.transfers);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(Shown::Many {
                columns: records::transfer_columns(),
                rows: transfers.iter().map(records::transfer_row).collect(),
            })
        }
        TransferCommand::Show { transfer } => {
            let shown = api
                .transfers()
                .get_transfer(pb::GetTransferRequest {
                    id: transfer.clone(),
                })
                .await
                .map_err(CliError::request(format!("get transfer {transfer}")))?
                .into_inner();
            Ok(Shown::One(records::transfer(&shown, None)))
        }
        TransferCommand::Delete { transfers } => {
            for id in &transfers {
                api.transfers()
                    .delete_transfer(pb::DeleteTransferRequest { id: id.clone() })
                    .await
                    .map_err(CliError::request(format!("delete transfer {id}")))?;
            }
            Ok(Shown::Nothing)
        }
    }
}
