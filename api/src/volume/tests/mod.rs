//! Tests of [`super::VolumeApi`] over a real SQLite database and the recording fakes of
//! `scoria_common::testing`.

use std::collections::BTreeMap;

use prost_types::FieldMask;
use scoria_proto::bus::ExtendVolume;
use tonic::Code;

use scoria_common::{db::WorkerKind, events::Event, testing::VolumeCall};

use super::*;
use crate::test_support::{Harness, ctx, request};

mod backups;
mod create;
mod extend_clone;
mod from_snapshot;
mod lifecycle;
mod revert;
mod snapshots;

struct Fixture {
    api: VolumeApi,
    db: Db,
    h: Harness,
}

impl Fixture {
    /// Casts fail as undelivered (`true`) or go through again.
    fn fail_casts(&self, fail: bool) {
        self.h.scheduler.set_down(fail);
        self.h.volumes.set_down(fail);
    }

    /// `(host, volume id)` of each delete cast.
    fn deleted(&self) -> Vec<(String, String)> {
        self.h
            .volumes
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                VolumeCall::Delete(host, r) => Some((host, r.volume_id)),
                _ => None,
            })
            .collect()
    }

    /// `(host, request)` of each extend cast.
    fn extended(&self) -> Vec<(String, ExtendVolume)> {
        self.h
            .volumes
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                VolumeCall::Extend(host, r) => Some((host, r)),
                _ => None,
            })
            .collect()
    }

    /// `(method, host, snapshot id)` of each snapshot cast.
    fn snapshot_casts(&self) -> Vec<(&'static str, String, String)> {
        self.h
            .volumes
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                VolumeCall::CreateSnapshot(host, r) => {
                    Some(("create_snapshot", host, r.snapshot_id))
                }
                VolumeCall::DeleteSnapshot(host, r) => {
                    Some(("delete_snapshot", host, r.snapshot_id))
                }
                _ => None,
            })
            .collect()
    }
}

async fn fixture() -> Fixture {
    let h = Harness::new().await;
    Fixture {
        api: VolumeApi::new(h.db.db().clone(), h.ports(), 100),
        db: h.db.db().clone(),
        h,
    }
}

fn member(project: &str) -> RequestContext {
    ctx(project, &["member"])
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
