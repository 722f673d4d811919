//! Tests of the backup engine against a directory target (the S3 target runs
//! the same [`testkit`](super::testkit) checks in `scoria-tests`), a full disk,
//! and driver objects through `image.rs`.

mod dir;
mod full;
mod image;
