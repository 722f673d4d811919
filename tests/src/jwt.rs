//! A test identity provider: signing keys made at run time (RS256, ES256,
//! EdDSA), tokens signed with them, and an `https://` server (its certificate
//! from a CA made at run time) publishing the JWKS and an OIDC discovery
//! document. A test can publish other keys (a rotation) and count fetches.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A key tokens are signed with, and its public JWK.
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A new RSA 2048 key for RS256.
    pub fn rsa(kid: &str) -> Self {
        use rsa::{Generate, pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
        let key = rsa::PrivateKey::generate();
        let pem = key
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("RSA key as PEM");
        let public = key.to_public_key();
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA signing key"),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": B64.encode(public.n_bytes()),
                "e": B64.encode(public.e_bytes()),
            }),
        }
    }

    /// A new P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let raw = pair.public_key_raw();
        // Uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
        let (x, y) = raw[1..].split_at(32);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                .expect("EC signing key"),
            jwk: json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                "x": B64.encode(x), "y": B64.encode(y),
            }),
        }
    }

    /// A new Ed25519 key for EdDSA.
    pub fn ed(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes())
                .expect("Ed25519 signing key"),
            jwk: json!({
                "kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": kid, "crv": "Ed25519",
                "x": B64.encode(pair.public_key_raw()),
            }),
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign a token")
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }
}

/// A JWKS of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// `token` with its payload replaced by `claims` (the signature kept).
pub fn tampered(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(claims.to_string());
    parts.join(".")
}

/// An unsigned token (`alg: none`) carrying `claims`.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64.encode(claims.to_string())
    )
}

/// An HS256 token signed with `secret`.
pub fn hmac(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("HMAC key"),
    )
    .expect("sign HS256")
}

/// The identity provider's https server.
pub struct IdentityProvider {
    /// `https://127.0.0.1:<port>`: the issuer, and the base of its URLs.
    pub issuer: String,
    /// The CA that signed the server's certificate (for `SCORIA_AUTH_CA_FILE`).
    pub ca_file: PathBuf,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl IdentityProvider {
    /// Starts serving `keys` on a free port.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server_cert = params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let ca_file = dir.path().join("idp-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write CA file");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let issuer = format!("https://127.0.0.1:{}", addr.port());
        let jwks = Arc::new(Mutex::new(self::jwks(keys)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (documents, counter, halt, issuer_url) =
            (jwks.clone(), fetches.clone(), stop.clone(), issuer.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = halt.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let (acceptor, documents, counter, issuer, halt) = (
                    acceptor.clone(),
                    documents.clone(),
                    counter.clone(),
                    issuer_url.clone(),
                    halt.clone(),
                );
                tasks.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let body = match request.uri().path() {
                            "/jwks.json" => {
                                counter.fetch_add(1, Ordering::SeqCst);
                                Some(scoria_common::sync::lock(&documents).to_string())
                            }
                            "/.well-known/openid-configuration" => Some(
                                json!({
                                    "issuer": issuer,
                                    "jwks_uri": format!("{issuer}/jwks.json"),
                                })
                                .to_string(),
                            ),
                            _ => None,
                        };
                        let response = match body {
                            Some(body) => Response::new(Full::new(Bytes::from(body))),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::from("not found")));
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        () = halt.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
            tasks.close();
            tasks.wait().await;
        });
        Self {
            issuer,
            ca_file,
            jwks,
            fetches,
            stop,
            _dir: dir,
        }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.issuer)
    }

    /// Publishes `keys` instead (a rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        *scoria_common::sync::lock(&self.jwks) = jwks(keys);
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
