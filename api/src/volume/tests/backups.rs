//! BackupService's intent flow over the recording fakes: what it writes and
//! casts, and that a cast that fails or a refused restore leaves nothing behind.

use scoria_common::model::BackupStatus;
use scoria_proto::v1::backup_service_server::BackupService;

use super::snapshots::{HOST, volume_in};
use super::*;
use crate::backup::BackupApi;

fn backups(f: &Fixture) -> BackupApi {
    BackupApi::new(f.db.clone(), f.h.ports(), f.api.clone(), 60_000)
}

fn backup_req(volume_id: &str) -> pb::CreateBackupRequest {
    pb::CreateBackupRequest {
        volume_id: volume_id.into(),
        name: "b".into(),
        ..Default::default()
    }
}

/// `(host, backup id)` of each create_backup cast.
fn backup_casts(f: &Fixture) -> Vec<(String, String)> {
    f.h.volumes
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            VolumeCall::CreateBackup(host, r) => Some((host, r.backup_id)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn create_backup_holds_the_volume_and_casts_to_its_host() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 2, VolumeStatus::Available).await;
    let api = backups(&f);
    let b = api
        .create_backup(request(&p1, backup_req(&v.id)))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(b.status(), pb::BackupStatus::Creating);
    assert_eq!((b.size_gib, b.host.as_str()), (2, HOST));
    assert_eq!(backup_casts(&f), [(HOST.to_owned(), b.id.clone())]);
    let volume = f.db.get_volume(&v.id).await.expect("db").expect("row");
    assert_eq!(volume.status, VolumeStatus::BackingUp, "held while read");
    let worker =
        f.db.get_worker(WorkerKind::Backup, &b.id)
            .await
            .expect("db");
    assert_eq!(worker.map(|w| w.service), Some(HOST.to_owned()));
    // A volume being backed up cannot be backed up again meanwhile.
    let again = api
        .create_backup(request(&p1, backup_req(&v.id)))
        .await
        .expect_err("backing-up");
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn create_backup_leaves_nothing_when_the_bus_fails() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    f.fail_casts(true);
    let status = backups(&f)
        .create_backup(request(&p1, backup_req(&v.id)))
        .await
        .expect_err("cast fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(f.h.notifier.events(), [Event::BackupCreateError]);
    let left = f.db.list_backups(&Default::default()).await.expect("db");
    assert!(left.is_empty(), "{left:?}");
    let volume = f.db.get_volume(&v.id).await.expect("db").expect("row");
    assert_eq!(volume.status, VolumeStatus::Available, "the volume is back");
}

#[tokio::test]
async fn a_restore_the_quota_refuses_leaves_the_backup_available() {
    let f = fixture().await;
    let p1 = member("p1");
    let v = volume_in(&f, &p1, 1, VolumeStatus::Available).await;
    let api = backups(&f);
    let b = api
        .create_backup(request(&p1, backup_req(&v.id)))
        .await
        .expect("create")
        .into_inner();
    let done =
        scoria_common::db::BackupChange::new(&[BackupStatus::Creating], BackupStatus::Available)
            .volume(scoria_common::db::VolumeMove {
                id: &v.id,
                from: &[VolumeStatus::BackingUp],
                to: VolumeStatus::Available,
                error_message: None,
            });
    assert!(f.db.transition_backup(&b.id, &done).await.expect("db"));
    f.db.set_project_quota("p1", &[(scoria_common::db::quota::Resource::Volumes, 1)])
        .await
        .expect("quota");
    let restore = pb::RestoreBackupRequest {
        id: b.id.clone(),
        ..Default::default()
    };
    let refused = api
        .restore_backup(request(&p1, restore))
        .await
        .expect_err("over quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let now = f.db.get_backup(&b.id).await.expect("db").expect("row");
    assert_eq!(now.status, BackupStatus::Available);
    assert_eq!(now.restore_volume_id, None);
    let all = scoria_common::db::VolumeQuery {
        limit: 100,
        ..Default::default()
    };
    let volumes = f.db.list_volumes(&all).await.expect("db");
    assert_eq!(volumes.len(), 1, "no new volume: {volumes:?}");
}
