//! The directory target: the shared checks, its layout on disk, and a chunk
//! corrupted in place.

use std::sync::Arc;

use crate::backup::{
    BackupError, BackupTarget, CHUNK_BYTES, DirTarget,
    target::dir::TEMP_PREFIX,
    testkit::{self, Fixture, file_sha256, new_id, sparse_image, write_chunks},
};

fn target() -> (tempfile::TempDir, Arc<DirTarget>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = DirTarget::open(dir.path().join("repo")).expect("open");
    (dir, Arc::new(target))
}

#[tokio::test]
async fn objects() {
    let (_dir, target) = target();
    testkit::objects(target).await;
}

#[tokio::test]
async fn round_trip() {
    let (_dir, target) = target();
    testkit::round_trip(target).await;
}

#[tokio::test]
async fn incremental() {
    let (_dir, target) = target();
    testkit::incremental(target).await;
}

#[tokio::test]
async fn shared_chunks_and_delete() {
    let (_dir, target) = target();
    testkit::shared_chunks_and_delete(target).await;
}

#[tokio::test]
async fn corrupt_and_missing() {
    let (_dir, target) = target();
    testkit::corrupt_and_missing(target).await;
}

#[tokio::test]
async fn chunks_and_manifests_are_laid_out_by_digest_and_id() {
    let (_dir, target) = target();
    let fx = Fixture::new(target.clone());
    let image = fx.image("image", 4, 0, &[1, 3], 11);
    let id = new_id();
    fx.engine
        .backup(&id, "vol", &image, None)
        .await
        .expect("backup");
    let root = target.root();
    assert!(root.join("manifests").join(format!("{id}.json")).is_file());
    let manifest = fx.engine.manifest(&id).await.expect("manifest");
    for digest in manifest.digests() {
        let path = root
            .join("chunks")
            .join(&digest[..2])
            .join(format!("{digest}.zst"));
        assert!(path.is_file(), "{}", path.display());
    }
    // No temp name is left behind.
    for entry in walk(root) {
        let name = entry
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(!name.starts_with(TEMP_PREFIX), "{}", entry.display());
    }
    assert_eq!(target.list_chunks().await.expect("list").len(), 2);
    assert_eq!(target.describe(), format!("dir:{}", root.display()));
}

#[tokio::test]
async fn a_byte_flipped_on_disk_fails_the_restore_naming_the_chunk() {
    let (_dir, target) = target();
    let fx = Fixture::new(target.clone());
    let image = fx.image("image", 6, 0, &[0, 4], 12);
    let id = new_id();
    fx.engine
        .backup(&id, "vol", &image, None)
        .await
        .expect("backup");
    let digest = fx.engine.manifest(&id).await.expect("manifest").chunks[4]
        .clone()
        .expect("data");
    let path = target.chunk_path(&digest);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let dest = fx.path("dest");
    sparse_image(&dest, 6 * testkit::TEST_CHUNK);
    let err = fx.engine.restore(&id, &dest).await.expect_err("corrupt");
    assert!(
        matches!(&err, BackupError::Corrupt { chunk_index: 4, digest: d, .. } if *d == digest),
        "{err}"
    );
}

#[tokio::test]
async fn full_size_chunks_round_trip_an_image_with_a_short_tail() {
    let (_dir, target) = target();
    let fx = Fixture::new(target);
    let engine = crate::backup::BackupEngine::new(
        fx.engine.target().clone(),
        fx.index.clone(),
        fx.path("scratch"),
    );
    let image = fx.path("image");
    let size = 2 * CHUNK_BYTES + 12345;
    sparse_image(&image, size);
    write_chunks(&image, CHUNK_BYTES, [0, 2], 13);
    let id = new_id();
    let stats = engine
        .backup(&id, "vol", &image, None)
        .await
        .expect("backup");
    assert_eq!(
        (stats.chunks, stats.zero_chunks, stats.written_chunks),
        (3, 1, 2)
    );
    let manifest = engine.manifest(&id).await.expect("manifest");
    assert_eq!(manifest.chunk_bytes, CHUNK_BYTES);
    let dest = fx.path("dest");
    sparse_image(&dest, size);
    engine.restore(&id, &dest).await.expect("restore");
    assert_eq!(file_sha256(&dest), file_sha256(&image));
}

/// Every file under `dir`.
pub(super) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
