//! A fake of [`VolumeOps`] that records what it is sent.

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use scoria_proto::bus::{
    AttachResult, AttachVolume, CreateBackup, CreateSnapshot, CreateVolume, DeleteBackup,
    DeleteSnapshot, DeleteVolume, DetachResult, DetachVolume, ExtendVolume, PublishCapabilities,
    RestoreBackup, RevertToSnapshot,
};

use crate::{
    context::RequestContext,
    ops::{OpsError, OpsResult, VolumeOps},
    sync::lock,
};

/// One message sent to a volume service, with the host it was sent to.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeCall {
    /// `create_volume`.
    Create(String, CreateVolume),
    /// `delete_volume`.
    Delete(String, DeleteVolume),
    /// `extend_volume`.
    Extend(String, ExtendVolume),
    /// `create_snapshot`.
    CreateSnapshot(String, CreateSnapshot),
    /// `delete_snapshot`.
    DeleteSnapshot(String, DeleteSnapshot),
    /// `create_backup`.
    CreateBackup(String, CreateBackup),
    /// `delete_backup`.
    DeleteBackup(String, DeleteBackup),
    /// `restore_backup`.
    RestoreBackup(String, RestoreBackup),
    /// `attach_volume`.
    Attach(String, AttachVolume),
    /// `detach_volume`.
    Detach(String, DetachVolume),
    /// `publish_service_capabilities` (to every host).
    Publish(PublishCapabilities),
    /// `revert_to_snapshot`.
    Revert(String, RevertToSnapshot),
}

impl VolumeCall {
    /// The host it went to (`None`: the fanout to all).
    pub fn host(&self) -> Option<&str> {
        match self {
            VolumeCall::Create(h, _)
            | VolumeCall::Delete(h, _)
            | VolumeCall::Extend(h, _)
            | VolumeCall::CreateSnapshot(h, _)
            | VolumeCall::DeleteSnapshot(h, _)
            | VolumeCall::CreateBackup(h, _)
            | VolumeCall::DeleteBackup(h, _)
            | VolumeCall::RestoreBackup(h, _)
            | VolumeCall::Attach(h, _)
            | VolumeCall::Detach(h, _)
            | VolumeCall::Revert(h, _) => Some(h),
            VolumeCall::Publish(_) => None,
        }
    }
}

type AttachAnswer = Box<dyn Fn(&str, &AttachVolume) -> OpsResult<AttachResult> + Send + Sync>;
type DetachAnswer = Box<dyn Fn(&str, &DetachVolume) -> OpsResult<DetachResult> + Send + Sync>;

/// Records every message; while [`RecordingVolumes::set_down`] every method fails
/// as undelivered (recording nothing). Calls answer what
/// [`RecordingVolumes::answer_attach`] / [`RecordingVolumes::answer_detach`] say
/// (by default: FAILED, unimplemented).
#[derive(Default)]
pub struct RecordingVolumes {
    down: AtomicBool,
    unreachable: Mutex<HashSet<String>>,
    calls: Mutex<Vec<VolumeCall>>,
    attach: Mutex<Option<AttachAnswer>>,
    detach: Mutex<Option<DetachAnswer>>,
}

impl RecordingVolumes {
    /// Every method fails as undelivered while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Messages to `host` are recorded, then refused as undeliverable (no queue
    /// is bound for it), while `unreachable`.
    pub fn set_host_unreachable(&self, host: &str, unreachable: bool) {
        let mut hosts = lock(&self.unreachable);
        if unreachable {
            hosts.insert(host.to_owned());
        } else {
            hosts.remove(host);
        }
    }

    /// The creates sent so far, with their host.
    pub fn creates(&self) -> Vec<(String, CreateVolume)> {
        lock(&self.calls)
            .iter()
            .filter_map(|call| match call {
                VolumeCall::Create(host, request) => Some((host.clone(), request.clone())),
                _ => None,
            })
            .collect()
    }

    /// What `attach_volume` answers.
    pub fn answer_attach(
        &self,
        answer: impl Fn(&str, &AttachVolume) -> OpsResult<AttachResult> + Send + Sync + 'static,
    ) {
        *lock(&self.attach) = Some(Box::new(answer));
    }

    /// What `detach_volume` answers.
    pub fn answer_detach(
        &self,
        answer: impl Fn(&str, &DetachVolume) -> OpsResult<DetachResult> + Send + Sync + 'static,
    ) {
        *lock(&self.detach) = Some(Box::new(answer));
    }

    /// Every message sent so far, in order.
    pub fn calls(&self) -> Vec<VolumeCall> {
        lock(&self.calls).clone()
    }

    /// Forgets the messages sent so far.
    pub fn clear(&self) {
        lock(&self.calls).clear();
    }

    fn record(&self, call: VolumeCall) -> OpsResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(super::broker_down());
        }
        let host = call.host().map(str::to_owned);
        lock(&self.calls).push(call);
        match host {
            Some(host) if lock(&self.unreachable).contains(&host) => {
                Err(OpsError::Bus(crate::rpc::RpcError::NoRoute {
                    target: crate::ops::volume_topic(&host),
                    reply_text: "NO_ROUTE (test)".to_owned(),
                }))
            }
            _ => Ok(()),
        }
    }
}

fn unimplemented(method: &str) -> OpsError {
    OpsError::Failed(tonic::Status::unimplemented(format!(
        "{method} has no answer in this test"
    )))
}

#[async_trait]
impl VolumeOps for RecordingVolumes {
    async fn create_volume(
        &self,
        _: &RequestContext,
        host: &str,
        r: CreateVolume,
    ) -> OpsResult<()> {
        self.record(VolumeCall::Create(host.to_owned(), r))
    }

    async fn delete_volume(
        &self,
        _: &RequestContext,
        host: &str,
        r: DeleteVolume,
    ) -> OpsResult<()> {
        self.record(VolumeCall::Delete(host.to_owned(), r))
    }

    async fn extend_volume(
        &self,
        _: &RequestContext,
        host: &str,
        r: ExtendVolume,
    ) -> OpsResult<()> {
        self.record(VolumeCall::Extend(host.to_owned(), r))
    }

    async fn create_snapshot(
        &self,
        _: &RequestContext,
        host: &str,
        r: CreateSnapshot,
    ) -> OpsResult<()> {
        self.record(VolumeCall::CreateSnapshot(host.to_owned(), r))
    }

    async fn delete_snapshot(
        &self,
        _: &RequestContext,
        host: &str,
        r: DeleteSnapshot,
    ) -> OpsResult<()> {
        self.record(VolumeCall::DeleteSnapshot(host.to_owned(), r))
    }

    async fn create_backup(
        &self,
        _: &RequestContext,
        host: &str,
        r: CreateBackup,
    ) -> OpsResult<()> {
        self.record(VolumeCall::CreateBackup(host.to_owned(), r))
    }

    async fn delete_backup(
        &self,
        _: &RequestContext,
        host: &str,
        r: DeleteBackup,
    ) -> OpsResult<()> {
        self.record(VolumeCall::DeleteBackup(host.to_owned(), r))
    }

    async fn restore_backup(
        &self,
        _: &RequestContext,
        host: &str,
        r: RestoreBackup,
    ) -> OpsResult<()> {
        self.record(VolumeCall::RestoreBackup(host.to_owned(), r))
    }

    async fn attach_volume(
        &self,
        _: &RequestContext,
        host: &str,
        r: AttachVolume,
    ) -> OpsResult<AttachResult> {
        self.record(VolumeCall::Attach(host.to_owned(), r.clone()))?;
        match lock(&self.attach).as_ref() {
            Some(answer) => answer(host, &r),
            None => Err(unimplemented("attach_volume")),
        }
    }

    async fn detach_volume(
        &self,
        _: &RequestContext,
        host: &str,
        r: DetachVolume,
    ) -> OpsResult<DetachResult> {
        self.record(VolumeCall::Detach(host.to_owned(), r.clone()))?;
        match lock(&self.detach).as_ref() {
            Some(answer) => answer(host, &r),
            None => Err(unimplemented("detach_volume")),
        }
    }

    async fn publish_service_capabilities(
        &self,
        _: &RequestContext,
        r: PublishCapabilities,
    ) -> OpsResult<()> {
        self.record(VolumeCall::Publish(r))
    }

    async fn revert_to_snapshot(
        &self,
        _: &RequestContext,
        host: &str,
        r: RevertToSnapshot,
    ) -> OpsResult<()> {
        self.record(VolumeCall::Revert(host.to_owned(), r))
    }
}
