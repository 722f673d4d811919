//! `Watch*` streams: WatchVolume, WatchSnapshot and WatchAttachment, driven by
//! the change feed on the bus (`scoria_common::changes`), so a stream on this
//! instance sees what any API instance, scheduler or volume service changed.
//!
//! ```text
//!  <cx>.changes.fanout ─▶ ChangeFeed ─▶ Watches (ChangeListener)
//!                                         ├─ changed(batch) ─▶ Hub::mark(ids) per kind
//!                                         └─ resync()       ─▶ Hub::mark_all() (every (re)subscription)
//!  Hub<P> (one per kind, see hub.rs): per round each dirty id read once,
//!  sent to each of its watchers if it differs from what that watcher got last.
//!  Watch RPC: scope check (NOT_FOUND as Get) ─▶ Hub::watch ─▶ stream of
//!  {resource, deleted} until deleted (OK), too slow / shutdown (error).
//! ```
//!
//! Bounds: at most `api.max_watchers` watchers per instance (RESOURCE_EXHAUSTED
//! beyond), at most `api.watch_buffer` unread updates per watcher (the watcher is
//! dropped with RESOURCE_EXHAUSTED "watcher too slow" beyond).

mod hub;
#[cfg(test)]
mod hub_tests;

use std::{pin::Pin, sync::Arc};

use futures_util::{Stream, StreamExt};
use scoria_common::{
    changes::{Change, ChangeKind, ChangeListener},
    db::Db,
};
use scoria_proto::v1 as pb;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Response, Status};

pub use hub::{Event, Hub, Limits, Loader, Subscription};

/// The stream a `Watch*` RPC answers with.
pub type WatchStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send + 'static>>;

/// The watch hubs of one API instance (cheap to clone).
#[derive(Clone)]
pub struct Watches {
    /// Volumes.
    pub volumes: Arc<Hub<pb::Volume>>,
    /// Snapshots.
    pub snapshots: Arc<Hub<pb::Snapshot>>,
    /// Attachments.
    pub attachments: Arc<Hub<pb::Attachment>>,
    /// The bounds they share.
    pub limits: Arc<Limits>,
}

impl Watches {
    /// Hubs reading from `db` within `limits`; their tasks run on `tasks` until
    /// `shutdown`, which also ends every stream (UNAVAILABLE).
    pub fn start(
        db: &Db,
        limits: Arc<Limits>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let volumes = {
            let db = db.clone();
            let load: Loader<pb::Volume> = Arc::new(move |id| {
                let db = db.clone();
                Box::pin(
                    async move { Ok(db.get_volume(&id).await?.as_ref().map(pb::Volume::from)) },
                )
            });
            Hub::new("volume", load, limits.clone(), shutdown.clone())
        };
        let snapshots = {
            let db = db.clone();
            let load: Loader<pb::Snapshot> = Arc::new(move |id| {
                let db = db.clone();
                Box::pin(
                    async move { Ok(db.get_snapshot(&id).await?.as_ref().map(pb::Snapshot::from)) },
                )
            });
            Hub::new("snapshot", load, limits.clone(), shutdown.clone())
        };
        let attachments = {
            let db = db.clone();
            let load: Loader<pb::Attachment> = Arc::new(move |id| {
                let db = db.clone();
                Box::pin(async move {
                    Ok(db
                        .get_attachment(&id)
                        .await?
                        .as_ref()
                        .map(pb::Attachment::from))
                })
            });
            Hub::new("attachment", load, limits.clone(), shutdown)
        };
        tasks.spawn(volumes.clone().run());
        tasks.spawn(snapshots.clone().run());
        tasks.spawn(attachments.clone().run());
        Self {
            volumes,
            snapshots,
            attachments,
            limits,
        }
    }
}

impl ChangeListener for Watches {
    fn changed(&self, changes: Vec<Change>) {
        let of = |kind: ChangeKind| {
            changes
                .iter()
                .filter(move |c| c.kind == kind)
                .map(|c| c.id.as_str())
        };
        self.volumes.mark(of(ChangeKind::Volume));
        self.snapshots.mark(of(ChangeKind::Snapshot));
        self.attachments.mark(of(ChangeKind::Attachment));
    }

    fn resync(&self) {
        self.volumes.mark_all();
        self.snapshots.mark_all();
        self.attachments.mark_all();
    }
}

/// The answer of a `Watch*` RPC: `id`, seen as `seen` by the caller's (checked)
/// read, watched on `hub` (`None`: this server has no watch hubs, UNIMPLEMENTED),
/// each event wrapped by `wrap(resource, deleted)`.
pub(crate) fn respond<P, R>(
    hub: Option<&Arc<Hub<P>>>,
    id: &str,
    seen: P,
    wrap: fn(P, bool) -> R,
) -> Result<Response<WatchStream<R>>, Status>
where
    P: Clone + PartialEq + Send + Sync + 'static,
    R: Send + 'static,
{
    let hub = hub.ok_or_else(unimplemented)?;
    let subscription = hub.watch(id, seen)?;
    let stream = subscription.into_stream().map(move |item| {
        item.map(|event| match event {
            Event::Update(resource) => wrap(resource, false),
            Event::Deleted(resource) => wrap(resource, true),
        })
    });
    Ok(Response::new(Box::pin(stream)))
}

/// What a service without watch hubs answers.
pub(crate) fn unimplemented() -> Status {
    Status::unimplemented("watch streams are not enabled on this server")
}
