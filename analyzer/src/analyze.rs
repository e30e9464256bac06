//! The `analyze` command: work items (blocks of consecutive steps) computed by this shard,
//! each writing its part of every table, skipped on rerun when its parts exist.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sgdwalk_workload::BnPolicy;

use crate::barrier::barrier;
use crate::config::{AnalyzeConfig, EvalSet, RunSettings};
use crate::curvature::{self, LanczosOptions, TraceOptions, Which, hutchinson_trace, lanczos};
use crate::error::AnalyzeError;
use crate::floor::{FloorError, FloorOptions, valley_floor};
use crate::metrics::{GeometryTracker, StepGeometry, TotalScope};
use crate::replay::Session;
use crate::tables::{
    BarrierRow, CurvatureRow, EpochRow, EvalSampleRow, FloorRow, InterpRow, StepRow, TableMeta,
    TableName, TableRows, nan_as_absent, part_path, write_rows,
};

/// What an analysis did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnalyzeSummary {
    pub recording: String,
    pub run_id: String,
    pub out: String,
    pub shard: String,
    pub steps_present: usize,
    pub pairs_analyzed: usize,
    pub work_items_total: usize,
    pub work_items_this_shard: usize,
    pub work_items_skipped: usize,
    /// Rows written per table.
    pub rows: BTreeMap<String, u64>,
    /// Interpolation points whose loss was NaN or infinite (kept in the tables as NaN).
    pub nonfinite_losses: u64,
    pub forward_evaluations: u64,
    pub wall_secs: f64,
}

impl std::fmt::Display for AnalyzeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "analyzed {} (run {})", self.recording, self.run_id)?;
        writeln!(
            f,
            "shard {}: {} of {} work items ({} already done, skipped); {} steps present, {} pairs analyzed",
            self.shard,
            self.work_items_this_shard,
            self.work_items_total,
            self.work_items_skipped,
            self.steps_present,
            self.pairs_analyzed
        )?;
        for (table, rows) in &self.rows {
            writeln!(f, "  {table:12} {rows} rows")?;
        }
        if self.nonfinite_losses > 0 {
            writeln!(
                f,
                "warning: {} interpolation points had a NaN or infinite loss (kept as NaN in the tables)",
                self.nonfinite_losses
            )?;
        }
        writeln!(
            f,
            "{} evaluations in {:.1} s; tables in {}",
            self.forward_evaluations, self.wall_secs, self.out
        )
    }
}

/// Written once per output folder so shards and reruns cannot mix different analyses.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Manifest {
    recording_id: String,
    shard_count: u32,
    /// Revision of how the numbers are computed; folders without it are revision 1.
    #[serde(default = "first_revision")]
    revision: u32,
    config: AnalyzeConfig,
}

/// Revision 2: `eval-mode` curvature rows are computed with running statistics (revision 1
/// computed them with batch statistics, equal to the `train-mode` rows).
const ANALYSIS_REVISION: u32 = 2;

fn first_revision() -> u32 {
    1
}

const MANIFEST: &str = "_sgdwalk_analysis.json";

/// The recording's run description (model, data, optimizer, seeds, …), copied next to the
/// tables so `report` can label and compare runs without the recording at hand.
pub const RUN_DESCRIPTION: &str = "_sgdwalk_run.json";

/// Contents of [`RUN_DESCRIPTION`].
#[derive(Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub recording_id: String,
    pub recording_path: String,
    pub run: sgdwalk_workload::run::RunDescription,
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers and concurrent
/// shards never see half a file.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), AnalyzeError> {
    write_file_atomic(path, text.as_bytes()).map_err(|source| AnalyzeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates the manifest, or checks that the folder holds the same analysis. Phases may be
/// added later (say curvature after a first pass of geometry), with settings of their own:
/// the manifest then lists the union of the phases; any other difference is refused.
fn check_manifest(out: &Path, m: &Manifest) -> Result<(), AnalyzeError> {
    let path = out.join(MANIFEST);
    let invalid = |reason: String| AnalyzeError::InvalidSetting {
        setting: "out",
        reason,
    };
    let write = |m: &Manifest| {
        let text = serde_json::to_string_pretty(m).map_err(|e| invalid(e.to_string()))?;
        write_atomic(&path, &text)
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let existing: Manifest = serde_json::from_str(&text).map_err(|e| {
                invalid(format!(
                    "{} is not an sgdwalk analysis manifest: {e}",
                    path.display()
                ))
            })?;
            if existing.revision < 2
                && existing.config.has("curvature")
                && existing.config.bn.contains(&BnPolicy::EvalMode)
            {
                return Err(invalid(format!(
                    "{} holds eval-mode curvature rows computed with batch statistics by an \
                     earlier sgdwalk (they equal the train-mode rows); analyze into a new --out",
                    out.display()
                )));
            }
            let (old, new) = (&existing.config, &m.config);
            let mut cmp = old.clone();
            cmp.adopt_unrun_phase_settings(new);
            cmp.phases = new.phases.clone();
            if existing.recording_id != m.recording_id
                || existing.shard_count != m.shard_count
                || cmp != *new
            {
                return Err(invalid(format!(
                    "{} holds an analysis of another recording, settings or shard count; use another --out",
                    out.display()
                )));
            }
            let union: Vec<String> = crate::config::PHASES
                .iter()
                .filter(|p| existing.config.has(p) || m.config.has(p))
                .map(|p| p.to_string())
                .collect();
            if union != existing.config.phases {
                let mut merged = Manifest {
                    recording_id: existing.recording_id,
                    shard_count: existing.shard_count,
                    revision: ANALYSIS_REVISION,
                    config: new.clone(),
                };
                merged.config.phases = union;
                write(&merged)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write(m),
        Err(e) => Err(AnalyzeError::Io {
            path: path.clone(),
            source: e,
        }),
    }
}

fn floor_err(e: FloorError<AnalyzeError>) -> AnalyzeError {
    match e {
        FloorError::Evaluator { source, .. } => source,
        other => AnalyzeError::InvalidSetting {
            setting: "grid",
            reason: other.to_string(),
        },
    }
}

fn curvature_err(e: curvature::CurvatureError<AnalyzeError>) -> AnalyzeError {
    match e {
        curvature::CurvatureError::Operator { source, .. } => source,
        other => AnalyzeError::InvalidSetting {
            setting: "top-k",
            reason: other.to_string(),
        },
    }
}

/// One block of steps.
struct Item {
    index: u64,
    lo: u64,
    hi: u64,
}

impl Item {
    fn part(&self) -> String {
        format!("item-{:06}", self.index)
    }
}

/// Runs the analysis that `cfg` describes on this shard's work items.
pub fn analyze(
    cfg: &AnalyzeConfig,
    settings: &RunSettings,
) -> Result<AnalyzeSummary, AnalyzeError> {
    let started = Instant::now();
    if settings.threads > 0 {
        tch::set_num_threads(settings.threads as i32);
    }
    let mut s = Session::open(settings, cfg)?;
    let (lo, hi) = cfg.step_range.unwrap_or((0, u64::MAX));
    let steps: Vec<u64> = s
        .reader
        .steps()
        .iter()
        .copied()
        .filter(|t| (lo..hi).contains(t))
        .collect();
    let pairs: Vec<u64> = s
        .reader
        .consecutive_pairs()
        .into_iter()
        .filter(|t| (lo..hi).contains(t))
        .collect();
    let needs_pairs = ["geometry", "interp", "floors", "barriers"]
        .iter()
        .any(|p| cfg.has(p));
    if needs_pairs && pairs.is_empty() {
        let present = match (s.reader.steps().first(), s.reader.steps().last()) {
            (Some(a), Some(b)) => format!("{} steps, {a}..={b}", s.reader.steps().len()),
            _ => "none".into(),
        };
        return Err(AnalyzeError::NoPairs {
            path: s.path.clone(),
            present,
        });
    }
    std::fs::create_dir_all(&settings.out).map_err(|source| AnalyzeError::Io {
        path: settings.out.clone(),
        source,
    })?;
    let (shard_index, shard_count) = settings.shard;
    check_manifest(
        &settings.out,
        &Manifest {
            recording_id: s.run_id.clone(),
            shard_count,
            revision: ANALYSIS_REVISION,
            config: cfg.clone(),
        },
    )?;
    let info = RunInfo {
        recording_id: s.run_id.clone(),
        recording_path: s.path.display().to_string(),
        run: s.desc.clone(),
    };
    let info_json =
        serde_json::to_string_pretty(&info).map_err(|e| AnalyzeError::InvalidSetting {
            setting: "out",
            reason: e.to_string(),
        })?;
    write_atomic(&settings.out.join(RUN_DESCRIPTION), &info_json)?;
    let config_json = serde_json::to_string(cfg).unwrap_or_default();
    let meta = TableMeta {
        recording_id: s.run_id.clone(),
        recording_path: s.path.display().to_string(),
        recording_checksum: s.recording_checksum.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        config_json,
        shard: Some(settings.shard),
    };
    let spi = cfg.steps_per_item;
    let item_indices: BTreeSet<u64> = steps.iter().map(|t| t / spi).collect();
    let items: Vec<Item> = item_indices
        .iter()
        .map(|&j| Item {
            index: j,
            lo: (j * spi).max(lo),
            hi: ((j + 1) * spi).min(hi),
        })
        .collect();
    let mine: Vec<&Item> = items
        .iter()
        .filter(|it| it.index % u64::from(shard_count) == u64::from(shard_index))
        .collect();
    let mut summary = AnalyzeSummary {
        recording: s.path.display().to_string(),
        run_id: s.run_id.clone(),
        out: settings.out.display().to_string(),
        shard: format!("{shard_index}/{shard_count}"),
        steps_present: steps.len(),
        work_items_total: items.len(),
        work_items_this_shard: mine.len(),
        ..Default::default()
    };
    let tables: Vec<TableName> = [
        ("geometry", TableName::Steps),
        ("interp", TableName::Interp),
        ("floors", TableName::Floors),
        ("barriers", TableName::Barriers),
        ("curvature", TableName::Curvature),
    ]
    .into_iter()
    .filter(|(p, _)| cfg.has(p))
    .map(|(_, t)| t)
    .collect();
    let bar = progress(settings.progress, mine.len() as u64);
    let mut ctx = ItemContext {
        cfg,
        meta: &meta,
        out: &settings.out,
        pairs: pairs.iter().copied().collect(),
        steps: steps.iter().copied().collect(),
        warm: HashMap::new(),
    };
    for item in &mine {
        bar.set_message(format!("steps {}..{}", item.lo, item.hi));
        let done = !settings.force
            && tables
                .iter()
                .all(|&t| part_path(&settings.out, t, shard_index, &item.part()).exists());
        if done {
            summary.work_items_skipped += 1;
        } else {
            ctx.run_item(&mut s, item, &mut summary)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.pairs_analyzed = pairs
        .iter()
        .filter(|&&t| mine.iter().any(|it| (it.lo..it.hi).contains(&t)))
        .count();
    if cfg.has("epochs") && shard_index == 0 {
        let rows: Vec<EpochRow> = s
            .reader
            .epochs()?
            .into_iter()
            .flat_map(|e| {
                let run_id = s.run_id.clone();
                e.evals.into_iter().map(move |ev| EpochRow {
                    run_id: run_id.clone(),
                    epoch: e.epoch,
                    step: e.step,
                    split: ev.split,
                    loss: ev.loss,
                    accuracy: ev.accuracy,
                    samples: ev.samples,
                })
            })
            .collect();
        write_counted(&settings.out, &meta, "epochs", &rows, &mut summary)?;
    }
    let evaluates = ["interp", "floors", "barriers", "curvature"]
        .iter()
        .any(|p| cfg.has(p));
    if evaluates && shard_index == 0 {
        let rows = eval_sample_rows(&s, cfg)?;
        if !rows.is_empty() {
            write_counted(&settings.out, &meta, "eval-samples", &rows, &mut summary)?;
        }
    }
    summary.wall_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The ids of every evaluation set drawn from a split (`probe:N`); whole splits need none and
/// `batch` ids are the recording's own.
fn eval_sample_rows(s: &Session, cfg: &AnalyzeConfig) -> Result<Vec<EvalSampleRow>, AnalyzeError> {
    let mut rows = Vec::new();
    for set in cfg.eval.iter().filter(|e| matches!(e, EvalSet::Probe(_))) {
        let (split, ids, _) = s.eval_samples(set, 0)?;
        let name = set.name();
        for (position, &sample_id) in ids.iter().enumerate() {
            let position = position as u32;
            rows.push(EvalSampleRow {
                run_id: s.run_id.clone(),
                eval_set: name.clone(),
                split: split.as_str().to_string(),
                position,
                sample_id,
                bn_batch: position / cfg.eval_batch_size.max(1),
            });
        }
    }
    Ok(rows)
}

fn progress(show: bool, len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} work items, eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_counted<R: TableRows>(
    out: &Path,
    meta: &TableMeta,
    part: &str,
    rows: &[R],
    summary: &mut AnalyzeSummary,
) -> Result<PathBuf, AnalyzeError> {
    let path = write_rows(out, meta, part, rows)?;
    *summary
        .rows
        .entry(R::TABLE.as_str().to_string())
        .or_default() += rows.len() as u64;
    Ok(path)
}

struct ItemContext<'a> {
    cfg: &'a AnalyzeConfig,
    meta: &'a TableMeta,
    out: &'a Path,
    pairs: BTreeSet<u64>,
    steps: BTreeSet<u64>,
    /// Eigenvectors of the last curvature measurement per setting: the next warm start.
    warm: HashMap<String, Vec<Vec<f32>>>,
}

impl ItemContext<'_> {
    fn run_item(
        &mut self,
        s: &mut Session,
        item: &Item,
        summary: &mut AnalyzeSummary,
    ) -> Result<(), AnalyzeError> {
        let part = item.part();
        let cfg = self.cfg;
        if cfg.has("geometry") {
            let rows = self.geometry(s, item)?;
            write_counted(self.out, self.meta, &part, &rows, summary)?;
        }
        let mut floors_at: HashMap<(String, String, u64), f64> = HashMap::new();
        if cfg.has("interp") {
            let (interp, floors, barriers) = self.landscape(s, item, summary, &mut floors_at)?;
            write_counted(self.out, self.meta, &part, &interp, summary)?;
            if cfg.has("floors") {
                write_counted(self.out, self.meta, &part, &floors, summary)?;
            }
            if cfg.has("barriers") {
                write_counted(self.out, self.meta, &part, &barriers, summary)?;
            }
        }
        if cfg.has("curvature") {
            let rows = self.curvature(s, item, &floors_at, summary)?;
            write_counted(self.out, self.meta, &part, &rows, summary)?;
        }
        Ok(())
    }

    fn geometry(&self, s: &mut Session, item: &Item) -> Result<Vec<StepRow>, AnalyzeError> {
        let layers = s.desc.layout.layer_ranges();
        let names: Vec<String> = layers.iter().map(|(n, _)| n.clone()).collect();
        let len = s.desc.layout.len_elements();
        // `all` is every f32 tensor; tensors of other dtypes (integer buffers) are in no layer
        // and would be read as floats by AllElements.
        let scope = if s.desc.layout.non_float_ranges().is_empty() {
            TotalScope::AllElements
        } else {
            TotalScope::LayersOnly
        };
        let mut tracker = GeometryTracker::new(layers, len, scope).map_err(metrics_err)?;
        // The paper's definitions (cos, distance) use the trainable parameters only: BatchNorm
        // running statistics move with every batch and would dominate both.
        let mut params = GeometryTracker::new(
            vec![("params".to_string(), s.trainable_ranges())],
            len,
            TotalScope::LayersOnly,
        )
        .map_err(metrics_err)?;
        if self.steps.contains(&0) || s.reader.has_step(0) {
            let init = s.reader.state(0)?;
            tracker.set_init(&init).map_err(metrics_err)?;
            params.set_init(&init).map_err(metrics_err)?;
        }
        let mut feed: Vec<u64> = Vec::new();
        if item.lo > 0 && s.reader.has_step(item.lo - 1) {
            feed.push(item.lo - 1);
        }
        feed.extend(self.steps.range(item.lo..item.hi));
        if s.reader.has_step(item.hi) {
            feed.push(item.hi);
        }
        let mut geoms: Vec<StepGeometry> = Vec::new();
        let mut param_geoms: HashMap<u64, crate::metrics::LayerGeometry> = HashMap::new();
        for t in feed {
            let state = s.reader.state(t)?;
            if let Some(g) = params.push(t, &state).map_err(metrics_err)? {
                param_geoms.insert(g.step, g.total);
            }
            if let Some(g) = tracker.push(t, &state).map_err(metrics_err)? {
                geoms.push(g);
            }
        }
        geoms.extend(tracker.finish());
        if let Some(g) = params.finish() {
            param_geoms.insert(g.step, g.total);
        }
        let spe = s.desc.steps_per_epoch.max(1);
        let mut rows = Vec::new();
        for g in geoms
            .into_iter()
            .filter(|g| (item.lo..item.hi).contains(&g.step))
        {
            let info = s.reader.step_info(g.step)?;
            // The epoch of update t; the last state (no update) counts to the last epoch.
            let epoch = (g.step / spe + 1).min(u64::from(s.desc.epochs.max(1))) as u32;
            let sc = info.scalars;
            rows.push(StepRow {
                run_id: s.run_id.clone(),
                step: g.step,
                epoch,
                layer: "all".into(),
                update_norm: g.total.update_norm,
                cos_prev_update: g.total.cos_prev_update,
                dist_from_init: g.total.dist_from_init,
                param_norm: g.total.param_norm,
                lr: nan_as_absent(sc.learning_rate),
                minibatch_loss: nan_as_absent(sc.minibatch_loss),
                grad_norm: nan_as_absent(sc.grad_norm),
                recorded_update_norm: nan_as_absent(sc.update_norm),
                wall_time_secs: nan_as_absent(sc.wall_time_secs),
            });
            let per_layer = param_geoms
                .get(&g.step)
                .map(|p| ("params", p))
                .into_iter()
                .chain(names.iter().map(String::as_str).zip(&g.per_layer));
            for (name, l) in per_layer {
                rows.push(StepRow {
                    run_id: s.run_id.clone(),
                    step: g.step,
                    epoch,
                    layer: name.to_string(),
                    update_norm: l.update_norm,
                    cos_prev_update: l.cos_prev_update,
                    dist_from_init: l.dist_from_init,
                    param_norm: l.param_norm,
                    lr: None,
                    minibatch_loss: None,
                    grad_norm: None,
                    recorded_update_norm: None,
                    wall_time_secs: None,
                });
            }
        }
        Ok(rows)
    }

    /// Interpolation, floors and barriers of the item's pairs, for every evaluation set and
    /// BatchNorm policy.
    #[allow(clippy::type_complexity)]
    fn landscape(
        &self,
        s: &mut Session,
        item: &Item,
        summary: &mut AnalyzeSummary,
        floors_at: &mut HashMap<(String, String, u64), f64>,
    ) -> Result<(Vec<InterpRow>, Vec<FloorRow>, Vec<BarrierRow>), AnalyzeError> {
        let cfg = self.cfg;
        let alphas = cfg.alphas();
        let mine: Vec<u64> = self.pairs.range(item.lo..item.hi).copied().collect();
        // Floors are also needed at t + k for the barriers that start in this item.
        let mut floor_steps: BTreeSet<u64> = mine.iter().copied().collect();
        if cfg.has("barriers") {
            for &t in &mine {
                for &k in &cfg.strides {
                    let u = t + u64::from(k);
                    if self.pairs.contains(&u) {
                        floor_steps.insert(u);
                    }
                }
            }
        }
        let (mut interp, mut floors, mut barriers) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = Vec::new();
        for set in &cfg.eval {
            for &bn in &cfg.bn {
                let set_name = set.name();
                let bn_name = bn.as_str().to_string();
                let mut grid_losses: HashMap<u64, Vec<f64>> = HashMap::new();
                for &t in &floor_steps {
                    let a = s.reader.state(t)?;
                    let b = s.reader.state(t + 1)?;
                    let batches = s.prepared(set, t)?;
                    let mut losses = Vec::with_capacity(alphas.len());
                    for &alpha in &alphas {
                        s.interpolate(&a, &b, alpha, &mut buf);
                        let e = s.evaluate_state(&buf, &batches, bn)?;
                        summary.forward_evaluations += 1;
                        let loss = e.mean_loss();
                        if !loss.is_finite() {
                            summary.nonfinite_losses += 1;
                        }
                        losses.push(loss);
                        if (item.lo..item.hi).contains(&t) {
                            interp.push(InterpRow {
                                run_id: s.run_id.clone(),
                                step: t,
                                eval_set: set_name.clone(),
                                bn_policy: bn_name.clone(),
                                alpha,
                                loss,
                                loss_stderr: if set.is_subset() {
                                    nan_as_absent(e.loss_stderr())
                                } else {
                                    None
                                },
                                accuracy: e.accuracy(),
                                samples: e.samples,
                                nonfinite: e.nonfinite,
                                grid_points: cfg.grid_points,
                                grid_lo: cfg.grid_lo,
                                grid_hi: cfg.grid_hi,
                            });
                        }
                    }
                    if cfg.has("floors") {
                        let mut evals = 0u64;
                        let f = valley_floor(
                            &alphas,
                            &losses,
                            |alpha| -> Result<f64, AnalyzeError> {
                                evals += 1;
                                let mut v = Vec::new();
                                s.interpolate(&a, &b, alpha, &mut v);
                                Ok(s.evaluate_state(&v, &batches, bn)?.mean_loss())
                            },
                            &FloorOptions {
                                alpha_tolerance: cfg.floor_tolerance,
                                ..FloorOptions::default()
                            },
                        )
                        .map_err(floor_err)?;
                        summary.forward_evaluations += evals;
                        floors_at.insert((set_name.clone(), bn_name.clone(), t), f.alpha_star);
                        if (item.lo..item.hi).contains(&t) {
                            floors.push(FloorRow {
                                run_id: s.run_id.clone(),
                                step: t,
                                eval_set: set_name.clone(),
                                bn_policy: bn_name.clone(),
                                alpha_star: f.alpha_star,
                                loss_at_floor: f.loss_at_floor,
                                loss_start: f.loss_start,
                                loss_end: f.loss_end,
                                height_start: f.height_start,
                                height_end: f.height_end,
                                shape: f.shape.as_str().to_string(),
                                grid_argmin_alpha: f.grid_argmin_alpha,
                                tolerance: f.tolerance,
                                evaluations: f.evaluations,
                                converged: f.converged,
                            });
                        }
                    }
                    grid_losses.insert(t, losses);
                }
                if cfg.has("barriers") {
                    let seg_alphas: Vec<f64> = (0..cfg.grid_points as usize)
                        .map(|i| i as f64 / (cfg.grid_points as f64 - 1.0))
                        .collect();
                    let key = |x: u64| (set_name.clone(), bn_name.clone(), x);
                    for &t in &mine {
                        let batches = s.prepared(set, t)?;
                        // The floor point v_t, shared by every stride.
                        let vt = match floors_at.get(&key(t)) {
                            Some(&at) if at.is_finite() => {
                                let mut vt = Vec::new();
                                let (a, b) = (s.reader.state(t)?, s.reader.state(t + 1)?);
                                s.interpolate(&a, &b, at, &mut vt);
                                Some(vt)
                            }
                            _ => None,
                        };
                        for &k in &cfg.strides {
                            let u = t + u64::from(k);
                            // Along the valley floor: v_t -> v_{t+k}.
                            if let (Some(vt), Some(&au)) = (&vt, floors_at.get(&key(u)))
                                && au.is_finite()
                            {
                                let mut vu = Vec::new();
                                let (a, b) = (s.reader.state(u)?, s.reader.state(u + 1)?);
                                s.interpolate(&a, &b, au, &mut vu);
                                let losses =
                                    self.segment(s, vt, &vu, &seg_alphas, &batches, bn, summary)?;
                                barriers.push(barrier_row(
                                    s,
                                    t,
                                    u,
                                    k,
                                    "floor",
                                    &set_name,
                                    &bn_name,
                                    &seg_alphas,
                                    &losses,
                                )?);
                            }
                            // Between iterates: θ_t -> θ_{t+k}; for k = 1 the interpolation itself.
                            if self.steps.contains(&u) {
                                let reuse = k == 1 && cfg.grid_lo == 0.0 && cfg.grid_hi == 1.0;
                                let (alph, losses) = match grid_losses.get(&t) {
                                    Some(l) if reuse => (&alphas, Cow::Borrowed(l)),
                                    _ => {
                                        let a = s.reader.state(t)?;
                                        let b = s.reader.state(u)?;
                                        let l = self.segment(
                                            s,
                                            &a,
                                            &b,
                                            &seg_alphas,
                                            &batches,
                                            bn,
                                            summary,
                                        )?;
                                        (&seg_alphas, Cow::Owned(l))
                                    }
                                };
                                barriers.push(barrier_row(
                                    s, t, u, k, "iterate", &set_name, &bn_name, alph, &losses,
                                )?);
                            }
                        }
                    }
                }
            }
        }
        Ok((interp, floors, barriers))
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        s: &Session,
        a: &[f32],
        b: &[f32],
        alphas: &[f64],
        batches: &[(tch::Tensor, tch::Tensor)],
        bn: BnPolicy,
        summary: &mut AnalyzeSummary,
    ) -> Result<Vec<f64>, AnalyzeError> {
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(alphas.len());
        for &alpha in alphas {
            s.interpolate(a, b, alpha, &mut buf);
            let loss = s.evaluate_state(&buf, batches, bn)?.mean_loss();
            summary.forward_evaluations += 1;
            if !loss.is_finite() {
                summary.nonfinite_losses += 1;
            }
            out.push(loss);
        }
        Ok(out)
    }

    fn curvature(
        &mut self,
        s: &mut Session,
        item: &Item,
        floors_at: &HashMap<(String, String, u64), f64>,
        summary: &mut AnalyzeSummary,
    ) -> Result<Vec<CurvatureRow>, AnalyzeError> {
        let cfg = self.cfg;
        let chosen: Vec<u64> = self
            .steps
            .range(item.lo..item.hi)
            .copied()
            .filter(|&t| {
                (cfg.curvature_every > 0 && t % cfg.curvature_every == 0)
                    || cfg.curvature_steps.contains(&t)
            })
            .collect();
        let mut rows = Vec::new();
        let n = s.parameter_count();
        let ranges = s.trainable_ranges();
        for set in &cfg.eval {
            for &bn in &cfg.bn {
                let set_name = set.name();
                let bn_name = bn.as_str().to_string();
                for &t in &chosen {
                    let batches = s.prepared(set, t)?;
                    let samples: u64 = batches.iter().map(|(x, _)| x.size()[0] as u64).sum();
                    let theta = s.reader.state(t)?;
                    let mut points = vec![("iterate", theta.as_ref().clone())];
                    if cfg.curvature_at_floor
                        && let Some(&alpha) = floors_at.get(&(set_name.clone(), bn_name.clone(), t))
                        && alpha.is_finite()
                        && s.reader.has_step(t + 1)
                    {
                        let mut v = Vec::new();
                        let next = s.reader.state(t + 1)?;
                        s.interpolate(&theta, &next, alpha, &mut v);
                        points.push(("floor", v));
                    }
                    for (point, state) in points {
                        let template = CurvatureRow {
                            run_id: s.run_id.clone(),
                            step: t,
                            point: point.into(),
                            eval_set: set_name.clone(),
                            bn_policy: bn_name.clone(),
                            quantity: String::new(),
                            rank: None,
                            value: f64::NAN,
                            stderr: None,
                            residual: None,
                            iterations: 0,
                            converged: false,
                            method: String::new(),
                            samples,
                        };
                        let key = format!("{set_name}/{bn_name}/{point}");
                        let start = self.warm.get(&key).cloned().unwrap_or_default();
                        let mut matvecs = 0u64;
                        let op = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, AnalyzeError> {
                            matvecs += vs.len() as u64;
                            Ok(s.hvp(&state, &batches, bn, vs)?.1)
                        };
                        let opts = LanczosOptions {
                            k: cfg.top_k as usize,
                            block_size: 1,
                            max_basis: (cfg.lanczos_iterations as usize)
                                .max(cfg.top_k as usize + 2)
                                .min(n.max(1)),
                            max_matvecs: cfg.lanczos_iterations as usize * 5,
                            rel_tolerance: cfg.eigen_tolerance,
                            which: Which::LargestAlgebraic,
                            seed: cfg.seed,
                            verify_residuals: true,
                        };
                        let eig = lanczos(op, n, &start, &opts).map_err(curvature_err)?;
                        summary.forward_evaluations += matvecs;
                        for (rank, (&value, &residual)) in
                            eig.eigenvalues.iter().zip(&eig.residual_norms).enumerate()
                        {
                            rows.push(CurvatureRow {
                                quantity: "eigenvalue".into(),
                                rank: Some(rank as u32),
                                value,
                                stderr: None,
                                residual: Some(residual),
                                iterations: eig.iterations,
                                converged: eig.converged,
                                method: format!(
                                    "lanczos(k={}, rel_tol={}, warm_start={})",
                                    cfg.top_k,
                                    cfg.eigen_tolerance,
                                    !start.is_empty()
                                ),
                                ..template.clone()
                            });
                        }
                        self.warm.insert(key, eig.eigenvectors.clone());
                        if cfg.trace_probes > 0 {
                            let op = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, AnalyzeError> {
                                Ok(s.hvp(&state, &batches, bn, vs)?.1)
                            };
                            let tr = hutchinson_trace(
                                op,
                                n,
                                &TraceOptions {
                                    probes: cfg.trace_probes as usize,
                                    batch_size: 1,
                                    seed: cfg.seed,
                                },
                            )
                            .map_err(curvature_err)?;
                            summary.forward_evaluations += cfg.trace_probes as u64;
                            rows.push(CurvatureRow {
                                quantity: "trace".into(),
                                rank: None,
                                value: tr.estimate,
                                stderr: tr.stderr,
                                residual: None,
                                iterations: tr.iterations,
                                converged: true,
                                method: format!("hutchinson(rademacher, probes={})", tr.probes),
                                ..template.clone()
                            });
                        }
                        if cfg.eps_sharpness > 0.0 {
                            let (value, loss, iters) =
                                eps_sharpness(s, &state, &batches, bn, &ranges, cfg.eps_sharpness)?;
                            summary.forward_evaluations += u64::from(iters);
                            rows.push(CurvatureRow {
                                quantity: "eps_sharpness".into(),
                                rank: None,
                                value,
                                stderr: None,
                                residual: None,
                                iterations: iters,
                                converged: loss.is_finite(),
                                method: format!(
                                    "box eps={} (|θ|+1), {iters} sign-gradient ascent steps",
                                    cfg.eps_sharpness
                                ),
                                ..template.clone()
                            });
                        }
                    }
                }
            }
        }
        Ok(rows)
    }
}

fn metrics_err(e: crate::metrics::MetricsError) -> AnalyzeError {
    AnalyzeError::InvalidSetting {
        setting: "layout",
        reason: e.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn barrier_row(
    s: &Session,
    from: u64,
    to: u64,
    stride: u32,
    path: &str,
    set: &str,
    bn: &str,
    alphas: &[f64],
    losses: &[f64],
) -> Result<BarrierRow, AnalyzeError> {
    let b = barrier(alphas, losses).map_err(|e| AnalyzeError::InvalidSetting {
        setting: "grid",
        reason: e.to_string(),
    })?;
    Ok(BarrierRow {
        run_id: s.run_id.clone(),
        step_from: from,
        step_to: to,
        stride,
        path: path.into(),
        eval_set: set.into(),
        bn_policy: bn.into(),
        points: b.points,
        loss_start: b.loss_start,
        loss_end: b.loss_end,
        loss_max: b.loss_max,
        barrier_max: b.barrier_max,
        barrier_linear: b.barrier_linear,
        alpha_at_max: b.alpha_at_max,
        alpha_at_max_linear: b.alpha_at_max_linear,
    })
}

/// ε-sharpness (Keskar et al.): the largest loss in the box |x_i − θ_i| ≤ ε(|θ_i| + 1) around θ
/// over the trainable parameters, found by projected sign-gradient ascent, reported as
/// (max − L) / (1 + L) × 100. Returns (value, L(θ), evaluations).
fn eps_sharpness(
    s: &Session,
    theta: &[f32],
    batches: &[(tch::Tensor, tch::Tensor)],
    bn: BnPolicy,
    ranges: &[std::ops::Range<usize>],
    eps: f64,
) -> Result<(f64, f64, u32), AnalyzeError> {
    const STEPS: u32 = 10;
    let base = s.evaluate_state(theta, batches, bn)?.mean_loss();
    let mut x = theta.to_vec();
    let mut best = base;
    for _ in 0..STEPS {
        s.model.load_flat(&x)?;
        let mut grad = vec![0f32; s.parameter_count()];
        let total: i64 = batches.iter().map(|(b, _)| b.size()[0]).sum();
        for (images, labels) in batches {
            let w = images.size()[0] as f32 / total as f32;
            let (_, g) = sgdwalk_workload::eval::loss_and_grad(&s.model, images, labels, bn)?;
            let flat = s.model.layout().flatten_tensors(&g)?;
            for (acc, v) in grad.iter_mut().zip(flat) {
                *acc += w * v;
            }
        }
        let mut k = 0;
        for r in ranges {
            for i in r.clone() {
                let radius = eps * (f64::from(theta[i]).abs() + 1.0);
                let step = radius / 2.0 * f64::from(grad[k].signum());
                let lo = f64::from(theta[i]) - radius;
                let hi = f64::from(theta[i]) + radius;
                x[i] = (f64::from(x[i]) + step).clamp(lo, hi) as f32;
                k += 1;
            }
        }
        let l = s.evaluate_state(&x, batches, bn)?.mean_loss();
        if l > best || l.is_nan() {
            best = l;
        }
    }
    Ok((curvature::eps_sharpness(best, base), base, STEPS + 1))
}
