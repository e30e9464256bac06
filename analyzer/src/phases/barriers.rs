//! `barriers` → table `barriers`: the loss along the valley floor v_t → v_{t+k} ("floor") and
//! between iterates θ_t → θ_{t+k} ("iterate") for every stride k, and the barrier on each.

use std::borrow::Cow;

use crate::barrier::barrier;
use crate::config::{EvalSet, Setting};
use crate::error::AnalyzeError;
use crate::phases::{ItemCx, Point, floors};
use crate::tables::BarrierRow;

/// One segment's ends and its α grid and losses.
struct Segment<'a> {
    from: u64,
    to: u64,
    stride: u32,
    path: Point,
    alphas: &'a [f64],
    losses: &'a [f64],
}

/// The barrier rows of the segments starting at the item's pairs.
pub(crate) fn run(cx: &mut ItemCx<'_>) -> Result<Vec<BarrierRow>, AnalyzeError> {
    let mut rows = Vec::new();
    let pairs = cx.item_pairs();
    // Segments between two points run over [0, 1] on as many points as the grid.
    let seg_alphas = cx.cfg.grid.unit().alphas();
    let grid_alphas = cx.cfg.grid.alphas();
    for setting in cx.cfg.settings() {
        let same_set = !matches!(setting.eval, EvalSet::Batch);
        for &t in &pairs {
            let batches = cx.s.prepared(&setting.eval, t)?;
            // The floor point v_t, shared by every stride.
            let at = floors::alpha_star(cx, &setting, t)?;
            let vt = if at.is_finite() {
                Some(cx.point_on_step(t, at)?)
            } else {
                None
            };
            for &k in &cx.cfg.strides {
                let u = t + u64::from(k);
                // Along the valley floor: v_t -> v_{t+k}.
                if let Some(vt) = &vt
                    && cx.pairs.contains(&u)
                {
                    let au = floors::alpha_star(cx, &setting, u)?;
                    if au.is_finite() {
                        let vu = cx.point_on_step(u, au)?;
                        // The ends were evaluated while locating the floors: v_t on these
                        // batches; v_u too unless the set changes with the step (`batch`).
                        let floor_loss =
                            |s: u64| cx.handoff.floor_loss.get(&(setting.clone(), s)).copied();
                        let ends = [floor_loss(t), floor_loss(u).filter(|_| same_set)];
                        let losses =
                            cx.segment_losses((vt, &vu), &seg_alphas, &batches, &setting, ends)?;
                        rows.push(row(
                            cx,
                            &setting,
                            Segment {
                                from: t,
                                to: u,
                                stride: k,
                                path: Point::Floor,
                                alphas: &seg_alphas,
                                losses: &losses,
                            },
                        )?);
                    }
                }
                // Between iterates: θ_t -> θ_{t+k}; for k = 1 on the unit grid, the
                // interpolation itself.
                if cx.steps.contains(&u) {
                    let stored = cx.handoff.grid_losses.get(&(setting.clone(), t));
                    let (alphas, losses) = match stored {
                        Some(l) if k == 1 && cx.cfg.grid.is_unit() => {
                            (&grid_alphas, Cow::Owned(l.clone()))
                        }
                        _ => {
                            let a = cx.s.reader.state(t)?;
                            let b = cx.s.reader.state(u)?;
                            // θ_t and θ_u themselves, evaluated by `interp` on a set that does
                            // not change with the step.
                            let state_loss = |s: u64| {
                                cx.handoff
                                    .state_evals
                                    .get(&(setting.clone(), s))
                                    .map(sgdwalk_workload::EvalSums::mean_loss)
                            };
                            let ends = [state_loss(t), state_loss(u)];
                            let l =
                                cx.segment_losses((&a, &b), &seg_alphas, &batches, &setting, ends)?;
                            (&seg_alphas, Cow::Owned(l))
                        }
                    };
                    rows.push(row(
                        cx,
                        &setting,
                        Segment {
                            from: t,
                            to: u,
                            stride: k,
                            path: Point::Iterate,
                            alphas,
                            losses: &losses,
                        },
                    )?);
                }
            }
        }
    }
    Ok(rows)
}

fn row(cx: &ItemCx<'_>, setting: &Setting, seg: Segment<'_>) -> Result<BarrierRow, AnalyzeError> {
    let b = barrier(seg.alphas, seg.losses).map_err(|source| AnalyzeError::Barrier {
        step_from: seg.from,
        step_to: seg.to,
        path: seg.path,
        eval_set: setting.eval_name(),
        bn_policy: setting.bn_name(),
        source,
    })?;
    Ok(BarrierRow {
        run_id: cx.s.run_id.clone(),
        run_label: cx.s.run_label.clone(),
        step_from: seg.from,
        epoch: cx.s.epoch_of(seg.from),
        step_to: seg.to,
        stride: seg.stride,
        path: seg.path.as_str().into(),
        eval_set: setting.eval_name(),
        bn_policy: setting.bn_name().to_string(),
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
