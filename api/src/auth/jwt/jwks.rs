//! The verification keys: a JWKS from a file, from an `https://` URL, or from
//! the `jwks_uri` of an issuer's OIDC discovery document. Fetched at start,
//! cached, and fetched again when a token names an unknown `kid` and
//! periodically, but never more often than the minimum interval. Symmetric
//! (`oct`, HMAC) keys are dropped: a shared secret cannot be published.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, JwkSet},
};
use serde::Deserialize;

use super::fetch::Fetcher;
use scoria_common::sync::lock;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS at an `https://` URL.
    Url(String),
    /// The `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

/// One usable key.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) decoding: DecodingKey,
    /// The algorithms the key may verify.
    pub(crate) algorithms: Vec<Algorithm>,
}

/// The keys of one fetch, by `kid` (a key without one is kept under "").
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Key>,
}

impl KeySet {
    /// The key `kid` names, or the only key when the token names none.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    /// How many keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

/// The cached keys and how to fetch them again.
pub(crate) struct Jwks {
    source: Source,
    fetcher: Fetcher,
    min_interval: Duration,
    current: Mutex<Arc<KeySet>>,
    last_fetch: Mutex<Instant>,
    /// One fetch at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source)
            .field("keys", &lock(&self.current).len())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the keys of `source` once; fails if none is usable.
    pub(crate) async fn load(
        source: Source,
        fetcher: Fetcher,
        min_interval: Duration,
    ) -> Result<Self, String> {
        let keys = fetch(&source, &fetcher).await?;
        if keys.len() == 0 {
            return Err(format!(
                "{}: no usable key (RSA, EC P-256/P-384 or Ed25519 with a public part)",
                describe(&source)
            ));
        }
        Ok(Self {
            source,
            fetcher,
            min_interval,
            current: Mutex::new(Arc::new(keys)),
            last_fetch: Mutex::new(Instant::now()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The keys now.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        lock(&self.current).clone()
    }

    /// Fetches again unless the last fetch is younger than the minimum
    /// interval; returns the keys then. A failed fetch keeps the old keys.
    pub(crate) async fn refresh(&self) -> Arc<KeySet> {
        let _one = self.fetching.lock().await;
        if lock(&self.last_fetch).elapsed() < self.min_interval {
            return self.keys();
        }
        *lock(&self.last_fetch) = Instant::now();
        match fetch(&self.source, &self.fetcher).await {
            Ok(keys) if keys.len() > 0 => {
                tracing::info!(source = %describe(&self.source), keys = keys.len(), "JWKS refreshed");
                *lock(&self.current) = Arc::new(keys);
            }
            Ok(_) => {
                tracing::warn!(source = %describe(&self.source), "the JWKS holds no usable key now: keeping the old keys");
            }
            Err(err) => {
                tracing::warn!(source = %describe(&self.source), error = %err, "cannot refresh the JWKS: keeping the old keys");
            }
        }
        self.keys()
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::File(path) => format!("JWKS file {}", path.display()),
        Source::Url(url) => format!("JWKS {url}"),
        Source::Discovery(issuer) => format!("OIDC issuer {issuer}"),
    }
}

async fn fetch(source: &Source, fetcher: &Fetcher) -> Result<KeySet, String> {
    let text = match source {
        Source::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?
            .into(),
        Source::Url(url) => fetcher.get(url).await?,
        Source::Discovery(issuer) => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let document = fetcher.get(&url).await?;
            let discovery: Discovery = serde_json::from_slice(&document)
                .map_err(|e| format!("{url}: not an OIDC discovery document: {e}"))?;
            fetcher.get(&discovery.jwks_uri).await?
        }
    };
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a JWKS: {e}", describe(source)))?;
    Ok(parse(set))
}

/// The usable keys of `set`.
fn parse(set: JwkSet) -> KeySet {
    let mut keys = HashMap::new();
    for jwk in set.keys {
        let Some(algorithms) = algorithms_of(&jwk) else {
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(decoding) => {
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                keys.insert(
                    kid,
                    Key {
                        decoding,
                        algorithms,
                    },
                );
            }
            Err(err) => {
                tracing::warn!(kid = ?jwk.common.key_id, error = %err, "skipping a JWKS key that cannot be used");
            }
        }
    }
    KeySet { keys }
}

/// What a key may verify: its `alg` if it names one, else every asymmetric
/// algorithm of its type. `None` for symmetric keys.
fn algorithms_of(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    let of_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // `oct` (HMAC) keys, and kinds this version does not know.
        _ => return None,
    };
    match jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok())
    {
        Some(alg) if of_type.contains(&alg) => Some(vec![alg]),
        Some(_) => None,
        None => Some(of_type),
    }
}
