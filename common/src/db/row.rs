//! Reading rows: one row by id, and the checks every `*_from_row` makes, with
//! errors that name the table, the row and the column.

use std::str::FromStr;

use serde::de::DeserializeOwned;
use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Db, DbError, DbResult};

/// One row being read into a domain type; its `id` names it in every
/// [`DbError::Corrupt`].
pub(crate) struct RowReader<'r> {
    row: &'r AnyRow,
    table: &'static str,
    id: String,
}

impl<'r> RowReader<'r> {
    /// Starts reading `row` of `table` (its `id` column first).
    pub(crate) fn new(row: &'r AnyRow, table: &'static str) -> DbResult<Self> {
        Ok(Self {
            row,
            table,
            id: row.try_get("id")?,
        })
    }

    /// The row holds a value no domain type can take.
    pub(crate) fn corrupt(&self, reason: String) -> DbError {
        DbError::Corrupt {
            table: self.table,
            id: self.id.clone(),
            reason,
        }
    }

    /// A text column parsed into an enum (a status, a mode).
    pub(crate) fn parse<T: FromStr<Err = String>>(&self, column: &str) -> DbResult<T> {
        let text: String = self.row.try_get(column)?;
        text.parse().map_err(|reason| self.corrupt(reason))
    }

    /// The `size_gib` column, never negative.
    pub(crate) fn size_gib(&self) -> DbResult<u64> {
        let size: i64 = self.row.try_get("size_gib")?;
        u64::try_from(size).map_err(|_| self.corrupt(format!("negative size {size}")))
    }

    /// A JSON text column.
    pub(crate) fn json<T: DeserializeOwned>(&self, column: &str) -> DbResult<T> {
        let text: String = self.row.try_get(column)?;
        self.json_text(column, &text)
    }

    /// `text`, read from JSON `column`.
    pub(crate) fn json_text<T: DeserializeOwned>(&self, column: &str, text: &str) -> DbResult<T> {
        serde_json::from_str(text).map_err(|err| self.corrupt(format!("{column}: {err}")))
    }

    /// The row's id, when the reading is done.
    pub(crate) fn into_id(self) -> String {
        self.id
    }
}

impl Db {
    /// The row of `table` whose id is `id`, of any project, read by `from_row`.
    pub(crate) async fn get_by_id<T>(
        &self,
        table: &str,
        columns: &str,
        id: &str,
        from_row: fn(&AnyRow) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }
}
