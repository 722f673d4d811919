//! A temporary SQLite database, removed when dropped.

use std::ops::Deref;

use crate::db::Db;

/// A fresh, migrated SQLite database in a temporary directory.
pub struct TempDb {
    db: Db,
    dir: tempfile::TempDir,
}

impl TempDb {
    /// Creates and migrates it. Panics if it cannot (a test fixture).
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("scoria.db").display());
        let db = Db::connect(&url).await.expect("temporary SQLite database");
        Self { db, dir }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The directory it lives in (free for a test's other files).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Deref for TempDb {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}
