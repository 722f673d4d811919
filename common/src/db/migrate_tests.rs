//! Migrations under concurrent starts, on a fresh SQLite file and on a fresh
//! PostgreSQL database, an upgrade to the quota schema of a database with rows,
//! and the `IN (...)` list builder.

use super::*;

/// Processes starting at once in the tests below.
const STARTS: usize = 8;

/// A SQLite file in a temp dir, removed on drop.
struct TempFile {
    dir: std::path::PathBuf,
}

impl TempFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("scoria-db-migrate-{}", uuid::Uuid::new_v4()));
        Self { dir }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("scoria.db").display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test PostgreSQL (`SCORIA_TEST_DATABASE_URL`); panics if it is not reachable.
fn postgres_url() -> String {
    let url = std::env::var("SCORIA_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://scoria_test:scoria_test_pw@127.0.0.1:5432/scoria_test".to_owned()
    });
    let hostport = url
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let reachable = hostport
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "PostgreSQL is not reachable at {hostport} (SCORIA_TEST_DATABASE_URL={url}); \
         run scripts/setup.sh (as root if it must start it)"
    );
    url
}

/// A new, empty PostgreSQL database; its URL.
pub(in crate::db) async fn fresh_postgres() -> String {
    let base = postgres_url();
    let name = format!("scoria_migrate_{}", uuid::Uuid::new_v4().simple());
    let admin = Db::open(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin.pool())
        .await
        .expect("create a test database");
    admin.close().await;
    let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
    format!("{prefix}/{name}")
}

/// Drops the database of `url` made by [`fresh_postgres`] (best effort).
pub(in crate::db) async fn drop_postgres(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(admin) = Db::open(&postgres_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(admin.pool())
        .await;
        admin.close().await;
    }
}

/// Starts [`STARTS`] "processes" at once on `url` (each its own pool, as a
/// process has), each running the migrations; checks every one succeeded, each
/// version was applied by exactly one of them, and the version table lists
/// each version once.
async fn concurrent_starts_apply_each_migration_once(url: &str) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(STARTS));
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..STARTS {
        let (url, barrier) = (url.to_owned(), barrier.clone());
        starts.spawn(async move {
            let db = Db::open(&url).await?;
            // A pool is open in every "process": now they all migrate at once.
            barrier.wait().await;
            let applied = db.migrate().await;
            db.close().await;
            applied
        });
    }
    let mut applied = Vec::new();
    while let Some(start) = starts.join_next().await {
        applied.extend(
            start
                .expect("start task")
                .expect("a concurrent start failed"),
        );
    }
    applied.sort_unstable();
    let all: Vec<i64> = MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(applied, all, "each migration applied by exactly one start");

    // A later start finds nothing to do, and the table holds each version once.
    let db = Db::connect(url).await.expect("connect after the race");
    assert!(db.migrate().await.expect("migrate again").is_empty());
    let versions: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM scoria_migrations ORDER BY version")
            .fetch_all(db.pool())
            .await
            .expect("versions");
    assert_eq!(versions.into_iter().map(|(v,)| v).collect::<Vec<_>>(), all);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_on_a_fresh_sqlite_file_apply_each_migration_once() {
    let file = TempFile::new();
    concurrent_starts_apply_each_migration_once(&file.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_on_a_fresh_postgres_database_apply_each_migration_once() {
    let url = fresh_postgres().await;
    concurrent_starts_apply_each_migration_once(&url).await;
    drop_postgres(&url).await;
}

#[tokio::test]
async fn concurrent_public_connects_on_a_fresh_sqlite_file_all_succeed() {
    let file = TempFile::new();
    let url = file.url();
    let connects: Vec<_> = (0..STARTS).map(|_| Db::connect(&url)).collect();
    for db in futures_util::future::join_all(connects).await {
        db.expect("a concurrent Db::connect failed").close().await;
    }
}

// === the IN (...) builder ===

#[test]
fn placeholders_number_from_first() {
    assert_eq!(placeholders(3, 2), "$3, $4");
    assert_eq!(placeholders(1, 1), "$1");
}

#[test]
fn an_empty_in_list_is_valid_sql_that_matches_nothing() {
    assert_eq!(placeholders(6, 0), "NULL");
}

/// What a compare-and-set with an empty `from` list does on each engine: the
/// statement runs and moves no row.
async fn empty_from_list_moves_nothing(db: &Db) {
    sqlx::query("CREATE TABLE IF NOT EXISTS cas_probe (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
        .execute(db.pool())
        .await
        .expect("create probe table");
    sqlx::query("INSERT INTO cas_probe (id, status) VALUES ('a', 'available')")
        .execute(db.pool())
        .await
        .expect("insert");
    let sql = format!(
        "UPDATE cas_probe SET status = $1 WHERE id = $2 AND status IN ({})",
        placeholders(3, 0)
    );
    let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind("deleting")
        .bind("a")
        .execute(db.pool())
        .await
        .expect("an empty IN list must still be valid SQL")
        .rows_affected();
    assert_eq!(moved, 0);
    let sql = format!(
        "SELECT count(*) FROM cas_probe WHERE NOT EXISTS \
         (SELECT 1 FROM cas_probe WHERE status IN ({}))",
        placeholders(1, 0)
    );
    let (none_matched,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(db.pool())
        .await
        .expect("NOT EXISTS over an empty list");
    assert_eq!(none_matched, 1, "an empty list matches no row");
}

#[tokio::test]
async fn an_empty_from_list_moves_nothing_on_sqlite() {
    let file = TempFile::new();
    let db = Db::connect(&file.url()).await.expect("db");
    empty_from_list_moves_nothing(&db).await;
    db.close().await;
}

#[tokio::test]
async fn an_empty_from_list_moves_nothing_on_postgres() {
    let url = fresh_postgres().await;
    let db = Db::open(&url).await.expect("db");
    empty_from_list_moves_nothing(&db).await;
    db.close().await;
    drop_postgres(&url).await;
}

/// Versions 1 to 4 (before quotas) applied inside `tx`, as a release before
/// quotas left a database.
pub(in crate::db) async fn version_4_schema(tx: &mut sqlx::AnyConnection) {
    tx.execute(
        "CREATE TABLE scoria_migrations (version BIGINT PRIMARY KEY, \
         name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await
    .expect("version table");
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= 4) {
        for statement in sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty() && !is_comment(s))
        {
            tx.execute(statement).await.expect("old schema");
        }
        sqlx::query("INSERT INTO scoria_migrations (version, name, applied_at) VALUES ($1, $2, 0)")
            .bind(*version)
            .bind(*name)
            .execute(&mut *tx)
            .await
            .expect("version");
    }
}

/// A database at version 4 (before quotas) with rows in it, on `url`: the
/// volumes and snapshots of project `p1`.
async fn version_4_with_rows(url: &str) {
    let db = Db::open(url).await.expect("open");
    let mut tx = db.pool.begin().await.expect("begin");
    version_4_schema(&mut tx).await;
    for (id, status, size) in [
        ("v1", "available", 5),
        ("v2", "creating", 3),
        ("v3", "error", 2),
    ] {
        sqlx::query(
            "INSERT INTO volumes (id, project_id, user_id, name, description, size_gib, status, \
             volume_type, availability_zone, host, metadata, error_message, created_at, updated_at) \
             VALUES ($1, 'p1', 'u', '', '', $2, $3, 'gold', 'default', 'h@b', '{}', '', 0, 0)",
        )
        .bind(id)
        .bind(size as i64)
        .bind(status)
        .execute(&mut *tx)
        .await
        .expect("volume");
    }
    sqlx::query(
        "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, size_gib, \
         status, host, error_message, created_at, updated_at) \
         VALUES ('s1', 'p1', 'u', 'v1', '', '', 5, 'available', 'h@b', '', 0, 0)",
    )
    .execute(&mut *tx)
    .await
    .expect("snapshot");
    tx.commit().await.expect("commit");
    db.close().await;
}

/// Upgrading to version 5 counts what the existing rows hold (an `error`
/// volume from before counts: whether its create failed is not recorded), and
/// the triggers keep it from then on.
async fn the_quota_migration_counts_existing_rows(url: &str) {
    version_4_with_rows(url).await;
    let db = Db::connect(url).await.expect("upgrade");
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
    let lines = db.project_quota("p1").await.expect("quota");
    let of = |name: &str| {
        lines
            .iter()
            .find(|l| l.resource.name() == name)
            .map(|l| (l.in_use, l.reserved))
    };
    assert_eq!(of("volumes"), Some((2, 1)));
    assert_eq!(of("gigabytes"), Some((12, 3)), "volumes and the snapshot");
    assert_eq!(
        of("snapshots_gold"),
        Some((1, 0)),
        "the snapshot took its volume's type"
    );
    assert!(db.delete_snapshot_row("s1").await.expect("delete"));
    assert_eq!(of("gigabytes"), Some((12, 3)), "read before the delete");
    let after = db.project_quota("p1").await.expect("quota");
    let gib = after
        .iter()
        .find(|l| l.resource.name() == "gigabytes")
        .map(|l| (l.in_use, l.reserved));
    assert_eq!(gib, Some((7, 3)));
    assert_eq!(db.check_quota_usage(None).await.expect("check"), []);
    db.close().await;
}

#[tokio::test]
async fn the_quota_migration_counts_existing_rows_on_sqlite() {
    let file = TempFile::new();
    the_quota_migration_counts_existing_rows(&file.url()).await;
}

#[tokio::test]
async fn the_quota_migration_counts_existing_rows_on_postgres() {
    let url = fresh_postgres().await;
    the_quota_migration_counts_existing_rows(&url).await;
    drop_postgres(&url).await;
}

#[test]
fn a_closed_socket_during_the_ssl_request_is_unavailable() {
    let err = DbError::from(sqlx::Error::Protocol(
        "unexpected response from SSLRequest: 0x00".into(),
    ));
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    let err = DbError::from(sqlx::Error::Protocol("something else".into()));
    assert!(matches!(err, DbError::Query(_)), "{err:?}");
}

#[tokio::test]
async fn an_unsupported_url_hides_its_password() {
    let err = Db::connect("mysql://root:hunter2@db/x")
        .await
        .expect_err("unsupported");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
