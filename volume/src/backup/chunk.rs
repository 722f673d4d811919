//! One chunk's bytes: its name (the SHA-256 of the uncompressed bytes, lower-case
//! hex), whether it is all zero, and its zstd form.

use sha2::{Digest, Sha256};

use super::error::{BackupError, Result};

/// The zstd level chunks are compressed with: zstd's default, fast enough that
/// hashing and reading stay the bound.
const ZSTD_LEVEL: i32 = 3;

/// The lower-case hex SHA-256 of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for byte in hash {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether `data` is all zero bytes. Word by word, a block at a time, so the
/// compiler vectorises it; it stops at the first block holding data.
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096).all(|block| {
        let mut words = block.chunks_exact(8);
        let acc = words.by_ref().fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
        });
        acc == 0 && words.remainder().iter().all(|b| *b == 0)
    })
}

/// Checks `digest` is a chunk name: 64 lower-case hex digits (so it is also a
/// safe object key and file name).
pub fn check_digest(digest: &str) -> Result<()> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(BackupError::InvalidId {
            what: "chunk digest",
            id: digest.to_owned(),
            reason: "not 64 lower-case hex digits (a SHA-256)",
        })
    }
}

/// Checks a backup (or volume) id makes a safe object name: 1 to 128 ASCII
/// letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn check_id(what: &'static str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BackupError::InvalidId {
            what,
            id: id.to_owned(),
            reason: "use 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'",
        })
    }
}

/// `data` compressed with zstd.
pub fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(data, ZSTD_LEVEL)
}

/// The bytes of a compressed chunk, at most `capacity` of them (a chunk that
/// would decompress to more is an error, not an allocation).
pub fn decompress(compressed: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    zstd::bulk::decompress(compressed, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        check_digest(&digest(b"abc")).expect("a digest");
        for bad in ["", "../etc/passwd", &"A".repeat(64), &"a".repeat(63)] {
            assert!(check_digest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_check_finds_one_byte_anywhere() {
        let mut data = vec![0u8; 3 * 4096 + 13];
        assert!(is_zero(&data));
        for at in [0, 7, 4095, 4096, 3 * 4096 + 12] {
            data[at] = 1;
            assert!(!is_zero(&data), "byte {at}");
            data[at] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn ids_must_be_safe_names() {
        check_id("backup id", "7f1c3c36-4f7e-4a57-9a53-3c1f0b0f6e55").expect("a uuid");
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id("backup id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compression_round_trips_and_is_bounded() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let packed = compress(&data).expect("compress");
        assert!(packed.len() < data.len());
        assert_eq!(decompress(&packed, data.len()).expect("decompress"), data);
        assert!(
            decompress(&packed, data.len() - 1).is_err(),
            "over capacity"
        );
        assert!(decompress(b"not zstd", 1024).is_err());
    }
}
