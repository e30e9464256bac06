//! Integration tests: one binary, so libtorch is linked once.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A scenario test reads top to bottom as the story it checks (record, break, analyze, compare);
// the 150-line limit is for library code.
#![allow(clippy::too_many_lines)]

mod analyzer;
mod interop;
mod recorder;
mod report;
// The format crate's independent reader, written from SPEC.md alone, lives beside the format
// crate's tests; the interop test reads Python-written files with it too.
#[path = "../format-spec/tests/spec_reader/reader.rs"]
#[allow(
    dead_code,
    reason = "the interop test uses only parse and trainable_flags"
)]
mod spec_reader;
#[path = "support/table_rows.rs"]
mod table_rows;
mod tensors_dataset;
mod torchscript;
mod util;
mod workload;
