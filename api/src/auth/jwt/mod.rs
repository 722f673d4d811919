//! The `jwt` auth mode: `authorization: Bearer <JWT>` verified against a JWKS
//! (a file, an `https://` URL, or found by OIDC discovery from an issuer).
//! Asymmetric algorithms only (RS*, PS*, ES256/384, EdDSA); `alg: none` and
//! HMAC are refused. `iss` and `aud` must match, `exp` must be there, `exp` and
//! `nbf` are checked with a small leeway. Which claims carry the project, the
//! user and the roles is configurable (dotted paths reach nested claims, e.g.
//! `project.id`, `realm_access.roles`). The signature work is `jsonwebtoken`'s.
//!
//! Refusals say what was wrong (expired, wrong audience, unknown key, bad
//! signature, ...) and never echo the token.

mod claims;
pub(crate) mod fetch;
mod jwks;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;

use self::jwks::{Jwks, Source};
pub(crate) use self::{claims::Claims, fetch::Fetcher};

/// How `jwt` mode verifies tokens (`[api] jwt_*` / `SCORIA_AUTH_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// A JWKS file path or an `https://` URL (`SCORIA_AUTH_JWKS`).
    pub jwks: Option<String>,
    /// An issuer URL whose OIDC discovery names the JWKS (`SCORIA_AUTH_OIDC_ISSUER`).
    pub oidc_issuer: Option<String>,
    /// The `iss` tokens must carry (`SCORIA_AUTH_ISSUER`; the OIDC issuer if unset).
    pub issuer: Option<String>,
    /// The `aud` tokens must carry (`SCORIA_AUTH_AUDIENCE`).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (`SCORIA_AUTH_LEEWAY_SECS`).
    pub leeway_secs: u64,
    /// The claims carrying project, user and roles.
    pub claims: Claims,
    /// A CA file to trust for the `https://` fetches (`SCORIA_AUTH_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// How often the JWKS is fetched again (`SCORIA_AUTH_JWKS_REFRESH_SECS`).
    pub refresh_secs: u64,
    /// Never fetched more often than this (`SCORIA_AUTH_JWKS_MIN_REFRESH_SECS`).
    pub min_refresh_secs: u64,
}

/// Why a token is refused (the message of the UNAUTHENTICATED answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with a JSON header.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    /// An HMAC algorithm.
    #[error("HMAC-signed tokens ({0}) are refused: only asymmetric signatures are accepted")]
    Hmac(String),
    /// An algorithm not accepted here.
    #[error(
        "token algorithm {0} is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"
    )]
    Algorithm(String),
    /// No key with the token's `kid`, even after a refresh.
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    /// The key of `kid` is not for the token's algorithm.
    #[error("signing key {kid} is not a {alg} key")]
    KeyAlgorithm {
        /// The key.
        kid: String,
        /// The token's algorithm.
        alg: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    Audience,
    /// A required claim is missing or has the wrong type.
    #[error("{0}")]
    Claim(String),
}

/// Verifies `jwt` mode tokens.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    jwks: Arc<Jwks>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    claims: Claims,
    refresh: Duration,
}

/// Who a verified token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The project claim.
    pub project_id: String,
    /// The user claim.
    pub user_id: String,
    /// The roles claim.
    pub roles: Vec<String>,
}

impl JwtVerifier {
    /// Loads the keys `settings` name (fetching them once) and checks the
    /// settings; the error names the setting that is wrong.
    pub async fn new(settings: &JwtSettings) -> Result<Self, String> {
        let fetcher = Fetcher::new(settings.ca_file.as_deref())
            .map_err(|e| format!("SCORIA_AUTH_CA_FILE (api.jwt_ca_file): {e}"))?;
        let source = match (&settings.jwks, &settings.oidc_issuer) {
            (Some(_), Some(_)) => {
                return Err("set SCORIA_AUTH_JWKS or SCORIA_AUTH_OIDC_ISSUER, not both".into());
            }
            (None, None) => {
                return Err(
                    "jwt auth mode needs SCORIA_AUTH_JWKS (a file or an https:// URL) or SCORIA_AUTH_OIDC_ISSUER"
                        .into(),
                );
            }
            (Some(jwks), None) if jwks.starts_with("https://") => Source::Url(jwks.clone()),
            (Some(jwks), None) if jwks.contains("://") => {
                return Err(format!(
                    "SCORIA_AUTH_JWKS (api.jwt_jwks): {jwks:?} is neither a file nor an https:// URL"
                ));
            }
            (Some(jwks), None) => Source::File(PathBuf::from(jwks)),
            (None, Some(issuer)) if issuer.starts_with("https://") => {
                Source::Discovery(issuer.clone())
            }
            (None, Some(issuer)) => {
                return Err(format!(
                    "SCORIA_AUTH_OIDC_ISSUER (api.jwt_oidc_issuer): {issuer:?} is not an https:// URL"
                ));
            }
        };
        let issuer = settings
            .issuer
            .clone()
            .or_else(|| settings.oidc_issuer.clone())
            .filter(|i| !i.is_empty())
            .ok_or("jwt auth mode needs SCORIA_AUTH_ISSUER (api.jwt_issuer): the iss tokens must carry")?;
        let audience = settings
            .audience
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or("jwt auth mode needs SCORIA_AUTH_AUDIENCE (api.jwt_audience): the aud tokens must carry")?;
        if settings.min_refresh_secs == 0 {
            return Err(
                "SCORIA_AUTH_JWKS_MIN_REFRESH_SECS (api.jwt_min_refresh_secs) must be at least 1"
                    .into(),
            );
        }
        let what = match &source {
            Source::File(_) => "SCORIA_AUTH_JWKS (api.jwt_jwks)",
            Source::Url(_) => "SCORIA_AUTH_JWKS (api.jwt_jwks)",
            Source::Discovery(_) => "SCORIA_AUTH_OIDC_ISSUER (api.jwt_oidc_issuer)",
        };
        let jwks = Jwks::load(
            source,
            fetcher,
            Duration::from_secs(settings.min_refresh_secs),
        )
        .await
        .map_err(|e| format!("{what}: {e}"))?;
        Ok(Self {
            jwks: Arc::new(jwks),
            issuer,
            audience,
            leeway_secs: settings.leeway_secs,
            claims: settings.claims.clone(),
            refresh: Duration::from_secs(settings.refresh_secs),
        })
    }

    /// How often the keys are fetched again (0: only on an unknown key).
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// Fetches the keys again (periodic refresh; failures keep the old keys).
    pub async fn refresh(&self) {
        self.jwks.refresh().await;
    }

    /// Verifies `token` and returns who it stands for.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity, JwtError> {
        let (alg, kid) = inspect_header(token)?;
        let keys = self.jwks.keys();
        let key = match keys.find(kid.as_deref()) {
            Some(key) => key.clone(),
            None => {
                // A key rotated in at the issuer: fetch again (rate-limited).
                let keys = self.jwks.refresh().await;
                keys.find(kid.as_deref())
                    .cloned()
                    .ok_or_else(|| match &kid {
                        Some(kid) => JwtError::UnknownKey(format!("{kid:?}")),
                        None => JwtError::UnknownKey(format!(
                            "(the token names no kid and the JWKS holds {} keys)",
                            keys.len()
                        )),
                    })?
            }
        };
        if !key.algorithms.contains(&alg) {
            return Err(JwtError::KeyAlgorithm {
                kid: format!("{:?}", kid.unwrap_or_default()),
                alg: format!("{alg:?}"),
            });
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|e| refusal(e.into_kind()))?;
        self.claims.identity(&data.claims)
    }
}

/// The header's `alg` (refusing `none` and HMAC with their own messages) and `kid`.
fn inspect_header(token: &str) -> Result<(Algorithm, Option<String>), JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("the header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the header is not JSON".into()))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("the header has no alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::Unsigned);
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(JwtError::Hmac(alg.to_owned()));
    }
    let parsed: Algorithm = alg
        .parse()
        .map_err(|_| JwtError::Algorithm(alg.to_owned()))?;
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed("the kid is not a string".into())),
    };
    Ok((parsed, kid))
}

fn refusal(kind: ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => {
            JwtError::Claim(format!("the token has no {claim} claim"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::Claim(format!("the token's {claim} claim has the wrong type"))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            JwtError::Algorithm("(not the key's)".into())
        }
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed("not base64url-encoded JSON".into())
        }
        ErrorKind::Json(_) => JwtError::Malformed("the payload is not a JSON object".into()),
        // A key that cannot verify (a broken JWKS entry) reads as a bad signature.
        _ => JwtError::BadSignature,
    }
}
