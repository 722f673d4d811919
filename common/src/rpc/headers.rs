//! The request context in AMQP headers: `x-request-id`, `x-project-id`,
//! `x-user-id`, `x-roles` (comma-separated) and the W3C `traceparent`.

use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::{context::RequestContext, traceparent::TraceParent};

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Header carrying the project id.
pub const PROJECT_ID: &str = "x-project-id";
/// Header carrying the user id.
pub const USER_ID: &str = "x-user-id";
/// Header carrying the roles, comma-separated.
pub const ROLES: &str = "x-roles";
/// Header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Writes `ctx` into AMQP headers. The `traceparent` is the current span's
/// when spans are exported (the publishing span becomes the remote parent);
/// otherwise the trace continues with a new span id.
pub fn encode(ctx: &RequestContext) -> FieldTable {
    let mut table = FieldTable::default();
    let mut put = |k: &str, v: String| {
        table.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
    };
    put(REQUEST_ID, ctx.request_id.clone());
    put(PROJECT_ID, ctx.project_id.clone());
    put(USER_ID, ctx.user_id.clone());
    put(ROLES, ctx.roles.join(","));
    let traceparent =
        crate::telemetry::context::current().unwrap_or_else(|| ctx.traceparent.child());
    put(TRACEPARENT, traceparent.to_string());
    table
}

/// The `traceparent` of AMQP headers, if there is a well-formed one.
pub fn traceparent(headers: Option<&FieldTable>) -> Option<TraceParent> {
    match headers?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(s) => TraceParent::parse(&String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => TraceParent::parse(s.as_str()),
        _ => None,
    }
}

/// Reads the context from AMQP headers. Missing or malformed entries are filled
/// in (a new request id, a new trace) rather than refused: a message without a
/// context is still a message.
pub fn decode(headers: Option<&FieldTable>) -> RequestContext {
    let get = |k: &str| -> Option<String> {
        match headers?.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }
    };
    RequestContext {
        request_id: get(REQUEST_ID)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(crate::context::new_request_id),
        project_id: get(PROJECT_ID).unwrap_or_default(),
        user_id: get(USER_ID).unwrap_or_default(),
        roles: get(ROLES)
            .map(|r| {
                r.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        traceparent: traceparent(headers).unwrap_or_else(TraceParent::new_root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_and_trace_continues() {
        let ctx = RequestContext::new("p1", "u1", vec!["member".into(), "reader".into()]);
        let back = decode(Some(&encode(&ctx)));
        assert_eq!(back.request_id, ctx.request_id);
        assert_eq!(back.project_id, "p1");
        assert_eq!(back.user_id, "u1");
        assert_eq!(back.roles, vec!["member".to_owned(), "reader".to_owned()]);
        assert_eq!(back.traceparent.trace_id, ctx.traceparent.trace_id);
    }

    #[test]
    fn missing_headers_get_fresh_ids() {
        let ctx = decode(None);
        assert!(ctx.request_id.starts_with("req-"));
        assert!(ctx.roles.is_empty());
    }
}
