//! Geometry of the trajectory on flat `f32` state vectors: [`GeometryTracker`] streams states in
//! step order and produces the per-step rows of the `steps` table (‖d_t‖, cos(d_{t−1}, d_t),
//! ‖θ_t − θ_0‖, ‖θ_t‖), whole-vector and per layer.
//!
//! Everything accumulates in `f64`: a state holds millions of `f32` values and an `f32` sum would
//! lose several digits. Sums run over [`LANES`] independent accumulators so the compiler can
//! vectorise them; the summation order is fixed, so results are deterministic. The unit tests
//! check the tracker against plain whole-vector norms, distances and cosines (`mod reference`).
//!
//! Cosines here are exact (`⟨a,b⟩ / (‖a‖‖b‖)`, `None` for a zero vector). The paper's script adds
//! `1e−6` to the denominator (paper.md §2.4); that only matters for near-zero updates and is not
//! reproduced.
//!
//! The tracker splits each push over rayon's pool in fixed spans. Measured with 11M-element states
//! and 60 layers on a shared 2-core VM (release, copy included): 44 ms per push on one thread
//! (1.0 GB/s of state; a push reads four states, so it is memory-bound), 33 ms on two.

use std::ops::Range;

use rayon::prelude::*;

/// Number of independent accumulators in the reduction kernels.
pub const LANES: usize = 8;

/// Elements per parallel work item of [`GeometryTracker`] (1 MiB of each f32 state: large
/// enough to amortise scheduling, small enough to balance a few big layers over many cores).
pub const SPAN_LEN: usize = 1 << 18;

/// A layer: its name and the element ranges it owns in the flat state vector.
pub type Layer = (String, Vec<Range<usize>>);

/// Errors from [`validate_layers`] and [`GeometryTracker`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A layer range reaches past the end of the state vector.
    #[error("layer {layer:?} range {start}..{end} is out of bounds for a state of length {len}")]
    RangeOutOfBounds {
        layer: String,
        start: usize,
        end: usize,
        len: usize,
    },
    /// Two layer ranges share elements (the total would count them twice).
    #[error("layers {first:?} and {second:?} overlap at element {element}")]
    OverlappingLayers {
        first: String,
        second: String,
        element: usize,
    },
    /// A state pushed into [`GeometryTracker`] has the wrong length.
    #[error("state of step {step} has {got_len} elements, expected {expected_len}")]
    StateLenMismatch {
        step: u64,
        expected_len: usize,
        got_len: usize,
    },
    /// Steps pushed into [`GeometryTracker`] must strictly increase.
    #[error("step {step} pushed after step {previous_step}; steps must strictly increase")]
    StepNotIncreasing { step: u64, previous_step: u64 },
}

/// Cosine from a dot product and two squared norms; `None` if either norm is zero. NaN inputs
/// give `Some(NaN)` so a diverged run stays visible. Clamped to [−1, 1] against rounding.
pub fn cosine_from_parts(dot: f64, norm_sq_a: f64, norm_sq_b: f64) -> Option<f64> {
    if norm_sq_a == 0.0 || norm_sq_b == 0.0 {
        return None;
    }
    Some((dot / (norm_sq_a.sqrt() * norm_sq_b.sqrt())).clamp(-1.0, 1.0))
}

/// Checks that every range lies within `len` and that no element belongs to two ranges.
pub fn validate_layers(layers: &[Layer], len: usize) -> Result<(), MetricsError> {
    let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, layer index)
    for (i, (name, ranges)) in layers.iter().enumerate() {
        for r in ranges {
            if r.start > r.end || r.end > len {
                return Err(MetricsError::RangeOutOfBounds {
                    layer: name.clone(),
                    start: r.start,
                    end: r.end,
                    len,
                });
            }
            if !r.is_empty() {
                spans.push((r.start, r.end, i));
            }
        }
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.0 < a.1 {
            return Err(MetricsError::OverlappingLayers {
                first: layers[a.2].0.clone(),
                second: layers[b.2].0.clone(),
                element: b.0,
            });
        }
    }
    Ok(())
}

/// What the `total` row of [`GeometryTracker`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotalScope {
    /// Every element of the state vector, including elements in no layer (e.g. BN buffers).
    #[default]
    AllElements,
    /// Only elements owned by a layer (e.g. to match the paper, whose distance uses parameters
    /// only: pass the parameter tensors as layers).
    LayersOnly,
}

/// Geometry of one step t, for one layer or the whole state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerGeometry {
    /// ‖d_t‖ = ‖θ_{t+1} − θ_t‖; `None` if step t+1 was not pushed.
    pub update_norm: Option<f64>,
    /// cos(d_{t−1}, d_t); `None` unless t−1, t, t+1 were all pushed, or if an update is zero.
    pub cos_prev_update: Option<f64>,
    /// ‖θ_t − θ_0‖; `None` until θ_0 is known.
    pub dist_from_init: Option<f64>,
    /// ‖θ_t‖.
    pub param_norm: f64,
}

/// One output row of [`GeometryTracker`]: step t, whole state and per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct StepGeometry {
    pub step: u64,
    /// Over the scope chosen by [`TotalScope`].
    pub total: LayerGeometry,
    /// Same order as the tracker's layers ([`GeometryTracker::layer_names`]).
    pub per_layer: Vec<LayerGeometry>,
}

/// Squared-sum accumulators of the fused tracker kernel, for one span of elements.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    update_sq: f64,
    dot_prev: f64,
    param_sq: f64,
    dist_sq: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.update_sq += o.update_sq;
        self.dot_prev += o.dot_prev;
        self.param_sq += o.param_sq;
        self.dist_sq += o.dist_sq;
    }
}

/// One pass over the four states the tracker needs. Callers pass `cur` for a missing
/// `prev`/`init` and `next` for a missing `cur`, which zeroes the corresponding terms instead of
/// branching in the loop.
fn fused_sums(prev: &[f32], cur: &[f32], next: &[f32], init: &[f32]) -> Sums {
    let mut up = [0.0f64; LANES];
    let mut dp = [0.0f64; LANES];
    let mut pn = [0.0f64; LANES];
    let mut di = [0.0f64; LANES];
    let mut cp = prev.chunks_exact(LANES);
    let mut cc = cur.chunks_exact(LANES);
    let mut cx = next.chunks_exact(LANES);
    let mut cz = init.chunks_exact(LANES);
    // Zipped fixed-size chunks: no bounds checks, so the lane loop vectorises.
    for (((p, c), x), z) in (&mut cp).zip(&mut cc).zip(&mut cx).zip(&mut cz) {
        for k in 0..LANES {
            let (p, c, x, z) = (
                f64::from(p[k]),
                f64::from(c[k]),
                f64::from(x[k]),
                f64::from(z[k]),
            );
            let (u, v) = (c - p, x - c);
            up[k] += v * v;
            dp[k] += u * v;
            pn[k] += x * x;
            di[k] += (x - z) * (x - z);
        }
    }
    let mut s = Sums {
        update_sq: up.iter().sum(),
        dot_prev: dp.iter().sum(),
        param_sq: pn.iter().sum(),
        dist_sq: di.iter().sum(),
    };
    let tails = cp
        .remainder()
        .iter()
        .zip(cc.remainder())
        .zip(cx.remainder())
        .zip(cz.remainder());
    for (((&p, &c), &x), &z) in tails {
        let (p, c, x, z) = (f64::from(p), f64::from(c), f64::from(x), f64::from(z));
        let (u, v) = (c - p, x - c);
        s.update_sq += v * v;
        s.dot_prev += u * v;
        s.param_sq += x * x;
        s.dist_sq += (x - z) * (x - z);
    }
    s
}

/// A row waiting for the next state (to know ‖d_t‖).
#[derive(Debug, Clone)]
struct Pending {
    step: u64,
    /// Per layer, then total (last).
    rows: Vec<LayerGeometry>,
}

/// Streams states in step order and yields one [`StepGeometry`] per pushed step.
///
/// The row of step t needs θ_{t+1}, so [`push`](Self::push) returns the row of the *previous*
/// pushed step, and [`finish`](Self::finish) returns the last one. Only consecutive steps form
/// updates: after a gap (t+1 missing) step t gets no update norm, and the next pushed step
/// starts a fresh chain (its row has an update norm once its successor arrives, and a cosine
/// only from the chain's second step on).
///
/// θ_0 is the state pushed as step 0, or the one given to [`set_init`](Self::set_init) (a shard
/// starting mid-run can materialise θ_0 separately). Memory: up to four state vectors.
#[derive(Debug, Clone)]
pub struct GeometryTracker {
    layers: Vec<Layer>,
    /// Work items of the fused kernel: (slot, range) with slot = layer index, or
    /// `layers.len()` for elements in no layer (only with [`TotalScope::AllElements`]); every
    /// range at most [`SPAN_LEN`] long.
    spans: Vec<(usize, Range<usize>)>,
    len: usize,
    init: Option<Vec<f32>>,
    /// Last pushed state and its step.
    cur: Option<(u64, Vec<f32>)>,
    /// State of step `cur.0 − 1`, only while it is the consecutive predecessor.
    prev: Option<Vec<f32>>,
    /// ‖d_{t−1}‖² per layer then total, where t = `cur.0`; valid with `prev`.
    prev_update_sq: Vec<f64>,
    pending: Option<Pending>,
    /// Recycled allocation for the next state copy.
    spare: Vec<f32>,
}

impl GeometryTracker {
    /// A tracker for states of `len` elements split into `layers` (disjoint ranges).
    pub fn new(layers: Vec<Layer>, len: usize, scope: TotalScope) -> Result<Self, MetricsError> {
        validate_layers(&layers, len)?;
        let mut covered: Vec<Range<usize>> = layers
            .iter()
            .flat_map(|(_, r)| r.iter().cloned())
            .filter(|r| !r.is_empty())
            .collect();
        covered.sort_unstable_by_key(|r| r.start);
        let mut uncovered = Vec::new();
        let mut at = 0;
        for r in &covered {
            if r.start > at {
                uncovered.push(at..r.start);
            }
            at = r.end;
        }
        if at < len {
            uncovered.push(at..len);
        }
        let mut spans = Vec::new();
        let mut add = |slot: usize, r: &Range<usize>| {
            let mut start = r.start;
            while start < r.end {
                let end = (start + SPAN_LEN).min(r.end);
                spans.push((slot, start..end));
                start = end;
            }
        };
        for (i, (_, ranges)) in layers.iter().enumerate() {
            ranges.iter().for_each(|r| add(i, r));
        }
        if scope == TotalScope::AllElements {
            uncovered.iter().for_each(|r| add(layers.len(), r));
        }
        let n_rows = layers.len() + 1;
        Ok(Self {
            layers,
            spans,
            len,
            init: None,
            cur: None,
            prev: None,
            prev_update_sq: vec![0.0; n_rows],
            pending: None,
            spare: Vec::new(),
        })
    }

    /// Layer names, in the order of [`StepGeometry::per_layer`].
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(n, _)| n.as_str())
    }

    /// Sets θ_0 explicitly. Rows already pending keep the value they had.
    pub fn set_init(&mut self, init: &[f32]) -> Result<(), MetricsError> {
        if init.len() != self.len {
            return Err(MetricsError::StateLenMismatch {
                step: 0,
                expected_len: self.len,
                got_len: init.len(),
            });
        }
        self.init = Some(init.to_vec());
        Ok(())
    }

    /// Feeds θ_step (copied into a recycled buffer). Returns the finished row of the
    /// previously pushed step, if any.
    pub fn push(&mut self, step: u64, state: &[f32]) -> Result<Option<StepGeometry>, MetricsError> {
        self.check(step, state.len())?;
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.extend_from_slice(state);
        self.push_owned(step, buf)
    }

    /// Like [`push`](Self::push) but takes ownership of the state, saving a copy (a copy is a
    /// third of the memory traffic of a push).
    pub fn push_owned(
        &mut self,
        step: u64,
        state: Vec<f32>,
    ) -> Result<Option<StepGeometry>, MetricsError> {
        self.check(step, state.len())?;
        if step == 0 && self.init.is_none() {
            self.init = Some(state.clone());
        }
        let consecutive = matches!(&self.cur, Some((s, _)) if *s + 1 == step);
        if !consecutive {
            self.prev = None;
        }
        let per_layer = self.sums(&state, consecutive);
        // Finish the pending row of the previous step.
        let has_prev = self.prev.is_some();
        let finished = self.pending.take().map(|mut p| {
            if consecutive {
                for ((row, s), prev_sq) in
                    p.rows.iter_mut().zip(&per_layer).zip(&self.prev_update_sq)
                {
                    row.update_norm = Some(s.update_sq.sqrt());
                    row.cos_prev_update = if has_prev {
                        cosine_from_parts(s.dot_prev, *prev_sq, s.update_sq)
                    } else {
                        None
                    };
                }
            }
            into_step_geometry(p)
        });

        let have_init = self.init.is_some();
        self.pending = Some(Pending {
            step,
            rows: per_layer
                .iter()
                .map(|s| LayerGeometry {
                    update_norm: None,
                    cos_prev_update: None,
                    dist_from_init: have_init.then(|| s.dist_sq.sqrt()),
                    param_norm: s.param_sq.sqrt(),
                })
                .collect(),
        });

        // Rotate buffers: cur becomes prev (only if consecutive), the new state becomes cur.
        let old_cur = self.cur.replace((step, state));
        if consecutive {
            for (slot, s) in self.prev_update_sq.iter_mut().zip(&per_layer) {
                *slot = s.update_sq;
            }
            if let Some(old_prev) = self.prev.take() {
                self.spare = old_prev;
            }
            self.prev = old_cur.map(|(_, v)| v);
        } else if let Some((_, v)) = old_cur {
            self.spare = v;
        }
        Ok(finished)
    }

    fn check(&self, step: u64, got_len: usize) -> Result<(), MetricsError> {
        if got_len != self.len {
            return Err(MetricsError::StateLenMismatch {
                step,
                expected_len: self.len,
                got_len,
            });
        }
        match &self.cur {
            Some((previous_step, _)) if step <= *previous_step => {
                Err(MetricsError::StepNotIncreasing {
                    step,
                    previous_step: *previous_step,
                })
            }
            _ => Ok(()),
        }
    }

    /// Fused sums per layer, then the total (last). Spans run in parallel on rayon's pool and
    /// are combined in span order, so results do not depend on the thread count.
    fn sums(&self, state: &[f32], consecutive: bool) -> Vec<Sums> {
        // Substitutes that zero the missing terms (see `fused_sums`).
        let cur_state: &[f32] = match (&self.cur, consecutive) {
            (Some((_, c)), true) => c,
            _ => state,
        };
        let prev_state: &[f32] = self.prev.as_deref().unwrap_or(cur_state);
        let init_state: &[f32] = self.init.as_deref().unwrap_or(state);
        let partial: Vec<Sums> = self
            .spans
            .par_iter()
            .map(|(_, r)| {
                fused_sums(
                    &prev_state[r.clone()],
                    &cur_state[r.clone()],
                    &state[r.clone()],
                    &init_state[r.clone()],
                )
            })
            .collect();
        let mut slots = vec![Sums::default(); self.layers.len() + 1];
        for ((slot, _), s) in self.spans.iter().zip(&partial) {
            slots[*slot].add(s);
        }
        // The last slot holds the uncovered elements; turn it into the total.
        let (layer_slots, total) = slots.split_at_mut(self.layers.len());
        for s in layer_slots.iter() {
            total[0].add(s);
        }
        slots
    }

    /// Returns the row of the last pushed step (no update: its successor is unknown).
    pub fn finish(&mut self) -> Option<StepGeometry> {
        self.prev = None;
        self.cur = None;
        self.pending.take().map(into_step_geometry)
    }
}

fn into_step_geometry(mut p: Pending) -> StepGeometry {
    let total = p.rows.pop().unwrap_or_default();
    StepGeometry {
        step: p.step,
        total,
        per_layer: p.rows,
    }
}

/// Straightforward whole-vector norms, dot products, distances and cosines (f64 sums over
/// [`LANES`] accumulators, like the tracker's kernel): the references the tracker is tested
/// against. Nothing outside the tests needs them.
#[cfg(test)]
mod reference {
    use super::{LANES, cosine_from_parts};

    /// Panics with a clear message; used by the flat two-vector functions whose callers build both
    /// vectors from the same model layout, so a mismatch is a programming error.
    pub(super) fn assert_same_len(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "vector lengths differ");
    }

    /// Σ f(a_i) in f64 over [`LANES`] accumulators.
    #[inline]
    pub(super) fn reduce1(a: &[f32], f: impl Fn(f64) -> f64) -> f64 {
        let mut acc = [0.0f64; LANES];
        let mut chunks = a.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (slot, &x) in acc.iter_mut().zip(chunk) {
                *slot += f(f64::from(x));
            }
        }
        let mut tail = 0.0;
        for &x in chunks.remainder() {
            tail += f(f64::from(x));
        }
        acc.iter().sum::<f64>() + tail
    }

    /// Σ f(a_i, b_i) in f64 over [`LANES`] accumulators. Lengths must already be equal.
    #[inline]
    pub(super) fn reduce2(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
        let mut acc = [0.0f64; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (xa, xb) in (&mut ca).zip(&mut cb) {
            for ((slot, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
                *slot += f(f64::from(x), f64::from(y));
            }
        }
        let mut tail = 0.0;
        for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += f(f64::from(x), f64::from(y));
        }
        acc.iter().sum::<f64>() + tail
    }

    /// ‖a‖².
    pub(super) fn norm_sq(a: &[f32]) -> f64 {
        reduce1(a, |x| x * x)
    }

    /// ‖a‖.
    pub(super) fn norm(a: &[f32]) -> f64 {
        norm_sq(a).sqrt()
    }

    /// ⟨a, b⟩.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f64 {
        assert_same_len(a, b);
        reduce2(a, b, |x, y| x * y)
    }

    /// ‖a − b‖², with the difference taken in f64 (exact for f32 inputs of similar magnitude).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(super) fn distance_sq(a: &[f32], b: &[f32]) -> f64 {
        assert_same_len(a, b);
        reduce2(a, b, |x, y| (x - y) * (x - y))
    }

    /// ‖a − b‖.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(super) fn distance(a: &[f32], b: &[f32]) -> f64 {
        distance_sq(a, b).sqrt()
    }

    /// cos(a, b) = ⟨a,b⟩ / (‖a‖‖b‖); `None` if either vector is zero.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(super) fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
        assert_same_len(a, b);
        let mut acc = [0.0f64; 3];
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            acc[0] += x * y;
            acc[1] += x * x;
            acc[2] += y * y;
        }
        cosine_from_parts(acc[0], acc[1], acc[2])
    }
}

#[cfg(test)]
mod tests {
    use super::reference::*;
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * (1.0 + a.abs().max(b.abs()))
    }

    /// A layer made of one range.
    fn one(r: Range<usize>) -> Vec<Range<usize>> {
        vec![r]
    }

    /// Straightforward reference implementations, no lanes.
    fn ref_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    #[test]
    fn basic_values() {
        let a = [3.0f32, 4.0];
        let b = [4.0f32, -3.0];
        assert_eq!(norm(&a), 5.0);
        assert_eq!(norm_sq(&a), 25.0);
        assert_eq!(dot(&a, &b), 0.0);
        assert_eq!(cosine(&a, &b), Some(0.0));
        assert_eq!(cosine(&a, &a), Some(1.0));
        assert_eq!(cosine(&a, &[-3.0, -4.0]), Some(-1.0));
        assert_eq!(distance(&a, &b), 50f64.sqrt());
        assert_eq!(norm(&[]), 0.0);
    }

    #[test]
    fn cosine_of_zero_vector_is_none() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), None);
        assert_eq!(cosine(&[1.0, 2.0], &[0.0, 0.0]), None);
    }

    #[test]
    fn nan_is_not_hidden() {
        let a = [1.0, f32::NAN];
        assert!(norm(&a).is_nan());
        assert!(cosine(&a, &[1.0, 1.0]).is_some_and(f64::is_nan));
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn dot_length_mismatch_panics() {
        let _ = dot(&[1.0], &[1.0, 2.0]);
    }

    #[test]
    fn accumulates_in_f64() {
        // 1e7 ones plus tiny values: an f32 accumulator stalls at 2^24.
        let a = vec![1.0f32; 20_000_001];
        assert_eq!(norm_sq(&a), 20_000_001.0);
    }

    fn two_layers() -> Vec<Layer> {
        vec![("a".into(), vec![0..2, 5..6]), ("b".into(), one(2..4))]
    }

    #[test]
    fn layer_errors() {
        assert_eq!(
            validate_layers(&[("w".to_string(), one(0..10))], 4),
            Err(MetricsError::RangeOutOfBounds {
                layer: "w".into(),
                start: 0,
                end: 10,
                len: 4
            })
        );
        let overlapping = vec![("a".to_string(), one(0..3)), ("b".to_string(), one(2..4))];
        assert_eq!(
            validate_layers(&overlapping, 4),
            Err(MetricsError::OverlappingLayers {
                first: "a".into(),
                second: "b".into(),
                element: 2
            })
        );
        assert!(validate_layers(&two_layers(), 6).is_ok());
    }

    /// Direct computation of a row for the tracker tests.
    fn direct_row(states: &[Option<Vec<f32>>], t: usize, init: Option<&[f32]>) -> LayerGeometry {
        let s = states[t].as_ref().unwrap();
        let next = states.get(t + 1).and_then(|x| x.as_ref());
        let prev = t.checked_sub(1).and_then(|p| states[p].as_ref());
        let d = next.map(|n| sub(n, s));
        let dprev = prev.map(|p| sub(s, p));
        LayerGeometry {
            update_norm: d.as_ref().map(|d| norm(d)),
            cos_prev_update: match (&dprev, &d) {
                (Some(a), Some(b)) => cosine(a, b),
                _ => None,
            },
            dist_from_init: init.map(|i| distance(s, i)),
            param_norm: norm(s),
        }
    }

    /// The reference subtracts in f32, the tracker in f64: agree to 1e-9 relative.
    fn geom_close(a: &LayerGeometry, b: &LayerGeometry) -> bool {
        let o = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => close(x, y, 1e-9),
            (None, None) => true,
            _ => false,
        };
        o(a.update_norm, b.update_norm)
            && o(a.cos_prev_update, b.cos_prev_update)
            && o(a.dist_from_init, b.dist_from_init)
            && close(a.param_norm, b.param_norm, 1e-9)
    }

    fn restrict(v: &[f32], ranges: &[Range<usize>]) -> Vec<f32> {
        ranges
            .iter()
            .flat_map(|r| v[r.clone()].iter().copied())
            .collect()
    }

    /// Runs the tracker over `present` steps of a trajectory and checks every row against the
    /// direct computation, total and per layer.
    fn check_tracker(traj: &[Vec<f32>], present: &[bool], layers: Vec<Layer>, scope: TotalScope) {
        let len = traj[0].len();
        let states: Vec<Option<Vec<f32>>> = traj
            .iter()
            .zip(present)
            .map(|(s, &p)| p.then(|| s.clone()))
            .collect();
        let mut tr = GeometryTracker::new(layers.clone(), len, scope).unwrap();
        let mut rows = Vec::new();
        for (t, s) in states.iter().enumerate() {
            if let Some(s) = s {
                rows.extend(tr.push(t as u64, s).unwrap());
            }
        }
        rows.extend(tr.finish());
        assert_eq!(rows.len(), present.iter().filter(|&&p| p).count());
        let init = states[0].as_deref();
        let total_ranges: Vec<Range<usize>> = match scope {
            TotalScope::AllElements => one(0..len),
            TotalScope::LayersOnly => {
                let mut r: Vec<_> = layers.iter().flat_map(|(_, r)| r.clone()).collect();
                r.sort_by_key(|r| r.start);
                r
            }
        };
        for row in &rows {
            let t = row.step as usize;
            let restricted = |ranges: &[Range<usize>]| -> Vec<Option<Vec<f32>>> {
                states
                    .iter()
                    .map(|s| s.as_ref().map(|s| restrict(s, ranges)))
                    .collect()
            };
            let st = restricted(&total_ranges);
            let want = direct_row(&st, t, st[0].as_deref().filter(|_| init.is_some()));
            assert!(
                geom_close(&row.total, &want),
                "step {t}: {:?} vs {want:?}",
                row.total
            );
            for (li, (_, ranges)) in layers.iter().enumerate() {
                let sl = restricted(ranges);
                let want = direct_row(&sl, t, sl[0].as_deref());
                assert!(geom_close(&row.per_layer[li], &want), "step {t} layer {li}");
            }
        }
    }

    fn trajectory(steps: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut s: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut out = vec![s.clone()];
        for _ in 1..steps {
            for x in &mut s {
                *x += rng.random_range(-0.1..0.1);
            }
            out.push(s.clone());
        }
        out
    }

    #[test]
    fn tracker_matches_direct_computation() {
        let traj = trajectory(6, 37, 1);
        let layers = vec![("a".into(), vec![0..10, 30..33]), ("b".into(), one(12..29))];
        check_tracker(&traj, &[true; 6], layers.clone(), TotalScope::AllElements);
        check_tracker(&traj, &[true; 6], layers, TotalScope::LayersOnly);
    }

    #[test]
    fn tracker_splits_long_layers_into_spans() {
        let len = 2 * SPAN_LEN + 5;
        let traj = trajectory(4, len, 4);
        let layers = vec![("big".into(), one(3..len - 1))];
        check_tracker(&traj, &[true; 4], layers.clone(), TotalScope::AllElements);
        // push_owned gives the same rows as push.
        let run = |owned: bool| {
            let mut tr = GeometryTracker::new(layers.clone(), len, TotalScope::LayersOnly).unwrap();
            let mut rows = Vec::new();
            for (t, s) in traj.iter().enumerate() {
                let r = if owned {
                    tr.push_owned(t as u64, s.clone())
                } else {
                    tr.push(t as u64, s)
                };
                rows.extend(r.unwrap());
            }
            rows.extend(tr.finish());
            rows
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn tracker_gaps_reset_the_chain() {
        let traj = trajectory(9, 20, 2);
        let layers = vec![("w".into(), one(0..20))];
        let present = [true, true, false, true, true, true, false, false, true];
        check_tracker(&traj, &present, layers, TotalScope::AllElements);
        // Without step 0: no distance from init.
        let present = [false, true, true, true, false, true, true, true, true];
        check_tracker(&traj, &present, vec![], TotalScope::AllElements);
    }

    #[test]
    fn tracker_set_init_and_errors() {
        let traj = trajectory(4, 5, 3);
        let mut tr = GeometryTracker::new(vec![], 5, TotalScope::AllElements).unwrap();
        tr.set_init(&traj[0]).unwrap();
        assert!(tr.push(2, &traj[2]).unwrap().is_none());
        let row = tr.push(3, &traj[3]).unwrap().unwrap();
        assert_eq!(row.step, 2);
        assert!(close(
            row.total.dist_from_init.unwrap(),
            distance(&traj[2], &traj[0]),
            1e-12
        ));
        assert!(close(
            row.total.update_norm.unwrap(),
            distance(&traj[3], &traj[2]),
            1e-12
        ));
        assert_eq!(row.total.cos_prev_update, None);
        assert_eq!(
            tr.push(3, &traj[3]),
            Err(MetricsError::StepNotIncreasing {
                step: 3,
                previous_step: 3
            })
        );
        assert_eq!(
            tr.push(4, &[0.0; 2]),
            Err(MetricsError::StateLenMismatch {
                step: 4,
                expected_len: 5,
                got_len: 2
            })
        );
        assert_eq!(
            tr.set_init(&[0.0; 4]).unwrap_err(),
            MetricsError::StateLenMismatch {
                step: 0,
                expected_len: 5,
                got_len: 4
            }
        );
        let last = tr.finish().unwrap();
        assert_eq!((last.step, last.total.update_norm), (3, None));
        assert!(tr.finish().is_none());
        assert_eq!(
            GeometryTracker::new(vec![("x".into(), one(0..9))], 5, TotalScope::AllElements)
                .unwrap_err(),
            MetricsError::RangeOutOfBounds {
                layer: "x".into(),
                start: 0,
                end: 9,
                len: 5
            }
        );
    }

    #[test]
    fn tracker_zero_update_has_no_cosine() {
        let s = vec![1.0f32; 4];
        let mut tr = GeometryTracker::new(vec![], 4, TotalScope::AllElements).unwrap();
        tr.push(0, &s).unwrap();
        tr.push(1, &s).unwrap();
        let row = tr.push(2, &[2.0; 4]).unwrap().unwrap();
        assert_eq!(row.total.update_norm, Some(2.0));
        assert_eq!(row.total.cos_prev_update, None);
        assert_eq!(row.total.dist_from_init, Some(0.0));
    }

    proptest! {
        #[test]
        fn lanes_match_reference(v in proptest::collection::vec(-1e3f32..1e3, 0..70),
                                 w in proptest::collection::vec(-1e3f32..1e3, 0..70)) {
            let n = v.len().min(w.len());
            let (a, b) = (&v[..n], &w[..n]);
            prop_assert!(close(dot(a, b), ref_dot(a, b), 1e-12));
            prop_assert!(close(norm_sq(a), ref_dot(a, a), 1e-12));
            let d = sub(a, b);
            prop_assert!(close(distance_sq(a, b), ref_dot(&d, &d), 1e-6));
        }

        #[test]
        fn cosine_in_range(v in proptest::collection::vec(-1e3f32..1e3, 1..40)) {
            let w: Vec<f32> = v.iter().rev().copied().collect();
            if let Some(c) = cosine(&v, &w) {
                prop_assert!((-1.0..=1.0).contains(&c));
            }
        }

        #[test]
        fn tracker_any_gap_pattern(present in proptest::collection::vec(any::<bool>(), 1..8)) {
            let traj = trajectory(present.len(), 13, 7);
            let layers = vec![("a".into(), one(0..4)), ("b".into(), one(6..13))];
            check_tracker(&traj, &present, layers, TotalScope::AllElements);
        }
    }
}
