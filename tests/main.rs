//! Integration tests: one binary, so libtorch is linked once.

mod util;
mod workload;
