//! The change feed: every process whose [`Db`](crate::db::Db) writes a volume,
//! snapshot or attachment row says so on the bus, so any API instance can serve
//! `Watch*` streams that see changes made anywhere.
//!
//! ```text
//!  Db write (commit) ─▶ ChangeSink::changed(kind, id)        (one lock + insert)
//!        ChangePublisher: pending set ─(coalesced over a few ms)─▶ fanout_cast
//!            <cx>.changes.fanout ──▶ exclusive auto-delete queue per API instance
//!                 ChangeFeed (RpcServer, fanout only) ─▶ ChangeListener
//!                     changed(batch)   re-read those ids
//!                     resync()         (re)subscribed: re-read everything watched
//! ```
//!
//! The message names rows, never their content: a listener re-reads what it cares
//! about, so a message lost, duplicated or reordered costs at most a read. The feed
//! is best effort (non-persistent, no queue while nobody listens); what it cannot
//! promise per message it promises per subscription: after every (re)subscription
//! the listener is told to re-read everything.

mod feed;
mod publisher;

pub use feed::{ChangeFeed, ChangeListener};
pub use publisher::{ChangePublisher, PublisherOptions};

use scoria_proto::bus;

/// The fanout topic of the feed (exchange `<cx>.changes.fanout`).
pub const TOPIC: &str = "changes";

/// The bus method of a batch of changes.
pub const METHOD: &str = "resources_changed";

/// What kind of row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A `volumes` row.
    Volume,
    /// A `snapshots` row.
    Snapshot,
    /// An `attachments` row.
    Attachment,
}

impl ChangeKind {
    /// The bus enum value.
    pub fn to_proto(self) -> bus::ResourceKind {
        match self {
            ChangeKind::Volume => bus::ResourceKind::Volume,
            ChangeKind::Snapshot => bus::ResourceKind::Snapshot,
            ChangeKind::Attachment => bus::ResourceKind::Attachment,
        }
    }

    /// The kind of a bus enum value (`None`: unspecified or unknown).
    pub fn from_proto(value: i32) -> Option<Self> {
        match bus::ResourceKind::try_from(value).ok()? {
            bus::ResourceKind::Volume => Some(ChangeKind::Volume),
            bus::ResourceKind::Snapshot => Some(ChangeKind::Snapshot),
            bus::ResourceKind::Attachment => Some(ChangeKind::Attachment),
            bus::ResourceKind::Unspecified => None,
        }
    }
}

/// One changed row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Its kind.
    pub kind: ChangeKind,
    /// Its id.
    pub id: String,
}

/// Where a [`Db`](crate::db::Db) reports the rows it changed, after the commit.
/// Must be cheap and never block: it runs on every write.
pub trait ChangeSink: Send + Sync + std::fmt::Debug {
    /// Row `id` of `kind` was written, moved or removed.
    fn changed(&self, kind: ChangeKind, id: &str);
}
