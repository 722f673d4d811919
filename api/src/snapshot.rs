//! `scoria.v1.SnapshotService`: snapshots live on their volume's backend. Reads
//! come from the database; CreateSnapshot and DeleteSnapshot persist their intent
//! (row + worker entry, by compare-and-set) and cast to the volume's host, which
//! settles the status. The API never waits for the backend.
//!
//! ```text
//!  CreateSnapshot: volume available (in-use with force) ─CAS+insert─▶ creating ─cast─▶ host
//!                  cast fails ─▶ row removed, UNAVAILABLE (nothing left behind)
//!  DeleteSnapshot: available | error | error_deleting ─CAS─▶ deleting ─cast─▶ host
//!                  cast fails ─▶ error_deleting (with the reason)
//! ```

use scoria_common::{
    RequestContext,
    db::{Db, Owner, SnapshotDeleteStart, SnapshotQuery, WorkerEntry, deadlines},
    events::Event,
    model::{Snapshot, SnapshotStatus, Volume, VolumeStatus, now_ms},
    settle::SnapshotChange,
};
use scoria_proto::{
    bus::{CreateSnapshot, DeleteSnapshot},
    v1::{self as pb, snapshot_service_server::SnapshotService},
};
use tonic::{Request, Response, Status};

use crate::{
    error::{ApiError, ApiResult},
    intent::Intent,
    page_token::{PageToken, filter_digest, finish_page},
    ports::Ports,
    request::{context, handle, handle_as, reply},
    scope, validate,
    watch::{self, WatchStream, Watches},
};

/// The `SnapshotService` implementation.
#[derive(Clone)]
pub struct SnapshotApi {
    db: Db,
    ports: Ports,
    watches: Option<Watches>,
}

impl SnapshotApi {
    /// The service over `db` and `ports`.
    pub fn new(db: Db, ports: Ports) -> Self {
        Self {
            db,
            ports,
            watches: None,
        }
    }

    /// This service serving WatchSnapshot from `watches`.
    pub fn with_watches(mut self, watches: Watches) -> Self {
        self.watches = Some(watches);
        self
    }

    /// The snapshot `id` if the caller may see it (its project's, or any for admins).
    async fn load(&self, ctx: &RequestContext, id: &str) -> ApiResult<Snapshot> {
        scope::load(ctx, "snapshot", id, self.db.get_snapshot(id)).await
    }

    /// The volume `id` if the caller may see it.
    async fn load_volume(&self, ctx: &RequestContext, id: &str) -> ApiResult<Volume> {
        scope::load(ctx, "volume", id, self.db.get_volume(id)).await
    }

    /// GetSnapshot: the snapshot `id` (checked) if the caller may see it.
    async fn get(&self, ctx: &RequestContext, id: &str) -> ApiResult<Snapshot> {
        self.load(ctx, &validate::uuid("id", id)?).await
    }

    #[tracing::instrument(skip_all, fields(volume_id = %req.volume_id, snapshot_id))]
    async fn create(
        &self,
        ctx: &RequestContext,
        req: pb::CreateSnapshotRequest,
    ) -> ApiResult<Snapshot> {
        let volume_id = validate::uuid("volume_id", &req.volume_id)?;
        validate::text::line("name", &req.name)?;
        validate::text::description("description", &req.description)?;
        let volume = self.load_volume(ctx, &volume_id).await?;
        let allowed: &[VolumeStatus] = if req.force {
            &[VolumeStatus::Available, VolumeStatus::InUse]
        } else {
            &[VolumeStatus::Available]
        };
        if !allowed.contains(&volume.status) {
            return Err(not_snapshottable(&volume, req.force));
        }
        let Some(host) = volume.host.clone().filter(|h| !h.is_empty()) else {
            return Err(ApiError::NoBackend {
                kind: "volume",
                id: volume_id,
            });
        };
        let intent = Intent::cast(
            &self.ports,
            format!("snapshot volume {volume_id} on {host}"),
        );
        intent.ready().await?;
        let now = now_ms();
        let snapshot = Snapshot {
            id: uuid::Uuid::new_v4().to_string(),
            // The volume's project: an admin snapshotting it makes it the owner's.
            project_id: volume.project_id.clone(),
            user_id: ctx.user_id.clone(),
            volume_id: volume_id.clone(),
            name: req.name,
            description: req.description,
            size_gib: volume.size_gib,
            status: SnapshotStatus::Creating,
            host: Some(host.clone()),
            error_message: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let id = snapshot.id.clone();
        tracing::Span::current().record("snapshot_id", id.as_str());
        let worker = WorkerEntry::snapshot(
            &id,
            SnapshotStatus::Creating,
            Owner::Service(host.clone()),
            deadlines::at(now, deadlines::SNAPSHOT_CREATE),
        );
        let created = self
            .db
            .create_snapshot(&snapshot, allowed, &worker)
            .await
            .map_err(ApiError::db(format!("create snapshot {id}")))?;
        if !created {
            // The volume changed between the read and the compare-and-set.
            let volume = self.load_volume(ctx, &volume_id).await?;
            return Err(not_snapshottable(&volume, req.force));
        }
        let request = CreateSnapshot {
            snapshot_id: id.clone(),
            volume_id: volume_id.clone(),
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = snapshot.clone();
        intent
            .send(
                self.ports.volumes.create_snapshot(ctx, &host, request),
                |why| async move {
                    // Nothing will ever make it: take the row back.
                    let removed = self.db.delete_snapshot_row(&failed.id).await;
                    let apply = |s: &mut Snapshot| {
                        s.status = SnapshotStatus::Error;
                        s.error_message = format!("cannot reach the volume's host: {why}");
                    };
                    let event = Some(Event::SnapshotCreateError);
                    settler
                        .settle(ctx, &mut failed, async { removed }, apply, event)
                        .await
                },
            )
            .await?;
        tracing::info!(snapshot_id = %id, volume_id = %volume_id, host = %host, "snapshot creation requested");
        Ok(snapshot)
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        ctx: &RequestContext,
        req: pb::ListSnapshotsRequest,
    ) -> ApiResult<pb::ListSnapshotsResponse> {
        let limit = validate::page_size(req.page_size)?;
        let status = validate::snapshot_status_filter(req.status)?;
        let volume_id = match req.volume_id.as_str() {
            "" => None,
            id => Some(validate::uuid("volume_id", id)?),
        };
        let digest = filter_digest(&[
            "snapshots",
            status.map(SnapshotStatus::as_str).unwrap_or_default(),
            volume_id.as_deref().unwrap_or_default(),
        ]);
        let after = PageToken::decode(&req.page_token, &ctx.project_id, &digest)?;
        let query = SnapshotQuery {
            project_id: scope::list_project(ctx),
            volume_id,
            status,
            after: after.map(|token| (token.created_at_ms, token.id)),
            limit: limit + 1,
        };
        let mut snapshots = self
            .db
            .list_snapshots(&query)
            .await
            .map_err(ApiError::db("list snapshots"))?;
        let next_page_token = finish_page(
            &mut snapshots,
            limit,
            |last| (last.created_at_ms, last.id.clone()),
            &ctx.project_id,
            &digest,
        );
        Ok(pb::ListSnapshotsResponse {
            snapshots: snapshots.iter().map(pb::Snapshot::from).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(snapshot_id = %id))]
    async fn delete(&self, ctx: &RequestContext, id: &str) -> ApiResult<Snapshot> {
        let id = validate::uuid("id", id)?;
        let snapshot = self.load(ctx, &id).await?;
        if !SnapshotStatus::DELETABLE.contains(&snapshot.status) {
            return Err(not_deletable(&snapshot));
        }
        let Some(host) = snapshot.host.clone().filter(|h| !h.is_empty()) else {
            // It never reached a backend: nothing to clean up but the row.
            self.start_delete(ctx, &snapshot, None).await?;
            self.db
                .delete_snapshot_row(&id)
                .await
                .map_err(ApiError::db(format!("delete snapshot {id}")))?;
            tracing::info!(snapshot_id = %id, "snapshot without a backend deleted");
            return Ok(deleting(snapshot));
        };
        let intent = Intent::cast(&self.ports, format!("delete snapshot {id} on {host}"));
        intent.ready().await?;
        let worker = WorkerEntry::snapshot(
            &id,
            SnapshotStatus::Deleting,
            Owner::Service(host.clone()),
            deadlines::from_now(deadlines::SNAPSHOT_DELETE),
        );
        self.start_delete(ctx, &snapshot, Some(&worker)).await?;
        let request = DeleteSnapshot {
            snapshot_id: id.clone(),
        };
        let settler = self.ports.settler(&self.db);
        let mut failed = deleting(snapshot.clone());
        let at = host.as_str();
        intent
            .send(
                self.ports.volumes.delete_snapshot(ctx, &host, request),
                |why| async move {
                    let reason = format!("cannot reach {at} to delete the snapshot: {why}");
                    let change = SnapshotChange::new(
                        &[SnapshotStatus::Deleting],
                        SnapshotStatus::ErrorDeleting,
                    )
                    .error(&reason);
                    let event = Some(Event::SnapshotDeleteError);
                    settler.snapshot(ctx, &mut failed, change, event).await
                },
            )
            .await?;
        tracing::info!(snapshot_id = %id, host = %host, "snapshot deletion requested");
        Ok(deleting(snapshot))
    }

    /// DeleteSnapshot's compare-and-set, with the error of a lost one.
    async fn start_delete(
        &self,
        ctx: &RequestContext,
        snapshot: &Snapshot,
        worker: Option<&WorkerEntry>,
    ) -> ApiResult<()> {
        let id = &snapshot.id;
        let start = self
            .db
            .start_snapshot_delete(id, worker)
            .await
            .map_err(ApiError::db(format!("mark snapshot {id} deleting")))?;
        match start {
            SnapshotDeleteStart::Started => Ok(()),
            SnapshotDeleteStart::InUse(volumes) => Err(ApiError::SnapshotInUse {
                id: id.clone(),
                volumes,
            }),
            // It changed under us: say what it is now.
            SnapshotDeleteStart::WrongStatus => Err(match self.load(ctx, id).await {
                Ok(now) => not_deletable(&now),
                Err(err) => err,
            }),
        }
    }
}

fn not_snapshottable(volume: &Volume, force: bool) -> ApiError {
    let hint = if volume.status == VolumeStatus::InUse && !force {
        ": set force to snapshot an in-use volume"
    } else {
        ": only available (or, with force, in-use) volumes can be snapshotted"
    };
    ApiError::volume_refused(volume, volume.status == VolumeStatus::InUse, hint)
}

fn not_deletable(snapshot: &Snapshot) -> ApiError {
    ApiError::WrongStatus {
        kind: "snapshot",
        id: snapshot.id.clone(),
        status: snapshot.status.to_string(),
        detail: ": only available or error snapshots can be deleted".to_owned(),
    }
}

fn deleting(snapshot: Snapshot) -> Snapshot {
    Snapshot {
        status: SnapshotStatus::Deleting,
        updated_at_ms: now_ms(),
        ..snapshot
    }
}

#[tonic::async_trait]
impl SnapshotService for SnapshotApi {
    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        handle_as(request, async |ctx, req| self.create(ctx, req).await).await
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        handle_as(request, async |ctx, req| self.get(ctx, &req.id).await).await
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        handle(request, async |ctx, req| self.list(ctx, req).await).await
    }

    type WatchSnapshotStream = WatchStream<pb::WatchSnapshotResponse>;

    async fn watch_snapshot(
        &self,
        request: Request<pb::WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchSnapshotStream>, Status> {
        let hub = self.watches.as_ref().ok_or_else(watch::unimplemented)?;
        let ctx = context(&request)?;
        let snapshot = reply(self.get(&ctx, &request.get_ref().id).await)?.into_inner();
        watch::respond(
            Some(&hub.snapshots),
            &snapshot.id,
            pb::Snapshot::from(&snapshot),
            |snapshot, deleted| pb::WatchSnapshotResponse {
                snapshot: Some(snapshot),
                deleted,
            },
        )
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        handle_as(request, async |ctx, req| self.delete(ctx, &req.id).await).await
    }
}
