//! Volume backups, the data side (Cinder's backup drivers): a volume's bytes go
//! to a repository ([`BackupTarget`]: a directory or S3-compatible storage) as
//! fixed-size chunks, each compressed with zstd and named by the SHA-256 of its
//! bytes, plus one [`Manifest`] per backup naming every chunk of the volume.
//!
//! ```text
//!  backup:  image chunk i: a hole, or read and all zero? ── yes ──▶ manifest[i] = None
//!                                    │ no
//!                                 sha256 ─▶ index.acquire(backup, digest)
//!                                    │ must write?  ── no ──▶ shared / unchanged: nothing put
//!                                    │ yes
//!                                 zstd ─▶ target.put_chunk ─▶ index.stored
//!           … a few chunks in flight; then target.put_manifest
//!
//!  restore: manifest ─▶ chunk i: None ─▶ zero the range (punch a hole)
//!                                Some(d) ─▶ get ─▶ unzstd ─▶ sha256 == d? ─▶ write
//!                                           (missing / mismatch: the restore fails)
//!
//!  delete:  delete manifest ─▶ index.release(backup) ─▶ delete each chunk no
//!           backup references ─▶ index.forget
//! ```
//!
//! A chunk is written once per repository: an incremental backup (one with a
//! parent) stores only the chunks that changed, and identical chunks of
//! different volumes are shared. The reference counts live behind
//! [`ChunkIndex`] (the service keeps them in the database; [`MemoryIndex`] is
//! for tests). A backup depends on nothing but its repository: it restores
//! onto any backend. [`image`] turns driver objects into raw bytes and back.

mod chunk;
mod engine;
mod error;
pub mod image;
mod index;
mod manifest;
mod restore;
pub mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use chunk::{check_digest, check_id, digest, is_zero};
pub use engine::{BackupEngine, BackupStats, DEFAULT_CONCURRENCY, DeleteStats, RestoreStats};
pub use error::{BackupError, Result};
pub use image::{RawImage, SCRATCH_PREFIX, raw_source, restore_into_volume, sweep_scratch};
pub use index::{ChunkIndex, MemoryIndex};
pub use manifest::{MANIFEST_VERSION, Manifest};
pub use target::{BackupTarget, DirTarget, S3Target, TargetSettings, open_target};

/// The size of a chunk: 4 MiB (the last chunk of a volume may be shorter).
pub const CHUNK_BYTES: u64 = 4 << 20;
