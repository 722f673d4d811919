//! A [`Notifications`] that records what is announced.

use std::sync::Mutex;

use crate::{
    context::RequestContext,
    events::{Event, Notifications, Payload},
    sync::lock,
};

/// One announcement: the event, the resource's id and its status then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The event.
    pub event: Event,
    /// The id of the volume, snapshot or attachment.
    pub id: String,
    /// Its status as announced (`available`, `error`, ...).
    pub status: String,
    /// Its error message as announced.
    pub error_message: String,
}

/// Records every announcement, in order.
#[derive(Default)]
pub struct RecordingNotifier {
    announced: Mutex<Vec<Announced>>,
}

impl RecordingNotifier {
    /// Everything announced so far.
    pub fn announced(&self) -> Vec<Announced> {
        lock(&self.announced).clone()
    }

    /// The events announced so far, in order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.announced).iter().map(|a| a.event).collect()
    }

    /// The event types (`volume.create.end`) announced so far, in order.
    pub fn event_types(&self) -> Vec<&'static str> {
        lock(&self.announced)
            .iter()
            .map(|a| a.event.as_str())
            .collect()
    }

    /// The events announced about resource `id`, in order.
    pub fn events_of(&self, id: &str) -> Vec<Event> {
        lock(&self.announced)
            .iter()
            .filter(|a| a.id == id)
            .map(|a| a.event)
            .collect()
    }

    /// Forgets what was announced.
    pub fn clear(&self) {
        lock(&self.announced).clear();
    }
}

impl Notifications for RecordingNotifier {
    fn announce(&self, _ctx: &RequestContext, event: Event, payload: Payload<'_>) {
        let (id, status, error_message) = match payload {
            Payload::Volume(v) => (&v.id, v.status.as_str(), &v.error_message),
            Payload::Snapshot(s) => (&s.id, s.status.as_str(), &s.error_message),
            Payload::Attachment(a) => (&a.id, a.status.as_str(), &a.error_message),
            Payload::Backup(b) => (&b.id, b.status.as_str(), &b.error_message),
            Payload::Transfer(t) => (&t.id, "", &t.volume_id),
        };
        lock(&self.announced).push(Announced {
            event,
            id: id.clone(),
            status: status.to_owned(),
            error_message: error_message.clone(),
        });
    }
}
