//! `https://` GETs for the JWKS and the OIDC discovery document: hyper over
//! rustls (ring), trusting the system's roots or the CA file of
//! `SCORIA_AUTH_CA_FILE`. Plain `http://` is refused: keys fetched in clear
//! could be swapped on the way.

use std::{path::Path, sync::Arc, time::Duration};

use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest document accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// How long one fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS client for one issuer's documents.
#[derive(Clone)]
pub(crate) struct Fetcher {
    tls: TlsConnector,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A client trusting `ca_file` if given, else the system's roots.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
                let mut found = 0;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: rustls::pki_types::CertificateDer<'static> =
                        cert.map_err(|e| format!("CA file {} is not PEM: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                    found += 1;
                }
                if found == 0 {
                    return Err(format!("CA file {} holds no certificate", path.display()));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A system root rustls cannot parse is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// GETs `url` (`https://` only) and returns its body.
    pub(crate) async fn get(&self, url: &str) -> Result<Bytes, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_inner(url))
            .await
            .map_err(|_| format!("GET {url}: no answer within {FETCH_TIMEOUT:?}"))?
    }

    async fn get_inner(&self, url: &str) -> Result<Bytes, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url:?} is not an https:// URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("GET {url}: cannot connect: {e}"))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| format!("GET {url}: bad host name: {e}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("GET {url}: TLS: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let request = Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("GET {url}: {e}"))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: reading the body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        // The connection is driven only while this one exchange runs.
        let (status, body) = tokio::select! {
            biased;
            done = exchange => done?,
            ended = connection => {
                return Err(match ended {
                    Ok(()) => format!("GET {url}: the server closed the connection"),
                    Err(e) => format!("GET {url}: {e}"),
                });
            }
        };
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        Ok(body)
    }
}
