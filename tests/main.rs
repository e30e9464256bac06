//! Integration tests: one binary, so libtorch is linked once.

mod recorder;
mod util;
mod workload;
