//! The `[backup]` section: the backup target every volume service of a
//! deployment shares (a backup made by one is restored or deleted by another).

use std::path::{Path, PathBuf};

use scoria_common::config::{self, ConfigError};
use serde::Deserialize;

use crate::backup::TargetSettings;

/// Where backups go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    /// `file:///dir`, an absolute directory, or `s3://bucket[/prefix]`
    /// (`SCORIA_BACKUP_TARGET`); empty: `<data_dir>/backups`.
    pub target: String,
    /// The S3 endpoint, `http(s)://host:port` (`SCORIA_BACKUP_S3_ENDPOINT`;
    /// empty: AWS's, from the region).
    pub s3_endpoint: String,
    /// The S3 region (`SCORIA_BACKUP_S3_REGION`; empty: `us-east-1`).
    pub s3_region: String,
    /// The S3 access key id (`SCORIA_BACKUP_S3_ACCESS_KEY_ID`; empty: the
    /// instance's credentials).
    pub s3_access_key_id: String,
    /// The S3 secret access key (`SCORIA_BACKUP_S3_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: String,
    /// Whether a plain `http://` endpoint is allowed (`SCORIA_BACKUP_S3_ALLOW_HTTP`).
    pub s3_allow_http: bool,
}

impl BackupSection {
    /// Refuses settings that cannot name a target, naming the key.
    pub(super) fn validate(&self) -> config::Result<()> {
        let refuse = |key, reason: String| Err(ConfigError::Value { key, reason });
        let target = self.target.trim();
        if !target.is_empty()
            && !target.starts_with("s3://")
            && !target.starts_with("file:///")
            && !Path::new(target).is_absolute()
        {
            return refuse(
                "backup.target",
                format!(
                    "{target:?} must be file:///dir, an absolute directory or s3://bucket/prefix"
                ),
            );
        }
        if self.s3_access_key_id.is_empty() != self.s3_secret_access_key.is_empty() {
            return refuse(
                "backup.s3_secret_access_key",
                "set both backup.s3_access_key_id and backup.s3_secret_access_key, or neither"
                    .into(),
            );
        }
        Ok(())
    }

    /// The target's settings; an empty target is `<data_dir>/backups` (made
    /// absolute, so the quickstart's relative data dir works).
    pub fn settings(&self, data_dir: &Path) -> TargetSettings {
        let url = if self.target.trim().is_empty() {
            let dir = data_dir.join("backups");
            let dir = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&dir))
                    .unwrap_or(dir)
            };
            dir.display().to_string()
        } else {
            self.target.trim().to_owned()
        };
        let set = |value: &str| Some(value.to_owned()).filter(|v| !v.is_empty());
        TargetSettings {
            url,
            s3_endpoint: set(&self.s3_endpoint),
            s3_region: set(&self.s3_region),
            s3_access_key_id: set(&self.s3_access_key_id),
            s3_secret_access_key: set(&self.s3_secret_access_key),
            s3_allow_http: self.s3_allow_http,
        }
    }

    /// Where images are converted to raw for a backup or a restore:
    /// `<data_dir>/backup-scratch`.
    pub fn scratch_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("backup-scratch")
    }
}

#[cfg(test)]
mod tests {
    use scoria_common::config::{ProcessConfig, env_of as env};

    use crate::config::Config;

    #[test]
    fn the_default_target_is_a_directory_under_the_data_dir() {
        let c = Config::load_from(
            None,
            &env(&[("SCORIA_HOST", "node1"), ("SCORIA_DATA_DIR", "/srv/scoria")]),
        )
        .expect("defaults");
        let s = c.backup.settings(&c.service.data_dir);
        assert_eq!(s.url, "/srv/scoria/backups");
        assert_eq!(s.s3_endpoint, None);
        assert!(!s.s3_allow_http);
    }

    #[test]
    fn s3_settings_come_from_the_env() {
        let c = Config::load_from(
            None,
            &env(&[
                ("SCORIA_BACKUP_TARGET", "s3://bucket/scoria"),
                ("SCORIA_BACKUP_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("SCORIA_BACKUP_S3_REGION", "eu-1"),
                ("SCORIA_BACKUP_S3_ACCESS_KEY_ID", "key"),
                ("SCORIA_BACKUP_S3_SECRET_ACCESS_KEY", "secret"),
                ("SCORIA_BACKUP_S3_ALLOW_HTTP", "true"),
            ]),
        )
        .expect("load");
        let s = c.backup.settings(&c.service.data_dir);
        assert_eq!(s.url, "s3://bucket/scoria");
        assert_eq!(s.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.s3_region.as_deref(), Some("eu-1"));
        assert_eq!(s.s3_access_key_id.as_deref(), Some("key"));
        assert_eq!(s.s3_secret_access_key.as_deref(), Some("secret"));
        assert!(s.s3_allow_http);
    }

    #[test]
    fn a_relative_target_or_half_a_key_names_the_key() {
        let err = Config::load_from(None, &env(&[("SCORIA_BACKUP_TARGET", "backups")]))
            .expect_err("relative");
        assert!(err.to_string().contains("backup.target"), "{err}");
        let err = Config::load_from(None, &env(&[("SCORIA_BACKUP_S3_ACCESS_KEY_ID", "key")]))
            .expect_err("half a key");
        assert!(
            err.to_string().contains("backup.s3_secret_access_key"),
            "{err}"
        );
    }
}
