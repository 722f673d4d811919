//! `scoria.v1.TransferService`: a volume given to another project (Cinder's
//! os-volume-transfer). Everything happens in the database, in one transaction
//! per step (see `scoria_common::db` transfers): no volume service is involved,
//! the volume's bytes stay where they are.
//!
//! ```text
//!  CreateTransfer: volume available ─CAS─▶ awaiting-transfer + transfer row (salt, SHA-256)
//!  AcceptTransfer: key checked (wrong: counted, PERMISSION_DENIED) ─▶ in one transaction:
//!                  row removed, receiver's quota checked, volume + snapshots moved, available
//!  DeleteTransfer: row removed, volume ─CAS─▶ available
//!  sweep (every API instance, `sweep.rs`): lapsed rows removed, volumes available
//! ```
//!
//! The transfer row is the owner record of `awaiting-transfer`: its deadline is
//! `expires_at`, and the sweep of any API instance settles it (racing sweeps
//! remove each row once).

mod key;
mod sweep;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use scoria_common::{
    RequestContext,
    db::{Db, TransferAccept, TransferCreate, TransferQuery},
    events::{Event, Notifications},
    model::{Transfer, VolumeStatus, now_ms},
};
use scoria_proto::v1::{self as pb, transfer_service_server::TransferService};
use tonic::{Request, Response, Status};

pub use sweep::{interval_for, sweep_expired};

use crate::{
    error::{ApiError, ApiResult},
    page_token::{PageToken, filter_digest, finish_page},
    request::{handle, handle_as},
    scope, validate,
};

/// The longest auth key accepted (a key is 32 characters; anything much longer
/// is not one, and is refused before it is hashed).
const MAX_KEY_CHARS: usize = 256;

/// The `TransferService` implementation.
#[derive(Clone)]
pub struct TransferApi {
    db: Db,
    notifications: Arc<dyn Notifications>,
    /// How long an offer stands (`api.transfer_expiry_secs`).
    expiry: Duration,
}

impl TransferApi {
    /// The service over `db`, announcing through `notifications`; offers lapse
    /// after `expiry`.
    pub fn new(db: Db, notifications: Arc<dyn Notifications>, expiry: Duration) -> Self {
        Self {
            db,
            notifications,
            expiry,
        }
    }

    /// The pending transfer `id` if the caller may see it (its source
    /// project's, or any for admins); a lapsed one is not found.
    async fn load(&self, ctx: &RequestContext, id: &str) -> ApiResult<Transfer> {
        let found = self
            .db
            .get_transfer(id)
            .await
            .map_err(ApiError::db(format!("get transfer {id}")))?;
        found
            .filter(|t| ctx.is_admin() || t.source_project_id == ctx.project_id)
            .filter(|t| t.expires_at_ms > now_ms())
            .ok_or_else(|| not_found(id))
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, transfer_id))]
    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateTransferRequest,
    ) -> ApiResult<pb::CreateTransferResponse> {
        let volume_id = validate::uuid("volume_id", &req.volume_id)?;
        validate::text::line("name", &req.name)?;
        let volume = scope::load(ctx, "volume", &volume_id, self.db.get_volume(&volume_id)).await?;
        if volume.status != VolumeStatus::Available {
            return Err(not_transferable(&volume));
        }
        let key = key::NewKey::generate()?;
        let now = now_ms();
        let expiry_ms = i64::try_from(self.expiry.as_millis()).unwrap_or(i64::MAX);
        let transfer = Transfer {
            id: uuid::Uuid::new_v4().to_string(),
            volume_id: volume_id.clone(),
            name: req.name,
            // The volume's project: an admin offering it offers the owner's.
            source_project_id: volume.project_id.clone(),
            user_id: ctx.user_id.clone(),
            salt: key.salt,
            key_hash: key.hash,
            no_snapshots: req.no_snapshots,
            failed_attempts: 0,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(expiry_ms),
            destination_project_id: None,
        };
        tracing::Span::current().record("transfer_id", transfer.id.as_str());
        self.announce(ctx, Event::TransferCreateStart, &transfer);
        let created = self
            .db
            .create_transfer(&transfer)
            .await
            .map_err(ApiError::db(format!("offer volume {volume_id}")));
        let refusal = match created {
            Ok(TransferCreate::Created) => None,
            Ok(TransferCreate::HasSnapshots(snapshots)) => Some(ApiError::HasSnapshots {
                id: volume_id.clone(),
                snapshots,
                then: "transfer them with it (no_snapshots false) or delete them first",
            }),
            Ok(TransferCreate::WrongStatus) => {
                // It changed between the read and the compare-and-set.
                let now =
                    scope::load(ctx, "volume", &volume_id, self.db.get_volume(&volume_id)).await;
                Some(match now {
                    Ok(volume) => not_transferable(&volume),
                    Err(err) => err,
                })
            }
            Err(err) => Some(err),
        };
        if let Some(err) = refusal {
            self.announce(ctx, Event::TransferCreateError, &transfer);
            return Err(err);
        }
        self.announce(ctx, Event::TransferCreateEnd, &transfer);
        tracing::info!(transfer_id = %transfer.id, volume_id = %volume_id, expires_at_ms = transfer.expires_at_ms, "volume offered for transfer");
        Ok(pb::CreateTransferResponse {
            transfer: Some(pb::Transfer::from(&transfer)),
            auth_key: key.key,
        })
    }

    #[tracing::instrument(skip_all, fields(transfer_id = %req.id))]
    async fn accept(
        &self,
        ctx: &RequestContext,
        req: pb::AcceptTransferRequest,
    ) -> ApiResult<Transfer> {
        let id = validate::uuid("id", &req.id)?;
        if req.auth_key.is_empty() {
            return Err(ApiError::invalid("auth_key", "must not be empty"));
        }
        if req.auth_key.chars().count() > MAX_KEY_CHARS {
            return Err(ApiError::invalid(
                "auth_key",
                format!("must be at most {MAX_KEY_CHARS} characters"),
            ));
        }
        let presented = req.auth_key;
        let accepted = self
            .db
            .accept_transfer(&id, &ctx.project_id, &ctx.user_id, now_ms(), |t| {
                self.announce(ctx, Event::TransferAcceptStart, t);
                key::matches(&t.salt, &t.key_hash, &presented)
            })
            .await;
        match accepted {
            Ok(TransferAccept::Accepted(done)) => {
                let (transfer, volume) = *done;
                self.announce(ctx, Event::TransferAcceptEnd, &transfer);
                tracing::info!(transfer_id = %id, volume_id = %volume.id, from = %transfer.source_project_id, to = %ctx.project_id, "transfer accepted");
                Ok(transfer)
            }
            Ok(TransferAccept::NotFound) => Err(not_found(&id)),
            Ok(TransferAccept::OwnProject) => Err(ApiError::WrongStatus {
                kind: "transfer",
                id,
                status: "offered by the caller's own project".to_owned(),
                detail: ": a project cannot accept its own transfer (delete it instead)".to_owned(),
            }),
            Ok(TransferAccept::WrongKey) => {
                crate::metrics::transfer_key_rejections().inc();
                tracing::warn!(transfer_id = %id, project_id = %ctx.project_id, user_id = %ctx.user_id, "transfer accept with a wrong auth key");
                self.announce_id(ctx, Event::TransferAcceptError, &id).await;
                Err(ApiError::PermissionDenied(format!(
                    "wrong auth key for transfer {id}"
                )))
            }
            Err(err) => {
                self.announce_id(ctx, Event::TransferAcceptError, &id).await;
                Err(ApiError::db(format!("accept transfer {id}"))(err))
            }
        }
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        ctx: &RequestContext,
        req: pb::ListTransfersRequest,
    ) -> ApiResult<pb::ListTransfersResponse> {
        let limit = validate::page_size(req.page_size)?;
        let volume_id = match req.volume_id.as_str() {
            "" => None,
            id => Some(validate::uuid("volume_id", id)?),
        };
        let digest = filter_digest(&["transfers", volume_id.as_deref().unwrap_or_default()]);
        let after = PageToken::decode(&req.page_token, &ctx.project_id, &digest)?;
        let query = TransferQuery {
            project_id: scope::list_project(ctx),
            volume_id,
            pending_at_ms: Some(now_ms()),
            after: after.map(|token| (token.created_at_ms, token.id)),
            limit: limit + 1,
        };
        let mut transfers = self
            .db
            .list_transfers(&query)
            .await
            .map_err(ApiError::db("list transfers"))?;
        let next_page_token = finish_page(
            &mut transfers,
            limit,
            |last| (last.created_at_ms, last.id.clone()),
            &ctx.project_id,
            &digest,
        );
        Ok(pb::ListTransfersResponse {
            transfers: transfers.iter().map(pb::Transfer::from).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(transfer_id = %id))]
    async fn delete(&self, ctx: &RequestContext, id: &str) -> ApiResult<Transfer> {
        let id = validate::uuid("id", id)?;
        let transfer = self.load(ctx, &id).await?;
        self.announce(ctx, Event::TransferDeleteStart, &transfer);
        let removed = self
            .db
            .delete_transfer(&id)
            .await
            .map_err(ApiError::db(format!("delete transfer {id}")));
        match removed {
            Ok(Some(transfer)) => {
                self.announce(ctx, Event::TransferDeleteEnd, &transfer);
                tracing::info!(transfer_id = %id, volume_id = %transfer.volume_id, "transfer withdrawn");
                Ok(transfer)
            }
            // Accepted or withdrawn meanwhile.
            Ok(None) => {
                self.announce(ctx, Event::TransferDeleteError, &transfer);
                Err(not_found(&id))
            }
            Err(err) => {
                self.announce(ctx, Event::TransferDeleteError, &transfer);
                Err(err)
            }
        }
    }

    fn announce(&self, ctx: &RequestContext, event: Event, transfer: &Transfer) {
        self.notifications.announce(ctx, event, transfer.into());
    }

    /// Announces `event` about transfer `id` as it is now, if it still exists.
    async fn announce_id(&self, ctx: &RequestContext, event: Event, id: &str) {
        if let Ok(Some(transfer)) = self.db.get_transfer(id).await {
            self.announce(ctx, event, &transfer);
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: "transfer",
        id: id.to_owned(),
    }
}

fn not_transferable(volume: &scoria_common::model::Volume) -> ApiError {
    let attached = matches!(
        volume.status,
        VolumeStatus::InUse | VolumeStatus::Attaching | VolumeStatus::Detaching
    );
    ApiError::volume_refused(
        volume,
        attached,
        ": only available volumes can be offered for transfer",
    )
}

#[tonic::async_trait]
impl TransferService for TransferApi {
    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::CreateTransferResponse>, Status> {
        handle(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn accept_transfer(
        &self,
        request: Request<pb::AcceptTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        handle_as(request, async |ctx, req| self.accept(ctx, req).await).await
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        handle_as(request, async |ctx, req| {
            let id = validate::uuid("id", &req.id)?;
            self.load(ctx, &id).await
        })
        .await
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        handle(request, async |ctx, req| self.list(ctx, req).await).await
    }

    async fn delete_transfer(
        &self,
        request: Request<pb::DeleteTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        handle_as(request, async |ctx, req| self.delete(ctx, &req.id).await).await
    }
}
