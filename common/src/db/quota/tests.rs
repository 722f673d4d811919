//! Quotas on SQLite and on PostgreSQL: usage follows every row through its life
//! (whatever path writes it), limits refuse before anything is written, and
//! racing requests of one project, through separate pools as separate API
//! processes have, never pass a limit.

use std::sync::Arc;

use sqlx::Executor;

use super::*;
use crate::{
    db::{
        AttachReserve, Owner, WorkerEntry,
        migrate_tests::{drop_postgres, fresh_postgres},
    },
    model::{
        AttachMode, Attachment, AttachmentStatus, Connector, Snapshot, SnapshotStatus, Volume,
        VolumeStatus,
    },
};

fn volume(project: &str, volume_type: &str, size_gib: u64) -> Volume {
    let now = now_ms();
    Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.into(),
        user_id: "u1".into(),
        name: "v".into(),
        description: String::new(),
        size_gib,
        status: VolumeStatus::Creating,
        volume_type: volume_type.into(),
        availability_zone: "default".into(),
        host: None,
        metadata: Default::default(),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

fn worker(id: &str) -> WorkerEntry {
    WorkerEntry::volume(
        id,
        VolumeStatus::Creating,
        Owner::Scheduler,
        now_ms() + 60_000,
    )
}

async fn create(db: &Db, v: &Volume) -> DbResult<()> {
    db.create_volume(v, None, &worker(&v.id)).await.map(|_| ())
}

async fn available(db: &Db, v: &Volume) {
    assert!(
        db.transition_volume(
            &v.id,
            &[VolumeStatus::Creating],
            VolumeStatus::Available,
            Some("node1@file"),
            None
        )
        .await
        .expect("available")
    );
}

fn snapshot(v: &Volume) -> Snapshot {
    let now = now_ms();
    Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: v.project_id.clone(),
        user_id: "u1".into(),
        volume_id: v.id.clone(),
        name: "s".into(),
        description: String::new(),
        size_gib: v.size_gib,
        status: SnapshotStatus::Creating,
        host: Some("node1@file".into()),
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
    }
}

async fn snap(db: &Db, v: &Volume) -> DbResult<Snapshot> {
    let s = snapshot(v);
    let w = WorkerEntry::snapshot(
        &s.id,
        SnapshotStatus::Creating,
        Owner::Service("node1@file".into()),
        now_ms() + 60_000,
    );
    assert!(
        db.create_snapshot(&s, &[VolumeStatus::Available], &w)
            .await?,
        "volume available"
    );
    Ok(s)
}

fn attachment(v: &Volume) -> Attachment {
    let now = now_ms();
    Attachment {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: v.id.clone(),
        project_id: v.project_id.clone(),
        user_id: "u1".into(),
        status: AttachmentStatus::Attaching,
        instance_id: "vm-1".into(),
        connector: Connector {
            host: "compute-1".into(),
            ..Default::default()
        },
        mode: AttachMode::ReadWrite,
        volume_host: "node1@file".into(),
        connection_info: None,
        error_message: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        attached_at_ms: None,
    }
}

async fn attach(db: &Db, v: &Volume) -> DbResult<Attachment> {
    let a = attachment(v);
    let w = WorkerEntry::attachment(
        &a.id,
        AttachmentStatus::Attaching,
        Owner::Service("node1@file".into()),
        now_ms() + 60_000,
    );
    match db.reserve_attachment(&a, true, &w).await? {
        AttachReserve::Reserved(_) => Ok(a),
        other => panic!("attachment not reserved: {other:?}"),
    }
}

/// `(in_use, reserved)` of each named resource of `project`, and no difference
/// between the counters and a recount.
async fn usage(db: &Db, project: &str, names: &[&str]) -> Vec<(i64, i64)> {
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
    let lines = db.project_quota(project).await.expect("quota");
    names
        .iter()
        .map(|name| {
            lines
                .iter()
                .find(|l| l.resource.name() == *name)
                .map_or((0, 0), |l| (l.in_use, l.reserved))
        })
        .collect()
}

async fn usage_follows_each_row_through_its_life(db: &Db) {
    let p = "p-life";
    let v = volume(p, "gold", 5);
    create(db, &v).await.expect("create");
    let names = ["volumes", "gigabytes", "volumes_gold", "gigabytes_gold"];
    assert_eq!(usage(db, p, &names).await, [(0, 1), (0, 5), (0, 1), (0, 5)]);
    available(db, &v).await;
    assert_eq!(usage(db, p, &names).await, [(1, 0), (5, 0), (1, 0), (5, 0)]);

    // An extend reserves its growth until it ends.
    let w = WorkerEntry::volume(
        &v.id,
        VolumeStatus::Extending,
        Owner::Service("node1@file".into()),
        now_ms() + 60_000,
    );
    assert!(db.start_extend(&v.id, 5, 8, &w).await.expect("extend"));
    assert_eq!(usage(db, p, &["gigabytes"]).await, [(5, 3)]);
    assert!(
        db.finish_extend_to(&v.id, 8, VolumeStatus::Available)
            .await
            .expect("grown")
    );
    assert_eq!(usage(db, p, &["gigabytes"]).await, [(8, 0)]);
    // One that fails gives its growth back.
    assert!(db.start_extend(&v.id, 8, 9, &w).await.expect("extend"));
    assert!(
        db.transition_volume(
            &v.id,
            &[VolumeStatus::Extending],
            VolumeStatus::Available,
            None,
            None
        )
        .await
        .expect("back")
    );
    assert_eq!(usage(db, p, &["gigabytes"]).await, [(8, 0)]);

    // Snapshots count in snapshots and in gigabytes, of the volume's type.
    let v = db.get_volume(&v.id).await.expect("get").expect("row");
    let s = snap(db, &v).await.expect("snapshot");
    let snap_names = ["snapshots", "snapshots_gold", "gigabytes", "gigabytes_gold"];
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(0, 1), (0, 1), (8, 8), (8, 8)]
    );
    assert!(
        db.transition_snapshot(
            &s.id,
            &[SnapshotStatus::Creating],
            SnapshotStatus::Available,
            None,
            None
        )
        .await
        .expect("snapshot available")
    );
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(1, 0), (1, 0), (16, 0), (16, 0)]
    );
    let failed = snap(db, &v).await.expect("second snapshot");
    assert!(
        db.transition_snapshot(
            &failed.id,
            &[SnapshotStatus::Creating],
            SnapshotStatus::Error,
            Some("x"),
            None
        )
        .await
        .expect("snapshot failed")
    );
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(1, 0), (1, 0), (16, 0), (16, 0)]
    );
    // A failed snapshot stays released on its way out, as a failed volume does:
    // deleting it takes no quota, even when its delete fails.
    assert_eq!(
        db.start_snapshot_delete(&failed.id, None)
            .await
            .expect("delete"),
        crate::db::SnapshotDeleteStart::Started
    );
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(1, 0), (1, 0), (16, 0), (16, 0)],
        "a failed snapshot being deleted"
    );
    assert!(
        db.transition_snapshot(
            &failed.id,
            &[SnapshotStatus::Deleting],
            SnapshotStatus::ErrorDeleting,
            Some("x"),
            None
        )
        .await
        .expect("delete failed")
    );
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(1, 0), (1, 0), (16, 0), (16, 0)],
        "a failed snapshot whose delete failed"
    );
    assert!(db.delete_snapshot_row(&failed.id).await.expect("gone"));
    assert!(db.delete_snapshot_row(&s.id).await.expect("gone"));
    assert_eq!(
        usage(db, p, &snap_names).await,
        [(0, 0), (0, 0), (8, 0), (8, 0)]
    );

    // Attachments: reserved while attaching, in use once attached.
    let a = attach(db, &v).await.expect("attach");
    assert_eq!(usage(db, p, &["attachments"]).await, [(0, 1)]);
    let info = crate::model::ConnectionInfo {
        protocol: "nbd".into(),
        host: "127.0.0.1".into(),
        port: 10809,
        export_name: "volume-x".into(),
        read_only: false,
    };
    assert!(
        db.finish_attach(&a.id, &info)
            .await
            .expect("attached")
            .is_some()
    );
    assert_eq!(usage(db, p, &["attachments"]).await, [(1, 0)]);
    let failed = attach(db, &v).await.expect("second attach");
    assert!(db.fail_attach(&failed.id, "no").await.expect("failed"));
    assert_eq!(usage(db, p, &["attachments"]).await, [(1, 0)]);

    // A failed create gives everything back, and stays released on its way out.
    let broken = volume(p, "gold", 3);
    create(db, &broken).await.expect("create");
    assert!(
        db.transition_volume(
            &broken.id,
            &[VolumeStatus::Creating],
            VolumeStatus::Error,
            None,
            Some("no valid backend")
        )
        .await
        .expect("failed")
    );
    assert_eq!(usage(db, p, &names).await, [(1, 0), (8, 0), (1, 0), (8, 0)]);
    assert_eq!(
        db.start_volume_delete(&broken.id, None)
            .await
            .expect("delete"),
        crate::db::VolumeDeleteStart::Started
    );
    assert_eq!(usage(db, p, &names).await, [(1, 0), (8, 0), (1, 0), (8, 0)]);
    // An operator's reset makes it count again; deleting the row frees it.
    db.reset_volume_status(&broken.id, VolumeStatus::Available)
        .await
        .expect("reset");
    assert_eq!(
        usage(db, p, &["volumes", "gigabytes"]).await,
        [(2, 0), (11, 0)]
    );
    // An error that is not a failed create keeps counting (as Cinder).
    db.reset_volume_status(&broken.id, VolumeStatus::Error)
        .await
        .expect("reset");
    assert_eq!(
        usage(db, p, &["volumes", "gigabytes"]).await,
        [(2, 0), (11, 0)]
    );
    assert!(db.delete_volume_row(&broken.id).await.expect("gone"));
    // The volume row goes with its failed attachment.
    assert!(db.delete_volume_row(&v.id).await.expect("gone"));
    assert_eq!(usage(db, p, &names).await, [(0, 0); 4]);
    assert_eq!(usage(db, p, &["attachments"]).await, [(0, 0)]);
}

async fn limits_refuse_before_anything_is_written(db: &Db) {
    let p = "p-limits";
    let db = db.clone().with_quota_defaults(QuotaDefaults::CINDER);
    db.set_project_quota(
        p,
        &[
            (Resource::Volumes, 2),
            (Resource::GigabytesOfType("gold".into()), 10),
            (Resource::PerVolumeGigabytes, 8),
            (Resource::Snapshots, 1),
            (Resource::Attachments, 1),
        ],
    )
    .await
    .expect("set");
    let a = volume(p, "gold", 4);
    create(&db, &a).await.expect("first");
    available(&db, &a).await;
    let b = volume(p, "gold", 6);
    create(&db, &b).await.expect("second");

    // A third volume: volumes is full (and gigabytes_gold would be too).
    let c = volume(p, "gold", 1);
    let Err(DbError::OverQuota(over)) = create(&db, &c).await else {
        panic!("a third volume passed the limit of 2");
    };
    assert_eq!(over.project_id, p);
    let exceeded: Vec<(String, i64, i64, i64, i64)> = over
        .excesses
        .iter()
        .map(|e| {
            (
                e.resource.name(),
                e.limit,
                e.in_use,
                e.reserved,
                e.requested,
            )
        })
        .collect();
    assert_eq!(
        exceeded,
        [
            ("volumes".to_owned(), 2, 1, 1, 1),
            ("gigabytes_gold".to_owned(), 10, 4, 6, 1)
        ]
    );
    assert!(
        db.get_volume(&c.id).await.expect("get").is_none(),
        "nothing written"
    );
    let message = over.to_string();
    assert!(
        message.contains("volumes limit 2, 1 in use and 1 reserved, 1 more requested"),
        "{message}"
    );

    // per_volume_gigabytes bounds a create and an extend.
    db.delete_project_quota(p).await.expect("back to defaults");
    db.set_project_quota(p, &[(Resource::PerVolumeGigabytes, 8)])
        .await
        .expect("set");
    let Err(DbError::OverQuota(over)) = create(&db, &volume(p, "silver", 9)).await else {
        panic!("a 9 GiB volume passed per_volume_gigabytes 8");
    };
    assert_eq!(over.excesses[0].resource, Resource::PerVolumeGigabytes);
    let w = WorkerEntry::volume(
        &a.id,
        VolumeStatus::Extending,
        Owner::Service("node1@file".into()),
        now_ms() + 60_000,
    );
    assert!(matches!(
        db.start_extend(&a.id, 4, 9, &w).await,
        Err(DbError::OverQuota(_))
    ));
    assert_eq!(
        db.get_volume(&a.id).await.expect("get").map(|v| v.status),
        Some(VolumeStatus::Available)
    );

    // gigabytes bounds an extend's growth; a limit below usage is kept and
    // refuses any more.
    db.set_project_quota(p, &[(Resource::Gigabytes, 12)])
        .await
        .expect("set");
    assert!(matches!(
        db.start_extend(&a.id, 4, 7, &w).await,
        Err(DbError::OverQuota(_))
    ));
    assert!(db.start_extend(&a.id, 4, 6, &w).await.expect("fits"));
    db.set_project_quota(p, &[(Resource::Gigabytes, 5)])
        .await
        .expect("below usage");
    let line = db
        .project_quota(p)
        .await
        .expect("quota")
        .into_iter()
        .find(|l| l.resource == Resource::Gigabytes)
        .expect("gigabytes");
    assert_eq!((line.limit, line.in_use, line.reserved), (5, 4, 8));
    assert!(
        db.finish_extend_to(&a.id, 6, VolumeStatus::Available)
            .await
            .expect("done")
    );

    // Snapshots: the second is refused; attachments: the second is refused.
    db.set_project_quota(
        p,
        &[
            (Resource::Gigabytes, -1),
            (Resource::Snapshots, 1),
            (Resource::Attachments, 1),
        ],
    )
    .await
    .expect("set");
    snap(&db, &a).await.expect("first snapshot");
    assert!(matches!(snap(&db, &a).await, Err(DbError::OverQuota(_))));
    attach(&db, &a).await.expect("first attachment");
    let second = attachment(&a);
    let w = WorkerEntry::attachment(
        &second.id,
        AttachmentStatus::Attaching,
        Owner::Service("node1@file".into()),
        now_ms() + 60_000,
    );
    assert!(matches!(
        db.reserve_attachment(&second, true, &w).await,
        Err(DbError::OverQuota(_))
    ));
    assert!(db.get_attachment(&second.id).await.expect("get").is_none());

    // Another project is not touched by these limits.
    create(&db, &volume("p-other", "gold", 9))
        .await
        .expect("other project");
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
}

/// `creates` creates of one project at once through `pools` separate pools
/// (as that many API processes), against a limit of `limit` volumes: exactly
/// `limit` are written, the rest refused, and usage says so.
async fn racing_creates_never_pass_the_limit(url: &str, pools: usize, creates: usize, limit: i64) {
    let p = format!("p-race-{}", uuid::Uuid::new_v4().simple());
    let mut dbs = Vec::new();
    for _ in 0..pools {
        dbs.push(
            Db::connect(url)
                .await
                .expect("connect")
                .with_quota_defaults(QuotaDefaults::CINDER),
        );
    }
    dbs[0]
        .set_project_quota(&p, &[(Resource::Volumes, limit), (Resource::Gigabytes, -1)])
        .await
        .expect("set");
    let barrier = Arc::new(tokio::sync::Barrier::new(creates));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..creates {
        let db = dbs[i % pools].clone();
        let (p, barrier) = (p.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            create(&db, &volume(&p, "gold", 1)).await
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(()) => created += 1,
            Err(DbError::OverQuota(_)) => refused += 1,
            Err(other) => panic!("a create failed otherwise: {other}"),
        }
    }
    assert_eq!((created, refused), (limit, creates as i64 - limit));
    assert_eq!(dbs[0].count_volumes(&p).await.expect("count"), limit);
    let line = dbs[0]
        .project_quota(&p)
        .await
        .expect("quota")
        .into_iter()
        .find(|l| l.resource == Resource::Volumes)
        .expect("volumes");
    assert_eq!((line.in_use, line.reserved), (0, limit));
    assert_eq!(dbs[0].check_quota_usage(Some(&p)).await.expect("check"), []);
    for db in dbs {
        db.close().await;
    }
}

async fn a_drifted_counter_is_reported(db: &Db) {
    let p = "p-drift";
    create(db, &volume(p, "gold", 2)).await.expect("create");
    // Only a hand edit can make them differ.
    sqlx::query("UPDATE quota_usages SET reserved = reserved + 5 WHERE project_id = $1 AND resource = 'gigabytes'")
        .bind(p)
        .execute(db.pool())
        .await
        .expect("edit");
    let differences = db.check_quota_usage(Some(p)).await.expect("check");
    assert_eq!(
        differences,
        [UsageDifference {
            project_id: p.into(),
            resource: "gigabytes".into(),
            recorded: (0, 7),
            counted: (0, 2),
        }]
    );
}

#[test]
fn resource_names_round_trip() {
    for r in Resource::BASE
        .into_iter()
        .chain(Resource::of_type("gold_fast"))
    {
        assert_eq!(Resource::parse(&r.name()), Some(r.clone()), "{r}");
    }
    assert_eq!(Resource::parse("volumes_"), None);
    assert_eq!(Resource::parse("backups"), Some(Resource::Backups));
    assert_eq!(Resource::parse("groups"), None);
}

#[tokio::test]
async fn usage_follows_each_row_through_its_life_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    usage_follows_each_row_through_its_life(&db).await;
}

#[tokio::test]
async fn usage_follows_each_row_through_its_life_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.expect("connect");
    usage_follows_each_row_through_its_life(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}

#[tokio::test]
async fn limits_refuse_before_anything_is_written_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    limits_refuse_before_anything_is_written(&db).await;
}

#[tokio::test]
async fn limits_refuse_before_anything_is_written_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.expect("connect");
    limits_refuse_before_anything_is_written(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_never_pass_the_limit_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    let url = format!("sqlite://{}", db.dir().join("scoria.db").display());
    racing_creates_never_pass_the_limit(&url, 2, 60, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_never_pass_the_limit_on_postgres() {
    let url = fresh_postgres().await;
    racing_creates_never_pass_the_limit(&url, 2, 60, 20).await;
    drop_postgres(&url).await;
}

#[tokio::test]
async fn a_drifted_counter_is_reported_on_sqlite() {
    let db = crate::testing::TempDb::new().await;
    a_drifted_counter_is_reported(&db).await;
}

#[tokio::test]
async fn a_drifted_counter_is_reported_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::connect(&url).await.expect("connect");
    a_drifted_counter_is_reported(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}

/// A database at version 4 (before quotas) with a volume and two snapshots of
/// it, one available and one whose create failed, upgraded: the failed one is
/// marked so and holds nothing, on its way out too.
async fn an_upgrade_marks_failed_snapshots(url: &str) {
    let db = Db::open(url).await.expect("open");
    let mut tx = db.pool.begin().await.expect("begin");
    crate::db::migrate_tests::version_4_schema(&mut tx).await;
    tx.execute(
        "INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, \
         volume_type, availability_zone, host, metadata, error_message, created_at, updated_at) \
         VALUES ('v1', 'p1', 'u', '', '', 5, 'available', 'gold', 'default', 'h@b', '{}', '', 0, 0)",
    )
    .await
    .expect("volume");
    for (id, status) in [("s1", "available"), ("s2", "error")] {
        sqlx::query(
            "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, \
             size_gib, status, host, error_message, created_at, updated_at) \
             VALUES ($1, 'p1', 'u', 'v1', '', '', 5, $2, 'h@b', '', 0, 0)",
        )
        .bind(id)
        .bind(status)
        .execute(&mut *tx)
        .await
        .expect("snapshot");
    }
    tx.commit().await.expect("commit");
    db.close().await;

    let db = Db::connect(url).await.expect("upgrade");
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
    let names = ["snapshots", "gigabytes"];
    assert_eq!(usage(&db, "p1", &names).await, [(1, 0), (10, 0)]);
    assert_eq!(
        db.start_snapshot_delete("s2", None).await.expect("delete"),
        crate::db::SnapshotDeleteStart::Started
    );
    assert_eq!(
        usage(&db, "p1", &names).await,
        [(1, 0), (10, 0)],
        "the failed snapshot being deleted"
    );
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
    db.close().await;
}

#[tokio::test]
async fn an_upgrade_marks_failed_snapshots_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("scoria.db").display());
    an_upgrade_marks_failed_snapshots(&url).await;
}

#[tokio::test]
async fn an_upgrade_marks_failed_snapshots_on_postgres() {
    let url = fresh_postgres().await;
    an_upgrade_marks_failed_snapshots(&url).await;
    drop_postgres(&url).await;
}
