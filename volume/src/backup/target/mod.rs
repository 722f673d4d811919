//! [`BackupTarget`]: where a repository's chunks and manifests live, and its two
//! implementations, a directory ([`dir`], posix or NFS, as Cinder's posix / NFS
//! backup drivers) and S3-compatible object storage ([`s3`], `object_store`).
//!
//! Both lay the repository out the same way:
//!
//! ```text
//! <root>/chunks/<first 2 hex of digest>/<digest>.zst   (dir)
//! <prefix>/chunks/<digest>.zst                          (s3)
//! <root or prefix>/manifests/<backup id>.json
//! ```
//!
//! A target stores and returns bytes; it verifies nothing (the engine checks
//! every chunk's digest on restore).

pub mod dir;
pub mod s3;

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;

pub use dir::DirTarget;
pub use s3::S3Target;

use super::{
    error::{BackupError, Result},
    manifest::Manifest,
};

/// A repository of chunks and manifests.
#[async_trait]
pub trait BackupTarget: Send + Sync + 'static {
    /// Stores the compressed chunk `digest`; idempotent, and atomic: a chunk is
    /// complete under its name or not there at all.
    async fn put_chunk(&self, digest: &str, compressed: Bytes) -> Result<()>;

    /// Whether chunk `digest` is stored.
    async fn has_chunk(&self, digest: &str) -> Result<bool>;

    /// The compressed bytes of chunk `digest`, None if it is not stored.
    async fn get_chunk(&self, digest: &str) -> Result<Option<Bytes>>;

    /// Removes chunk `digest`; succeeds if it is gone already.
    async fn delete_chunk(&self, digest: &str) -> Result<()>;

    /// Stores (or replaces) `manifest`, atomically.
    async fn put_manifest(&self, manifest: &Manifest) -> Result<()>;

    /// The manifest of `backup_id`, validated; None if it is not stored.
    async fn get_manifest(&self, backup_id: &str) -> Result<Option<Manifest>>;

    /// Removes the manifest of `backup_id`; succeeds if it is gone already.
    async fn delete_manifest(&self, backup_id: &str) -> Result<()>;

    /// The digests of every stored chunk (for tests and orphan sweeps).
    async fn list_chunks(&self) -> Result<Vec<String>>;

    /// The target for logs and errors: `dir:/path`, `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Removes the temporary objects a crash left behind that are older than
    /// `older_than` (younger ones may be another service's writes in flight);
    /// how many. A target whose writes are atomic by themselves (S3) has none.
    async fn sweep_temps(&self, _older_than: std::time::Duration) -> Result<usize> {
        Ok(0)
    }
}

/// How to reach a backup target (the service's `backup.*` settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSettings {
    /// `file:///abs/dir` or an absolute path (a directory target), or
    /// `s3://bucket[/prefix]` (S3-compatible object storage).
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:9000`); None: AWS's, from the region.
    pub s3_endpoint: Option<String>,
    /// The S3 region; None: `us-east-1`.
    pub s3_region: Option<String>,
    /// The S3 access key id; None (with no secret): credentials from the
    /// instance's metadata, as `object_store` finds them.
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key.
    pub s3_secret_access_key: Option<String>,
    /// Whether a plain `http://` endpoint is allowed (a test server).
    pub s3_allow_http: bool,
}

/// The setting naming the target, in errors.
pub const URL_SETTING: &str = "backup.target";

/// Opens the target `settings` name (a directory is created if missing);
/// [`BackupError::Settings`] naming the setting if they are unusable.
pub fn open_target(settings: &TargetSettings) -> Result<Arc<dyn BackupTarget>> {
    let url = settings.url.trim();
    let invalid = |reason: String| BackupError::Settings {
        setting: URL_SETTING,
        reason,
    };
    if url.is_empty() {
        return Err(invalid(
            "empty: name a directory or an s3://bucket/prefix".into(),
        ));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        return Ok(Arc::new(S3Target::new(bucket, prefix, settings)?));
    }
    let path = match url.strip_prefix("file://") {
        Some(path) => PathBuf::from(path),
        None if url.contains("://") => {
            return Err(invalid(format!(
                "{url:?}: unknown scheme (use file:///dir, /dir or s3://bucket/prefix)"
            )));
        }
        None => PathBuf::from(url),
    };
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{url:?}: the directory must be an absolute path"
        )));
    }
    Ok(Arc::new(DirTarget::open(path)?))
}

/// The key of chunk `digest`'s object under a repository root.
pub(crate) fn chunk_name(digest: &str) -> String {
    format!("{digest}.zst")
}

/// The key of `backup_id`'s manifest under a repository root.
pub(crate) fn manifest_name(backup_id: &str) -> String {
    format!("{backup_id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(url: &str) -> TargetSettings {
        TargetSettings {
            url: url.into(),
            ..TargetSettings::default()
        }
    }

    #[test]
    fn urls_pick_the_target_or_name_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        let target = open_target(&url(&plain.display().to_string())).expect("path");
        assert_eq!(target.describe(), format!("dir:{}", plain.display()));
        assert!(plain.join("chunks").is_dir() && plain.join("manifests").is_dir());
        let file = dir.path().join("file");
        let target = open_target(&url(&format!("file://{}", file.display()))).expect("file url");
        assert_eq!(target.describe(), format!("dir:{}", file.display()));
        let s3 = TargetSettings {
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            s3_allow_http: true,
            ..url("s3://bucket/some/prefix")
        };
        assert_eq!(
            open_target(&s3).expect("s3").describe(),
            "s3://bucket/some/prefix"
        );
        for bad in ["", "relative/dir", "ftp://x/y", "s3://", "s3:///prefix"] {
            let err = open_target(&url(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                matches!(err, BackupError::Settings { .. }) && err.to_string().contains("backup."),
                "{bad:?}: {err}"
            );
        }
    }
}
