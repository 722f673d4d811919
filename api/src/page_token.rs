//! Opaque page tokens of list calls: keyset paging on `(created_at, id)`.
//!
//! A token is the base64url (no padding) of a small protobuf message holding the
//! last row's `(created_at_ms, id)`, the project it was issued to, a digest of the
//! list's filters and a checksum of all of that. A token issued to another project,
//! for other filters, or mangled in transit is refused as an invalid `page_token`.
//! The checksum catches corruption, not forgery: a forged token can only move the
//! caller's own cursor, which it could do anyway.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// The field a bad token is reported against.
pub(crate) const FIELD: &str = "page_token";
/// The format version written into every token.
const VERSION: u32 = 1;

/// Where the next page starts, and for which list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// `created_at` of the last row returned, ms since the epoch.
    pub created_at_ms: i64,
    /// `id` of the last row returned.
    pub id: String,
}

/// The wire form of a token.
#[derive(Clone, PartialEq, Message)]
struct Wire {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(int64, tag = "2")]
    created_at_ms: i64,
    #[prost(string, tag = "3")]
    id: String,
    #[prost(string, tag = "4")]
    project_id: String,
    #[prost(bytes = "vec", tag = "5")]
    filter_digest: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    checksum: Vec<u8>,
}

impl Wire {
    fn checksum(&self) -> Vec<u8> {
        let unsigned = Wire {
            checksum: Vec::new(),
            ..self.clone()
        };
        Sha256::digest(unsigned.encode_to_vec())[..8].to_vec()
    }
}

/// Trims `rows`, fetched with `limit + 1` to learn whether more exist, to `limit`
/// and returns the token of the next page: empty on the last page.
pub fn finish_page<T>(
    rows: &mut Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (i64, String),
    project_id: &str,
    filter_digest: &[u8],
) -> String {
    if rows.len() <= limit as usize {
        return String::new();
    }
    rows.truncate(limit as usize);
    rows.last()
        .map(|last| {
            let (created_at_ms, id) = key(last);
            PageToken { created_at_ms, id }.encode(project_id, filter_digest)
        })
        .unwrap_or_default()
}

/// A digest of a list's filters, so a token only continues the list it came from.
/// `filters` are the filter values in a fixed order, as strings.
pub fn filter_digest(filters: &[&str]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for filter in filters {
        // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
        hasher.update((filter.len() as u64).to_be_bytes());
        hasher.update(filter.as_bytes());
    }
    hasher.finalize()[..16].to_vec()
}

impl PageToken {
    /// Encodes the token for `project_id` and the list with `filter_digest`.
    pub fn encode(&self, project_id: &str, filter_digest: &[u8]) -> String {
        let mut wire = Wire {
            version: VERSION,
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
            project_id: project_id.to_owned(),
            filter_digest: filter_digest.to_vec(),
            checksum: Vec::new(),
        };
        wire.checksum = wire.checksum();
        URL_SAFE_NO_PAD.encode(wire.encode_to_vec())
    }

    /// Decodes a token; `Ok(None)` for an empty one (the first page).
    pub fn decode(token: &str, project_id: &str, filter_digest: &[u8]) -> ApiResult<Option<Self>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = |reason: &str| ApiError::invalid(FIELD, reason.to_owned());
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad("not a page token"))?;
        let wire = Wire::decode(bytes.as_slice()).map_err(|_| bad("not a page token"))?;
        if wire.version != VERSION || wire.checksum != wire.checksum() {
            return Err(bad("not a page token"));
        }
        if wire.project_id != project_id {
            return Err(bad("the token was issued to another project"));
        }
        if wire.filter_digest != filter_digest {
            return Err(bad("the token was issued for a list with other filters"));
        }
        Ok(Some(Self {
            created_at_ms: wire.created_at_ms,
            id: wire.id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> PageToken {
        PageToken {
            created_at_ms: 1_700_000_000_123,
            id: "0b5c8f3e-7d6a-4c1e-9a53-2f1e0d9c8b7a".into(),
        }
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::InvalidField { field, .. } => field.into_owned(),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn round_trips() {
        let digest = filter_digest(&["available", "db"]);
        let encoded = token().encode("p1", &digest);
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{encoded}"
        );
        assert_eq!(
            PageToken::decode(&encoded, "p1", &digest).expect("decodes"),
            Some(token())
        );
        assert_eq!(
            PageToken::decode("", "p1", &digest).expect("first page"),
            None
        );
    }

    #[test]
    fn foreign_project_is_refused() {
        let digest = filter_digest(&[]);
        let encoded = token().encode("p1", &digest);
        assert_eq!(
            field_of(PageToken::decode(&encoded, "p2", &digest).expect_err("foreign")),
            FIELD
        );
    }

    #[test]
    fn other_filters_are_refused() {
        let encoded = token().encode("p1", &filter_digest(&["available", ""]));
        let err =
            PageToken::decode(&encoded, "p1", &filter_digest(&["error", ""])).expect_err("filters");
        assert_eq!(field_of(err), FIELD);
        // Length prefixes keep neighbouring filters apart.
        assert_ne!(filter_digest(&["a", "bc"]), filter_digest(&["ab", "c"]));
    }

    #[test]
    fn tampered_and_garbage_are_refused() {
        let digest = filter_digest(&[]);
        let encoded = token().encode("p1", &digest);
        let mut bytes = URL_SAFE_NO_PAD.decode(&encoded).expect("base64");
        // Flip a bit of the id.
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            field_of(PageToken::decode(&tampered, "p1", &digest).expect_err("tampered")),
            FIELD
        );
        for garbage in ["!!!", "aGVsbG8", "x", &encoded[..encoded.len() - 3]] {
            assert_eq!(
                field_of(PageToken::decode(garbage, "p1", &digest).expect_err(garbage)),
                FIELD
            );
        }
    }
}
