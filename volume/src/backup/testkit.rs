//! Test support for backups, shared by this crate's tests and the S3 tests in
//! `scoria-tests` (feature `testing`): sparse images with chunks of random
//! bytes, whole-image digests, and [`conformance`], the checks every
//! [`BackupTarget`] passes, through the engine and through the trait alone.
//!
//! The checks share one target but each has its own index and its own data
//! (a seed per check), so they assert on digests, never on the target's
//! whole listing.

use std::{
    collections::BTreeSet,
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;

use super::{BackupEngine, BackupError, BackupTarget, MemoryIndex, chunk, digest};

/// The chunk size the tests cut images into: 64 KiB (small images, many chunks).
pub const TEST_CHUNK: u64 = 64 << 10;

/// A sparse file of `size` bytes at `path` (reads zeros).
pub fn sparse_image(path: &Path, size: u64) {
    let file = std::fs::File::create(path).expect("create image");
    file.set_len(size).expect("size image");
}

/// Writes random bytes (from `seed`) over chunks `indices` of the image at
/// `path`, cut in chunks of `chunk_bytes`; the last chunk may be short.
pub fn write_chunks(
    path: &Path,
    chunk_bytes: u64,
    indices: impl IntoIterator<Item = u64>,
    seed: u64,
) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    let size = file.metadata().expect("stat").len();
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    for index in indices {
        let offset = index * chunk_bytes;
        assert!(offset < size, "chunk {index} is past the image");
        let len = chunk_bytes.min(size - offset) as usize;
        let data: Vec<u8> = (0..len.div_ceil(8))
            .flat_map(|_| splitmix(&mut state).to_le_bytes())
            .take(len)
            .collect();
        file.write_all_at(&data, offset).expect("write chunk");
    }
}

/// The next number of a splitmix64 sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The SHA-256 of the whole file at `path`, and its length.
pub fn file_sha256(path: &Path) -> (String, u64) {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    (format!("{:x}", hasher.finalize()), len)
}

/// A scratch dir, an index and an engine over a target.
pub struct Fixture {
    /// Images and scratch files live here.
    pub dir: tempfile::TempDir,
    /// The engine's index.
    pub index: Arc<MemoryIndex>,
    /// The engine, cutting [`TEST_CHUNK`] chunks.
    pub engine: BackupEngine,
}

impl Fixture {
    /// An engine over `target` with a new index and scratch dir.
    pub fn new(target: Arc<dyn BackupTarget>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Arc::new(MemoryIndex::new());
        let engine = BackupEngine::new(target, index.clone(), dir.path().join("scratch"))
            .with_chunk_bytes(TEST_CHUNK);
        Self { dir, index, engine }
    }

    /// A path in the fixture's dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A sparse image `name` of `chunks` test chunks plus `extra` bytes, with
    /// chunks `filled` holding random bytes from `seed`.
    pub fn image(&self, name: &str, chunks: u64, extra: u64, filled: &[u64], seed: u64) -> PathBuf {
        let path = self.path(name);
        sparse_image(&path, chunks * TEST_CHUNK + extra);
        write_chunks(&path, TEST_CHUNK, filled.iter().copied(), seed);
        path
    }
}

/// A backup id unique to this run.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs every check below against `target`.
pub async fn conformance(target: Arc<dyn BackupTarget>) {
    objects(target.clone()).await;
    round_trip(target.clone()).await;
    incremental(target.clone()).await;
    shared_chunks_and_delete(target.clone()).await;
    corrupt_and_missing(target).await;
}

/// The trait alone: chunks and manifests stored, read, listed and removed,
/// each operation idempotent.
pub async fn objects(target: Arc<dyn BackupTarget>) {
    let data = Bytes::from_static(b"compressed bytes, as far as the target knows");
    let name = digest(format!("objects {}", new_id()).as_bytes());
    assert!(!target.has_chunk(&name).await.expect("has"));
    assert_eq!(target.get_chunk(&name).await.expect("get"), None);
    target.put_chunk(&name, data.clone()).await.expect("put");
    target
        .put_chunk(&name, data.clone())
        .await
        .expect("put again");
    assert!(target.has_chunk(&name).await.expect("has"));
    assert_eq!(target.get_chunk(&name).await.expect("get"), Some(data));
    assert!(target.list_chunks().await.expect("list").contains(&name));
    target.delete_chunk(&name).await.expect("delete");
    target.delete_chunk(&name).await.expect("delete again");
    assert!(!target.has_chunk(&name).await.expect("has"));
    assert!(!target.list_chunks().await.expect("list").contains(&name));
    for bad in ["../../escape", "ABC"] {
        let err = target.put_chunk(bad, Bytes::new()).await.expect_err(bad);
        assert!(matches!(err, BackupError::InvalidId { .. }), "{err}");
    }

    let id = new_id();
    assert_eq!(target.get_manifest(&id).await.expect("get"), None);
    let fx = Fixture::new(target.clone());
    let image = fx.image("m", 3, 0, &[1], 1);
    fx.engine
        .backup(&id, "vol", &image, None)
        .await
        .expect("backup");
    let manifest = target
        .get_manifest(&id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (manifest.backup_id.as_str(), manifest.chunks.len()),
        (id.as_str(), 3)
    );
    target.delete_manifest(&id).await.expect("delete");
    target.delete_manifest(&id).await.expect("delete again");
    assert_eq!(target.get_manifest(&id).await.expect("get"), None);
    assert!(target.get_manifest("../x").await.is_err());
}

/// Backup and restore reproduce the image exactly; zero chunks are not
/// stored; a restore zeroes the old bytes of its destination and a larger
/// destination's tail.
pub async fn round_trip(target: Arc<dyn BackupTarget>) {
    let fx = Fixture::new(target.clone());
    // 20 chunks and a short last one; 4 hold data.
    let filled = [0, 3, 7, 20];
    let image = fx.image("source", 20, 1000, &filled, 2);
    let id = new_id();
    let stats = fx
        .engine
        .backup(&id, "vol-a", &image, None)
        .await
        .expect("backup");
    assert_eq!(stats.size_bytes, 20 * TEST_CHUNK + 1000);
    assert_eq!((stats.chunks, stats.zero_chunks), (21, 17));
    assert_eq!((stats.written_chunks, stats.unchanged_chunks), (4, 0));
    assert!(
        stats.stored_bytes > 3 * TEST_CHUNK,
        "random bytes do not compress: {stats:?}"
    );
    let manifest = fx.engine.manifest(&id).await.expect("manifest");
    assert_eq!(manifest.digests().len(), 4);
    let stored: BTreeSet<String> = target
        .list_chunks()
        .await
        .expect("list")
        .into_iter()
        .collect();
    for digest in manifest.digests() {
        assert!(stored.contains(digest), "chunk {digest} not stored");
    }
    // A zero chunk is not stored, not even as an object of zeros.
    let zeros = digest(&vec![0u8; TEST_CHUNK as usize]);
    assert!(
        !target.has_chunk(&zeros).await.expect("has"),
        "a zero chunk was stored"
    );

    // Into a fresh sparse file of the same size.
    let fresh = fx.path("fresh");
    sparse_image(&fresh, stats.size_bytes);
    let restored = fx.engine.restore(&id, &fresh).await.expect("restore");
    assert_eq!((restored.chunks, restored.zero_chunks), (21, 17));
    assert_eq!(file_sha256(&fresh), file_sha256(&image));

    // Into a larger destination full of other bytes: everything is overwritten,
    // the zero chunks and the tail read zeros.
    let old = fx.path("old");
    sparse_image(&old, stats.size_bytes + 5 * TEST_CHUNK);
    write_chunks(&old, TEST_CHUNK, 0..26, 99);
    fx.engine
        .restore(&id, &old)
        .await
        .expect("restore over old data");
    let expected = fx.path("expected");
    sparse_image(&expected, stats.size_bytes + 5 * TEST_CHUNK);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&expected)
        .expect("open")
        .write_all_at(&std::fs::read(&image).expect("read"), 0)
        .expect("write");
    assert_eq!(file_sha256(&old), file_sha256(&expected));

    // A smaller destination is refused, untouched.
    let small = fx.path("small");
    sparse_image(&small, TEST_CHUNK);
    let err = fx.engine.restore(&id, &small).await.expect_err("too small");
    assert!(matches!(err, BackupError::DestTooSmall { .. }), "{err}");
    assert_eq!(file_sha256(&small).1, TEST_CHUNK);

    let err = fx
        .engine
        .restore(&new_id(), &fresh)
        .await
        .expect_err("no such backup");
    assert!(matches!(err, BackupError::ManifestMissing { .. }), "{err}");
}

/// An incremental backup after 10% of the chunks changed writes only those
/// chunks, and both backups restore to their own bytes.
pub async fn incremental(target: Arc<dyn BackupTarget>) {
    let fx = Fixture::new(target);
    let image = fx.image("volume", 100, 0, &(0..30).collect::<Vec<_>>(), 3);
    let (full_id, incr_id) = (new_id(), new_id());
    let full = fx
        .engine
        .backup(&full_id, "vol", &image, None)
        .await
        .expect("full");
    assert_eq!((full.written_chunks, full.zero_chunks), (30, 70));
    let first = file_sha256(&image);
    // 10 chunks change: 5 of the 30 with data, 5 that were zero.
    let changed = [2, 9, 14, 21, 28, 40, 50, 60, 70, 99];
    write_chunks(&image, TEST_CHUNK, changed, 4);
    let parent = fx.engine.manifest(&full_id).await.expect("parent");
    let incr = fx
        .engine
        .backup(&incr_id, "vol", &image, Some(&parent))
        .await
        .expect("incremental");
    assert_eq!(incr.written_chunks, 10, "{incr:?}");
    assert_eq!(
        (incr.unchanged_chunks, incr.zero_chunks),
        (25, 65),
        "{incr:?}"
    );
    assert!(
        incr.stored_bytes >= 10 * TEST_CHUNK && incr.stored_bytes < full.stored_bytes / 2,
        "{incr:?} vs {full:?}"
    );
    let manifest = fx.engine.manifest(&incr_id).await.expect("manifest");
    assert_eq!(manifest.parent_id.as_deref(), Some(full_id.as_str()));
    assert_eq!(manifest.chunks.len(), 100, "the full chunk map");
    // Unchanged: nothing written again.
    let again = fx
        .engine
        .backup(&new_id(), "vol", &image, Some(&manifest))
        .await
        .expect("again");
    assert_eq!(
        (
            again.written_chunks,
            again.stored_bytes,
            again.unchanged_chunks
        ),
        (0, 0, 35)
    );

    for (id, expected) in [(&full_id, first), (&incr_id, file_sha256(&image))] {
        let dest = fx.path(&format!("restore-{id}"));
        sparse_image(&dest, 100 * TEST_CHUNK);
        fx.engine.restore(id, &dest).await.expect("restore");
        assert_eq!(file_sha256(&dest), expected, "backup {id}");
    }
}

/// Two volumes with the same bytes share their chunks; deleting one backup
/// keeps the chunks the other references, deleting both removes them, and a
/// delete again does nothing.
pub async fn shared_chunks_and_delete(target: Arc<dyn BackupTarget>) {
    let fx = Fixture::new(target.clone());
    let a = fx.image("a", 10, 0, &[0, 1, 2, 3], 5);
    let b = fx.path("b");
    std::fs::copy(&a, &b).expect("copy");
    write_chunks(&b, TEST_CHUNK, [4, 5], 6);
    let (id_a, id_b) = (new_id(), new_id());
    let first = fx.engine.backup(&id_a, "vol-a", &a, None).await.expect("a");
    let second = fx.engine.backup(&id_b, "vol-b", &b, None).await.expect("b");
    assert_eq!(first.written_chunks, 4);
    assert_eq!(second.written_chunks, 2, "chunks 0-3 are a's: {second:?}");
    let manifest_a = fx.engine.manifest(&id_a).await.expect("a");
    let manifest_b = fx.engine.manifest(&id_b).await.expect("b");
    let only_b: Vec<&str> = manifest_b
        .digests()
        .difference(&manifest_a.digests())
        .copied()
        .collect();
    assert_eq!(only_b.len(), 2);

    let deleted = fx.engine.delete(&id_b).await.expect("delete b");
    assert_eq!(deleted.deleted_chunks, 2);
    for digest in &only_b {
        assert!(
            !target.has_chunk(digest).await.expect("has"),
            "b's own chunk {digest} kept"
        );
    }
    for digest in manifest_a.digests() {
        assert!(
            target.has_chunk(digest).await.expect("has"),
            "a's chunk {digest} deleted"
        );
    }
    assert_eq!(target.get_manifest(&id_b).await.expect("get"), None);
    let dest = fx.path("restore-a");
    sparse_image(&dest, 10 * TEST_CHUNK);
    fx.engine
        .restore(&id_a, &dest)
        .await
        .expect("a still restores");
    assert_eq!(file_sha256(&dest), file_sha256(&a));

    assert_eq!(
        fx.engine.delete(&id_b).await.expect("again").deleted_chunks,
        0
    );
    assert_eq!(
        fx.engine
            .delete(&id_a)
            .await
            .expect("delete a")
            .deleted_chunks,
        4
    );
    for digest in manifest_a.digests() {
        assert!(
            !target.has_chunk(digest).await.expect("has"),
            "chunk {digest} kept"
        );
    }
    assert_eq!(fx.index.referenced(), 0);
    let err = fx.engine.restore(&id_a, &dest).await.expect_err("deleted");
    assert!(matches!(err, BackupError::ManifestMissing { .. }), "{err}");
}

/// A chunk whose object changed fails the restore with `Corrupt` naming it; a
/// chunk gone fails it with `MissingChunk`.
pub async fn corrupt_and_missing(target: Arc<dyn BackupTarget>) {
    let fx = Fixture::new(target.clone());
    let image = fx.image("image", 8, 0, &[1, 2, 5], 7);
    let id = new_id();
    fx.engine
        .backup(&id, "vol", &image, None)
        .await
        .expect("backup");
    let manifest = fx.engine.manifest(&id).await.expect("manifest");
    let dest = fx.path("dest");
    sparse_image(&dest, 8 * TEST_CHUNK);

    // Chunk 2, one byte flipped in the middle of its object.
    let digest2 = manifest.chunks[2].clone().expect("chunk 2 has data");
    let object = target
        .get_chunk(&digest2)
        .await
        .expect("get")
        .expect("stored");
    let mut flipped = object.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    target.delete_chunk(&digest2).await.expect("delete");
    target
        .put_chunk(&digest2, Bytes::from(flipped))
        .await
        .expect("put flipped");
    let err = fx.engine.restore(&id, &dest).await.expect_err("corrupt");
    match &err {
        BackupError::Corrupt {
            chunk_index,
            digest,
            ..
        } => {
            assert_eq!(
                (*chunk_index, digest.as_str()),
                (2, digest2.as_str()),
                "{err}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains(&digest2), "{err}");

    // The same chunk's object holding another chunk's bytes.
    let other = chunk::compress(&vec![1u8; TEST_CHUNK as usize]).expect("compress");
    target.delete_chunk(&digest2).await.expect("delete");
    target
        .put_chunk(&digest2, Bytes::from(other))
        .await
        .expect("put other");
    let err = fx
        .engine
        .restore(&id, &dest)
        .await
        .expect_err("wrong bytes");
    assert!(
        matches!(err, BackupError::Corrupt { chunk_index: 2, .. }),
        "{err}"
    );

    target.delete_chunk(&digest2).await.expect("delete");
    let err = fx.engine.restore(&id, &dest).await.expect_err("missing");
    match &err {
        BackupError::MissingChunk {
            chunk_index,
            digest,
            ..
        } => {
            assert_eq!(
                (*chunk_index, digest.as_str()),
                (2, digest2.as_str()),
                "{err}"
            );
        }
        other => panic!("expected MissingChunk, got {other}"),
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
pub struct Tmpfs {
    _dir: Option<tempfile::TempDir>,
    /// Where it is mounted.
    pub mount: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `size` (`8m`) on a fresh directory; needs root.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("mnt");
        let mut fs = Self::mount_at(&mount, size);
        fs._dir = Some(dir);
        fs
    }

    /// A tmpfs of `size` mounted on `mount` (created if missing); needs root.
    pub fn mount_at(mount: &std::path::Path, size: &str) -> Self {
        let mount = mount.to_owned();
        std::fs::create_dir_all(&mount).expect("mount point");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a tmpfs: run it as root ({})",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { _dir: None, mount }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.mount)
            .status();
    }
}
