//! One builder for the keyset-paged list queries (`list_volumes`,
//! `list_snapshots`, `list_attachments`): optional equality and `IN` filters, a
//! `(created_at, id)` cursor, `ORDER BY created_at, id` and a limit, written as
//! SQL with `$N` placeholders (both engines accept them through `sqlx::Any`) and
//! the values to bind, in placeholder order.
//!
//! The cursor is spelled `created_at > $a OR (created_at = $b AND id > $c)`, the
//! timestamp bound twice, rather than a row comparison or a reused `$a`: the
//! same text runs on SQLite and PostgreSQL, as the lists always did.
//!
//! ```text
//! Keyset::new("volumes", COLUMNS).eq("project_id", q.project_id.as_deref())
//!     .after(q.after.as_ref()).limit(Some(q.limit)).fetch_all(&pool)
//! ```

use sqlx::{AnyPool, AssertSqlSafe, any::AnyRow};

use super::DbResult;

/// A value to bind to a placeholder of a [`Keyset`] query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind<'a> {
    /// A `TEXT` value.
    Text(&'a str),
    /// A `BIGINT` value.
    Int(i64),
}

impl<'a> From<&'a str> for Bind<'a> {
    fn from(value: &'a str) -> Self {
        Bind::Text(value)
    }
}

impl From<i64> for Bind<'_> {
    fn from(value: i64) -> Self {
        Bind::Int(value)
    }
}

/// A keyset-paged `SELECT` of one table, `(created_at, id)` order.
///
/// Placeholders are numbered as conditions are added, so the binds are always
/// in placeholder order; the limit, if any, is the last placeholder.
#[derive(Debug, Clone)]
pub(crate) struct Keyset<'a> {
    table: &'static str,
    columns: &'static str,
    conditions: Vec<String>,
    binds: Vec<Bind<'a>>,
    limit: Option<u32>,
}

impl<'a> Keyset<'a> {
    /// `SELECT columns FROM table`, every row so far.
    pub(crate) fn new(table: &'static str, columns: &'static str) -> Self {
        Self {
            table,
            columns,
            conditions: Vec::new(),
            binds: Vec::new(),
            limit: None,
        }
    }

    /// Only rows whose `column` equals `value`; `None` filters nothing.
    pub(crate) fn eq(mut self, column: &'static str, value: Option<impl Into<Bind<'a>>>) -> Self {
        if let Some(value) = value {
            let p = self.push(value.into());
            self.conditions.push(format!("{column} = {p}"));
        }
        self
    }

    /// Only rows whose `column` is one of `values`; no values filters nothing.
    pub(crate) fn any_of<V: Into<Bind<'a>>>(
        mut self,
        column: &'static str,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let list: Vec<String> = values.into_iter().map(|v| self.push(v.into())).collect();
        if !list.is_empty() {
            self.conditions
                .push(format!("{column} IN ({})", list.join(", ")));
        }
        self
    }

    /// Only rows whose `column` is greater than `value`.
    pub(crate) fn later(mut self, column: &'static str, value: i64) -> Self {
        let p = self.push(Bind::Int(value));
        self.conditions.push(format!("{column} > {p}"));
        self
    }

    /// Only rows after the cursor `(created_at_ms, id)`; `None`: from the start.
    pub(crate) fn after(mut self, cursor: Option<&'a (i64, String)>) -> Self {
        if let Some((created_at, id)) = cursor {
            let a = self.push(Bind::Int(*created_at));
            let b = self.push(Bind::Int(*created_at));
            let c = self.push(Bind::Text(id));
            self.conditions.push(format!(
                "(created_at > {a} OR (created_at = {b} AND id > {c}))"
            ));
        }
        self
    }

    /// At most `limit` rows; `None`: no limit.
    pub(crate) fn limit(mut self, limit: Option<u32>) -> Self {
        self.limit = limit;
        self
    }

    /// The SQL and the values for its placeholders, in order.
    pub(crate) fn build(self) -> (String, Vec<Bind<'a>>) {
        let Self {
            table,
            columns,
            conditions,
            mut binds,
            limit,
        } = self;
        let mut sql = format!("SELECT {columns} FROM {table}");
        if !conditions.is_empty() {
            sql += " WHERE ";
            sql += &conditions.join(" AND ");
        }
        sql += " ORDER BY created_at, id";
        if let Some(limit) = limit {
            binds.push(Bind::Int(i64::from(limit)));
            sql += &format!(" LIMIT ${}", binds.len());
        }
        (sql, binds)
    }

    /// Runs the query on `pool`.
    pub(crate) async fn fetch_all(self, pool: &AnyPool) -> DbResult<Vec<AnyRow>> {
        let (sql, binds) = self.build();
        // Only table and column names (constants) and placeholders are formatted
        // into the SQL; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            q = match bind {
                Bind::Text(value) => q.bind(value),
                Bind::Int(value) => q.bind(value),
            };
        }
        Ok(q.fetch_all(pool).await?)
    }

    /// The next placeholder, `$N`, for `value`.
    fn push(&mut self, value: Bind<'a>) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_no_limit() {
        let (sql, binds) = Keyset::new("t", "id, created_at").build();
        assert_eq!(sql, "SELECT id, created_at FROM t ORDER BY created_at, id");
        assert!(binds.is_empty());
    }

    #[test]
    fn absent_filters_add_nothing() {
        let none: Option<&str> = None;
        let (sql, binds) = Keyset::new("t", "id")
            .eq("a", none)
            .any_of::<&str>("s", [])
            .after(None)
            .limit(Some(5))
            .build();
        assert_eq!(sql, "SELECT id FROM t ORDER BY created_at, id LIMIT $1");
        assert_eq!(binds, [Bind::Int(5)]);
    }

    #[test]
    fn every_part_numbers_in_order() {
        let cursor = (1_700, "v-9".to_owned());
        let (sql, binds) = Keyset::new("attachments", "id")
            .eq("project_id", Some("p1"))
            .eq("volume_id", None::<&str>)
            .eq("volume_host", Some("n1@file"))
            .any_of("status", ["attached", "detaching"])
            .after(Some(&cursor))
            .limit(Some(50))
            .build();
        assert_eq!(
            sql,
            "SELECT id FROM attachments WHERE project_id = $1 AND volume_host = $2 \
             AND status IN ($3, $4) AND (created_at > $5 OR (created_at = $6 AND id > $7)) \
             ORDER BY created_at, id LIMIT $8"
        );
        assert_eq!(
            binds,
            [
                Bind::Text("p1"),
                Bind::Text("n1@file"),
                Bind::Text("attached"),
                Bind::Text("detaching"),
                Bind::Int(1_700),
                Bind::Int(1_700),
                Bind::Text("v-9"),
                Bind::Int(50),
            ]
        );
    }

    #[test]
    fn cursor_alone() {
        let cursor = (7, "x".to_owned());
        let (sql, binds) = Keyset::new("snapshots", "id").after(Some(&cursor)).build();
        assert_eq!(
            sql,
            "SELECT id FROM snapshots WHERE (created_at > $1 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id"
        );
        assert_eq!(binds, [Bind::Int(7), Bind::Int(7), Bind::Text("x")]);
    }

    #[test]
    fn integer_filters_bind_as_integers() {
        let (sql, binds) = Keyset::new("t", "id")
            .eq("size_gib", Some(3_i64))
            .limit(Some(0))
            .build();
        assert_eq!(
            sql,
            "SELECT id FROM t WHERE size_gib = $1 ORDER BY created_at, id LIMIT $2"
        );
        assert_eq!(binds, [Bind::Int(3), Bind::Int(0)]);
    }
}
