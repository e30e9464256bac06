//! Errors of the analyzer library.

use std::path::PathBuf;

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
    /// Reading the recording failed.
    #[error(transparent)]
    Format(#[from] sgdwalk_format::FormatError),
    /// Model, data or evaluation failed.
    #[error(transparent)]
    Workload(#[from] sgdwalk_workload::WorkloadError),
    /// Writing a table failed.
    #[error(transparent)]
    Table(#[from] crate::tables::TableError),
    /// An I/O error.
    #[error("{source}: {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
