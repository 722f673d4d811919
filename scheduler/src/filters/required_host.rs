//! RequiredHostFilter: a volume made from another volume or a snapshot can only
//! be made by the backend holding its source, so a request naming a
//! `required_host` fits only that `host@backend`'s pools. It is not configurable:
//! the pipeline runs it first whenever a request names a host.

use super::{HostFilter, RequestSpec};
use crate::host_state::HostState;

/// Keeps the pools of the required `host@backend` (every pool, if none is required).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequiredHostFilter;

impl RequiredHostFilter {
    /// The filter's name.
    pub const NAME: &'static str = "RequiredHostFilter";
}

impl HostFilter for RequiredHostFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        // A `#pool` suffix, if given, pins the pool too.
        match spec.required_host.split_once('#') {
            _ if spec.required_host.is_empty() => true,
            Some((_, _)) => host.pool_key == spec.required_host,
            None => host.host == spec.required_host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{pool, spec};

    #[test]
    fn no_required_host_means_any() {
        assert!(RequiredHostFilter.passes(&pool("n1@file", 10.0, 10.0), &spec(1)));
    }

    #[test]
    fn only_the_required_backend_passes() {
        let mut s = spec(1);
        s.required_host = "n1@file".into();
        assert!(RequiredHostFilter.passes(&pool("n1@file", 10.0, 10.0), &s));
        assert!(!RequiredHostFilter.passes(&pool("n2@file", 10.0, 10.0), &s));
        assert!(
            !RequiredHostFilter.passes(&pool("n1@qcow2", 10.0, 10.0), &s),
            "another backend of the same machine holds no source"
        );
        s.required_host = "n1@file#pool".into();
        assert!(RequiredHostFilter.passes(&pool("n1@file", 10.0, 10.0), &s));
        s.required_host = "n1@file#other".into();
        assert!(!RequiredHostFilter.passes(&pool("n1@file", 10.0, 10.0), &s));
    }
}
