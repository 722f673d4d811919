//! The per-request helpers every service shares: the [`RequestContext`] the auth
//! layer put in the request, and the reply of a handler (its error turned into a
//! status in the one place that decides it, [`ApiError::into_status`]).

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
