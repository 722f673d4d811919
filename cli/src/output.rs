//! What a command prints, in the format asked for (`-f table|json|yaml|value`)
//! with the columns asked for (`-c`): one resource as field/value pairs, or a
//! list as rows of columns. `json` and `yaml` keep the values' types (numbers,
//! maps) and are stable for scripts; `table` fits the terminal's width.

use std::fmt::Write as _;

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Map, Value};

use crate::error::CliError;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table (a field/value one for a single resource).
    Table,
    /// JSON: an object, or an array of objects.
    Json,
    /// YAML, as the JSON.
    Yaml,
    /// The bare values: one per line for a resource, a row per line for a list.
    Value,
}

/// Named values, in order: a resource's fields, or one row of a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(Vec<(&'static str, Value)>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `name` = `value` added.
    pub fn with(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.0.push((name, value.into()));
        self
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(n, _)| *n).collect()
    }
}

/// What a command shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// One resource.
    One(Record),
    /// A list: each row has the same names (the columns).
    Many {
        /// The column names (also when there are no rows).
        columns: Vec<&'static str>,
        /// The rows.
        rows: Vec<Record>,
    },
    /// Nothing (a delete, say).
    Nothing,
}

/// Renders `shown` as `format` with only `columns` (all when empty; matched
/// without regard to case). An unknown column is a usage error naming the
/// known ones.
pub fn render(shown: &Shown, format: Format, columns: &[String]) -> Result<String, CliError> {
    let (names, rows, single) = match shown {
        Shown::Nothing => return Ok(String::new()),
        Shown::One(record) => (record.names(), std::slice::from_ref(record), true),
        Shown::Many { columns, rows } => (columns.clone(), rows.as_slice(), false),
    };
    let chosen = choose(&names, columns)?;
    let pick = |record: &Record| -> Vec<(&'static str, Value)> {
        chosen
            .iter()
            .map(|name| (*name, record.get(name).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    let mut out = String::new();
    match format {
        Format::Json | Format::Yaml => {
            let object = |record: &Record| -> Value {
                Value::Object(
                    pick(record)
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            };
            let value = if single {
                object(&rows[0])
            } else {
                Value::Array(rows.iter().map(object).collect())
            };
            out = match format {
                Format::Json => {
                    serde_json::to_string_pretty(&value)
                        .map_err(|e| CliError::Internal(e.to_string()))?
                        + "\n"
                }
                _ => {
                    yaml_serde::to_string(&value).map_err(|e| CliError::Internal(e.to_string()))?
                }
            };
        }
        Format::Value => {
            if single {
                for (_, value) in pick(&rows[0]) {
                    let _ = writeln!(out, "{}", cell(&value));
                }
            } else {
                for row in rows {
                    let cells: Vec<String> = pick(row).iter().map(|(_, v)| cell(v)).collect();
                    let _ = writeln!(out, "{}", cells.join(" "));
                }
            }
        }
        Format::Table => {
            let mut table = Table::new();
            table
                .load_preset(presets::ASCII_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic);
            if single {
                table.set_header(["Field", "Value"]);
                for (name, value) in pick(&rows[0]) {
                    table.add_row([name.to_owned(), cell(&value)]);
                }
            } else {
                table.set_header(chosen.clone());
                for row in rows {
                    table.add_row(pick(row).iter().map(|(_, v)| cell(v)));
                }
            }
            let _ = writeln!(out, "{table}");
        }
    }
    Ok(out)
}

/// The columns of `names` that `wanted` asks for, in `wanted`'s order.
fn choose(names: &[&'static str], wanted: &[String]) -> Result<Vec<&'static str>, CliError> {
    if wanted.is_empty() {
        return Ok(names.to_vec());
    }
    wanted
        .iter()
        .map(|w| {
            names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(w))
                .copied()
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no column {w:?} here: the columns are {}",
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// A value as one table cell or `value` line: maps as `k='v', ...` (as
/// openstack prints properties), lists comma-separated, null as nothing.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}='{}'", cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn volume() -> Record {
        Record::new()
            .with("id", "v1")
            .with("size", 2)
            .with("properties", json!({"a": "1", "b": "2"}))
    }

    #[test]
    fn one_resource_in_every_format() {
        let one = Shown::One(volume());
        let json: Value =
            serde_json::from_str(&render(&one, Format::Json, &[]).expect("json")).expect("parse");
        assert_eq!(
            json,
            json!({"id": "v1", "size": 2, "properties": {"a": "1", "b": "2"}})
        );
        let yaml = render(&one, Format::Yaml, &[]).expect("yaml");
        assert!(
            yaml.contains("id: v1") && yaml.contains("size: 2"),
            "{yaml}"
        );
        assert_eq!(
            render(&one, Format::Value, &["SIZE".into()]).expect("value"),
            "2\n"
        );
        let table = render(&one, Format::Table, &[]).expect("table");
        assert!(table.contains("| properties | a='1', b='2' |"), "{table}");
    }

    #[test]
    fn lists_keep_their_columns_and_refuse_unknown_ones() {
        let many = Shown::Many {
            columns: vec!["id", "size"],
            rows: vec![volume(), volume().with("id", "ignored")],
        };
        assert_eq!(
            render(&many, Format::Value, &["size".into(), "id".into()]).expect("value"),
            "2 v1\n2 v1\n"
        );
        let json: Value =
            serde_json::from_str(&render(&many, Format::Json, &[]).expect("json")).expect("parse");
        assert_eq!(
            json,
            json!([{"id": "v1", "size": 2}, {"id": "v1", "size": 2}])
        );
        let empty = Shown::Many {
            columns: vec!["id"],
            rows: vec![],
        };
        assert_eq!(render(&empty, Format::Json, &[]).expect("json"), "[]\n");
        let err = render(&many, Format::Table, &["nope".into()]).expect_err("unknown");
        assert!(err.to_string().contains("id, size"), "{err}");
    }
}
