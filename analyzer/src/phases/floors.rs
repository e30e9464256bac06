//! `floors` → table `floors`: the valley floor α* of each step's interpolation, refined from the
//! grid losses (see `floor.rs`). α* is handed to `barriers` and `curvature`.

use crate::config::Setting;
use crate::dir::AnalysisDir;
use crate::error::AnalyzeError;
use crate::floor::{FloorError, FloorOptions, ValleyFloor, valley_floor};
use crate::phases::{ItemCx, interp, stored_setting};
use crate::tables::{FloorRow, TableRows, read_rows};

/// The floor rows of the item's pairs.
pub(crate) fn run(cx: &mut ItemCx<'_>) -> Result<Vec<FloorRow>, AnalyzeError> {
    let mut rows = Vec::new();
    let pairs = cx.item_pairs();
    for setting in cx.cfg.settings() {
        for &t in &pairs {
            let f = locate(cx, &setting, t)?;
            rows.push(FloorRow {
                run_id: cx.s.run_id.clone(),
                run_label: cx.s.run_label.clone(),
                step: t,
                epoch: cx.s.epoch_of(t),
                eval_set: setting.eval_name(),
                bn_policy: setting.bn_name().to_string(),
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
    Ok(rows)
}

/// α* of step `t` under `setting`: from the handoff, else located now (from the grid losses,
/// themselves from the handoff or computed).
pub(crate) fn alpha_star(
    cx: &mut ItemCx<'_>,
    setting: &Setting,
    t: u64,
) -> Result<f64, AnalyzeError> {
    match cx.handoff.floor_alpha.get(&(setting.clone(), t)) {
        Some(&a) => Ok(a),
        None => Ok(locate(cx, setting, t)?.alpha_star),
    }
}

/// Locates the valley floor of step `t` and records α* in the handoff.
fn locate(cx: &mut ItemCx<'_>, setting: &Setting, t: u64) -> Result<ValleyFloor, AnalyzeError> {
    let losses = interp::grid_losses(cx, setting, t)?;
    let alphas = cx.cfg.grid.alphas();
    let s = &mut *cx.s;
    let (a, b) = (s.reader.state(t)?, s.reader.state(t + 1)?);
    let batches = s.prepared(&setting.eval, t)?;
    let s = &*s;
    let mut evals = 0u64;
    let found = valley_floor(
        &alphas,
        &losses,
        |alpha| -> Result<f64, AnalyzeError> {
            evals += 1;
            let mut v = Vec::new();
            s.interpolate(&a, &b, alpha, &mut v);
            Ok(s.evaluate_state(&v, &batches, setting.bn)?.mean_loss())
        },
        &FloorOptions {
            alpha_tolerance: cx.cfg.floor_tolerance,
            ..FloorOptions::default()
        },
    );
    cx.tally.forward_evaluations += evals;
    let f = found.map_err(|e| match e {
        // An evaluation failure is the evaluation's error, not the floor's.
        FloorError::Evaluator { source, .. } => source,
        other => AnalyzeError::Floor {
            step: t,
            eval_set: setting.eval_name(),
            bn_policy: setting.bn_name(),
            source: Box::new(other),
        },
    })?;
    cx.handoff
        .floor_alpha
        .insert((setting.clone(), t), f.alpha_star);
    cx.handoff
        .floor_loss
        .insert((setting.clone(), t), f.loss_at_floor);
    Ok(f)
}

/// Reads the item's stored floors part back into the handoff.
pub(crate) fn load(
    cx: &mut ItemCx<'_>,
    dir: &AnalysisDir,
    shard_index: u32,
) -> Result<(), AnalyzeError> {
    let path = dir.part_path(FloorRow::TABLE, shard_index, &cx.item.part());
    for r in read_rows::<FloorRow>(&path)? {
        if let Some(setting) = stored_setting(cx.cfg, &r.eval_set, &r.bn_policy) {
            cx.handoff
                .floor_alpha
                .insert((setting.clone(), r.step), r.alpha_star);
            cx.handoff
                .floor_loss
                .insert((setting, r.step), r.loss_at_floor);
        }
    }
    Ok(())
}
