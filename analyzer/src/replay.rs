//! Replay of a recording: the run description, the identical model and data, evaluation sets
//! prepared once, and losses at any point θ_t + α·d_t.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sgdwalk_format::Reader;
use sgdwalk_workload::augment::decode_choices;
use sgdwalk_workload::eval::{
    evaluate_batches, hessian_vector_products, prepare_batches, trainable_tensors,
};
use sgdwalk_workload::models::MODULE_ATTACHMENT;
use sgdwalk_workload::run::RunDescription;
use sgdwalk_workload::sampling::probe_subset;
use sgdwalk_workload::{BnPolicy, Dataset, EvalSums, Model, Split};
use tch::Tensor;

use crate::config::{AnalyzeConfig, EvalSet, RunSettings};
use crate::error::AnalyzeError;

/// The samples of an evaluation set: split, ids, and augmentation choices (one per id).
pub type EvalSamples = (Split, Vec<u32>, Option<Vec<sgdwalk_workload::AugChoice>>);

/// A recording opened for analysis, with its model and data.
pub struct Session {
    pub reader: Reader,
    pub desc: RunDescription,
    pub data: Dataset,
    pub model: Model,
    /// Hex of the recording's run id.
    pub run_id: String,
    /// The run's label in the tables (`--label`, or the analysis folder's name).
    pub run_label: String,
    /// A checksum identifying the recording's header (run, layout, settings).
    pub recording_checksum: String,
    pub path: PathBuf,
    /// Word ranges of the state's tensors that are not f32 (integer buffers and the like):
    /// never interpolated, taken from the nearer end.
    discrete_ranges: Vec<std::ops::Range<usize>>,
    eval_batch_size: usize,
    seed: u64,
    prepared: HashMap<String, Rc<Vec<(Tensor, Tensor)>>>,
}

/// Reads the run description that `sgdwalk-record` stores in a recording.
pub fn run_description(reader: &Reader, path: &Path) -> Result<RunDescription, AnalyzeError> {
    RunDescription::from_metadata_json(&reader.header().metadata_json).map_err(|e| {
        AnalyzeError::NoRunDescription {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

/// A dataset's files for a mismatch message: named as the dataset their checksums say they
/// are when it is a known one (the identity's own name is only the one it was loaded as), with
/// full hashes, which a truncated one could not be checked against `sha256sum`.
pub fn describe_identity(i: &sgdwalk_workload::DatasetIdentity) -> String {
    let files: Vec<String> = i
        .files
        .iter()
        .map(|f| format!("{} sha256 {}", f.file, f.sha256))
        .collect();
    let name = match sgdwalk_workload::data::recognize_idx_files(&i.files) {
        Some(known) if known != i.name => format!("{known} files (loaded as {})", i.name.as_str()),
        Some(known) => known.to_string(),
        None => i.name.as_str().to_owned(),
    };
    format!("{name} [{}]", files.join(", "))
}

/// The TorchScript module a recording embeds (for `torchscript` runs; `None` otherwise).
pub fn recorded_module(
    reader: &Reader,
    desc: &RunDescription,
    path: &Path,
) -> Result<Option<Vec<u8>>, AnalyzeError> {
    if !matches!(desc.model, sgdwalk_workload::ModelSpec::TorchScript { .. }) {
        return Ok(None);
    }
    match reader.attachment(MODULE_ATTACHMENT)? {
        Some(bytes) => Ok(Some(bytes.to_vec())),
        None => Err(AnalyzeError::NoRunDescription {
            path: path.to_path_buf(),
            reason: format!(
                "it describes a TorchScript model but holds no {MODULE_ATTACHMENT} attachment"
            ),
        }),
    }
}

impl Session {
    /// Opens the recording, loads the recorded dataset (checking its identity) and builds the
    /// recorded model on the requested device.
    pub fn open(settings: &RunSettings, cfg: &AnalyzeConfig) -> Result<Self, AnalyzeError> {
        let path = settings.recording.clone();
        let reader = Reader::open(&path)?;
        let desc = run_description(&reader, &path)?;
        let data_dir = desc.dataset.location(settings.data_dir.as_deref());
        let data = match Dataset::load(&desc.dataset, &data_dir) {
            // The files of another known dataset: the recorder's hint (`--dataset`) does not
            // apply here; the data folder is what to change.
            Err(sgdwalk_workload::WorkloadError::WrongDataset { dir, found, .. }) => {
                return Err(AnalyzeError::DatasetMismatch {
                    data_dir: dir,
                    expected: describe_identity(&desc.dataset_identity),
                    found: format!(
                        "{found} files (recognized by their checksums): pass --data-dir with the recorded dataset's files"
                    ),
                });
            }
            other => other?,
        };
        if data.identity != desc.dataset_identity {
            // Which files differ, so one changed file among four is found at a glance.
            let differing: Vec<&str> = data
                .identity
                .files
                .iter()
                .filter(|f| !desc.dataset_identity.files.contains(f))
                .map(|f| f.file.as_str())
                .collect();
            let mut found = describe_identity(&data.identity);
            if !differing.is_empty() {
                found += &format!("; differing: {}", differing.join(", "));
            }
            return Err(AnalyzeError::DatasetMismatch {
                data_dir,
                expected: describe_identity(&desc.dataset_identity),
                found,
            });
        }
        if cfg.eval.contains(&crate::config::EvalSet::Test) {
            data.require_split(Split::Test)?;
        }
        let module = recorded_module(&reader, &desc, &path)?;
        let model = Model::load(
            &desc.model,
            settings.device,
            desc.seeds.init,
            module.as_deref(),
        )?;
        if model.layout() != &desc.layout {
            return Err(AnalyzeError::NoRunDescription {
                path,
                reason: "the recorded state layout does not match the model this version builds"
                    .into(),
            });
        }
        let header = reader.header();
        let run_id = hex::encode(header.run_id);
        let recording_checksum = format!(
            "{:08x}",
            crc32c::crc32c(header.metadata_json.as_bytes()) ^ crc32c::crc32c(&header.run_id)
        );
        let discrete_ranges = desc.layout.non_float_ranges();
        Ok(Session {
            reader,
            desc,
            data,
            model,
            run_id,
            run_label: String::new(),
            recording_checksum,
            path,
            discrete_ranges,
            eval_batch_size: cfg.eval_batch_size as usize,
            seed: cfg.seed,
            prepared: HashMap::new(),
        })
    }

    /// The 1-based epoch of update `step`; the final state (no update) counts to the last epoch.
    pub fn epoch_of(&self, step: u64) -> u32 {
        let spe = self.desc.steps_per_epoch.max(1);
        let epoch = (step / spe + 1).min(u64::from(self.desc.epochs.max(1)));
        u32::try_from(epoch).unwrap_or(u32::MAX)
    }

    /// The samples (and augmentation) of an evaluation set for step `step`.
    pub fn eval_samples(&self, set: &EvalSet, step: u64) -> Result<EvalSamples, AnalyzeError> {
        Ok(match set {
            EvalSet::Train => (Split::Train, self.data.split_ids(Split::Train), None),
            EvalSet::Val => (Split::Val, self.data.split_ids(Split::Val), None),
            EvalSet::Test => (Split::Test, self.data.split_ids(Split::Test), None),
            EvalSet::Probe(n) => (
                Split::Train,
                probe_subset(self.seed, &self.data.split_ids(Split::Train), *n as usize),
                None,
            ),
            EvalSet::Batch => {
                let info = self.reader.step_info(step)?;
                let aug = if info.augmentation.is_empty() {
                    None
                } else {
                    Some(decode_choices(&info.augmentation)?)
                };
                (Split::Train, info.sample_ids, aug)
            }
        })
    }

    /// The evaluation batches of `set` at `step`, prepared once (per step for `batch`).
    pub fn prepared(
        &mut self,
        set: &EvalSet,
        step: u64,
    ) -> Result<Rc<Vec<(Tensor, Tensor)>>, AnalyzeError> {
        let key = match set {
            EvalSet::Batch => format!("batch@{step}"),
            other => other.name(),
        };
        if let Some(p) = self.prepared.get(&key) {
            return Ok(Rc::clone(p));
        }
        let (split, ids, aug) = self.eval_samples(set, step)?;
        if ids.is_empty() {
            return Err(sgdwalk_workload::WorkloadError::EmptyEvaluation.into());
        }
        // A full-batch step uses its recorded chunk size as the BatchNorm partition.
        let bs = if matches!(set, EvalSet::Batch) {
            self.desc.batch_size as usize
        } else {
            self.eval_batch_size
        };
        let batches = Rc::new(prepare_batches(
            &self.data,
            split,
            &ids,
            aug.as_deref(),
            bs,
            self.model.device(),
        )?);
        // Per-step sets are used once per step: keep only the latest.
        self.prepared.retain(|k, _| !k.starts_with("batch@"));
        self.prepared.insert(key, Rc::clone(&batches));
        Ok(batches)
    }

    /// Loss and accuracy sums at `state` on prepared batches.
    pub fn evaluate_state(
        &self,
        state: &[f32],
        batches: &[(Tensor, Tensor)],
        bn: BnPolicy,
    ) -> Result<EvalSums, AnalyzeError> {
        self.model.load_flat(state)?;
        Ok(evaluate_batches(&self.model, batches, bn)?)
    }

    /// Hessian-vector products of the mean loss over `batches` at `state` under BatchNorm
    /// policy `bn`, for flat vectors over the trainable parameters (canonical order).
    pub fn hvp(
        &self,
        state: &[f32],
        batches: &[(Tensor, Tensor)],
        bn: BnPolicy,
        vectors: &[Vec<f32>],
    ) -> Result<(f64, Vec<Vec<f32>>), AnalyzeError> {
        self.model.load_flat(state)?;
        let params = trainable_tensors(&self.model)?;
        let shaped: Vec<Vec<Tensor>> = vectors
            .iter()
            .map(|v| split_like(v, &params))
            .collect::<Result<_, _>>()?;
        let (loss, products) = hessian_vector_products(&self.model, batches, &shaped, bn)?;
        let flat = products
            .iter()
            .map(|p| self.model.layout().flatten_tensors(p))
            .collect::<Result<_, _>>()?;
        Ok((loss, flat))
    }

    /// θ_t + α·(θ_u − θ_t) for the f32 tensors ([`interpolate`]); tensors of other dtypes
    /// (e.g. BatchNorm's `num_batches_tracked`) cannot be interpolated and are taken from θ_t
    /// for α < 0.5 and from θ_u otherwise, so both ends stay exact.
    pub fn interpolate(&self, a: &[f32], b: &[f32], alpha: f64, out: &mut Vec<f32>) {
        interpolate(a, b, alpha, out);
        let from = if alpha < 0.5 { a } else { b };
        for r in &self.discrete_ranges {
            out[r.clone()].copy_from_slice(&from[r.clone()]);
        }
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.model.parameter_count()
    }

    /// Element ranges of the trainable parameters inside the flat state, in canonical order.
    pub fn trainable_ranges(&self) -> Vec<std::ops::Range<usize>> {
        self.desc
            .layout
            .entries
            .iter()
            .filter(|e| e.trainable)
            .map(|e| e.offset_elements..e.offset_elements + e.len_elements)
            .collect()
    }
}

fn split_like(v: &[f32], params: &[Tensor]) -> Result<Vec<Tensor>, AnalyzeError> {
    let mut out = Vec::with_capacity(params.len());
    let mut offset = 0;
    for p in params {
        let n = p.numel();
        let t = Tensor::f_from_slice(&v[offset..offset + n])?
            .f_view(p.size().as_slice())?
            .f_to_device(p.device())?;
        out.push(t);
        offset += n;
    }
    Ok(out)
}

/// θ_t + α·d_t with d_t = θ_{t+1} − θ_t into a growable buffer (see
/// [`crate::barrier::interpolate_into`]: f64 arithmetic, one rounding, exact at α = 0 and 1).
pub fn interpolate(a: &[f32], b: &[f32], alpha: f64, out: &mut Vec<f32>) {
    out.resize(a.len(), 0.0);
    // Equal lengths by construction (two states of one recording), so this cannot fail.
    let _same_len = crate::barrier::interpolate_into(a, &b[..a.len()], alpha, out);
}

#[cfg(test)]
mod tests {
    use sgdwalk_workload::data::FileDigest;
    use sgdwalk_workload::{DatasetIdentity, DatasetName};

    use super::describe_identity;

    fn identity(name: DatasetName, sha256: &str) -> DatasetIdentity {
        DatasetIdentity {
            name,
            files: vec![FileDigest {
                file: "train-images-idx3-ubyte".into(),
                sha256: sha256.into(),
                len_bytes: 1,
            }],
            train_samples: 60_000,
            test_samples: 10_000,
        }
    }

    #[test]
    fn a_mismatch_names_the_dataset_the_files_are() {
        // Fashion-MNIST's training images, published checksum.
        let fashion = "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888";
        let as_mnist = describe_identity(&identity(DatasetName::Mnist, fashion));
        assert!(
            as_mnist.starts_with("Fashion-MNIST files (loaded as mnist) [")
                && as_mnist.contains(fashion),
            "{as_mnist}"
        );
        let own = describe_identity(&identity(DatasetName::FashionMnist, fashion));
        assert!(own.starts_with("Fashion-MNIST ["), "{own}");
        let unknown = describe_identity(&identity(DatasetName::Mnist, "00"));
        assert!(unknown.starts_with("mnist ["), "{unknown}");
    }
}
