//! `grpc.health.v1` that tells the truth about the API's dependencies: every
//! service (and the overall `""`) is `NOT_SERVING` until the database answers and
//! the broker takes messages, again whenever the broker connection is down or
//! blocked by a resource alarm (AMQP `connection.blocked`) or the database stops
//! answering, and for good once shutdown starts.
//!
//! ```text
//!   every tick: broker.unavailable()? ── why ──▶ NOT_SERVING (logged once, with why)
//!                  │ none
//!               db.ping()? ──────────── err ──▶ NOT_SERVING
//!                  │ ok
//!                  ▼
//!               SERVING
//! ```

use std::{sync::Arc, time::Duration};

use scoria_common::db::Db;
use scoria_proto::v1::{
    admin_service_server::AdminServiceServer, attachment_service_server::AttachmentServiceServer,
    availability_zone_service_server::AvailabilityZoneServiceServer,
    snapshot_service_server::SnapshotServiceServer, transfer_service_server::TransferServiceServer,
    volume_service_server::VolumeServiceServer,
    volume_type_service_server::VolumeTypeServiceServer,
};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    admin::AdminApi, attachment::AttachmentApi, availability_zone::AvailabilityZoneApi,
    ports::BrokerLink, snapshot::SnapshotApi, transfer::TransferApi, volume::VolumeApi,
    volume_type::VolumeTypeApi,
};

/// How often the dependencies are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The names health answers for: overall and each service.
pub const SERVICES: [&str; 8] = [
    "",
    <VolumeServiceServer<VolumeApi> as NamedService>::NAME,
    <SnapshotServiceServer<SnapshotApi> as NamedService>::NAME,
    <VolumeTypeServiceServer<VolumeTypeApi> as NamedService>::NAME,
    <AvailabilityZoneServiceServer<AvailabilityZoneApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
    <AttachmentServiceServer<AttachmentApi> as NamedService>::NAME,
    <TransferServiceServer<TransferApi> as NamedService>::NAME,
];

/// Sets every name in [`SERVICES`] to `status`.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Why the API cannot serve writes now, or `None` when it can.
async fn why_not(broker: &dyn BrokerLink, db: &Db) -> Option<String> {
    if let Some(why) = broker.unavailable() {
        return Some(format!("message broker: {why}"));
    }
    db.ping().await.err().map(|err| format!("database: {err}"))
}

/// Keeps `reporter` in step with the broker and the database every `every`
/// until `shutdown`, then reports `NOT_SERVING` for good.
pub async fn watch(
    reporter: HealthReporter,
    broker: Arc<dyn BrokerLink>,
    db: Db,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut serving: Option<bool> = None;
    loop {
        let why = why_not(broker.as_ref(), &db).await;
        let now = why.is_none();
        if serving != Some(now) {
            match &why {
                Some(why) => tracing::warn!(%why, "health: NOT_SERVING"),
                None => tracing::info!("health: SERVING (database and message broker reachable)"),
            }
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            serving = Some(now);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
