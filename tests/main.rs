//! Integration tests: one binary, so libtorch is linked once.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analyzer;
mod format_golden;
mod interop;
mod recorder;
mod report;
mod spec_reader;
mod tensors_dataset;
mod torchscript;
mod util;
mod workload;
