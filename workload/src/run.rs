//! The description of a training run that the recorder stores in a recording's metadata and
//! the analyzer reads back to rebuild the identical model, data and batches.

use serde::{Deserialize, Serialize};

use crate::data::{DatasetIdentity, DatasetSpec};
use crate::models::ModelSpec;
use crate::state::StateLayout;

/// Schema version of [`RunDescription`] (bumped on incompatible changes).
pub const RUN_DESCRIPTION_VERSION: u32 = 1;

/// Derives an independent seed for one purpose from the run seed (SplitMix64 finalizer). The
/// recorder derives every seed of a run this way (see [`Seeds`]), so the numbers are part of
/// what a recording means and must never change.
pub fn derive_seed(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything about a run that determines its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDescription {
    pub schema_version: u32,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    pub dataset_identity: DatasetIdentity,
    /// Canonical state order (with trainable flags) of the recorded state vector.
    pub layout: StateLayout,
    /// Minibatch size (for full-batch runs: the chunk size of gradient accumulation).
    pub batch_size: u32,
    /// Updates per epoch.
    pub steps_per_epoch: u64,
    pub epochs: u32,
    /// Total updates the run was set to make.
    pub total_steps: u64,
    pub optimizer: OptimizerSpec,
    pub schedule: ScheduleSpec,
    /// Full-batch gradient descent settings, if the run is GD rather than SGD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_batch: Option<FullBatchSpec>,
    /// Std of isotropic Gaussian noise added to the gradient (0 = none).
    pub noise_std: f64,
    pub seeds: Seeds,
    /// Augmentation of training batches; `None` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<AugmentationSpec>,
    /// Which steps are recorded.
    pub record_policy: String,
    /// Evaluation batch size used for the per-epoch records.
    pub eval_batch_size: u32,
    /// Splits evaluated after every epoch (absent in recordings made before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_splits: Option<Vec<crate::data::Split>>,
    /// Facts about where the run happened (not part of its numbers).
    pub provenance: Provenance,
}

impl RunDescription {
    /// The metadata JSON the recorder stores in a recording's header.
    pub fn to_metadata_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads the run description back from a recording's metadata JSON (the recorder resuming
    /// a run, the analyzer replaying one). Fails on metadata that some other tool wrote.
    pub fn from_metadata_json(metadata_json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(metadata_json)
    }
}

/// The optimizer and its hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerSpec {
    /// SGD; `momentum = 0` is plain SGD. Weight decay is coupled (L2 added to the gradient, as
    /// the paper's code) unless `decoupled_weight_decay`.
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
        decoupled_weight_decay: bool,
    },
    /// Adam (coupled L2) or AdamW (`decoupled_weight_decay`).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled_weight_decay: bool,
    },
}

/// Learning rate as a function of the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub base_lr: f64,
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 over this many steps (0 = none).
    pub warmup_steps: u64,
}

/// Shape of the schedule after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        every_epochs: u32,
        gamma: f64,
    },
    /// Cosine from `base_lr` to 0 over the whole run.
    Cosine,
}

impl ScheduleSpec {
    /// Learning rate of update `step`.
    pub fn lr_at(&self, step: u64, steps_per_epoch: u64, total_steps: u64) -> f64 {
        let base = match &self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / steps_per_epoch.max(1);
                let drops = epoch / u64::from((*every_epochs).max(1));
                self.base_lr * gamma.powi(drops.min(i32::MAX as u64) as i32)
            }
            ScheduleKind::Cosine => {
                let progress = step as f64 / total_steps.max(1) as f64;
                0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        };
        if step < self.warmup_steps {
            base * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            base
        }
    }
}

/// Full-batch gradient descent: the gradient over the whole training split, accumulated over
/// chunks of `batch_size` samples (BatchNorm sees each chunk as a batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullBatchSpec {
    /// `false`: the mean loss over the whole set (chunk gradients weighted by chunk size).
    /// `true`: the sum of the chunk means, as the paper's gd.py (an effective learning rate
    /// multiplied by the number of chunks).
    pub sum_of_chunk_means: bool,
}

/// Seeds from which every random choice of the run derives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// libtorch's generator before building the model (θ_0).
    pub init: u64,
    /// Per-epoch permutations of the training split.
    pub data_order: u64,
    /// Per-step augmentation choices.
    pub augmentation: u64,
    /// Per-step gradient noise.
    pub noise: u64,
}

/// Augmentation of training batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AugmentationSpec {
    /// `crop-pad4-flip`: random crop with zero padding 4, then horizontal flip.
    pub kind: String,
    /// Bytes per sample in the recording (see [`crate::augment::AugChoice::to_bytes`]).
    pub bytes_per_sample: u32,
}

/// Where and with what the run was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub tool: String,
    pub tool_version: String,
    pub hostname: String,
    pub device: String,
    pub threads: u32,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_secs: u64,
    /// Steps of this recording written by a resumed process, if any.
    #[serde(default)]
    pub resumed_at_steps: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_never_change() {
        // Recordings store seeds derived this way: the values are part of the format of a run.
        assert_eq!(derive_seed(1111, 1), 0x1732_947f_434c_9ca0);
        assert_eq!(derive_seed(1111, 5), 0xb58c_53e6_b9eb_6586);
        assert_eq!(derive_seed(0, 0), 0);
    }
}
