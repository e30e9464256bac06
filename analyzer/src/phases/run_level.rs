//! Tables of the whole run rather than of a work item, written by shard 0: `epochs` (the
//! evaluations recorded during training) and `eval_samples` (the ids of every drawn probe set).

use crate::config::{AnalyzeConfig, EvalSet};
use crate::error::AnalyzeError;
use crate::replay::Session;
use crate::tables::{EpochRow, EvalSampleRow};

/// `epochs` → table `epochs`.
pub(crate) fn epochs(s: &Session) -> Result<Vec<EpochRow>, AnalyzeError> {
    let (run_id, run_label) = (&s.run_id, &s.run_label);
    Ok(s.reader
        .epochs()?
        .into_iter()
        .flat_map(|e| {
            e.evals.into_iter().map(move |ev| EpochRow {
                run_id: run_id.clone(),
                run_label: run_label.clone(),
                epoch: e.epoch,
                step: e.step,
                split: ev.split,
                loss: ev.loss,
                accuracy: ev.accuracy,
                samples: ev.samples,
            })
        })
        .collect())
}

/// The ids of every evaluation set drawn from a split (`probe:N`); whole splits need none and
/// `batch` ids are the recording's own.
pub(crate) fn eval_samples(
    s: &Session,
    cfg: &AnalyzeConfig,
) -> Result<Vec<EvalSampleRow>, AnalyzeError> {
    let mut rows = Vec::new();
    for set in cfg.eval.iter().filter(|e| matches!(e, EvalSet::Probe(_))) {
        let (split, ids, _) = s.eval_samples(set, 0)?;
        let name = set.name();
        for (position, &sample_id) in ids.iter().enumerate() {
            let position = position as u32;
            rows.push(EvalSampleRow {
                run_id: s.run_id.clone(),
                run_label: s.run_label.clone(),
                eval_set: name.clone(),
                split: split.as_str().to_string(),
                position,
                sample_id,
                bn_batch: position / cfg.eval_batch_size.max(1),
            });
        }
    }
    Ok(rows)
}
