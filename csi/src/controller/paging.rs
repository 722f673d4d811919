//! ListVolumes / ListSnapshots paging: the plugin's starting tokens wrap
//! Scoria's page tokens (`s1.` + base64url), so a token the plugin never
//! handed out is told apart from Scoria's and refused as ABORTED, as the spec asks.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{Error, Result};

const PREFIX: &str = "s1.";
/// Scoria's largest page.
pub const MAX_PAGE: i32 = 1000;
/// How many entries a list without max_entries returns at most.
pub const MAX_ALL: usize = 100_000;

/// The CSI token of Scoria's page token `scoria` (empty stays empty: the last page).
pub fn wrap(scoria: &str) -> String {
    if scoria.is_empty() {
        String::new()
    } else {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(scoria))
    }
}

/// Scoria's page token inside the CSI `token` (empty: the first page).
pub fn unwrap(token: &str) -> Result<String> {
    if token.is_empty() {
        return Ok(String::new());
    }
    token
        .strip_prefix(PREFIX)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::BadToken(token.to_owned()))
}

/// The Scoria page size of a CSI `max_entries` (0: Scoria's largest page,
/// and the caller follows every page).
pub fn page_size(max_entries: i32) -> Result<i32> {
    match max_entries {
        n if n < 0 => Err(Error::invalid(
            "max_entries",
            format!("must not be negative, got {n}"),
        )),
        0 => Ok(MAX_PAGE),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// Scoria's refusal of a page token we wrapped (it expired, or names a
/// resource gone): ABORTED too, so the CO starts over.
pub fn refused(token: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |err| match &err {
        Error::Scoria { status, .. } if status.code() == tonic::Code::InvalidArgument => {
            Error::BadToken(token.to_owned())
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_strangers_are_refused() {
        assert_eq!(unwrap(&wrap("abc=")).ok().as_deref(), Some("abc="));
        assert_eq!(wrap(""), "");
        assert_eq!(unwrap("").ok().as_deref(), Some(""));
        for bad in ["abc", "s1.!!!", "s1."] {
            assert_eq!(
                unwrap(bad).map_err(|e| e.code()).err(),
                Some(tonic::Code::Aborted),
                "{bad}"
            );
        }
        assert_eq!(page_size(0).ok(), Some(MAX_PAGE));
        assert_eq!(page_size(5).ok(), Some(5));
        assert!(page_size(-1).is_err());
    }
}
