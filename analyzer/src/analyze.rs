//! The `analyze` command: the flow recording → replay session → phases → tables.
//!
//! The recording's steps are cut into work items (blocks of `steps_per_item` steps); this shard
//! computes its items, each phase writing its part of its table ([`crate::phases`]). A part
//! that exists is not computed again on rerun (unless `--force`); what later phases need from
//! it is read back. The folder's manifest ([`crate::dir::Manifest`]) keeps shards and reruns
//! from mixing different analyses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::config::{AnalyzeConfig, Phase, RunSettings};
use crate::dir::{ANALYSIS_REVISION, AnalysisDir, Manifest, RunInfo};
use crate::error::AnalyzeError;
use crate::phases::{self, Handoff, Item, ItemCx, Tally, WarmStarts};
use crate::replay::Session;
use crate::tables::{TableMeta, TableRows, write_rows};

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
    /// Whether the recording ends before the run's last step (still being written, or a
    /// stopped or killed run that --resume can continue).
    pub recording_unfinished: bool,
    /// The last step the recording holds and the run's last step.
    pub last_step: Option<u64>,
    pub run_total_steps: u64,
    /// Work items of this shard whose steps were not all recorded yet: their parts are marked
    /// partial and redone by a later run once the recording holds more.
    pub work_items_partial: usize,
    /// Rows written per table.
    pub rows: BTreeMap<String, u64>,
    /// Interpolation points whose loss was NaN or infinite (kept in the tables as NaN).
    pub nonfinite_losses: u64,
    pub forward_evaluations: u64,
    /// libtorch intra-op threads used.
    pub threads: u32,
    /// Seconds spent per phase (computing and writing its parts), by table name.
    pub phase_secs: BTreeMap<String, f64>,
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
        if self.recording_unfinished {
            let held = self
                .last_step
                .map_or_else(|| "no steps".to_string(), |t| format!("step {t}"));
            writeln!(
                f,
                "warning: the recording is unfinished: it ends at {held} of the run's {} \
                 (still being written, or stopped or killed); {} work items are partial and are \
                 redone when this command is rerun on the longer recording",
                self.run_total_steps, self.work_items_partial
            )?;
        }
        if self.nonfinite_losses > 0 {
            writeln!(
                f,
                "warning: {} interpolation points had a NaN or infinite loss (kept as NaN in the tables)",
                self.nonfinite_losses
            )?;
        }
        if !self.phase_secs.is_empty() {
            let per: Vec<String> = self
                .phase_secs
                .iter()
                .map(|(p, t)| format!("{p} {t:.1} s"))
                .collect();
            writeln!(f, "time per phase: {}", per.join(", "))?;
        }
        writeln!(
            f,
            "{} evaluations in {:.1} s on {} threads; tables in {}",
            self.forward_evaluations, self.wall_secs, self.threads, self.out
        )
    }
}

/// Checks the folder's manifest against this analysis, or creates it, and returns the run's
/// label. Phases may be added later (say curvature after a first pass of geometry), with
/// settings of their own: the manifest then lists the union of the phases; any other
/// difference is refused. A label given with `--label` must match the folder's.
fn admit(dir: &AnalysisDir, m: &Manifest, label: Option<&str>) -> Result<String, AnalyzeError> {
    let in_use = |reason: String| AnalyzeError::FolderInUse {
        out: dir.root().to_path_buf(),
        reason,
    };
    let legacy = dir.legacy_table_dirs();
    if !legacy.is_empty() {
        let root = dir.root().display();
        return Err(in_use(format!(
            "holds tables in the earlier layout ({}); rename each table=<name> folder to \
             <name> to continue it (in a shell: for d in {root}/table=*; do mv \"$d\" \
             \"{root}/${{d##*/table=}}\"; done), or analyze into a new --out",
            legacy
                .iter()
                .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some(existing) = dir.read_manifest()? else {
        let label = label.map_or_else(|| dir.default_label(), str::to_owned);
        dir.write_manifest(&Manifest {
            label: Some(label.clone()),
            ..m.clone()
        })?;
        return Ok(label);
    };
    if existing.has_stale_eval_mode_curvature() {
        return Err(in_use(
            "holds eval-mode curvature rows computed with batch statistics by an earlier \
             sgdwalk (they equal the train-mode rows); analyze into a new --out"
                .into(),
        ));
    }
    if existing.revision < ANALYSIS_REVISION {
        return Err(in_use(format!(
            "holds tables of an earlier sgdwalk (analysis revision {}, before the run_label and \
             epoch columns of revision {ANALYSIS_REVISION}); report still reads it, but new parts \
             would not match: analyze into a new --out",
            existing.revision
        )));
    }
    let folder_label = existing
        .label
        .clone()
        .unwrap_or_else(|| dir.default_label());
    if let Some(given) = label
        && given != folder_label
    {
        return Err(in_use(format!(
            "is labelled {folder_label:?}, not {given:?}; pass --label {folder_label:?} (or \
             nothing) to continue it, or use another --out"
        )));
    }
    let new = &m.config;
    let mut cmp = existing.config.clone();
    cmp.adopt_unrun_phase_settings(new);
    cmp.phases = new.phases.clone();
    if existing.recording_id != m.recording_id {
        return Err(in_use(format!(
            "holds an analysis of another recording (run {}, this one is run {}); use another --out",
            existing.recording_id, m.recording_id
        )));
    }
    if existing.shard_count != m.shard_count {
        return Err(in_use(format!(
            "was analyzed in {} shards, this command asks for {}; use the same --shard I/N or \
             another --out",
            existing.shard_count, m.shard_count
        )));
    }
    if cmp != *new {
        return Err(in_use(format!(
            "holds an analysis with other settings ({}); repeat them, or use another --out",
            settings_that_differ(&cmp, new)
        )));
    }
    let union: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|&p| existing.config.has(p) || new.has(p))
        .collect();
    if union != existing.config.phases {
        let mut merged = Manifest {
            recording_id: existing.recording_id,
            shard_count: existing.shard_count,
            revision: ANALYSIS_REVISION,
            config: new.clone(),
            label: Some(folder_label.clone()),
        };
        merged.config.phases = union;
        dir.write_manifest(&merged)?;
    }
    Ok(folder_label)
}

/// "grid_points: 11 in the folder, 3 now; …" for every setting (the config file's names)
/// whose values differ.
fn settings_that_differ(stored: &AnalyzeConfig, now: &AnalyzeConfig) -> String {
    let as_map = |c: &AnalyzeConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(stored), as_map(now));
    let differing: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            let now = b.get(k).map_or_else(|| "unset".into(), ToString::to_string);
            format!("{k}: {v} in the folder, {now} now")
        })
        .collect();
    if differing.is_empty() {
        "settings differ".into()
    } else {
        differing.join("; ")
    }
}

/// The recording's steps and pairs in the analyzed range, and the work items over them.
struct Plan {
    steps: BTreeSet<u64>,
    pairs: BTreeSet<u64>,
    items: Vec<Item>,
    /// `None` when the recording reaches the run's last step; otherwise its last step (if
    /// any): steps after it may still come (a recording being written, or a stopped or killed
    /// run continued with --resume).
    unfinished_through: Option<Option<u64>>,
    /// How far past an item's end its phases read (barrier strides).
    reach_steps: u64,
}

impl Plan {
    fn new(s: &Session, cfg: &AnalyzeConfig) -> Result<Plan, AnalyzeError> {
        let (lo, hi) = cfg.step_range.map_or((0, u64::MAX), |r| (r.start, r.end));
        let in_range = |t: &u64| (lo..hi).contains(t);
        let steps: BTreeSet<u64> = s.reader.steps().iter().copied().filter(in_range).collect();
        let pairs: BTreeSet<u64> = s
            .reader
            .consecutive_pairs()
            .into_iter()
            .filter(in_range)
            .collect();
        if pairs.is_empty() && cfg.running().iter().any(|p| p.needs_pairs()) {
            let all = s.reader.steps();
            let present = match (all.first(), all.last()) {
                (Some(a), Some(b)) => format!("{} steps, {a}..={b}", all.len()),
                _ => "none".into(),
            };
            return Err(AnalyzeError::NoPairs {
                path: s.path.clone(),
                present,
            });
        }
        let spi = cfg.steps_per_item;
        let indices: BTreeSet<u64> = steps.iter().map(|t| t / spi).collect();
        let items = indices
            .into_iter()
            .map(|j| Item {
                index: j,
                lo: (j * spi).max(lo),
                hi: ((j + 1) * spi).min(hi),
            })
            .collect();
        // A stopped run's file is finished (it has a footer) yet grows again on --resume: only
        // the run's last step says no more steps will come.
        let last = s.reader.steps().last().copied();
        let unfinished_through = match last {
            Some(t) if t >= s.desc.total_steps => None,
            _ => Some(last),
        };
        let reach_steps = if cfg.has(Phase::Barriers) {
            cfg.strides.iter().copied().max().map_or(0, u64::from)
        } else {
            0
        };
        Ok(Plan {
            steps,
            pairs,
            items,
            unfinished_through,
            reach_steps,
        })
    }

    /// For an item whose steps (its pairs' closing steps and the barriers' far ends included)
    /// are not all recorded yet: the recording's last step. Steps only grow, so an item is
    /// final once a step at or past everything it reads exists, or the recording is finished.
    fn partial_through(&self, item: &Item) -> Option<u64> {
        let last = self.unfinished_through?;
        let needed = item.hi.saturating_add(self.reach_steps);
        match last {
            Some(t) if t >= needed => None,
            Some(t) => Some(t),
            None => Some(0),
        }
    }
}

/// The default evaluation set, probe:1000, becomes the whole training split where that holds
/// fewer samples (a small or subset dataset), named by its real size.
fn fit_default_probe(cfg: &AnalyzeConfig, settings: &RunSettings, s: &Session) -> AnalyzeConfig {
    let mut cfg = cfg.clone();
    if settings.eval_is_default {
        let train = s.data.split_ids(sgdwalk_workload::Split::Train).len();
        let train = u32::try_from(train).unwrap_or(u32::MAX);
        for set in &mut cfg.eval {
            if let crate::config::EvalSet::Probe(n) = set
                && *n > train
                && train > 0
            {
                *n = train;
            }
        }
    }
    cfg
}

/// The cores not busy when the analysis starts: the cores this process may use minus the
/// 1-minute load average (rounded), at least 1. libtorch's own default takes every core, and
/// its threads spin at barriers, so on a loaded node it ran about 3 times slower than 1 thread.
pub fn idle_cores() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|l| l.is_finite() && *l >= 0.0)
        .unwrap_or(0.0);
    let idle = (cores as f64 - load).round().max(1.0);
    u32::try_from(idle as u64)
        .unwrap_or(1)
        .min(u32::try_from(cores).unwrap_or(u32::MAX))
}

/// Checks the settings against what the recording and the data hold.
fn feasible(s: &Session, plan: &Plan, cfg: &AnalyzeConfig) -> Result<(), AnalyzeError> {
    let running = cfg.running();
    if running.iter().any(|p| p.evaluates()) {
        let train = s.data.split_ids(sgdwalk_workload::Split::Train).len();
        for set in &cfg.eval {
            if let crate::config::EvalSet::Probe(n) = set
                && *n as usize > train
            {
                return Err(AnalyzeError::InvalidSetting {
                    setting: "eval",
                    reason: format!(
                        "probe:{n} asks for more samples than the training split holds \
                         ({train}); use probe:N with N <= {train}, or train"
                    ),
                });
            }
        }
    }
    if running.contains(&Phase::Curvature) {
        let all = s.reader.steps();
        for &t in &cfg.curvature_steps {
            if !plan.steps.contains(&t) {
                let held = match (all.first(), all.last()) {
                    (Some(a), Some(b)) => format!("{} steps in {a}..={b}", all.len()),
                    _ => "no steps".into(),
                };
                let why = if cfg
                    .step_range
                    .is_some_and(|r| !(r.start..r.end).contains(&t))
                {
                    "is outside --steps".to_string()
                } else {
                    format!("is not recorded (the recording holds {held})")
                };
                return Err(AnalyzeError::InvalidSetting {
                    setting: "curvature-steps",
                    reason: format!("step {t} {why}"),
                });
            }
        }
    }
    Ok(())
}

/// Runs the analysis that `cfg` describes on this shard's work items.
pub fn analyze(
    cfg: &AnalyzeConfig,
    settings: &RunSettings,
) -> Result<AnalyzeSummary, AnalyzeError> {
    let started = Instant::now();
    let threads = if settings.threads > 0 {
        settings.threads
    } else {
        idle_cores()
    };
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    let mut s = Session::open(settings, cfg)?;
    let cfg = &fit_default_probe(cfg, settings, &s);
    let plan = Plan::new(&s, cfg)?;
    // Everything that can be checked against the recording and data is, before the folder
    // and its manifest exist: a refused analysis leaves no trace.
    feasible(&s, &plan, cfg)?;
    let dir = AnalysisDir::new(&settings.out);
    dir.create()?;
    let shard = settings.shard;
    s.run_label = admit(
        &dir,
        &Manifest {
            recording_id: s.run_id.clone(),
            shard_count: shard.count,
            revision: ANALYSIS_REVISION,
            config: cfg.clone(),
            label: None,
        },
        settings.label.as_deref(),
    )?;
    dir.write_run_info(&RunInfo {
        recording_id: s.run_id.clone(),
        recording_path: s.path.display().to_string(),
        run: s.desc.clone(),
    })?;
    let meta = TableMeta {
        recording_id: s.run_id.clone(),
        recording_path: s.path.display().to_string(),
        recording_checksum: s.recording_checksum.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        config_json: serde_json::to_string(cfg).unwrap_or_default(),
        shard: Some((shard.index, shard.count)),
        partial_through_step: None,
    };
    let mine: Vec<&Item> = plan
        .items
        .iter()
        .filter(|it| it.index % u64::from(shard.count) == u64::from(shard.index))
        .collect();
    let mut summary = AnalyzeSummary {
        recording: s.path.display().to_string(),
        run_id: s.run_id.clone(),
        out: settings.out.display().to_string(),
        shard: shard.to_string(),
        steps_present: plan.steps.len(),
        work_items_total: plan.items.len(),
        work_items_this_shard: mine.len(),
        recording_unfinished: plan.unfinished_through.is_some(),
        threads,
        last_step: s.reader.steps().last().copied(),
        run_total_steps: s.desc.total_steps,
        ..Default::default()
    };
    let mut run = ItemRunner {
        cfg,
        dir: &dir,
        meta: &meta,
        force: settings.force,
        plan: &plan,
        tally: Tally::default(),
        warm: WarmStarts::new(),
    };
    let bar = sgdwalk_workload::progress::progress_bar(
        settings.progress,
        mine.len() as u64,
        "work items",
    );
    for item in &mine {
        bar.set_message(format!("steps {}..{}", item.lo, item.hi));
        let partial = plan.partial_through(item);
        if partial.is_some() {
            summary.work_items_partial += 1;
        }
        if !run.run_item(&mut s, item, partial, &mut summary)? {
            summary.work_items_skipped += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.forward_evaluations = run.tally.forward_evaluations;
    summary.nonfinite_losses = run.tally.nonfinite_losses;
    summary.pairs_analyzed = plan
        .pairs
        .iter()
        .filter(|&&t| mine.iter().any(|it| it.contains(t)))
        .count();
    if shard.index == 0 {
        if cfg.has(Phase::Epochs) {
            let rows = phases::run_level::epochs(&s)?;
            write_counted(&dir, &meta, "epochs", &rows, &mut summary)?;
        }
        if cfg.running().iter().any(|p| p.evaluates()) {
            let rows = phases::run_level::eval_samples(&s, cfg)?;
            if !rows.is_empty() {
                write_counted(&dir, &meta, "eval-samples", &rows, &mut summary)?;
            }
        }
    }
    summary.wall_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn write_counted<R: TableRows>(
    dir: &AnalysisDir,
    meta: &TableMeta,
    part: &str,
    rows: &[R],
    summary: &mut AnalyzeSummary,
) -> Result<(), AnalyzeError> {
    write_rows(dir, meta, part, rows)?;
    *summary
        .rows
        .entry(R::TABLE.as_str().to_string())
        .or_default() += rows.len() as u64;
    Ok(())
}

/// Runs the per-item phases of one work item after another.
struct ItemRunner<'a> {
    cfg: &'a AnalyzeConfig,
    dir: &'a AnalysisDir,
    meta: &'a TableMeta,
    force: bool,
    plan: &'a Plan,
    tally: Tally,
    warm: WarmStarts,
}

impl ItemRunner<'_> {
    /// Computes the phases of `item` whose parts are missing (all of them with `--force`);
    /// returns false when there was nothing to compute.
    /// `partial`: the recording's last step when the item's steps are not all there yet
    /// ([`Plan::partial_through`]).
    fn run_item(
        &mut self,
        s: &mut Session,
        item: &Item,
        partial: Option<u64>,
        summary: &mut AnalyzeSummary,
    ) -> Result<bool, AnalyzeError> {
        let shard_index = self.meta.shard.map_or(0, |(i, _)| i);
        let phases: Vec<Phase> = self
            .cfg
            .running()
            .into_iter()
            .filter(|p| p.per_item())
            .collect();
        let stored: Vec<bool> = phases
            .iter()
            .map(|p| {
                let path = self.dir.part_path(p.table(), shard_index, &item.part());
                // A partial part is final only while the recording has not grown since.
                !self.force
                    && path.exists()
                    && crate::tables::read_partial_through_step(&path)
                        .is_ok_and(|stored| stored.is_none() || stored == partial)
            })
            .collect();
        if stored.iter().all(|&d| d) {
            return Ok(false);
        }
        let meta = TableMeta {
            partial_through_step: partial,
            ..self.meta.clone()
        };
        let mut cx = ItemCx {
            cfg: self.cfg,
            s,
            item,
            pairs: &self.plan.pairs,
            steps: &self.plan.steps,
            handoff: Handoff::default(),
            tally: &mut self.tally,
            warm: &mut self.warm,
        };
        let part = item.part();
        for (i, (&phase, &done)) in phases.iter().zip(&stored).enumerate() {
            let phase_started = Instant::now();
            if done {
                // A later phase of this item may need what this one stored.
                if stored[i + 1..].contains(&false) {
                    match phase {
                        Phase::Interp => phases::interp::load(&mut cx, self.dir, shard_index)?,
                        Phase::Floors => phases::floors::load(&mut cx, self.dir, shard_index)?,
                        _ => {}
                    }
                }
                continue;
            }
            match phase {
                Phase::Geometry => {
                    let rows = phases::geometry::run(&mut cx)?;
                    write_counted(self.dir, &meta, &part, &rows, summary)?;
                }
                Phase::Interp => {
                    let rows = phases::interp::run(&mut cx)?;
                    write_counted(self.dir, &meta, &part, &rows, summary)?;
                }
                Phase::Floors => {
                    let rows = phases::floors::run(&mut cx)?;
                    write_counted(self.dir, &meta, &part, &rows, summary)?;
                }
                Phase::Barriers => {
                    let rows = phases::barriers::run(&mut cx)?;
                    write_counted(self.dir, &meta, &part, &rows, summary)?;
                }
                Phase::Curvature => {
                    let rows = phases::curvature::run(&mut cx)?;
                    write_counted(self.dir, &meta, &part, &rows, summary)?;
                }
                Phase::Epochs => {}
            }
            *summary
                .phase_secs
                .entry(phase.table().as_str().to_string())
                .or_default() += phase_started.elapsed().as_secs_f64();
        }
        Ok(true)
    }
}
