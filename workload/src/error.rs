//! Errors of the workload crate.

use std::path::PathBuf;

/// Everything that can go wrong building models, loading data or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// A model name that is not one of [`crate::ModelSpec::NAMES`].
    #[error("unknown model {name:?} (known: mlp, small-cnn, vgg11, resnet20, resnet56)")]
    UnknownModel { name: String },
    /// A model description with impossible settings.
    #[error("invalid model description {spec}: {reason}")]
    InvalidModel { spec: String, reason: String },
    /// A dataset name that is not known.
    #[error("unknown dataset {name:?} (known: mnist, fashion-mnist, cifar10, synthetic)")]
    UnknownDataset { name: String },
    /// A dataset file is missing.
    #[error("dataset file not found (run scripts/setup or pass --data-dir): {}", path.display())]
    DatasetFileMissing { path: PathBuf },
    /// An I/O error while reading a dataset file.
    #[error("cannot read dataset file {}: {source}", path.display())]
    DatasetIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset file whose header or size is not what its format requires.
    #[error("bad dataset file: {field}: expected {expected}, found {found}: {}", path.display())]
    DatasetFormat {
        path: PathBuf,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// Train and test files that disagree (image size, channels).
    #[error("dataset {name}: {reason}")]
    DatasetInconsistent { name: String, reason: String },
    /// A split or sample range outside the data.
    #[error("sample {sample} is out of range for {split} ({len} samples)")]
    SampleOutOfRange {
        split: &'static str,
        sample: u64,
        len: usize,
    },
    /// Augmentation choices that do not fit the batch.
    #[error("augmentation choices: {reason}")]
    BadAugmentation { reason: String },
    /// A flat state that does not match the model.
    #[error("state does not match the model: {reason}")]
    StateMismatch { reason: String },
    /// An evaluation over no samples.
    #[error("cannot evaluate on an empty sample list")]
    EmptyEvaluation,
    /// An error reported by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
