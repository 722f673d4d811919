//! [`DirTarget`]: a repository in a directory (local, or an NFS mount shared by
//! several volume services). Every object is written to a temp name in its final
//! directory (`.scoria-tmp-<uuid>-<name>`), fsynced, renamed into place and its
//! directory fsynced, so a crash or a full disk never leaves a half object under
//! a final name; on a write error the temp name is removed.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BackupTarget, chunk_name, manifest_name};
use crate::backup::{
    chunk::{check_digest, check_id},
    error::{BackupError, Result, blocking, io, is_full},
    manifest::Manifest,
};

/// What a temp object's name starts with.
pub const TEMP_PREFIX: &str = ".scoria-tmp-";

/// A repository in a directory.
#[derive(Debug, Clone)]
pub struct DirTarget {
    root: PathBuf,
}

impl DirTarget {
    /// The repository at `root` (absolute), its `chunks/` and `manifests/`
    /// directories created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["chunks", "manifests"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        Ok(Self { root })
    }

    /// [`BackupTarget::sweep_temps`] of this directory.
    async fn sweep_temp_objects(&self, older_than: std::time::Duration) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || {
            let mut dirs = vec![root.join("manifests")];
            let chunks = root.join("chunks");
            for entry in std::fs::read_dir(&chunks).map_err(io("list", &chunks))? {
                let path = entry.map_err(io("list", &chunks))?.path();
                if path.is_dir() {
                    dirs.push(path);
                }
            }
            let mut removed = 0;
            for dir in dirs {
                for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
                    let entry = entry.map_err(io("list", &dir))?;
                    if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                        continue;
                    }
                    let age = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|age| age >= older_than) {
                        tracing::info!(path = %entry.path().display(), "removing a temp object left by a crash");
                        remove_if_exists(&entry.path())?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of chunk `digest`.
    pub fn chunk_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("chunks")
            .join(&digest[..2.min(digest.len())])
            .join(chunk_name(digest))
    }

    fn manifest_path(&self, backup_id: &str) -> PathBuf {
        self.root.join("manifests").join(manifest_name(backup_id))
    }

    fn describe_key(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Writes `data` at `path` atomically (temp name, fsync, rename, fsync dir);
    /// [`BackupError::Full`] if the disk is full, with the temp name removed.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| self.fail("create directory", dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = Temp(dir.join(format!(
            "{TEMP_PREFIX}{}-{name}",
            uuid::Uuid::new_v4().simple()
        )));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.0)
            .map_err(|e| self.fail("create", &temp.0, e))?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.fail("write", &temp.0, e))?;
        drop(file);
        std::fs::rename(&temp.0, path).map_err(|e| self.fail("rename into place", path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.fail("sync directory", dir, e))
    }

    /// The error of `op` on `path`: [`BackupError::Full`] for a full disk.
    fn fail(&self, op: &'static str, path: &Path, err: std::io::Error) -> BackupError {
        if is_full(&err) {
            BackupError::Full {
                target: self.describe(),
                key: self.describe_key(path),
            }
        } else {
            io(op, path)(err)
        }
    }
}

/// A temp file, removed when dropped (renamed away: nothing to remove).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.0.display(), %e, "temp object not removed"),
        }
    }
}

/// The file's bytes, None if it does not exist.
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Removes the file; Ok if it does not exist.
fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

#[async_trait]
impl BackupTarget for DirTarget {
    async fn put_chunk(&self, digest: &str, compressed: Bytes) -> Result<()> {
        check_digest(digest)?;
        let this = self.clone();
        let path = self.chunk_path(digest);
        blocking(move || {
            // Written once: the name is the content's digest.
            if path.try_exists().map_err(io("stat", &path))? {
                return Ok(());
            }
            this.write_atomic(&path, &compressed)
        })
        .await
    }

    async fn has_chunk(&self, digest: &str) -> Result<bool> {
        check_digest(digest)?;
        let path = self.chunk_path(digest);
        blocking(move || path.try_exists().map_err(io("stat", &path))).await
    }

    async fn get_chunk(&self, digest: &str) -> Result<Option<Bytes>> {
        check_digest(digest)?;
        let path = self.chunk_path(digest);
        Ok(blocking(move || read_if_exists(&path))
            .await?
            .map(Bytes::from))
    }

    async fn delete_chunk(&self, digest: &str) -> Result<()> {
        check_digest(digest)?;
        let path = self.chunk_path(digest);
        blocking(move || remove_if_exists(&path)).await
    }

    async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        check_id("backup id", &manifest.backup_id)?;
        let this = self.clone();
        let path = self.manifest_path(&manifest.backup_id);
        let json = manifest.to_json();
        blocking(move || this.write_atomic(&path, &json)).await
    }

    async fn get_manifest(&self, backup_id: &str) -> Result<Option<Manifest>> {
        check_id("backup id", backup_id)?;
        let path = self.manifest_path(backup_id);
        match blocking(move || read_if_exists(&path)).await? {
            Some(bytes) => Ok(Some(Manifest::from_json(backup_id, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn delete_manifest(&self, backup_id: &str) -> Result<()> {
        check_id("backup id", backup_id)?;
        let path = self.manifest_path(backup_id);
        blocking(move || remove_if_exists(&path)).await
    }

    async fn list_chunks(&self) -> Result<Vec<String>> {
        let chunks = self.root.join("chunks");
        blocking(move || {
            let mut digests = Vec::new();
            for entry in std::fs::read_dir(&chunks).map_err(io("list", &chunks))? {
                let dir = entry.map_err(io("list", &chunks))?.path();
                if !dir.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
                    let name = entry.map_err(io("list", &dir))?.file_name();
                    let name = name.to_string_lossy();
                    if let Some(digest) = name.strip_suffix(".zst")
                        && check_digest(digest).is_ok()
                    {
                        digests.push(digest.to_owned());
                    }
                }
            }
            digests.sort();
            Ok(digests)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    async fn sweep_temps(&self, older_than: std::time::Duration) -> Result<usize> {
        self.sweep_temp_objects(older_than).await
    }
}
