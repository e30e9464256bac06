//! The polars side of the report: lazy scans of one analysis folder's tables, aggregated per
//! epoch and per run, and the raw series the figures need, as plain vectors.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sgdwalk_workload::run::OptimizerSpec;

use super::ReportError;
use crate::analyze::{RUN_DESCRIPTION, RunInfo};
use crate::config::AnalyzeConfig;

/// How a run trained, as far as the paper's claims care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RunKind {
    /// Minibatch SGD without momentum: the paper's setting.
    Sgd,
    /// Minibatch SGD with momentum, or Adam: shown, not used in the paper's comparisons.
    OtherMinibatch,
    /// Full-batch gradient descent.
    Gd,
    /// Full-batch gradient descent with isotropic Gaussian noise on the gradient.
    GdNoise,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Sgd => "sgd",
            RunKind::OtherMinibatch => "other-minibatch",
            RunKind::Gd => "gd",
            RunKind::GdNoise => "gd+noise",
        }
    }
}

/// Aggregates over one epoch (`epoch = Some`) or over the whole run (`None`).
#[derive(Debug, Clone, Default)]
pub struct EpochStats {
    pub epoch: Option<u32>,
    /// Valley floors measured (on the primary evaluation set and BatchNorm policy).
    pub floors: u64,
    /// Floors whose shape is `nonfinite` (a NaN or infinite loss on the segment).
    pub nonfinite_floors: u64,
    pub interior_share: Option<f64>,
    pub height_start_mean: Option<f64>,
    pub height_start_median: Option<f64>,
    pub height_end_mean: Option<f64>,
    /// Mean of height_start / loss_start.
    pub rel_height_mean: Option<f64>,
    pub alpha_star_median: Option<f64>,
    /// Steps with cos(d_{t−1}, d_t) measured.
    pub cos_count: u64,
    pub cos_mean: Option<f64>,
    pub cos_median: Option<f64>,
    pub cos_std: Option<f64>,
    pub cos_negative_share: Option<f64>,
    pub update_norm_mean: Option<f64>,
    /// ‖θ_t − θ_0‖ at the last step of the epoch (run) where it is measured.
    pub dist_end: Option<f64>,
    pub dist_end_step: Option<u64>,
}

/// Barrier statistics for one path kind and stride.
#[derive(Debug, Clone)]
pub struct BarrierStats {
    /// `floor` (v_t → v_{t+k}) or `iterate` (θ_t → θ_{t+k}).
    pub path: String,
    pub stride: u32,
    pub segments: u64,
    /// Segments whose barrier exceeds the threshold (relative to the higher end).
    pub with_barrier: u64,
    /// Mean and maximum relative barrier over the segments with a barrier.
    pub rel_mean: Option<f64>,
    pub rel_max: Option<f64>,
    /// Segments whose barrier is NaN (a non-finite loss on the path): included in `segments`,
    /// never in `with_barrier`, and shown in the report's barrier table.
    pub nonfinite: u64,
}

/// One row of the per-step geometry (layer `params`, or `all` for older analyses).
#[derive(Debug, Clone, Copy)]
pub struct StepPoint {
    pub step: u64,
    pub epoch: u32,
    pub cos: Option<f64>,
    pub dist: Option<f64>,
}

/// One valley floor.
#[derive(Debug, Clone)]
pub struct FloorPoint {
    pub step: u64,
    pub alpha_star: f64,
    pub loss_at_floor: f64,
    pub height_start: f64,
}

/// Top eigenvalue and trace at one step.
#[derive(Debug, Clone, Copy)]
pub struct CurvPoint {
    pub step: u64,
    pub epoch: Option<u32>,
    pub lambda_max: f64,
    pub trace: Option<f64>,
}

/// Per-epoch evaluation recorded during training.
#[derive(Debug, Clone)]
pub struct EpochEval {
    pub epoch: u32,
    pub split: String,
    pub loss: f64,
    pub accuracy: f64,
}

/// Everything the report knows about one run.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub label: String,
    pub kind: RunKind,
    pub model: String,
    pub dataset: String,
    pub lr: f64,
    /// `None` for full-batch runs.
    pub batch_size: Option<u32>,
    pub noise_std: f64,
    pub steps_per_epoch: u64,
    pub epochs: u32,
    pub total_steps: u64,
    pub trainable_params: u64,
    /// The evaluation set and BatchNorm policy the claims use (the analysis' first ones).
    pub eval_set: String,
    pub bn_policy: String,
    /// The `layer` of the steps table behind cos and distances: `params` (trainable parameters,
    /// the paper's definition) or `all` (the whole state, for older analyses).
    pub geometry_scope: &'static str,
    pub per_epoch: Vec<EpochStats>,
    pub whole: EpochStats,
    pub barriers: Vec<BarrierStats>,
    pub geometry: Vec<StepPoint>,
    pub floors: Vec<FloorPoint>,
    /// (step, α, loss) on the primary set, sorted.
    pub interp: Vec<(u64, f64, f64)>,
    /// Relative floor-path barriers per step (stride, step, relative barrier).
    pub floor_barriers: Vec<(u32, u64, f64)>,
    pub curvature: Vec<CurvPoint>,
    pub evals: Vec<EpochEval>,
}

impl RunData {
    /// Orders runs: SGD first, then by batch size, then by decreasing learning rate.
    pub fn order(a: &RunData, b: &RunData) -> Ordering {
        let rank = |k: RunKind| match k {
            RunKind::Sgd => 0,
            RunKind::OtherMinibatch => 1,
            RunKind::Gd => 2,
            RunKind::GdNoise => 3,
        };
        rank(a.kind)
            .cmp(&rank(b.kind))
            .then(a.batch_size.cmp(&b.batch_size))
            .then(b.lr.total_cmp(&a.lr))
            .then(a.label.cmp(&b.label))
    }

    /// The last recorded evaluation of a split.
    pub fn final_eval(&self, split: &str) -> Option<&EpochEval> {
        self.evals
            .iter()
            .filter(|e| e.split == split)
            .max_by_key(|e| e.epoch)
    }

    /// Batch size as written in tables: the number, or `full`.
    pub fn batch_label(&self) -> String {
        self.batch_size
            .map_or_else(|| "full".to_string(), |b| b.to_string())
    }
}

fn label_of(dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let own = name(&canonical);
    // `runs/<name>/analysis` is labelled by <name>.
    if own == "analysis"
        && let Some(parent) = canonical.parent()
    {
        return name(parent);
    }
    own
}

/// The Parquet files of one table, across shards; `None` when the phase did not run.
fn table_files(dir: &Path, table: &str) -> Result<Option<Vec<PathBuf>>, ReportError> {
    let table_dir = dir.join(format!("table={table}"));
    if !table_dir.is_dir() {
        return Ok(None);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let mut files = Vec::new();
    for shard in std::fs::read_dir(&table_dir).map_err(io(&table_dir))? {
        let shard = shard.map_err(io(&table_dir))?.path();
        if !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).map_err(io(&shard))? {
            let f = f.map_err(io(&shard))?.path();
            // Hidden files are a writer's temporaries.
            let hidden = f
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && f.extension().is_some_and(|e| e == "parquet") {
                files.push(f);
            }
        }
    }
    files.sort();
    Ok((!files.is_empty()).then_some(files))
}

struct Tables<'a> {
    dir: &'a Path,
}

impl Tables<'_> {
    fn scan(&self, table: &'static str) -> Result<Option<LazyFrame>, ReportError> {
        let Some(files) = table_files(self.dir, table)? else {
            return Ok(None);
        };
        let paths: Vec<PlRefPath> = files
            .iter()
            .map(|p| PlRefPath::new(p.to_string_lossy().as_ref()))
            .collect();
        // The files are listed here, so no globbing; the hive columns (table, shard) are not
        // needed, and inferring their types would need polars' date features.
        let args = ScanArgsParquet {
            glob: false,
            hive_options: HiveOptions::new_disabled(),
            ..Default::default()
        };
        LazyFrame::scan_parquet_files(paths.into_iter().collect(), args)
            .map(Some)
            .map_err(|source| self.err(table, source))
    }

    /// The rows of `table` that match `filter`, read from disk once; the report's several
    /// queries over a table then run on this frame in memory.
    fn load(&self, table: &'static str, filter: Expr) -> Result<Option<DataFrame>, ReportError> {
        match self.scan(table)? {
            Some(lf) => self.collect(table, lf.filter(filter)).map(Some),
            None => Ok(None),
        }
    }

    fn cols<'a>(&'a self, table: &'static str, df: &'a DataFrame) -> Cols<'a> {
        Cols {
            df,
            tables: self,
            table,
        }
    }

    fn collect(&self, table: &'static str, lf: LazyFrame) -> Result<DataFrame, ReportError> {
        lf.collect().map_err(|source| self.err(table, source))
    }

    fn err(&self, table: &'static str, source: PolarsError) -> ReportError {
        ReportError::Query {
            dir: self.dir.to_path_buf(),
            table,
            source,
        }
    }
}

/// Column access that turns type and name mismatches into a named error.
struct Cols<'a> {
    df: &'a DataFrame,
    tables: &'a Tables<'a>,
    table: &'static str,
}

impl Cols<'_> {
    fn series(&self, name: &str, dtype: &DataType) -> Result<Series, ReportError> {
        self.df
            .column(name)
            .and_then(|c| c.as_materialized_series().cast(dtype))
            .map_err(|e| self.tables.err(self.table, e))
    }
    fn f64(&self, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
        let s = self.series(name, &DataType::Float64)?;
        let ca = s.f64().map_err(|e| self.tables.err(self.table, e))?;
        Ok(ca.iter().collect())
    }
    fn u64(&self, name: &str) -> Result<Vec<Option<u64>>, ReportError> {
        let s = self.series(name, &DataType::UInt64)?;
        let ca = s.u64().map_err(|e| self.tables.err(self.table, e))?;
        Ok(ca.iter().collect())
    }
    fn string(&self, name: &str) -> Result<Vec<Option<String>>, ReportError> {
        let s = self.series(name, &DataType::String)?;
        let ca = s.str().map_err(|e| self.tables.err(self.table, e))?;
        Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ReportError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[derive(serde::Deserialize)]
struct ManifestView {
    /// Absent in folders of revision 1 (see `analyze`'s manifest).
    #[serde(default)]
    revision: u32,
    config: AnalyzeConfig,
}

/// One row of [`floors_by`]'s aggregates.
struct FloorAgg {
    floors: u64,
    nonfinite: u64,
    interior_share: Option<f64>,
    h_mean: Option<f64>,
    h_median: Option<f64>,
    he_mean: Option<f64>,
    rel_h: Option<f64>,
    alpha_median: Option<f64>,
}

impl FloorAgg {
    /// Every row, each column read once.
    fn rows(c: &Cols<'_>) -> Result<Vec<FloorAgg>, ReportError> {
        let (floors, nonfinite) = (c.u64("floors")?, c.u64("nonfinite")?);
        let (share, h, hm) = (
            c.f64("interior_share")?,
            c.f64("h_mean")?,
            c.f64("h_median")?,
        );
        let (he, rel, alpha) = (c.f64("he_mean")?, c.f64("rel_h")?, c.f64("alpha_median")?);
        Ok((0..floors.len())
            .map(|i| FloorAgg {
                floors: floors[i].unwrap_or_default(),
                nonfinite: nonfinite[i].unwrap_or_default(),
                interior_share: share[i],
                h_mean: h[i],
                h_median: hm[i],
                he_mean: he[i],
                rel_h: rel[i],
                alpha_median: alpha[i],
            })
            .collect())
    }

    fn apply(&self, t: &mut EpochStats) {
        t.floors = self.floors;
        t.nonfinite_floors = self.nonfinite;
        t.interior_share = self.interior_share;
        t.height_start_mean = self.h_mean;
        t.height_start_median = self.h_median;
        t.height_end_mean = self.he_mean;
        t.rel_height_mean = self.rel_h;
        t.alpha_star_median = self.alpha_median;
    }
}

fn floors_by(
    lf: LazyFrame,
    group: Option<&str>,
    tables: &Tables<'_>,
) -> Result<DataFrame, ReportError> {
    let aggs = [
        len().cast(DataType::UInt64).alias("floors"),
        col("shape")
            .eq(lit("nonfinite"))
            .cast(DataType::UInt64)
            .sum()
            .alias("nonfinite"),
        col("shape")
            .eq(lit("interior_min"))
            .cast(DataType::Float64)
            .mean()
            .alias("interior_share"),
        col("height_start").mean().alias("h_mean"),
        col("height_start").median().alias("h_median"),
        col("height_end").mean().alias("he_mean"),
        (col("height_start") / col("loss_start"))
            .mean()
            .alias("rel_h"),
        col("alpha_star").median().alias("alpha_median"),
    ];
    let lf = match group {
        Some(g) => lf
            .group_by([col(g)])
            .agg(aggs)
            .sort([g], SortMultipleOptions::default()),
        None => lf.select(aggs),
    };
    tables.collect("floors", lf)
}

fn cos_by(
    lf: LazyFrame,
    group: Option<&str>,
    tables: &Tables<'_>,
) -> Result<DataFrame, ReportError> {
    let cos = || col("cos_prev_update");
    let aggs = [
        cos().count().cast(DataType::UInt64).alias("cos_count"),
        cos().mean().alias("cos_mean"),
        cos().median().alias("cos_median"),
        cos().std(1).alias("cos_std"),
        cos()
            .lt(lit(0.0))
            .cast(DataType::Float64)
            .mean()
            .alias("cos_neg"),
        col("update_norm").mean().alias("upd_mean"),
        col("dist_from_init")
            .filter(col("dist_from_init").is_not_null())
            .last()
            .alias("dist_end"),
        col("step")
            .filter(col("dist_from_init").is_not_null())
            .last()
            .alias("dist_step"),
    ];
    let lf = lf.sort(["step"], SortMultipleOptions::default());
    let lf = match group {
        Some(g) => lf
            .group_by_stable([col(g)])
            .agg(aggs)
            .sort([g], SortMultipleOptions::default()),
        None => lf.select(aggs),
    };
    tables.collect("steps", lf)
}

/// Reads one analysis folder.
pub fn load_run(dir: &Path, barrier_threshold: f64) -> Result<RunData, ReportError> {
    let manifest_path = dir.join("_sgdwalk_analysis.json");
    if !manifest_path.is_file() {
        return Err(ReportError::NotAnAnalysis {
            dir: dir.to_path_buf(),
            missing: "_sgdwalk_analysis.json",
        });
    }
    let manifest: ManifestView = read_json(&manifest_path)?;
    if manifest.revision < 2
        && manifest.config.has("curvature")
        && manifest.config.bn.first() == Some(&sgdwalk_workload::BnPolicy::EvalMode)
    {
        return Err(ReportError::BadFile {
            path: manifest_path,
            reason: "its eval-mode curvature rows were computed with batch statistics by an \
                     earlier sgdwalk-analyze; analyze the recording again into a new folder"
                .into(),
        });
    }
    let info_path = dir.join(RUN_DESCRIPTION);
    if !info_path.is_file() {
        return Err(ReportError::NotAnAnalysis {
            dir: dir.to_path_buf(),
            missing: "_sgdwalk_run.json (written by sgdwalk-analyze 0.1 and later; rerun analyze)",
        });
    }
    let info: RunInfo = read_json(&info_path)?;
    let desc = &info.run;
    let kind = match (&desc.full_batch, &desc.optimizer) {
        (Some(_), _) if desc.noise_std > 0.0 => RunKind::GdNoise,
        (Some(_), _) => RunKind::Gd,
        (None, OptimizerSpec::Sgd { momentum, .. }) if *momentum == 0.0 => RunKind::Sgd,
        (None, _) => RunKind::OtherMinibatch,
    };
    let eval_set = manifest
        .config
        .eval
        .first()
        .map_or_else(|| "train".into(), |e| e.name());
    let bn_policy = manifest
        .config
        .bn
        .first()
        .map_or_else(|| "train-mode".into(), |b| b.as_str().to_string());
    let tables = Tables { dir };
    let primary = || {
        col("eval_set")
            .eq(lit(eval_set.as_str()))
            .and(col("bn_policy").eq(lit(bn_policy.as_str())))
    };

    // Geometry over the trainable parameters (the paper's definition) when the analysis has it;
    // analyses made before that row existed have the whole state only.
    let layer = |name: &str| col("layer").eq(lit(name));
    let mut geometry_scope = "params";
    let mut steps_all = tables.load("steps", layer("params"))?;
    if steps_all.as_ref().is_some_and(|df| df.height() == 0) {
        geometry_scope = "all";
        steps_all = tables.load("steps", layer("all"))?;
    }
    let steps_all = steps_all.map(DataFrame::lazy);
    let mut geometry = Vec::new();
    let mut per_epoch: Vec<EpochStats> = Vec::new();
    let mut whole = EpochStats::default();
    if let Some(lf) = &steps_all {
        let df = tables.collect(
            "steps",
            lf.clone()
                .select([
                    col("step"),
                    col("epoch"),
                    col("cos_prev_update"),
                    col("dist_from_init"),
                ])
                .sort(["step"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("steps", &df);
        let (step, epoch) = (c.u64("step")?, c.u64("epoch")?);
        let (cos, dist) = (c.f64("cos_prev_update")?, c.f64("dist_from_init")?);
        for i in 0..df.height() {
            geometry.push(StepPoint {
                step: step[i].unwrap_or_default(),
                epoch: epoch[i].unwrap_or_default() as u32,
                cos: cos[i],
                dist: dist[i],
            });
        }
        for (g, into_whole) in [(Some("epoch"), false), (None, true)] {
            let df = cos_by(lf.clone(), g, &tables)?;
            let c = tables.cols("steps", &df);
            let epochs = if g.is_some() {
                c.u64("epoch")?
            } else {
                vec![None]
            };
            let (n, mean, median, std, neg, upd, dist, dstep) = (
                c.u64("cos_count")?,
                c.f64("cos_mean")?,
                c.f64("cos_median")?,
                c.f64("cos_std")?,
                c.f64("cos_neg")?,
                c.f64("upd_mean")?,
                c.f64("dist_end")?,
                c.u64("dist_step")?,
            );
            for i in 0..df.height() {
                let s = EpochStats {
                    epoch: epochs[i].map(|e| e as u32),
                    cos_count: n[i].unwrap_or_default(),
                    cos_mean: mean[i],
                    cos_median: median[i],
                    cos_std: std[i],
                    cos_negative_share: if n[i].unwrap_or_default() > 0 {
                        neg[i]
                    } else {
                        None
                    },
                    update_norm_mean: upd[i],
                    dist_end: dist[i],
                    dist_end_step: dstep[i],
                    ..Default::default()
                };
                if into_whole {
                    whole = s;
                } else {
                    per_epoch.push(s);
                }
            }
        }
    }
    let step_epoch = steps_all.as_ref().map(|lf| {
        lf.clone()
            .select([col("step"), col("epoch")])
            .unique(None, UniqueKeepStrategy::First)
    });

    // Valley floors, per epoch (joined on the geometry's epochs) and over the run.
    let mut floors = Vec::new();
    if let Some(df) = tables.load("floors", primary())? {
        let lf = df.lazy();
        let df = tables.collect(
            "floors",
            lf.clone()
                .select([
                    col("step"),
                    col("alpha_star"),
                    col("loss_at_floor"),
                    col("height_start"),
                ])
                .sort(["step"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("floors", &df);
        let (step, a, l, h) = (
            c.u64("step")?,
            c.f64("alpha_star")?,
            c.f64("loss_at_floor")?,
            c.f64("height_start")?,
        );
        for i in 0..df.height() {
            floors.push(FloorPoint {
                step: step[i].unwrap_or_default(),
                alpha_star: a[i].unwrap_or(f64::NAN),
                loss_at_floor: l[i].unwrap_or(f64::NAN),
                height_start: h[i].unwrap_or(f64::NAN),
            });
        }
        let df = floors_by(lf.clone(), None, &tables)?;
        if let [agg] = FloorAgg::rows(&tables.cols("floors", &df))?.as_slice() {
            agg.apply(&mut whole);
        }
        if let Some(se) = &step_epoch {
            let joined = lf.join(
                se.clone(),
                [col("step")],
                [col("step")],
                JoinArgs::new(JoinType::Left),
            );
            let df = floors_by(joined, Some("epoch"), &tables)?;
            let c = tables.cols("floors", &df);
            let epochs = c.u64("epoch")?;
            for (agg, e) in FloorAgg::rows(&c)?.iter().zip(&epochs) {
                let e = e.map(|e| e as u32);
                let idx = match per_epoch.iter().position(|s| s.epoch == e) {
                    Some(i) => i,
                    None => {
                        per_epoch.push(EpochStats {
                            epoch: e,
                            ..Default::default()
                        });
                        per_epoch.len() - 1
                    }
                };
                agg.apply(&mut per_epoch[idx]);
            }
            per_epoch.sort_by_key(|s| s.epoch);
        }
    }

    // Interpolation curves on the primary set.
    let mut interp = Vec::new();
    if let Some(df) = tables.load("interp", primary())? {
        let df = tables.collect(
            "interp",
            df.lazy()
                .select([col("step"), col("alpha"), col("loss")])
                .sort(["step", "alpha"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("interp", &df);
        let (s, a, l) = (c.u64("step")?, c.f64("alpha")?, c.f64("loss")?);
        for i in 0..df.height() {
            interp.push((
                s[i].unwrap_or_default(),
                a[i].unwrap_or(f64::NAN),
                l[i].unwrap_or(f64::NAN),
            ));
        }
    }

    // Barriers: frequency and size per path and stride.
    let mut barriers = Vec::new();
    let mut floor_barriers = Vec::new();
    if let Some(df) = tables.load("barriers", primary())? {
        let rel = || {
            col("barrier_max")
                / when(col("loss_start").gt(col("loss_end")))
                    .then(col("loss_start"))
                    .otherwise(col("loss_end"))
        };
        let lf = df.lazy().with_column(rel().alias("rel"));
        let has = || col("rel").gt(lit(barrier_threshold));
        let df = tables.collect(
            "barriers",
            lf.clone()
                .group_by([col("path"), col("stride")])
                .agg([
                    len().cast(DataType::UInt64).alias("segments"),
                    has().cast(DataType::UInt64).sum().alias("with_barrier"),
                    col("rel").filter(has()).mean().alias("rel_mean"),
                    col("rel").filter(has()).max().alias("rel_max"),
                    col("rel")
                        .is_nan()
                        .cast(DataType::UInt64)
                        .sum()
                        .alias("nonfinite"),
                ])
                .sort(["path", "stride"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("barriers", &df);
        let (path, stride, seg, with, mean, max, nf) = (
            c.string("path")?,
            c.u64("stride")?,
            c.u64("segments")?,
            c.u64("with_barrier")?,
            c.f64("rel_mean")?,
            c.f64("rel_max")?,
            c.u64("nonfinite")?,
        );
        for i in 0..df.height() {
            barriers.push(BarrierStats {
                path: path[i].clone().unwrap_or_default(),
                stride: stride[i].unwrap_or_default() as u32,
                segments: seg[i].unwrap_or_default(),
                with_barrier: with[i].unwrap_or_default(),
                rel_mean: mean[i],
                rel_max: max[i],
                nonfinite: nf[i].unwrap_or_default(),
            });
        }
        let df = tables.collect(
            "barriers",
            lf.filter(col("path").eq(lit("floor")))
                .select([col("stride"), col("step_from"), col("rel")])
                .sort(["stride", "step_from"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("barriers", &df);
        let (k, s, r) = (c.u64("stride")?, c.u64("step_from")?, c.f64("rel")?);
        for i in 0..df.height() {
            floor_barriers.push((
                k[i].unwrap_or_default() as u32,
                s[i].unwrap_or_default(),
                r[i].unwrap_or(f64::NAN),
            ));
        }
    }

    // Curvature at the iterates.
    let mut curvature: Vec<CurvPoint> = Vec::new();
    let iterate = primary().and(col("point").eq(lit("iterate")));
    if let Some(df) = tables.load("curvature", iterate)? {
        let lf = df.lazy();
        let df = tables.collect(
            "curvature",
            lf.clone()
                .filter(
                    col("quantity")
                        .eq(lit("eigenvalue"))
                        .and(col("rank").eq(lit(0u32))),
                )
                .select([col("step"), col("value")])
                .sort(["step"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("curvature", &df);
        let (s, v) = (c.u64("step")?, c.f64("value")?);
        for i in 0..df.height() {
            let step = s[i].unwrap_or_default();
            curvature.push(CurvPoint {
                step,
                epoch: geometry.iter().find(|g| g.step == step).map(|g| g.epoch),
                lambda_max: v[i].unwrap_or(f64::NAN),
                trace: None,
            });
        }
        let df = tables.collect(
            "curvature",
            lf.filter(col("quantity").eq(lit("trace")))
                .select([col("step"), col("value")]),
        )?;
        let c = tables.cols("curvature", &df);
        let (s, v) = (c.u64("step")?, c.f64("value")?);
        for i in 0..df.height() {
            if let Some(p) = curvature.iter_mut().find(|p| Some(p.step) == s[i]) {
                p.trace = v[i];
            }
        }
    }

    // Per-epoch evaluation recorded during training.
    let mut evals = Vec::new();
    if let Some(lf) = tables.scan("epochs")? {
        let df = tables.collect(
            "epochs",
            lf.select([col("epoch"), col("split"), col("loss"), col("accuracy")])
                .sort(["epoch", "split"], SortMultipleOptions::default()),
        )?;
        let c = tables.cols("epochs", &df);
        let (e, sp, l, a) = (
            c.u64("epoch")?,
            c.string("split")?,
            c.f64("loss")?,
            c.f64("accuracy")?,
        );
        for i in 0..df.height() {
            evals.push(EpochEval {
                epoch: e[i].unwrap_or_default() as u32,
                split: sp[i].clone().unwrap_or_default(),
                loss: l[i].unwrap_or(f64::NAN),
                accuracy: a[i].unwrap_or(f64::NAN),
            });
        }
    }

    let trainable_params = desc
        .layout
        .entries
        .iter()
        .filter(|e| e.trainable)
        .map(|e| e.len_elements as u64)
        .sum();
    Ok(RunData {
        dir: dir.to_path_buf(),
        label: label_of(dir),
        kind,
        model: desc.model.short_name(),
        dataset: desc.dataset.name.as_str().to_string(),
        lr: desc.schedule.base_lr,
        batch_size: desc.full_batch.is_none().then_some(desc.batch_size),
        noise_std: desc.noise_std,
        steps_per_epoch: desc.steps_per_epoch,
        epochs: desc.epochs,
        total_steps: desc.total_steps,
        trainable_params,
        eval_set,
        bn_policy,
        geometry_scope,
        per_epoch,
        whole,
        barriers,
        geometry,
        floors,
        interp,
        floor_barriers,
        curvature,
        evals,
    })
}

/// Writes the runs' aggregates as one tidy table: one row per run, epoch (null = whole run)
/// and metric. Returns the number of rows.
pub fn write_summary(runs: &[RunData], path: &Path) -> Result<usize, ReportError> {
    let mut run = Vec::new();
    let mut kind = Vec::new();
    let mut model = Vec::new();
    let mut dataset = Vec::new();
    let mut lr = Vec::new();
    let mut batch: Vec<Option<u32>> = Vec::new();
    let mut noise = Vec::new();
    let mut eval_set = Vec::new();
    let mut bn = Vec::new();
    let mut epoch: Vec<Option<u32>> = Vec::new();
    let mut metric: Vec<&'static str> = Vec::new();
    let mut value: Vec<Option<f64>> = Vec::new();
    let mut count: Vec<Option<u64>> = Vec::new();
    for r in runs {
        let mut push = |e: Option<u32>, m: &'static str, v: Option<f64>, n: Option<u64>| {
            run.push(r.label.clone());
            kind.push(r.kind.as_str());
            model.push(r.model.clone());
            dataset.push(r.dataset.clone());
            lr.push(r.lr);
            batch.push(r.batch_size);
            noise.push(r.noise_std);
            eval_set.push(r.eval_set.clone());
            bn.push(r.bn_policy.clone());
            epoch.push(e);
            metric.push(m);
            value.push(v);
            count.push(n);
        };
        for s in r.per_epoch.iter().chain(std::iter::once(&r.whole)) {
            let f = Some(s.floors);
            let c = Some(s.cos_count);
            push(s.epoch, "interior_floor_share", s.interior_share, f);
            push(s.epoch, "height_start_mean", s.height_start_mean, f);
            push(s.epoch, "height_start_median", s.height_start_median, f);
            push(s.epoch, "height_end_mean", s.height_end_mean, f);
            push(s.epoch, "relative_height_mean", s.rel_height_mean, f);
            push(s.epoch, "alpha_star_median", s.alpha_star_median, f);
            push(
                s.epoch,
                "nonfinite_floors",
                Some(s.nonfinite_floors as f64),
                f,
            );
            push(s.epoch, "cos_mean", s.cos_mean, c);
            push(s.epoch, "cos_median", s.cos_median, c);
            push(s.epoch, "cos_std", s.cos_std, c);
            push(s.epoch, "cos_negative_share", s.cos_negative_share, c);
            push(s.epoch, "update_norm_mean", s.update_norm_mean, c);
            push(s.epoch, "dist_from_init_end", s.dist_end, s.dist_end_step);
        }
        for b in &r.barriers {
            let m: &'static str = match (b.path.as_str(), b.stride) {
                ("floor", 1) => "barrier_share_floor_stride1",
                ("floor", _) => "barrier_share_floor_strideK",
                (_, 1) => "barrier_share_iterate_stride1",
                _ => "barrier_share_iterate_strideK",
            };
            push(
                None,
                m,
                (b.segments > 0).then(|| b.with_barrier as f64 / b.segments as f64),
                Some(b.segments),
            );
        }
        for p in &r.curvature {
            push(p.epoch, "lambda_max", Some(p.lambda_max), Some(p.step));
            if let Some(t) = p.trace {
                push(p.epoch, "hessian_trace", Some(t), Some(p.step));
            }
        }
        for e in &r.evals {
            let m = match e.split.as_str() {
                "train" => ["train_loss", "train_accuracy"],
                "val" => ["val_loss", "val_accuracy"],
                "test" => ["test_loss", "test_accuracy"],
                _ => continue,
            };
            push(Some(e.epoch), m[0], Some(e.loss), None);
            push(Some(e.epoch), m[1], Some(e.accuracy), None);
        }
    }
    let rows = run.len();
    let columns = vec![
        Column::new("run".into(), run),
        Column::new("kind".into(), kind),
        Column::new("model".into(), model),
        Column::new("dataset".into(), dataset),
        Column::new("lr".into(), lr),
        Column::new("batch_size".into(), batch),
        Column::new("noise_std".into(), noise),
        Column::new("eval_set".into(), eval_set),
        Column::new("bn_policy".into(), bn),
        Column::new("epoch".into(), epoch),
        Column::new("metric".into(), metric),
        Column::new("value".into(), value),
        Column::new("count".into(), count),
    ];
    let bad = |e: PolarsError| ReportError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut df = DataFrame::new(rows, columns).map_err(bad)?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(bad)?;
    super::write_atomic(path, &bytes)?;
    Ok(rows)
}
