//! Tests of the backup engine and its targets.
