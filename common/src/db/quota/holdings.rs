//! What each row holds of its project's quota, defined once: the triggers that
//! keep `quota_usages` in step with the rows (one dialect per engine) and the
//! recount [`Db::check_quota_usage`](super::super::Db::check_quota_usage) compares
//! them with are all generated from the [`HOLDERS`] table below, so the counters
//! and the recount cannot disagree about what counts.
//!
//! A row's holding is a pure function of its columns:
//!
//! | table | reserved | in use | nothing |
//! | --- | --- | --- | --- |
//! | volumes | `creating`; the growth of an `extending` one | every other status | a failed create (`create_failed = 1`: `error`, then `deleting` ...) |
//! | snapshots | `creating` | every other status | a failed create (`create_failed = 1`: `error`, then `deleting` ...) |
//! | attachments | `reserved`, `attaching` | `attached`, `detaching`, `error_detaching` | `detached`, `error_attaching` |
//! | backups | `creating` | every other status (a failed one too: it holds its quota until deleted) | |
//!
//! Every insert, update and delete of a row moves the difference between what
//! the old row held and what the new one holds, in the statement's own
//! transaction: no path (API, scheduler, volume service, reconciler, reaper, an
//! operator's reset) can change a row without its usage following.

use super::super::Engine;

/// One resource a row holds: SQL expressions over the row's columns, each column
/// written `{r}column` (`{r}` becomes `NEW.`, `OLD.` or nothing).
struct Holding {
    /// The resource's name (`'volumes'`, `'volumes_' || {r}volume_type`).
    resource: &'static str,
    /// How much of it the row has in use.
    in_use: &'static str,
    /// How much of it the row has reserved.
    reserved: &'static str,
}

/// A table whose rows hold quota.
struct Holder {
    table: &'static str,
    /// Sorted by resource name, so every trigger takes the usage rows' locks in
    /// one order (PostgreSQL).
    holdings: &'static [Holding],
}

/// A volume that counts as in use: not being created, and not a failed create
/// (see [`create_failed`]).
const VOLUME_COUNTS: &str =
    "CASE WHEN {r}status = 'creating' OR {r}create_failed = 1 THEN 0 ELSE 1 END";
const VOLUME_GIB: &str =
    "CASE WHEN {r}status = 'creating' OR {r}create_failed = 1 THEN 0 ELSE {r}size_gib END";
const VOLUME_RESERVED: &str = "CASE WHEN {r}status = 'creating' THEN 1 ELSE 0 END";
/// A volume being created reserves its size; one being extended, its growth.
const VOLUME_RESERVED_GIB: &str = "CASE WHEN {r}status = 'creating' THEN {r}size_gib \
     WHEN {r}status = 'extending' AND {r}extend_to > {r}size_gib THEN {r}extend_to - {r}size_gib \
     ELSE 0 END";
/// A snapshot that counts: not being created, and not a failed create.
const SNAPSHOT_COUNTS: &str =
    "CASE WHEN {r}status = 'creating' OR {r}create_failed = 1 THEN 0 ELSE 1 END";
const SNAPSHOT_GIB: &str =
    "CASE WHEN {r}status = 'creating' OR {r}create_failed = 1 THEN 0 ELSE {r}size_gib END";
const SNAPSHOT_RESERVED: &str = "CASE WHEN {r}status = 'creating' THEN 1 ELSE 0 END";
const SNAPSHOT_RESERVED_GIB: &str = "CASE WHEN {r}status = 'creating' THEN {r}size_gib ELSE 0 END";

/// Every table whose rows hold quota, and what they hold.
const HOLDERS: &[Holder] = &[
    Holder {
        table: "volumes",
        holdings: &[
            Holding {
                resource: "'gigabytes'",
                in_use: VOLUME_GIB,
                reserved: VOLUME_RESERVED_GIB,
            },
            Holding {
                resource: "'gigabytes_' || {r}volume_type",
                in_use: VOLUME_GIB,
                reserved: VOLUME_RESERVED_GIB,
            },
            Holding {
                resource: "'volumes'",
                in_use: VOLUME_COUNTS,
                reserved: VOLUME_RESERVED,
            },
            Holding {
                resource: "'volumes_' || {r}volume_type",
                in_use: VOLUME_COUNTS,
                reserved: VOLUME_RESERVED,
            },
        ],
    },
    Holder {
        table: "snapshots",
        holdings: &[
            Holding {
                resource: "'gigabytes'",
                in_use: SNAPSHOT_GIB,
                reserved: SNAPSHOT_RESERVED_GIB,
            },
            Holding {
                resource: "'gigabytes_' || {r}volume_type",
                in_use: SNAPSHOT_GIB,
                reserved: SNAPSHOT_RESERVED_GIB,
            },
            Holding {
                resource: "'snapshots'",
                in_use: SNAPSHOT_COUNTS,
                reserved: SNAPSHOT_RESERVED,
            },
            Holding {
                resource: "'snapshots_' || {r}volume_type",
                in_use: SNAPSHOT_COUNTS,
                reserved: SNAPSHOT_RESERVED,
            },
        ],
    },
    Holder {
        table: "backups",
        holdings: &[
            Holding {
                resource: "'backup_gigabytes'",
                in_use: "CASE WHEN {r}status = 'creating' THEN 0 ELSE {r}size_gib END",
                reserved: "CASE WHEN {r}status = 'creating' THEN {r}size_gib ELSE 0 END",
            },
            Holding {
                resource: "'backups'",
                in_use: "CASE WHEN {r}status = 'creating' THEN 0 ELSE 1 END",
                reserved: "CASE WHEN {r}status = 'creating' THEN 1 ELSE 0 END",
            },
        ],
    },
    Holder {
        table: "attachments",
        holdings: &[Holding {
            resource: "'attachments'",
            in_use: "CASE WHEN {r}status IN ('attached', 'detaching', 'error_detaching') THEN 1 ELSE 0 END",
            reserved: "CASE WHEN {r}status IN ('reserved', 'attaching') THEN 1 ELSE 0 END",
        }],
    },
];

fn on(row: &str, expr: &str) -> String {
    expr.replace("{r}", row)
}

/// The upsert adding what `row` (`NEW.` or `OLD.`) holds, times `sign`.
fn shift(holder: &Holder, row: &str, sign: &str) -> String {
    let values = holder
        .holdings
        .iter()
        .map(|h| {
            format!(
                "({row}project_id, {}, {sign}({}), {sign}({}))",
                on(row, h.resource),
                on(row, h.in_use),
                on(row, h.reserved)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO quota_usages (project_id, resource, in_use, reserved) VALUES {values} \
         ON CONFLICT (project_id, resource) DO UPDATE SET \
         in_use = quota_usages.in_use + excluded.in_use, \
         reserved = quota_usages.reserved + excluded.reserved"
    )
}

/// Whether an update changes what the row holds (`distinct` is the engine's
/// null-safe inequality).
fn changed(holder: &Holder, distinct: &str) -> String {
    let mut terms = vec![format!("OLD.project_id {distinct} NEW.project_id")];
    for h in holder.holdings {
        for expr in [h.resource, h.in_use, h.reserved]
            .into_iter()
            .filter(|e| e.contains("{r}"))
        {
            terms.push(format!(
                "({}) {distinct} ({})",
                on("OLD.", expr),
                on("NEW.", expr)
            ));
        }
    }
    terms.join(" OR ")
}

/// The new `create_failed` of a volume or snapshot moving to status `$to` (a
/// placeholder): set when a create fails (`creating` -> `error`), kept while the
/// row is in error or on its way out, cleared when it is usable again (an
/// operator's reset).
pub(in crate::db) fn create_failed(to: &str) -> String {
    format!(
        "CASE WHEN status = 'creating' AND {to} = 'error' THEN 1 \
         WHEN {to} IN ('error', 'deleting', 'error_deleting') THEN create_failed ELSE 0 END"
    )
}

/// The statements that create the triggers on `engine`, in order.
pub(in crate::db) fn triggers(engine: Engine) -> Vec<String> {
    let mut statements = Vec::new();
    for holder in HOLDERS {
        let table = holder.table;
        let add = shift(holder, "NEW.", "");
        let remove = shift(holder, "OLD.", "-");
        match engine {
            Engine::Sqlite => {
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_insert AFTER INSERT ON {table} BEGIN {add}; END"
                ));
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_update AFTER UPDATE ON {table} WHEN {} \
                     BEGIN {remove}; {add}; END",
                    changed(holder, "IS NOT")
                ));
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_delete AFTER DELETE ON {table} BEGIN {remove}; END"
                ));
            }
            Engine::Postgres => {
                statements.push(format!(
                    "CREATE OR REPLACE FUNCTION quota_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN \
                     IF TG_OP = 'UPDATE' OR TG_OP = 'DELETE' THEN {remove}; END IF; \
                     IF TG_OP = 'UPDATE' OR TG_OP = 'INSERT' THEN {add}; END IF; \
                     RETURN NULL; \
                     END $$"
                ));
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_insert AFTER INSERT ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION quota_{table}()"
                ));
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_update AFTER UPDATE ON {table} \
                     FOR EACH ROW WHEN ({}) EXECUTE FUNCTION quota_{table}()",
                    changed(holder, "IS DISTINCT FROM")
                ));
                statements.push(format!(
                    "CREATE TRIGGER quota_{table}_delete AFTER DELETE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION quota_{table}()"
                ));
            }
        }
    }
    statements
}

/// The statements that drop the triggers [`triggers`] creates, where they exist.
pub(in crate::db) fn drop_triggers(engine: Engine) -> Vec<String> {
    let mut statements = Vec::new();
    for holder in HOLDERS {
        let table = holder.table;
        for op in ["insert", "update", "delete"] {
            statements.push(match engine {
                Engine::Sqlite => format!("DROP TRIGGER IF EXISTS quota_{table}_{op}"),
                Engine::Postgres => {
                    format!("DROP TRIGGER IF EXISTS quota_{table}_{op} ON {table}")
                }
            });
        }
    }
    statements
}

/// A query of what the rows hold, per `(project_id, resource)`, with columns
/// `project_id`, `resource`, `in_use`, `reserved`; `filter` is a condition on
/// the rows' `project_id` (`project_id = $1`, or `1 = 1`).
pub(in crate::db) fn recount(filter: &str) -> String {
    let parts = HOLDERS
        .iter()
        .flat_map(|holder| {
            holder.holdings.iter().map(move |h| {
                format!(
                    "SELECT project_id, {} AS resource, {} AS in_use, {} AS reserved FROM {} WHERE {filter}",
                    on("", h.resource),
                    on("", h.in_use),
                    on("", h.reserved),
                    holder.table
                )
            })
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "SELECT project_id, resource, CAST(SUM(in_use) AS BIGINT) AS in_use, \
         CAST(SUM(reserved) AS BIGINT) AS reserved FROM ({parts}) AS held \
         GROUP BY project_id, resource"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_holder_takes_usage_rows_in_one_order() {
        for holder in HOLDERS {
            let names: Vec<&str> = holder.holdings.iter().map(|h| h.resource).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "{}", holder.table);
        }
    }

    #[test]
    fn the_generated_sql_names_every_row_side() {
        for statement in triggers(Engine::Sqlite) {
            assert!(!statement.contains("{r}"), "{statement}");
        }
        let update = &triggers(Engine::Postgres)[2];
        assert!(
            update.contains("END) IS DISTINCT FROM (CASE WHEN NEW.status"),
            "{update}"
        );
        assert!(!update.contains("('volumes') IS DISTINCT"), "{update}");
        assert!(!recount("1 = 1").contains("NEW."));
    }
}
