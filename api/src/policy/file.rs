//! Reads a policy file: one YAML mapping of rule names to rule strings, as
//! oslo.policy writes them (`"volume:delete": "rule:admin_api"`), keeping the
//! line of every entry so errors can name it.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// One `name: rule` entry.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) rule: String,
    pub(super) line: usize,
}

/// The entries of `text`, or the line and reason it cannot be read.
pub(super) fn entries(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut events = Parser::new_from_str(text).map(|item| {
        item.map(|(event, span)| (event, span.start.line()))
            .map_err(|e| (e.marker().line(), e.info().to_owned()))
    });
    let mut next = move || events.next().unwrap_or(Ok((Event::StreamEnd, 0)));
    let mut entries = Vec::new();
    let mut in_mapping = false;
    let mut documents = 0;
    loop {
        let (event, line) = next()?;
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => return Ok(entries),
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err((line, "a policy file holds one YAML document".into()));
                }
            }
            Event::DocumentEnd => {}
            // An empty document (only comments) sets no rule.
            Event::Scalar(ref value, ScalarStyle::Plain, ..)
                if !in_mapping && (value.is_empty() || value == "~" || value == "null") => {}
            Event::MappingStart(..) if !in_mapping => in_mapping = true,
            Event::MappingEnd if in_mapping => in_mapping = false,
            Event::Scalar(name, ..) if in_mapping => {
                let (value, value_line) = next()?;
                let rule = match value {
                    Event::Scalar(ref v, ScalarStyle::Plain, ..)
                        if v.is_empty() || v == "~" || v == "null" =>
                    {
                        return Err((
                            value_line.max(line),
                            format!(
                                "rule {name:?} has no value (write \"\" to admit everyone, \"!\" to admit no one)"
                            ),
                        ));
                    }
                    Event::Scalar(v, ..) => v.into_owned(),
                    _ => {
                        return Err((
                            value_line.max(line),
                            format!("rule {name:?} must be a string"),
                        ));
                    }
                };
                entries.push(Entry {
                    name: name.into_owned(),
                    rule,
                    line,
                });
            }
            _ if in_mapping => {
                return Err((line, "a rule name must be a string".into()));
            }
            _ => {
                return Err((
                    line.max(1),
                    "a policy file is a mapping of rule names to rules (\"volume:delete\": \"role:admin\")".into(),
                ));
            }
        }
    }
}
