//! Tests of [`super::VolumeApi`] over a real SQLite database and a fake bus.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use prost_types::FieldMask;
use scoria_proto::bus::ExtendVolume;
use tonic::Code;

use super::*;

mod create;
mod extend_clone;
mod lifecycle;
mod snapshots;

#[derive(Default)]
struct FakeBus {
    down: AtomicBool,
    fail_casts: AtomicBool,
    scheduled: Mutex<Vec<ScheduleCreateVolume>>,
    deleted: Mutex<Vec<(String, String)>>,
    extended: Mutex<Vec<(String, ExtendVolume)>>,
    /// `(method, host, snapshot id)` of each snapshot cast.
    snapshot_casts: Mutex<Vec<(&'static str, String, String)>>,
}

#[tonic::async_trait]
impl Bus for FakeBus {
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    async fn schedule_create(
        &self,
        _ctx: &RequestContext,
        request: ScheduleCreateVolume,
    ) -> Result<(), Status> {
        if self.fail_casts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("no queue is bound for scheduler"));
        }
        self.scheduled.lock().expect("lock").push(request);
        Ok(())
    }

    async fn delete_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: DeleteVolume,
    ) -> Result<(), Status> {
        if self.fail_casts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("no queue is bound for volume"));
        }
        self.deleted
            .lock()
            .expect("lock")
            .push((host.to_owned(), request.volume_id));
        Ok(())
    }

    async fn extend_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: ExtendVolume,
    ) -> Result<(), Status> {
        if self.fail_casts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("no queue is bound for volume"));
        }
        self.extended
            .lock()
            .expect("lock")
            .push((host.to_owned(), request));
        Ok(())
    }

    async fn create_snapshot_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::CreateSnapshot,
    ) -> Result<(), Status> {
        self.snapshot_cast("create_snapshot", host, request.snapshot_id)
    }

    async fn delete_snapshot_on_host(
        &self,
        _ctx: &RequestContext,
        host: &str,
        request: scoria_proto::bus::DeleteSnapshot,
    ) -> Result<(), Status> {
        self.snapshot_cast("delete_snapshot", host, request.snapshot_id)
    }

    async fn attach_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: scoria_proto::bus::AttachVolume,
    ) -> Result<scoria_proto::bus::AttachResult, Status> {
        Err(Status::unimplemented(
            "the volume API's tests attach nothing",
        ))
    }

    async fn detach_on_host(
        &self,
        _ctx: &RequestContext,
        _host: &str,
        _request: scoria_proto::bus::DetachVolume,
    ) -> Result<scoria_proto::bus::DetachResult, Status> {
        Err(Status::unimplemented(
            "the volume API's tests detach nothing",
        ))
    }

    async fn get_pools(
        &self,
        _ctx: &RequestContext,
        _request: scoria_proto::bus::GetPools,
    ) -> Result<scoria_proto::bus::PoolList, Status> {
        Err(Status::unimplemented(
            "the volume API's tests list no pools",
        ))
    }
}

impl FakeBus {
    fn snapshot_cast(&self, method: &'static str, host: &str, id: String) -> Result<(), Status> {
        if self.fail_casts.load(Ordering::SeqCst) {
            return Err(Status::unavailable("no queue is bound for volume"));
        }
        self.snapshot_casts
            .lock()
            .expect("lock")
            .push((method, host.to_owned(), id));
        Ok(())
    }
}

struct Fixture {
    api: VolumeApi,
    db: Db,
    bus: Arc<FakeBus>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("scoria-api-test-{}", uuid::Uuid::new_v4()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("scoria.db").display()))
        .await
        .expect("db");
    let bus = Arc::new(FakeBus::default());
    Fixture {
        api: VolumeApi::new(db.clone(), bus.clone(), 100),
        db,
        bus,
        dir,
    }
}

fn ctx(project: &str, roles: &[&str]) -> RequestContext {
    RequestContext::new(
        project,
        "u1",
        roles.iter().map(|r| (*r).to_owned()).collect(),
    )
}

fn member(project: &str) -> RequestContext {
    ctx(project, &["member"])
}

fn request<T>(ctx: &RequestContext, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(ctx.clone());
    request
}

fn create_req(name: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        size_gib: 1,
        ..Default::default()
    }
}

async fn create(f: &Fixture, ctx: &RequestContext, name: &str) -> pb::Volume {
    f.api
        .create_volume(request(ctx, create_req(name)))
        .await
        .expect("create")
        .into_inner()
}
