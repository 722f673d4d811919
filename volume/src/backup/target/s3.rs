//! [`S3Target`]: a repository in S3-compatible object storage, through the
//! `object_store` crate (path-style requests to the configured endpoint, SigV4
//! signing). An S3 `PUT` is atomic: an object is complete or absent.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path as Key,
};

use super::{BackupTarget, TargetSettings, URL_SETTING, chunk_name, manifest_name};
use crate::backup::{
    chunk::{check_digest, check_id},
    error::{BackupError, Result},
    manifest::Manifest,
};

/// The region used when none is configured (what most S3-compatible servers
/// accept).
pub const DEFAULT_REGION: &str = "us-east-1";

/// A repository in an S3 bucket, under a key prefix.
#[derive(Debug)]
pub struct S3Target {
    store: AmazonS3,
    bucket: String,
    prefix: String,
}

impl S3Target {
    /// The repository `s3://<bucket>/<prefix>` with `settings`' endpoint,
    /// region and credentials; nothing is sent until the first request.
    pub fn new(bucket: &str, prefix: &str, settings: &TargetSettings) -> Result<Self> {
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
        if !valid_bucket {
            return Err(BackupError::Settings {
                setting: URL_SETTING,
                reason: format!(
                    "{bucket:?} is not an S3 bucket name (3 to 63 lower-case letters, digits, '-' or '.')"
                ),
            });
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(BackupError::Settings {
                setting: URL_SETTING,
                reason: format!("prefix {prefix:?} has '.' or '..' parts"),
            });
        }
        // rustls builds its client config with the process's provider: ring
        // (installing it is a no-op when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(settings.s3_region.as_deref().unwrap_or(DEFAULT_REGION))
            .with_allow_http(settings.s3_allow_http);
        if let Some(endpoint) = &settings.s3_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(BackupError::Settings {
                    setting: "backup.s3_endpoint",
                    reason: format!("{endpoint:?} is not an http:// or https:// URL"),
                });
            }
            if endpoint.starts_with("http://") && !settings.s3_allow_http {
                return Err(BackupError::Settings {
                    setting: "backup.s3_endpoint",
                    reason: format!(
                        "{endpoint:?} is plain http: set backup.s3_allow_http to use it"
                    ),
                });
            }
            builder = builder.with_endpoint(endpoint);
        }
        match (&settings.s3_access_key_id, &settings.s3_secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(BackupError::Settings {
                    setting: "backup.s3_access_key_id",
                    reason: "give both the access key id and the secret access key, or neither"
                        .into(),
                });
            }
        }
        let store = builder.build().map_err(|e| BackupError::Settings {
            setting: URL_SETTING,
            reason: e.to_string(),
        })?;
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    fn key(&self, dir: &str, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(format!("{dir}/{name}"))
        } else {
            Key::from(format!("{}/{dir}/{name}", self.prefix))
        }
    }

    fn chunk_key(&self, digest: &str) -> Key {
        self.key("chunks", &chunk_name(digest))
    }

    fn manifest_key(&self, backup_id: &str) -> Key {
        self.key("manifests", &manifest_name(backup_id))
    }

    /// The error of a request on `key`: [`BackupError::Full`] when the server
    /// says it is out of room or over a quota.
    fn fail(&self, key: &Key, source: object_store::Error) -> BackupError {
        let message = source.to_string();
        if [
            "QuotaExceeded",
            "InsufficientStorage",
            "507 Insufficient Storage",
        ]
        .iter()
        .any(|s| message.contains(s))
        {
            return BackupError::Full {
                target: self.describe(),
                key: key.to_string(),
            };
        }
        BackupError::Target {
            target: self.describe(),
            key: key.to_string(),
            source,
        }
    }

    async fn put(&self, key: &Key, bytes: Bytes) -> Result<()> {
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.fail(key, e))
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let result = match self.store.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(key, e)),
        };
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|e| self.fail(key, e))
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(key, e)),
        }
    }
}

#[async_trait]
impl BackupTarget for S3Target {
    async fn put_chunk(&self, digest: &str, compressed: Bytes) -> Result<()> {
        check_digest(digest)?;
        self.put(&self.chunk_key(digest), compressed).await
    }

    async fn has_chunk(&self, digest: &str) -> Result<bool> {
        check_digest(digest)?;
        let key = self.chunk_key(digest);
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(&key, e)),
        }
    }

    async fn get_chunk(&self, digest: &str) -> Result<Option<Bytes>> {
        check_digest(digest)?;
        self.get(&self.chunk_key(digest)).await
    }

    async fn delete_chunk(&self, digest: &str) -> Result<()> {
        check_digest(digest)?;
        self.delete(&self.chunk_key(digest)).await
    }

    async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        check_id("backup id", &manifest.backup_id)?;
        let key = self.manifest_key(&manifest.backup_id);
        self.put(&key, Bytes::from(manifest.to_json())).await
    }

    async fn get_manifest(&self, backup_id: &str) -> Result<Option<Manifest>> {
        check_id("backup id", backup_id)?;
        match self.get(&self.manifest_key(backup_id)).await? {
            Some(bytes) => Ok(Some(Manifest::from_json(backup_id, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn delete_manifest(&self, backup_id: &str) -> Result<()> {
        check_id("backup id", backup_id)?;
        self.delete(&self.manifest_key(backup_id)).await
    }

    async fn list_chunks(&self) -> Result<Vec<String>> {
        let dir = if self.prefix.is_empty() {
            Key::from("chunks")
        } else {
            Key::from(format!("{}/chunks", self.prefix))
        };
        let mut listing = self.store.list(Some(&dir));
        let mut digests = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.fail(&dir, e))?;
            if let Some(digest) = meta
                .location
                .filename()
                .and_then(|name| name.strip_suffix(".zst"))
                && check_digest(digest).is_ok()
            {
                digests.push(digest.to_owned());
            }
        }
        digests.sort();
        Ok(digests)
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}
