//! Loss barriers along a straight segment A → B, sampled at α ∈ [0, 1] (paper.md §2.3,
//! overview §4), and the interpolation helpers that build the segment's points, e.g. valley-floor
//! points v_t = θ_t + α*_t·d_t.
//!
//! Definitions, over the grid points with 0 ≤ α ≤ 1 (points outside are ignored; α = 0 and
//! α = 1 must be on the grid since they are A and B):
//! - `loss_max` = max L(α), `alpha_at_max` its first argmax;
//! - `barrier_max` = `loss_max` − max(L(0), L(1)) (the standard barrier; ≥ 0);
//! - `barrier_linear` = max over α of L(α) − ((1−α)L(0) + αL(1)) (excess over the chord; ≥ 0),
//!   `alpha_at_max_linear` its first argmax.
//!
//! Any NaN or infinite loss in [0, 1] makes every derived value NaN (never hidden by `max`).

/// Grid points are matched to α = 0 and 1 with this absolute slack.
const GRID_MATCH_EPS: f64 = 1e-9;

/// Barrier statistics of one segment; field names follow the `barriers` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Barrier {
    /// Grid points used (those with 0 ≤ α ≤ 1).
    pub points: u32,
    pub loss_start: f64,
    pub loss_end: f64,
    pub loss_max: f64,
    pub barrier_max: f64,
    pub barrier_linear: f64,
    pub alpha_at_max: f64,
    pub alpha_at_max_linear: f64,
}

/// Invalid barrier input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    #[error("{alphas_len} alphas but {losses_len} losses")]
    LengthMismatch {
        alphas_len: usize,
        losses_len: usize,
    },
    /// α = 0 or α = 1 is not a grid point.
    #[error("segment endpoint alpha {alpha} is not on the grid")]
    EndpointMissing { alpha: f64 },
    #[error("alpha grid is not finite and strictly increasing at index {index}")]
    UnsortedAlphas { index: usize },
    #[error("buffer lengths differ: from {from_len}, to {to_len}, out {out_len}")]
    BufferLenMismatch {
        from_len: usize,
        to_len: usize,
        out_len: usize,
    },
}

/// Barrier statistics of the curve `losses` sampled at `alphas` (strictly increasing).
pub fn barrier(alphas: &[f64], losses: &[f64]) -> Result<Barrier, BarrierError> {
    if alphas.len() != losses.len() {
        return Err(BarrierError::LengthMismatch {
            alphas_len: alphas.len(),
            losses_len: losses.len(),
        });
    }
    if let Some(index) = alphas
        .iter()
        .enumerate()
        .position(|(i, a)| !a.is_finite() || (i > 0 && *a <= alphas[i - 1]))
    {
        return Err(BarrierError::UnsortedAlphas { index });
    }
    let find = |target: f64| {
        alphas
            .iter()
            .position(|a| (a - target).abs() <= GRID_MATCH_EPS)
            .ok_or(BarrierError::EndpointMissing { alpha: target })
    };
    let (i0, i1) = (find(0.0)?, find(1.0)?);
    let (l0, l1) = (losses[i0], losses[i1]);
    let inside = i0..=i1;
    let points = u32::try_from(inside.clone().count()).unwrap_or(u32::MAX);
    if losses[inside.clone()].iter().any(|l| !l.is_finite()) {
        return Ok(Barrier {
            points,
            loss_start: l0,
            loss_end: l1,
            loss_max: f64::NAN,
            barrier_max: f64::NAN,
            barrier_linear: f64::NAN,
            alpha_at_max: f64::NAN,
            alpha_at_max_linear: f64::NAN,
        });
    }
    let (mut loss_max, mut alpha_at_max) = (l0, 0.0);
    let (mut excess_max, mut alpha_at_max_linear) = (0.0, 0.0);
    for i in inside {
        // Use exact 0 and 1 at the endpoints so the chord is exactly zero there.
        let a = if i == i0 {
            0.0
        } else if i == i1 {
            1.0
        } else {
            alphas[i]
        };
        let l = losses[i];
        if l > loss_max {
            (loss_max, alpha_at_max) = (l, a);
        }
        let excess = l - ((1.0 - a) * l0 + a * l1);
        if excess > excess_max {
            (excess_max, alpha_at_max_linear) = (excess, a);
        }
    }
    Ok(Barrier {
        points,
        loss_start: l0,
        loss_end: l1,
        loss_max,
        barrier_max: loss_max - l0.max(l1),
        barrier_linear: excess_max,
        alpha_at_max,
        alpha_at_max_linear,
    })
}

/// out = (1−α)·from + α·to, element-wise in f64, rounded once to f32. Exact at α = 0 and
/// α = 1 (out equals `from` / `to` bit for bit), so interpolation endpoints evaluate to exactly
/// the loaded states.
pub fn interpolate_into(
    from: &[f32],
    to: &[f32],
    alpha: f64,
    out: &mut [f32],
) -> Result<(), BarrierError> {
    if from.len() != to.len() || from.len() != out.len() {
        return Err(BarrierError::BufferLenMismatch {
            from_len: from.len(),
            to_len: to.len(),
            out_len: out.len(),
        });
    }
    // The ends are copied, not computed: exact even where a state holds inf or NaN.
    if alpha == 0.0 {
        out.copy_from_slice(from);
        return Ok(());
    }
    if alpha == 1.0 {
        out.copy_from_slice(to);
        return Ok(());
    }
    let keep = 1.0 - alpha;
    for ((o, &x), &y) in out.iter_mut().zip(from).zip(to) {
        // One rounding to f32, the type the states are stored in.
        *o = (keep * f64::from(x) + alpha * f64::from(y)) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 / (n - 1) as f64).collect()
    }

    #[test]
    fn bump_of_known_height() {
        // Linear from 1 to 2 plus a bump of height 0.5 at α = 0.5.
        let alphas = grid(11);
        let f = |a: f64| 1.0 + a + 0.5 * (-((a - 0.5) / 0.05f64).powi(2)).exp();
        let losses: Vec<f64> = alphas.iter().map(|&a| f(a)).collect();
        let b = barrier(&alphas, &losses).unwrap();
        assert_eq!(b.points, 11);
        assert_eq!((b.loss_start, b.loss_end), (losses[0], losses[10]));
        assert!((b.loss_max - 2.0).abs() < 1e-12);
        assert_eq!(b.alpha_at_max, 0.5);
        assert!((b.barrier_max - (2.0 - f(1.0))).abs() < 1e-12);
        assert!(
            b.barrier_max.abs() < 1e-3,
            "max sits at about the endpoint's level"
        );
        assert!(
            (b.barrier_linear - 0.5).abs() < 1e-9,
            "{}",
            b.barrier_linear
        );
        assert_eq!(b.alpha_at_max_linear, 0.5);
    }

    #[test]
    fn flat_endpoints_with_bump() {
        let alphas = grid(5);
        let losses = [1.0, 1.2, 1.7, 1.1, 1.0];
        let b = barrier(&alphas, &losses).unwrap();
        assert!((b.barrier_max - 0.7).abs() < 1e-12);
        assert!((b.barrier_linear - 0.7).abs() < 1e-12);
        assert_eq!((b.alpha_at_max, b.alpha_at_max_linear), (0.5, 0.5));
    }

    #[test]
    fn convex_and_linear_curves_have_no_barrier() {
        let alphas = grid(11);
        let convex: Vec<f64> = alphas.iter().map(|a| (a - 0.3f64).powi(2)).collect();
        let b = barrier(&alphas, &convex).unwrap();
        assert_eq!(b.barrier_max, 0.0);
        assert_eq!(b.barrier_linear, 0.0);
        assert_eq!(b.alpha_at_max, 1.0);
        let linear: Vec<f64> = alphas.iter().map(|a| 2.0 - a).collect();
        let b = barrier(&alphas, &linear).unwrap();
        assert_eq!((b.barrier_max, b.alpha_at_max), (0.0, 0.0));
        assert!(b.barrier_linear.abs() < 1e-15);
    }

    #[test]
    fn points_outside_the_segment_are_ignored() {
        let alphas = [-0.5, 0.0, 0.5, 1.0, 1.5];
        let losses = [100.0, 1.0, 2.0, 1.0, 100.0];
        let b = barrier(&alphas, &losses).unwrap();
        assert_eq!(b.points, 3);
        assert_eq!(b.loss_max, 2.0);
        assert_eq!(b.barrier_max, 1.0);
    }

    #[test]
    fn nan_makes_everything_nan() {
        let b = barrier(&grid(3), &[1.0, f64::NAN, 1.0]).unwrap();
        assert!(b.loss_max.is_nan() && b.barrier_max.is_nan() && b.barrier_linear.is_nan());
        assert!(b.alpha_at_max.is_nan() && b.alpha_at_max_linear.is_nan());
        assert_eq!(b.loss_start, 1.0);
    }

    #[test]
    fn input_errors() {
        assert_eq!(
            barrier(&[0.0, 0.5], &[1.0, 1.0]),
            Err(BarrierError::EndpointMissing { alpha: 1.0 })
        );
        assert_eq!(
            barrier(&[0.0, 1.0], &[1.0]),
            Err(BarrierError::LengthMismatch {
                alphas_len: 2,
                losses_len: 1
            })
        );
        assert_eq!(
            barrier(&[0.0, 1.0, 0.5], &[1.0; 3]),
            Err(BarrierError::UnsortedAlphas { index: 2 })
        );
        let mut out = [0.0f32; 2];
        assert_eq!(
            interpolate_into(&[1.0; 2], &[1.0; 3], 0.5, &mut out),
            Err(BarrierError::BufferLenMismatch {
                from_len: 2,
                to_len: 3,
                out_len: 2
            })
        );
    }

    #[test]
    fn interpolation_is_exact_at_the_ends() {
        let a = [0.1f32, -3.7e-8, 1e30, f32::MIN_POSITIVE, 123.456];
        let b = [7.0f32, 2.5e-9, -1e30, 0.3, -0.001];
        let mut out = [0.0f32; 5];
        interpolate_into(&a, &b, 0.0, &mut out).unwrap();
        assert_eq!(out.map(f32::to_bits), a.map(f32::to_bits));
        interpolate_into(&a, &b, 1.0, &mut out).unwrap();
        assert_eq!(out.map(f32::to_bits), b.map(f32::to_bits));
        interpolate_into(&[0.0, 2.0], &[1.0, 4.0], 0.25, &mut out[..2]).unwrap();
        assert_eq!(&out[..2], &[0.25, 2.5]);
    }

    #[test]
    fn floor_points() {
        // A valley-floor point v_t = θ_t + α*_t·(θ_{t+1} − θ_t).
        let theta = [1.0f32, 2.0, 3.0];
        let next = [2.0f32, 2.0, 1.0];
        let mut v = [0.0f32; 3];
        interpolate_into(&theta, &next, 0.37, &mut v).unwrap();
        assert_eq!(v, [1.37, 2.0, 2.26]);
    }
}
