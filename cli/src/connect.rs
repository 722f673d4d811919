//! Where the API is and who is asking: flags, then environment variables (clap
//! reads both), then a named entry of `clouds.toml` (`--os-cloud`, the
//! clouds.yaml habit), then the defaults; and the connection with those
//! credentials on every request.

use std::{path::PathBuf, time::Duration};

use scoria_proto::v1::{
    admin_service_client::AdminServiceClient, attachment_service_client::AttachmentServiceClient,
    availability_zone_service_client::AvailabilityZoneServiceClient,
    quota_service_client::QuotaServiceClient, snapshot_service_client::SnapshotServiceClient,
    transfer_service_client::TransferServiceClient, volume_service_client::VolumeServiceClient,
    volume_type_service_client::VolumeTypeServiceClient,
};
use serde::Deserialize;
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{args::ConnectionArgs, error::CliError};

/// The API's address when nothing names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8776";

/// One entry of `clouds.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    /// The API's URL.
    pub url: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    /// The project (noauth).
    pub project: Option<String>,
    /// Roles (noauth).
    pub roles: Option<String>,
    /// A CA certificate file.
    pub cacert: Option<PathBuf>,
    /// A client certificate file (mTLS).
    pub cert: Option<PathBuf>,
    /// The client certificate's key file.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudsFile {
    #[serde(default)]
    clouds: std::collections::BTreeMap<String, Cloud>,
}

/// Where `clouds.toml` is: `$SCORIA_CLOUDS_FILE`, else
/// `$XDG_CONFIG_HOME/scoria/clouds.toml`, else `~/.config/scoria/clouds.toml`.
pub fn clouds_path() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("SCORIA_CLOUDS_FILE") {
        return Some(PathBuf::from(file));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("scoria").join("clouds.toml"))
}

/// The settings a command connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API's URL.
    pub url: String,
    /// A bearer token.
    pub token: Option<String>,
    /// The project (noauth).
    pub project: Option<String>,
    /// Roles (noauth).
    pub roles: Option<String>,
    /// A CA certificate file.
    pub cacert: Option<PathBuf>,
    /// A client certificate file (mTLS).
    pub cert: Option<PathBuf>,
    /// The client certificate's key file.
    pub key: Option<PathBuf>,
}

impl Settings {
    /// `args` over the `--os-cloud` entry (read from `clouds`) over the defaults.
    pub fn resolve(args: &ConnectionArgs, clouds: Option<PathBuf>) -> Result<Self, CliError> {
        let cloud = match &args.cloud {
            None => Cloud::default(),
            Some(name) => {
                let path = clouds.ok_or_else(|| {
                    CliError::Usage(format!(
                        "--os-cloud {name}: no clouds.toml (set HOME or SCORIA_CLOUDS_FILE)"
                    ))
                })?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    CliError::Usage(format!(
                        "--os-cloud {name}: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                let file: CloudsFile = toml::from_str(&text)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
                file.clouds.get(name).cloned().ok_or_else(|| {
                    let known: Vec<&str> = file.clouds.keys().map(String::as_str).collect();
                    CliError::Usage(format!(
                        "--os-cloud {name}: no [clouds.{name}] in {} (it has: {})",
                        path.display(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?
            }
        };
        Ok(Self {
            url: args
                .url
                .clone()
                .or(cloud.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
            token: args.token.clone().or(cloud.token),
            project: args.project.clone().or(cloud.project),
            roles: args.roles.clone().or(cloud.roles),
            cacert: args.cacert.clone().or(cloud.cacert),
            cert: args.cert.clone().or(cloud.cert),
            key: args.key.clone().or(cloud.key),
        })
    }

    /// Connects (within 5 s) and returns the clients; a failure names the URL.
    pub async fn connect(&self) -> Result<Api, CliError> {
        let unreachable = |reason: String| CliError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| CliError::Usage(format!("--os-url {:?} is not a URL: {e}", self.url)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if self.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &self.cacert {
                let pem = std::fs::read(path)
                    .map_err(|e| CliError::Usage(format!("--os-cacert {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    let read = |flag: &str, path: &PathBuf| {
                        std::fs::read(path)
                            .map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
                    };
                    tls = tls.identity(Identity::from_pem(
                        read("--os-cert", cert)?,
                        read("--os-key", key)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(CliError::Usage(
                        "--os-cert and --os-key go together".to_owned(),
                    ));
                }
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                let text = inner.to_string();
                if !reason.contains(&text) {
                    reason = format!("{reason}: {text}");
                }
                source = inner.source();
            }
            unreachable(reason)
        })?;
        Ok(Api {
            channel,
            headers: Headers::new(self)?,
        })
    }
}

/// The headers every request carries.
#[derive(Debug, Clone)]
pub struct Headers {
    authorization: Option<AsciiMetadataValue>,
    project: Option<AsciiMetadataValue>,
    roles: Option<AsciiMetadataValue>,
}

impl Headers {
    fn new(settings: &Settings) -> Result<Self, CliError> {
        let value = |what: &str, v: &str| {
            v.parse::<AsciiMetadataValue>()
                .map_err(|_| CliError::Usage(format!("{what} must be printable ASCII")))
        };
        Ok(Self {
            authorization: settings
                .token
                .as_deref()
                .map(|t| value("--os-token", &format!("Bearer {t}")))
                .transpose()?,
            project: settings
                .project
                .as_deref()
                .map(|p| value("--os-project", p))
                .transpose()?,
            roles: settings
                .roles
                .as_deref()
                .map(|r| value("--os-roles", r))
                .transpose()?,
        })
    }
}

impl Interceptor for Headers {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let headers = request.metadata_mut();
        if let Some(v) = &self.authorization {
            headers.insert("authorization", v.clone());
        }
        if let Some(v) = &self.project {
            headers.insert("x-project-id", v.clone());
        }
        if let Some(v) = &self.roles {
            headers.insert("x-roles", v.clone());
        }
        Ok(request)
    }
}

/// The transport of every client.
pub type Authed = InterceptedService<Channel, Headers>;

/// The clients of a connected API.
#[derive(Debug, Clone)]
pub struct Api {
    channel: Channel,
    headers: Headers,
}

impl Api {
    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.headers.clone())
    }

    /// `scoria.v1.VolumeService`.
    pub fn volumes(&self) -> VolumeServiceClient<Authed> {
        VolumeServiceClient::new(self.authed())
    }

    /// `scoria.v1.SnapshotService`.
    pub fn snapshots(&self) -> SnapshotServiceClient<Authed> {
        SnapshotServiceClient::new(self.authed())
    }

    /// `scoria.v1.AttachmentService`.
    pub fn attachments(&self) -> AttachmentServiceClient<Authed> {
        AttachmentServiceClient::new(self.authed())
    }

    /// `scoria.v1.VolumeTypeService`.
    pub fn types(&self) -> VolumeTypeServiceClient<Authed> {
        VolumeTypeServiceClient::new(self.authed())
    }

    /// `scoria.v1.AvailabilityZoneService`.
    pub fn zones(&self) -> AvailabilityZoneServiceClient<Authed> {
        AvailabilityZoneServiceClient::new(self.authed())
    }

    /// `scoria.v1.AdminService`.
    pub fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::new(self.authed())
    }

    /// `scoria.v1.QuotaService`.
    pub fn quotas(&self) -> QuotaServiceClient<Authed> {
        QuotaServiceClient::new(self.authed())
    }

    /// `scoria.v1.TransferService`.
    pub fn transfers(&self) -> TransferServiceClient<Authed> {
        TransferServiceClient::new(self.authed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_cloud_entry_over_the_defaults() {
        let dir = std::env::temp_dir().join(format!("scoria-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("clouds.toml");
        std::fs::write(
            &file,
            "[clouds.lab]\nurl = \"http://lab:8776\"\nproject = \"p-lab\"\nroles = \"admin\"\n",
        )
        .expect("write");
        let args = ConnectionArgs {
            cloud: Some("lab".into()),
            project: Some("p-flag".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args, Some(file.clone())).expect("resolve");
        assert_eq!(s.url, "http://lab:8776");
        assert_eq!(s.project.as_deref(), Some("p-flag"));
        assert_eq!(s.roles.as_deref(), Some("admin"));
        let none = Settings::resolve(&ConnectionArgs::default(), None).expect("defaults");
        assert_eq!(none.url, DEFAULT_URL);
        let missing = ConnectionArgs {
            cloud: Some("prod".into()),
            ..Default::default()
        };
        let err = Settings::resolve(&missing, Some(file)).expect_err("no such cloud");
        assert!(err.to_string().contains("it has: lab"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_https_url_reads_the_ca_file_it_is_given() {
        let settings = Settings {
            url: "https://127.0.0.1:1".into(),
            token: None,
            project: None,
            roles: None,
            cacert: Some("/nonexistent/ca.pem".into()),
            cert: None,
            key: None,
        };
        let err = settings.connect().await.expect_err("no such file");
        assert!(
            err.to_string().contains("--os-cacert /nonexistent/ca.pem"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
        // Without one, the system's roots; the refusal names the address.
        let err = Settings {
            cacert: None,
            ..settings
        }
        .connect()
        .await
        .expect_err("nothing listens");
        assert!(err.to_string().contains("https://127.0.0.1:1"), "{err}");
    }
}
