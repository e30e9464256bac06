//! `curvature` → table `curvature`: the top Hessian eigenvalues (Lanczos on Hessian-vector
//! products, warm-started from the previous measurement of the same setting), the Hutchinson
//! trace and ε-sharpness at chosen steps, at the iterate and optionally at the valley floor.

use sgdwalk_workload::BnPolicy;

use crate::config::{EvalSet, Setting};
use crate::curvature::{
    CurvatureError, LanczosOptions, TraceOptions, Which, hutchinson_trace, lanczos,
};
use crate::error::AnalyzeError;
use crate::phases::{ItemCx, Point, floors};
use crate::replay::Session;
use crate::tables::CurvatureRow;

/// The steps of the item at which curvature is measured: multiples of `--curvature-every` and
/// the run's final state (flatness at the end of training), and `--curvature-steps`.
fn chosen_steps(cx: &ItemCx<'_>) -> Vec<u64> {
    let cfg = cx.cfg;
    let last = cx.s.desc.total_steps;
    cx.steps
        .range(cx.item.lo..cx.item.hi)
        .copied()
        .filter(|&t| {
            (cfg.curvature_every > 0 && (t % cfg.curvature_every == 0 || t == last))
                || cfg.curvature_steps.contains(&t)
        })
        .collect()
}

/// The curvature rows of the item's chosen steps.
pub(crate) fn run(cx: &mut ItemCx<'_>) -> Result<Vec<CurvatureRow>, AnalyzeError> {
    let chosen = chosen_steps(cx);
    let mut rows = Vec::new();
    for setting in cx.cfg.settings() {
        for &t in &chosen {
            // The run's final state made no update, so it has no minibatch to evaluate on.
            if matches!(setting.eval, EvalSet::Batch) && t >= cx.s.desc.total_steps {
                continue;
            }
            let batches = cx.s.prepared(&setting.eval, t)?;
            let samples: u64 = batches.iter().map(|(x, _)| x.size()[0] as u64).sum();
            let theta = cx.s.reader.state(t)?;
            let mut points = vec![(Point::Iterate, theta.to_vec())];
            if cx.cfg.curvature_at_floor && cx.s.reader.has_step(t + 1) {
                let alpha = floors::alpha_star(cx, &setting, t)?;
                if alpha.is_finite() {
                    points.push((Point::Floor, cx.point_on_step(t, alpha)?));
                }
            }
            for (point, state) in points {
                let template = CurvatureRow {
                    run_id: cx.s.run_id.clone(),
                    run_label: cx.s.run_label.clone(),
                    step: t,
                    epoch: cx.s.epoch_of(t),
                    point: point.as_str().into(),
                    eval_set: setting.eval_name(),
                    bn_policy: setting.bn_name().to_string(),
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
                let at = At {
                    setting: &setting,
                    step: t,
                    point,
                };
                measure(cx, &at, &state, &batches, &template, &mut rows)?;
            }
        }
    }
    Ok(rows)
}

/// Where a measurement is taken (for warm starts and errors).
struct At<'a> {
    setting: &'a Setting,
    step: u64,
    point: Point,
}

impl At<'_> {
    fn error(&self, e: CurvatureError<AnalyzeError>) -> AnalyzeError {
        match e {
            // A failed Hessian-vector product is the evaluation's error.
            CurvatureError::Operator { source, .. } => source,
            other => AnalyzeError::Curvature {
                step: self.step,
                point: self.point,
                eval_set: self.setting.eval_name(),
                bn_policy: self.setting.bn_name(),
                source: Box::new(other),
            },
        }
    }
}

/// Eigenvalues, then the trace and ε-sharpness when asked for, at one point.
fn measure(
    cx: &mut ItemCx<'_>,
    at: &At<'_>,
    state: &[f32],
    batches: &[(tch::Tensor, tch::Tensor)],
    template: &CurvatureRow,
    rows: &mut Vec<CurvatureRow>,
) -> Result<(), AnalyzeError> {
    let cfg = cx.cfg;
    let s: &Session = cx.s;
    let bn = at.setting.bn;
    let n = s.parameter_count();
    let key = (at.setting.clone(), at.point);
    let start = cx.warm.get(&key).cloned().unwrap_or_default();
    let mut matvecs = 0u64;
    let op = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, AnalyzeError> {
        matvecs += vs.len() as u64;
        Ok(s.hvp(state, batches, bn, vs)?.1)
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
    let eig = lanczos(op, n, &start, &opts).map_err(|e| at.error(e))?;
    cx.tally.forward_evaluations += matvecs;
    for (rank, (&value, &residual)) in eig.eigenvalues.iter().zip(&eig.residual_norms).enumerate() {
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
    cx.warm.insert(key, eig.eigenvectors);
    if cfg.trace_probes > 0 {
        let op = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, AnalyzeError> {
            Ok(s.hvp(state, batches, bn, vs)?.1)
        };
        let options = TraceOptions {
            probes: cfg.trace_probes as usize,
            batch_size: 1,
            seed: cfg.seed,
        };
        let tr = hutchinson_trace(op, n, &options).map_err(|e| at.error(e))?;
        cx.tally.forward_evaluations += u64::from(cfg.trace_probes);
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
        let (value, loss, iters) = eps_sharpness(s, state, batches, bn, cfg.eps_sharpness)?;
        cx.tally.forward_evaluations += u64::from(iters);
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
    Ok(())
}

/// ε-sharpness (Keskar et al.): the largest loss in the box |x_i − θ_i| ≤ ε(|θ_i| + 1) around θ
/// over the trainable parameters, found by projected sign-gradient ascent, reported as
/// (max − L) / (1 + L) × 100. Returns (value, L(θ), evaluations).
fn eps_sharpness(
    s: &Session,
    theta: &[f32],
    batches: &[(tch::Tensor, tch::Tensor)],
    bn: BnPolicy,
    eps: f64,
) -> Result<(f64, f64, u32), AnalyzeError> {
    const STEPS: u32 = 10;
    let ranges = s.trainable_ranges();
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
        for r in &ranges {
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
    Ok((crate::curvature::eps_sharpness(best, base), base, STEPS + 1))
}
