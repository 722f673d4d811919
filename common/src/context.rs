//! The request context: who asked, for which project, under which request id and
//! trace. Built once at the edge (the API's auth layer) and carried unchanged in
//! every bus message's headers, so logs and notifications of all processes name
//! the same request.

use crate::traceparent::TraceParent;

/// Who made a request and how to follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The request id (`req-<uuid>`), shown in logs and notifications.
    pub request_id: String,
    /// The project (tenant) the request acts for.
    pub project_id: String,
    /// The user who made it.
    pub user_id: String,
    /// The user's roles (`admin`, `member`, `reader`).
    pub roles: Vec<String>,
    /// The W3C trace context of the request.
    pub traceparent: TraceParent,
}

impl RequestContext {
    /// A context for work a service starts by itself (periodic tasks, start-up
    /// clean-up): a fresh request id and trace, acting as the service with `admin`.
    pub fn internal(service: &str) -> Self {
        Self {
            request_id: new_request_id(),
            project_id: String::new(),
            user_id: service.to_owned(),
            roles: vec!["admin".to_owned()],
            traceparent: TraceParent::new_root(),
        }
    }

    /// A context for a user request with a fresh request id and trace.
    pub fn new(
        project_id: impl Into<String>,
        user_id: impl Into<String>,
        roles: Vec<String>,
    ) -> Self {
        Self {
            request_id: new_request_id(),
            project_id: project_id.into(),
            user_id: user_id.into(),
            roles,
            traceparent: TraceParent::new_root(),
        }
    }

    /// Whether the context holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the context is an administrator's.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
}

/// A new request id, `req-<uuid>` as OpenStack writes them.
pub fn new_request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}
