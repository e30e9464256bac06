//! The paper's claims as data. Each [`ClaimSpec`] of [`CLAIMS`] restates one claim, names its
//! source and the rule that decides its verdict, and points to the function that measures it
//! on the runs; [`assess`] runs them all in the table's order, and [`super::markdown`] renders
//! the result. Pure functions of [`RunData`]: unit-tested without any file.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::load::{RunData, RunKind};
use super::markdown::{fmt_opt, pct};

/// Outcome of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Held,
    NotHeld,
    /// The runs given do not contain what the claim needs (named in the evidence).
    NotMeasured,
}

impl Verdict {
    /// `None`: the data needed was missing; otherwise whether the test passed.
    fn from_test(passed: Option<bool>) -> Self {
        match passed {
            None => Verdict::NotMeasured,
            Some(true) => Verdict::Held,
            Some(false) => Verdict::NotHeld,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Held => "held",
            Verdict::NotHeld => "not held",
            Verdict::NotMeasured => "not measured",
        })
    }
}

/// One claim of the paper: what it says, where, how it is decided and how it is measured.
#[derive(Debug)]
pub struct ClaimSpec {
    /// `C1` … `C7`, as in the report's headings.
    pub id: &'static str,
    /// The claim, restated.
    pub statement: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    /// How the verdict is decided. [`BARRIER_THRESHOLD_PCT`] in it stands for
    /// `--barrier-threshold`, in percent with two decimals.
    pub rule: &'static str,
    /// Measures the claim on the runs: the evidence and the verdict.
    pub assess: fn(&Runs<'_>) -> Finding,
}

/// The placeholder of the barrier threshold in a [`ClaimSpec::rule`].
pub const BARRIER_THRESHOLD_PCT: &str = "{barrier_threshold_pct}";

impl ClaimSpec {
    /// The rule with the barrier threshold filled in.
    pub fn rule(&self, barrier_threshold: f64) -> String {
        self.rule.replace(
            BARRIER_THRESHOLD_PCT,
            &format!("{:.2}", 100.0 * barrier_threshold),
        )
    }
}

/// What a claim's measurement found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Markdown with the numbers (a table, a sentence), or what is missing to measure it.
    pub evidence: String,
    pub verdict: Verdict,
}

impl Finding {
    fn not_measured(why: &str) -> Self {
        Finding {
            evidence: why.into(),
            verdict: Verdict::NotMeasured,
        }
    }
}

/// One assessed claim: a [`ClaimSpec`] with its rule filled in and its [`Finding`].
#[derive(Debug, Clone)]
pub struct Assessed {
    pub id: &'static str,
    /// The claim, restated.
    pub claim: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    /// How the verdict is decided.
    pub rule: String,
    /// Markdown with the numbers.
    pub evidence: String,
    pub verdict: Verdict,
}

/// Steps with floors after the first epoch a run needs before "for most of training" can be
/// judged on it (a one-epoch run has none: its steps are the initial descent).
pub const MIN_LATE_STEPS: u64 = 10;
/// Steps a run needs before whole-run shares (cos < 0, interior floors) are judged.
pub const MIN_STEPS: u64 = 10;
/// Curvature measurements after θ_0 a run needs before a trend over training is judged.
pub const MIN_CURVATURE_POINTS: usize = 3;

/// The rule shared by the two interior-floor claims.
const INTERIOR_RULE: &str = "held when, in every run with two or more epochs and at least 10 steps with floors after \
     the first epoch (the initial descent, where every step is downhill), more than half of \
     those steps have an interior valley floor (shape `interior_min`); shorter runs are listed \
     as too short, and with none long enough the claim is not measured";

/// Every claim the report assesses, in the report's order.
pub const CLAIMS: &[ClaimSpec] = &[
    ClaimSpec {
        id: "C1",
        statement: "For most of training, the loss along each SGD step θ_t → θ_{t+1} is roughly convex with a minimum in between (the valley floor).",
        source: "abstract, claim 1",
        rule: INTERIOR_RULE,
        assess: interior_floors_minibatch,
    },
    ClaimSpec {
        id: "C1-GD",
        statement: "Full-batch GD with a large learning rate overshoots the minimum along every step too (interior floor).",
        source: "expected from the authors' code (GD, effective lr 0.9)",
        rule: INTERIOR_RULE,
        assess: interior_floors_full_batch,
    },
    ClaimSpec {
        id: "C2",
        statement: "SGD moves in valley-like regions by jumping from one valley wall to the other, at a height above the floor.",
        source: "abstract, claim 2",
        rule: "held when, in every minibatch run with at least 10 steps with floors and 10 with \
               a cosine, more than half of the steps have an interior floor, the median \
               cos(d_{t−1}, d_t) is negative, and both iterates sit above the floor on average \
               (mean height at α=0 and at α=1 > 0)",
        assess: bouncing_between_walls,
    },
    ClaimSpec {
        id: "C3a",
        statement: "A larger learning rate lets SGD travel farther from initialization.",
        source: "abstract, claim 3",
        rule: "held when, at every batch size with two or more learning rates, ‖θ − θ_0‖ at the \
               last epoch all those runs reached increases strictly with the learning rate",
        assess: distance_by_lr,
    },
    ClaimSpec {
        id: "C3b",
        statement: "A smaller batch size lets SGD travel farther from initialization (same epochs).",
        source: "abstract, claim 3",
        rule: "held when, at every learning rate with two or more batch sizes, ‖θ − θ_0‖ at the \
               last epoch all those runs reached decreases strictly as the batch size grows",
        assess: distance_by_batch,
    },
    ClaimSpec {
        id: "C3c",
        statement: "A large learning rate maintains a large height above the valley floor.",
        source: "abstract, claim 3",
        rule: "held when, at every batch size with two or more learning rates, the mean height of \
               θ_t above its step's floor after the first epoch increases strictly with the \
               learning rate",
        assess: height_by_lr,
    },
    ClaimSpec {
        id: "C3d",
        statement: "Learning rate and batch size play different roles: a large learning rate keeps SGD high above the floor, a small batch injects noise that helps exploration.",
        source: "abstract, claim 3",
        rule: "elasticities d log(height) / d log(lr) at fixed batch size and d log(height) / \
               d log(batch) at fixed lr, averaged over groups; held when height responds more \
               to the learning rate than to the batch size (|lr elasticity| > |batch \
               elasticity|) while the distance travelled still grows as the batch shrinks (C3b)",
        assess: roles_of_lr_and_batch,
    },
    ClaimSpec {
        id: "C4a",
        statement: "The valley floor has barriers.",
        source: "abstract, claim 4",
        rule: "a segment v_t → v_{t+k} between floor points has a barrier when max L − \
               max(L(v_t), L(v_{t+k})) exceeds {barrier_threshold_pct}% of the higher end; held \
               when at least 1% of the floor segments of the minibatch runs have one",
        assess: floor_barriers,
    },
    ClaimSpec {
        id: "C4b",
        statement: "Exploring above the floor lets SGD move far without being hindered by the floor's barriers.",
        source: "abstract, claim 4",
        rule: "compares, at each stride k > 1, the share of segments with a barrier along the \
               iterates (θ_t → θ_{t+k}, above the floor) with the share along the floor (v_t → \
               v_{t+k}); held when the iterate path has fewer barriers at every such stride",
        assess: iterates_avoid_barriers,
    },
    ClaimSpec {
        id: "C4c",
        statement: "Larger learning rates and smaller batches find flatter regions (smaller top Hessian eigenvalue).",
        source: "abstract, claims 3–4; λ_max plots of the authors' code",
        rule: "held when λ_max at the final curvature step decreases strictly with the learning \
               rate at every batch size and increases strictly with the batch size at every \
               learning rate",
        assess: flatter_with_lr_and_batch,
    },
    ClaimSpec {
        id: "C4d",
        statement: "Flatter regions generalize better.",
        source: "abstract, claim 4",
        rule: "held when the rank correlation between final λ_max and final test accuracy across \
               minibatch runs is negative (at least 3 runs)",
        assess: flatness_and_generalization,
    },
    ClaimSpec {
        id: "C5",
        statement: "The top Hessian eigenvalue λ_max decreases over training.",
        source: "the authors' spectral-norm plots (epochs 1, 10, 25, 100)",
        rule: "held when λ_max at the last curvature step is below its value at the first \
               curvature step after θ_0, in every minibatch run with at least 3 curvature steps \
               after θ_0 (two points are no trend)",
        assess: lambda_max_decreases,
    },
    ClaimSpec {
        id: "C6",
        statement: "The distance from initialization grows monotonically during early training.",
        source: "expected from the authors' code (parameter-distance panels)",
        rule: "held when ‖θ − θ_0‖ at the end of each epoch increases strictly in every run with \
               two or more epochs",
        assess: distance_grows_early,
    },
    ClaimSpec {
        id: "C7",
        statement: "Full-batch GD with isotropic Gaussian noise does not reproduce what SGD achieves.",
        source: "abstract of the first version",
        rule: "held when every GD+noise run ends with a lower test accuracy than the median \
               plain-SGD run",
        assess: isotropic_noise_falls_short,
    },
];

/// Decides every claim of [`CLAIMS`] on the given runs, in order.
pub fn assess(runs: &[RunData], barrier_threshold: f64) -> Vec<Assessed> {
    let runs = Runs::new(runs);
    CLAIMS
        .iter()
        .map(|spec| {
            let Finding { evidence, verdict } = (spec.assess)(&runs);
            Assessed {
                id: spec.id,
                claim: spec.statement,
                source: spec.source,
                rule: spec.rule(barrier_threshold),
                evidence,
                verdict,
            }
        })
        .collect()
}

/// The runs as the claims compare them.
pub struct Runs<'a> {
    pub all: &'a [RunData],
    /// Minibatch runs: plain SGD, SGD with momentum, Adam.
    pub minibatch: Vec<&'a RunData>,
    /// Plain-SGD runs (no momentum): the paper's setting.
    pub sgd: Vec<&'a RunData>,
    /// Full-batch runs: GD and GD with noise.
    pub full_batch: Vec<&'a RunData>,
    /// Plain-SGD runs by batch size (the learning rate varies), each group sorted by lr.
    pub by_batch: Groups<'a>,
    /// Plain-SGD runs by learning rate (the batch size varies), each sorted by batch size.
    pub by_lr: Groups<'a>,
}

impl<'a> Runs<'a> {
    pub fn new(all: &'a [RunData]) -> Self {
        let of = |keep: fn(RunKind) -> bool| -> Vec<&'a RunData> {
            all.iter().filter(|r| keep(r.kind)).collect()
        };
        let minibatch = of(|k| matches!(k, RunKind::Sgd | RunKind::OtherMinibatch));
        let sgd = of(|k| k == RunKind::Sgd);
        let full_batch = of(|k| matches!(k, RunKind::Gd | RunKind::GdNoise));
        let by_batch = groups(&sgd, |r| r.batch_label(), |r| r.lr);
        let by_lr = groups(
            &sgd,
            |r| r.lr.to_string(),
            |r| f64::from(r.batch_size.unwrap_or(0)),
        );
        Runs {
            all,
            minibatch,
            sgd,
            full_batch,
            by_batch,
            by_lr,
        }
    }
}

// --- Helpers shared by the claims

/// Runs of the same model and data grouped by a key, each group sorted by `x`.
fn groups<'a>(
    runs: &[&'a RunData],
    key: impl Fn(&RunData) -> String,
    x: impl Fn(&RunData) -> f64,
) -> Groups<'a> {
    let mut g: Groups<'a> = BTreeMap::new();
    for r in runs {
        g.entry((r.model.clone(), r.dataset.clone(), key(r)))
            .or_default()
            .push(r);
    }
    for v in g.values_mut() {
        v.sort_by(|a, b| x(a).total_cmp(&x(b)));
    }
    g.retain(|_, v| v.len() >= 2);
    g
}

/// Strictly increasing (`sign = 1`) or decreasing (`-1`) along the sorted x; `None` when a
/// value is missing or NaN.
fn monotone(ys: &[Option<f64>], sign: f64) -> Option<bool> {
    let ys: Option<Vec<f64>> = ys.iter().map(|y| y.filter(|v| !v.is_nan())).collect();
    let ys = ys?;
    Some(ys.windows(2).all(|w| sign * (w[1] - w[0]) > 0.0))
}

/// ‖θ − θ_0‖ at the end of `epoch` (or the run's last measured value when `None`).
fn dist_at(r: &RunData, epoch: Option<u32>) -> Option<f64> {
    match epoch {
        Some(e) => r
            .per_epoch
            .iter()
            .find(|s| s.epoch == Some(e))
            .and_then(|s| s.dist_end),
        None => r.whole.dist_end,
    }
}

fn last_epoch_with_dist(r: &RunData) -> Option<u32> {
    r.per_epoch
        .iter()
        .filter(|s| s.dist_end.is_some())
        .filter_map(|s| s.epoch)
        .max()
}

/// Mean height of θ_t above its floor after the first epoch (the initial descent, where every
/// step is downhill, would dominate a whole-run mean); the whole run for one-epoch runs.
pub fn late_height(r: &RunData) -> Option<f64> {
    let late: Vec<(f64, f64)> = r
        .per_epoch
        .iter()
        .filter(|s| s.epoch.is_some_and(|e| e > 1) && s.floors > 0)
        .filter_map(|s| s.height_start_mean.map(|h| (h, s.floors as f64)))
        .collect();
    let n: f64 = late.iter().map(|p| p.1).sum();
    if n > 0.0 {
        Some(late.iter().map(|p| p.0 * p.1).sum::<f64>() / n)
    } else {
        r.whole.height_start_mean
    }
}

/// λ_max at the last curvature step.
pub fn final_lambda(r: &RunData) -> Option<f64> {
    r.curvature
        .iter()
        .max_by_key(|p| p.step)
        .map(|p| p.lambda_max)
}

/// Spearman rank correlation (average ranks for ties); `None` for fewer than 3 pairs.
pub fn spearman(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() != ys.len() || xs.len() < 3 {
        return None;
    }
    let rank = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0;
            for k in i..=j {
                r[idx[k]] = avg;
            }
            i = j + 1;
        }
        r
    };
    let (rx, ry) = (rank(xs), rank(ys));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// Least-squares slope of log y on log x; `None` with fewer than 2 usable points.
fn log_slope(points: &[(f64, f64)]) -> Option<f64> {
    let p: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if p.len() < 2 {
        return None;
    }
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1).sum::<f64>() / n;
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Plain-SGD runs of one model and data grouped by the setting held fixed.
pub type Groups<'a> = BTreeMap<(String, String, String), Vec<&'a RunData>>;

/// The group's fixed setting: "mlp fashion-mnist batch 32" (lr varies) or "… lr 0.1".
fn group_title(model: &str, data: &str, first: &RunData, lr_varies: bool) -> String {
    if lr_varies {
        format!("{model} {data} batch {}", first.batch_label())
    } else {
        format!("{model} {data} lr {}", first.lr)
    }
}

/// One run in a group, by the setting that varies: "lr 0.1: 2.90" or "batch 32: 2.90".
fn member(r: &RunData, lr_varies: bool, value: &str) -> String {
    if lr_varies {
        format!("lr {}: {value}", r.lr)
    } else {
        format!("batch {}: {value}", r.batch_label())
    }
}

fn yes_no(test: Option<bool>) -> &'static str {
    test.map_or("–", |b| if b { "yes" } else { "no" })
}

/// Every group must pass; one group that cannot be measured makes the whole unmeasured.
fn and_strict(all: Option<bool>, test: Option<bool>) -> Option<bool> {
    match (all, test) {
        (Some(a), Some(b)) => Some(a && b),
        _ => None,
    }
}

/// Every measured group must pass; groups that cannot be measured are left out.
fn and_measured(all: &mut Option<bool>, test: Option<bool>) {
    if let Some(t) = test {
        *all = Some(all.unwrap_or(true) && t);
    }
}

/// Appends "\n<why>: run a (…), run b (…)." to the evidence when runs were left out of a verdict.
fn note_excluded(ev: &mut String, why: &str, runs: &[String]) {
    if !runs.is_empty() {
        let _ = writeln!(ev, "\n{why}: {}.", runs.join(", "));
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

// --- The claims' measurements, in the order of CLAIMS

fn interior_floors_minibatch(runs: &Runs<'_>) -> Finding {
    interior_floors(&runs.minibatch, "minibatch")
}

fn interior_floors_full_batch(runs: &Runs<'_>) -> Finding {
    interior_floors(&runs.full_batch, "full-batch")
}

/// Interior-floor share per epoch; held when above one half after the first epoch of every run
/// long enough to have a "most of training" ([`MIN_LATE_STEPS`]).
fn interior_floors(runs: &[&RunData], what: &str) -> Finding {
    let measured: Vec<&&RunData> = runs.iter().filter(|r| r.whole.floors > 0).collect();
    if measured.is_empty() {
        return Finding::not_measured(&format!(
            "No {what} run with valley floors (phase `floors`) was given."
        ));
    }
    let mut ev = String::from(
        "| run | epoch | steps | interior floor | NaN segments |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut verdict: Option<bool> = None;
    let mut too_short = Vec::new();
    for r in &measured {
        let late: Vec<(f64, f64)> = r
            .per_epoch
            .iter()
            .filter(|s| s.epoch.is_some_and(|e| e > 1) && s.floors > 0)
            .filter_map(|s| s.interior_share.map(|v| (v, s.floors as f64)))
            .collect();
        let n: f64 = late.iter().map(|p| p.1).sum();
        let judged = (n > 0.0).then(|| late.iter().map(|p| p.0 * p.1).sum::<f64>() / n);
        if n >= MIN_LATE_STEPS as f64 {
            and_measured(&mut verdict, Some(judged.is_some_and(|v| v > 0.5)));
        } else {
            too_short.push(format!("{} ({n} steps after the first epoch)", r.label));
        }
        // Full-batch runs have one step per epoch: per-epoch rows would be per-step rows.
        if r.steps_per_epoch > 1 {
            for s in r.per_epoch.iter().filter(|s| s.floors > 0) {
                let _ = writeln!(
                    ev,
                    "| {} | {} | {} | {} | {} |",
                    r.label,
                    s.epoch.map_or("–".into(), |e| e.to_string()),
                    s.floors,
                    pct(s.interior_share),
                    s.nonfinite_floors
                );
            }
        }
        let _ = writeln!(
            ev,
            "| **{}** | all | {} | {} | {} |",
            r.label,
            r.whole.floors,
            pct(r.whole.interior_share),
            r.whole.nonfinite_floors
        );
        if n > 0.0 {
            let _ = writeln!(
                ev,
                "| **{}** | after the first | {} | **{}** | |",
                r.label,
                n,
                pct(judged)
            );
        }
    }
    note_excluded(
        &mut ev,
        &format!(
            "Too short to judge \"most of training\" (needs two or more epochs and at least \
             {MIN_LATE_STEPS} steps with floors after the first)"
        ),
        &too_short,
    );
    if verdict.is_none() {
        return Finding {
            evidence: format!(
                "{ev}\nNot measured: too few steps after the first epoch in every {what} run."
            ),
            verdict: Verdict::NotMeasured,
        };
    }
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(verdict),
    }
}

/// C2: interior floors, negative median cos, both iterates above the floor.
fn bouncing_between_walls(runs: &Runs<'_>) -> Finding {
    let mut ev = String::from(
        "| run | median cos | cos < 0 | std cos | mean height θ_t | mean height θ_{t+1} | median α* |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut ok = true;
    let mut any = false;
    let mut too_short = Vec::new();
    for r in &runs.minibatch {
        if r.whole.cos_count == 0 || r.whole.floors == 0 {
            continue;
        }
        if r.whole.cos_count < MIN_STEPS || r.whole.floors < MIN_STEPS {
            too_short.push(format!(
                "{} ({} steps with floors, {} with a cosine)",
                r.label, r.whole.floors, r.whole.cos_count
            ));
            continue;
        }
        any = true;
        let w = &r.whole;
        let _ = writeln!(
            ev,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            fmt_opt(w.cos_median, 3),
            pct(w.cos_negative_share),
            fmt_opt(w.cos_std, 3),
            fmt_opt(w.height_start_mean, 4),
            fmt_opt(w.height_end_mean, 4),
            fmt_opt(w.alpha_star_median, 2)
        );
        ok &= w.interior_share.is_some_and(|v| v > 0.5)
            && w.cos_median.is_some_and(|c| c < 0.0)
            && w.height_start_mean.is_some_and(|h| h > 0.0)
            && w.height_end_mean.is_some_and(|h| h > 0.0);
    }
    note_excluded(
        &mut ev,
        &format!(
            "Too few steps to judge (needs at least {MIN_STEPS} with floors and with a cosine)"
        ),
        &too_short,
    );
    if !any {
        return Finding::not_measured(&if too_short.is_empty() {
            "Needs geometry and floors of a minibatch run.".to_string()
        } else {
            format!("Not measured: too few steps.\n{ev}")
        });
    }
    Finding {
        evidence: ev,
        verdict: if ok { Verdict::Held } else { Verdict::NotHeld },
    }
}

/// C3a: distance from initialization grows with the learning rate.
fn distance_by_lr(runs: &Runs<'_>) -> Finding {
    distance_from_init(runs, true)
}

/// C3b: distance from initialization shrinks as the batch grows.
fn distance_by_batch(runs: &Runs<'_>) -> Finding {
    distance_from_init(runs, false)
}

/// ‖θ − θ_0‖ at the last epoch every run of a group reached, monotone in the setting that
/// varies (lr: increasing; batch size: decreasing).
fn distance_from_init(runs: &Runs<'_>, lr_varies: bool) -> Finding {
    let g = if lr_varies {
        &runs.by_batch
    } else {
        &runs.by_lr
    };
    if g.is_empty() {
        return Finding::not_measured(
            "Needs two or more plain-SGD runs that differ only in this setting.",
        );
    }
    let mut ev = String::from(
        "| group | epoch | runs (distance from init) | monotone |\n| --- | ---: | --- | --- |\n",
    );
    let mut all = Some(true);
    for ((model, data, _), rs) in g {
        let epoch = rs.iter().map(|r| last_epoch_with_dist(r)).min().flatten();
        let ys: Vec<Option<f64>> = rs.iter().map(|r| dist_at(r, epoch)).collect();
        let m = monotone(&ys, if lr_varies { 1.0 } else { -1.0 });
        let items: Vec<String> = rs
            .iter()
            .zip(&ys)
            .map(|(r, y)| member(r, lr_varies, &fmt_opt(*y, 2)))
            .collect();
        let _ = writeln!(
            ev,
            "| {} | {} | {} | {} |",
            group_title(model, data, rs[0], lr_varies),
            epoch.map_or("–".into(), |e| e.to_string()),
            items.join(", "),
            yes_no(m)
        );
        all = and_strict(all, m);
    }
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(all),
    }
}

/// C3c: height above the floor grows with the learning rate.
fn height_by_lr(runs: &Runs<'_>) -> Finding {
    let g = &runs.by_batch;
    if g.is_empty() {
        return Finding::not_measured(
            "Needs two or more plain-SGD runs with floors that differ only in learning rate.",
        );
    }
    let mut ev = String::from(
        "| batch | runs (mean height after epoch 1; relative height over the run) | monotone |\n| --- | --- | --- |\n",
    );
    let mut all = Some(true);
    for ((model, data, b), rs) in g {
        let ys: Vec<Option<f64>> = rs.iter().map(|r| late_height(r)).collect();
        let m = monotone(&ys, 1.0);
        let items: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "lr {}: {} ({})",
                    r.lr,
                    fmt_opt(late_height(r), 4),
                    pct(r.whole.rel_height_mean)
                )
            })
            .collect();
        let _ = writeln!(
            ev,
            "| {model} {data} {b} | {} | {} |",
            items.join(", "),
            yes_no(m)
        );
        all = and_strict(all, m);
    }
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(all),
    }
}

/// Least-squares slopes of log y on log x, one per group that has two or more usable points.
fn group_slopes(g: &Groups<'_>, point: impl Fn(&RunData) -> Option<(f64, f64)>) -> Vec<f64> {
    g.values()
        .filter_map(|rs| {
            let p: Vec<(f64, f64)> = rs.iter().filter_map(|r| point(r)).collect();
            log_slope(&p)
        })
        .collect()
}

/// C3d: height elasticity to lr vs to batch size; noise (std of cos) by batch size.
fn roles_of_lr_and_batch(runs: &Runs<'_>) -> Finding {
    let batch = |r: &RunData| f64::from(r.batch_size.unwrap_or(0));
    let s_lr = group_slopes(&runs.by_batch, |r| late_height(r).map(|h| (r.lr, h)));
    let s_b = group_slopes(&runs.by_lr, |r| late_height(r).map(|h| (batch(r), h)));
    let noise = group_slopes(&runs.by_lr, |r| r.whole.cos_std.map(|s| (batch(r), s)));
    let (mlr, mb_) = (mean(&s_lr), mean(&s_b));
    let c3b_held = distance_by_batch(runs).verdict == Verdict::Held;
    let verdict = match (mlr, mb_) {
        (Some(a), Some(b)) if a.abs() > b.abs() && c3b_held => Verdict::Held,
        (Some(_), Some(_)) => Verdict::NotHeld,
        _ => Verdict::NotMeasured,
    };
    let evidence = format!(
        "| quantity | value |\n| --- | ---: |\n| height elasticity to lr (mean over {} batch sizes) | {} |\n\
         | height elasticity to batch size (mean over {} learning rates) | {} |\n\
         | elasticity of std cos(d_{{t−1}}, d_t) to batch size | {} |\n| C3b (distance grows as batch shrinks) | {} |\n",
        s_lr.len(),
        fmt_opt(mlr, 3),
        s_b.len(),
        fmt_opt(mb_, 3),
        fmt_opt(mean(&noise), 3),
        if c3b_held {
            "held"
        } else {
            "not held or not measured"
        }
    );
    Finding { evidence, verdict }
}

/// Segments and segments with a barrier of the minibatch runs, per path and stride.
#[derive(Default)]
struct BarrierTotals {
    /// Floor segments over every stride: (segments, with a barrier).
    floor: (u64, u64),
    /// stride → (segments, with a barrier).
    floor_by_stride: BTreeMap<u32, (u64, u64)>,
    iterate_by_stride: BTreeMap<u32, (u64, u64)>,
}

impl BarrierTotals {
    fn of(runs: &[&RunData]) -> Self {
        let mut t = BarrierTotals::default();
        for b in runs.iter().flat_map(|r| &r.barriers) {
            let e = if b.path == "floor" {
                t.floor.0 += b.segments;
                t.floor.1 += b.with_barrier;
                t.floor_by_stride.entry(b.stride).or_default()
            } else {
                t.iterate_by_stride.entry(b.stride).or_default()
            };
            e.0 += b.segments;
            e.1 += b.with_barrier;
        }
        t
    }
}

/// C4a: at least 1% of the floor segments have a barrier.
fn floor_barriers(runs: &Runs<'_>) -> Finding {
    let (seg, with) = BarrierTotals::of(&runs.minibatch).floor;
    if seg == 0 {
        return Finding::not_measured("Needs the `barriers` phase on a minibatch run.");
    }
    let mut ev = String::from(
        "| run | path | stride k | segments | with barrier | NaN | mean size (rel.) | max size (rel.) |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &runs.minibatch {
        for b in &r.barriers {
            let _ = writeln!(
                ev,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                b.path,
                b.stride,
                b.segments,
                b.with_barrier,
                b.nonfinite,
                pct(b.rel_mean),
                pct(b.rel_max)
            );
        }
    }
    let share = with as f64 / seg as f64;
    let _ = writeln!(
        ev,
        "\nAll minibatch runs: {with} of {seg} floor segments ({}) have a barrier.",
        pct(Some(share))
    );
    Finding {
        evidence: ev,
        verdict: if share >= 0.01 {
            Verdict::Held
        } else {
            Verdict::NotHeld
        },
    }
}

/// C4b: at every stride k > 1, fewer barriers along the iterates than along the floor.
fn iterates_avoid_barriers(runs: &Runs<'_>) -> Finding {
    let t = BarrierTotals::of(&runs.minibatch);
    let mut ev = String::from("| stride k | floor path | iterate path |\n| --- | ---: | ---: |\n");
    let mut verdict = None;
    for (k, (fs, fw)) in t.floor_by_stride.iter().filter(|(k, _)| **k > 1) {
        let Some((is, iw)) = t.iterate_by_stride.get(k) else {
            continue;
        };
        let (f, i) = (
            *fw as f64 / (*fs).max(1) as f64,
            *iw as f64 / (*is).max(1) as f64,
        );
        let _ = writeln!(
            ev,
            "| {k} | {} ({fw}/{fs}) | {} ({iw}/{is}) |",
            pct(Some(f)),
            pct(Some(i))
        );
        // Only strides where the floor has barriers say anything about avoiding them.
        and_measured(&mut verdict, (*fw > 0).then_some(i < f));
    }
    let evidence = match verdict {
        Some(_) => ev,
        None if t.floor_by_stride.keys().any(|k| *k > 1) => format!(
            "{ev}\nNo barrier was found along the floor at any stride k > 1: there is \
             nothing for the iterates to avoid on these runs."
        ),
        None => "Needs barriers at a stride k > 1 (`--strides 1,5`).".into(),
    };
    Finding {
        evidence,
        verdict: Verdict::from_test(verdict),
    }
}

/// C4c: λ_max at the end decreases with lr and increases with batch size.
fn flatter_with_lr_and_batch(runs: &Runs<'_>) -> Finding {
    let mut ev = String::from(
        "| group | λ_max at the last curvature step | flatter as expected |\n| --- | --- | --- |\n",
    );
    let mut all: Option<bool> = None;
    for (lr_varies, g, sign) in [(true, &runs.by_batch, -1.0), (false, &runs.by_lr, 1.0)] {
        for ((model, data, _), rs) in g {
            let ys: Vec<Option<f64>> = rs.iter().map(|r| final_lambda(r)).collect();
            let m = monotone(&ys, sign);
            let items: Vec<String> = rs
                .iter()
                .zip(&ys)
                .map(|(r, y)| member(r, lr_varies, &fmt_opt(*y, 2)))
                .collect();
            let _ = writeln!(
                ev,
                "| {} | {} | {} |",
                group_title(model, data, rs[0], lr_varies),
                items.join(", "),
                yes_no(m)
            );
            and_measured(&mut all, m);
        }
    }
    if all.is_none() {
        return Finding::not_measured(
            "Needs curvature of two or more plain-SGD runs differing in lr or batch size.",
        );
    }
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(all),
    }
}

/// C4d: rank correlation of final λ_max and final test accuracy across minibatch runs.
fn flatness_and_generalization(runs: &Runs<'_>) -> Finding {
    let pairs: Vec<(&RunData, f64, f64)> = runs
        .minibatch
        .iter()
        .filter_map(|r| {
            let l = final_lambda(r).filter(|v| v.is_finite())?;
            let a = r.final_eval("test")?.accuracy;
            a.is_finite().then_some((*r, l, a))
        })
        .collect();
    let xs: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let ys: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let rho = spearman(&xs, &ys);
    let mut ev = String::from(
        "| run | λ_max (last) | test accuracy | train − test accuracy |\n| --- | ---: | ---: | ---: |\n",
    );
    for (r, l, a) in &pairs {
        let gap = r.final_eval("train").map(|t| t.accuracy - a);
        let _ = writeln!(
            ev,
            "| {} | {l:.2} | {} | {} |",
            r.label,
            pct(Some(*a)),
            pct(gap)
        );
    }
    let _ = writeln!(
        ev,
        "\nSpearman ρ(λ_max, test accuracy) over {} runs: {}",
        pairs.len(),
        fmt_opt(rho, 3)
    );
    Finding {
        evidence: ev,
        verdict: match rho {
            None => Verdict::NotMeasured,
            Some(r) if r < 0.0 => Verdict::Held,
            Some(_) => Verdict::NotHeld,
        },
    }
}

/// C5: λ_max at the last curvature step below the first one after θ_0.
fn lambda_max_decreases(runs: &Runs<'_>) -> Finding {
    let mut ev = String::from(
        "| run | first (step) | last (step) | decreased |\n| --- | --- | --- | --- |\n",
    );
    let mut all: Option<bool> = None;
    let mut too_few = Vec::new();
    for r in &runs.minibatch {
        let pts: Vec<_> = r.curvature.iter().filter(|p| p.step > 0).collect();
        let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
            continue;
        };
        if pts.len() < MIN_CURVATURE_POINTS {
            too_few.push(format!("{} ({} after θ_0)", r.label, pts.len()));
            continue;
        }
        let dec = last.lambda_max < first.lambda_max;
        let _ = writeln!(
            ev,
            "| {} | {:.2} ({}) | {:.2} ({}) | {} |",
            r.label,
            first.lambda_max,
            first.step,
            last.lambda_max,
            last.step,
            if dec { "yes" } else { "no" }
        );
        and_measured(&mut all, Some(dec));
    }
    if all.is_none() {
        let mut why = format!(
            "Needs curvature at {MIN_CURVATURE_POINTS} or more steps after θ_0 (two points are \
             no trend)."
        );
        if !too_few.is_empty() {
            let _ = write!(why, " Too few: {}.", too_few.join(", "));
        }
        return Finding::not_measured(&why);
    }
    note_excluded(
        &mut ev,
        &format!("Too few curvature steps to judge (needs {MIN_CURVATURE_POINTS} after θ_0)"),
        &too_few,
    );
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(all),
    }
}

/// C6: ‖θ − θ_0‖ at the end of each epoch increases.
fn distance_grows_early(runs: &Runs<'_>) -> Finding {
    let mut ev = String::from(
        "| run | ‖θ − θ_0‖ at the end of each epoch | increasing |\n| --- | --- | --- |\n",
    );
    let mut all: Option<bool> = None;
    for r in runs.all {
        let ys: Vec<Option<f64>> = r
            .per_epoch
            .iter()
            .filter(|s| s.dist_end.is_some())
            .map(|s| s.dist_end)
            .collect();
        if ys.len() < 2 {
            continue;
        }
        let m = monotone(&ys, 1.0);
        let items: Vec<String> = ys.iter().map(|y| fmt_opt(*y, 2)).collect();
        let _ = writeln!(
            ev,
            "| {} | {} | {} |",
            r.label,
            items.join(" → "),
            yes_no(m)
        );
        and_measured(&mut all, m);
    }
    if all.is_none() {
        return Finding::not_measured("Needs geometry over two or more epochs.");
    }
    Finding {
        evidence: ev,
        verdict: Verdict::from_test(all),
    }
}

/// C7: every GD+noise run ends below the median plain-SGD test accuracy.
fn isotropic_noise_falls_short(runs: &Runs<'_>) -> Finding {
    let mut sgd_acc: Vec<f64> = runs
        .sgd
        .iter()
        .filter_map(|r| r.final_eval("test").map(|e| e.accuracy))
        .filter(|a| a.is_finite())
        .collect();
    sgd_acc.sort_by(f64::total_cmp);
    let median = (!sgd_acc.is_empty()).then(|| sgd_acc[sgd_acc.len() / 2]);
    let mut ev = String::from(
        "| run | noise std per coordinate | noise norm (σ·√P) | steps | final train loss | test accuracy |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &runs.full_batch {
        let _ = writeln!(
            ev,
            "| {} | {} | {:.3} | {} | {} | {} |",
            r.label,
            r.noise_std,
            r.noise_std * (r.trainable_params as f64).sqrt(),
            r.total_steps,
            fmt_opt(r.final_eval("train").map(|e| e.loss), 4),
            pct(r.final_eval("test").map(|e| e.accuracy))
        );
    }
    let _ = writeln!(
        ev,
        "\nMedian final test accuracy of the plain-SGD runs: {}",
        pct(median)
    );
    let noisy: Vec<&&RunData> = runs
        .full_batch
        .iter()
        .filter(|r| r.kind == RunKind::GdNoise)
        .collect();
    let verdict = match (noisy.is_empty(), median) {
        (false, Some(m)) => {
            let worse = noisy
                .iter()
                .all(|r| r.final_eval("test").is_some_and(|e| e.accuracy < m));
            if worse {
                Verdict::Held
            } else {
                Verdict::NotHeld
            }
        }
        _ => Verdict::NotMeasured,
    };
    Finding {
        evidence: ev,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::report::load::{BarrierStats, CurvPoint, EpochEval, EpochStats};

    fn run(
        label: &str,
        lr: f64,
        batch: u32,
        dist: f64,
        height: f64,
        lambda: f64,
        acc: f64,
    ) -> RunData {
        let stats = |epoch| EpochStats {
            epoch,
            floors: 100,
            interior_share: Some(0.9),
            height_start_mean: Some(height),
            height_end_mean: Some(height / 2.0),
            cos_count: 100,
            cos_median: Some(-0.3),
            cos_std: Some(0.2),
            dist_end: Some(if epoch == Some(1) { dist / 2.0 } else { dist }),
            ..Default::default()
        };
        RunData {
            dir: label.into(),
            label: label.into(),
            kind: RunKind::Sgd,
            model: "mlp".into(),
            dataset: "fashion-mnist".into(),
            lr,
            batch_size: Some(batch),
            noise_std: 0.0,
            steps_per_epoch: 10,
            epochs: 2,
            total_steps: 20,
            trainable_params: 100,
            eval_set: "probe:100".into(),
            bn_policy: "train-mode".into(),
            geometry_scope: "params",
            per_epoch: vec![stats(Some(1)), stats(Some(2))],
            whole: stats(None),
            barriers: vec![
                BarrierStats {
                    path: "floor".into(),
                    stride: 5,
                    segments: 50,
                    with_barrier: 5,
                    rel_mean: Some(0.01),
                    rel_max: Some(0.02),
                    nonfinite: 0,
                },
                BarrierStats {
                    path: "iterate".into(),
                    stride: 5,
                    segments: 50,
                    with_barrier: 1,
                    rel_mean: Some(0.01),
                    rel_max: Some(0.01),
                    nonfinite: 0,
                },
            ],
            geometry: vec![],
            floors: vec![],
            interp: vec![],
            floor_barriers: vec![],
            curvature: vec![
                CurvPoint {
                    step: 5,
                    epoch: Some(1),
                    lambda_max: lambda * 2.0,
                    trace: None,
                },
                CurvPoint {
                    step: 12,
                    epoch: Some(2),
                    lambda_max: lambda * 1.5,
                    trace: None,
                },
                CurvPoint {
                    step: 20,
                    epoch: Some(2),
                    lambda_max: lambda,
                    trace: None,
                },
            ],
            evals: vec![EpochEval {
                epoch: 2,
                split: "test".into(),
                loss: 0.5,
                accuracy: acc,
            }],
        }
    }

    fn verdict(claims: &[Assessed], id: &str) -> Verdict {
        claims.iter().find(|c| c.id == id).unwrap().verdict
    }

    #[test]
    fn a_grid_that_behaves_as_the_paper_holds_every_claim() {
        // Distance and height grow with lr and shrink with batch; flatter with larger lr and
        // smaller batch; flatter runs generalize better.
        let mut runs = Vec::new();
        for (lr, b) in [(0.1, 32u32), (0.01, 32), (0.1, 128), (0.01, 128)] {
            let scale = lr * 100.0 / f64::from(b).sqrt();
            runs.push(run(
                &format!("lr{lr}-b{b}"),
                lr,
                b,
                10.0 * scale,
                lr,
                10.0 / scale,
                0.8 + scale / 100.0,
            ));
        }
        let c = assess(&runs, 1e-3);
        for id in [
            "C1", "C2", "C3a", "C3b", "C3c", "C4a", "C4b", "C4c", "C4d", "C5", "C6",
        ] {
            assert_eq!(verdict(&c, id), Verdict::Held, "{id}");
        }
        // Height depends on lr only, so the roles differ.
        assert_eq!(verdict(&c, "C3d"), Verdict::Held);
        // No GD runs given.
        assert_eq!(verdict(&c, "C1-GD"), Verdict::NotMeasured);
        assert_eq!(verdict(&c, "C7"), Verdict::NotMeasured);
        let md = crate::report::markdown::markdown(&runs, &c, Some("made on a test"), &[], 1e-3);
        assert!(md.contains("made on a test"));
        assert!(md.contains("| C3a A larger learning rate"));
    }

    #[test]
    fn contrary_numbers_give_not_held_and_nan_is_not_a_pass() {
        let mut a = run("a", 0.1, 32, 5.0, 0.01, 1.0, 0.8);
        let b = run("b", 0.01, 32, 9.0, 0.02, 1.0, 0.8);
        a.whole.interior_share = Some(0.3);
        a.per_epoch[1].interior_share = Some(0.3);
        let c = assess(&[a.clone(), b.clone()], 1e-3);
        assert_eq!(verdict(&c, "C1"), Verdict::NotHeld);
        // The first epoch (the initial descent) alone does not decide it.
        let mut early = b.clone();
        early.per_epoch[0].interior_share = Some(0.1);
        assert_eq!(verdict(&assess(&[early], 1e-3), "C1"), Verdict::Held);
        // Larger lr travelled less here.
        assert_eq!(verdict(&c, "C3a"), Verdict::NotHeld);
        assert_eq!(verdict(&c, "C3c"), Verdict::NotHeld);
        // A NaN distance is not evidence either way.
        let mut a2 = a;
        for s in a2.per_epoch.iter_mut() {
            s.dist_end = Some(f64::NAN);
        }
        let c = assess(&[a2, b], 1e-3);
        assert_eq!(verdict(&c, "C3a"), Verdict::NotMeasured);
    }

    #[test]
    fn too_little_data_is_not_measured_and_says_the_minimum() {
        // One epoch: every step is the initial descent, so "most of training" has no data.
        let mut one = run("one", 0.1, 32, 5.0, 0.01, 1.0, 0.8);
        one.per_epoch.truncate(1);
        one.epochs = 1;
        one.whole.interior_share = Some(0.1);
        let c = assess(std::slice::from_ref(&one), 1e-3);
        let c1 = c.iter().find(|a| a.id == "C1").unwrap();
        assert_eq!(c1.verdict, Verdict::NotMeasured, "{}", c1.evidence);
        assert!(c1.evidence.contains("at least 10 steps"), "{}", c1.evidence);
        // Too few steps after the first epoch, too.
        let mut short = run("short", 0.1, 32, 5.0, 0.01, 1.0, 0.8);
        short.per_epoch[1].floors = 4;
        short.per_epoch[1].interior_share = Some(0.0);
        assert_eq!(
            verdict(&assess(std::slice::from_ref(&short), 1e-3), "C1"),
            Verdict::NotMeasured
        );
        // Two curvature measurements are no trend.
        let mut two = run("two", 0.1, 32, 5.0, 0.01, 1.0, 0.8);
        two.curvature.remove(1);
        let c = assess(std::slice::from_ref(&two), 1e-3);
        let c5 = c.iter().find(|a| a.id == "C5").unwrap();
        assert_eq!(c5.verdict, Verdict::NotMeasured);
        assert!(c5.evidence.contains("3 or more"), "{}", c5.evidence);
        // A few steps do not make a whole-run share.
        let mut few = run("few", 0.1, 32, 5.0, 0.01, 1.0, 0.8);
        few.whole.cos_count = 3;
        assert_eq!(
            verdict(&assess(std::slice::from_ref(&few), 1e-3), "C2"),
            Verdict::NotMeasured
        );
        // Full batch: one step per epoch, so no per-"epoch" rows in the evidence.
        let mut gd = run("gd", 0.5, 32, 5.0, 0.01, 1.0, 0.8);
        gd.kind = RunKind::Gd;
        gd.batch_size = None;
        gd.steps_per_epoch = 1;
        gd.epochs = 30;
        gd.per_epoch = (1..=30)
            .map(|e| EpochStats {
                epoch: Some(e),
                floors: 1,
                interior_share: Some(1.0),
                ..Default::default()
            })
            .collect();
        let c = assess(std::slice::from_ref(&gd), 1e-3);
        let gd1 = c.iter().find(|a| a.id == "C1-GD").unwrap();
        assert_eq!(gd1.verdict, Verdict::Held, "{}", gd1.evidence);
        assert!(!gd1.evidence.contains("| gd | 7 |"), "{}", gd1.evidence);
        let md = crate::report::markdown::markdown(&[gd], &c, None, &[], 1e-3);
        assert!(!md.contains("| gd | 7 |"), "{md}");
    }

    #[test]
    fn the_claim_table_has_unique_ids_and_fills_in_the_threshold() {
        let mut ids: Vec<&str> = CLAIMS.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CLAIMS.len());
        for c in CLAIMS {
            let rule = c.rule(0.0123);
            assert!(!rule.contains(BARRIER_THRESHOLD_PCT), "{}: {rule}", c.id);
            assert!(
                !rule.contains("  ") && !c.statement.contains("  "),
                "{}",
                c.id
            );
        }
        let c4a = CLAIMS.iter().find(|c| c.id == "C4a").unwrap();
        assert!(c4a.rule(1e-3).contains("exceeds 0.10% of the higher end"));
    }

    #[test]
    fn spearman_and_slopes() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]),
            Some(0.8)
        );
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        let s = log_slope(&[(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]).unwrap();
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(monotone(&[Some(1.0), Some(2.0)], 1.0), Some(true));
        assert_eq!(monotone(&[Some(1.0), None], 1.0), None);
    }
}
