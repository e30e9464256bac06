//! `interp` → table `interp`: the loss and accuracy at θ_t + α·d_t on the grid, for every pair
//! of the item and every evaluation setting. The grid losses are handed to `floors` and
//! `barriers`.

use crate::config::{EvalSet, Setting};
use crate::dir::AnalysisDir;
use crate::error::AnalyzeError;
use crate::phases::{ItemCx, segment_end, stored_setting};
use crate::tables::{InterpRow, TableRows, nan_as_absent, read_rows};

/// The interpolation rows of the item's pairs.
pub(crate) fn run(cx: &mut ItemCx<'_>) -> Result<Vec<InterpRow>, AnalyzeError> {
    let mut rows = Vec::new();
    let pairs = cx.item_pairs();
    for setting in cx.cfg.settings() {
        for &t in &pairs {
            let losses = grid(cx, &setting, t, Some(&mut rows))?;
            cx.handoff.grid_losses.insert((setting.clone(), t), losses);
        }
    }
    Ok(rows)
}

/// The grid losses of step `t` under `setting`: from the handoff when an earlier phase has
/// them, else computed (and, when `rows` is given, written as interpolation rows).
pub(crate) fn grid_losses(
    cx: &mut ItemCx<'_>,
    setting: &Setting,
    t: u64,
) -> Result<Vec<f64>, AnalyzeError> {
    if let Some(l) = cx.handoff.grid_losses.get(&(setting.clone(), t)) {
        return Ok(l.clone());
    }
    let losses = grid(cx, setting, t, None)?;
    cx.handoff
        .grid_losses
        .insert((setting.clone(), t), losses.clone());
    Ok(losses)
}

fn grid(
    cx: &mut ItemCx<'_>,
    setting: &Setting,
    t: u64,
    mut rows: Option<&mut Vec<InterpRow>>,
) -> Result<Vec<f64>, AnalyzeError> {
    let cfg = cx.cfg;
    let s = &mut *cx.s;
    let (a, b) = (s.reader.state(t)?, s.reader.state(t + 1)?);
    let batches = s.prepared(&setting.eval, t)?;
    let alphas = cfg.grid.alphas();
    let mut losses = Vec::with_capacity(alphas.len());
    let mut buf = Vec::new();
    // α = 0 and α = 1 are θ_t and θ_{t+1} exactly: α = 1 of step t is α = 0 of step t + 1 on a
    // set that does not change with the step (not `batch`).
    let same_set = !matches!(setting.eval, EvalSet::Batch);
    for &alpha in &alphas {
        let at_state = segment_end(alpha)
            .filter(|_| same_set)
            .map(|end| t + end as u64);
        let stored =
            at_state.and_then(|st| cx.handoff.state_evals.get(&(setting.clone(), st)).copied());
        let e = if let Some(e) = stored {
            cx.tally.reused(e.mean_loss());
            e
        } else {
            s.interpolate(&a, &b, alpha, &mut buf);
            let e = s.evaluate_state(&buf, &batches, setting.bn)?;
            cx.tally.loss(e.mean_loss());
            if let Some(st) = at_state {
                cx.handoff.state_evals.insert((setting.clone(), st), e);
            }
            e
        };
        let loss = e.mean_loss();
        losses.push(loss);
        if let Some(rows) = rows.as_deref_mut() {
            rows.push(InterpRow {
                run_id: s.run_id.clone(),
                run_label: s.run_label.clone(),
                step: t,
                epoch: s.epoch_of(t),
                eval_set: setting.eval_name(),
                bn_policy: setting.bn_name().to_string(),
                alpha,
                loss,
                loss_stderr: if setting.eval.is_subset() {
                    nan_as_absent(e.loss_stderr())
                } else {
                    None
                },
                accuracy: e.accuracy(),
                samples: e.samples,
                nonfinite: e.nonfinite,
                grid_points: cfg.grid.points,
                grid_lo: cfg.grid.lo,
                grid_hi: cfg.grid.hi,
            });
        }
    }
    Ok(losses)
}

/// Reads the item's stored interpolation part back into the handoff (Parquet keeps f64 bit
/// for bit, so later phases see the same losses as if computed now).
pub(crate) fn load(
    cx: &mut ItemCx<'_>,
    dir: &AnalysisDir,
    shard_index: u32,
) -> Result<(), AnalyzeError> {
    let path = dir.part_path(InterpRow::TABLE, shard_index, &cx.item.part());
    let points = cx.cfg.grid.points as usize;
    for r in read_rows::<InterpRow>(&path)? {
        let Some(setting) = stored_setting(cx.cfg, &r.eval_set, &r.bn_policy) else {
            continue;
        };
        let losses = cx.handoff.grid_losses.entry((setting, r.step)).or_default();
        if losses.len() < points {
            losses.push(r.loss);
        }
    }
    Ok(())
}
