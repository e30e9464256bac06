//! Runs the workspace integration-test modules that concern this crate (`tests/spec_reader.rs`,
//! `tests/format_golden.rs`) as part of `cargo test -p sgdwalk-format`, without building the
//! libtorch-linked test binary.

#[path = "../../tests/format_golden.rs"]
mod format_golden;
#[path = "../../tests/spec_reader.rs"]
mod spec_reader;
