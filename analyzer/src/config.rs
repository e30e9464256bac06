//! What an analysis computes: flags (parsed by clap into typed values) over an optional TOML
//! file, merged once and checked into [`AnalyzeConfig`], which is written as JSON into the
//! manifest and the metadata of every output file.
//!
//! The file and JSON form ([`ConfigFile`]) is flat and stable (`grid_lo`, `grid_hi`,
//! `grid_points`, phases as names): folders written by earlier versions keep reading.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use serde::{Deserialize, Serialize};
use sgdwalk_workload::BnPolicy;

use crate::error::AnalyzeError;
use crate::tables::TableName;

/// A phase of the analysis: what it computes and the table it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// ‖d_t‖, cos(d_{t−1}, d_t), ‖θ_t − θ_0‖ per step, total and per layer.
    Geometry,
    /// L(θ_t + α·d_t) on the α grid.
    Interp,
    /// The valley floor α* of each step's interpolation.
    Floors,
    /// Barriers along the valley floor and between iterates.
    Barriers,
    /// Hessian eigenvalues, trace, ε-sharpness at chosen steps.
    Curvature,
    /// The per-epoch evaluations recorded during training.
    Epochs,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 6] = [
        Phase::Geometry,
        Phase::Interp,
        Phase::Floors,
        Phase::Barriers,
        Phase::Curvature,
        Phase::Epochs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Geometry => "geometry",
            Phase::Interp => "interp",
            Phase::Floors => "floors",
            Phase::Barriers => "barriers",
            Phase::Curvature => "curvature",
            Phase::Epochs => "epochs",
        }
    }

    /// The table the phase writes.
    pub fn table(self) -> TableName {
        match self {
            Phase::Geometry => TableName::Steps,
            Phase::Interp => TableName::Interp,
            Phase::Floors => TableName::Floors,
            Phase::Barriers => TableName::Barriers,
            Phase::Curvature => TableName::Curvature,
            Phase::Epochs => TableName::Epochs,
        }
    }

    /// Phases whose results this one needs, run with it (floors refine the interpolation grid;
    /// barriers run along the floors).
    pub fn requires(self) -> &'static [Phase] {
        match self {
            Phase::Floors => &[Phase::Interp],
            Phase::Barriers => &[Phase::Interp, Phase::Floors],
            _ => &[],
        }
    }

    /// Whether it measures consecutive pairs (θ_t, θ_{t+1}) and so needs at least one.
    pub fn needs_pairs(self) -> bool {
        matches!(
            self,
            Phase::Geometry | Phase::Interp | Phase::Floors | Phase::Barriers
        )
    }

    /// Whether it evaluates the model on an evaluation set.
    pub fn evaluates(self) -> bool {
        matches!(
            self,
            Phase::Interp | Phase::Floors | Phase::Barriers | Phase::Curvature
        )
    }

    /// Whether it runs per work item (all but `epochs`, which is one table per run).
    pub fn per_item(self) -> bool {
        self != Phase::Epochs
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown phase {s:?} (known: {})", known.join(", "))
            })
    }
}

/// An evaluation set of the interpolation and curvature phases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSet {
    /// The whole training split (as the paper).
    Train,
    /// A fixed seeded subset of the training split of this many samples.
    Probe(u32),
    /// The step's own recorded minibatch, with its recorded augmentation.
    Batch,
    Val,
    Test,
}

impl EvalSet {
    /// The name written in tables.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Whether the set is a sample of a larger population (standard errors apply).
    pub fn is_subset(&self) -> bool {
        matches!(self, EvalSet::Probe(_) | EvalSet::Batch)
    }
}

impl fmt::Display for EvalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalSet::Train => f.write_str("train"),
            EvalSet::Probe(n) => write!(f, "probe:{n}"),
            EvalSet::Batch => f.write_str("batch"),
            EvalSet::Val => f.write_str("val"),
            EvalSet::Test => f.write_str("test"),
        }
    }
}

impl FromStr for EvalSet {
    type Err = String;
    /// Parses `train`, `probe:N`, `batch`, `val`, `test`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "train" => EvalSet::Train,
            "batch" => EvalSet::Batch,
            "val" => EvalSet::Val,
            "test" => EvalSet::Test,
            other => match other.strip_prefix("probe:").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => EvalSet::Probe(n),
                _ => {
                    return Err(format!(
                        "{s:?} (expected train, probe:N, batch, val or test)"
                    ));
                }
            },
        })
    }
}

/// Parses `train-mode` / `eval-mode`.
pub fn parse_bn(s: &str) -> Result<BnPolicy, String> {
    match s {
        "train-mode" => Ok(BnPolicy::TrainMode),
        "eval-mode" => Ok(BnPolicy::EvalMode),
        other => Err(format!("{other:?} (expected train-mode or eval-mode)")),
    }
}

/// One evaluation setting: an evaluation set under a BatchNorm policy. Results of different
/// settings never mix; this is their key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Setting {
    pub eval: EvalSet,
    pub bn: BnPolicy,
}

impl Setting {
    /// The `eval_set` column value.
    pub fn eval_name(&self) -> String {
        self.eval.name()
    }

    /// The `bn_policy` column value.
    pub fn bn_name(&self) -> &'static str {
        self.bn.as_str()
    }
}

/// The interpolation grid: `points` values of α evenly spaced over [lo, hi].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    pub lo: f64,
    pub hi: f64,
    pub points: u32,
}

impl Grid {
    /// The α values, in order.
    pub fn alphas(&self) -> Vec<f64> {
        let n = self.points as usize;
        (0..n)
            .map(|i| self.lo + (self.hi - self.lo) * i as f64 / (n - 1) as f64)
            .collect()
    }

    /// The same number of points over [0, 1]: the grid of segments between two points
    /// (barriers), whose ends are the two points themselves.
    pub fn unit(&self) -> Grid {
        Grid {
            lo: 0.0,
            hi: 1.0,
            points: self.points,
        }
    }

    /// Whether the grid runs from θ_t (α = 0) to θ_{t+1} (α = 1) exactly.
    pub fn is_unit(&self) -> bool {
        self.lo == 0.0 && self.hi == 1.0
    }
}

impl FromStr for Grid {
    type Err = String;
    /// Parses `LO:HI:POINTS`, e.g. `-0.5:1.5:21`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [lo, hi, n] = parts.as_slice() else {
            return Err(format!("{s:?} is not LO:HI:POINTS"));
        };
        let num_err = |x: &str| format!("{x:?} is not a number");
        Ok(Grid {
            lo: lo.trim().parse().map_err(|_| num_err(lo))?,
            hi: hi.trim().parse().map_err(|_| num_err(hi))?,
            points: n.trim().parse().map_err(|_| num_err(n))?,
        })
    }
}

/// Steps START..END (END exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepRange {
    pub start: u64,
    pub end: u64,
}

impl FromStr for StepRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("{s:?} is not START..END"))?;
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("{x:?} is not a step"))
        };
        Ok(StepRange {
            start: num(a)?,
            end: num(b)?,
        })
    }
}

/// Slice `index` of `count` of the work items (`--shard 2/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not I/N"))?;
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{x:?} is not a number"))
        };
        let (index, count) = (num(i)?, num(n)?);
        if count == 0 || index >= count {
            return Err(format!("{s}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

/// Flags of `sgdwalk-analyze analyze`. Settings left out come from `--config`, then the
/// defaults ([`AnalyzeConfig::default`]).
#[derive(Clone, Debug, Args)]
pub struct AnalyzeArgs {
    /// The recording (.walk); it may still be being written.
    pub recording: PathBuf,
    /// Output folder of the Parquet tables.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// TOML file with any of the settings below (flags given on the command line win; keys
    /// left out take the defaults shown here). Keys are the setting flags' names with `_` for `-`,
    /// except `grid_lo`, `grid_hi`, `grid_points` for --grid and `step_range = [START, END]`
    /// for --steps. Only in the file: `lanczos_iterations` (Lanczos basis size of the
    /// eigenvalues, top-k..=1000) [default: 20], `eigen_tolerance` (relative residual at which
    /// an eigenvalue has converged, > 0) [default: 0.001], `steps_per_item` (steps per work item,
    /// the unit of sharding and of skipping on reruns, >= 1) [default: 50]. Every key is in the
    /// README's "Configuration file" table.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder with the dataset files (default: data/<dataset>). For a tensors dataset: the
    /// file, or a folder holding a file of the recorded name (default: the path it was recorded
    /// from); its sha256 must be the recorded one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Phases to run: comma-separated of geometry, interp, floors, barriers, curvature, epochs
    /// (floors and barriers imply interp).
    /// [default: geometry,interp,floors,barriers,curvature,epochs]
    #[arg(long, value_delimiter = ',')]
    pub phases: Option<Vec<Phase>>,
    /// Evaluation sets (comma-separated): train, probe:N (N >= 1 seeded training samples),
    /// batch, val, test. The default probe is cut to the training split when that is smaller.
    /// [default: probe:1000]
    #[arg(long, value_delimiter = ',')]
    pub eval: Option<Vec<EvalSet>>,
    /// BatchNorm policies (comma-separated): train-mode, eval-mode. [default: train-mode]
    #[arg(long, value_delimiter = ',', value_parser = parse_bn)]
    pub bn: Option<Vec<BnPolicy>>,
    /// Interpolation grid LO:HI:POINTS in α, e.g. -0.5:1.5:21 (LO < HI, 2..=10000 points).
    /// [default: 0:1:11]
    #[arg(long, allow_hyphen_values = true)]
    pub grid: Option<Grid>,
    /// α tolerance of the valley-floor refinement (> 0). [default: 0.001]
    #[arg(long)]
    pub floor_tolerance: Option<f64>,
    /// Barrier strides k (comma-separated, each >= 1), between floor points v_t → v_{t+k}.
    /// [default: 1]
    #[arg(long, value_delimiter = ',')]
    pub strides: Option<Vec<u32>>,
    /// Curvature at every recorded step that is a multiple of N, and at the run's final state
    /// (0 = none). [default: 0]
    #[arg(long)]
    pub curvature_every: Option<u64>,
    /// Curvature at these steps (comma-separated). [default: none]
    #[arg(long, value_delimiter = ',')]
    pub curvature_steps: Option<Vec<u64>>,
    /// Also measure curvature at the valley floor of those steps: true or false.
    /// [default: false]
    #[arg(long)]
    pub curvature_at_floor: Option<bool>,
    /// Number of top Hessian eigenvalues (1..=lanczos_iterations, see --config). [default: 1]
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Hutchinson probes for the Hessian trace (0 = no trace; at most 10000). [default: 0]
    #[arg(long)]
    pub trace_probes: Option<u32>,
    /// Radius of ε-sharpness (0 = not measured; finite, >= 0). [default: 0]
    #[arg(long)]
    pub eps_sharpness: Option<f64>,
    /// Analyze only steps in START..END (END exclusive). [default: all]
    #[arg(long = "steps")]
    pub step_range: Option<StepRange>,
    /// Batch size of evaluations (also the train-mode BatchNorm partition; >= 1).
    /// [default: 500]
    #[arg(long)]
    pub eval_batch_size: Option<u32>,
    /// Seed of probe subsets and trace probes. [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute slice I of N (0-based) of the work items: `--shard 2/8`.
    #[arg(long, default_value_t)]
    pub shard: Shard,
    /// Device: auto (CPU unless CUDA is present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: tch::Device,
    /// The run's label in every table's `run_label` column and in the report (default: the
    /// --out folder's name, or for `runs/<name>/analysis` the run's folder name).
    #[arg(long)]
    pub label: Option<String>,
    /// libtorch intra-op threads (0 = the cores idle when the analysis starts: cores minus the
    /// 1-minute load average, at least 1; a busy shared node then gets fewer threads instead of
    /// oversubscribed ones spinning).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Recompute work items whose outputs exist.
    #[arg(long)]
    pub force: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_device(s: &str) -> Result<tch::Device, String> {
    sgdwalk_workload::parse_device(s)
}

/// The validated analysis settings (serialized into every output file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFile", into = "ConfigFile")]
pub struct AnalyzeConfig {
    /// As given; [`AnalyzeConfig::has`] adds what they require.
    pub phases: Vec<Phase>,
    pub eval: Vec<EvalSet>,
    pub bn: Vec<BnPolicy>,
    pub grid: Grid,
    pub floor_tolerance: f64,
    pub strides: Vec<u32>,
    pub curvature_every: u64,
    pub curvature_steps: Vec<u64>,
    pub curvature_at_floor: bool,
    pub top_k: u32,
    pub lanczos_iterations: u32,
    pub eigen_tolerance: f64,
    pub trace_probes: u32,
    pub eps_sharpness: f64,
    pub step_range: Option<StepRange>,
    pub eval_batch_size: u32,
    pub seed: u64,
    /// Steps per work item (the unit of sharding and of skip-on-rerun).
    pub steps_per_item: u64,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        AnalyzeConfig {
            phases: Phase::ALL.to_vec(),
            eval: vec![EvalSet::Probe(1000)],
            bn: vec![BnPolicy::TrainMode],
            grid: Grid {
                lo: 0.0,
                hi: 1.0,
                points: 11,
            },
            floor_tolerance: 1e-3,
            strides: vec![1],
            curvature_every: 0,
            curvature_steps: Vec::new(),
            curvature_at_floor: false,
            top_k: 1,
            lanczos_iterations: 20,
            eigen_tolerance: 1e-3,
            trace_probes: 0,
            eps_sharpness: 0.0,
            step_range: None,
            eval_batch_size: 500,
            seed: 0,
            steps_per_item: 50,
        }
    }
}

/// The TOML and JSON form of [`AnalyzeConfig`]: flat, every key optional in a file (missing
/// keys take the defaults), unknown keys refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub phases: Vec<Phase>,
    pub eval: Vec<EvalSet>,
    pub bn: Vec<BnPolicy>,
    pub grid_lo: f64,
    pub grid_hi: f64,
    pub grid_points: u32,
    pub floor_tolerance: f64,
    pub strides: Vec<u32>,
    pub curvature_every: u64,
    pub curvature_steps: Vec<u64>,
    pub curvature_at_floor: bool,
    pub top_k: u32,
    pub lanczos_iterations: u32,
    pub eigen_tolerance: f64,
    pub trace_probes: u32,
    pub eps_sharpness: f64,
    pub step_range: Option<(u64, u64)>,
    pub eval_batch_size: u32,
    pub seed: u64,
    pub steps_per_item: u64,
}

impl Default for ConfigFile {
    fn default() -> Self {
        AnalyzeConfig::default().into()
    }
}

impl From<AnalyzeConfig> for ConfigFile {
    fn from(c: AnalyzeConfig) -> Self {
        ConfigFile {
            phases: c.phases,
            eval: c.eval,
            bn: c.bn,
            grid_lo: c.grid.lo,
            grid_hi: c.grid.hi,
            grid_points: c.grid.points,
            floor_tolerance: c.floor_tolerance,
            strides: c.strides,
            curvature_every: c.curvature_every,
            curvature_steps: c.curvature_steps,
            curvature_at_floor: c.curvature_at_floor,
            top_k: c.top_k,
            lanczos_iterations: c.lanczos_iterations,
            eigen_tolerance: c.eigen_tolerance,
            trace_probes: c.trace_probes,
            eps_sharpness: c.eps_sharpness,
            step_range: c.step_range.map(|r| (r.start, r.end)),
            eval_batch_size: c.eval_batch_size,
            seed: c.seed,
            steps_per_item: c.steps_per_item,
        }
    }
}

impl From<ConfigFile> for AnalyzeConfig {
    fn from(f: ConfigFile) -> Self {
        AnalyzeConfig {
            phases: f.phases,
            eval: f.eval,
            bn: f.bn,
            grid: Grid {
                lo: f.grid_lo,
                hi: f.grid_hi,
                points: f.grid_points,
            },
            floor_tolerance: f.floor_tolerance,
            strides: f.strides,
            curvature_every: f.curvature_every,
            curvature_steps: f.curvature_steps,
            curvature_at_floor: f.curvature_at_floor,
            top_k: f.top_k,
            lanczos_iterations: f.lanczos_iterations,
            eigen_tolerance: f.eigen_tolerance,
            trace_probes: f.trace_probes,
            eps_sharpness: f.eps_sharpness,
            step_range: f.step_range.map(|(start, end)| StepRange { start, end }),
            eval_batch_size: f.eval_batch_size,
            seed: f.seed,
            steps_per_item: f.steps_per_item,
        }
    }
}

/// Settings of the run that do not change the numbers.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub recording: PathBuf,
    pub out: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub shard: Shard,
    pub device: tch::Device,
    pub threads: u32,
    pub force: bool,
    pub progress: bool,
    /// `--label`; `None`: the folder's label, or its default.
    pub label: Option<String>,
    /// Neither a flag nor the config file chose the evaluation sets: the default probe is
    /// cut to the training split when that is smaller (an explicit probe:N never is).
    pub eval_is_default: bool,
}

/// The most points an interpolation grid may have.
pub const MAX_GRID_POINTS: u32 = 10_000;
/// The most Hutchinson probes of the Hessian trace.
pub const MAX_TRACE_PROBES: u32 = 10_000;
/// The most Lanczos iterations (a state-sized vector each).
pub const MAX_LANCZOS_ITERATIONS: u32 = 1_000;

fn invalid(setting: &'static str, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::InvalidSetting {
        setting,
        reason: reason.into(),
    }
}

impl AnalyzeArgs {
    /// Merges the flags over the TOML file (if any) over the defaults, and checks everything.
    pub fn validate(&self) -> Result<(AnalyzeConfig, RunSettings), AnalyzeError> {
        let mut file_sets_eval = false;
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| AnalyzeError::Io {
                    path: path.clone(),
                    source,
                })?;
                file_sets_eval = text
                    .parse::<toml::Table>()
                    .is_ok_and(|t| t.contains_key("eval"));
                toml::from_str::<AnalyzeConfig>(&text).map_err(|e| AnalyzeError::BadConfigFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            None => AnalyzeConfig::default(),
        };
        // The one merge: every setting flag given on the command line replaces the value.
        macro_rules! flags_win {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = &self.$field {
                    c.$field = v.clone().into();
                })*
            };
        }
        flags_win!(
            phases,
            eval,
            bn,
            grid,
            floor_tolerance,
            strides,
            curvature_every,
            curvature_steps,
            curvature_at_floor,
            top_k,
            trace_probes,
            eps_sharpness,
            step_range,
            eval_batch_size,
            seed,
        );
        c.check()?;
        Ok((
            c,
            RunSettings {
                recording: self.recording.clone(),
                out: self.out.clone(),
                data_dir: self.data_dir.clone(),
                shard: self.shard,
                device: self.device,
                threads: self.threads,
                force: self.force,
                progress: !self.quiet,
                eval_is_default: self.eval.is_none() && !file_sets_eval,
                label: self.label.clone(),
            },
        ))
    }
}

impl AnalyzeConfig {
    /// Checks the settings against each other.
    pub fn check(&self) -> Result<(), AnalyzeError> {
        let g = &self.grid;
        if self.phases.is_empty() {
            return Err(invalid("phases", "empty list"));
        }
        if g.points < 2 || g.lo >= g.hi || !g.lo.is_finite() || !g.hi.is_finite() {
            return Err(invalid("grid", "need LO < HI and at least 2 points"));
        }
        if g.points > MAX_GRID_POINTS {
            return Err(invalid(
                "grid",
                format!(
                    "{} points asked; at most {MAX_GRID_POINTS} (each point is one evaluation \
                     per step and setting)",
                    g.points
                ),
            ));
        }
        if self.floor_tolerance.is_nan() || self.floor_tolerance <= 0.0 {
            return Err(invalid("floor-tolerance", "must be > 0"));
        }
        if self.strides.is_empty() || self.strides.contains(&0) {
            return Err(invalid("strides", "strides are >= 1"));
        }
        if self.eval.is_empty() || self.bn.is_empty() {
            return Err(invalid(
                "eval",
                "need at least one evaluation set and BatchNorm policy",
            ));
        }
        if self.eval_batch_size == 0 {
            return Err(invalid("eval-batch-size", "must be >= 1"));
        }
        if self.steps_per_item == 0 {
            return Err(invalid("steps_per_item", "must be >= 1"));
        }
        if self.top_k == 0 || self.lanczos_iterations < self.top_k {
            return Err(invalid("top-k", "need 1 <= top-k <= lanczos_iterations"));
        }
        if self.lanczos_iterations > MAX_LANCZOS_ITERATIONS {
            // The Krylov basis holds one state-sized vector per iteration.
            return Err(invalid(
                "lanczos_iterations",
                format!("at most {MAX_LANCZOS_ITERATIONS}"),
            ));
        }
        if self.trace_probes > MAX_TRACE_PROBES {
            return Err(invalid(
                "trace-probes",
                format!(
                    "{} asked; at most {MAX_TRACE_PROBES} (each is one Hessian-vector product)",
                    self.trace_probes
                ),
            ));
        }
        if !self.eps_sharpness.is_finite() || self.eps_sharpness < 0.0 {
            return Err(invalid("eps-sharpness", "must be finite and >= 0"));
        }
        Ok(())
    }

    /// Takes from `new` the settings of every phase that has not run under `self` (an existing
    /// analysis): those may still be chosen freely when the phase is added later.
    pub fn adopt_unrun_phase_settings(&mut self, new: &AnalyzeConfig) {
        let (curvature, interp, floors, barriers) = (
            self.has(Phase::Curvature),
            self.has(Phase::Interp),
            self.has(Phase::Floors),
            self.has(Phase::Barriers),
        );
        if !curvature {
            self.curvature_every = new.curvature_every;
            self.curvature_steps = new.curvature_steps.clone();
            self.curvature_at_floor = new.curvature_at_floor;
            self.top_k = new.top_k;
            self.lanczos_iterations = new.lanczos_iterations;
            self.eigen_tolerance = new.eigen_tolerance;
            self.trace_probes = new.trace_probes;
            self.eps_sharpness = new.eps_sharpness;
        }
        if !interp {
            self.grid = new.grid;
        }
        if !floors {
            self.floor_tolerance = new.floor_tolerance;
        }
        if !barriers {
            self.strides = new.strides.clone();
        }
        if !interp && !curvature {
            self.eval = new.eval.clone();
            self.bn = new.bn.clone();
            self.eval_batch_size = new.eval_batch_size;
            self.seed = new.seed;
        }
    }

    /// Is a phase on, named or required by a named one?
    pub fn has(&self, phase: Phase) -> bool {
        self.phases
            .iter()
            .any(|&p| p == phase || p.requires().contains(&phase))
    }

    /// The phases that run, in order.
    pub fn running(&self) -> Vec<Phase> {
        Phase::ALL.into_iter().filter(|&p| self.has(p)).collect()
    }

    /// Every (evaluation set, BatchNorm policy) pair, in the order rows are written.
    pub fn settings(&self) -> Vec<Setting> {
        self.eval
            .iter()
            .flat_map(|e| {
                self.bn.iter().map(move |&bn| Setting {
                    eval: e.clone(),
                    bn,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_form_is_the_flat_one_of_earlier_versions() {
        let json = serde_json::to_string(&AnalyzeConfig::default()).unwrap();
        assert!(json.starts_with(r#"{"phases":["geometry","interp","floors","barriers","curvature","epochs"],"eval":[{"probe":1000}],"bn":["train-mode"],"grid_lo":0.0,"grid_hi":1.0,"grid_points":11,"#), "{json}");
        let back: AnalyzeConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, AnalyzeConfig::default());
        let partial: AnalyzeConfig =
            toml::from_str("grid_points = 5\nphases = [\"floors\"]").unwrap();
        assert_eq!(partial.grid.points, 5);
        assert!(partial.has(Phase::Interp) && !partial.has(Phase::Barriers));
        assert!(
            toml::from_str::<AnalyzeConfig>("grid = 5").is_err(),
            "unknown keys refused"
        );
        assert!(toml::from_str::<AnalyzeConfig>("phases = [\"bogus\"]").is_err());
    }

    #[test]
    fn phases_know_their_tables_and_prerequisites() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
            for r in p.requires() {
                assert!(
                    Phase::ALL.iter().position(|x| x == r)
                        < Phase::ALL.iter().position(|x| *x == p),
                    "{r} runs before {p}"
                );
            }
        }
        assert_eq!(Phase::Geometry.table(), TableName::Steps);
        assert!(
            "nope"
                .parse::<Phase>()
                .unwrap_err()
                .contains("known: geometry")
        );
    }

    #[test]
    fn typed_flag_values_parse_and_refuse() {
        let g: Grid = "-0.5:1.5:5".parse().unwrap();
        assert_eq!(g.alphas(), vec![-0.5, 0.0, 0.5, 1.0, 1.5]);
        assert_eq!(g.unit().alphas(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert!("0:1".parse::<Grid>().is_err());
        assert_eq!(
            "3/8".parse::<Shard>().unwrap(),
            Shard { index: 3, count: 8 }
        );
        assert!("8/8".parse::<Shard>().is_err());
        assert_eq!(
            "5..9".parse::<StepRange>().unwrap(),
            StepRange { start: 5, end: 9 }
        );
        assert_eq!("probe:10".parse::<EvalSet>().unwrap(), EvalSet::Probe(10));
        assert!("probe:0".parse::<EvalSet>().is_err());
        assert_eq!(EvalSet::Probe(7).name(), "probe:7");
    }

    #[test]
    fn a_zero_work_item_size_names_its_own_setting() {
        let c = AnalyzeConfig {
            steps_per_item: 0,
            ..AnalyzeConfig::default()
        };
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("steps_per_item")
        );
    }
}
