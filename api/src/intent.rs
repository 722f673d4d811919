//! The one intent flow of every request that starts work elsewhere (CreateVolume,
//! DeleteVolume, ExtendVolume, CreateSnapshot, DeleteSnapshot, CreateAttachment,
//! DeleteAttachment): the row and its worker entry are written before anything is
//! sent, so a lost message leaves a record a reconciler can finish or fail.
//!
//! ```text
//!   Intent::ready      the broker must take messages: wait for a (re)connection
//!        │             up to the publish timeout, else UNAVAILABLE, nothing written
//!        ▼
//!   (the handler)      persist the intent: row + worker entry, by compare-and-set
//!        ▼
//!   Intent::send       cast or call, bounded (a blocked broker never answers)
//!        │ failed
//!        ▼
//!   compensate(why)    through the Settler: the operation's error status and its
//!                      `.error` event, or the row removed (and `.error` announced)
//!                      where nothing was ever started; then the error is returned
//! ```

use std::{future::Future, time::Duration};

use scoria_common::{
    db::DbResult,
    ops::OpsResult,
    status::{self, Reason},
};
use tonic::{Code, Status};

use crate::{
    error::{ApiError, ApiResult},
    ports::Ports,
};

/// How the message goes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A cast: done once the broker confirmed it.
    Cast,
    /// A call that waits up to this long for the answer.
    Call(Duration),
}

/// One request's intent flow: see the module docs.
pub(crate) struct Intent<'a> {
    ports: &'a Ports,
    action: String,
    kind: Kind,
}

impl<'a> Intent<'a> {
    /// A cast; `action` says what it asks for (`delete volume <id> on <host>`).
    pub(crate) fn cast(ports: &'a Ports, action: impl Into<String>) -> Self {
        Self {
            ports,
            action: action.into(),
            kind: Kind::Cast,
        }
    }

    /// A call whose answer takes up to `timeout`.
    pub(crate) fn call(ports: &'a Ports, action: impl Into<String>, timeout: Duration) -> Self {
        Self {
            ports,
            action: action.into(),
            kind: Kind::Call(timeout),
        }
    }

    /// Waits up to the publish timeout for the broker to take messages; UNAVAILABLE
    /// (before anything is written) if it does not.
    pub(crate) async fn ready(&self) -> ApiResult<()> {
        if self.ports.broker.unavailable().is_none() {
            return Ok(());
        }
        self.ports
            .broker
            .ready(self.ports.publish_timeout)
            .await
            .map_err(|why| ApiError::BrokerDown(format!("cannot {} now: {why}", self.action)))
    }

    /// Sends with `send`; on any failure (including no answer in time) runs
    /// `compensate` with the failure's message, logs how that went, and returns the
    /// error. `compensate` answers whether its compare-and-set won (a host may have
    /// settled the resource meanwhile).
    pub(crate) async fn send<T, C, CF>(
        &self,
        send: impl Future<Output = OpsResult<T>>,
        compensate: C,
    ) -> ApiResult<T>
    where
        C: FnOnce(String) -> CF,
        CF: Future<Output = DbResult<bool>>,
    {
        let bound = match self.kind {
            Kind::Cast => self.ports.publish_timeout,
            Kind::Call(timeout) => timeout + self.ports.publish_timeout,
        };
        let status = match tokio::time::timeout(bound, send).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(err)) => Status::from(err),
            Err(_) => {
                let why =
                    self.ports.broker.unavailable().unwrap_or_else(|| {
                        "the message broker did not take the message".to_owned()
                    });
                status::error(
                    Code::Unavailable,
                    Reason::BrokerUnavailable,
                    format!("{why}: no confirmation within {bound:?}"),
                )
            }
        };
        let compensated = compensate(status.message().to_owned()).await;
        match compensated {
            Ok(true) => {
                tracing::warn!(action = %self.action, error = %status.message(), "not sent: compensated");
            }
            Ok(false) => {
                tracing::info!(action = %self.action, "not sent, but settled meanwhile");
            }
            Err(err) => {
                tracing::error!(action = %self.action, error = %err, "not sent, and cannot compensate");
            }
        }
        let action = self.action.clone();
        Err(match self.kind {
            Kind::Cast => ApiError::Bus { action, status },
            Kind::Call(_) => ApiError::Call { action, status },
        })
    }
}
