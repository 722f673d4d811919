//! Any [`SchedulerOps`] served on the bus.

use std::sync::Arc;

use super::{SchedulerOps, methods};
use crate::rpc::Dispatcher;

/// The dispatcher serving `ops` as the scheduler.
pub fn scheduler_dispatcher(ops: Arc<dyn SchedulerOps>) -> Dispatcher {
    let dispatcher = Dispatcher::new();
    let dispatcher = methods::CREATE_VOLUME.serve(dispatcher, {
        let ops = ops.clone();
        move |ctx, req| {
            let ops = ops.clone();
            async move { ops.create_volume(&ctx, req).await }
        }
    });
    let dispatcher = methods::UPDATE_SERVICE_CAPABILITIES.serve(dispatcher, {
        let ops = ops.clone();
        move |ctx, req| {
            let ops = ops.clone();
            async move { ops.update_service_capabilities(&ctx, req).await }
        }
    });
    let dispatcher = methods::GET_POOLS.serve(dispatcher, {
        let ops = ops.clone();
        move |ctx, req| {
            let ops = ops.clone();
            async move { ops.get_pools(&ctx, req).await }
        }
    });
    let dispatcher = methods::RETYPE_VOLUME.serve(dispatcher, {
        let ops = ops.clone();
        move |ctx, req| {
            let ops = ops.clone();
            async move { ops.retype_volume(&ctx, req).await }
        }
    });
    let dispatcher = methods::FIND_MIGRATION_HOST.serve(dispatcher, {
        let ops = ops.clone();
        move |ctx, req| {
            let ops = ops.clone();
            async move { ops.find_migration_host(&ctx, req).await }
        }
    });
    methods::CHECK_HOST_FITS.serve(dispatcher, move |ctx, req| {
        let ops = ops.clone();
        async move { ops.check_host_fits(&ctx, req).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatchers_serve_exactly_the_declared_methods() {
        struct Never;
        #[async_trait::async_trait]
        impl crate::ops::SchedulerOps for Never {
            async fn create_volume(
                &self,
                _: &crate::RequestContext,
                _: scoria_proto::bus::ScheduleCreateVolume,
            ) -> crate::ops::OpsResult<()> {
                Ok(())
            }
            async fn update_service_capabilities(
                &self,
                _: &crate::RequestContext,
                _: scoria_proto::bus::Capabilities,
            ) -> crate::ops::OpsResult<()> {
                Ok(())
            }
            async fn get_pools(
                &self,
                _: &crate::RequestContext,
                _: scoria_proto::bus::GetPools,
            ) -> crate::ops::OpsResult<scoria_proto::bus::PoolList> {
                Ok(Default::default())
            }
        }
        let mut served: Vec<_> = crate::ops::scheduler_dispatcher(Arc::new(Never))
            .methods()
            .map(str::to_owned)
            .collect();
        served.sort();
        let mut declared = crate::ops::scheduler::methods::ALL
            .map(str::to_owned)
            .to_vec();
        declared.sort();
        assert_eq!(served, declared);
    }
}
