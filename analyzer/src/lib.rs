//! `sgdwalk-analyze`: replays consecutive snapshot pairs of a recording and computes the
//! measurements of *A Walk with SGD* and more, as Parquet tables.
//!
//! - [`analyze`]: work items over blocks of steps, sharded with `--shard i/n`, skipped on rerun.
//! - [`replay`]: the recorded model and data, rebuilt and checked; losses at θ_t + α·d_t.
//! - [`metrics`]: per-step geometry (‖d_t‖, cos(d_{t−1}, d_t), ‖θ_t − θ_0‖), total and per layer.
//! - [`floor`], [`barrier`]: valley floors of each step and barriers along the floor.
//! - [`curvature`]: top Hessian eigenvalues (Lanczos on Hessian-vector products), Hutchinson
//!   trace, ε-sharpness.
//! - [`tables`]: the Parquet schemas and the atomic writer.
//! - [`report`]: polars queries over the tables of one or more runs, the paper's claims with
//!   verdicts as Markdown, `summary.parquet`, and PNG figures.

pub mod analyze;
pub mod barrier;
pub mod cli;
pub mod config;
pub mod curvature;
pub mod error;
pub mod floor;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod tables;

pub use config::{AnalyzeArgs, AnalyzeConfig, EvalSet};
pub use error::AnalyzeError;
