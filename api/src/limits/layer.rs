//! The tower layer that applies [`Limits`] to a gRPC service. It sits inside the
//! auth layer, so it knows the project (the [`RequestContext`] in the request's
//! extensions):
//!
//! ```text
//!  request ─▶ AuthService ─▶ LimitService ─▶ XServiceServer (decodes, ≤ max_request_bytes)
//!                             │ headers > max_metadata_bytes  → RESOURCE_EXHAUSTED
//!                             │ project's bucket empty        → RESOURCE_EXHAUSTED + RetryInfo
//!                             └ tonic's own refusals on the way back, made readable:
//!                               message too large (OUT_OF_RANGE) → RESOURCE_EXHAUSTED,
//!                               undecodable body (INTERNAL)      → INVALID_ARGUMENT
//! ```

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use scoria_common::RequestContext;
use tonic::{Code, body::Body, server::NamedService};
use tower::{Layer, Service};

use super::{Limits, bucket::Buckets};
use crate::error::ApiError;

/// The start of tonic's message for a request message over the size limit.
const TOO_LARGE: &str = "Error, decoded message length too large: found ";
/// The start of tonic's message for a request body that does not decode.
const UNDECODABLE: &str = "failed to decode Protobuf message: ";

/// The layer putting a [`LimitService`] around a gRPC service; clones share
/// the buckets, so one project has one bucket across every service.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    /// `None` when the rate limit is off.
    buckets: Option<Buckets>,
}

impl LimitLayer {
    /// A layer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        let buckets =
            (limits.rate_limit > 0).then(|| Buckets::new(limits.rate_limit, limits.rate_burst));
        Self {
            shared: Arc::new(Shared { limits, buckets }),
        }
    }

    /// The refusal of a request with `headers` from the caller `ctx`, if any.
    fn refusal(&self, headers: &HeaderMap, ctx: Option<&RequestContext>) -> Option<ApiError> {
        let limits = &self.shared.limits;
        let bytes = metadata_bytes(headers);
        if bytes > limits.max_metadata_bytes {
            return Some(ApiError::MetadataTooLarge {
                bytes,
                limit: limits.max_metadata_bytes,
            });
        }
        let (buckets, ctx) = (self.shared.buckets.as_ref()?, ctx?);
        let retry_after = buckets.take(&ctx.project_id).err()?;
        Some(ApiError::RateLimited {
            project_id: ctx.project_id.clone(),
            rate: limits.rate_limit,
            burst: limits.rate_burst,
            retry_after,
        })
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The size of a request's headers as the limit counts it: every name and value.
pub fn metadata_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

// === impl LimitService ===

/// A gRPC service behind the limits (see the module docs).
#[derive(Debug, Clone)]
pub struct LimitService<S> {
    inner: S,
    layer: LimitLayer,
}

impl<S: NamedService> NamedService for LimitService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for LimitService<S>
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ctx = request.extensions().get::<RequestContext>();
        if let Some(refused) = self.layer.refusal(request.headers(), ctx) {
            tracing::info!(
                path = %request.uri().path(),
                project_id = ctx.map(|c| c.project_id.as_str()).unwrap_or_default(),
                error = %refused,
                "request refused by a limit"
            );
            let response = refused.into_status().into_http::<Body>();
            return Box::pin(std::future::ready(Ok(response)));
        }
        // The clone is not ready; call the one that is (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.layer.shared.limits.max_request_bytes;
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(readable(response, limit))
        })
    }
}

/// `response`, unless it is one of tonic's own refusals of the request body:
/// a message over the size limit becomes [`ApiError::RequestTooLarge`], a body
/// that does not decode an INVALID_ARGUMENT naming the field prost names.
fn readable(response: Response<Body>, limit: usize) -> Response<Body> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let refused = match status.code() {
        Code::OutOfRange => status.message().strip_prefix(TOO_LARGE).map(|rest| {
            let bytes = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            ApiError::RequestTooLarge {
                bytes,
                limit: limit as u64,
            }
        }),
        Code::Internal => status.message().strip_prefix(UNDECODABLE).map(undecodable),
        _ => None,
    };
    match refused {
        Some(err) => err.into_status().into_http::<Body>(),
        None => response,
    }
}

/// The refusal of a body prost could not decode; `rest` is prost's message
/// after [`UNDECODABLE`]: `Message.field: Inner.field: what went wrong`.
fn undecodable(rest: &str) -> ApiError {
    let mut path = Vec::new();
    let mut what = rest;
    while let Some((head, tail)) = what.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(ident(message) && ident(field)) {
            break;
        }
        path.push(field.to_owned());
        what = tail;
    }
    let field = if path.is_empty() {
        "request".to_owned()
    } else {
        path.join(".")
    };
    ApiError::invalid(field, format!("the request does not decode: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_bodies_name_the_field_prost_names() {
        let field = |rest: &str| match undecodable(rest) {
            ApiError::InvalidField { field, reason } => (field.into_owned(), reason),
            other => panic!("{other}"),
        };
        let (f, why) =
            field("GetVolumeRequest.id: invalid wire type: Varint (expected LengthDelimited)");
        assert_eq!(f, "id");
        assert_eq!(
            why,
            "the request does not decode: invalid wire type: Varint (expected LengthDelimited)"
        );
        let (f, _) = field(
            "CreateAttachmentRequest.connector: Connector.host: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(f, "connector.host");
        let (f, _) = field("buffer underflow");
        assert_eq!(f, "request");
    }

    #[test]
    fn metadata_counts_names_and_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-project-id", "p1".parse().expect("value"));
        headers.insert("te", "trailers".parse().expect("value"));
        assert_eq!(metadata_bytes(&headers), 12 + 2 + 2 + 8);
    }
}
