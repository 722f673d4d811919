//! The database layer on both engines: migrations, compare-and-set races,
//! idempotency keys, keyset paging.

use std::collections::BTreeMap;

use scoria_common::{
    db::{Created, Db, IdempotencyKey, VolumeQuery, WorkerEntry, WorkerKind},
    model::{Volume, VolumeStatus, now_ms},
};
use scoria_tests::stack::{postgres_url, require_postgres};

/// A fresh database: a SQLite file, or a new PostgreSQL database.
async fn fresh(engine: &str) -> (Db, Option<tempfile::TempDir>) {
    match engine {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("dir");
            let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()))
                .await
                .expect("sqlite");
            (db, Some(dir))
        }
        _ => {
            require_postgres();
            let name = format!("scoria_dbtest_{}", uuid::Uuid::new_v4().simple());
            let admin = Db::connect(&postgres_url()).await.expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(admin.pool())
                .await
                .expect("create db");
            admin.close().await;
            let base = postgres_url();
            let prefix = base
                .rsplit_once('/')
                .map(|(p, _)| p.to_owned())
                .unwrap_or(base);
            (
                Db::connect(&format!("{prefix}/{name}"))
                    .await
                    .expect("connect"),
                None,
            )
        }
    }
}

fn volume(project: &str, name: &str, created_at_ms: i64) -> Volume {
    Volume {
        migration_status: Default::default(),
        migration_error: String::new(),
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.into(),
        user_id: "u".into(),
        name: name.into(),
        description: String::new(),
        size_gib: 1,
        status: VolumeStatus::Creating,
        volume_type: String::new(),
        availability_zone: String::new(),
        host: None,
        metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        error_message: String::new(),
        snapshot_id: None,
        source_volume_id: None,
        created_at_ms,
        updated_at_ms: created_at_ms,
    }
}

fn worker(id: &str) -> WorkerEntry {
    WorkerEntry {
        kind: WorkerKind::Volume,
        resource_id: id.into(),
        status: "creating".into(),
        service: "scoria-scheduler".into(),
        deadline_ms: now_ms() + 60_000,
    }
}

async fn exercise(engine: &str) {
    let (db, _dir) = fresh(engine).await;
    // Migrations are idempotent: connecting again (as another process would) is fine.
    let url_db = db.clone();
    url_db.ping().await.expect("ping");

    let v = volume("p", "a", 1_000);
    assert!(matches!(
        db.create_volume(&v, None, &worker(&v.id))
            .await
            .expect("insert"),
        Created::New(_)
    ));
    let got = db.get_volume(&v.id).await.expect("get").expect("exists");
    assert_eq!(got, v, "a row reads back as written ({engine})");
    assert_eq!(
        db.get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("worker")
            .map(|w| w.service),
        Some("scoria-scheduler".into())
    );

    // Idempotency keys.
    let key = IdempotencyKey {
        request_id: "r1".into(),
        request_hash: "h1".into(),
    };
    let first = volume("p", "b", 2_000);
    assert!(matches!(
        db.create_volume(&first, Some(&key), &worker(&first.id))
            .await
            .expect("insert"),
        Created::New(_)
    ));
    let second = volume("p", "b", 2_001);
    match db
        .create_volume(&second, Some(&key), &worker(&second.id))
        .await
        .expect("insert")
    {
        Created::Existing {
            volume_id,
            request_hash,
        } => {
            assert_eq!(volume_id, first.id);
            assert_eq!(request_hash, "h1");
        }
        other => panic!("a reused key created {other:?}"),
    }
    assert!(
        db.get_volume(&second.id).await.expect("get").is_none(),
        "nothing written for a reused key"
    );

    // Compare-and-set: 20 racers, exactly one wins.
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let (db, id) = (db.clone(), v.id.clone());
            tokio::spawn(async move {
                db.transition_volume(
                    &id,
                    &[VolumeStatus::Creating],
                    VolumeStatus::Available,
                    Some(&format!("h{i}@file")),
                    None,
                )
                .await
                .expect("cas")
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.expect("join"));
    }
    assert_eq!(wins, 1, "exactly one racer wins ({engine})");
    let after = db.get_volume(&v.id).await.expect("get").expect("exists");
    assert_eq!(after.status, VolumeStatus::Available);
    assert!(after.host.is_some());

    // Keyset paging and filters.
    for i in 0..5 {
        let x = volume("q", &format!("n{i}"), 10_000 + i);
        db.create_volume(&x, None, &worker(&x.id))
            .await
            .expect("insert");
    }
    let mut query = VolumeQuery {
        project_id: Some("q".into()),
        limit: 2,
        ..VolumeQuery::default()
    };
    let mut names = Vec::new();
    loop {
        let page = db.list_volumes(&query).await.expect("list");
        let Some(last) = page.last() else { break };
        query.after = Some((last.created_at_ms, last.id.clone()));
        names.extend(page.iter().map(|v| v.name.clone()));
    }
    assert_eq!(names, vec!["n0", "n1", "n2", "n3", "n4"]);
    let named = db
        .list_volumes(&VolumeQuery {
            project_id: Some("q".into()),
            name: Some("n3".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(named.len(), 1);
    assert!(db.delete_volume_row(&v.id).await.expect("delete"));
    assert!(
        !db.delete_volume_row(&v.id).await.expect("delete again"),
        "deleting twice reports nothing removed"
    );
    assert!(
        db.get_worker(WorkerKind::Volume, &v.id)
            .await
            .expect("worker")
            .is_none()
    );

    // Heartbeats register a service once and then update it.
    db.heartbeat("scoria-volume", "h@file", "az1")
        .await
        .expect("beat");
    db.heartbeat("scoria-volume", "h@file", "az1")
        .await
        .expect("beat");
    let services = db.list_services().await.expect("services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].availability_zone, "az1");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_layer_on_sqlite() {
    exercise("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn database_layer_on_postgres() {
    exercise("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_starting_together_all_migrate() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}/race.db", dir.path().display());
    let connects: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Db::connect_owned(url.clone())))
        .collect();
    for c in connects {
        c.await
            .expect("join")
            .expect("every concurrent migration succeeds");
    }
}
