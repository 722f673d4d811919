//! Tests of [`Db::list_volumes`]' keyset paging, on a SQLite file.

use super::*;
use crate::model::{Volume, VolumeStatus, now_ms};

/// Inserts a volume of `project` named `name` in `status`, created at `created_at_ms`.
async fn volume(
    db: &Db,
    project: &str,
    name: &str,
    status: VolumeStatus,
    created_at_ms: i64,
) -> Volume {
    let volume = Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: name.into(),
        description: String::new(),
        size_gib: 1,
        status,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: None,
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms,
        updated_at_ms: created_at_ms,
    };
    let worker = WorkerEntry::volume(&volume.id, status, Owner::Scheduler, now_ms() + 60_000);
    db.create_volume(&volume, None, &worker)
        .await
        .expect("insert");
    volume
}

fn ids(list: Vec<Volume>) -> Vec<String> {
    list.into_iter().map(|v| v.id).collect()
}

#[tokio::test]
async fn pages_follow_created_at_then_id() {
    let db = crate::testing::TempDb::new().await;
    // Three share a timestamp: the id breaks the tie, and no page skips or repeats one.
    let mut mine = Vec::new();
    for at in [100, 200, 200, 200, 300] {
        mine.push(volume(&db, "p1", "a", VolumeStatus::Creating, at).await);
    }
    volume(&db, "p2", "a", VolumeStatus::Creating, 150).await;
    mine.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    let expected = ids(mine);

    let query = VolumeQuery {
        project_id: Some("p1".into()),
        limit: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .list_volumes(&VolumeQuery {
                after: after.clone(),
                ..query.clone()
            })
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.created_at_ms, last.id.clone()));
        seen.extend(ids(page));
    }
    assert_eq!(seen, expected);

    let all = VolumeQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(db.list_volumes(&all).await.expect("all").len(), 6);
}

#[tokio::test]
async fn filters_combine() {
    let db = crate::testing::TempDb::new().await;
    let wanted = volume(&db, "p1", "db", VolumeStatus::Available, 10).await;
    volume(&db, "p1", "db", VolumeStatus::Creating, 20).await;
    volume(&db, "p1", "web", VolumeStatus::Available, 30).await;
    volume(&db, "p2", "db", VolumeStatus::Available, 40).await;
    let query = VolumeQuery {
        project_id: Some("p1".into()),
        status: Some(VolumeStatus::Available),
        name: Some("db".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(db.list_volumes(&query).await.expect("list")),
        [wanted.id]
    );
    // A limit of 0 lists nothing (as it always did for volumes).
    let none = VolumeQuery { limit: 0, ..query };
    assert!(db.list_volumes(&none).await.expect("list").is_empty());
}
