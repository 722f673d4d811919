//! `scoria-api`: the gRPC API gateway (cinder-api).
//!
//! It validates and authorises requests, writes intent to the database, casts work
//! to the scheduler or a volume service over the bus, and serves reads from the
//! database. It keeps no state of its own: run as many instances as wanted.
//!
//! ```text
//!  client ─gRPC─▶ [health, reflection]                         (no auth)
//!         ─gRPC─▶ AuthLayer ─▶ LimitLayer ─▶ VolumeService ─▶ Db  (reads, intent)
//!                  │                      └─▶ Intent ─▶ SchedulerOps / VolumeOps
//!                  │                                (cast; compensate via Settler)
//!                  ├─▶ Snapshot-, Attachment-, BackupService ─▶ Db, Intent ─▶ VolumeOps
//!                  ├─▶ VolumeTypeService, AvailabilityZoneService ─▶ Db
//!                  ├─▶ QuotaService ─▶ Db (limits; usage kept by the database)
//!                  ├─▶ TransferService ─▶ Db (offers; a sweep ends lapsed ones)
//!                  └─▶ AdminService (admin role only) ─▶ Db, SchedulerOps (pools)
//!  health watcher: BrokerLink (connected, not blocked) + db ping ─▶ grpc.health.v1
//!  change feed (<cx>.changes.fanout) ─▶ watch::Watches ─▶ Watch* streams
//! ```
//!
//! One module per concern: a file (or folder) per gRPC service; `ports.rs` (what
//! the handlers reach beyond the database), `intent.rs` (persist, send,
//! compensate), `scope.rs` (who sees what), `request.rs` (context and reply),
//! `error/` (the one status decision), `auth/`, `limits/` (sizes, streams,
//! rate per project), `health.rs`, `validate/`, `page_token.rs`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod attachment;
pub mod auth;
pub mod availability_zone;
pub mod backup;
#[cfg(test)]
mod blocked_tests;
pub mod config;
pub mod error;
pub mod health;
mod intent;
pub mod limits;
pub mod metrics;
pub mod page_token;
pub mod policy;
pub mod ports;
pub mod quota;
mod request;
pub mod scope;
pub mod snapshot;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod transfer;
pub mod validate;
pub mod volume;
pub mod volume_type;
pub mod watch;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use scoria_common::{
    changes::{ChangeFeed, ChangePublisher, PublisherOptions},
    config::{ConfigError, ProcessConfig},
    db::{Db, DbError},
    rpc::{Broker, RpcClient},
};
use scoria_proto::v1::{
    admin_service_server::AdminServiceServer, attachment_service_server::AttachmentServiceServer,
    availability_zone_service_server::AvailabilityZoneServiceServer,
    backup_service_server::BackupServiceServer, quota_service_server::QuotaServiceServer,
    snapshot_service_server::SnapshotServiceServer, transfer_service_server::TransferServiceServer,
    volume_service_server::VolumeServiceServer,
    volume_type_service_server::VolumeTypeServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

pub use crate::config::Config;
use crate::{
    admin::AdminApi,
    attachment::AttachmentApi,
    auth::{AuthLayer, Authenticator, JwtVerifier, TokensError},
    availability_zone::AvailabilityZoneApi,
    backup::BackupApi,
    config::AuthMode,
    limits::LimitLayer,
    policy::{Policy, PolicyError},
    ports::Ports,
    quota::QuotaApi,
    snapshot::SnapshotApi,
    tls::ServerTls,
    transfer::TransferApi,
    volume::VolumeApi,
    volume_type::VolumeTypeApi,
    watch::{Limits, Watches},
};

/// The binary's name, as it appears in logs and on the bus.
pub const BINARY: &str = "scoria-api";
/// The API's database pool on PostgreSQL unless `database.max_connections` says
/// otherwise: every gRPC request reads or writes rows, so the API holds the
/// most (README, "Several instances").
pub const DB_POOL_CONNECTIONS: u32 = 16;

/// Why the API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokens file of token mode is unusable.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The settings or the keys of jwt mode are unusable.
    #[error("jwt auth mode: {0}")]
    Jwt(String),
    /// The policy file is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Db(#[from] DbError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection service could not load the descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] scoria_common::metrics::MetricsError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The TLS files of `api.tls` are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// SIGHUP (TLS reload) could not be listened for.
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
    /// The change feed could not be subscribed.
    #[error("cannot subscribe to the change feed: {0}")]
    Feed(String),
}

/// Binds `api.listen` and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled (tests can bind port 0
/// themselves). The database is opened first; the broker connects in the
/// background: reads work while it is down, writes wait for it up to the publish
/// timeout. Health (`""` and every service) says `SERVING` only while the
/// database and the broker are reachable (see [`health`]).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let authenticator = match config.api.auth_mode {
        AuthMode::Jwt => Authenticator::jwt(
            JwtVerifier::new(&config.jwt_settings())
                .await
                .map_err(Error::Jwt)?,
        ),
        mode => Authenticator::from_config(mode, config.api.tokens_file.as_deref())?,
    };
    let policy = Policy::load(config.api.policy_file.as_deref())?;
    if let Some(path) = &config.api.policy_file {
        tracing::info!(path = %path.display(), "policy file loaded");
    }
    let jwt_verifier = authenticator.jwt_verifier();
    let auth = AuthLayer::new(authenticator).with_policy(policy);
    let tls = ServerTls::load(&config.api.tls)?;
    let metrics =
        scoria_common::metrics::MetricsServer::start(&config.service.metrics_listen, &shutdown)
            .await?;
    let pool = config.database.pool_size(DB_POOL_CONNECTIONS);
    let db = Db::connect_pool(&config.database_url(), pool)
        .await?
        .with_quota_defaults(config.quota);
    scoria_common::metrics::db::watch(&db);
    tracing::info!(engine = ?db.engine(), quota_defaults = ?config.quota, "database connected");
    let broker = Broker::start(
        config.bus.clone(),
        // Named like the other services' connections, `<exchange>:<binary>@<host>`,
        // so an operator (or a test) finds a deployment's connections by its exchange.
        format!(
            "{}:{BINARY}@{}",
            config.bus.control_exchange, config.service.host
        ),
    );
    scoria_common::metrics::http::watch_broker(&broker);
    let ports = Ports::amqp(&broker, format!("{BINARY}.{}", config.service.host));

    // The change feed: this instance announces the rows it writes, and its watch
    // hubs follow every instance's (and service's) announcements.
    let tasks = TaskTracker::new();
    if let Some(verifier) = jwt_verifier
        && !verifier.refresh_interval().is_zero()
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(verifier.refresh_interval());
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => verifier.refresh().await,
                }
            }
        });
    }
    let feed_stop = shutdown.child_token();
    let db = db.with_change_sink(ChangePublisher::start(
        RpcClient::new(broker.clone()),
        PublisherOptions::default(),
        &tasks,
        feed_stop.clone(),
    ));
    let watches = Watches::start(
        &db,
        Limits::new(config.api.max_watchers, config.api.watch_buffer),
        &tasks,
        shutdown.clone(),
    );
    let feed = ChangeFeed::subscribe(
        &broker,
        Arc::new(watches.clone()),
        &tasks,
        feed_stop.clone(),
    )
    .map_err(|err| Error::Feed(err.to_string()))?;

    // Lapsed transfer offers give their volumes back (every instance sweeps;
    // each row is ended once).
    tasks.spawn(transfer::sweep_expired(
        db.clone(),
        ports.notifications.clone(),
        transfer::interval_for(config.transfer_expiry()),
        shutdown.clone(),
    ));

    let result = serve_with(
        &config,
        Listener { tcp: listener, tls },
        shutdown,
        db.clone(),
        ports,
        auth,
        Some(watches),
    )
    .await;

    feed_stop.cancel();
    feed.shutdown().await;
    tasks.close();
    tasks.wait().await;
    broker.close().await;
    db.close().await;
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    tracing::info!("{BINARY} stopped");
    result
}

/// Where the API serves: a bound socket, with TLS or without.
pub(crate) struct Listener {
    /// The socket.
    pub(crate) tcp: TcpListener,
    /// TLS on it, if configured.
    pub(crate) tls: Option<ServerTls>,
}

/// Serves the API over `db` and `ports` (the real ones or the test fakes).
pub(crate) async fn serve_with(
    config: &Config,
    listener: Listener,
    shutdown: CancellationToken,
    db: Db,
    ports: Ports,
    auth: AuthLayer,
    watches: Option<Watches>,
) -> Result<(), Error> {
    let Listener { tcp: listener, tls } = listener;
    let (link, db_for_health) = (ports.broker.clone(), db.clone());
    let limits = config.limits();
    // Authentication first, so the limits know the project; then the limits;
    // then the service, whose decoder refuses messages over the size limit.
    let guard = tower::ServiceBuilder::new()
        .layer(auth)
        .layer(LimitLayer::new(limits));
    let max = limits.max_request_bytes;
    let volume_type_service = guard.service(
        VolumeTypeServiceServer::new(VolumeTypeApi::new(db.clone())).max_decoding_message_size(max),
    );
    let availability_zone_service = guard.service(
        AvailabilityZoneServiceServer::new(AvailabilityZoneApi::new(
            db.clone(),
            config.service_down_ms(),
        ))
        .max_decoding_message_size(max),
    );
    let admin_service = guard.service(
        AdminServiceServer::new(AdminApi::new(
            db.clone(),
            config.service_down_ms(),
            ports.clone(),
        ))
        .max_decoding_message_size(max),
    );
    let mut snapshots = SnapshotApi::new(db.clone(), ports.clone());
    let mut attachments = AttachmentApi::new(db.clone(), ports.clone(), config.bus.call_timeout());
    let mut volumes = VolumeApi::new(db.clone(), ports.clone(), config.api.max_volume_size_gib);
    let backups = BackupApi::new(
        db.clone(),
        ports.clone(),
        volumes.clone(),
        config.service_down_ms(),
    );
    if let Some(watches) = watches {
        snapshots = snapshots.with_watches(watches.clone());
        attachments = attachments.with_watches(watches.clone());
        volumes = volumes.with_watches(watches);
    }
    let snapshot_service =
        guard.service(SnapshotServiceServer::new(snapshots).max_decoding_message_size(max));
    let attachment_service =
        guard.service(AttachmentServiceServer::new(attachments).max_decoding_message_size(max));
    let backup_service =
        guard.service(BackupServiceServer::new(backups).max_decoding_message_size(max));
    let quota_service = guard
        .service(QuotaServiceServer::new(QuotaApi::new(db.clone())).max_decoding_message_size(max));
    let volume_service =
        guard.service(VolumeServiceServer::new(volumes).max_decoding_message_size(max));
    let transfer_service = guard.service(
        TransferServiceServer::new(TransferApi::new(
            db.clone(),
            ports.notifications.clone(),
            config.transfer_expiry(),
        ))
        .max_decoding_message_size(max),
    );

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(scoria_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.*, so clients can decode the error details we send.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            // Both reflection versions in both registries, so either lists both.
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // NOT_SERVING until the watcher has seen the database and the broker.
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health, ServingStatus::NotServing).await;
    let watcher = tokio::spawn(health::watch(
        health.clone(),
        link,
        db_for_health,
        health::CHECK_INTERVAL,
        shutdown.clone(),
    ));

    let local = listener.local_addr().ok();
    tracing::info!(
        addr = ?local,
        tls = tls.is_some(),
        mtls = tls.as_ref().is_some_and(ServerTls::requires_client_cert),
        auth_mode = ?config.api.auth_mode,
        exchange = %config.bus.control_exchange,
        ?limits,
        "{BINARY} listening"
    );
    let router = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.http2_header_list_bytes())
        .layer(metrics::GrpcMetricsLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(volume_service)
        .add_service(snapshot_service)
        .add_service(backup_service)
        .add_service(volume_type_service)
        .add_service(availability_zone_service)
        .add_service(admin_service)
        .add_service(attachment_service)
        .add_service(quota_service)
        .add_service(transfer_service);
    // The TLS accept loop, its handshakes and the reload task.
    let (tls_tasks, tls_stop) = (TaskTracker::new(), shutdown.child_token());
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            None => Box::pin(router.serve_with_incoming_shutdown(
                // No Nagle: small replies must not wait 40 ms for a delayed ACK.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            )),
            Some(tls) => {
                tls.watch(&tls_tasks, tls_stop.clone())
                    .map_err(Error::Signal)?;
                let incoming = tls::incoming::incoming(listener, tls, &tls_tasks, tls_stop.clone());
                Box::pin(
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
                )
            }
        };
    tokio::pin!(server);

    let drain = config.service.drain_timeout();
    let deadline = async {
        shutdown.cancelled().await;
        health::set_all(&health, ServingStatus::NotServing).await;
        tokio::time::sleep(drain).await;
    };
    let outcome = tokio::select! {
        result = &mut server => result,
        () = deadline => {
            tracing::warn!(?drain, "requests still running after the drain timeout: closing");
            Ok(())
        }
    };
    watcher.abort();
    tls_stop.cancel();
    tls_tasks.close();
    tls_tasks.wait().await;
    Ok(outcome?)
}
