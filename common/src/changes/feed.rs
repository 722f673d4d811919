//! The listening side of the feed: an exclusive, auto-delete queue bound to
//! `<cx>.changes.fanout` (the RPC server's fanout consumer, so it reconnects by
//! itself), and a [`ChangeListener`] told of every batch and of every
//! (re)subscription.

use std::{sync::Arc, time::Duration};

use scoria_proto::bus;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Change, ChangeKind, METHOD, TOPIC};
use crate::rpc::{Broker, Dispatcher, RpcResult, RpcServer, ServerOptions};

/// What the feed tells its listener.
pub trait ChangeListener: Send + Sync + 'static {
    /// These rows changed.
    fn changed(&self, changes: Vec<Change>);
    /// The feed (re)subscribed, or a sender lost track of changes: changes may
    /// have been missed, re-read everything of interest.
    fn resync(&self);
}

/// A running subscription to the change feed.
pub struct ChangeFeed {
    server: RpcServer,
}

impl ChangeFeed {
    /// Subscribes `listener` until `shutdown` is cancelled; the watcher of
    /// (re)subscriptions runs on `tasks`.
    pub fn subscribe(
        broker: &Broker,
        listener: Arc<dyn ChangeListener>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> RpcResult<Self> {
        let on_batch = listener.clone();
        let dispatcher =
            Dispatcher::new().method(METHOD, move |_ctx, batch: bus::ResourcesChanged| {
                let listener = on_batch.clone();
                async move {
                    if batch.resync {
                        listener.resync();
                    }
                    let changes = batch
                        .changes
                        .into_iter()
                        .filter_map(|c| {
                            ChangeKind::from_proto(c.kind).map(|kind| Change { kind, id: c.id })
                        })
                        .collect::<Vec<_>>();
                    if !changes.is_empty() {
                        listener.changed(changes);
                    }
                    Ok(())
                }
            });
        let server = RpcServer::start(
            broker.clone(),
            ServerOptions::fanout_only(TOPIC),
            dispatcher,
            shutdown.clone(),
        )?;
        let mut ready = server.ready_changes();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = ready.wait_for(|r| *r) => if changed.is_err() { return },
                }
                tracing::debug!("change feed subscribed: re-reading every watched resource");
                listener.resync();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = ready.wait_for(|r| !*r) => if changed.is_err() { return },
                }
            }
        });
        Ok(Self { server })
    }

    /// Waits until the feed consumes (again, after a reconnect).
    pub async fn wait_ready(&self, within: Duration) -> RpcResult<()> {
        self.server.wait_ready(within).await
    }

    /// Stops consuming.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
