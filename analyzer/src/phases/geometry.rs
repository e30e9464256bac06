//! `geometry` → table `steps`: ‖d_t‖, cos(d_{t−1}, d_t), ‖θ_t − θ_0‖ and ‖θ_t‖ of each recorded
//! step, over the whole state ("all"), the trainable parameters ("params", the paper's
//! definition) and each layer, each row with the recorded per-step scalars.

use std::collections::HashMap;

use crate::error::AnalyzeError;
use crate::metrics::{GeometryTracker, LayerGeometry, MetricsError, StepGeometry, TotalScope};
use crate::phases::ItemCx;
use crate::tables::StepRow;

/// The geometry rows of the item's steps.
pub(crate) fn run(cx: &mut ItemCx<'_>) -> Result<Vec<StepRow>, AnalyzeError> {
    let (geoms, param_geoms) = track(cx)?;
    let s = &mut *cx.s;
    let names: Vec<String> = s
        .desc
        .layout
        .layer_ranges()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut rows = Vec::new();
    for g in geoms.into_iter().filter(|g| cx.item.contains(g.step)) {
        let info = s.reader.step_info(g.step)?;
        let epoch = s.epoch_of(g.step);
        // The recorded scalars as the file has them: absent → null, a recorded NaN stays NaN.
        // On every layer's row, so the `params` rows need no self-join to reach them.
        let sc = info.scalars;
        rows.push(StepRow {
            run_id: s.run_id.clone(),
            run_label: s.run_label.clone(),
            step: g.step,
            epoch,
            layer: "all".into(),
            update_norm: g.total.update_norm,
            cos_prev_update: g.total.cos_prev_update,
            dist_from_init: g.total.dist_from_init,
            param_norm: g.total.param_norm,
            lr: sc.learning_rate,
            minibatch_loss: sc.minibatch_loss,
            grad_norm: sc.grad_norm,
            recorded_update_norm: sc.update_norm,
            wall_time_secs: sc.wall_time_secs,
        });
        let per_layer = param_geoms
            .get(&g.step)
            .map(|p| ("params", p))
            .into_iter()
            .chain(names.iter().map(String::as_str).zip(&g.per_layer));
        for (name, l) in per_layer {
            rows.push(StepRow {
                run_id: s.run_id.clone(),
                run_label: s.run_label.clone(),
                step: g.step,
                epoch,
                layer: name.to_string(),
                update_norm: l.update_norm,
                cos_prev_update: l.cos_prev_update,
                dist_from_init: l.dist_from_init,
                param_norm: l.param_norm,
                lr: sc.learning_rate,
                minibatch_loss: sc.minibatch_loss,
                grad_norm: sc.grad_norm,
                recorded_update_norm: sc.update_norm,
                wall_time_secs: sc.wall_time_secs,
            });
        }
    }
    Ok(rows)
}

/// Feeds the item's states (and one neighbour on each side, for d_{t−1} and d_t) through two
/// trackers: whole state and layers, and trainable parameters only.
fn track(
    cx: &mut ItemCx<'_>,
) -> Result<(Vec<StepGeometry>, HashMap<u64, LayerGeometry>), AnalyzeError> {
    let s = &mut *cx.s;
    let item = cx.item;
    let at = |step: u64| move |source: MetricsError| AnalyzeError::Geometry { step, source };
    let layout = &s.desc.layout;
    let len = layout.len_elements();
    // `all` is every f32 tensor; tensors of other dtypes (integer buffers) are in no layer
    // and would be read as floats by AllElements.
    let scope = if layout.non_float_ranges().is_empty() {
        TotalScope::AllElements
    } else {
        TotalScope::LayersOnly
    };
    let mut tracker =
        GeometryTracker::new(layout.layer_ranges(), len, scope).map_err(at(item.lo))?;
    // The paper's definitions (cos, distance) use the trainable parameters only: BatchNorm
    // running statistics move with every batch and would dominate both.
    let mut params = GeometryTracker::new(
        vec![("params".to_string(), s.trainable_ranges())],
        len,
        TotalScope::LayersOnly,
    )
    .map_err(at(item.lo))?;
    if cx.steps.contains(&0) || s.reader.has_step(0) {
        let init = s.reader.state(0)?;
        tracker.set_init(&init).map_err(at(0))?;
        params.set_init(&init).map_err(at(0))?;
    }
    let mut feed: Vec<u64> = Vec::new();
    if item.lo > 0 && s.reader.has_step(item.lo - 1) {
        feed.push(item.lo - 1);
    }
    feed.extend(cx.steps.range(item.lo..item.hi));
    if s.reader.has_step(item.hi) {
        feed.push(item.hi);
    }
    let mut geoms: Vec<StepGeometry> = Vec::new();
    let mut param_geoms: HashMap<u64, LayerGeometry> = HashMap::new();
    for t in feed {
        let state = s.reader.state(t)?;
        if let Some(g) = params.push(t, &state).map_err(at(t))? {
            param_geoms.insert(g.step, g.total);
        }
        if let Some(g) = tracker.push(t, &state).map_err(at(t))? {
            geoms.push(g);
        }
    }
    geoms.extend(tracker.finish());
    if let Some(g) = params.finish() {
        param_geoms.insert(g.step, g.total);
    }
    Ok((geoms, param_geoms))
}
