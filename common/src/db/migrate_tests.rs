//! Migrations under concurrent starts, on a fresh SQLite file and on a fresh
//! PostgreSQL database, and the `IN (...)` list builder.

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
    let url = std::env::var("SCORIA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
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
