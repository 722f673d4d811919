//! The writing side of the feed: a [`ChangeSink`] that coalesces the ids changed
//! over a few milliseconds and fanout-casts them in one message, from a
//! background task, so a write pays one lock and one set insert.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use scoria_proto::bus;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{Change, ChangeKind, ChangeSink, METHOD, TOPIC};
use crate::{
    context::RequestContext, rpc::RpcClient, sync::lock, telemetry::context as telemetry,
    traceparent::TraceParent,
};

/// How the publisher batches.
#[derive(Debug, Clone, Copy)]
pub struct PublisherOptions {
    /// How long changes gather before one message leaves.
    pub linger: Duration,
    /// At most this many ids in one message.
    pub max_batch: usize,
    /// At most this many ids wait; beyond, they are forgotten and the next
    /// message asks listeners to re-read everything.
    pub max_pending: usize,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            max_batch: 1_000,
            max_pending: 50_000,
        }
    }
}

/// Coalesces changes and publishes them on `<cx>.changes.fanout`.
#[derive(Debug)]
pub struct ChangePublisher {
    pending: Mutex<Pending>,
    wake: Notify,
    options: PublisherOptions,
}

/// What waits for the next message.
#[derive(Debug, Default)]
struct Pending {
    changes: HashSet<Change>,
    /// Some changes were forgotten (too many waited): listeners must re-read all.
    overflowed: bool,
}

impl ChangePublisher {
    /// Starts the publishing task on `tasks` (it flushes once more and ends when
    /// `shutdown` is cancelled); the sink to give the `Db`.
    pub fn start(
        rpc: RpcClient,
        options: PublisherOptions,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let publisher = Arc::new(Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            options,
        });
        tasks.spawn(publisher.clone().run(rpc, shutdown));
        publisher
    }

    /// The next message to send, if anything waits (at most `max_batch` ids).
    fn take_batch(&self) -> Option<bus::ResourcesChanged> {
        let mut pending = lock(&self.pending);
        if pending.changes.is_empty() && !pending.overflowed {
            return None;
        }
        let take: Vec<Change> = if pending.changes.len() <= self.options.max_batch {
            pending.changes.drain().collect()
        } else {
            let some: Vec<Change> = pending
                .changes
                .iter()
                .take(self.options.max_batch)
                .cloned()
                .collect();
            for change in &some {
                pending.changes.remove(change);
            }
            some
        };
        let resync = std::mem::take(&mut pending.overflowed);
        Some(bus::ResourcesChanged {
            changes: take
                .into_iter()
                .map(|c| bus::ChangedResource {
                    kind: c.kind.to_proto() as i32,
                    id: c.id,
                })
                .collect(),
            resync,
        })
    }

    /// Puts back a batch that could not be sent.
    fn restore(&self, batch: bus::ResourcesChanged) {
        let mut pending = lock(&self.pending);
        pending.overflowed |= batch.resync;
        for change in batch.changes {
            if let Some(kind) = ChangeKind::from_proto(change.kind) {
                insert(&mut pending, self.options.max_pending, kind, change.id);
            }
        }
    }

    async fn run(self: Arc<Self>, rpc: RpcClient, shutdown: CancellationToken) {
        // Unsampled: the feed's messages (one every few ms under load) and what
        // the API does on them are never exported as traces.
        let ctx = RequestContext {
            traceparent: TraceParent::unsampled_root(),
            ..RequestContext::internal("change-feed")
        };
        let timeout = rpc.broker().config().publish_timeout();
        loop {
            let stopping = tokio::select! {
                () = self.wake.notified() => false,
                () = shutdown.cancelled() => true,
            };
            if !stopping {
                // Let the writes of the next few ms join this message.
                tokio::time::sleep(self.options.linger).await;
            }
            while let Some(batch) = self.take_batch() {
                let span = tracing::debug_span!("changes.publish", ids = batch.changes.len());
                telemetry::continue_trace(&span, || Some(ctx.traceparent));
                let sent = tokio::time::timeout(
                    timeout,
                    rpc.fanout_cast(&ctx, TOPIC, METHOD, &batch)
                        .instrument(span),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    outcome => {
                        tracing::debug!(
                            ?outcome,
                            ids = batch.changes.len(),
                            "change feed: publish failed, kept for later"
                        );
                        if stopping {
                            return;
                        }
                        self.restore(batch);
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            () = shutdown.cancelled() => {}
                        }
                        break;
                    }
                }
            }
            if stopping {
                return;
            }
            if !lock(&self.pending).changes.is_empty() {
                // Left after a failure: try again without waiting for a new write.
                self.wake.notify_one();
            }
        }
    }
}

fn insert(pending: &mut Pending, max: usize, kind: ChangeKind, id: String) {
    if pending.changes.len() >= max {
        pending.changes.clear();
        pending.overflowed = true;
    }
    pending.changes.insert(Change { kind, id });
}

impl ChangeSink for ChangePublisher {
    fn changed(&self, kind: ChangeKind, id: &str) {
        {
            let mut pending = lock(&self.pending);
            insert(&mut pending, self.options.max_pending, kind, id.to_owned());
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(max_batch: usize, max_pending: usize) -> ChangePublisher {
        ChangePublisher {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            options: PublisherOptions {
                linger: Duration::from_millis(1),
                max_batch,
                max_pending,
            },
        }
    }

    #[test]
    fn changes_to_one_row_coalesce_into_one_entry() {
        let p = publisher(10, 100);
        for _ in 0..5 {
            p.changed(ChangeKind::Volume, "v1");
        }
        p.changed(ChangeKind::Snapshot, "v1");
        let batch = p.take_batch().expect("a batch");
        assert_eq!(batch.changes.len(), 2);
        assert!(!batch.resync);
        assert!(p.take_batch().is_none());
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_ids() {
        let p = publisher(3, 100);
        for i in 0..7 {
            p.changed(ChangeKind::Volume, &format!("v{i}"));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| p.take_batch())
            .map(|b| b.changes.len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }

    #[test]
    fn too_many_waiting_ids_become_a_resync() {
        let p = publisher(100, 4);
        for i in 0..6 {
            p.changed(ChangeKind::Volume, &format!("v{i}"));
        }
        let batch = p.take_batch().expect("a batch");
        assert!(batch.resync, "listeners must re-read everything");
        assert!(batch.changes.len() <= 4);
    }

    #[test]
    fn a_failed_batch_is_kept() {
        let p = publisher(100, 100);
        p.changed(ChangeKind::Attachment, "a1");
        let batch = p.take_batch().expect("a batch");
        p.restore(batch);
        let again = p.take_batch().expect("kept");
        assert_eq!(again.changes[0].id, "a1");
    }
}
