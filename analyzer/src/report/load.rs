//! The polars side of the report: lazy scans of one analysis folder's tables, aggregated per
//! epoch and per run, and the raw series the figures need, as plain vectors.
//!
//! [`load_run`] reads the folder's contract ([`AnalysisDir`]: manifest and run description),
//! then each table in turn: `steps` (geometry, per-epoch cosines and distances), `floors`,
//! `interp`, `barriers`, `curvature` and `epochs`. A table whose phase did not run is empty.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use sgdwalk_workload::BnPolicy;
use sgdwalk_workload::run::{OptimizerSpec, RunDescription};

use super::ReportError;
use crate::dir::{AnalysisDir, Manifest, RunInfo};
use crate::tables::TableName;
use crate::tables::cols::{barriers, curvature, epochs, floors, interp, steps};

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

/// Reads one analysis folder.
pub fn load_run(dir: &Path, barrier_threshold: f64) -> Result<RunData, ReportError> {
    let folder = AnalysisDir::new(dir);
    let (manifest, info) = read_contract(&folder)?;
    let desc = &info.run;
    let tables = Tables::new(&folder, &manifest);
    let Geometry {
        scope: geometry_scope,
        points: geometry,
        mut per_epoch,
        mut whole,
        step_epoch,
    } = load_geometry(&tables)?;
    let floors = load_floors(&tables, step_epoch, &mut per_epoch, &mut whole)?;
    let interp = load_interp(&tables)?;
    let Barriers {
        stats: barriers,
        floor_path: floor_barriers,
    } = load_barriers(&tables, barrier_threshold)?;
    let curvature = load_curvature(&tables, &geometry)?;
    let evals = load_evals(&tables)?;
    Ok(RunData {
        dir: dir.to_path_buf(),
        label: manifest
            .label
            .clone()
            .unwrap_or_else(|| folder.default_label()),
        kind: run_kind(desc),
        model: desc.model.short_name(),
        dataset: desc.dataset.name.as_str().to_string(),
        lr: desc.schedule.base_lr,
        batch_size: desc.full_batch.is_none().then_some(desc.batch_size),
        noise_std: desc.noise_std,
        steps_per_epoch: desc.steps_per_epoch,
        epochs: desc.epochs,
        total_steps: desc.total_steps,
        trainable_params: trainable_params(desc),
        eval_set: tables.eval_set,
        bn_policy: tables.bn_policy,
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

/// The folder's manifest and run description. Refuses a folder whose primary curvature rows
/// are eval-mode ones computed with batch statistics by an earlier `analyze` (the report reads
/// the first BatchNorm policy only, so a stale non-primary policy does not matter here).
fn read_contract(folder: &AnalysisDir) -> Result<(Manifest, RunInfo), ReportError> {
    let manifest = folder.require_manifest()?;
    if manifest.has_stale_eval_mode_curvature()
        && manifest.config.bn.first() == Some(&BnPolicy::EvalMode)
    {
        return Err(ReportError::BadFile {
            path: folder.manifest_path(),
            reason: "its eval-mode curvature rows were computed with batch statistics by an \
                     earlier sgdwalk-analyze; analyze the recording again into a new folder"
                .into(),
        });
    }
    let info = folder
        .read_run_info()?
        .ok_or_else(|| ReportError::NoRunInfo {
            dir: folder.root().to_path_buf(),
        })?;
    Ok((manifest, info))
}

fn run_kind(desc: &RunDescription) -> RunKind {
    match (&desc.full_batch, &desc.optimizer) {
        (Some(_), _) if desc.noise_std > 0.0 => RunKind::GdNoise,
        (Some(_), _) => RunKind::Gd,
        (None, OptimizerSpec::Sgd { momentum, .. }) if *momentum == 0.0 => RunKind::Sgd,
        (None, _) => RunKind::OtherMinibatch,
    }
}

fn trainable_params(desc: &RunDescription) -> u64 {
    desc.layout
        .entries
        .iter()
        .filter(|e| e.trainable)
        .map(|e| e.len_elements as u64)
        .sum()
}

/// What the `steps` table gives: the per-step series and the per-epoch and whole-run
/// aggregates of cos(d_{t−1}, d_t), ‖d_t‖ and ‖θ_t − θ_0‖.
struct Geometry {
    /// `params` or `all`, see [`RunData::geometry_scope`].
    scope: &'static str,
    points: Vec<StepPoint>,
    per_epoch: Vec<EpochStats>,
    whole: EpochStats,
    /// (step, epoch) of every step, for the tables that have no epoch column.
    step_epoch: Option<LazyFrame>,
}

/// Geometry over the trainable parameters (the paper's definition) when the analysis has it;
/// analyses made before that row existed have the whole state only.
fn load_geometry(tables: &Tables<'_>) -> Result<Geometry, ReportError> {
    let layer = |name: &str| col(steps::layer).eq(lit(name));
    let mut scope = "params";
    let mut rows = tables.load(TableName::Steps, layer("params"))?;
    if rows.as_ref().is_some_and(|df| df.height() == 0) {
        scope = "all";
        rows = tables.load(TableName::Steps, layer("all"))?;
    }
    let mut geometry = Geometry {
        scope,
        points: Vec::new(),
        per_epoch: Vec::new(),
        whole: EpochStats::default(),
        step_epoch: None,
    };
    let Some(lf) = rows.map(DataFrame::lazy) else {
        return Ok(geometry);
    };
    let df = tables.collect(
        TableName::Steps,
        lf.clone()
            .select([
                col(steps::step),
                col(steps::epoch),
                col(steps::cos_prev_update),
                col(steps::dist_from_init),
            ])
            .sort([steps::step], SortMultipleOptions::default()),
    )?;
    let c = tables.cols(TableName::Steps, &df);
    let (step, epoch) = (c.u64(steps::step)?, c.u64(steps::epoch)?);
    let (cos, dist) = (
        c.f64(steps::cos_prev_update)?,
        c.f64(steps::dist_from_init)?,
    );
    for i in 0..df.height() {
        geometry.points.push(StepPoint {
            step: step[i].unwrap_or_default(),
            epoch: epoch[i].unwrap_or_default() as u32,
            cos: cos[i],
            dist: dist[i],
        });
    }
    for (group, into_whole) in [(Some(steps::epoch), false), (None, true)] {
        let df = cos_by(lf.clone(), group, tables)?;
        for s in CosAgg::rows(&tables.cols(TableName::Steps, &df), group.is_some())? {
            if into_whole {
                geometry.whole = s;
            } else {
                geometry.per_epoch.push(s);
            }
        }
    }
    geometry.step_epoch = Some(
        lf.select([col(steps::step), col(steps::epoch)])
            .unique(None, UniqueKeepStrategy::First),
    );
    Ok(geometry)
}

/// Valley floors on the primary set: the points, and the aggregates per epoch (joined on the
/// geometry's epochs, adding epochs the geometry lacks) and over the run.
fn load_floors(
    tables: &Tables<'_>,
    step_epoch: Option<LazyFrame>,
    per_epoch: &mut Vec<EpochStats>,
    whole: &mut EpochStats,
) -> Result<Vec<FloorPoint>, ReportError> {
    let primary = tables.primary(floors::eval_set, floors::bn_policy);
    let Some(df) = tables.load(TableName::Floors, primary)? else {
        return Ok(Vec::new());
    };
    let lf = df.lazy();
    let df = tables.collect(
        TableName::Floors,
        lf.clone()
            .select([
                col(floors::step),
                col(floors::alpha_star),
                col(floors::loss_at_floor),
                col(floors::height_start),
            ])
            .sort([floors::step], SortMultipleOptions::default()),
    )?;
    let c = tables.cols(TableName::Floors, &df);
    let (step, a, l, h) = (
        c.u64(floors::step)?,
        c.f64(floors::alpha_star)?,
        c.f64(floors::loss_at_floor)?,
        c.f64(floors::height_start)?,
    );
    let points = (0..df.height())
        .map(|i| FloorPoint {
            step: step[i].unwrap_or_default(),
            alpha_star: a[i].unwrap_or(f64::NAN),
            loss_at_floor: l[i].unwrap_or(f64::NAN),
            height_start: h[i].unwrap_or(f64::NAN),
        })
        .collect();
    let df = floors_by(lf.clone(), None, tables)?;
    if let [agg] = FloorAgg::rows(&tables.cols(TableName::Floors, &df))?.as_slice() {
        agg.apply(whole);
    }
    if let Some(se) = step_epoch {
        let joined = lf.join(
            se,
            [col(floors::step)],
            [col(steps::step)],
            JoinArgs::new(JoinType::Left),
        );
        let df = floors_by(joined, Some(steps::epoch), tables)?;
        let c = tables.cols(TableName::Floors, &df);
        let epochs = c.u64(steps::epoch)?;
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
    Ok(points)
}

/// Interpolation curves on the primary set: (step, α, loss), sorted.
fn load_interp(tables: &Tables<'_>) -> Result<Vec<(u64, f64, f64)>, ReportError> {
    let primary = tables.primary(interp::eval_set, interp::bn_policy);
    let Some(df) = tables.load(TableName::Interp, primary)? else {
        return Ok(Vec::new());
    };
    let df = tables.collect(
        TableName::Interp,
        df.lazy()
            .select([col(interp::step), col(interp::alpha), col(interp::loss)])
            .sort(
                [interp::step, interp::alpha],
                SortMultipleOptions::default(),
            ),
    )?;
    let c = tables.cols(TableName::Interp, &df);
    let (s, a, l) = (
        c.u64(interp::step)?,
        c.f64(interp::alpha)?,
        c.f64(interp::loss)?,
    );
    Ok((0..df.height())
        .map(|i| {
            (
                s[i].unwrap_or_default(),
                a[i].unwrap_or(f64::NAN),
                l[i].unwrap_or(f64::NAN),
            )
        })
        .collect())
}

/// What the `barriers` table gives, see [`RunData::barriers`] and [`RunData::floor_barriers`].
#[derive(Default)]
struct Barriers {
    stats: Vec<BarrierStats>,
    floor_path: Vec<(u32, u64, f64)>,
}

/// Barriers on the primary set: frequency and size per path and stride, and the relative
/// floor-path barrier of every segment as (stride, step, relative barrier).
fn load_barriers(tables: &Tables<'_>, barrier_threshold: f64) -> Result<Barriers, ReportError> {
    let primary = tables.primary(barriers::eval_set, barriers::bn_policy);
    let Some(df) = tables.load(TableName::Barriers, primary)? else {
        return Ok(Barriers::default());
    };
    let rel = || {
        col(barriers::barrier_max)
            / when(col(barriers::loss_start).gt(col(barriers::loss_end)))
                .then(col(barriers::loss_start))
                .otherwise(col(barriers::loss_end))
    };
    let lf = df.lazy().with_column(rel().alias("rel"));
    let has = || col("rel").gt(lit(barrier_threshold));
    let df = tables.collect(
        TableName::Barriers,
        lf.clone()
            .group_by([col(barriers::path), col(barriers::stride)])
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
            .sort(
                [barriers::path, barriers::stride],
                SortMultipleOptions::default(),
            ),
    )?;
    let c = tables.cols(TableName::Barriers, &df);
    let (path, stride, seg, with, mean, max, nf) = (
        c.string(barriers::path)?,
        c.u64(barriers::stride)?,
        c.u64("segments")?,
        c.u64("with_barrier")?,
        c.f64("rel_mean")?,
        c.f64("rel_max")?,
        c.u64("nonfinite")?,
    );
    let stats = (0..df.height())
        .map(|i| BarrierStats {
            path: path[i].clone().unwrap_or_default(),
            stride: stride[i].unwrap_or_default() as u32,
            segments: seg[i].unwrap_or_default(),
            with_barrier: with[i].unwrap_or_default(),
            rel_mean: mean[i],
            rel_max: max[i],
            nonfinite: nf[i].unwrap_or_default(),
        })
        .collect();
    let df = tables.collect(
        TableName::Barriers,
        lf.filter(col(barriers::path).eq(lit("floor")))
            .select([col(barriers::stride), col(barriers::step_from), col("rel")])
            .sort(
                [barriers::stride, barriers::step_from],
                SortMultipleOptions::default(),
            ),
    )?;
    let c = tables.cols(TableName::Barriers, &df);
    let (k, s, r) = (
        c.u64(barriers::stride)?,
        c.u64(barriers::step_from)?,
        c.f64("rel")?,
    );
    let floor_path = (0..df.height())
        .map(|i| {
            (
                k[i].unwrap_or_default() as u32,
                s[i].unwrap_or_default(),
                r[i].unwrap_or(f64::NAN),
            )
        })
        .collect();
    Ok(Barriers { stats, floor_path })
}

/// λ_max and the Hessian trace at the iterates, on the primary set, by step.
fn load_curvature(
    tables: &Tables<'_>,
    geometry: &[StepPoint],
) -> Result<Vec<CurvPoint>, ReportError> {
    let iterate = tables
        .primary(curvature::eval_set, curvature::bn_policy)
        .and(col(curvature::point).eq(lit("iterate")));
    let Some(df) = tables.load(TableName::Curvature, iterate)? else {
        return Ok(Vec::new());
    };
    let lf = df.lazy();
    let df = tables.collect(
        TableName::Curvature,
        lf.clone()
            .filter(
                col(curvature::quantity)
                    .eq(lit("eigenvalue"))
                    .and(col(curvature::rank).eq(lit(0u32))),
            )
            .select([col(curvature::step), col(curvature::value)])
            .sort([curvature::step], SortMultipleOptions::default()),
    )?;
    let c = tables.cols(TableName::Curvature, &df);
    let (s, v) = (c.u64(curvature::step)?, c.f64(curvature::value)?);
    let mut points: Vec<CurvPoint> = (0..df.height())
        .map(|i| {
            let step = s[i].unwrap_or_default();
            CurvPoint {
                step,
                epoch: geometry.iter().find(|g| g.step == step).map(|g| g.epoch),
                lambda_max: v[i].unwrap_or(f64::NAN),
                trace: None,
            }
        })
        .collect();
    let df = tables.collect(
        TableName::Curvature,
        lf.filter(col(curvature::quantity).eq(lit("trace")))
            .select([col(curvature::step), col(curvature::value)]),
    )?;
    let c = tables.cols(TableName::Curvature, &df);
    let (s, v) = (c.u64(curvature::step)?, c.f64(curvature::value)?);
    for i in 0..df.height() {
        if let Some(p) = points.iter_mut().find(|p| Some(p.step) == s[i]) {
            p.trace = v[i];
        }
    }
    Ok(points)
}

/// Per-epoch evaluation recorded during training.
fn load_evals(tables: &Tables<'_>) -> Result<Vec<EpochEval>, ReportError> {
    let Some(lf) = tables.scan(TableName::Epochs)? else {
        return Ok(Vec::new());
    };
    let df = tables.collect(
        TableName::Epochs,
        lf.select([
            col(epochs::epoch),
            col(epochs::split),
            col(epochs::loss),
            col(epochs::accuracy),
        ])
        .sort(
            [epochs::epoch, epochs::split],
            SortMultipleOptions::default(),
        ),
    )?;
    let c = tables.cols(TableName::Epochs, &df);
    let (e, sp, l, a) = (
        c.u64(epochs::epoch)?,
        c.string(epochs::split)?,
        c.f64(epochs::loss)?,
        c.f64(epochs::accuracy)?,
    );
    Ok((0..df.height())
        .map(|i| EpochEval {
            epoch: e[i].unwrap_or_default() as u32,
            split: sp[i].clone().unwrap_or_default(),
            loss: l[i].unwrap_or(f64::NAN),
            accuracy: a[i].unwrap_or(f64::NAN),
        })
        .collect())
}

// --- Queries

/// The tables of one folder, and the evaluation set and BatchNorm policy the claims use (the
/// analysis' first ones).
struct Tables<'a> {
    folder: &'a AnalysisDir,
    eval_set: String,
    bn_policy: String,
}

impl<'a> Tables<'a> {
    fn new(folder: &'a AnalysisDir, manifest: &Manifest) -> Self {
        let config = &manifest.config;
        Tables {
            folder,
            eval_set: config
                .eval
                .first()
                .map_or_else(|| "train".into(), ToString::to_string),
            bn_policy: config
                .bn
                .first()
                .map_or_else(|| "train-mode".into(), |b| b.as_str().to_string()),
        }
    }

    /// Rows of the primary evaluation set and BatchNorm policy, given the table's columns.
    fn primary(&self, eval_set_col: &str, bn_policy_col: &str) -> Expr {
        col(eval_set_col)
            .eq(lit(self.eval_set.as_str()))
            .and(col(bn_policy_col).eq(lit(self.bn_policy.as_str())))
    }

    fn scan(&self, table: TableName) -> Result<Option<LazyFrame>, ReportError> {
        let Some(files) = self.folder.table_files(table)? else {
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
    fn load(&self, table: TableName, filter: Expr) -> Result<Option<DataFrame>, ReportError> {
        match self.scan(table)? {
            Some(lf) => self.collect(table, lf.filter(filter)).map(Some),
            None => Ok(None),
        }
    }

    fn cols<'b>(&'b self, table: TableName, df: &'b DataFrame) -> Cols<'b> {
        Cols {
            df,
            tables: self,
            table,
        }
    }

    fn collect(&self, table: TableName, lf: LazyFrame) -> Result<DataFrame, ReportError> {
        lf.collect().map_err(|source| self.err(table, source))
    }

    fn err(&self, table: TableName, source: PolarsError) -> ReportError {
        ReportError::Query {
            dir: self.folder.root().to_path_buf(),
            table,
            source,
        }
    }
}

/// Column access that turns type and name mismatches into a named error.
struct Cols<'a> {
    df: &'a DataFrame,
    tables: &'a Tables<'a>,
    table: TableName,
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

// --- Aggregates

/// Every row of [`cos_by`]'s aggregates as [`EpochStats`] (the floor fields left empty);
/// `by_epoch`: the rows are grouped by epoch, else one row for the whole run.
struct CosAgg;

impl CosAgg {
    fn rows(c: &Cols<'_>, by_epoch: bool) -> Result<Vec<EpochStats>, ReportError> {
        let epochs = if by_epoch {
            c.u64(steps::epoch)?
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
        Ok((0..c.df.height())
            .map(|i| EpochStats {
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
            })
            .collect())
    }
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

/// Floor counts, shapes, heights and α* per `group` (a column), or over all rows.
fn floors_by(
    lf: LazyFrame,
    group: Option<&str>,
    tables: &Tables<'_>,
) -> Result<DataFrame, ReportError> {
    let aggs = [
        len().cast(DataType::UInt64).alias("floors"),
        col(floors::shape)
            .eq(lit("nonfinite"))
            .cast(DataType::UInt64)
            .sum()
            .alias("nonfinite"),
        col(floors::shape)
            .eq(lit("interior_min"))
            .cast(DataType::Float64)
            .mean()
            .alias("interior_share"),
        col(floors::height_start).mean().alias("h_mean"),
        col(floors::height_start).median().alias("h_median"),
        col(floors::height_end).mean().alias("he_mean"),
        (col(floors::height_start) / col(floors::loss_start))
            .mean()
            .alias("rel_h"),
        col(floors::alpha_star).median().alias("alpha_median"),
    ];
    let lf = match group {
        Some(g) => lf
            .group_by([col(g)])
            .agg(aggs)
            .sort([g], SortMultipleOptions::default()),
        None => lf.select(aggs),
    };
    tables.collect(TableName::Floors, lf)
}

/// cos(d_{t−1}, d_t) statistics, mean ‖d_t‖ and the last ‖θ_t − θ_0‖ per `group` (a column),
/// or over all rows.
fn cos_by(
    lf: LazyFrame,
    group: Option<&str>,
    tables: &Tables<'_>,
) -> Result<DataFrame, ReportError> {
    let cos = || col(steps::cos_prev_update);
    let dist = || col(steps::dist_from_init);
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
        col(steps::update_norm).mean().alias("upd_mean"),
        dist().filter(dist().is_not_null()).last().alias("dist_end"),
        col(steps::step)
            .filter(dist().is_not_null())
            .last()
            .alias("dist_step"),
    ];
    let lf = lf.sort([steps::step], SortMultipleOptions::default());
    let lf = match group {
        Some(g) => lf
            .group_by_stable([col(g)])
            .agg(aggs)
            .sort([g], SortMultipleOptions::default()),
        None => lf.select(aggs),
    };
    tables.collect(TableName::Steps, lf)
}
