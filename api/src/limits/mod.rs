//! What one caller may ask of the API at once, so one tenant cannot starve the
//! others: the size of a request message and of its headers, the streams of one
//! HTTP/2 connection, and a request rate per project (a token bucket each).
//!
//! | setting | env | default | enforced by |
//! | --- | --- | --- | --- |
//! | `api.max_request_bytes` | `SCORIA_API_MAX_REQUEST_BYTES` | 4 MiB | tonic's decoder (`max_decoding_message_size`), made RESOURCE_EXHAUSTED by [`LimitLayer`] |
//! | `api.max_metadata_bytes` | `SCORIA_API_MAX_METADATA_BYTES` | 16 KiB | [`LimitLayer`] (names + values); HTTP/2 itself cuts off twice that plus 4 KiB |
//! | `api.max_concurrent_streams` | `SCORIA_API_MAX_CONCURRENT_STREAMS` | 256 | HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` |
//! | `api.rate_limit` | `SCORIA_API_RATE_LIMIT` | 500/s per project, 0 off | [`LimitLayer`], RESOURCE_EXHAUSTED + `RetryInfo` |
//! | `api.rate_burst` | `SCORIA_API_RATE_BURST` | 2000 | [`LimitLayer`] |

mod bucket;
mod layer;

pub use self::{
    bucket::Buckets,
    layer::{LimitLayer, LimitService, metadata_bytes},
};

/// The limits of the API, from the `[api]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message, in bytes.
    pub max_request_bytes: usize,
    /// The most header bytes (names and values) of a request.
    pub max_metadata_bytes: usize,
    /// The most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Requests per second per project; 0 turns the rate limit off.
    pub rate_limit: u32,
    /// The most requests a project may send at once after a quiet spell.
    pub rate_burst: u32,
}

impl Limits {
    /// The defaults: 4 MiB, 16 KiB, 256 streams, 500 requests/s with a burst of 2000.
    pub const DEFAULT: Limits = Limits {
        max_request_bytes: 4 * 1024 * 1024,
        max_metadata_bytes: 16 * 1024,
        max_concurrent_streams: 256,
        rate_limit: 500,
        rate_burst: 2000,
    };

    /// The HTTP/2 header list size the server accepts at all: beyond it hyper
    /// refuses the stream itself (HTTP 431) before [`LimitLayer`] sees it, so it
    /// is well above the limit the layer enforces with a readable status.
    pub fn http2_header_list_bytes(&self) -> u32 {
        let bytes = self
            .max_metadata_bytes
            .saturating_mul(2)
            .saturating_add(4096);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
