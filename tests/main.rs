//! Integration tests: one binary, so libtorch is linked once.

mod analyzer;
mod format_golden;
mod recorder;
mod spec_reader;
mod util;
mod workload;
