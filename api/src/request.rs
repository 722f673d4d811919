//! The per-request helpers every service shares: the [`RequestContext`] the auth
//! layer put in the request, and the reply of a handler (its error turned into a
//! status in the one place that decides it, [`ApiError::into_status`]).
//!
//! Each RPC of a tonic service is one line, [`handle`] (the handler answers with
//! the proto message) or [`handle_as`] (it answers with a domain value, converted
//! by its `From<&T>` in `scoria_common::translation`):
//!
//! ```text
//!  Request<T> ─context─▶ handler(&ctx, T) ─▶ ApiResult<R> ─reply─▶ Result<Response<R>, Status>
//! ```

use scoria_common::RequestContext;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};

/// The context the auth layer put in the request.
pub(crate) fn context<T>(request: &Request<T>) -> Result<RequestContext, Status> {
    request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(|| {
            ApiError::Internal("no request context: the auth layer is missing".into()).into()
        })
}

/// The reply of a handler; failures are logged with their code.
pub(crate) fn reply<T>(result: ApiResult<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|err| {
        let text = err.to_string();
        let status = err.into_status();
        tracing::info!(code = ?status.code(), error = %text, "request failed");
        status
    })
}

/// Runs `handler` with the request's context and message, and replies with its
/// answer (see [`reply`]).
pub(crate) async fn handle<T, R>(
    request: Request<T>,
    handler: impl AsyncFnOnce(&RequestContext, T) -> ApiResult<R>,
) -> Result<Response<R>, Status> {
    let ctx = context(&request)?;
    reply(handler(&ctx, request.into_inner()).await)
}

/// [`handle`] for a handler answering with a domain value `R`, sent as its proto `P`.
pub(crate) async fn handle_as<T, R, P>(
    request: Request<T>,
    handler: impl AsyncFnOnce(&RequestContext, T) -> ApiResult<R>,
) -> Result<Response<P>, Status>
where
    P: for<'a> From<&'a R>,
{
    handle(request, async |ctx, req| {
        handler(ctx, req).await.map(|value| P::from(&value))
    })
    .await
}
