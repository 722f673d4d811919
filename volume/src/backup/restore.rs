//! [`BackupEngine::restore`]: writes a backup's bytes into a raw image,
//! checking every chunk's digest before it is written.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::{StreamExt, stream};
use nix::fcntl::{FallocateFlags, fallocate};

use super::{
    chunk,
    engine::{BackupEngine, RestoreStats},
    error::{BackupError, Result, blocking, io},
    manifest::Manifest,
};

/// How many zero bytes are written at once where holes cannot be punched.
const ZERO_WRITE_BYTES: usize = 1 << 20;

/// Whether the destination may hold old bytes where the backup has zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// It may: zero chunks and the tail past the backup are zeroed.
    Existing,
    /// A new sparse file: it reads zeros already.
    Fresh,
}

/// The file being written and its path, for errors.
struct Open {
    file: Arc<File>,
    path: PathBuf,
}

impl BackupEngine {
    /// Writes backup `backup_id`'s bytes into the raw image at `dest`, which
    /// must be at least the backup's size (bytes past it become zero); every
    /// chunk's SHA-256 is checked before it is written, and a mismatch or a
    /// missing chunk fails the restore with [`BackupError::Corrupt`] or
    /// [`BackupError::MissingChunk`] naming the chunk.
    pub async fn restore(&self, backup_id: &str, dest: &Path) -> Result<RestoreStats> {
        let manifest = self.manifest(backup_id).await?;
        self.restore_into(manifest, dest, Dest::Existing).await
    }

    /// Writes `manifest`'s backup into `dest` (see [`Self::restore`]).
    #[tracing::instrument(name = "backup.restore", skip_all, err, fields(backup_id = %manifest.backup_id, dest = %dest.display(), target = %self.target.describe()))]
    pub(crate) async fn restore_into(
        &self,
        manifest: Manifest,
        dest: &Path,
        kind: Dest,
    ) -> Result<RestoreStats> {
        let manifest = Arc::new(manifest);
        let backup_id = manifest.backup_id.as_str();
        let path = dest.to_owned();
        let (file, dest_bytes) = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("open", &path))?;
            let len = file.metadata().map_err(io("stat", &path))?.len();
            Ok((Arc::new(file), len))
        })
        .await?;
        if dest_bytes < manifest.size_bytes {
            return Err(BackupError::DestTooSmall {
                path: dest.to_owned(),
                dest_bytes,
                backup_id: backup_id.to_owned(),
                backup_bytes: manifest.size_bytes,
            });
        }
        let open = Open {
            file,
            path: dest.to_owned(),
        };
        let mut stats = RestoreStats {
            size_bytes: manifest.size_bytes,
            chunks: manifest.chunks.len() as u64,
            ..RestoreStats::default()
        };
        let mut chunks = stream::iter(0..stats.chunks)
            .map(|index| self.restore_chunk(&manifest, &open, index, kind))
            .buffer_unordered(self.concurrency);
        while let Some(done) = chunks.next().await {
            match done? {
                None => stats.zero_chunks += 1,
                Some((fetched, written)) => {
                    stats.fetched_bytes += fetched;
                    stats.written_bytes += written;
                }
            }
        }
        drop(chunks);
        let (file, path) = (open.file.clone(), open.path.clone());
        let tail = manifest.size_bytes;
        blocking(move || {
            if kind == Dest::Existing && dest_bytes > tail {
                zero_range(&file, &path, tail, dest_bytes - tail)?;
            }
            file.sync_all().map_err(io("sync", &path))
        })
        .await?;
        tracing::info!(?stats, "backup restored");
        Ok(stats)
    }

    /// Restores chunk `index`: None if it is a zero chunk, else the bytes
    /// fetched and written.
    async fn restore_chunk(
        &self,
        manifest: &Arc<Manifest>,
        open: &Open,
        index: u64,
        kind: Dest,
    ) -> Result<Option<(u64, u64)>> {
        let (offset, len) = manifest.chunk_range(index);
        let (file, path) = (open.file.clone(), open.path.clone());
        let Some(digest) = manifest.chunks[index as usize].clone() else {
            if kind == Dest::Existing {
                blocking(move || zero_range(&file, &path, offset, len as u64)).await?;
            }
            return Ok(None);
        };
        let compressed =
            self.target
                .get_chunk(&digest)
                .await?
                .ok_or_else(|| BackupError::MissingChunk {
                    backup_id: manifest.backup_id.clone(),
                    chunk_index: index,
                    digest: digest.clone(),
                })?;
        let fetched = compressed.len() as u64;
        let backup_id = manifest.backup_id.clone();
        blocking(move || {
            let corrupt = |reason: String| BackupError::Corrupt {
                backup_id: backup_id.clone(),
                chunk_index: index,
                digest: digest.clone(),
                reason,
            };
            let data = chunk::decompress(&compressed, len)
                .map_err(|e| corrupt(format!("it does not decompress: {e}")))?;
            if data.len() != len {
                return Err(corrupt(format!("{} bytes, not {len}", data.len())));
            }
            let actual = chunk::digest(&data);
            if actual != digest {
                return Err(corrupt(format!("its bytes hash to {actual}")));
            }
            file.write_all_at(&data, offset)
                .map_err(io("write", &path))?;
            Ok(Some((fetched, len as u64)))
        })
        .await
    }
}

/// Makes `len` bytes at `offset` of `file` read as zeros: a hole punched where
/// the filesystem can, zeros written where it cannot.
fn zero_range(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    let (Ok(at), Ok(count)) = (i64::try_from(offset), i64::try_from(len)) else {
        return write_zeros(file, path, offset, len);
    };
    match fallocate(file, flags, at, count) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => {
            write_zeros(file, path, offset, len)
        }
        Err(e) => Err(io("punch a hole in", path)(std::io::Error::from(e))),
    }
}

fn write_zeros(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_WRITE_BYTES.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = zeros.len().min((len - done) as usize);
        file.write_all_at(&zeros[..n], offset + done)
            .map_err(io("write zeros into", path))?;
        done += n as u64;
    }
    Ok(())
}
