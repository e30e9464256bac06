//! What an analysis computes: from flags or a TOML file, validated into [`AnalyzeConfig`],
//! which is written (as JSON) into the metadata of every output file.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use sgdwalk_workload::BnPolicy;

use crate::error::AnalyzeError;

/// An evaluation set of the interpolation and curvature phases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Parses `train`, `probe:N`, `batch`, `val`, `test`.
    pub fn parse(s: &str) -> Result<Self, AnalyzeError> {
        let bad = || AnalyzeError::InvalidSetting {
            setting: "eval",
            reason: format!("{s:?} (expected train, probe:N, batch, val or test)"),
        };
        Ok(match s {
            "train" => EvalSet::Train,
            "batch" => EvalSet::Batch,
            "val" => EvalSet::Val,
            "test" => EvalSet::Test,
            other => match other.strip_prefix("probe:").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => EvalSet::Probe(n),
                _ => return Err(bad()),
            },
        })
    }

    /// The name written in tables.
    pub fn name(&self) -> String {
        match self {
            EvalSet::Train => "train".into(),
            EvalSet::Probe(n) => format!("probe:{n}"),
            EvalSet::Batch => "batch".into(),
            EvalSet::Val => "val".into(),
            EvalSet::Test => "test".into(),
        }
    }

    /// Whether the set is a sample of a larger population (standard errors apply).
    pub fn is_subset(&self) -> bool {
        matches!(self, EvalSet::Probe(_) | EvalSet::Batch)
    }
}

/// Flags of `sgdwalk-analyze analyze`.
#[derive(Clone, Debug, Args)]
pub struct AnalyzeArgs {
    /// The recording (.walk); it may still be being written.
    pub recording: PathBuf,
    /// Output folder of the Parquet tables.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// TOML file with any of the settings below (flags given on the command line win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder with the dataset files (default: data/<dataset>). For a tensors dataset: the
    /// file, or a folder holding a file of the recorded name (default: the path it was recorded
    /// from); its sha256 must be the recorded one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Phases to run: comma-separated of geometry, interp, floors, barriers, curvature, epochs
    /// (floors and barriers imply interp).
    #[arg(long)]
    pub phases: Option<String>,
    /// Evaluation sets (comma-separated): train, probe:N, batch, val, test.
    #[arg(long)]
    pub eval: Option<String>,
    /// BatchNorm policies (comma-separated): train-mode, eval-mode.
    #[arg(long)]
    pub bn: Option<String>,
    /// Interpolation grid LO:HI:POINTS in α (default 0:1:11), e.g. -0.5:1.5:21.
    #[arg(long, allow_hyphen_values = true)]
    pub grid: Option<String>,
    /// α tolerance of the valley-floor refinement.
    #[arg(long)]
    pub floor_tolerance: Option<f64>,
    /// Barrier strides k (comma-separated), between floor points v_t → v_{t+k}.
    #[arg(long)]
    pub strides: Option<String>,
    /// Curvature at every N-th recorded step (0 = none).
    #[arg(long)]
    pub curvature_every: Option<u64>,
    /// Curvature at these steps (comma-separated).
    #[arg(long)]
    pub curvature_steps: Option<String>,
    /// Also measure curvature at the valley floor of those steps.
    #[arg(long)]
    pub curvature_at_floor: Option<bool>,
    /// Number of top Hessian eigenvalues.
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Hutchinson probes for the Hessian trace (0 = no trace).
    #[arg(long)]
    pub trace_probes: Option<u32>,
    /// Radius of ε-sharpness (0 = not measured).
    #[arg(long)]
    pub eps_sharpness: Option<f64>,
    /// Analyze only steps in START..END.
    #[arg(long)]
    pub steps: Option<String>,
    /// Batch size of evaluations (also the train-mode BatchNorm partition).
    #[arg(long)]
    pub eval_batch_size: Option<u32>,
    /// Seed of probe subsets and trace probes.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute slice I of N (0-based) of the work items: `--shard 2/8`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Device: auto (CPU unless CUDA is present), cpu, cuda, cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch intra-op threads (0 = default).
    #[arg(long)]
    pub threads: Option<u32>,
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

/// Every phase, in the order they run.
pub const PHASES: [&str; 6] = [
    "geometry",
    "interp",
    "floors",
    "barriers",
    "curvature",
    "epochs",
];

/// The validated analysis settings (serialized into every output file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzeConfig {
    pub phases: Vec<String>,
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
    /// Steps per work item (the unit of sharding and of skip-on-rerun).
    pub steps_per_item: u64,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        AnalyzeConfig {
            phases: PHASES.map(String::from).to_vec(),
            eval: vec![EvalSet::Probe(1000)],
            bn: vec![BnPolicy::TrainMode],
            grid_lo: 0.0,
            grid_hi: 1.0,
            grid_points: 11,
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

/// Settings of the run that do not change the numbers.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub recording: PathBuf,
    pub out: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub shard: (u32, u32),
    pub device: tch::Device,
    pub threads: u32,
    pub force: bool,
    pub progress: bool,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> AnalyzeError {
    AnalyzeError::InvalidSetting {
        setting,
        reason: reason.into(),
    }
}

fn list<T>(
    s: &str,
    setting: &'static str,
    f: impl Fn(&str) -> Result<T, AnalyzeError>,
) -> Result<Vec<T>, AnalyzeError> {
    let items: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(f)
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(invalid(setting, "empty list"));
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(s: &str, setting: &'static str) -> Result<T, AnalyzeError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(setting, format!("{s:?} is not a number")))
}

/// Parses `train-mode` / `eval-mode`.
pub fn parse_bn(s: &str) -> Result<BnPolicy, AnalyzeError> {
    match s {
        "train-mode" => Ok(BnPolicy::TrainMode),
        "eval-mode" => Ok(BnPolicy::EvalMode),
        other => Err(invalid(
            "bn",
            format!("{other:?} (expected train-mode or eval-mode)"),
        )),
    }
}

impl AnalyzeArgs {
    /// Merges the TOML file (if any) and the flags, and checks everything.
    pub fn validate(&self) -> Result<(AnalyzeConfig, RunSettings), AnalyzeError> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| AnalyzeError::Io {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<AnalyzeConfig>(&text).map_err(|e| AnalyzeError::BadConfigFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            None => AnalyzeConfig::default(),
        };
        if let Some(p) = &self.phases {
            c.phases = list(p, "phases", |x| Ok(x.to_string()))?;
        }
        if let Some(e) = &self.eval {
            c.eval = list(e, "eval", EvalSet::parse)?;
        }
        if let Some(b) = &self.bn {
            c.bn = list(b, "bn", parse_bn)?;
        }
        if let Some(g) = &self.grid {
            let parts: Vec<&str> = g.split(':').collect();
            let [lo, hi, n] = parts.as_slice() else {
                return Err(invalid("grid", format!("{g:?} is not LO:HI:POINTS")));
            };
            c.grid_lo = number(lo, "grid")?;
            c.grid_hi = number(hi, "grid")?;
            c.grid_points = number(n, "grid")?;
        }
        if let Some(t) = self.floor_tolerance {
            c.floor_tolerance = t;
        }
        if let Some(s) = &self.strides {
            c.strides = list(s, "strides", |x| number(x, "strides"))?;
        }
        if let Some(e) = self.curvature_every {
            c.curvature_every = e;
        }
        if let Some(s) = &self.curvature_steps {
            c.curvature_steps = list(s, "curvature-steps", |x| number(x, "curvature-steps"))?;
        }
        if let Some(f) = self.curvature_at_floor {
            c.curvature_at_floor = f;
        }
        if let Some(k) = self.top_k {
            c.top_k = k;
        }
        if let Some(p) = self.trace_probes {
            c.trace_probes = p;
        }
        if let Some(e) = self.eps_sharpness {
            c.eps_sharpness = e;
        }
        if let Some(r) = &self.steps {
            let (a, b) = r
                .split_once("..")
                .ok_or_else(|| invalid("steps", format!("{r:?} is not START..END")))?;
            c.step_range = Some((number(a, "steps")?, number(b, "steps")?));
        }
        if let Some(b) = self.eval_batch_size {
            c.eval_batch_size = b;
        }
        if let Some(s) = self.seed {
            c.seed = s;
        }
        c.check()?;
        let shard = match &self.shard {
            None => (0, 1),
            Some(s) => {
                let (i, n) = s
                    .split_once('/')
                    .ok_or_else(|| invalid("shard", format!("{s:?} is not I/N")))?;
                let (i, n): (u32, u32) = (number(i, "shard")?, number(n, "shard")?);
                if n == 0 || i >= n {
                    return Err(invalid("shard", format!("{s}: need 0 <= I < N")));
                }
                (i, n)
            }
        };
        let device = sgdwalk_workload::parse_device(self.device.as_deref().unwrap_or("auto"))
            .map_err(|reason| invalid("device", reason))?;
        Ok((
            c,
            RunSettings {
                recording: self.recording.clone(),
                out: self.out.clone(),
                data_dir: self.data_dir.clone(),
                shard,
                device,
                threads: self.threads.unwrap_or(0),
                force: self.force,
                progress: !self.quiet,
            },
        ))
    }
}

impl AnalyzeConfig {
    /// Checks the settings against each other.
    pub fn check(&self) -> Result<(), AnalyzeError> {
        if let Some(p) = self.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
            return Err(invalid(
                "phases",
                format!("unknown phase {p:?} (known: {})", PHASES.join(", ")),
            ));
        }
        if self.grid_points < 2
            || self.grid_lo >= self.grid_hi
            || !self.grid_lo.is_finite()
            || !self.grid_hi.is_finite()
        {
            return Err(invalid("grid", "need LO < HI and at least 2 points"));
        }
        if self.floor_tolerance.is_nan() || self.floor_tolerance <= 0.0 {
            return Err(invalid("floor-tolerance", "must be > 0"));
        }
        if self.strides.contains(&0) {
            return Err(invalid("strides", "strides are >= 1"));
        }
        if self.eval.is_empty() || self.bn.is_empty() {
            return Err(invalid(
                "eval",
                "need at least one evaluation set and BatchNorm policy",
            ));
        }
        if self.eval_batch_size == 0 || self.steps_per_item == 0 {
            return Err(invalid("eval-batch-size", "must be >= 1"));
        }
        if self.top_k == 0 || self.lanczos_iterations < self.top_k {
            return Err(invalid("top-k", "need 1 <= top-k <= lanczos_iterations"));
        }
        Ok(())
    }

    /// Takes from `new` the settings of every phase that has not run under `self` (an existing
    /// analysis): those may still be chosen freely when the phase is added later.
    pub fn adopt_unrun_phase_settings(&mut self, new: &AnalyzeConfig) {
        let ran = |p: &str| self.has(p);
        let (curvature, interp, floors, barriers) = (
            ran("curvature"),
            ran("interp"),
            ran("floors"),
            ran("barriers"),
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
            (self.grid_lo, self.grid_hi, self.grid_points) =
                (new.grid_lo, new.grid_hi, new.grid_points);
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

    /// Is a phase on? floors and barriers need interp; barriers need floors.
    pub fn has(&self, phase: &str) -> bool {
        let on = |p: &str| self.phases.iter().any(|x| x == p);
        match phase {
            "interp" => on("interp") || on("floors") || on("barriers"),
            "floors" => on("floors") || on("barriers"),
            other => on(other),
        }
    }

    /// The α grid.
    pub fn alphas(&self) -> Vec<f64> {
        let n = self.grid_points as usize;
        (0..n)
            .map(|i| self.grid_lo + (self.grid_hi - self.grid_lo) * i as f64 / (n - 1) as f64)
            .collect()
    }
}
