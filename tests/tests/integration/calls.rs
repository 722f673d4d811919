//! The request table of the API ([`Call`]), shared with the other test targets.

pub use scoria_tests::calls::Call;
