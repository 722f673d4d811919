//! [`BackupEngine`]: backs a raw image up into a repository and deletes
//! backups from it (restores are in `restore.rs`).

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream};

use super::{
    CHUNK_BYTES,
    chunk::{self, check_id},
    error::{BackupError, Result, blocking, io},
    index::ChunkIndex,
    manifest::{MANIFEST_VERSION, Manifest, chunk_range},
    target::BackupTarget,
};

/// How many chunks are in flight at once by default (read, hashed, compressed,
/// sent): enough to keep the disk, a core and the network busy, a few chunk
/// buffers of memory.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Backs images up into one repository, restores them and deletes backups.
pub struct BackupEngine {
    pub(super) target: Arc<dyn BackupTarget>,
    index: Arc<dyn ChunkIndex>,
    scratch: PathBuf,
    pub(super) chunk_bytes: u64,
    pub(super) concurrency: usize,
    /// Backups share it, a delete takes it alone: a delete never frees a chunk
    /// a backup of this engine is about to reuse.
    gc: tokio::sync::RwLock<()>,
}

/// What a backup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// The image's size, in bytes.
    pub size_bytes: u64,
    /// Its chunks.
    pub chunks: u64,
    /// The chunks that are all zero (not stored).
    pub zero_chunks: u64,
    /// The chunks with the same digest as the parent's at the same index.
    pub unchanged_chunks: u64,
    /// The chunk objects actually put into the target.
    pub written_chunks: u64,
    /// The compressed bytes put into the target (chunks, not the manifest).
    pub stored_bytes: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// The backup's size, in bytes.
    pub size_bytes: u64,
    /// Its chunks.
    pub chunks: u64,
    /// The chunks that are all zero (zeroed in the destination, not fetched).
    pub zero_chunks: u64,
    /// The compressed bytes fetched from the target.
    pub fetched_bytes: u64,
    /// The bytes of data written into the destination.
    pub written_bytes: u64,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStats {
    /// The chunk objects removed (no other backup referenced them).
    pub deleted_chunks: u64,
}

/// What became of one chunk of a backup.
enum Outcome {
    Zero,
    Data {
        digest: String,
        unchanged: bool,
        /// The compressed bytes put, if this backup wrote the object.
        written: Option<u64>,
    },
}

impl BackupEngine {
    /// An engine storing into `target`, counting references in `index`,
    /// converting images in `scratch` (see [`super::image`]).
    pub fn new(
        target: Arc<dyn BackupTarget>,
        index: Arc<dyn ChunkIndex>,
        scratch: PathBuf,
    ) -> Self {
        Self {
            target,
            index,
            scratch,
            chunk_bytes: CHUNK_BYTES,
            concurrency: DEFAULT_CONCURRENCY,
            gc: tokio::sync::RwLock::new(()),
        }
    }

    /// This engine cutting new backups into chunks of `chunk_bytes` (at least
    /// 4 KiB; tests use small ones). Restores use each manifest's own size.
    pub fn with_chunk_bytes(mut self, chunk_bytes: u64) -> Self {
        self.chunk_bytes = chunk_bytes.clamp(4096, 1 << 30);
        self
    }

    /// This engine with `concurrency` chunks in flight (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The repository.
    pub fn target(&self) -> &Arc<dyn BackupTarget> {
        &self.target
    }

    /// Where images are converted to and from raw.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The manifest of `backup_id`, or [`BackupError::ManifestMissing`].
    pub async fn manifest(&self, backup_id: &str) -> Result<Manifest> {
        check_id("backup id", backup_id)?;
        self.target
            .get_manifest(backup_id)
            .await?
            .ok_or_else(|| BackupError::ManifestMissing {
                backup_id: backup_id.to_owned(),
            })
    }

    /// Reads the raw image at `source`, stores its chunks and then the
    /// manifest; `parent` is the previous backup's manifest for an incremental
    /// one (recorded as `parent_id`; its chunks are reused, not written again).
    /// Running it again for the same `backup_id` is harmless.
    #[tracing::instrument(name = "backup.backup", skip_all, err, fields(backup_id = %backup_id, volume_id = %volume_id, target = %self.target.describe()))]
    pub async fn backup(
        &self,
        backup_id: &str,
        volume_id: &str,
        source: &Path,
        parent: Option<&Manifest>,
    ) -> Result<BackupStats> {
        check_id("backup id", backup_id)?;
        check_id("volume id", volume_id)?;
        let _gc = self.gc.read().await;
        let path = source.to_owned();
        let (file, size_bytes) = blocking(move || {
            let file = File::open(&path).map_err(io("open", &path))?;
            let len = file.metadata().map_err(io("stat", &path))?.len();
            Ok((Arc::new(file), len))
        })
        .await?;
        let count = Manifest::chunk_count(size_bytes, self.chunk_bytes);
        // A parent cut differently shares no indices (its chunks still dedup).
        let parent_chunks = parent
            .filter(|p| p.chunk_bytes == self.chunk_bytes)
            .map(|p| p.chunks.as_slice())
            .unwrap_or_default();
        let mut outcomes = stream::iter(0..count)
            .map(|index| {
                let parent = parent_chunks.get(index as usize).and_then(|d| d.as_deref());
                self.backup_chunk(backup_id, &file, source, size_bytes, index, parent)
            })
            .buffered(self.concurrency);
        let mut stats = BackupStats {
            size_bytes,
            chunks: count,
            ..BackupStats::default()
        };
        let mut chunks = Vec::with_capacity(parent_chunks.len().max(count as usize));
        while let Some(outcome) = outcomes.next().await {
            match outcome? {
                Outcome::Zero => {
                    stats.zero_chunks += 1;
                    chunks.push(None);
                }
                Outcome::Data {
                    digest,
                    unchanged,
                    written,
                } => {
                    stats.unchanged_chunks += u64::from(unchanged);
                    if let Some(bytes) = written {
                        stats.written_chunks += 1;
                        stats.stored_bytes += bytes;
                    }
                    chunks.push(Some(digest));
                }
            }
        }
        drop(outcomes);
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            backup_id: backup_id.to_owned(),
            volume_id: volume_id.to_owned(),
            parent_id: parent.map(|p| p.backup_id.clone()),
            size_bytes,
            chunk_bytes: self.chunk_bytes,
            chunks,
            created_at_ms: now_ms(),
        };
        self.target.put_manifest(&manifest).await?;
        tracing::info!(?stats, "backup stored");
        Ok(stats)
    }

    /// Reads, checks and (if no backup stored it yet) stores chunk `index`.
    async fn backup_chunk(
        &self,
        backup_id: &str,
        file: &Arc<File>,
        path: &Path,
        size_bytes: u64,
        index: u64,
        parent: Option<&str>,
    ) -> Result<Outcome> {
        let (offset, len) = chunk_range(size_bytes, self.chunk_bytes, index);
        let (file, at) = (file.clone(), path.to_owned());
        let read = blocking(move || {
            if is_hole(&file, offset, len as u64) {
                return Ok(None);
            }
            let mut data = vec![0u8; len];
            file.read_exact_at(&mut data, offset)
                .map_err(io("read", &at))?;
            if chunk::is_zero(&data) {
                return Ok(None);
            }
            let digest = chunk::digest(&data);
            Ok(Some((data, digest)))
        })
        .await?;
        let Some((data, digest)) = read else {
            return Ok(Outcome::Zero);
        };
        let unchanged = parent == Some(digest.as_str());
        let mut written = None;
        if self.index.acquire(backup_id, &digest).await? {
            let at = path.to_owned();
            let compressed = blocking(move || {
                chunk::compress(&data).map_err(|source| BackupError::Compress {
                    path: at,
                    chunk_index: index,
                    source,
                })
            })
            .await?;
            let bytes = compressed.len() as u64;
            self.target
                .put_chunk(&digest, Bytes::from(compressed))
                .await?;
            self.index.stored(&digest).await?;
            written = Some(bytes);
        }
        Ok(Outcome::Data {
            digest,
            unchanged,
            written,
        })
    }

    /// Removes `backup_id`'s manifest and every chunk no other backup
    /// references; running it again (after a failure too) finishes the job.
    #[tracing::instrument(name = "backup.delete", skip_all, err, fields(backup_id = %backup_id, target = %self.target.describe()))]
    pub async fn delete(&self, backup_id: &str) -> Result<DeleteStats> {
        check_id("backup id", backup_id)?;
        let _gc = self.gc.write().await;
        // The manifest first: a backup is never restorable with chunks gone.
        self.target.delete_manifest(backup_id).await?;
        let unreferenced = self.index.release(backup_id).await?;
        let mut deletes = stream::iter(unreferenced)
            .map(|digest| async move {
                self.target.delete_chunk(&digest).await?;
                self.index.forget(&digest).await
            })
            .buffer_unordered(self.concurrency * 2);
        let mut stats = DeleteStats::default();
        while let Some(done) = deletes.next().await {
            done?;
            stats.deleted_chunks += 1;
        }
        Ok(stats)
    }
}

/// Whether `len` bytes at `offset` of `file` are a hole (no data to read: the
/// filesystem says so with `SEEK_DATA`); false when unsure.
fn is_hole(file: &File, offset: u64, len: u64) -> bool {
    let Ok(at) = i64::try_from(offset) else {
        return false;
    };
    match nix::unistd::lseek(file, at, nix::unistd::Whence::SeekData) {
        Ok(next) => u64::try_from(next).is_ok_and(|next| next >= offset + len),
        // No data at or after `offset`.
        Err(nix::errno::Errno::ENXIO) => true,
        Err(_) => false,
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
