//! One resource kind's watchers: who watches which id, what each was sent last,
//! and the task that re-reads a changed id once and fans the row out.
//!
//! ```text
//!  mark(ids) / mark_all() ─▶ dirty set ─▶ run(): per round, each dirty id read
//!  once (a few at a time), then under the lock, per watcher of it:
//!     row != last sent ─try_send─▶ bounded channel ─▶ the client's stream
//!     channel full ─▶ watcher dropped: RESOURCE_EXHAUSTED "watcher too slow"
//!     row gone ─▶ Deleted(last seen), every watcher of the id ends
//!     read failed ─▶ the id stays dirty, tried again shortly
//! ```

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream};
use scoria_common::{db::DbResult, sync::lock};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How many reads of one round run at once.
const READ_CONCURRENCY: usize = 16;

/// How long a round waits after a failed read before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<P> {
    /// The resource as it is now.
    Update(P),
    /// The resource is gone (as last seen): the stream's last message.
    Deleted(P),
}

/// Reads one resource by id (`None`: gone).
pub type Loader<P> =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = DbResult<Option<P>>> + Send>> + Send + Sync>;

/// The bounds every hub of an API instance shares.
#[derive(Debug)]
pub struct Limits {
    /// At most this many watchers at once (all kinds).
    pub max_watchers: usize,
    /// Each watcher's channel holds at most this many unread updates.
    pub buffer: usize,
    /// Watchers now.
    active: AtomicUsize,
}

impl Limits {
    /// Limits of `max_watchers` watchers with `buffer` unread updates each.
    pub fn new(max_watchers: usize, buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_watchers,
            buffer: buffer.max(1),
            active: AtomicUsize::new(0),
        })
    }

    /// Watchers now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

struct Watcher<P> {
    id: u64,
    tx: mpsc::Sender<Event<P>>,
    kill: Option<oneshot::Sender<Status>>,
    last: Option<P>,
}

struct Entry<P> {
    /// The row as last read (what a `Deleted` carries).
    seen: P,
    watchers: Vec<Watcher<P>>,
}

struct State<P> {
    entries: HashMap<String, Entry<P>>,
    dirty: HashSet<String>,
    all_dirty: bool,
}

/// The watchers of one resource kind.
pub struct Hub<P> {
    kind: &'static str,
    state: Mutex<State<P>>,
    wake: Notify,
    load: Loader<P>,
    limits: Arc<Limits>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    /// Rows read (for tests and the bench: one read per id per round).
    reads: AtomicU64,
}

impl<P: Clone + PartialEq + Send + Sync + 'static> Hub<P> {
    /// A hub of `kind` (`volume`, ...) reading rows with `load`.
    pub fn new(
        kind: &'static str,
        load: Loader<P>,
        limits: Arc<Limits>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            kind,
            state: Mutex::new(State {
                entries: HashMap::new(),
                dirty: HashSet::new(),
                all_dirty: false,
            }),
            wake: Notify::new(),
            load,
            limits,
            next_id: AtomicU64::new(1),
            shutdown,
            reads: AtomicU64::new(0),
        })
    }

    /// How many rows this hub has read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Starts watching `id`, whose row was just read as `seen` (and checked
    /// visible to the caller). The first event (the row as the hub reads it) comes
    /// at once. RESOURCE_EXHAUSTED beyond the instance's watcher limit.
    pub fn watch(self: &Arc<Self>, id: &str, seen: P) -> Result<Subscription<P>, Status> {
        let taken = self
            .limits
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_watchers).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Status::resource_exhausted(format!(
                "too many watchers on this API instance (at most {}): try again later or another instance",
                self.limits.max_watchers
            )));
        }
        let (tx, rx) = mpsc::channel(self.limits.buffer);
        let (kill_tx, kill_rx) = oneshot::channel();
        let watcher_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&self.state);
            state
                .entries
                .entry(id.to_owned())
                .or_insert_with(|| Entry {
                    seen,
                    watchers: Vec::new(),
                })
                .watchers
                .push(Watcher {
                    id: watcher_id,
                    tx,
                    kill: Some(kill_tx),
                    last: None,
                });
            state.dirty.insert(id.to_owned());
        }
        self.wake.notify_one();
        Ok(Subscription {
            rx,
            kill: Some(kill_rx),
            shutdown: self.shutdown.clone(),
            done: false,
            _guard: Guard {
                hub: self.clone(),
                id: id.to_owned(),
                watcher: watcher_id,
            },
        })
    }

    /// These ids changed.
    pub fn mark<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut any = false;
        {
            let mut state = lock(&self.state);
            for id in ids {
                if state.entries.contains_key(id) {
                    state.dirty.insert(id.to_owned());
                    any = true;
                }
            }
        }
        if any {
            self.wake.notify_one();
        }
    }

    /// Anything may have changed: re-read every watched id.
    pub fn mark_all(&self) {
        lock(&self.state).all_dirty = true;
        self.wake.notify_one();
    }

    /// Re-reads and fans out until shutdown.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.shutdown.cancelled() => return,
            }
            if !self.round().await {
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                    () = self.shutdown.cancelled() => return,
                }
                self.wake.notify_one();
            } else if !lock(&self.state).dirty.is_empty() {
                self.wake.notify_one();
            }
        }
    }

    /// One round: every dirty id read once and fanned out. False if a read
    /// failed (its id stays dirty).
    pub async fn round(&self) -> bool {
        let ids: Vec<String> = {
            let mut state = lock(&self.state);
            let mut ids = std::mem::take(&mut state.dirty);
            if std::mem::take(&mut state.all_dirty) {
                ids.extend(state.entries.keys().cloned());
            }
            ids.into_iter().collect()
        };
        if ids.is_empty() {
            return true;
        }
        let reads = stream::iter(ids)
            .map(|id| {
                self.reads.fetch_add(1, Ordering::Relaxed);
                let read = (self.load)(id.clone());
                async move { (id, read.await) }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut ok = true;
        let mut state = lock(&self.state);
        for (id, read) in reads {
            match read {
                Ok(row) => self.fan_out(&mut state, &id, row),
                Err(err) => {
                    tracing::warn!(kind = self.kind, id = %id, error = %err, "watch: cannot re-read; trying again");
                    state.dirty.insert(id);
                    ok = false;
                }
            }
        }
        ok
    }

    fn fan_out(&self, state: &mut State<P>, id: &str, row: Option<P>) {
        let Some(entry) = state.entries.get_mut(id) else {
            return;
        };
        let buffer = self.limits.buffer;
        let kind = self.kind;
        match row {
            Some(row) => {
                entry.seen = row.clone();
                entry.watchers.retain_mut(|w| {
                    if w.last.as_ref() == Some(&row) {
                        return true;
                    }
                    match w.tx.try_send(Event::Update(row.clone())) {
                        Ok(()) => {
                            w.last = Some(row.clone());
                            true
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            too_slow(w, kind, id, buffer);
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                });
                if entry.watchers.is_empty() {
                    state.entries.remove(id);
                }
            }
            None => {
                let Some(entry) = state.entries.remove(id) else {
                    return;
                };
                for mut w in entry.watchers {
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        w.tx.try_send(Event::Deleted(entry.seen.clone()))
                    {
                        too_slow(&mut w, kind, id, buffer);
                    }
                }
            }
        }
    }

    fn unwatch(&self, id: &str, watcher: u64) {
        let mut state = lock(&self.state);
        if let Some(entry) = state.entries.get_mut(id) {
            entry.watchers.retain(|w| w.id != watcher);
            if entry.watchers.is_empty() {
                state.entries.remove(id);
            }
        }
        drop(state);
        self.limits.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn too_slow<P>(w: &mut Watcher<P>, kind: &str, id: &str, buffer: usize) {
    tracing::info!(
        kind,
        id,
        buffer,
        "watch: dropping a watcher too slow to read"
    );
    if let Some(kill) = w.kill.take() {
        let _ = kill.send(Status::resource_exhausted(format!(
            "watcher too slow: {buffer} updates of {kind} {id} unread; watch again"
        )));
    }
}

/// Frees a watcher's slot (and its place in the hub) when its stream goes.
struct Guard<P: Clone + PartialEq + Send + Sync + 'static> {
    hub: Arc<Hub<P>>,
    id: String,
    watcher: u64,
}

impl<P: Clone + PartialEq + Send + Sync + 'static> Drop for Guard<P> {
    fn drop(&mut self) {
        self.hub.unwatch(&self.id, self.watcher);
    }
}

/// One watcher's side: the events, or the status that ends them.
pub struct Subscription<P: Clone + PartialEq + Send + Sync + 'static> {
    rx: mpsc::Receiver<Event<P>>,
    kill: Option<oneshot::Receiver<Status>>,
    shutdown: CancellationToken,
    done: bool,
    _guard: Guard<P>,
}

impl<P: Clone + PartialEq + Send + Sync + 'static> Subscription<P> {
    /// The next event; `Err` (the last item) when the watcher was dropped or the
    /// API shuts down; `None` after a `Deleted` or the error.
    pub async fn next(&mut self) -> Option<Result<Event<P>, Status>> {
        let Self {
            rx,
            kill,
            shutdown,
            done,
            ..
        } = self;
        if *done {
            return None;
        }
        loop {
            let verdict = async {
                match kill.as_mut() {
                    Some(kill) => kill.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    *done = true;
                    return Some(Err(Status::unavailable("the API instance is shutting down: watch again")));
                }
                killed = verdict => {
                    match killed {
                        Ok(status) => {
                            *done = true;
                            return Some(Err(status));
                        }
                        // Removed without a verdict (deleted): read what is left.
                        Err(_) => *kill = None,
                    }
                }
                event = rx.recv() => {
                    return match event {
                        Some(event @ Event::Deleted(_)) => {
                            *done = true;
                            Some(Ok(event))
                        }
                        Some(event) => Some(Ok(event)),
                        None => None,
                    };
                }
            }
        }
    }

    /// The events as a stream.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Event<P>, Status>> + Send {
        stream::unfold(self, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
    }
}
