//! A transfer's one-time auth key: 16 random bytes from the OS (shown once, as
//! hex), kept only as a random salt and SHA-256(salt || key); a presented key
//! is compared with the kept digest in constant time.

use rand::{TryRngCore, rngs::OsRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};

/// Random bytes of a key (and of a salt).
const KEY_BYTES: usize = 16;

/// A new key and what is kept of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewKey {
    /// The key, 32 lowercase hex characters: for the giver, never stored.
    pub(crate) key: String,
    /// The salt, hex.
    pub(crate) salt: String,
    /// SHA-256 of the salt's bytes and the key's text, hex.
    pub(crate) hash: String,
}

impl NewKey {
    /// A fresh key with a fresh salt; INTERNAL if the OS has no randomness.
    pub(crate) fn generate() -> ApiResult<Self> {
        let (mut key, mut salt) = ([0u8; KEY_BYTES], [0u8; KEY_BYTES]);
        OsRng
            .try_fill_bytes(&mut key)
            .and_then(|()| OsRng.try_fill_bytes(&mut salt))
            .map_err(|err| {
                ApiError::Internal(format!("no randomness for a transfer key: {err}"))
            })?;
        let (key, salt) = (hex(&key), hex(&salt));
        let hash = digest(&salt, &key);
        Ok(Self { key, salt, hash })
    }
}

/// Whether `presented` is the key whose salted digest is `hash` (`salt` hex).
pub(crate) fn matches(salt: &str, hash: &str, presented: &str) -> bool {
    let computed = digest(salt, presented);
    computed.as_bytes().ct_eq(hash.as_bytes()).into()
}

/// SHA-256 of `salt`'s bytes (hex-decoded; a corrupt salt is taken as text)
/// and `key`'s text, as hex.
fn digest(salt: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    match unhex(salt) {
        Some(bytes) => hasher.update(&bytes),
        None => hasher.update(salt.as_bytes()),
    }
    hasher.update(key.as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_itself_and_is_never_the_stored_digest() {
        let a = NewKey::generate().expect("key");
        let b = NewKey::generate().expect("key");
        assert_eq!(a.key.len(), 32);
        assert_ne!(a.key, b.key);
        assert_ne!(a.salt, b.salt);
        assert!(matches(&a.salt, &a.hash, &a.key));
        assert!(!matches(&a.salt, &a.hash, &b.key));
        assert!(!matches(&a.salt, &a.hash, ""));
        assert!(!matches(&b.salt, &a.hash, &a.key));
        assert!(!a.hash.contains(&a.key));
        assert_eq!(unhex(&a.salt).map(|s| hex(&s)), Some(a.salt.clone()));
    }
}
