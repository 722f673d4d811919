//! gRPC over TLS (rustls), with an optional client-certificate requirement (mTLS).
//!
//! ```text
//!  TcpListener ─accept─▶ handshake task (current ServerConfig, 10 s) ─▶ tonic
//!                               ▲
//!  SIGHUP / file changed ─▶ reload ─▶ swap ServerConfig (open connections keep theirs)
//! ```
//!
//! [`ServerTls::load`] reads `api.tls` once at start (a bad file stops the API,
//! naming its variable); [`reload`] replaces the configuration used for new
//! handshakes; [`incoming`] turns a listener into a stream of TLS connections.

pub mod incoming;
pub mod reload;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use crate::config::TlsSection;

/// The variable naming the server certificate chain.
pub const CERT_VAR: &str = "SCORIA_API_TLS_CERT";
/// The variable naming the server private key.
pub const KEY_VAR: &str = "SCORIA_API_TLS_KEY";
/// The variable naming the CA client certificates must come from.
pub const CLIENT_CA_VAR: &str = "SCORIA_API_TLS_CLIENT_CA";

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{var}: cannot read {path}: {source}")]
    Read {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate.
    #[error("{var}: {path} holds no PEM certificate{reason}")]
    NoCertificate {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint, if any (starting with `: `).
        reason: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{var}: {path} holds no PEM private key: {reason}")]
    NoKey {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// The client CA file holds a certificate rustls refuses as a trust anchor.
    #[error("{var}: {path}: {reason}")]
    ClientCa {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and the key do not make a server identity (e.g. they do
    /// not match).
    #[error("{CERT_VAR} / {KEY_VAR}: {cert} and {key} are unusable together: {source}")]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// A `Result` alias for TLS loading.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The files of `api.tls` that TLS is on with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// If set, clients must present a certificate from this CA.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `section`, or `None` if TLS is off (no certificate).
    pub fn of(section: &TlsSection) -> Option<Self> {
        match (&section.cert, &section.key) {
            (Some(cert), Some(key)) => Some(Self {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: section.client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// The files' bytes, to tell whether any of them changed.
    pub(crate) fn snapshot(&self) -> Vec<Option<Vec<u8>>> {
        let mut files = vec![&self.cert, &self.key];
        files.extend(self.client_ca.as_ref());
        files.into_iter().map(|f| std::fs::read(f).ok()).collect()
    }

    /// Reads and checks the files into a server configuration (ALPN `h2`).
    pub fn load(&self) -> Result<ServerConfig> {
        let certs = read_certs(CERT_VAR, &self.cert)?;
        let key = read_key(&self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity_error = |source| TlsError::Identity {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(CLIENT_CA_VAR, ca)? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        var: CLIENT_CA_VAR,
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        var: CLIENT_CA_VAR,
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(identity_error)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        var,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(var: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(var, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            var,
            path: path.to_owned(),
            reason: format!(": {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            var,
            path: path.to_owned(),
            reason: String::new(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read(KEY_VAR, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::NoKey {
        var: KEY_VAR,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The TLS side of the API: the files and the configuration new handshakes use.
#[derive(Clone, Debug)]
pub struct ServerTls {
    files: TlsFiles,
    /// How often the files are polled for changes, in seconds; 0: SIGHUP only.
    reload_secs: u64,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Loads `section`: `None` if TLS is off, an error naming the variable if a
    /// file is unusable.
    pub fn load(section: &TlsSection) -> Result<Option<Self>> {
        let Some(files) = TlsFiles::of(section) else {
            return Ok(None);
        };
        let config = files.load()?;
        Ok(Some(Self {
            files,
            reload_secs: section.reload_secs,
            current: Arc::new(RwLock::new(Arc::new(config))),
        }))
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration a new handshake uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the configuration of new handshakes.
    fn swap(&self, config: ServerConfig) {
        let config = Arc::new(config);
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

#[cfg(test)]
mod tests;
