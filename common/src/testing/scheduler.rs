//! Fakes of [`SchedulerOps`].

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use scoria_proto::bus::{Capabilities, GetPools, PoolList, ScheduleCreateVolume};

use crate::{
    context::RequestContext,
    ops::{OpsResult, SchedulerOps},
    sync::lock,
};

/// A scheduler that takes everything and does nothing (no pools).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdleScheduler;

#[async_trait]
impl SchedulerOps for IdleScheduler {
    async fn create_volume(&self, _: &RequestContext, _: ScheduleCreateVolume) -> OpsResult<()> {
        Ok(())
    }

    async fn update_service_capabilities(
        &self,
        _: &RequestContext,
        _: Capabilities,
    ) -> OpsResult<()> {
        Ok(())
    }

    async fn get_pools(&self, _: &RequestContext, _: GetPools) -> OpsResult<PoolList> {
        Ok(PoolList::default())
    }
}

/// A scheduler that records what it is sent; [`RecordingScheduler::set_down`]
/// makes every method fail as undelivered (the broker is down).
#[derive(Default)]
pub struct RecordingScheduler {
    down: AtomicBool,
    scheduled: Mutex<Vec<ScheduleCreateVolume>>,
    reports: Mutex<Vec<Capabilities>>,
    pools: Mutex<PoolList>,
}

impl RecordingScheduler {
    /// Every method fails as undelivered while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The pools `get_pools` answers.
    pub fn set_pools(&self, pools: PoolList) {
        *lock(&self.pools) = pools;
    }

    /// The create requests taken so far.
    pub fn scheduled(&self) -> Vec<ScheduleCreateVolume> {
        lock(&self.scheduled).clone()
    }

    /// The capability reports taken so far.
    pub fn reports(&self) -> Vec<Capabilities> {
        lock(&self.reports).clone()
    }

    fn check_up(&self) -> OpsResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(super::broker_down());
        }
        Ok(())
    }
}

#[async_trait]
impl SchedulerOps for RecordingScheduler {
    async fn create_volume(
        &self,
        _: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> OpsResult<()> {
        self.check_up()?;
        lock(&self.scheduled).push(request);
        Ok(())
    }

    async fn update_service_capabilities(
        &self,
        _: &RequestContext,
        report: Capabilities,
    ) -> OpsResult<()> {
        self.check_up()?;
        lock(&self.reports).push(report);
        Ok(())
    }

    async fn get_pools(&self, _: &RequestContext, _: GetPools) -> OpsResult<PoolList> {
        self.check_up()?;
        Ok(lock(&self.pools).clone())
    }
}
