//! What each figure shows, planned from the loaded runs (no drawing here).

use super::plan::{Axis, FigurePlan, LegendEntry, Mark, Panel, Series, TickKind};
use crate::report::claims::{final_lambda, late_height};
use crate::report::load::{RunData, RunKind};

/// Steps shown in one walk panel: the paper's figures show 50 iterations.
const WALK_STEPS: u64 = 50;
/// About this many points per run in the height figure: consecutive analyzed steps are
/// averaged in windows so that a run analyzed at every step is a curve, not one dot.
const HEIGHT_POINTS: usize = 40;
/// A value axis turns logarithmic when its positive values span this factor.
const LOG_RATIO: f64 = 30.0;
/// Tick counts: x axes of wide panels, y axes.
const X_TICKS: usize = 7;
const Y_TICKS: usize = 6;

/// Every figure of the report, in the order the report lists them.
pub fn plan_figures(runs: &[RunData], barrier_threshold: f64) -> Vec<FigurePlan> {
    let mut v: Vec<FigurePlan> = runs
        .iter()
        .filter(|r| !r.interp.is_empty() || !r.geometry.is_empty())
        .map(walk)
        .collect();
    v.extend(height(runs));
    v.extend(barriers(runs, barrier_threshold));
    v.extend(lambda_max(runs));
    v.extend(lr_batch(runs));
    v
}

/// A file-name-safe form of a run label.
pub fn safe_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A number in Unicode subscript digits.
fn subscript(n: u32) -> String {
    n.to_string()
        .chars()
        .map(|c| char::from_u32(0x2080 + c.to_digit(10).unwrap_or(0)).unwrap_or(c))
        .collect()
}

/// An evaluation set in words.
fn describe_set(set: &str) -> String {
    match set {
        "train" => "the whole training split".to_string(),
        "batch" => "each step's minibatch".to_string(),
        "val" | "test" => format!("the {set} split"),
        s => match s.strip_prefix("probe:") {
            Some(n) => format!("probe:{n} ({n} fixed training examples)"),
            None => s.to_string(),
        },
    }
}

/// Which evaluation set and BatchNorm policy the losses of these runs were measured on.
fn eval_note(runs: &[&RunData]) -> String {
    let mut pairs: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.eval_set.as_str(), r.bn_policy.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    match pairs.as_slice() {
        [(set, bn)] => format!("losses on {}, BatchNorm {bn}", describe_set(set)),
        _ => {
            let per: Vec<String> = runs
                .iter()
                .map(|r| format!("{} {}/{}", r.label, r.eval_set, r.bn_policy))
                .collect();
            format!("losses on (run set/BatchNorm): {}", per.join(", "))
        }
    }
}

/// Maximal runs of consecutive steps among `steps` (sorted).
fn consecutive_runs(steps: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in steps {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            Some((_, hi)) if *hi == s => {}
            _ => out.push((s, s)),
        }
    }
    out
}

fn legend(name: impl Into<String>, color: usize, mark: Mark) -> LegendEntry {
    LegendEntry {
        name: name.into(),
        color,
        mark,
    }
}

fn series(name: impl Into<String>, color: usize, mark: Mark, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        color,
        mark,
        points,
    }
}

fn ys(series: &[Series]) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect()
}

fn xs(series: &[Series]) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect()
}

/// The first and last windows of at most [`WALK_STEPS`] consecutive analyzed steps.
fn walk_windows(r: &RunData) -> Vec<(u64, u64)> {
    let mut steps: Vec<u64> = r.interp.iter().map(|p| p.0).collect();
    steps.dedup();
    if steps.is_empty() {
        steps = r.geometry.iter().map(|g| g.step).collect();
    }
    let runs = consecutive_runs(&steps);
    let mut windows: Vec<(u64, u64)> = Vec::new();
    if let Some(&(lo, hi)) = runs.first() {
        windows.push((lo, hi.min(lo + WALK_STEPS - 1)));
    }
    if let Some(&(lo, hi)) = runs.last() {
        let w = (hi.saturating_sub(WALK_STEPS - 1).max(lo), hi);
        if windows.first() != Some(&w) {
            windows.push(w);
        }
    }
    windows
}

fn window_title(r: &RunData, lo: u64, hi: u64) -> String {
    if r.batch_size.is_none() {
        return format!("steps {lo}–{} (full batch)", hi + 1);
    }
    let spe = r.steps_per_epoch.max(1);
    let (e0, e1) = (lo / spe + 1, hi / spe + 1);
    if e0 == e1 {
        format!("steps {lo}–{} (epoch {e0})", hi + 1)
    } else {
        format!("steps {lo}–{} (epochs {e0}–{e1})", hi + 1)
    }
}

fn scope_words(scope: &str) -> &'static str {
    if scope == "params" {
        "trainable parameters"
    } else {
        "the whole state incl. BatchNorm statistics"
    }
}

/// The walk of one run: loss along each step with its floor, cos between consecutive
/// updates, distance from initialization; first and last windows side by side.
fn walk(r: &RunData) -> FigurePlan {
    let windows = walk_windows(r);
    let n = windows.len().max(1);
    let x_ticks = if n == 1 { X_TICKS } else { 6 };
    let (mut loss, mut cos, mut dist) = (Vec::new(), Vec::new(), Vec::new());
    for &(lo, hi) in &windows {
        let x = |label: &str| {
            Axis::linear_exact(
                label,
                lo as f64,
                (hi + 1) as f64,
                TickKind::Integer,
                x_ticks,
            )
        };
        let curve: Vec<(f64, f64)> = r
            .interp
            .iter()
            .filter(|p| (lo..=hi).contains(&p.0) && (0.0..=1.0).contains(&p.1) && p.2.is_finite())
            .map(|p| (p.0 as f64 + p.1, p.2))
            .collect();
        let floors: Vec<(f64, f64)> = r
            .floors
            .iter()
            .filter(|f| (lo..=hi).contains(&f.step) && f.loss_at_floor.is_finite())
            .map(|f| (f.step as f64 + f.alpha_star, f.loss_at_floor))
            .collect();
        let s: Vec<Series> = [
            series("loss along the step", 0, Mark::Line, curve),
            series("valley floor", 3, Mark::Points, floors),
        ]
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect();
        let y = Axis::linear(
            &format!("loss ({})", r.eval_set),
            &ys(&s),
            TickKind::Decimal,
            Y_TICKS,
        );
        loss.push(panel(
            format!("loss {lo}-{hi}"),
            Some(window_title(r, lo, hi)),
            x("step t + α"),
            y,
            s,
        ));
        let c: Vec<(f64, f64)> = r
            .geometry
            .iter()
            .filter(|g| (lo..=hi).contains(&g.step))
            .filter_map(|g| g.cos.filter(|v| v.is_finite()).map(|v| (g.step as f64, v)))
            .collect();
        let mut s = vec![series(
            "zero",
            0,
            Mark::Reference,
            vec![(lo as f64, 0.0), ((hi + 1) as f64, 0.0)],
        )];
        if !c.is_empty() {
            s.push(series("cos", 1, Mark::LinePoints, c));
        }
        let y = Axis::linear_exact("cos(dₜ₋₁, dₜ)", -1.05, 1.05, TickKind::Decimal, 5);
        cos.push(panel(format!("cos {lo}-{hi}"), None, x("step t"), y, s));
        let d: Vec<(f64, f64)> = r
            .geometry
            .iter()
            .filter(|g| (lo..=hi + 1).contains(&g.step))
            .filter_map(|g| g.dist.filter(|v| v.is_finite()).map(|v| (g.step as f64, v)))
            .collect();
        let s: Vec<Series> = [series("distance", 2, Mark::Line, d)]
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        let y = Axis::linear("‖θₜ − θ₀‖", &ys(&s), TickKind::Decimal, Y_TICKS);
        dist.push(panel(
            format!("distance {lo}-{hi}"),
            None,
            x("step t"),
            y,
            s,
        ));
    }
    let panels: Vec<Panel> = loss.into_iter().chain(cos).chain(dist).collect();
    FigurePlan {
        stem: format!("walk-{}", safe_name(&r.label)),
        title: format!("{}: the walk at the first and last analyzed steps", r.label),
        subtitle: format!(
            "{} on {}, lr {}, batch {}; {}; cos and distance over the {}",
            r.model,
            r.dataset,
            r.lr,
            r.batch_label(),
            eval_note(&[r]),
            scope_words(r.geometry_scope)
        ),
        caption: format!(
            "{}: loss along consecutive steps (floors marked), cos(dₜ₋₁, dₜ) and ‖θₜ − θ₀‖, \
             first and last analyzed steps",
            r.label
        ),
        size: (1400, 1000),
        grid: (3, n),
        panels,
        legend: vec![
            legend("loss L(θₜ + α dₜ) along step t, α ∈ [0, 1]", 0, Mark::Line),
            legend(
                "valley floor vₜ (lowest point of the step)",
                3,
                Mark::Points,
            ),
            legend("cos between consecutive updates", 1, Mark::LinePoints),
            legend("distance from initialization", 2, Mark::Line),
        ],
    }
}

/// A panel whose empty series are dropped and which says so when nothing is left.
fn panel(id: String, title: Option<String>, x: Axis, y: Axis, series: Vec<Series>) -> Panel {
    let series: Vec<Series> = series
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    let note = series
        .iter()
        .all(|s| s.mark == Mark::Reference)
        .then(|| "nothing analyzed here".to_string());
    Panel {
        id,
        title,
        x,
        y,
        series,
        note,
    }
}

/// Minibatch runs (x in epochs) and full-batch runs (x in steps) get separate panels.
struct Group<'r> {
    id: &'static str,
    title: &'static str,
    x_label: &'static str,
    x_kind: TickKind,
    runs: Vec<(usize, &'r RunData)>,
}

fn groups<'r>(runs: &'r [RunData], keep: impl Fn(&RunData) -> bool) -> Vec<Group<'r>> {
    let pick = |mb: bool| -> Vec<(usize, &RunData)> {
        runs.iter()
            .enumerate()
            .filter(|(_, r)| r.batch_size.is_some() == mb && keep(r))
            .collect()
    };
    let mut v = Vec::new();
    let mb = pick(true);
    if !mb.is_empty() {
        v.push(Group {
            id: "minibatch",
            title: "minibatch runs",
            x_label: "epoch (step / steps per epoch)",
            x_kind: TickKind::Decimal,
            runs: mb,
        });
    }
    let gd = pick(false);
    if !gd.is_empty() {
        v.push(Group {
            id: "full-batch",
            title: "full-batch runs",
            x_label: "step",
            x_kind: TickKind::Integer,
            runs: gd,
        });
    }
    v
}

/// x of a step: epochs for minibatch runs, steps for full-batch runs.
fn x_of(r: &RunData, step: u64) -> f64 {
    if r.batch_size.is_some() {
        step as f64 / r.steps_per_epoch.max(1) as f64
    } else {
        step as f64
    }
}

/// One panel per group, the y axis chosen over all its series.
fn group_panels(
    groups: &[Group<'_>],
    series_of: impl Fn(usize, &RunData) -> Vec<Series>,
    y_axis: impl Fn(&[f64]) -> Axis,
) -> Vec<Panel> {
    groups
        .iter()
        .map(|g| {
            let s: Vec<Series> = g
                .runs
                .iter()
                .flat_map(|(i, r)| series_of(*i, r))
                .filter(|s| !s.points.is_empty())
                .collect();
            let x_ticks = if groups.len() == 1 {
                X_TICKS + 3
            } else {
                X_TICKS
            };
            let x = Axis::linear(g.x_label, &xs(&s), g.x_kind, x_ticks);
            panel(
                g.id.to_string(),
                (groups.len() > 1).then(|| g.title.to_string()),
                x,
                y_axis(&ys(&s)),
                s,
            )
        })
        .collect()
}

fn run_legend(groups: &[Group<'_>], mark: Mark) -> Vec<LegendEntry> {
    groups
        .iter()
        .flat_map(|g| {
            g.runs
                .iter()
                .map(|(i, r)| legend(r.label.clone(), *i, mark))
        })
        .collect()
}

fn group_runs<'a>(groups: &'a [Group<'_>]) -> Vec<&'a RunData> {
    groups
        .iter()
        .flat_map(|g| g.runs.iter().map(|(_, r)| *r))
        .collect()
}

/// `lo..=hi` cut into the fewest windows of at most `w` steps, of sizes that differ by at most
/// one: a short last window would be the mean of a few steps, a noisy point at the end of the
/// curve that looks like a change of the run.
fn even_windows(lo: u64, hi: u64, w: usize) -> Vec<(u64, u64)> {
    let len = hi - lo + 1;
    let count = len.div_ceil(w.max(1) as u64);
    let (base, longer) = (len / count, len % count);
    let mut start = lo;
    (0..count)
        .map(|i| {
            let end = start + base + u64::from(i < longer) - 1;
            let window = (start, end);
            start = end + 1;
            window
        })
        .collect()
}

/// Means of the finite heights in windows of at most `w` consecutive analyzed steps.
fn height_points(r: &RunData, w: usize) -> Vec<(f64, f64)> {
    let steps: Vec<u64> = r.floors.iter().map(|f| f.step).collect();
    let mut out = Vec::new();
    for (lo, hi) in consecutive_runs(&steps) {
        for (start, end) in even_windows(lo, hi, w) {
            let h: Vec<f64> = r
                .floors
                .iter()
                .filter(|f| (start..=end).contains(&f.step) && f.height_start.is_finite())
                .map(|f| f.height_start)
                .collect();
            if !h.is_empty() {
                let mid = (x_of(r, start) + x_of(r, end)) / 2.0;
                out.push((mid, h.iter().sum::<f64>() / h.len() as f64));
            }
        }
    }
    out
}

fn height(runs: &[RunData]) -> Option<FigurePlan> {
    let g = groups(runs, |r| !r.floors.is_empty());
    if g.is_empty() {
        return None;
    }
    let most = g
        .iter()
        .flat_map(|g| g.runs.iter().map(|(_, r)| r.floors.len()))
        .max()
        .unwrap_or(1);
    let w = most.div_ceil(HEIGHT_POINTS).max(1);
    let panels = group_panels(
        &g,
        |i, r| {
            vec![series(
                r.label.clone(),
                i,
                Mark::LinePoints,
                height_points(r, w),
            )]
        },
        |v| Axis::auto("height L(θₜ) − L(vₜ) (loss units)", v, LOG_RATIO, Y_TICKS),
    );
    let per_point = if w == 1 {
        "each point one analyzed step".to_string()
    } else {
        format!("each point the mean over up to {w} consecutive analyzed steps")
    };
    Some(FigurePlan {
        stem: "height".into(),
        title: "Height of θₜ above its step's valley floor vₜ".into(),
        subtitle: format!("{}; {per_point}", eval_note(&group_runs(&g))),
        caption: format!("Height of θₜ above its step's valley floor ({per_point})"),
        size: (1200, 600),
        grid: (1, panels.len()),
        legend: run_legend(&g, Mark::LinePoints),
        panels,
    })
}

fn barriers(runs: &[RunData], threshold: f64) -> Option<FigurePlan> {
    let g = groups(runs, |r| !r.floor_barriers.is_empty());
    if g.is_empty() {
        return None;
    }
    let mut strides: Vec<u32> = group_runs(&g)
        .iter()
        .flat_map(|r| r.floor_barriers.iter().map(|b| b.0))
        .collect();
    strides.sort_unstable();
    strides.dedup();
    let first = strides.first().copied().unwrap_or(1);
    let mut panels = group_panels(
        &g,
        |i, r| {
            strides
                .iter()
                .map(|&k| {
                    let pts: Vec<(f64, f64)> = r
                        .floor_barriers
                        .iter()
                        .filter(|b| b.0 == k && b.2.is_finite())
                        .map(|b| (x_of(r, b.1), b.2))
                        .collect();
                    let mark = if k == first {
                        Mark::Points
                    } else {
                        Mark::OpenPoints
                    };
                    series(format!("{} stride {k}", r.label), i, mark, pts)
                })
                .collect()
        },
        // From 0 (most barriers are exactly 0) to above both the data and the threshold.
        |v| {
            let top = v.iter().copied().fold(threshold, f64::max);
            let top = if top > 0.0 { top * 1.15 } else { 1.0 };
            Axis::linear_exact(
                "barrier / loss at the higher end",
                -0.04 * top,
                top,
                TickKind::Decimal,
                Y_TICKS,
            )
        },
    );
    for p in &mut panels {
        let values: Vec<f64> = ys(&p.series);
        if !values.is_empty() && values.iter().all(|v| *v == 0.0) {
            p.note = Some(format!(
                "every barrier is 0 ({} segments):\nthe floor path never rises above its ends",
                values.len()
            ));
        }
        let (x0, x1) = (p.x.lo, p.x.hi);
        p.series.push(series(
            "threshold",
            0,
            Mark::Reference,
            vec![(x0, threshold), (x1, threshold)],
        ));
    }
    let mut legend_entries = run_legend(&g, Mark::Points);
    legend_entries.push(legend(
        format!("threshold: {}% of the higher end's loss", threshold * 100.0),
        0,
        Mark::Reference,
    ));
    let strides_note = if strides.len() > 1 {
        let later: Vec<String> = strides[1..].iter().map(|k| k.to_string()).collect();
        format!(
            "; filled: vₜ → vₜ₊{}, open: stride k = {}",
            subscript(first),
            later.join(", ")
        )
    } else {
        format!("; stride {first}")
    };
    Some(FigurePlan {
        stem: "barriers".into(),
        title: "Barriers along the valley floor vₜ → vₜ₊ₖ, relative to the higher end".into(),
        subtitle: format!("{}{strides_note}", eval_note(&group_runs(&g))),
        caption: "Barriers along the valley floor vₜ → vₜ₊ₖ, relative to the higher end; \
                  the line is the threshold above which a segment counts as having one"
            .into(),
        size: (1200, 600),
        grid: (1, panels.len()),
        legend: legend_entries,
        panels,
    })
}

/// λ_max by step; two measurements of one step (repeated analyses) are averaged.
fn lambda_points(r: &RunData) -> Vec<(f64, f64)> {
    let mut by_step: Vec<(u64, f64, u32)> = Vec::new();
    let mut pts: Vec<(u64, f64)> = r
        .curvature
        .iter()
        .filter(|p| p.lambda_max.is_finite())
        .map(|p| (p.step, p.lambda_max))
        .collect();
    pts.sort_by_key(|p| p.0);
    for (s, v) in pts {
        match by_step.last_mut() {
            Some((last, sum, n)) if *last == s => {
                *sum += v;
                *n += 1;
            }
            _ => by_step.push((s, v, 1)),
        }
    }
    by_step
        .into_iter()
        .map(|(s, sum, n)| (x_of(r, s), sum / f64::from(n)))
        .collect()
}

fn lambda_max(runs: &[RunData]) -> Option<FigurePlan> {
    let g = groups(runs, |r| !r.curvature.is_empty());
    if g.is_empty() {
        return None;
    }
    let panels = group_panels(
        &g,
        |i, r| {
            vec![series(
                r.label.clone(),
                i,
                Mark::LinePoints,
                lambda_points(r),
            )]
        },
        |v| Axis::auto("λₘₐₓ", v, LOG_RATIO, Y_TICKS),
    );
    Some(FigurePlan {
        stem: "lambda-max".into(),
        title: "Top Hessian eigenvalue λₘₐₓ at the iterates".into(),
        subtitle: format!(
            "{}; one point per measured step",
            eval_note(&group_runs(&g))
        ),
        caption: "Top Hessian eigenvalue λₘₐₓ over training".into(),
        size: (1200, 600),
        grid: (1, panels.len()),
        legend: run_legend(&g, Mark::LinePoints),
        panels,
    })
}

/// A per-run number of the learning-rate comparison: id, title, y axis label, value.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RunData) -> Option<f64>,
);

fn lr_batch(runs: &[RunData]) -> Option<FigurePlan> {
    let sgd: Vec<&RunData> = runs.iter().filter(|r| r.kind == RunKind::Sgd).collect();
    if sgd.len() < 2 {
        return None;
    }
    let mut batches: Vec<u32> = sgd.iter().filter_map(|r| r.batch_size).collect();
    batches.sort_unstable();
    batches.dedup();
    let metrics: [Metric; 4] = [
        (
            "distance",
            "distance from initialization at the end",
            "‖θ − θ₀‖",
            |r| r.whole.dist_end,
        ),
        (
            "height",
            "mean height above the floor after epoch 1",
            "height (loss units)",
            late_height,
        ),
        (
            "lambda_max",
            "λₘₐₓ at the last measured step",
            "λₘₐₓ",
            final_lambda,
        ),
        (
            "test_accuracy",
            "test accuracy at the end",
            "accuracy (%)",
            |r| r.final_eval("test").map(|e| 100.0 * e.accuracy),
        ),
    ];
    let lrs: Vec<f64> = sgd.iter().map(|r| r.lr).collect();
    let panels: Vec<Panel> = metrics
        .iter()
        .map(|(id, name, y_label, f)| {
            let s: Vec<Series> = batches
                .iter()
                .enumerate()
                .map(|(bi, b)| {
                    let mut pts: Vec<(f64, f64)> = sgd
                        .iter()
                        .filter(|r| r.batch_size == Some(*b))
                        .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.lr, v)))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    series(format!("batch {b}"), bi, Mark::LinePoints, pts)
                })
                .collect();
            let y = Axis::linear(y_label, &ys(&s), TickKind::Decimal, 5);
            let mut p = panel(
                (*id).to_string(),
                Some((*name).to_string()),
                Axis::log_given("learning rate (log scale)", &lrs),
                y,
                s,
            );
            if p.note.is_some() {
                p.note = Some("not measured for these runs".into());
            }
            p
        })
        .collect();
    Some(FigurePlan {
        stem: "lr-batch".into(),
        title: "Plain SGD: effect of the learning rate at each batch size".into(),
        subtitle: format!(
            "{}; test accuracy on the test split at the last epoch",
            eval_note(&sgd)
        ),
        caption: "Learning rate and batch size: distance travelled, height above the floor, \
                  λₘₐₓ, test accuracy"
            .into(),
        size: (1200, 900),
        grid: (2, 2),
        legend: batches
            .iter()
            .enumerate()
            .map(|(bi, b)| legend(format!("batch {b}"), bi, Mark::LinePoints))
            .collect(),
        panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_windows_cover_the_run_in_near_equal_sizes() {
        for (lo, hi, w) in [
            (0, 899, 23),
            (5, 5, 23),
            (0, 45, 23),
            (0, 46, 23),
            (10, 19, 1),
        ] {
            let windows = even_windows(lo, hi, w);
            let len = hi - lo + 1;
            assert_eq!(
                windows.len() as u64,
                len.div_ceil(w as u64),
                "{lo}..={hi} by {w}"
            );
            assert_eq!(windows.first().map(|x| x.0), Some(lo));
            assert_eq!(windows.last().map(|x| x.1), Some(hi));
            for pair in windows.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "contiguous");
            }
            let sizes: Vec<u64> = windows.iter().map(|(a, b)| b - a + 1).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max <= Some(&(w as u64)), "{sizes:?}");
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
        }
        // 900 steps by 23: 40 windows of 22 or 23 steps, not 39 of 23 and one of 3.
        assert_eq!(even_windows(0, 899, 23).last(), Some(&(878, 899)));
    }
}
