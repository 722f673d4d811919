//! The database: one schema on two engines, SQLite (the embedded default, a file
//! under the data dir) and PostgreSQL (for several nodes), through `sqlx`'s `Any`
//! driver. Every query is written once, with `$N` placeholders both engines accept.
//!
//! Status changes are compare-and-set (`UPDATE ... WHERE id = $1 AND status IN
//! (...)`): of two racing requests exactly one wins, the other learns it lost.
//! Migrations are embedded and run at start by every process; they are idempotent,
//! so processes starting together do not trip on each other.

#[cfg(test)]
mod admin_tests;
mod attachments;
#[cfg(test)]
mod attachments_tests;
mod extend;
mod keyset;
mod overdue;
mod services;
mod snapshots;
mod types;
mod volumes;
#[cfg(test)]
mod volumes_tests;
mod workers;

use std::time::Duration;

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use attachments::{AttachReserve, AttachmentQuery, DetachStart};
pub use overdue::WorkerOutcome;
pub use snapshots::{SnapshotDeleteStart, SnapshotQuery, VolumeDeleteStart};
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
}

/// Each schema version, applied in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("schema_v1.sql")),
    (2, "snapshots", include_str!("schema_v2.sql")),
    (3, "volume types", include_str!("schema_v3.sql")),
    (4, "attachments", include_str!("schema_v4.sql")),
];

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and runs the
    /// migrations. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> DbResult<Self> {
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
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        let options: AnyConnectOptions = url.parse().map_err(DbError::Query)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                // One writer at a time anyway: more connections only queue on
                // SQLite's lock with sleeping back-off (measured: p99 of a
                // create 285 ms with 8, 53 ms with 2).
                Engine::Sqlite => 2,
                Engine::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL lets readers run beside the one writer; several
                        // processes share the file, so wait for locks instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Self { pool, engine };
        db.migrate().await?;
        Ok(db)
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

    async fn migrate(&self) -> DbResult<()> {
        let mut conn = self.pool.acquire().await?;
        if self.engine == Engine::Postgres {
            // One migrating process at a time (released with the session).
            sqlx::query("SELECT pg_advisory_lock(7263541)")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS scoria_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
            for (version, name, sql) in MIGRATIONS {
                let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM scoria_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_some() {
                    continue;
                }
                for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty() && !is_comment(s)) {
                    conn.execute(statement).await?;
                }
                sqlx::query(
                    "INSERT INTO scoria_migrations (version, name, applied_at) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
                )
                .bind(*version)
                .bind(*name)
                .bind(crate::model::now_ms())
                .execute(&mut *conn)
                .await?;
                tracing::info!(version, name, "applied database migration");
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if self.engine == Engine::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock(7263541)")
                .execute(&mut *conn)
                .await;
        }
        result.map_err(DbError::from)
    }
}

fn is_comment(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

/// `$first, $first+1, ...` for `n` values, for `IN (...)` lists.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
