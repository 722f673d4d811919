//! Any [`VolumeOps`] served on the bus as one volume service.

use std::sync::Arc;

use super::{VolumeOps, methods};
use crate::rpc::Dispatcher;

/// Adds `$method` to `$dispatcher`, handled by `$ops.$handler(&ctx, host, req)`.
macro_rules! serve_on_host {
    ($dispatcher:expr, $method:expr, $ops:expr, $host:expr, $handler:ident) => {{
        let (ops, host) = ($ops.clone(), $host.clone());
        $method.serve($dispatcher, move |ctx, req| {
            let (ops, host) = (ops.clone(), host.clone());
            async move { ops.$handler(&ctx, &host, req).await }
        })
    }};
}

/// The dispatcher serving `ops` as the volume service of `host` (`host@backend`):
/// every message on its topic is handed to `ops` with that host.
pub fn volume_dispatcher(ops: Arc<dyn VolumeOps>, host: &str) -> Dispatcher {
    let host: Arc<str> = Arc::from(host);
    let d = Dispatcher::new();
    let d = serve_on_host!(d, methods::CREATE_VOLUME, ops, host, create_volume);
    let d = serve_on_host!(d, methods::DELETE_VOLUME, ops, host, delete_volume);
    let d = serve_on_host!(d, methods::EXTEND_VOLUME, ops, host, extend_volume);
    let d = serve_on_host!(d, methods::CREATE_SNAPSHOT, ops, host, create_snapshot);
    let d = serve_on_host!(d, methods::DELETE_SNAPSHOT, ops, host, delete_snapshot);
    let d = serve_on_host!(d, methods::CREATE_BACKUP, ops, host, create_backup);
    let d = serve_on_host!(d, methods::DELETE_BACKUP, ops, host, delete_backup);
    let d = serve_on_host!(d, methods::RESTORE_BACKUP, ops, host, restore_backup);
    let d = serve_on_host!(d, methods::ATTACH_VOLUME, ops, host, attach_volume);
    let d = serve_on_host!(d, methods::DETACH_VOLUME, ops, host, detach_volume);
    let d = serve_on_host!(
        d,
        methods::REVERT_TO_SNAPSHOT,
        ops,
        host,
        revert_to_snapshot
    );
    let d = serve_on_host!(d, methods::MIGRATE_VOLUME, ops, host, migrate_volume);
    let d = serve_on_host!(
        d,
        methods::EXPORT_FOR_MIGRATION,
        ops,
        host,
        export_for_migration
    );
    let d = serve_on_host!(
        d,
        methods::UNEXPORT_FOR_MIGRATION,
        ops,
        host,
        unexport_for_migration
    );
    let d = serve_on_host!(
        d,
        methods::CLEANUP_MIGRATION_SOURCE,
        ops,
        host,
        cleanup_migration_source
    );
    let d = serve_on_host!(d, methods::INSPECT_EXISTING, ops, host, inspect_existing);
    let d = serve_on_host!(d, methods::MANAGE_EXISTING, ops, host, manage_existing);
    methods::PUBLISH_SERVICE_CAPABILITIES.serve(d, move |ctx, req| {
        let ops = ops.clone();
        async move { ops.publish_service_capabilities(&ctx, req).await }
    })
}
