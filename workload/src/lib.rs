//! Models, datasets, augmentation, the canonical state order and evaluation that the recorder
//! and the analyzer share, so the analyzer evaluates exactly what the recorder trained.
//!
//! - [`ModelSpec`] / [`Model`]: the paper's MLP, VGG-11-BN, pre-activation ResNet-20/56, and a
//!   small CNN, each rebuilt from a serializable description.
//! - [`StateLayout`]: parameters and BatchNorm buffers sorted by name, flattened to one f32
//!   vector and back, bit-exactly.
//! - [`Dataset`]: MNIST / Fashion-MNIST idx (plain or .gz), CIFAR-10 binary (any record count),
//!   synthetic data, your own safetensors file ([`tensors`], memory-mapped); index-based
//!   splits; a [`DatasetIdentity`] of file checksums.
//! - [`AugChoice`]: crop/flip choices recorded per sample and replayed exactly.
//! - [`evaluate`]: exact mean loss and accuracy under a [`BnPolicy`] over the batches of
//!   [`eval::bn_batches`]; gradients and Hessian-vector products for curvature.
//! - [`RunDescription`]: what a recording's metadata says about its run, and
//!   [`run::derive_seed`], from which every seed of a run derives.
//! - [`copy::Copier`]: asynchronous device-to-host copies on a side stream, for the recorder's
//!   snapshot path.
//! - [`progress::progress_bar`]: the command-line tools' progress bar.

pub mod augment;
pub mod copy;
pub mod data;
pub mod error;
pub mod eval;
pub mod jit;
pub mod models;
pub mod progress;
pub mod run;
pub mod sampling;
pub mod state;
pub mod tensors;

pub use augment::{AUG_BYTES_PER_SAMPLE, AugChoice};
pub use data::{Dataset, DatasetIdentity, DatasetName, DatasetSpec, Split, SyntheticSpec};
pub use error::WorkloadError;
pub use eval::{BnPolicy, EvalSums, evaluate};
pub use models::{Model, ModelSpec};
pub use run::RunDescription;
pub use state::{StateDType, StateEntry, StateLayout};
pub use tensors::{TensorsHeader, TensorsSpec};

/// Parses `auto`, `cpu`, `cuda` or `cuda:N` into a device; `auto` picks CUDA when available.
pub fn parse_device(s: &str) -> Result<tch::Device, String> {
    match s {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => require_cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => require_cuda(n),
            _ => Err(format!(
                "unknown device {other:?} (expected auto, cpu, cuda or cuda:N)"
            )),
        },
    }
}

fn require_cuda(n: usize) -> Result<tch::Device, String> {
    let count = tch::Cuda::device_count() as usize;
    if n < count {
        Ok(tch::Device::Cuda(n))
    } else if count == 0 {
        Err(format!(
            "cuda:{n} requested, but CUDA is not available on this machine"
        ))
    } else {
        Err(format!(
            "cuda:{n} requested, but only {count} CUDA device(s) exist"
        ))
    }
}
