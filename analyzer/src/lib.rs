//! `sgdwalk-analyze`: replays consecutive snapshot pairs of a recording and computes the
//! measurements of *A Walk with SGD* and more, as Parquet tables.
//!
//! The flow, one module per stage:
//!
//! recording → [`replay`] session → [`phases`] → [`tables`] in an [`dir`] → `report`
//!
//! - [`config`]: the settings (flags over a TOML file), the [`config::Phase`]s and their tables.
//! - [`analyze`]: work items over blocks of steps, sharded with `--shard i/n`, skipped on rerun.
//! - [`replay`]: the recorded model and data, rebuilt and checked; losses at θ_t + α·d_t.
//! - `phases`: one module per phase (geometry, interp, floors, barriers, curvature, run-level
//!   tables), each computing its rows of one work item; results pass between them typed.
//! - The numerics, free of I/O: [`metrics`] (‖d_t‖, cos(d_{t−1}, d_t), ‖θ_t − θ_0‖, total and
//!   per layer), [`floor`] and [`barrier`] (valley floors, barriers), [`curvature`] (Lanczos on
//!   Hessian-vector products, Hutchinson trace, ε-sharpness).
//! - [`tables`]: the Parquet schemas (with column-name constants) and the writer.
//! - [`dir`]: the analysis folder: manifest, run description, table paths, durable writes.
//! - `report` (cargo feature `report`, on by default): polars queries over the tables of one
//!   or more runs, the paper's claims with verdicts as Markdown, `summary.parquet`, figures.

pub mod analyze;
pub mod barrier;
pub mod cli;
pub mod config;
pub mod curvature;
pub mod dir;
pub mod error;
pub mod floor;
pub mod metrics;
pub mod phases;
pub mod replay;
#[cfg(feature = "report")]
pub mod report;
pub mod tables;

pub use config::{AnalyzeArgs, AnalyzeConfig, EvalSet};
pub use error::AnalyzeError;
