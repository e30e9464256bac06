//! Command-line arguments (clap) and their validated form.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sgdwalk_format::FsyncPolicy;
use sgdwalk_workload::run::{
    FullBatchSpec, OptimizerSpec, ScheduleKind, ScheduleSpec, Seeds, derive_seed,
};
use sgdwalk_workload::tensors::parse_numbers;
use sgdwalk_workload::{
    DatasetName, DatasetSpec, ModelSpec, SyntheticSpec, TensorsHeader, TensorsSpec,
};

use crate::error::RecordError;
use crate::policy::RecordPolicy;

/// Optimizer names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    Sgd,
    Momentum,
    Nesterov,
    Adam,
    Adamw,
}

/// When the recording is flushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsyncName {
    Never,
    Keyframe,
    Record,
}

/// How a snapshot leaves the training thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SnapshotPathName {
    /// `ring` on CUDA, `host` on the CPU.
    Auto,
    /// The training thread copies the state into a host vector.
    Host,
    /// A device-to-device copy into the snapshot ring; a copy thread moves it to pinned host
    /// memory on a side stream (on the CPU, CPU buffers stand in).
    Ring,
}

impl SnapshotPathName {
    /// Whether snapshots of a run on `device` go through the snapshot ring.
    pub fn uses_ring(self, device: tch::Device) -> bool {
        match self {
            SnapshotPathName::Auto => device != tch::Device::Cpu,
            SnapshotPathName::Host => false,
            SnapshotPathName::Ring => true,
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotPathName::Auto => "auto",
            SnapshotPathName::Host => "host",
            SnapshotPathName::Ring => "ring",
        }
    }
}

/// The longest snapshot ring accepted (each buffer holds one state on the device and one in
/// host memory).
pub const MAX_SNAPSHOT_RING: usize = 64;

/// `--threads` when not given: on a GPU, 2 libtorch threads. The training thread there mostly
/// launches kernels; its CPU work (batch assembly, augmentation) is small, while an OpenMP pool
/// of one spinning thread per core competes with the encode threads for every core and stalls
/// when one of its threads is descheduled. On the CPU, libtorch's default (0).
pub fn default_threads(device: tch::Device) -> u32 {
    if device == tch::Device::Cpu { 0 } else { 2 }
}

/// `--encode-threads` when not given: on a GPU the host's cores are free for encoding, but for
/// the training thread and the copy stage; on the CPU they train.
pub fn default_encode_threads(device: tch::Device) -> u32 {
    if device == tch::Device::Cpu {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cores.saturating_sub(2).max(1)).unwrap_or(u32::MAX)
}

/// `sgdwalk-record`: train a network and record every step.
#[derive(Clone, Debug, Args)]
pub struct RecordArgs {
    /// Output recording (.walk).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Model: mlp, small-cnn, vgg11, resnet20, resnet56, or torchscript:PATH (a module saved by
    /// PyTorch's torch.jit).
    #[arg(long, default_value = "small-cnn")]
    pub model: String,
    /// Dataset: fashion-mnist, mnist, cifar10, synthetic, or tensors:PATH (a safetensors file:
    /// train_x [N, ...] u8 or f32, train_y [N] integers; optional val_x/val_y, test_x/test_y).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Folder with the dataset files (default: data/<dataset>). For tensors:PATH: the file, or
    /// a folder holding a file of that name (default: PATH).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training split as START..END indices of the training file (default: the paper's; for
    /// tensors:PATH all of train_x).
    #[arg(long, value_parser = parse_range)]
    pub train_samples: Option<(u32, u32)>,
    /// Validation split as START..END indices of the training file (default: the paper's; for
    /// tensors:PATH the ids after train_x, which are val_x, or none without val_x).
    #[arg(long, value_parser = parse_range)]
    pub val_samples: Option<(u32, u32)>,
    /// Augment training batches: crop-flip (random crop with padding 4, then flip; also
    /// `true`) or none (also `false`); images [N, C, H, W] only. Default: crop-flip for
    /// CIFAR-10, none otherwise.
    #[arg(long, value_parser = parse_augment)]
    pub augment: Option<bool>,
    /// tensors:PATH: mean subtracted per entry of dim 1 after u8 inputs are scaled to [0, 1]
    /// (comma-separated, one per channel or one for all). Default: the file's sgdwalk.mean
    /// metadata, else 0.
    #[arg(long)]
    pub input_mean: Option<String>,
    /// tensors:PATH: std divided by after the mean, as --input-mean. Default: the file's
    /// sgdwalk.std metadata, else 1.
    #[arg(long)]
    pub input_std: Option<String>,
    /// tensors:PATH: number of classes (labels in [0, classes)). Default: the file's
    /// sgdwalk.classes metadata, else the largest label + 1 over all splits.
    #[arg(long)]
    pub classes: Option<i64>,
    /// Synthetic data: training-file samples, at least 20 (test file: a quarter of it; 10% of
    /// the training file is the validation split).
    #[arg(long, default_value_t = 2000)]
    pub synthetic_samples: u32,
    /// Synthetic data: image side in pixels, at least 1 (28 or 32, say; one split is at most
    /// 4 GiB).
    #[arg(long, default_value_t = 28)]
    pub synthetic_size: i64,
    /// Synthetic data: image channels, at least 1 (1 for grey, 3 for colour).
    #[arg(long, default_value_t = 1)]
    pub synthetic_channels: i64,
    /// Epochs to train (at least 1).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Stop after this many updates (default: all epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Minibatch size, at least 1 (with --full-batch: the gradient-accumulation chunk size).
    #[arg(long, default_value_t = 100)]
    pub batch_size: u32,
    /// Optimizer: sgd (plain), momentum, nesterov, adam, adamw (Adam with decoupled weight
    /// decay).
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerName,
    /// Learning rate (finite, > 0); the base rate of --schedule.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Momentum of the momentum and nesterov optimizers, in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (>= 0); coupled (added to the gradient, as the paper) unless
    /// --decoupled-wd.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Decoupled weight decay: the weights shrink by lr · weight-decay at each step, apart from
    /// the gradient (as AdamW; --optimizer adamw always decouples). Off by default: coupled.
    #[arg(long)]
    pub decoupled_wd: bool,
    /// Adam's β1 (decay of the gradient's running mean; adam and adamw), in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Adam's β2 (decay of the squared gradient's running mean; adam and adamw), in [0, 1).
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// Adam's ε, added to the root of the squared-gradient mean (adam and adamw); finite, > 0.
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Learning-rate schedule: constant, step:EVERY_EPOCHS,GAMMA (multiply by GAMMA > 0 every
    /// EVERY_EPOCHS >= 1 epochs), or cosine (to 0 over the run).
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Linear warm-up from 0 over this many steps (0 = none).
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Full-batch gradient descent over the training split (gradient accumulated over chunks of
    /// --batch-size); one update per epoch. Off by default: minibatch SGD.
    #[arg(long)]
    pub full_batch: bool,
    /// With --full-batch: sum the chunk-mean gradients (as the paper's gd.py) instead of taking
    /// the mean over the whole set. Off by default.
    #[arg(long)]
    pub sum_of_chunk_means: bool,
    /// Std of isotropic Gaussian noise added to every gradient (GD + noise experiment; finite,
    /// >= 0; 0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub noise_std: f64,
    /// Seed of everything; the init, data-order, augmentation and noise seeds derive from it.
    #[arg(long, default_value_t = 1111)]
    pub seed: u64,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads (0 = libtorch's default, one per core). Default: on CUDA 2 (the
    /// training thread's CPU work is small, and a pool on every core would contend with the
    /// encode threads for the same cores); on the CPU libtorch's default.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Threads that encode snapshot chunks (0 = one per core). Default: on CUDA, one per core
    /// but two (training needs a core to launch work, the copy stage another); on the CPU 1,
    /// which leaves the cores to training.
    #[arg(long)]
    pub encode_threads: Option<u32>,
    /// Which steps to record: every; epochs:1,10,25,100 (every step of those epochs, numbered
    /// from 1); every:K (every K-th step, K >= 1); window:W,K (W consecutive pairs, steps t with
    /// t mod K <= W, every K steps; 0 < W < K). θ_0 and the final state are always kept.
    #[arg(long, default_value = "every")]
    pub record: String,
    /// Keyframe interval K of the recording (a power of two): a full state every K records,
    /// deltas between.
    #[arg(long, default_value_t = 32)]
    pub keyframe_interval: u32,
    /// zstd level of the recording, 1..=22.
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
    /// Store residuals as split streams (format 1.3, codecs 5–8: word classes, leading bytes
    /// per class, low bytes raw): on a recorded MLP trajectory 3.7% smaller, 1.9× faster to
    /// encode and 1.5× faster to decode than byte planes in one zstd frame (`--split-streams
    /// false`). Readers older than format 1.3 cannot open such a file.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub split_streams: bool,
    /// When to fsync the recording: never, keyframe (after each keyframe), record (after
    /// every record).
    #[arg(long, value_enum, default_value = "keyframe")]
    pub fsync: FsyncName,
    /// Splits evaluated after every epoch (comma-separated: train,val,test; empty = none).
    /// Default: train,val,test (train,val for a tensors:PATH file without test_x).
    #[arg(long)]
    pub eval_splits: Option<String>,
    /// Batch size of the per-epoch evaluation (at least 1).
    #[arg(long, default_value_t = 1000)]
    pub eval_batch_size: u32,
    /// Replace an existing output. Off by default: an existing file is refused.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue the killed or stopped run in --out from its last resume point. Every setting
    /// comes from the recording: a flag that differs from the recorded value is an error, an
    /// equal one is accepted. Only --data-dir, --device, --threads, --encode-threads, --fsync,
    /// --queue, --snapshot-path, --snapshot-ring, --device-residual, --quiet and --json may differ (device and threads default to the recorded
    /// ones: others change the rounding of the resumed steps). A file killed before its first
    /// resume point starts over from step 0 with the recorded settings.
    #[arg(long)]
    pub resume: bool,
    /// Queue length between training and the writer thread, in records (0 is taken as 1).
    #[arg(long, default_value_t = 8)]
    pub queue: usize,
    /// How snapshots leave the training thread: auto (ring on CUDA, host on the CPU), host (a
    /// copy into a host vector on the training thread), ring (a device-side copy into the
    /// snapshot ring, moved to pinned host memory off the training stream).
    #[arg(long, value_enum, default_value = "auto")]
    pub snapshot_path: SnapshotPathName,
    /// Buffers in the snapshot ring, 1..=64: each holds one state on the device and one in
    /// pinned host memory (printed at start). Training waits only when all are in flight.
    #[arg(long, default_value_t = 4)]
    pub snapshot_ring: usize,
    /// Compute each step's residual and its split streams on the training device, after the
    /// snapshot, so the host only entropy-codes them (the ring path with split streams only).
    /// Off by default until GPU measurements show it pays: it costs device time on the training
    /// stream, 4.25 bytes per parameter more in each ring buffer (device and host) and in each
    /// copy, and about 80 bytes per parameter of transient device memory during the pass; it
    /// saves the host the residual and split passes, about half of its encode. A pass that
    /// fails on the device (out of memory) turns it off with a warning.
    /// Each chunk's hash is still taken from the state and one chunk per step is decoded and
    /// compared with it; a residual that fails turns the device pass off with a warning.
    #[arg(long)]
    pub device_residual: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Ids of the flags given on the command line (clap's value source), which `--resume`
    /// compares with the recording; see [`RecordArgs::note_given`].
    #[arg(skip)]
    pub given: std::collections::BTreeSet<String>,
}

/// `true`/`crop-flip` turn augmentation on, `false`/`none` off.
fn parse_augment(s: &str) -> Result<bool, String> {
    match s {
        "true" | "crop-flip" => Ok(true),
        "false" | "none" => Ok(false),
        other => Err(format!(
            "{other:?} (expected crop-flip, none, true or false)"
        )),
    }
}

/// The largest zstd level (zstd's maximum); levels start at 1.
pub const MAX_ZSTD_LEVEL: i32 = 22;

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not START..END"))?;
    let a = a.parse::<u32>().map_err(|e| format!("{a:?}: {e}"))?;
    let b = b.parse::<u32>().map_err(|e| format!("{b:?}: {e}"))?;
    if a >= b {
        return Err(format!("empty range {s}"));
    }
    Ok((a, b))
}

/// The bytes of a TorchScript module file (embedded in the recording).
#[derive(Clone)]
pub struct ModuleFile {
    /// File name as given (informative).
    pub file_name: String,
    pub bytes: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for ModuleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModuleFile({}, {} bytes)",
            self.file_name,
            self.bytes.len()
        )
    }
}

impl std::ops::Deref for ModuleFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ModuleFile {
    /// Reads a module file; a missing or unreadable file is an error naming it.
    pub fn read(path: &Path) -> Result<Self, RecordError> {
        let bytes = std::fs::read(path).map_err(|e| {
            invalid(
                "model",
                format!("cannot read TorchScript module {}: {e}", path.display()),
            )
        })?;
        Ok(ModuleFile {
            file_name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            bytes: bytes.into(),
        })
    }

    /// Its description for a dataset of `classes` classes.
    pub fn spec(&self, classes: i64) -> ModelSpec {
        use sha2::Digest;
        ModelSpec::TorchScript {
            file_name: self.file_name.clone(),
            sha256: hex::encode(sha2::Sha256::digest(&self.bytes)),
            len_bytes: self.bytes.len() as u64,
            classes,
        }
    }
}

/// Validated settings of a recording run.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub out: PathBuf,
    pub model: ModelSpec,
    /// The TorchScript module's file, for `--model torchscript:PATH`.
    pub module: Option<ModuleFile>,
    pub dataset: DatasetSpec,
    pub data_dir: PathBuf,
    /// Whether `--data-dir` was given (a resumed run otherwise uses the recorded location).
    pub data_dir_given: bool,
    pub epochs: u32,
    pub max_steps: Option<u64>,
    pub batch_size: u32,
    pub optimizer: OptimizerSpec,
    pub schedule: ScheduleSpec,
    pub full_batch: Option<FullBatchSpec>,
    pub noise_std: f64,
    pub seeds: Seeds,
    pub device: tch::Device,
    pub threads: u32,
    pub encode_threads: u32,
    pub policy: RecordPolicy,
    pub keyframe_interval: u32,
    pub zstd_level: i32,
    pub split_streams: bool,
    pub fsync: FsyncPolicy,
    pub eval_splits: Vec<sgdwalk_workload::Split>,
    pub eval_batch_size: u32,
    pub overwrite: bool,
    pub resume: bool,
    pub queue: usize,
    /// How snapshots leave the training thread (see [`SnapshotPathName::uses_ring`]).
    pub snapshot_path: SnapshotPathName,
    /// Buffers of the snapshot ring.
    pub snapshot_ring: usize,
    /// Compute residuals on the training device (ring path only).
    pub device_residual: bool,
    pub progress: bool,
}

/// What `--device-residual` needs: the snapshot ring to compute into, and split streams (what
/// the device computes).
pub(crate) fn check_device_residual(
    uses_ring: bool,
    split_streams: bool,
) -> Result<(), RecordError> {
    if !uses_ring {
        return Err(invalid(
            "device-residual",
            "needs the snapshot ring (--snapshot-path ring, or auto on CUDA)",
        ));
    }
    if !split_streams {
        return Err(invalid(
            "device-residual",
            "needs split streams (--split-streams true)",
        ));
    }
    Ok(())
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::InvalidSetting {
        flag,
        reason: reason.into(),
    }
}

/// `[N, d1, d2, ...]` of a tensors file's `train_x`.
fn sample_dims(h: &TensorsHeader) -> String {
    let dims: Vec<String> = h.sample_shape.iter().map(ToString::to_string).collect();
    format!("[N, {}]", dims.join(", "))
}

/// Adapts a built-in model made by [`ModelSpec::from_name`] to a tensors dataset: its classes,
/// and for the MLP the elements of one sample as input features. The conv nets need square
/// images (VGG-11 exactly 32x32: five halvings down to its 512-wide head).
fn fit_to_tensors(
    mut model: ModelSpec,
    h: &TensorsHeader,
    classes: i64,
) -> Result<ModelSpec, RecordError> {
    let square = h
        .image_shape()
        .filter(|&(_, height, width)| height == width);
    let name = model.short_name();
    let needs = |what: &str| {
        invalid(
            "model",
            format!(
                "{name} needs {what}; train_x is {} in {}: use --model mlp",
                sample_dims(h),
                h.path.display()
            ),
        )
    };
    match &mut model {
        ModelSpec::Mlp {
            input_features,
            classes: k,
            ..
        } => {
            *input_features = h.sample_elements();
            *k = classes;
        }
        ModelSpec::Vgg11Bn { classes: k, .. } => {
            if !matches!(square, Some((_, 32, _))) {
                return Err(needs("images [N, C, 32, 32]"));
            }
            *k = classes;
        }
        ModelSpec::PreactResnet { classes: k, .. } | ModelSpec::SmallCnn { classes: k, .. } => {
            if square.is_none() {
                return Err(needs("square images [N, C, S, S]"));
            }
            *k = classes;
        }
        // Its output width is set from the dataset's classes when the run is described.
        ModelSpec::TorchScript { .. } => {}
    }
    Ok(model)
}

impl RecordArgs {
    /// Notes which flags `matches` (the parse these arguments came from) took from the command
    /// line rather than from their defaults, so `--resume` can refuse the ones that differ
    /// from the recording.
    pub fn note_given(&mut self, matches: &clap::ArgMatches) {
        // Flags only: the matches also name the argument group of this struct.
        let cmd = <Self as Args>::augment_args(clap::Command::new("sgdwalk-record"));
        self.given = matches
            .ids()
            .filter(|id| cmd.get_arguments().any(|a| a.get_id() == *id))
            .filter(|id| {
                matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.as_str().to_string())
            .collect();
    }

    /// The dataset named by --dataset; for `tensors:PATH` also the file's checked header (read
    /// alone, without the data) and its resolved normalization and classes.
    fn dataset_source(
        &self,
    ) -> Result<(DatasetName, Option<(TensorsHeader, TensorsSpec)>), RecordError> {
        let Some(path) = self.dataset.strip_prefix("tensors:") else {
            if self.dataset == "tensors" {
                return Err(invalid("dataset", "tensors needs its file: tensors:PATH"));
            }
            for (flag, given) in [
                ("input-mean", self.input_mean.is_some()),
                ("input-std", self.input_std.is_some()),
                ("classes", self.classes.is_some()),
            ] {
                if given {
                    return Err(invalid(flag, "only for --dataset tensors:PATH"));
                }
            }
            return Ok((DatasetName::parse(&self.dataset)?, None));
        };
        if path.is_empty() {
            return Err(invalid(
                "dataset",
                "tensors:PATH needs the path of a safetensors file",
            ));
        }
        let numbers = |flag: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| parse_numbers(v).map_err(|reason| invalid(flag, reason)))
                .transpose()
        };
        let mean = numbers("input-mean", &self.input_mean)?;
        let std = numbers("input-std", &self.input_std)?;
        if let Some(c) = self.classes
            && c < 1
        {
            return Err(invalid("classes", format!("{c} (must be at least 1)")));
        }
        let header = TensorsHeader::read(Path::new(path))?;
        let spec = TensorsSpec::resolve(&header, mean, std, self.classes)?;
        Ok((DatasetName::Tensors, Some((header, spec))))
    }

    /// Checks every setting before anything is trained or written. With `--resume` the
    /// settings are then taken from the recording, after checking that every flag given
    /// (see [`RecordArgs::note_given`]) agrees with it ([`crate::resume`]).
    pub fn validate(&self) -> Result<RecordConfig, RecordError> {
        if self.out.is_dir() {
            return Err(invalid(
                "out",
                format!(
                    "{} is a folder; --out names the recording file, e.g. {}",
                    self.out.display(),
                    self.out.join("run.walk").display()
                ),
            ));
        }
        let mut cfg = self.validate_flags()?;
        if self.resume {
            crate::resume::adopt_recording(self, &mut cfg)?;
        }
        Ok(cfg)
    }

    /// Checks every flag's value, as for a new run.
    fn validate_flags(&self) -> Result<RecordConfig, RecordError> {
        let (name, tensors) = self.dataset_source()?;
        let dataset = self.dataset_spec(name, tensors.as_ref())?;
        let (model, module) = self.model_spec(name, tensors.as_ref())?;
        let data_dir = dataset.location(self.data_dir.as_deref());
        self.check_training_numbers()?;
        let optimizer = self.optimizer_spec();
        let kind = self.schedule_kind()?;
        if let ScheduleKind::Step {
            every_epochs,
            gamma,
        } = kind
        {
            let drops = (self.epochs.saturating_sub(1) / every_epochs).min(i32::MAX as u32);
            let last_lr = self.lr * gamma.powi(drops as i32);
            if !(last_lr.is_finite() && last_lr > 0.0) {
                return Err(invalid(
                    "schedule",
                    format!(
                        "the learning rate reaches {last_lr} after {drops} drops of {gamma}; it must stay a finite number > 0"
                    ),
                ));
            }
        }
        let device = sgdwalk_workload::parse_device(&self.device)
            .map_err(|reason| invalid("device", reason))?;
        let policy: RecordPolicy = self.record.parse()?;
        if !self.keyframe_interval.is_power_of_two() {
            return Err(invalid("keyframe-interval", "must be a power of two"));
        }
        if !(1..=MAX_SNAPSHOT_RING).contains(&self.snapshot_ring) {
            return Err(invalid(
                "snapshot-ring",
                format!("{} (must be 1..={MAX_SNAPSHOT_RING})", self.snapshot_ring),
            ));
        }
        // Checked before the output is created (a resumed run checks the recorded codec again).
        if self.device_residual {
            check_device_residual(self.snapshot_path.uses_ring(device), self.split_streams)?;
        }
        if self.eval_batch_size == 0 {
            return Err(invalid("eval-batch-size", "0 (must be at least 1)"));
        }
        if !(1..=MAX_ZSTD_LEVEL).contains(&self.zstd_level) {
            return Err(invalid(
                "zstd-level",
                format!("{} is outside 1..={MAX_ZSTD_LEVEL}", self.zstd_level),
            ));
        }
        let eval_splits = self.eval_splits(tensors.as_ref())?;
        Ok(RecordConfig {
            out: self.out.clone(),
            model,
            module,
            dataset,
            data_dir,
            data_dir_given: self.data_dir.is_some(),
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            optimizer,
            schedule: ScheduleSpec {
                base_lr: self.lr,
                kind,
                warmup_steps: self.warmup_steps,
            },
            full_batch: self.full_batch.then_some(FullBatchSpec {
                sum_of_chunk_means: self.sum_of_chunk_means,
            }),
            noise_std: self.noise_std,
            seeds: Seeds {
                init: derive_seed(self.seed, 1),
                data_order: derive_seed(self.seed, 2),
                augmentation: derive_seed(self.seed, 3),
                noise: derive_seed(self.seed, 4),
            },
            device,
            threads: self.threads.unwrap_or_else(|| default_threads(device)),
            encode_threads: self
                .encode_threads
                .unwrap_or_else(|| default_encode_threads(device)),
            policy,
            keyframe_interval: self.keyframe_interval,
            zstd_level: self.zstd_level,
            split_streams: self.split_streams,
            fsync: match self.fsync {
                FsyncName::Never => FsyncPolicy::Never,
                FsyncName::Keyframe => FsyncPolicy::EveryKeyframe,
                FsyncName::Record => FsyncPolicy::EveryRecord,
            },
            eval_splits,
            eval_batch_size: self.eval_batch_size,
            overwrite: self.overwrite,
            resume: self.resume,
            queue: self.queue.max(1),
            snapshot_path: self.snapshot_path,
            snapshot_ring: self.snapshot_ring,
            device_residual: self.device_residual,
            progress: !self.quiet,
        })
    }

    /// The dataset description: the named dataset with the split and augmentation flags
    /// applied.
    fn dataset_spec(
        &self,
        name: DatasetName,
        tensors: Option<&(TensorsHeader, TensorsSpec)>,
    ) -> Result<DatasetSpec, RecordError> {
        let mut dataset = match name {
            DatasetName::Synthetic => {
                if self.synthetic_samples < 20 {
                    return Err(invalid("synthetic-samples", "need at least 20"));
                }
                self.check_synthetic_size()?;
                DatasetSpec::synthetic(SyntheticSpec {
                    channels: self.synthetic_channels,
                    image_size: self.synthetic_size,
                    classes: 10,
                    train_samples: self.synthetic_samples,
                    test_samples: (self.synthetic_samples / 4).max(10),
                    seed: derive_seed(self.seed, 5),
                })
            }
            DatasetName::Tensors => match tensors {
                Some((header, spec)) => DatasetSpec::tensors(spec.clone(), header),
                None => DatasetSpec::paper(name),
            },
            other => DatasetSpec::paper(other),
        };
        if let Some(r) = self.train_samples {
            dataset.train_range = r;
        }
        if let Some(r) = self.val_samples {
            dataset.val_range = r;
        }
        if let Some(a) = self.augment {
            dataset.augment = a;
        }
        let ((t0, t1), (v0, v1)) = (dataset.train_range, dataset.val_range);
        if t0 < v1 && v0 < t1 {
            return Err(invalid(
                if self.val_samples.is_some() {
                    "val-samples"
                } else {
                    "train-samples"
                },
                format!(
                    "the training split {t0}..{t1} and the validation split {v0}..{v1} overlap; they must be disjoint ranges of the training file"
                ),
            ));
        }
        if let Some((h, _)) = tensors
            && dataset.augment
            && h.image_shape().is_none()
        {
            return Err(invalid(
                "augment",
                format!(
                    "crop-flip needs images [N, C, H, W]; train_x is {} in {}",
                    sample_dims(h),
                    h.path.display()
                ),
            ));
        }
        Ok(dataset)
    }

    /// The model description, shaped for the dataset's images (or a tensors file's samples),
    /// and the TorchScript module file for `--model torchscript:PATH`.
    fn model_spec(
        &self,
        name: DatasetName,
        tensors: Option<&(TensorsHeader, TensorsSpec)>,
    ) -> Result<(ModelSpec, Option<ModuleFile>), RecordError> {
        let (channels, size) = match name {
            DatasetName::Cifar10 => (3, 32),
            DatasetName::Mnist | DatasetName::FashionMnist => (1, 28),
            DatasetName::Synthetic => (self.synthetic_channels, self.synthetic_size),
            // Square images give the conv nets their shape; anything else suits only the MLP
            // (checked in `fit_to_tensors`).
            DatasetName::Tensors => match tensors.and_then(|(h, _)| h.image_shape()) {
                Some((c, h, w)) if h == w => (c, h),
                _ => (1, 1),
            },
        };
        let (model, module) = match self.model.strip_prefix("torchscript:") {
            Some(path) => {
                let file = ModuleFile::read(Path::new(path))?;
                // The dataset's class count replaces this once the data is loaded (describe).
                (file.spec(1), Some(file))
            }
            None => (ModelSpec::from_name(&self.model, channels, size)?, None),
        };
        let model = match tensors {
            Some((h, t)) => fit_to_tensors(model, h, t.classes)?,
            None => model,
        };
        Ok((model, module))
    }

    /// Synthetic images are made in memory: side and channels at least 1, and one split's
    /// bytes at most [`MAX_SYNTHETIC_BYTES`](sgdwalk_workload::data::MAX_SYNTHETIC_BYTES).
    fn check_synthetic_size(&self) -> Result<(), RecordError> {
        use sgdwalk_workload::data::MAX_SYNTHETIC_BYTES;
        if self.synthetic_size < 1 {
            return Err(invalid("synthetic-size", "must be at least 1"));
        }
        if self.synthetic_channels < 1 {
            return Err(invalid("synthetic-channels", "must be at least 1"));
        }
        let (c, side, n) = (
            self.synthetic_channels,
            self.synthetic_size,
            self.synthetic_samples,
        );
        let bytes = u64::try_from(c)
            .ok()
            .and_then(|c| c.checked_mul(u64::try_from(side).ok()?))
            .and_then(|p| p.checked_mul(u64::try_from(side).ok()?))
            .and_then(|p| p.checked_mul(u64::from(n)));
        if bytes.is_none_or(|b| b > MAX_SYNTHETIC_BYTES as u64) {
            let shown = bytes.map_or_else(|| "more than 2^64".into(), |b| b.to_string());
            return Err(invalid(
                "synthetic-size",
                format!(
                    "{n} samples of {c}x{side}x{side} bytes take {shown} bytes; synthetic data is made in memory, at most {MAX_SYNTHETIC_BYTES} bytes (4 GiB): lower --synthetic-size, --synthetic-channels or --synthetic-samples"
                ),
            ));
        }
        Ok(())
    }

    /// The run length, batch size and optimizer numbers must be in range.
    fn check_training_numbers(&self) -> Result<(), RecordError> {
        if self.epochs == 0 {
            return Err(invalid("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch-size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(
                "lr",
                format!("{} is not a finite number > 0", self.lr),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid("weight-decay", "must be >= 0"));
        }
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(invalid("noise-std", "must be >= 0"));
        }
        if self.sum_of_chunk_means && !self.full_batch {
            return Err(invalid("sum-of-chunk-means", "needs --full-batch"));
        }
        for (flag, value) in [
            ("momentum", self.momentum),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(invalid(flag, format!("{value} is outside [0, 1)")));
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return Err(invalid(
                "adam-eps",
                format!("{} is not a finite number > 0", self.adam_eps),
            ));
        }
        Ok(())
    }

    /// The optimizer and its hyper-parameters (checked by [`Self::check_training_numbers`]).
    fn optimizer_spec(&self) -> OptimizerSpec {
        let sgd = |momentum: f64, nesterov: bool| OptimizerSpec::Sgd {
            momentum,
            nesterov,
            weight_decay: self.weight_decay,
            decoupled_weight_decay: self.decoupled_wd,
        };
        let adam = |decoupled: bool| OptimizerSpec::Adam {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
            decoupled_weight_decay: decoupled,
        };
        match self.optimizer {
            OptimizerName::Sgd => sgd(0.0, false),
            OptimizerName::Momentum => sgd(self.momentum, false),
            OptimizerName::Nesterov => sgd(self.momentum, true),
            OptimizerName::Adam => adam(self.decoupled_wd),
            OptimizerName::Adamw => adam(true),
        }
    }

    /// The learning-rate schedule named by --schedule.
    fn schedule_kind(&self) -> Result<ScheduleKind, RecordError> {
        Ok(match self.schedule.as_str() {
            "constant" => ScheduleKind::Constant,
            "cosine" => ScheduleKind::Cosine,
            s => match s.strip_prefix("step:").and_then(|r| r.split_once(',')) {
                Some((e, g)) => {
                    let every_epochs: u32 = e.parse().map_err(|_| {
                        invalid("schedule", format!("{e:?} is not a number of epochs"))
                    })?;
                    if every_epochs == 0 {
                        return Err(invalid("schedule", "step:EVERY_EPOCHS needs at least 1"));
                    }
                    let gamma: f64 = g
                        .parse()
                        .map_err(|_| invalid("schedule", format!("{g:?} is not a factor")))?;
                    // Learning rates must stay finite and positive after every drop.
                    if !(gamma.is_finite() && gamma > 0.0) {
                        return Err(invalid(
                            "schedule",
                            format!("step:{e},{g}: GAMMA must be a finite number > 0"),
                        ));
                    }
                    ScheduleKind::Step {
                        every_epochs,
                        gamma,
                    }
                }
                None => {
                    return Err(invalid(
                        "schedule",
                        format!("{s:?} (expected constant, cosine or step:EVERY_EPOCHS,GAMMA)"),
                    ));
                }
            },
        })
    }

    /// The splits evaluated at every epoch end.
    fn eval_splits(
        &self,
        tensors: Option<&(TensorsHeader, TensorsSpec)>,
    ) -> Result<Vec<sgdwalk_workload::Split>, RecordError> {
        // A tensors file without test_x has no test split: left out of the default, an error
        // when asked for.
        let has_test = tensors.is_none_or(|(h, _)| h.test_samples.is_some());
        let default_splits = if has_test {
            "train,val,test"
        } else {
            "train,val"
        };
        let eval_splits = self
            .eval_splits
            .as_deref()
            .unwrap_or(default_splits)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                use sgdwalk_workload::Split::{Test, Train, Val};
                [Train, Val, Test]
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| invalid("eval-splits", format!("unknown split {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((h, _)) = tensors
            && !has_test
            && eval_splits.contains(&sgdwalk_workload::Split::Test)
        {
            return Err(invalid(
                "eval-splits",
                format!("test: the file has no test_x: {}", h.path.display()),
            ));
        }
        Ok(eval_splits)
    }
}
