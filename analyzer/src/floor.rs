//! Valley floor of one interpolation curve L(α) = L(θ_t + α·d_t) (paper.md §2.2, overview §4).
//!
//! Input: the grid the curve was evaluated on, plus an evaluator for extra points. Output: the
//! refined minimiser α*, L(α*), the heights of both ends above it, and a shape class.
//!
//! Steps, in order:
//! 1. **Ends.** L(0) and L(1) come from the grid when α = 0 or 1 is a grid point; otherwise they
//!    are evaluated. An evaluated end that lies inside the grid's range joins the grid (it is a
//!    legitimate point of the curve); one outside only serves the heights.
//! 2. **Non-finite.** If any grid loss (or end, or refinement loss) is NaN or ±inf, nothing is
//!    refined and the floor is NaN: `alpha_star`, `loss_at_floor`, both heights and
//!    `grid_argmin_alpha` are NaN, shape [`Shape::Nonfinite`], `converged = false`. A diverged
//!    step thus stays visible instead of being reported at some finite point of its curve.
//! 3. **Shape**, from the (augmented) grid, after merging runs of equal losses: the number of
//!    strict local minima, ends included (an end is a local minimum when its neighbour is
//!    higher). One minimum at α_min → [`Shape::MonotoneUp`]; at α_max → [`Shape::MonotoneDown`];
//!    inside → [`Shape::InteriorMin`] (the paper's valley); two or more → [`Shape::MultiMin`];
//!    a constant curve → [`Shape::Flat`].
//! 4. **Refinement** by Brent's method (parabolic steps with golden-section fallback) inside the
//!    bracket [α_{i−1}, α_{i+1}] around the grid argmin i (clamped at the grid's ends), seeded
//!    with the three grid points, until the bracket around the best point is within
//!    `alpha_tolerance` on both sides, or `max_evaluations` is reached (`converged = false`).
//!    The floor is the best of all points seen, so `loss_at_floor` ≤ every grid loss. For
//!    `multi_min` curves the bracket is around the global grid minimum.

use std::fmt;

/// Shape class of an interpolation curve, as written to the `floors` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One strict local minimum, strictly inside the grid.
    InteriorMin,
    /// The only local minimum is at the right end (the loss keeps falling along d_t).
    MonotoneDown,
    /// The only local minimum is at the left end (the loss rises along d_t).
    MonotoneUp,
    /// More than one strict local minimum (ends included).
    MultiMin,
    /// All grid losses equal.
    Flat,
    /// A NaN or infinite loss; no floor is reported.
    Nonfinite,
}

impl Shape {
    /// The string stored in the `shape` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::InteriorMin => "interior_min",
            Shape::MonotoneDown => "monotone_down",
            Shape::MonotoneUp => "monotone_up",
            Shape::MultiMin => "multi_min",
            Shape::Flat => "flat",
            Shape::Nonfinite => "nonfinite",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of the refinement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloorOptions {
    /// Stop when the minimiser is bracketed within this distance on both sides.
    pub alpha_tolerance: f64,
    /// Cap on evaluator calls (ends included). Each is a full pass over the evaluation set.
    pub max_evaluations: u32,
}

impl Default for FloorOptions {
    fn default() -> Self {
        Self {
            alpha_tolerance: 1e-3,
            max_evaluations: 30,
        }
    }
}

/// The valley floor of one step; field names follow the `floors` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValleyFloor {
    pub alpha_star: f64,
    pub loss_at_floor: f64,
    /// L(α = 0), i.e. at θ_t.
    pub loss_start: f64,
    /// L(α = 1), i.e. at θ_{t+1}.
    pub loss_end: f64,
    /// L(0) − L*.
    pub height_start: f64,
    /// L(1) − L*.
    pub height_end: f64,
    pub shape: Shape,
    pub grid_argmin_alpha: f64,
    /// The α tolerance the refinement aimed for.
    pub tolerance: f64,
    /// Evaluator calls made (ends and refinement).
    pub evaluations: u32,
    /// The refinement reached the tolerance (trivially true when the grid spacing already does).
    pub converged: bool,
}

/// Why no floor could be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FloorError<E: std::error::Error + 'static> {
    #[error("{alphas_len} alphas but {losses_len} losses")]
    LengthMismatch {
        alphas_len: usize,
        losses_len: usize,
    },
    #[error("a valley floor needs at least 2 grid points, got {points}")]
    TooFewPoints { points: usize },
    /// Alphas must be finite and strictly increasing.
    #[error("alpha grid is not finite and strictly increasing at index {index}")]
    UnsortedAlphas { index: usize },
    #[error("invalid options: alpha_tolerance must be positive and finite, got {alpha_tolerance}")]
    InvalidTolerance { alpha_tolerance: f64 },
    #[error("loss evaluation failed at alpha {alpha}")]
    Evaluator {
        alpha: f64,
        #[source]
        source: E,
    },
}

/// Grid points are matched to α = 0 and 1 with this absolute slack (grids come from
/// `lo + i·step` arithmetic).
const GRID_MATCH_EPS: f64 = 1e-9;

/// Counts evaluator calls and enforces the cap.
struct Counted<F> {
    f: F,
    evaluations: u32,
}

impl<F> Counted<F> {
    fn call<E: std::error::Error + 'static>(&mut self, alpha: f64) -> Result<f64, FloorError<E>>
    where
        F: FnMut(f64) -> Result<f64, E>,
    {
        self.evaluations += 1;
        (self.f)(alpha).map_err(|source| FloorError::Evaluator { alpha, source })
    }
}

/// Computes the valley floor of the curve sampled at `alphas` (strictly increasing) with
/// `losses`, using `evaluate(α)` for the ends (if off-grid) and the refinement.
pub fn valley_floor<E, F>(
    alphas: &[f64],
    losses: &[f64],
    evaluate: F,
    options: &FloorOptions,
) -> Result<ValleyFloor, FloorError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(f64) -> Result<f64, E>,
{
    if alphas.len() != losses.len() {
        return Err(FloorError::LengthMismatch {
            alphas_len: alphas.len(),
            losses_len: losses.len(),
        });
    }
    if alphas.len() < 2 {
        return Err(FloorError::TooFewPoints {
            points: alphas.len(),
        });
    }
    if let Some(index) = alphas
        .iter()
        .enumerate()
        .position(|(i, a)| !a.is_finite() || (i > 0 && *a <= alphas[i - 1]))
    {
        return Err(FloorError::UnsortedAlphas { index });
    }
    let tol = options.alpha_tolerance;
    if !(tol.is_finite() && tol > 0.0) {
        return Err(FloorError::InvalidTolerance {
            alpha_tolerance: tol,
        });
    }

    let mut grid: Vec<(f64, f64)> = alphas.iter().copied().zip(losses.iter().copied()).collect();
    let mut eval = Counted {
        f: evaluate,
        evaluations: 0,
    };
    let nonfinite = |start: f64, end: f64, evaluations: u32| ValleyFloor {
        alpha_star: f64::NAN,
        loss_at_floor: f64::NAN,
        loss_start: start,
        loss_end: end,
        height_start: f64::NAN,
        height_end: f64::NAN,
        shape: Shape::Nonfinite,
        grid_argmin_alpha: f64::NAN,
        tolerance: tol,
        evaluations,
        converged: false,
    };

    // Ends: a diverged curve is not evaluated further.
    let grid_finite = grid.iter().all(|(_, l)| l.is_finite());
    let mut ends = [f64::NAN; 2];
    for (slot, target) in ends.iter_mut().zip([0.0, 1.0]) {
        if let Some(&(_, l)) = grid
            .iter()
            .find(|(a, _)| (a - target).abs() <= GRID_MATCH_EPS)
        {
            *slot = l;
        } else if grid_finite {
            let l = eval.call(target)?;
            *slot = l;
            let (lo, hi) = (grid[0].0, grid[grid.len() - 1].0);
            if target > lo && target < hi {
                let at = grid.partition_point(|(a, _)| *a < target);
                grid.insert(at, (target, l));
            }
        }
    }
    let [loss_start, loss_end] = ends;
    if !grid_finite || !loss_start.is_finite() || !loss_end.is_finite() {
        return Ok(nonfinite(loss_start, loss_end, eval.evaluations));
    }

    let shape = classify(&grid);
    let imin = argmin(&grid);
    let grid_argmin_alpha = grid[imin].0;

    // Bracket and seed points: the argmin and its grid neighbours.
    let lo = imin.saturating_sub(1);
    let hi = (imin + 1).min(grid.len() - 1);
    let seeds = [grid[lo], grid[hi]];
    let outcome = brent(
        &mut eval, grid[lo].0, grid[hi].0, grid[imin], seeds, options,
    )?;
    let (alpha_star, loss_at_floor, converged) = match outcome {
        Some(o) => o,
        None => return Ok(nonfinite(loss_start, loss_end, eval.evaluations)),
    };
    Ok(ValleyFloor {
        alpha_star,
        loss_at_floor,
        loss_start,
        loss_end,
        height_start: loss_start - loss_at_floor,
        height_end: loss_end - loss_at_floor,
        shape,
        grid_argmin_alpha,
        tolerance: tol,
        evaluations: eval.evaluations,
        converged,
    })
}

/// Index of the smallest loss (first on ties). Losses are finite here.
fn argmin(grid: &[(f64, f64)]) -> usize {
    let mut best = 0;
    for (i, &(_, l)) in grid.iter().enumerate() {
        if l < grid[best].1 {
            best = i;
        }
    }
    best
}

/// Shape from the strict local minima of the curve with runs of equal values merged.
fn classify_losses(losses: &[f64]) -> Shape {
    if losses.iter().any(|l| !l.is_finite()) {
        return Shape::Nonfinite;
    }
    // Runs of equal values, each with its first and last index.
    let mut runs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, &l) in losses.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if run.0 == l => run.2 = i,
            _ => runs.push((l, i, i)),
        }
    }
    if runs.len() <= 1 {
        return Shape::Flat;
    }
    let n = runs.len();
    let minima: Vec<usize> = (0..n)
        .filter(|&k| {
            let left_higher = k == 0 || runs[k - 1].0 > runs[k].0;
            let right_higher = k == n - 1 || runs[k + 1].0 > runs[k].0;
            left_higher && right_higher
        })
        .collect();
    match minima.as_slice() {
        [0] => Shape::MonotoneUp,
        [k] if *k == n - 1 => Shape::MonotoneDown,
        [_] => Shape::InteriorMin,
        _ => Shape::MultiMin,
    }
}

fn classify(grid: &[(f64, f64)]) -> Shape {
    let losses: Vec<f64> = grid.iter().map(|&(_, l)| l).collect();
    classify_losses(&losses)
}

/// (3 − √5)/2: the golden-section fraction.
const GOLDEN_FRACTION: f64 = 0.381_966_011_250_105_1;

/// Brent's minimisation on [a, b] from the best known point `x` and two other known points.
/// Returns (α*, L*, converged), or `None` when the evaluator returned a non-finite loss.
fn brent<E, F>(
    eval: &mut Counted<F>,
    mut a: f64,
    mut b: f64,
    (mut x, mut fx): (f64, f64),
    seeds: [(f64, f64); 2],
    options: &FloorOptions,
) -> Result<Option<(f64, f64, bool)>, FloorError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(f64) -> Result<f64, E>,
{
    let tol = options.alpha_tolerance;
    // w: second best point, v: previous w. Seeded from the grid neighbours so the first step can
    // already be parabolic.
    let (mut w, mut fw, mut v, mut fv) = {
        let [s0, s1] = seeds;
        let (better, worse) = if s0.1 <= s1.1 { (s0, s1) } else { (s1, s0) };
        (better.0, better.1, worse.0, worse.1)
    };
    // `e`: step before last; starting at the bracket width lets the first parabolic step through.
    let mut e = b - a;
    let mut d = 0.0;
    // Half of the minimum step, so that probes are never closer than `tol` to known points.
    let tol1 = tol * 0.5;
    loop {
        let m = 0.5 * (a + b);
        // Converged once the bracket around x is within tol on both sides.
        if x - a <= tol && b - x <= tol {
            return Ok(Some((x, fx, true)));
        }
        if eval.evaluations >= options.max_evaluations {
            return Ok(Some((x, fx, false)));
        }
        let mut golden = true;
        if e.abs() > tol1 {
            // Parabola through (x, fx), (w, fw), (v, fv): its vertex is x + p/q.
            let r = (x - w) * (fx - fv);
            let mut q = (x - v) * (fx - fw);
            let mut p = (x - v) * q - (x - w) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            } else {
                q = -q;
            }
            let e_before = e;
            // Accept only a step inside (a, b) and smaller than half the step before last, which
            // guarantees progress like bisection would.
            if q != 0.0
                && p.abs() < (0.5 * q * e_before).abs()
                && p > q * (a - x)
                && p < q * (b - x)
            {
                e = d;
                d = p / q;
                let u = x + d;
                if u - a < 2.0 * tol1 || b - u < 2.0 * tol1 {
                    d = tol1.copysign(m - x);
                }
                golden = false;
            }
        }
        if golden {
            e = if x >= m { a - x } else { b - x };
            d = GOLDEN_FRACTION * e;
        }
        let u = if d.abs() >= tol1 {
            x + d
        } else {
            x + tol1.copysign(d)
        };
        let fu = eval.call(u)?;
        if !fu.is_finite() {
            return Ok(None);
        }
        if fu <= fx {
            if u >= x {
                a = x;
            } else {
                b = x;
            }
            (v, fv, w, fw, x, fx) = (w, fw, x, fx, u, fu);
        } else {
            if u < x {
                a = u;
            } else {
                b = u;
            }
            if fu <= fw || w == x {
                (v, fv, w, fw) = (w, fw, u, fu);
            } else if fu <= fv || v == x || v == w {
                (v, fv) = (u, fu);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn grid(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
            .collect()
    }

    fn run(f: impl Fn(f64) -> f64, alphas: &[f64], opts: &FloorOptions) -> (ValleyFloor, Vec<f64>) {
        let losses: Vec<f64> = alphas.iter().map(|&a| f(a)).collect();
        let mut probes = Vec::new();
        let floor = valley_floor::<Infallible, _>(
            alphas,
            &losses,
            |a| {
                probes.push(a);
                Ok(f(a))
            },
            opts,
        )
        .unwrap();
        (floor, probes)
    }

    #[test]
    fn quadratic_floor_and_heights() {
        let f = |a: f64| (a - 0.37).powi(2) + 1.0;
        let opts = FloorOptions::default();
        let (fl, probes) = run(f, &grid(11, 0.0, 1.0), &opts);
        assert_eq!(fl.shape, Shape::InteriorMin);
        assert!(
            (fl.alpha_star - 0.37).abs() <= opts.alpha_tolerance,
            "{fl:?}"
        );
        assert!((fl.loss_at_floor - 1.0).abs() < 1e-6);
        assert_eq!(fl.loss_start, f(0.0));
        assert_eq!(fl.loss_end, f(1.0));
        assert!((fl.height_start - 0.37f64.powi(2)).abs() < 1e-6);
        assert!((fl.height_end - 0.63f64.powi(2)).abs() < 1e-6);
        assert!((fl.grid_argmin_alpha - 0.4).abs() < 1e-12);
        assert!(fl.converged);
        assert_eq!(fl.evaluations as usize, probes.len());
        // A parabola is fitted exactly: Brent needs very few evaluations.
        assert!(fl.evaluations <= 6, "{} evaluations", fl.evaluations);
        assert!(
            probes.iter().all(|&a| (0.3..=0.5).contains(&a)),
            "probes outside bracket"
        );
        assert_eq!(fl.tolerance, 1e-3);
    }

    #[test]
    fn non_parabolic_valley_converges() {
        // Asymmetric: steep left wall, shallow right; minimum at α = 0.2 + 0.05 = 0.25.
        let f = |a: f64| (a - 0.25).abs().powf(1.5) * if a < 0.25 { 20.0 } else { 1.0 } + 2.0;
        let opts = FloorOptions {
            alpha_tolerance: 1e-4,
            max_evaluations: 60,
        };
        let (fl, _) = run(f, &grid(11, 0.0, 1.0), &opts);
        assert_eq!(fl.shape, Shape::InteriorMin);
        assert!(fl.converged);
        assert!((fl.alpha_star - 0.25).abs() <= 1e-4, "{fl:?}");
    }

    #[test]
    fn monotone_cases() {
        let (down, _) = run(|a| 3.0 - a, &grid(11, 0.0, 1.0), &FloorOptions::default());
        assert_eq!(down.shape, Shape::MonotoneDown);
        assert!((down.alpha_star - 1.0).abs() <= 1e-3);
        assert_eq!(down.loss_at_floor, 2.0);
        assert_eq!(down.height_end, 0.0);
        assert_eq!(down.height_start, 1.0);
        let (up, _) = run(
            |a| 1.0 + a * a,
            &grid(11, 0.0, 1.0),
            &FloorOptions::default(),
        );
        assert_eq!(up.shape, Shape::MonotoneUp);
        assert_eq!(up.alpha_star, 0.0);
        assert_eq!(up.height_start, 0.0);
        assert!(up.converged);
    }

    #[test]
    fn min_near_an_end_is_refined_inside_the_first_interval() {
        // True minimum at 0.03, between grid points 0 and 0.1; grid argmin is α = 0.
        let f = |a: f64| (a - 0.03).powi(2);
        let (fl, _) = run(f, &grid(11, 0.0, 1.0), &FloorOptions::default());
        assert_eq!(fl.shape, Shape::MonotoneUp);
        assert_eq!(fl.grid_argmin_alpha, 0.0);
        assert!((fl.alpha_star - 0.03).abs() <= 1e-3);
        assert!(fl.loss_at_floor < f(0.0));
    }

    #[test]
    fn multi_min() {
        // Two wells on the grid, global at 0.8.
        let f = |a: f64| ((a - 0.2).powi(2) + 0.1).min((a - 0.8).powi(2));
        let (fl, _) = run(f, &grid(11, 0.0, 1.0), &FloorOptions::default());
        assert_eq!(fl.shape, Shape::MultiMin);
        assert!((fl.alpha_star - 0.8).abs() <= 1e-3);
        assert_eq!(classify_losses(&[1.0, 0.5, 0.9, 0.4]), Shape::MultiMin);
    }

    #[test]
    fn classify_cases() {
        assert_eq!(classify_losses(&[2.0, 1.0, 1.0, 3.0]), Shape::InteriorMin); // flat bottom
        assert_eq!(classify_losses(&[1.0, 1.0, 2.0]), Shape::MonotoneUp);
        assert_eq!(classify_losses(&[3.0, 2.0, 2.0]), Shape::MonotoneDown);
        assert_eq!(classify_losses(&[2.0, 2.0, 2.0]), Shape::Flat);
        assert_eq!(classify_losses(&[1.0, 2.0, 2.0, 1.5, 3.0]), Shape::MultiMin);
        assert_eq!(classify_losses(&[1.0, f64::INFINITY]), Shape::Nonfinite);
        assert_eq!(Shape::InteriorMin.to_string(), "interior_min");
    }

    #[test]
    fn nan_grid_gives_nan_floor() {
        let alphas = grid(5, 0.0, 1.0);
        let losses = [1.0, 0.5, f64::NAN, 0.7, 1.0];
        let mut calls = 0;
        let fl = valley_floor::<Infallible, _>(
            &alphas,
            &losses,
            |_| {
                calls += 1;
                Ok(0.0)
            },
            &FloorOptions::default(),
        )
        .unwrap();
        assert_eq!(calls, 0);
        assert_eq!(fl.shape, Shape::Nonfinite);
        assert!(fl.alpha_star.is_nan() && fl.loss_at_floor.is_nan() && fl.height_start.is_nan());
        assert!(fl.grid_argmin_alpha.is_nan());
        assert_eq!((fl.loss_start, fl.loss_end), (1.0, 1.0));
        assert!(!fl.converged);
        assert_eq!(fl.evaluations, 0);
    }

    #[test]
    fn nan_during_refinement_gives_nan_floor() {
        let alphas = grid(11, 0.0, 1.0);
        let losses: Vec<f64> = alphas.iter().map(|a| (a - 0.37f64).powi(2)).collect();
        let fl = valley_floor::<Infallible, _>(
            &alphas,
            &losses,
            |_| Ok(f64::NAN),
            &FloorOptions::default(),
        )
        .unwrap();
        assert_eq!(fl.shape, Shape::Nonfinite);
        assert!(fl.loss_at_floor.is_nan());
        assert_eq!(fl.evaluations, 1);
    }

    #[test]
    fn off_grid_ends_are_evaluated() {
        // Paper grid: 0, 0.1, …, 0.9 (α = 1 missing) → L(1) evaluated, outside the range.
        let f = |a: f64| (a - 0.37).powi(2) + 1.0;
        let alphas: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        let (fl, probes) = run(f, &alphas, &FloorOptions::default());
        assert_eq!(probes[0], 1.0);
        assert_eq!(fl.loss_end, f(1.0));
        assert!((fl.alpha_star - 0.37).abs() <= 1e-3);
        // Wide grid without 0 and 1: both evaluated and merged into the grid.
        let alphas = grid(5, -0.45, 1.55);
        let (fl, probes) = run(|a| (a - 0.02).powi(2), &alphas, &FloorOptions::default());
        assert_eq!(&probes[..2], &[0.0, 1.0]);
        assert_eq!(fl.grid_argmin_alpha, 0.0);
        assert!((fl.alpha_star - 0.02).abs() <= 1e-3);
        assert_eq!(fl.shape, Shape::InteriorMin);
    }

    #[test]
    fn fine_grid_needs_no_refinement() {
        let (fl, probes) = run(
            |a| (a - 0.5).powi(2),
            &grid(2001, 0.0, 1.0),
            &FloorOptions::default(),
        );
        assert!(probes.is_empty());
        assert!(fl.converged);
        assert_eq!(fl.alpha_star, 0.5);
    }

    #[test]
    fn evaluation_cap_is_reported() {
        let opts = FloorOptions {
            alpha_tolerance: 1e-9,
            max_evaluations: 3,
        };
        let (fl, probes) = run(|a| (a - 0.3333).abs(), &grid(11, 0.0, 1.0), &opts);
        assert_eq!(probes.len(), 3);
        assert!(!fl.converged);
        assert!(fl.loss_at_floor <= 0.0333 + 1e-12);
    }

    #[test]
    fn input_errors() {
        let ok = |_: f64| Ok::<f64, std::io::Error>(0.0);
        let o = FloorOptions::default();
        assert!(matches!(
            valley_floor(&[0.0, 1.0], &[1.0], ok, &o),
            Err(FloorError::LengthMismatch {
                alphas_len: 2,
                losses_len: 1
            })
        ));
        assert!(matches!(
            valley_floor(&[0.0], &[1.0], ok, &o),
            Err(FloorError::TooFewPoints { points: 1 })
        ));
        assert!(matches!(
            valley_floor(&[0.0, 0.5, 0.5], &[1.0; 3], ok, &o),
            Err(FloorError::UnsortedAlphas { index: 2 })
        ));
        let bad = FloorOptions {
            alpha_tolerance: 0.0,
            ..o
        };
        assert!(matches!(
            valley_floor(&[0.0, 1.0], &[1.0, 2.0], ok, &bad),
            Err(FloorError::InvalidTolerance { .. })
        ));
        let failing = |a: f64| -> Result<f64, std::io::Error> {
            Err(std::io::Error::other(format!("no data at {a}")))
        };
        let err = valley_floor(&[0.0, 0.5, 1.0], &[1.0, 0.0, 1.0], failing, &o).unwrap_err();
        assert!(matches!(err, FloorError::Evaluator { .. }));
        assert!(
            err.to_string()
                .starts_with("loss evaluation failed at alpha")
        );
    }
}
