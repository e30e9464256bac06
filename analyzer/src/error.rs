//! Errors of the analyzer library.

use std::path::PathBuf;

use crate::barrier::BarrierError;
use crate::curvature::CurvatureError;
use crate::floor::FloorError;
use crate::metrics::MetricsError;

/// Everything that stops an analysis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzeError {
    /// A setting that cannot work.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },
    /// The TOML configuration does not parse.
    #[error("bad configuration file: {reason}: {}", path.display())]
    BadConfigFile { path: PathBuf, reason: String },
    /// The output folder holds another analysis (or one this version must not extend).
    #[error("{} {reason}", out.display())]
    FolderInUse { out: PathBuf, reason: String },
    /// The recording's metadata is not an sgdwalk-record run description.
    #[error("the recording has no usable run description ({reason}): {}", path.display())]
    NoRunDescription { path: PathBuf, reason: String },
    /// The dataset found is not the one the run was recorded with.
    #[error("dataset mismatch: the recording was made with {expected}, but {} holds {found}", data_dir.display())]
    DatasetMismatch {
        data_dir: PathBuf,
        expected: String,
        found: String,
    },
    /// Nothing to analyze.
    #[error("the recording has no consecutive steps in the requested range (steps present: {present}): {}", path.display())]
    NoPairs { path: PathBuf, present: String },
    /// The per-step geometry could not be computed from the recorded states (their layout).
    #[error("geometry of step {step}")]
    Geometry {
        step: u64,
        #[source]
        source: MetricsError,
    },
    /// The valley floor of a step could not be located.
    #[error("valley floor of step {step} ({eval_set}, {bn_policy})")]
    Floor {
        step: u64,
        eval_set: String,
        bn_policy: &'static str,
        #[source]
        source: Box<FloorError<AnalyzeError>>,
    },
    /// A barrier could not be computed from the losses along its segment.
    #[error("barrier {step_from} -> {step_to} along the {path} ({eval_set}, {bn_policy})")]
    Barrier {
        step_from: u64,
        step_to: u64,
        path: crate::phases::Point,
        eval_set: String,
        bn_policy: &'static str,
        #[source]
        source: BarrierError,
    },
    /// An eigenvalue or trace estimate failed.
    #[error("curvature at the {point} of step {step} ({eval_set}, {bn_policy})")]
    Curvature {
        step: u64,
        point: crate::phases::Point,
        eval_set: String,
        bn_policy: &'static str,
        #[source]
        source: Box<CurvatureError<AnalyzeError>>,
    },
    /// The analysis folder's own files.
    #[error(transparent)]
    Dir(#[from] crate::dir::DirError),
    /// Reading the recording failed.
    #[error(transparent)]
    Format(#[from] sgdwalk_format::FormatError),
    /// Model, data or evaluation failed.
    #[error(transparent)]
    Workload(#[from] sgdwalk_workload::WorkloadError),
    /// Writing or reading a table failed.
    #[error(transparent)]
    Table(#[from] crate::tables::TableError),
    /// An I/O error.
    #[error("i/o error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
