//! What BackupService refuses, with the right code, the field named and
//! nothing written; quotas `backups` and `backup_gigabytes`; force on an
//! in-use volume; restore into an existing volume.

use scoria_tests::stack::Stack;
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use super::{assert_chunk, backup_of, backup_req, delete_backup, fill_chunk, restore, stack_on};
use crate::support::{new_volume, pb, sized};

/// The backups project `p1` has (all statuses).
async fn backup_count(stack: &Stack) -> usize {
    stack
        .backups("p1")
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .map(Response::into_inner)
        .expect("list")
        .backups
        .len()
}

/// The field a refusal's `BadRequest` names.
fn field_of(status: &Status) -> String {
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest details");
    bad.field_violations[0].field.clone()
}

#[tokio::test]
async fn bad_requests_are_refused_with_nothing_written() {
    let stack = stack_on("file").await;
    let volume = new_volume(&stack, sized(2)).await;
    let mut backups = stack.backups("p1");
    let unknown = uuid::Uuid::new_v4().to_string();

    let err = backups
        .create_backup(backup_req("not-a-uuid", false))
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_of(&err), "volume_id");
    let err = backups
        .create_backup(backup_req(&unknown, false))
        .await
        .expect_err("unknown volume");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = backups
        .create_backup(backup_req(&volume, true))
        .await
        .expect_err("incremental without a full backup");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("incremental"), "{}", err.message());
    let err = stack
        .as_member("p1")
        .get_backup(&unknown)
        .await
        .expect_err("unknown backup");
    assert_eq!(err.code(), Code::NotFound);
    let long = pb::CreateBackupRequest {
        name: "n".repeat(256),
        ..backup_req(&volume, false)
    };
    let err = backups.create_backup(long).await.expect_err("long name");
    assert_eq!(field_of(&err), "name");
    assert_eq!(backup_count(&stack).await, 0, "nothing written");

    // An in-use volume needs force (then it stays in-use throughout).
    stack
        .admin("admin-project")
        .reset_volume_status(pb::ResetVolumeStatusRequest {
            volume_id: volume.clone(),
            status: pb::VolumeStatus::InUse as i32,
        })
        .await
        .expect("reset to in-use");
    let err = backups
        .create_backup(backup_req(&volume, false))
        .await
        .expect_err("in-use without force");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("force"), "{}", err.message());
    assert_eq!(backup_count(&stack).await, 0, "nothing written");
    fill_chunk(&stack, &volume, 3, 0x77);
    let forced = pb::CreateBackupRequest {
        force: true,
        ..backup_req(&volume, false)
    };
    let created = backups
        .create_backup(forced)
        .await
        .map(Response::into_inner)
        .expect("forced backup");
    let forced = stack
        .wait_backup_status("p1", &created.id, pb::BackupStatus::Available)
        .await;
    assert_eq!(forced.object_count, 1, "{forced:?}");
    let still = stack.get_volume("p1", &volume).await.expect("volume");
    assert_eq!(still.status(), pb::VolumeStatus::InUse);
    assert!(
        !stack
            .backend_files()
            .iter()
            .any(|f| f.contains(&created.id)),
        "the temporary snapshot is gone: {:?}",
        stack.backend_files()
    );

    // Another project sees none of it.
    let other = stack.as_member("p2");
    let err = other.get_backup(&created.id).await.expect_err("p2");
    assert_eq!(err.code(), Code::NotFound);
    let err = other
        .backups()
        .delete_backup(pb::DeleteBackupRequest {
            id: created.id.clone(),
        })
        .await
        .expect_err("p2 delete");
    assert_eq!(err.code(), Code::NotFound);
    let err = other
        .backups()
        .restore_backup(pb::RestoreBackupRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("p2 restore");
    assert_eq!(err.code(), Code::NotFound);
    let listed = other
        .backups()
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .expect("p2 list")
        .into_inner();
    assert!(listed.backups.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn restores_into_an_existing_volume_at_least_as_large() {
    let stack = stack_on("file").await;
    let source = new_volume(&stack, sized(2)).await;
    fill_chunk(&stack, &source, 300, 0x5e);
    let backup = backup_of(&stack, &source, false).await;
    let small = new_volume(&stack, sized(1)).await;
    let mut backups = stack.backups("p1");
    let into = |volume_id: &str, name: &str| pb::RestoreBackupRequest {
        id: backup.id.clone(),
        volume_id: volume_id.to_owned(),
        name: name.to_owned(),
    };
    let err = backups
        .restore_backup(into(&small, ""))
        .await
        .expect_err("too small");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(field_of(&err), "volume_id");
    let target = new_volume(&stack, sized(3)).await;
    let err = backups
        .restore_backup(into(&target, "named"))
        .await
        .expect_err("a name with a volume");
    assert_eq!(field_of(&err), "name");
    for id in [&small, &target] {
        let volume = stack.get_volume("p1", id).await.expect("volume");
        assert_eq!(volume.status(), pb::VolumeStatus::Available, "untouched");
    }
    let now = stack
        .as_member("p1")
        .get_backup(&backup.id)
        .await
        .expect("get");
    assert_eq!(now.status(), pb::BackupStatus::Available, "untouched");

    fill_chunk(&stack, &target, 0, 0x99);
    let restored = restore(&stack, &backup.id, &target).await;
    assert_eq!(restored, target);
    assert_chunk(&stack, &target, 300, 0x5e);
    assert_chunk(&stack, &target, 0, 0);
}

#[tokio::test]
async fn quotas_refuse_backups_and_stay_exact() {
    let stack = stack_on("file").await;
    let volume = new_volume(&stack, sized(2)).await;
    stack
        .set_quota("p1", &[("backups", 1), ("backup_gigabytes", 3)])
        .await;
    let first = backup_of(&stack, &volume, false).await;
    assert_eq!(stack.quota_usage("p1", "backups").await, (1, 0, 1));
    assert_eq!(stack.quota_usage("p1", "backup_gigabytes").await, (2, 0, 3));
    let mut backups = stack.backups("p1");
    let err = backups
        .create_backup(backup_req(&volume, true))
        .await
        .expect_err("over the backups quota");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let failure = err.get_details_quota_failure().expect("QuotaFailure");
    let named: Vec<&str> = failure
        .violations
        .iter()
        .map(|v| v.quota_id.as_str())
        .collect();
    assert_eq!(named, ["backups", "backup_gigabytes"], "{err:?}");
    assert_eq!(backup_count(&stack).await, 1, "nothing written");
    let volume_now = stack.get_volume("p1", &volume).await.expect("volume");
    assert_eq!(
        volume_now.status(),
        pb::VolumeStatus::Available,
        "untouched"
    );

    delete_backup(&stack, &first.id).await;
    assert_eq!(stack.quota_usage("p1", "backups").await, (0, 0, 1));
    assert_eq!(stack.quota_usage("p1", "backup_gigabytes").await, (0, 0, 3));
    stack.assert_quota_exact().await;
}
