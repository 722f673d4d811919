//! RetryFilter: a rescheduled create skips what it already tried.

use super::{HostFilter, RequestSpec};
use crate::host_state::HostState;

/// Removes the pools (`host@backend#pool`) and backends (`host@backend`) in
/// the request's `tried_hosts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryFilter;

impl RetryFilter {
    /// The filter's name.
    pub const NAME: &'static str = "RetryFilter";
}

impl HostFilter for RetryFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.tried_hosts.is_empty()
            || !(spec.tried_hosts.contains(&host.pool_key) || spec.tried_hosts.contains(&host.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    #[test]
    fn first_attempt_passes_everything() {
        assert!(RetryFilter.passes(&pool("n@file", 10.0, 10.0), &spec(1)));
    }

    #[test]
    fn tried_pool_or_backend_is_skipped() {
        let host = pool("n@file", 10.0, 10.0);
        let other = pool("m@file", 10.0, 10.0);
        let mut s = spec(1);
        s.tried_hosts.insert("n@file#pool".into());
        assert!(!RetryFilter.passes(&host, &s));
        assert!(RetryFilter.passes(&other, &s));

        let mut s = spec(1);
        s.tried_hosts.insert("n@file".into());
        assert!(!RetryFilter.passes(&host, &s), "a whole backend tried");
        assert!(RetryFilter.passes(&other, &s));

        let mut s = spec(1);
        s.tried_hosts.insert("n@file#otherpool".into());
        assert!(
            RetryFilter.passes(&host, &s),
            "another pool of the same backend"
        );
    }
}
