//! Tests of the admin queries ([`Db::set_service_enabled`],
//! [`Db::reset_volume_status`]), on a SQLite file.

use super::*;
use crate::model::{Volume, VolumeStatus, now_ms};

use crate::testing::TempDb;

async fn temp_db() -> TempDb {
    TempDb::new().await
}

/// A volume of project `p2` in `status`, with an error message and a worker entry.
async fn volume(db: &Db, status: VolumeStatus) -> Volume {
    let now = now_ms();
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: "p2".into(),
        user_id: "u2".into(),
        name: String::new(),
        description: String::new(),
        size_gib: 1,
        status,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: Some("node1@file".into()),
        metadata: Default::default(),
        error_message: "backend exploded".into(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let worker = WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: volume.id.clone(),
        status: status.as_str().into(),
        service: "node1@file".into(),
        deadline_ms: now + 60_000,
    };
    db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

#[tokio::test]
async fn set_service_enabled_records_and_clears_the_reason() {
    let t = temp_db().await;
    t.db()
        .heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");

    assert!(
        t.db()
            .set_service_enabled("scoria-volume", "n1@file", false, "disk swap")
            .await
            .expect("disable")
    );
    let service = t
        .db()
        .get_service("scoria-volume", "n1@file")
        .await
        .expect("get")
        .expect("exists");
    assert!(service.disabled);
    assert_eq!(service.disabled_reason, "disk swap");

    // A heartbeat keeps the disabled flag.
    t.db()
        .heartbeat("scoria-volume", "n1@file", "az1")
        .await
        .expect("beat");
    let service = t.db().list_services().await.expect("list").remove(0);
    assert!(service.disabled);

    assert!(
        t.db()
            .set_service_enabled("scoria-volume", "n1@file", true, "ignored")
            .await
            .expect("enable")
    );
    let service = t
        .db()
        .get_service("scoria-volume", "n1@file")
        .await
        .expect("get")
        .expect("exists");
    assert!(!service.disabled);
    assert_eq!(service.disabled_reason, "");

    assert!(
        !t.db()
            .set_service_enabled("scoria-volume", "nowhere@file", false, "x")
            .await
            .expect("unknown host")
    );
    assert!(
        !t.db()
            .set_service_enabled("scoria-scheduler", "n1@file", false, "x")
            .await
            .expect("unknown binary")
    );
    assert_eq!(
        t.db()
            .get_service("scoria-scheduler", "n1@file")
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn reset_volume_status_is_unconditional_and_drops_the_worker() {
    let t = temp_db().await;
    let stuck = volume(t.db(), VolumeStatus::Deleting).await;
    assert!(
        t.db()
            .get_worker(WorkerKind::Volume, &stuck.id)
            .await
            .expect("worker")
            .is_some()
    );

    let reset = t
        .db()
        .reset_volume_status(&stuck.id, VolumeStatus::Error)
        .await
        .expect("reset")
        .expect("found");
    assert_eq!(reset.status, VolumeStatus::Error);
    assert_eq!(
        reset.error_message, "backend exploded",
        "error keeps its message"
    );
    assert_eq!(reset.project_id, "p2");
    assert!(
        t.db()
            .get_worker(WorkerKind::Volume, &stuck.id)
            .await
            .expect("worker")
            .is_none()
    );

    let reset = t
        .db()
        .reset_volume_status(&stuck.id, VolumeStatus::Available)
        .await
        .expect("reset")
        .expect("found");
    assert_eq!(reset.status, VolumeStatus::Available);
    assert_eq!(
        reset.error_message, "",
        "a non-error status clears the message"
    );
    let stored = t
        .db()
        .get_volume(&stuck.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(stored, reset);

    assert_eq!(
        t.db()
            .reset_volume_status("no-such-volume", VolumeStatus::Available)
            .await
            .expect("reset"),
        None
    );
}
