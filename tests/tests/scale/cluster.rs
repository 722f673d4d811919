//! Active-active volume services of one shared backend.
