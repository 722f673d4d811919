//! Counts for the metrics: rows per status of `volumes` and `snapshots`, in one
//! grouped query (never a read per row).

use sqlx::Row;

use super::{Db, DbResult};

/// How many rows of a table have one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCount {
    /// `volumes` or `snapshots`.
    pub table: &'static str,
    /// The status as stored (`available` ...).
    pub status: String,
    /// How many rows.
    pub count: i64,
}

impl Db {
    /// Rows per status of `volumes` and `snapshots` (statuses without rows are
    /// absent), in one query.
    pub async fn status_counts(&self) -> DbResult<Vec<StatusCount>> {
        let rows = sqlx::query(
            "SELECT 'volumes' AS tbl, status, COUNT(*) AS n FROM volumes GROUP BY status \
             UNION ALL \
             SELECT 'snapshots' AS tbl, status, COUNT(*) AS n FROM snapshots GROUP BY status",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let table: String = row.try_get("tbl")?;
                Ok(StatusCount {
                    table: if table == "volumes" {
                        "volumes"
                    } else {
                        "snapshots"
                    },
                    status: row.try_get("status")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TempDb;

    #[tokio::test]
    async fn an_empty_database_counts_nothing() {
        let db = TempDb::new().await;
        assert!(db.db().status_counts().await.expect("counted").is_empty());
    }
}
