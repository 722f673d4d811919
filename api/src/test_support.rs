//! What the handler tests share: the `scoria_common::testing` fakes wired into
//! [`Ports`], and a broker link that a test switches down and up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use scoria_common::{
    RequestContext,
    testing::{RecordingNotifier, RecordingScheduler, RecordingVolumes, TempDb},
};
use tokio::sync::watch;
use tonic::Request;

use crate::ports::{BrokerLink, Ports};

/// A broker link a test switches: down (not connected) or blocked.
pub(crate) struct FakeLink {
    up: watch::Sender<bool>,
    blocked: AtomicBool,
}

impl Default for FakeLink {
    fn default() -> Self {
        Self {
            up: watch::channel(true).0,
            blocked: AtomicBool::new(false),
        }
    }
}

impl FakeLink {
    /// Down (`true`) or up again.
    pub(crate) fn set_down(&self, down: bool) {
        self.up.send_replace(!down);
    }

    /// Blocked by a resource alarm, as AMQP `connection.blocked` says (`true`),
    /// or not.
    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl BrokerLink for FakeLink {
    fn unavailable(&self) -> Option<String> {
        if !*self.up.borrow() {
            Some("the fake broker is down (test)".to_owned())
        } else if self.blocked.load(Ordering::SeqCst) {
            Some("the fake broker blocks publishers (test)".to_owned())
        } else {
            None
        }
    }

    async fn ready(&self, within: Duration) -> Result<(), String> {
        let mut rx = self.up.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|up| *up)).await;
        self.unavailable().map_or(Ok(()), Err)
    }
}

/// A temporary database and the recording fakes, as [`Ports`].
pub(crate) struct Harness {
    /// The database.
    pub(crate) db: TempDb,
    /// The scheduler.
    pub(crate) scheduler: Arc<RecordingScheduler>,
    /// The volume services.
    pub(crate) volumes: Arc<RecordingVolumes>,
    /// The broker link.
    pub(crate) link: Arc<FakeLink>,
    /// The notifications.
    pub(crate) notifier: Arc<RecordingNotifier>,
}

impl Harness {
    /// A fresh database, every fake up.
    pub(crate) async fn new() -> Self {
        Self {
            db: TempDb::new().await,
            scheduler: Arc::default(),
            volumes: Arc::default(),
            link: Arc::default(),
            notifier: Arc::default(),
        }
    }

    /// The ports over the fakes (volume calls to `volumes`).
    pub(crate) fn ports_with(&self, volumes: Arc<dyn scoria_common::ops::VolumeOps>) -> Ports {
        Ports {
            scheduler: self.scheduler.clone(),
            volumes,
            broker: self.link.clone(),
            notifications: self.notifier.clone(),
            publish_timeout: Duration::from_millis(300),
        }
    }

    /// The ports over the fakes.
    pub(crate) fn ports(&self) -> Ports {
        self.ports_with(self.volumes.clone())
    }
}

/// A context of `project` with `roles`.
pub(crate) fn ctx(project: &str, roles: &[&str]) -> RequestContext {
    RequestContext::new(
        project,
        "u1",
        roles.iter().map(|r| (*r).to_owned()).collect(),
    )
}

/// `message` as the auth layer hands it on, with `ctx`.
pub(crate) fn request<T>(ctx: &RequestContext, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ctx.clone());
    request
}
