//! What the handlers reach beyond the database: the scheduler's and the volume
//! services' ports (`scoria_common::ops`), the broker link (is the bus usable
//! now?) and the notifications the compensations announce. The real ones go
//! over AMQP; tests pass the fakes of `scoria_common::testing`, so a handler
//! never knows which side of the broker it is on.

use std::{sync::Arc, time::Duration};

use scoria_common::{
    db::Db,
    events::Notifications,
    ops::{SchedulerClient, SchedulerOps, VolumeClient, VolumeOps},
    rpc::{Broker, Notifier, RpcClient},
    settle::Settler,
};

/// Whether the bus can carry a message now, as the handlers ask it.
#[tonic::async_trait]
pub trait BrokerLink: Send + Sync {
    /// Why nothing can be published now; `None` while the broker takes messages.
    fn unavailable(&self) -> Option<String>;

    /// Waits up to `within` for the broker to take messages (a connection that is
    /// being re-established); why not, if it still does not.
    async fn ready(&self, within: Duration) -> Result<(), String>;
}

#[tonic::async_trait]
impl BrokerLink for Broker {
    fn unavailable(&self) -> Option<String> {
        if !self.is_connected() {
            Some("no connection to the message broker".to_owned())
        } else if self.is_blocked() {
            Some("the message broker blocks publishers (a resource alarm)".to_owned())
        } else {
            None
        }
    }

    async fn ready(&self, within: Duration) -> Result<(), String> {
        self.wait_connected(within)
            .await
            .map_err(|err| err.to_string())?;
        self.unavailable().map_or(Ok(()), Err)
    }
}

/// The handlers' ports, cloned into every service.
#[derive(Clone)]
pub struct Ports {
    /// The scheduler (create).
    pub scheduler: Arc<dyn SchedulerOps>,
    /// The volume services (delete, extend, snapshots, attachments).
    pub volumes: Arc<dyn VolumeOps>,
    /// Whether the bus is usable now.
    pub broker: Arc<dyn BrokerLink>,
    /// Where compensations announce the `.error` events.
    pub notifications: Arc<dyn Notifications>,
    /// How long a request waits for the broker to take a message (the bus's
    /// `publish_timeout`).
    pub publish_timeout: Duration,
}

impl Ports {
    /// The settle path over `db`, announcing through these ports.
    pub fn settler(&self, db: &Db) -> Settler {
        Settler::new(db.clone(), self.notifications.clone())
    }

    /// The ports over AMQP through `broker`; notifications are published as
    /// `publisher_id`.
    pub fn amqp(broker: &Broker, publisher_id: impl Into<String>) -> Self {
        let rpc = RpcClient::new(broker.clone());
        Self {
            scheduler: Arc::new(SchedulerClient::new(rpc.clone())),
            volumes: Arc::new(VolumeClient::new(rpc)),
            broker: Arc::new(broker.clone()),
            notifications: Arc::new(Notifier::new(broker.clone(), publisher_id.into())),
            publish_timeout: broker.config().publish_timeout(),
        }
    }
}
