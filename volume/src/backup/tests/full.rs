//! A directory target on a full filesystem (an 8 MiB tmpfs mounted by the
//! test): the backup fails with `Full` naming the target, and no chunk is left
//! under its final name unless it is complete.

use std::sync::Arc;

use super::dir::walk;
use crate::backup::{
    BackupError, BackupTarget, DirTarget, chunk,
    target::dir::TEMP_PREFIX,
    testkit::{Fixture, Tmpfs, new_id},
};

#[tokio::test]
async fn a_full_directory_target_fails_cleanly() {
    let fs = Tmpfs::mount("8m");
    let target = Arc::new(DirTarget::open(fs.mount.join("repo")).expect("open"));
    let fx = Fixture::new(target.clone());
    // 12 MiB of random bytes (they do not compress) into 8 MiB.
    let image = fx.image("image", 192, 0, &(0..192).collect::<Vec<_>>(), 21);
    let id = new_id();
    let err = fx
        .engine
        .backup(&id, "vol", &image, None)
        .await
        .expect_err("full");
    match &err {
        BackupError::Full { target: t, .. } => assert_eq!(*t, target.describe(), "{err}"),
        other => panic!("expected Full, got {other}"),
    }
    assert!(err.to_string().contains("is full"), "{err}");
    assert_eq!(
        target.get_manifest(&id).await.expect("get"),
        None,
        "no manifest"
    );
    // Every chunk left is complete: no temp names, and each decompresses to
    // the bytes its name says.
    let files = walk(&fs.mount.join("repo").join("chunks"));
    assert!(!files.is_empty(), "some chunks fit before the disk filled");
    for path in files {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(!name.starts_with(TEMP_PREFIX), "temp left: {name}");
        let digest = name.strip_suffix(".zst").expect("a chunk name");
        let data = chunk::decompress(&std::fs::read(&path).expect("read"), 1 << 20)
            .expect("a complete chunk");
        assert_eq!(chunk::digest(&data), digest, "{name}");
    }
}
