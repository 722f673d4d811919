//! The database: one schema on two engines, SQLite (the embedded default, a file
//! under the data dir) and PostgreSQL (for several nodes), through `sqlx`'s `Any`
//! driver. Every query is written once, with `$N` placeholders both engines accept.
//!
//! Status changes are compare-and-set (`UPDATE ... WHERE id = $1 AND status IN
//! (...)`): of two racing requests exactly one wins, the other learns it lost.
//! Migrations are embedded and run at start by every process, each version in one
//! transaction under a lock (see `Db::migrate`), so of processes starting together
//! exactly one applies each version.

#[cfg(test)]
mod admin_tests;
mod attachments;
#[cfg(test)]
mod attachments_tests;
mod backup_chunks;
mod backups;
mod extend;
mod keyset;
mod manage;
#[cfg(test)]
mod manage_tests;
#[cfg(test)]
mod migrate_tests;
mod migrations;
mod overdue;
pub mod quota;
mod revert;
mod row;
mod services;
mod snapshots;
mod stats;
mod transfers;
#[cfg(test)]
mod transfers_tests;
mod types;
mod volumes;
#[cfg(test)]
mod volumes_tests;
mod workers;

use std::{sync::Arc, time::Duration};

use sqlx::{
    AnyPool, AssertSqlSafe, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

use crate::changes::{ChangeKind, ChangeSink};
pub use attachments::{AttachReserve, AttachmentQuery, DetachStart};
pub use backups::{BackupChange, BackupDeleteStart, BackupQuery, VolumeMove};
pub use manage::Unmanaged;
pub use migrations::{Migration, MigrationStart, MigrationState};
pub use overdue::WorkerOutcome;
pub use revert::RevertStart;
pub use snapshots::{SnapshotDeleteStart, SnapshotQuery, VolumeDeleteStart};
pub use stats::StatusCount;
pub use transfers::{TransferAccept, TransferCreate, TransferQuery};
pub use types::{DEFAULT_VOLUME_TYPE_ID, DEFAULT_VOLUME_TYPE_NAME, TypeDeleted, VolumeTypeChanges};
pub use volumes::{Created, IdempotencyKey, VolumeChanges, VolumeQuery};
pub use workers::{Owner, SCHEDULER_OWNER, TransientStatus, WorkerEntry, WorkerKind, deadlines};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or is too busy right now.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    /// A row holds a value the code cannot read.
    #[error("corrupt {table} row {id}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The request would exceed its project's quota: nothing was written.
    #[error("{0}")]
    OverQuota(quota::OverQuota),
    /// The URL names no engine we support.
    #[error("unsupported database URL {0:?}: use sqlite://<file> or postgres://...")]
    UnsupportedUrl(String),
}

/// A `Result` alias for database operations.
pub type DbResult<T, E = DbError> = std::result::Result<T, E>;

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        let unavailable = match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // With TLS compiled in, a connection (sslmode=prefer, the default)
            // starts with an SSLRequest; a server (or proxy) that closes the
            // socket instead of answering reads as the byte 0x00. That is a
            // database gone, like the `Io` error a plain StartupMessage gets.
            sqlx::Error::Protocol(message) => {
                message.starts_with("unexpected response from SSLRequest")
            }
            // SQLite: database is locked / busy; PostgreSQL: cannot connect now,
            // admin shutdown, serialization failure.
            sqlx::Error::Database(db) => matches!(
                db.code().as_deref(),
                Some(
                    "5" | "6"
                        | "517"
                        | "57P01"
                        | "57P02"
                        | "57P03"
                        | "08000"
                        | "08003"
                        | "08006"
                        | "40001"
                )
            ),
            _ => false,
        };
        crate::metrics::global().db.error(unavailable);
        if unavailable {
            DbError::Unavailable(err)
        } else {
            DbError::Query(err)
        }
    }
}

/// The engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A handle on the database (a connection pool); cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    /// The limits of projects without overrides.
    quota_defaults: quota::QuotaDefaults,
    /// Told of every volume, snapshot and attachment row a write changed.
    changes: Option<Arc<dyn ChangeSink>>,
}

/// Each schema version, applied in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("schema_v1.sql")),
    (2, "snapshots", include_str!("schema_v2.sql")),
    (3, "volume types", include_str!("schema_v3.sql")),
    (4, "attachments", include_str!("schema_v4.sql")),
    (5, "quotas", include_str!("schema_v5.sql")),
    (6, "volume service clusters", include_str!("schema_v6.sql")),
    (7, "backups", include_str!("schema_v7.sql")),
    (8, "transfers", include_str!("schema_v8.sql")),
    (
        9,
        "volume migration and retype",
        include_str!("schema_v9.sql"),
    ),
];

/// The version whose [`engine_statements`] install the quota triggers and
/// recount the usage. The triggers and the recount are generated from the
/// current definition of what a row holds (`db::quota::holdings`), which may
/// use columns only a later version adds, so the latest version that changed
/// that definition installs them (replacing any an earlier one installed).
const QUOTA_TRIGGERS_VERSION: i64 = 7;

/// The statements of migration `version` that differ per engine, run after its
/// portable SQL: at [`QUOTA_TRIGGERS_VERSION`], the quota triggers dropped if
/// an earlier version made them, the usage recounted from whatever rows exist,
/// and the triggers created.
fn engine_statements(version: i64, engine: Engine) -> Vec<String> {
    if version != QUOTA_TRIGGERS_VERSION {
        return Vec::new();
    }
    let mut statements = quota::drop_triggers(engine);
    statements.push("DELETE FROM quota_usages".to_owned());
    statements.push(format!(
        "INSERT INTO quota_usages (project_id, resource, in_use, reserved) \
         SELECT project_id, resource, in_use, reserved FROM ({}) AS counted",
        quota::recount_all()
    ));
    statements.extend(quota::triggers(engine));
    statements
}

/// How many connections a process's pool opens: the configured number
/// (`database.max_connections`) on either engine, else 2 on SQLite and the
/// process's own default on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// `database.max_connections`, if set.
    pub configured: Option<u32>,
    /// The process's default on PostgreSQL.
    pub postgres_default: u32,
}

impl PoolSize {
    /// The size of a process without a default of its own (tests, tools).
    pub const DEFAULT: Self = Self {
        configured: None,
        postgres_default: 16,
    };

    /// The pool size on `engine`.
    pub fn for_engine(self, engine: Engine) -> u32 {
        self.configured
            .unwrap_or(match engine {
                // One writer at a time anyway: more connections only queue on
                // SQLite's lock with sleeping back-off (measured: p99 of a
                // create 285 ms with 8, 53 ms with 2).
                Engine::Sqlite => 2,
                Engine::Postgres => self.postgres_default,
            })
            .max(1)
    }
}

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and runs the
    /// migrations. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> DbResult<Self> {
        Self::connect_pool(url, PoolSize::DEFAULT).await
    }

    /// [`Db::connect`] with a pool of `size`.
    pub async fn connect_pool(url: &str, size: PoolSize) -> DbResult<Self> {
        let db = Self::open_pool(url, size).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// The pool on `url`, without running the migrations.
    #[cfg(test)]
    async fn open(url: &str) -> DbResult<Self> {
        Self::open_pool(url, PoolSize::DEFAULT).await
    }

    /// [`Db::open`] with a pool of `size`.
    async fn open_pool(url: &str, size: PoolSize) -> DbResult<Self> {
        sqlx::any::install_default_drivers();
        let (engine, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = std::path::Path::new(path.split('?').next().unwrap_or(path));
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(parent);
            }
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Engine::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Engine::Postgres, url.to_owned())
        } else {
            return Err(DbError::UnsupportedUrl(crate::config::redact_url(url)));
        };
        let options: AnyConnectOptions = url.parse().map_err(DbError::Query)?;
        let pool = AnyPoolOptions::new()
            .max_connections(size.for_engine(engine))
            // On SQLite a request waits only for one of the two local
            // connections (nothing remote can fail): a burst queues rather than
            // failing after 5 s (200 creates at once on a loaded machine did). On
            // PostgreSQL a database that is gone must answer UNAVAILABLE soon.
            .acquire_timeout(match engine {
                Engine::Sqlite => Duration::from_secs(30),
                Engine::Postgres => Duration::from_secs(5),
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL lets readers run beside the one writer; several
                        // processes share the file, so wait for locks instead of failing.
                        // The timeout first: switching a fresh file to WAL
                        // needs a lock another process may hold just then.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            engine,
            quota_defaults: quota::QuotaDefaults::UNLIMITED,
            changes: None,
        })
    }

    /// This handle, reporting to `sink` every volume, snapshot and attachment
    /// row its writes change (after the commit): the change feed's hook, in the
    /// one place every writer goes through.
    pub fn with_change_sink(mut self, sink: Arc<dyn ChangeSink>) -> Self {
        self.changes = Some(sink);
        self
    }

    /// Reports that row `id` of `kind` changed (committed).
    pub(crate) fn changed(&self, kind: ChangeKind, id: &str) {
        if let Some(sink) = &self.changes {
            sink.changed(kind, id);
        }
    }

    /// [`Db::connect`] taking an owned URL (handy for spawned tasks).
    pub async fn connect_owned(url: String) -> DbResult<Self> {
        Self::connect(&url).await
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool, for queries this module does not offer.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies the migrations not applied yet; returns the versions this call
    /// applied.
    ///
    /// Each step is one transaction that holds the migration lock (SQLite's write
    /// lock, taken at once by `BEGIN IMMEDIATE`; a transaction-scoped advisory
    /// lock on PostgreSQL) and re-reads the version table under it: of processes
    /// starting together exactly one applies each version, the others wait for
    /// it and find it done. A step that fails rolls back whole, and a start that
    /// is cancelled mid-step leaves no lock behind (the transaction ends with
    /// its connection). A database with every version applied is only read.
    async fn migrate(&self) -> DbResult<Vec<i64>> {
        // Versions are never removed, so what is seen without the lock is done;
        // an error here (no version table yet) just means "read it under the lock".
        let done = self.applied_versions().await.unwrap_or_default();
        if MIGRATIONS.iter().all(|(v, _, _)| done.contains(v)) {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_migration().await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS scoria_migrations (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        tx.commit().await?;

        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            let mut tx = self.begin_migration().await?;
            let present: Option<(i64,)> =
                sqlx::query_as("SELECT version FROM scoria_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if present.is_some() {
                // Another process applied it while this one waited for the lock.
                tx.rollback().await?;
                continue;
            }
            for statement in sql
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty() && !is_comment(s))
            {
                tx.execute(statement).await?;
            }
            for statement in engine_statements(*version, self.engine) {
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await?;
            }
            // No `ON CONFLICT`: under the lock a second insert is a bug, and fails.
            sqlx::query(
                "INSERT INTO scoria_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*name)
            .bind(crate::model::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version, name, "applied database migration");
            applied.push(*version);
        }
        Ok(applied)
    }

    /// The versions in the version table (an error if there is none yet).
    async fn applied_versions(&self) -> DbResult<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM scoria_migrations")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// A transaction that will write, holding SQLite's write lock from its start
    /// (`BEGIN IMMEDIATE`, waiting up to `busy_timeout` for it): one that read
    /// first could not upgrade to a writer once another connection wrote
    /// meanwhile (SQLite fails that at once, without waiting). A plain
    /// transaction on PostgreSQL.
    pub(crate) async fn begin_write(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Any>> {
        match self.engine {
            Engine::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres => Ok(self.pool.begin().await?),
        }
    }

    /// A transaction holding the migration lock, which it keeps until it ends.
    async fn begin_migration(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Any>> {
        // SQLite: the write lock now, not at the first write: two deferred
        // transactions that both read the version table first could not both
        // upgrade to writers (see `begin_write`).
        let mut tx = self.begin_write().await?;
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

/// The PostgreSQL advisory lock key migrations hold (transaction-scoped).
const MIGRATION_LOCK: i64 = 7_263_541;

fn is_comment(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

/// The status compare-and-set of one row of `table` (attachments, snapshots):
/// moves row `id` from one of `from` to `to`, stamps `updated_at`, sets
/// `error_message` when given, and the further assignments `set` (empty: none;
/// `$1` is the new status), under an extra SQL `guard` condition (empty: none;
/// it may use `$4`, the id). Whether the row moved.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn cas_status(
    conn: &mut sqlx::AnyConnection,
    table: &'static str,
    id: &str,
    from: &[&str],
    to: &str,
    error_message: Option<&str>,
    set: &str,
    guard: &str,
) -> DbResult<bool> {
    let sql = format!(
        "UPDATE {table} SET status = $1, updated_at = $2, error_message = COALESCE($3, error_message){set} \
         WHERE id = $4 AND status IN ({}){guard}",
        placeholders(5, from.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to.to_owned())
        .bind(crate::model::now_ms())
        .bind(error_message.map(str::to_owned))
        .bind(id.to_owned());
    for status in from {
        q = q.bind((*status).to_owned());
    }
    Ok(q.execute(&mut *conn).await?.rows_affected() == 1)
}

/// `$first, $first+1, ...` for `n` values, for `IN (...)` lists.
///
/// An empty list gives `NULL`: `x IN (NULL)` is valid SQL on both engines (where
/// `IN ()` is not on PostgreSQL) and true for no row, so a compare-and-set from
/// no status moves nothing and reports that it lost, and `NOT EXISTS (... IN
/// (NULL))` holds. No value is bound for it.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    if n == 0 {
        return "NULL".to_owned();
    }
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod pool_size_tests {
    use super::{Engine, PoolSize};

    #[test]
    fn the_configured_size_wins_else_the_process_default_on_postgres() {
        let api = PoolSize {
            configured: None,
            postgres_default: 16,
        };
        assert_eq!(api.for_engine(Engine::Postgres), 16);
        // SQLite keeps its one-writer size whatever the process wants.
        assert_eq!(api.for_engine(Engine::Sqlite), 2);
        let set = PoolSize {
            configured: Some(40),
            ..api
        };
        assert_eq!(set.for_engine(Engine::Postgres), 40);
        assert_eq!(set.for_engine(Engine::Sqlite), 40);
        assert_eq!(PoolSize::DEFAULT.for_engine(Engine::Postgres), 16);
    }

    #[tokio::test]
    async fn the_pool_opens_at_most_its_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/pool.db", dir.path().display());
        let size = PoolSize {
            configured: Some(3),
            postgres_default: 16,
        };
        let db = super::Db::connect_pool(&url, size).await.expect("connect");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(db.pool().acquire().await.expect("a connection"));
        }
        assert_eq!(db.pool().size(), 3);
        assert_eq!(db.pool().num_idle(), 0);
        drop(held);
        db.close().await;
    }
}
