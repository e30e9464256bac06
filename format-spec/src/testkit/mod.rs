//! The test-kit: what the crate's own tests, benches, examples and fuzzers share, and what the
//! library proper must not ship (generators that panic on misuse, a benchmark that panics on a
//! mismatch). Compiled only with the `testkit` feature, which is off by default.
//!
//! - [`synth`]: a seeded PRNG, synthetic SGD trajectories, and the definitions of the golden,
//!   corrupt and edge fixtures under `fixtures/`.
//! - [`codec_bench`]: the side-by-side codec benchmark behind `benches/codec.rs`.

pub mod codec_bench;
pub mod synth;
