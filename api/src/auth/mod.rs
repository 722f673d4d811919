//! Authentication and authorisation at the edge: a tower layer around each Scoria
//! gRPC service that turns the request's headers into a [`RequestContext`], puts it
//! in the request's extensions, and refuses what the policy (see `policy/`) does
//! not allow the caller.
//! Handlers never parse headers. Health and reflection are not wrapped.
//!
//! - `noauth` mode (local use): project from `x-project-id`, user from `x-user-id`
//!   (default `noauth`), roles from `x-roles` (comma-separated, default `admin,member`).
//! - `token` mode: `authorization: Bearer <token>`, looked up in the tokens file.
//!
//! Every request gets a request id (a valid incoming `x-request-id` is kept) that is
//! also returned in the response headers, and a trace context (`traceparent`).

use std::{
    collections::HashMap,
    convert::Infallible,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use scoria_common::{
    RequestContext, context::new_request_id, telemetry::context as telemetry,
    traceparent::TraceParent,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{body::Body, server::NamedService};
use tower::{Layer, Service};
use tracing::Instrument;

pub use self::jwt::{JwtSettings, JwtVerifier};
use crate::{
    config::AuthMode,
    error::{ApiError, ApiResult},
    policy::Policy,
};

/// The request id header, read from requests and written on responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest project or user id accepted from headers.
const MAX_ID_CHARS: usize = 255;
/// The full path of a known `method` (tests name methods by their bare name).
#[cfg(test)]
pub(crate) fn path_of(method: &str) -> &'static str {
    Policy::methods()
        .map(|(path, _)| path)
        .find(|path| path.rsplit('/').next() == Some(method))
        .unwrap_or_else(|| panic!("no method {method}"))
}

/// Whether `ctx` may call the method at `path` under the default policy.
#[cfg(test)]
pub(crate) fn authorize(ctx: &RequestContext, path: &str) -> ApiResult<()> {
    Policy::defaults().enforce(ctx, path)
}

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid tokens file.
    #[error("tokens file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One entry of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    project_id: String,
    user_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// The tokens file: `[[token]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// Who a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    project_id: String,
    user_id: String,
    roles: Vec<String>,
}

/// How requests are authenticated: `noauth` or bearer tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// `None` in noauth mode; else the tokens, keyed by their SHA-256 (so a
    /// lookup compares digests, not the secrets themselves).
    tokens: Option<Arc<HashMap<[u8; 32], Identity>>>,
    /// The verifier of `jwt` mode.
    jwt: Option<Arc<JwtVerifier>>,
}

impl Authenticator {
    /// The authenticator of `mode`; token mode reads `tokens_file`.
    pub fn from_config(mode: AuthMode, tokens_file: Option<&Path>) -> Result<Self, TokensError> {
        match (mode, tokens_file) {
            (AuthMode::Noauth, _) => Ok(Self::noauth()),
            (AuthMode::Token, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_tokens_toml(&text).map_err(|reason| TokensError::Invalid {
                    path: path.to_owned(),
                    reason,
                })
            }
            (AuthMode::Token, None) => Err(TokensError::Invalid {
                path: PathBuf::new(),
                reason: "token auth mode needs api.tokens_file".into(),
            }),
            (AuthMode::Jwt, _) => Err(TokensError::Invalid {
                path: PathBuf::new(),
                reason: "jwt auth mode is built with Authenticator::jwt".into(),
            }),
        }
    }

    /// The `jwt` mode authenticator over `verifier`.
    pub fn jwt(verifier: JwtVerifier) -> Self {
        Self {
            tokens: None,
            jwt: Some(Arc::new(verifier)),
        }
    }

    /// The verifier of `jwt` mode, if this is it.
    pub fn jwt_verifier(&self) -> Option<Arc<JwtVerifier>> {
        self.jwt.clone()
    }

    /// Builds the context of a request from its headers, verifying a JWT in
    /// `jwt` mode (which may fetch the issuer's keys once).
    pub async fn authenticate_request(&self, headers: &HeaderMap) -> ApiResult<RequestContext> {
        let Some(jwt) = &self.jwt else {
            return self.authenticate(headers);
        };
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .and_then(bearer)
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing authorization: Bearer <JWT> header".into())
            })?;
        let identity = jwt
            .verify(token)
            .await
            .map_err(|err| ApiError::Unauthenticated(format!("invalid token: {err}")))?;
        Ok(context(
            headers,
            identity.project_id,
            identity.user_id,
            identity.roles,
        ))
    }

    /// The noauth authenticator: trusts the `x-project-id`, `x-user-id` and `x-roles` headers.
    pub fn noauth() -> Self {
        Self {
            tokens: None,
            jwt: None,
        }
    }

    /// A token authenticator from the text of a tokens file.
    pub fn from_tokens_toml(text: &str) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tokens = HashMap::new();
        for (i, entry) in file.token.into_iter().enumerate() {
            if entry.token.is_empty() || entry.project_id.is_empty() || entry.user_id.is_empty() {
                return Err(format!(
                    "token #{}: token, project_id and user_id must not be empty",
                    i + 1
                ));
            }
            let identity = Identity {
                project_id: entry.project_id,
                user_id: entry.user_id,
                roles: entry.roles,
            };
            if tokens.insert(digest(&entry.token), identity).is_some() {
                return Err(format!("token #{} appears twice", i + 1));
            }
        }
        Ok(Self {
            jwt: None,
            tokens: Some(Arc::new(tokens)),
        })
    }

    /// Builds the context of a request from its headers (`noauth` and `token`
    /// modes; `jwt` mode goes through [`Authenticator::authenticate_request`]).
    pub fn authenticate(&self, headers: &HeaderMap) -> ApiResult<RequestContext> {
        if self.jwt.is_some() {
            return Err(ApiError::Unauthenticated(
                "jwt mode: tokens are verified asynchronously".into(),
            ));
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let (project_id, user_id, roles) = match &self.tokens {
            None => {
                let project = header("x-project-id").unwrap_or_default();
                if project.is_empty()
                    || project.chars().count() > MAX_ID_CHARS
                    || project.chars().any(char::is_control)
                {
                    return Err(ApiError::Unauthenticated(
                        "noauth mode: set the x-project-id header".into(),
                    ));
                }
                let user = header("x-user-id")
                    .filter(|u| !u.is_empty())
                    .unwrap_or("noauth");
                if user.chars().count() > MAX_ID_CHARS || user.chars().any(char::is_control) {
                    return Err(ApiError::Unauthenticated(format!(
                        "noauth mode: x-user-id must be at most {MAX_ID_CHARS} characters, \
                         without control characters"
                    )));
                }
                let roles = header("x-roles")
                    .map(|r| {
                        r.split(',')
                            .map(str::trim)
                            .filter(|r| !r.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .filter(|r: &Vec<String>| !r.is_empty())
                    .unwrap_or_else(|| vec!["admin".to_owned(), "member".to_owned()]);
                (project.to_owned(), user.to_owned(), roles)
            }
            Some(tokens) => {
                let token = header("authorization").and_then(bearer).ok_or_else(|| {
                    ApiError::Unauthenticated("missing authorization: Bearer <token> header".into())
                })?;
                let identity = tokens
                    .get(&digest(token))
                    .ok_or_else(|| ApiError::Unauthenticated("unknown token".into()))?;
                (
                    identity.project_id.clone(),
                    identity.user_id.clone(),
                    identity.roles.clone(),
                )
            }
        };
        Ok(context(headers, project_id, user_id, roles))
    }
}

/// The context of a request by an authenticated caller: a valid incoming request
/// id and trace context are kept.
fn context(
    headers: &HeaderMap,
    project_id: String,
    user_id: String,
    roles: Vec<String>,
) -> RequestContext {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let request_id = header(REQUEST_ID_HEADER)
        .filter(|id| is_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let traceparent = header("traceparent")
        .and_then(TraceParent::parse)
        .unwrap_or_else(TraceParent::new_root);
    RequestContext {
        request_id,
        project_id,
        user_id,
        roles,
        traceparent,
    }
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `req-<uuid>`, as [`new_request_id`] makes them.
fn is_request_id(value: &str) -> bool {
    value
        .strip_prefix("req-")
        .is_some_and(|id| uuid::Uuid::try_parse(id).is_ok())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

// === impl AuthLayer ===

/// The tower layer putting an [`AuthService`] around a gRPC service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    policy: Arc<Policy>,
}

impl AuthLayer {
    /// A layer authenticating with `auth`, under the default policy.
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth: Arc::new(auth),
            policy: Arc::new(Policy::defaults()),
        }
    }

    /// The same layer deciding by `policy`.
    pub fn with_policy(self, policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
            ..self
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            policy: self.policy.clone(),
        }
    }
}

// === impl AuthService ===

/// A gRPC service behind authentication (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    policy: Arc<Policy>,
}

impl<S: NamedService> NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone is not ready; call the one that is (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (auth, policy) = (self.auth.clone(), self.policy.clone());
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let method = path.rsplit('/').next().unwrap_or_default().to_owned();
            let outcome = match auth.authenticate_request(request.headers()).await {
                Ok(ctx) => policy.enforce(&ctx, &path).map(|()| ctx),
                Err(err) => Err(err),
            };
            let mut ctx = match outcome {
                Ok(ctx) => ctx,
                Err(err) => {
                    tracing::info!(method = %method, error = %err, "request refused");
                    let mut response = err.into_status().into_http::<Body>();
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .filter(|id| is_request_id(id))
                        .map(str::to_owned)
                        .unwrap_or_else(new_request_id);
                    if let Some(id) = header_value(&request_id) {
                        response.headers_mut().insert(REQUEST_ID_HEADER, id);
                    }
                    return Ok(response);
                }
            };
            let span = tracing::info_span!(
                "grpc",
                method = %method,
                request_id = %ctx.request_id,
                trace_id = tracing::field::Empty,
                project_id = %ctx.project_id,
                user_id = %ctx.user_id,
            );
            // The server span continues the client's trace (or starts one);
            // the context names the span, so the bus carries it on.
            if let Some(own) = telemetry::continue_trace(&span, || {
                request
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(TraceParent::parse)
            }) {
                ctx.traceparent = own;
            }
            telemetry::record_trace_id(&span, &ctx.traceparent);
            let request_id = header_value(&ctx.request_id);
            request.extensions_mut().insert(ctx);
            async move {
                let mut response = inner.call(request).await?;
                ensure_reason(&mut response);
                if let Some(id) = request_id {
                    response.headers_mut().insert(REQUEST_ID_HEADER, id);
                }
                Ok(response)
            }
            .instrument(span)
            .await
        })
    }
}

/// The last resort at the edge: an error response whose status carries no
/// `ErrorInfo` (one tonic made itself: an unknown method, a body it cannot
/// decode) gets the reason its code implies.
fn ensure_reason(response: &mut Response<Body>) {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return;
    };
    if status.code() == tonic::Code::Ok || scoria_common::status::reason_of(&status).is_some() {
        return;
    }
    let with = scoria_common::status::ensure_reason(status);
    if let Err(err) = with.add_header(response.headers_mut()) {
        tracing::warn!(error = %err, "cannot add an ErrorInfo to an error response");
    }
}

fn header_value(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

pub mod jwt;
#[cfg(test)]
mod tests;
