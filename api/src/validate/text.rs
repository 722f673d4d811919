//! The one place for the rules of free text in requests: names, descriptions,
//! metadata and extra specs, connector fields, filters, reasons. Every text field
//! of every request goes through one of these before it reaches the database, so
//! SQLite and PostgreSQL see (and refuse) the same things: PostgreSQL cannot
//! store a NUL byte in `TEXT`, SQLite can, and neither should be asked to.
//!
//! - A *line* (names, ids, filters, map keys and values): at most
//!   [`MAX_TEXT_CHARS`] characters, no control characters at all (Unicode `Cc`:
//!   U+0000 to U+001F, U+007F to U+009F).
//! - A *description*: at most [`MAX_DESCRIPTION_CHARS`], control characters but
//!   tab, line feed and carriage return refused.
//!
//! Lengths count characters, not bytes. A refusal names the field as the proto
//! spells it; a map entry as `metadata["key"]` (the key escaped, so a control
//! character in it shows as `\u{1}`).

use std::{borrow::Cow, collections::BTreeMap};

use crate::error::{ApiError, ApiResult};

/// The longest name, type, zone, request id, metadata key or value, connector field.
pub const MAX_TEXT_CHARS: usize = 255;
/// The longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// The control characters a description may hold.
const DESCRIPTION_CONTROLS: [char; 3] = ['\t', '\n', '\r'];

/// A one-line text field: at most [`MAX_TEXT_CHARS`] characters, no control characters.
pub fn line(field: impl Into<Cow<'static, str>>, value: &str) -> ApiResult<()> {
    checked(field.into(), value, MAX_TEXT_CHARS, &[])
}

/// A one-line text field that must hold something other than spaces.
pub fn required_line(field: impl Into<Cow<'static, str>>, value: &str) -> ApiResult<()> {
    let field = field.into();
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    line(field, value)
}

/// A description: at most [`MAX_DESCRIPTION_CHARS`] characters; tabs and line
/// breaks allowed, other control characters not.
pub fn description(field: impl Into<Cow<'static, str>>, value: &str) -> ApiResult<()> {
    checked(
        field.into(),
        value,
        MAX_DESCRIPTION_CHARS,
        &DESCRIPTION_CONTROLS,
    )
}

/// A map of text (metadata, extra specs, connector properties): at most
/// `max_entries` entries; each key 1 to [`MAX_TEXT_CHARS`] characters, each
/// value at most [`MAX_TEXT_CHARS`], neither with control characters. A bad
/// key or value is named `field["key"]`.
pub fn entries(
    field: &'static str,
    map: &BTreeMap<String, String>,
    max_entries: usize,
) -> ApiResult<()> {
    if map.len() > max_entries {
        return Err(ApiError::invalid(
            field,
            format!("must have at most {max_entries} entries, got {}", map.len()),
        ));
    }
    for (key, value) in map {
        let entry = entry_name(field, key);
        if key.is_empty() {
            return Err(ApiError::invalid(entry, "keys must not be empty"));
        }
        checked(entry.clone(), key, MAX_TEXT_CHARS, &[]).map_err(|err| match err {
            ApiError::InvalidField { field, reason } => ApiError::InvalidField {
                field,
                reason: format!("key: {reason}"),
            },
            other => other,
        })?;
        checked(entry, value, MAX_TEXT_CHARS, &[])?;
    }
    Ok(())
}

/// The name of entry `key` of map `field`: `metadata["key"]`, escaped as Rust
/// escapes a string (control characters never reach the client raw), and cut
/// to a readable length.
pub fn entry_name(field: &str, key: &str) -> Cow<'static, str> {
    let shown: String = key.chars().take(64).collect();
    let more = if shown.len() < key.len() { "…" } else { "" };
    Cow::Owned(format!("{field}[{shown:?}{more}]"))
}

/// `value` checked against `max` characters and the control characters
/// (`allowed` excepted).
fn checked(field: Cow<'static, str>, value: &str, max: usize, allowed: &[char]) -> ApiResult<()> {
    if let Some((at, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
    {
        let what = if allowed.is_empty() {
            "control characters"
        } else {
            "control characters other than tab, line feed and carriage return"
        };
        return Err(ApiError::invalid(
            field,
            format!(
                "must not contain {what}: U+{:04X} at character {}",
                u32::from(c),
                at + 1
            ),
        ));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: ApiResult<()>) -> (String, String) {
        match result.expect_err("refused") {
            ApiError::InvalidField { field, reason } => (field.into_owned(), reason),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn lines_refuse_every_control_character_and_long_values() {
        line("name", "a volume é 名前").expect("plain text");
        line("name", &"é".repeat(MAX_TEXT_CHARS)).expect("255 characters");
        for bad in [
            "a\0b",
            "tab\there",
            "new\nline",
            "\r",
            "\u{7f}",
            "\u{85}",
            "\u{1b}[31m",
        ] {
            let (field, reason) = refused(line("name", bad));
            assert_eq!(field, "name");
            assert!(reason.contains("control characters"), "{reason}");
        }
        let (_, reason) = refused(line("name", "a\0b"));
        assert!(reason.contains("U+0000 at character 2"), "{reason}");
        let (field, reason) = refused(line("name", &"x".repeat(MAX_TEXT_CHARS + 1)));
        assert_eq!(field, "name");
        assert!(
            reason.contains("at most 255 characters, got 256"),
            "{reason}"
        );
    }

    #[test]
    fn descriptions_allow_tabs_and_line_breaks_only() {
        description("description", "line one\r\n\tline two").expect("multi-line");
        let (field, reason) = refused(description("description", "bell\u{7}"));
        assert_eq!(field, "description");
        assert!(reason.contains("U+0007"), "{reason}");
        refused(description("description", "nul\0"));
        refused(description(
            "description",
            &"d".repeat(MAX_DESCRIPTION_CHARS + 1),
        ));
    }

    #[test]
    fn required_lines_refuse_blanks() {
        let (field, reason) = refused(required_line("host", "   "));
        assert_eq!(
            (field.as_str(), reason.as_str()),
            ("host", "must not be empty")
        );
        required_line("host", "node-1").expect("set");
    }

    #[test]
    fn map_entries_are_named_by_key() {
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        entries("metadata", &map("k", "v"), 8).expect("fine");
        let (field, reason) = refused(entries("metadata", &map("k", "v\0"), 8));
        assert_eq!(field, r#"metadata["k"]"#);
        assert!(reason.contains("U+0000"), "{reason}");
        let (field, reason) = refused(entries("metadata", &map("a\u{1}", "v"), 8));
        assert_eq!(field, r#"metadata["a\u{1}"]"#);
        assert!(reason.starts_with("key: "), "{reason}");
        let (field, _) = refused(entries("extra_specs", &map("", "v"), 8));
        assert_eq!(field, r#"extra_specs[""]"#);
        let long = "k".repeat(300);
        let (field, reason) = refused(entries("metadata", &map(&long, "v"), 8));
        assert_eq!(field, format!("metadata[{:?}…]", "k".repeat(64)));
        assert!(reason.contains("got 300"), "{reason}");
        let many: BTreeMap<String, String> =
            (0..9).map(|i| (i.to_string(), String::new())).collect();
        let (field, _) = refused(entries("metadata", &many, 8));
        assert_eq!(field, "metadata");
    }
}
