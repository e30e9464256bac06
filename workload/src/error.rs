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
    #[error(
        "unknown dataset {name:?} (known: mnist, fashion-mnist, cifar10, synthetic, tensors:PATH)"
    )]
    UnknownDataset { name: String },
    /// A dataset file is missing; `hint` names the file names looked for and where to get them.
    #[error("dataset file not found: {} ({hint})", path.display())]
    DatasetFileMissing { path: PathBuf, hint: String },
    /// Files of a known dataset (recognized by their checksums) given as another one.
    #[error("the files in {} are {found} files, not {asked}: use --dataset {}", dir.display(), found.as_str())]
    WrongDataset {
        dir: PathBuf,
        asked: crate::data::DatasetName,
        found: crate::data::DatasetName,
    },
    /// An I/O error while reading a dataset file.
    #[error("cannot read dataset file {}", path.display())]
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
    /// A `tensors:PATH` dataset file that does not exist.
    #[error("safetensors dataset file not found: {}", path.display())]
    TensorsFileMissing { path: PathBuf },
    /// A `tensors:PATH` file that is not a readable safetensors file.
    #[error("not a safetensors file ({reason}): {}", path.display())]
    NotSafetensors { path: PathBuf, reason: String },
    /// A tensor the dataset layout requires is absent (`train_x`, `train_y`, or the `_y` of a
    /// split whose `_x` is present, and vice versa).
    #[error("tensor {tensor} is missing{}: {}", required_by.map(|r| format!(" ({r} is present)")).unwrap_or_default(), path.display())]
    TensorMissing {
        path: PathBuf,
        tensor: &'static str,
        /// The tensor whose presence requires this one, if it is optional on its own.
        required_by: Option<&'static str>,
    },
    /// A tensor stored with a dtype the dataset cannot use.
    #[error("tensor {tensor} has dtype {found}, allowed: {allowed}: {}", path.display())]
    TensorDtype {
        path: PathBuf,
        tensor: &'static str,
        found: String,
        allowed: String,
    },
    /// A tensor whose rank or per-sample shape is not what the layout requires.
    #[error("tensor {tensor} has shape {found:?}, expected {expected}: {}", path.display())]
    TensorShape {
        path: PathBuf,
        tensor: &'static str,
        found: Vec<usize>,
        expected: String,
    },
    /// Inputs and labels of one split with different sample counts.
    #[error("{x_tensor} holds {x_samples} samples but {y_tensor} holds {y_samples}: {}", path.display())]
    SampleCountMismatch {
        path: PathBuf,
        x_tensor: &'static str,
        x_samples: usize,
        y_tensor: &'static str,
        y_samples: usize,
    },
    /// A split tensor without samples.
    #[error("tensor {tensor} holds no samples: {}", path.display())]
    NoSamples { path: PathBuf, tensor: &'static str },
    /// A label outside `[0, classes)`.
    #[error("{tensor}[{index}] = {value} is not a class in [0, {classes}): {}", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        tensor: &'static str,
        index: usize,
        value: i128,
        classes: i64,
    },
    /// A NaN or infinite f32 input (the first one found, by its index in the tensor).
    #[error("{tensor}{index:?} = {value} is not finite: {}", path.display())]
    NonFiniteInput {
        path: PathBuf,
        tensor: &'static str,
        index: Vec<usize>,
        value: f32,
    },
    /// A `__metadata__` entry of the file that does not parse.
    #[error("metadata {key} = {value:?}: {reason}: {}", path.display())]
    BadTensorsMetadata {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
    /// Normalization values that do not fit the inputs (`source` is the metadata key or the
    /// flag they came from).
    #[error("normalization {source_name}: {reason}")]
    BadNormalization {
        source_name: &'static str,
        reason: String,
    },
    /// A split the dataset does not have (e.g. `test` of a file without `test_x`).
    #[error("the dataset has no {split} split (no tensor {tensor}): {}", path.display())]
    SplitMissing {
        split: &'static str,
        tensor: &'static str,
        path: PathBuf,
    },
    /// A flat state that does not match the model.
    #[error("state does not match the model: {reason}")]
    StateMismatch { reason: String },
    /// An evaluation over no samples.
    #[error("cannot evaluate on an empty sample list")]
    EmptyEvaluation,
    /// A TorchScript module that cannot be loaded or run.
    #[error("TorchScript module: {what}: {reason}")]
    TorchScript { what: String, reason: String },
    /// A TorchScript module whose output is not `[batch, classes]` logits for the data.
    #[error(
        "TorchScript module {module}: forward of a batch {input:?} gave {found:?}, expected [{batch}, {classes}] logits"
    )]
    ModelOutput {
        module: String,
        input: Vec<i64>,
        found: Vec<i64>,
        batch: i64,
        classes: i64,
    },
    /// A model without trainable parameters.
    #[error("model {module} has no trainable parameters (requires_grad tensors)")]
    NoTrainableParameters { module: String },
    /// A tensor of a dtype the recorded state cannot hold (or a parameter that is not f32).
    #[error("model {module}: tensor {tensor} has dtype {dtype}: {reason}")]
    UnsupportedDtype {
        module: String,
        tensor: String,
        dtype: String,
        reason: &'static str,
    },
    /// A device snapshot buffer, stream or copy that failed (see [`crate::copy`]).
    #[error("device copy: {what}: {reason}")]
    DeviceCopy { what: String, reason: String },
    /// An error reported by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
