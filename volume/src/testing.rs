//! Test support: the recording fakes of `scoria_common::testing`, side by side,
//! with the events a test follows picked out.

use std::sync::Arc;

use scoria_common::testing::{Announced, RecordingNotifier, RecordingScheduler};

/// The scheduler and notification fakes a manager under test is given.
pub(crate) struct Recorder {
    /// What the manager sends the scheduler.
    pub(crate) scheduler: Arc<RecordingScheduler>,
    /// What the manager and the reconciler announce.
    pub(crate) notifier: Arc<RecordingNotifier>,
    /// The event-type prefixes this test follows (`volume.`, `snapshot.`, ...).
    follows: &'static [&'static str],
}

impl Recorder {
    /// Fakes following the events whose type starts with one of `follows`.
    pub(crate) fn following(follows: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Self {
            scheduler: Default::default(),
            notifier: Default::default(),
            follows,
        })
    }

    /// The followed announcements, in order.
    pub(crate) fn announced(&self) -> Vec<Announced> {
        self.notifier
            .announced()
            .into_iter()
            .filter(|a| self.follows.iter().any(|p| a.event.as_str().starts_with(p)))
            .collect()
    }

    /// The followed events, in order.
    pub(crate) fn events(&self) -> Vec<scoria_common::events::Event> {
        self.announced().iter().map(|a| a.event).collect()
    }

    /// The followed event types, in order.
    pub(crate) fn event_types(&self) -> Vec<String> {
        self.announced()
            .iter()
            .map(|a| a.event.as_str().to_owned())
            .collect()
    }
}
