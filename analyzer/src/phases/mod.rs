//! The phases of an analysis, one module each, all with the same shape: `run(&mut ItemCx)`
//! computes the phase's rows for one work item. What a later phase needs from an earlier one
//! (grid losses, floor points) passes through [`Handoff`]; when the earlier phase's part is
//! already on disk it is read back from its table (`load`) instead of recomputed, so adding a
//! phase to a folder later reuses what is there.
//!
//! Run-level tables (`epochs`, `eval_samples`) are written once by shard 0 ([`run_level`]).

pub(crate) mod barriers;
pub(crate) mod curvature;
pub(crate) mod floors;
pub(crate) mod geometry;
pub(crate) mod interp;
pub(crate) mod run_level;

use std::collections::{BTreeSet, HashMap};

use crate::config::{AnalyzeConfig, Setting};
use crate::error::AnalyzeError;
use crate::replay::Session;

/// A block of consecutive steps: the unit of sharding and of skip-on-rerun.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub index: u64,
    /// First step of the block.
    pub lo: u64,
    /// One past the last step of the block.
    pub hi: u64,
}

impl Item {
    /// The part name of the item's file in every table.
    pub fn part(&self) -> String {
        format!("item-{:06}", self.index)
    }

    pub fn contains(&self, step: u64) -> bool {
        (self.lo..self.hi).contains(&step)
    }
}

/// Which end of a segment α is: 0 for exactly α = 0 (the first point itself), 1 for exactly
/// α = 1 (the second); `None` inside or outside. Interpolation returns the ends bit for bit,
/// so an end's evaluation can stand for an earlier one of the same point.
pub(crate) fn segment_end(alpha: f64) -> Option<usize> {
    match alpha.to_bits() {
        z if z == 0f64.to_bits() => Some(0),
        o if o == 1f64.to_bits() => Some(1),
        _ => None,
    }
}

/// Counters every phase adds to.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub forward_evaluations: u64,
    /// Losses that were NaN or infinite (kept as NaN in the tables).
    pub nonfinite_losses: u64,
}

impl Tally {
    /// Counts one loss evaluation.
    pub fn loss(&mut self, loss: f64) {
        self.forward_evaluations += 1;
        self.reused(loss);
    }

    /// Counts a loss taken from an evaluation already made (no forward pass).
    pub fn reused(&mut self, loss: f64) {
        if !loss.is_finite() {
            self.nonfinite_losses += 1;
        }
    }
}

/// A step under one evaluation setting: the key of everything handed between phases.
pub(crate) type SettingStep = (Setting, u64);

/// Results of earlier phases within one work item.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    /// Losses on the configured grid (interp → floors, barriers).
    pub grid_losses: HashMap<SettingStep, Vec<f64>>,
    /// α* of the valley floor (floors → barriers, curvature); NaN when not located.
    pub floor_alpha: HashMap<SettingStep, f64>,
    /// L(v_t) at the valley floor, as evaluated while locating it (floors → barriers, whose
    /// floor segments start and end there).
    pub floor_loss: HashMap<SettingStep, f64>,
    /// Evaluations at a recorded state θ_t itself (α = 0 of step t, α = 1 of step t − 1), for
    /// sets that do not change with the step: computed once, used by both interpolations.
    pub state_evals: HashMap<SettingStep, sgdwalk_workload::EvalSums>,
}

/// Where on a step a measurement is taken: the `point` column of `curvature` and the `path`
/// column of `barriers` (a path between two iterates or between two floor points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// θ_t itself.
    Iterate,
    /// The valley floor v_t = θ_t + α*·d_t.
    Floor,
}

impl Point {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Point::Iterate => "iterate",
            Point::Floor => "floor",
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Eigenvectors of the last curvature measurement per setting and point kind: the next warm
/// start. Kept across work items of one invocation.
pub(crate) type WarmStarts = HashMap<(Setting, Point), Vec<Vec<f32>>>;

/// Everything a phase sees while it computes one work item.
pub(crate) struct ItemCx<'a> {
    pub cfg: &'a AnalyzeConfig,
    pub s: &'a mut Session,
    pub item: &'a Item,
    /// Steps t with θ_t and θ_{t+1} both recorded (in the analyzed range).
    pub pairs: &'a BTreeSet<u64>,
    /// Steps recorded (in the analyzed range).
    pub steps: &'a BTreeSet<u64>,
    pub handoff: Handoff,
    pub tally: &'a mut Tally,
    pub warm: &'a mut WarmStarts,
}

impl ItemCx<'_> {
    /// The item's pairs, in order.
    pub fn item_pairs(&self) -> Vec<u64> {
        self.pairs
            .range(self.item.lo..self.item.hi)
            .copied()
            .collect()
    }

    /// Mean loss at every α of `alphas` on the segment a → b, counted in the tally.
    /// `known_ends`: the losses at α = 0 (a) and α = 1 (b) when already evaluated on the same
    /// batches (the segment's ends are points evaluated before): taken, not evaluated again.
    pub fn segment_losses(
        &mut self,
        (a, b): (&[f32], &[f32]),
        alphas: &[f64],
        batches: &[(tch::Tensor, tch::Tensor)],
        setting: &Setting,
        known_ends: [Option<f64>; 2],
    ) -> Result<Vec<f64>, AnalyzeError> {
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(alphas.len());
        for &alpha in alphas {
            let known = segment_end(alpha).and_then(|end| known_ends[end]);
            if let Some(loss) = known {
                self.tally.reused(loss);
                out.push(loss);
                continue;
            }
            self.s.interpolate(a, b, alpha, &mut buf);
            let loss = self
                .s
                .evaluate_state(&buf, batches, setting.bn)?
                .mean_loss();
            self.tally.loss(loss);
            out.push(loss);
        }
        Ok(out)
    }

    /// The point θ_t + α·(θ_{t+1} − θ_t).
    pub fn point_on_step(&mut self, t: u64, alpha: f64) -> Result<Vec<f32>, AnalyzeError> {
        let (a, b) = (self.s.reader.state(t)?, self.s.reader.state(t + 1)?);
        let mut v = Vec::new();
        self.s.interpolate(&a, &b, alpha, &mut v);
        Ok(v)
    }
}

/// Parses the `eval_set` and `bn_policy` columns of a stored row back into a setting; `None`
/// for a setting this analysis does not use.
pub(crate) fn stored_setting(
    cfg: &AnalyzeConfig,
    eval_set: &str,
    bn_policy: &str,
) -> Option<Setting> {
    let eval = eval_set.parse().ok()?;
    let bn = crate::config::parse_bn(bn_policy).ok()?;
    let setting = Setting { eval, bn };
    cfg.settings().contains(&setting).then_some(setting)
}
