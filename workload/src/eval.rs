//! Loss and accuracy of a model over samples, under a named BatchNorm policy, as exact means
//! (sum over samples / count), plus gradients and Hessian-vector products for the analyzer.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::augment::AugChoice;
use crate::data::{Dataset, Split};
use crate::error::WorkloadError;
use crate::models::Model;

/// How BatchNorm layers normalize during an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnPolicy {
    /// Batch statistics of each evaluation batch (as the paper's interpolation script); the
    /// running statistics are restored afterwards, so evaluation never changes the state.
    TrainMode,
    /// The stored running statistics.
    EvalMode,
}

impl BnPolicy {
    /// Name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BnPolicy::TrainMode => "train-mode",
            BnPolicy::EvalMode => "eval-mode",
        }
    }
}

/// Sums over the evaluated samples; means and standard errors derive from them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalSums {
    /// Sum of per-sample cross-entropy losses (finite ones only).
    pub loss_sum: f64,
    /// Sum of squared per-sample losses (finite ones only).
    pub loss_sq_sum: f64,
    /// Samples whose argmax equals the label.
    pub correct: u64,
    /// Samples evaluated.
    pub samples: u64,
    /// Samples whose loss was NaN or infinite (reported, never folded into the mean).
    pub nonfinite: u64,
}

impl EvalSums {
    /// Mean loss; NaN if any sample's loss was not finite, so it cannot go unnoticed.
    pub fn mean_loss(&self) -> f64 {
        if self.nonfinite > 0 || self.samples == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.samples as f64
        }
    }

    /// Fraction of correct predictions.
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            self.correct as f64 / self.samples as f64
        }
    }

    /// Standard error of the mean loss, treating samples as independent draws.
    pub fn loss_stderr(&self) -> f64 {
        let n = self.samples as f64;
        if self.samples < 2 || self.nonfinite > 0 {
            return f64::NAN;
        }
        let mean = self.loss_sum / n;
        let var = ((self.loss_sq_sum - n * mean * mean) / (n - 1.0)).max(0.0);
        (var / n).sqrt()
    }

    /// Adds another batch's sums.
    pub fn add(&mut self, o: &EvalSums) {
        self.loss_sum += o.loss_sum;
        self.loss_sq_sum += o.loss_sq_sum;
        self.correct += o.correct;
        self.samples += o.samples;
        self.nonfinite += o.nonfinite;
    }
}

/// Snapshot of the BatchNorm running statistics, restored on drop of [`BnGuard::restore`].
struct BnGuard {
    saved: Vec<(Tensor, Tensor)>,
}

impl BnGuard {
    fn save(model: &Model) -> Result<Self, WorkloadError> {
        let saved = model
            .layout()
            .entries
            .iter()
            .zip(model.tensors())
            .filter(|(e, _)| !e.trainable)
            .map(|(_, t)| Ok((t.f_detach()?.copy(), t.shallow_clone())))
            .collect::<Result<_, WorkloadError>>()?;
        Ok(BnGuard { saved })
    }

    /// A guard where the policy updates running statistics (train mode), none otherwise.
    fn for_policy(model: &Model, policy: BnPolicy) -> Result<Option<Self>, WorkloadError> {
        match policy {
            BnPolicy::TrainMode => Ok(Some(BnGuard::save(model)?)),
            BnPolicy::EvalMode => Ok(None),
        }
    }

    fn restore(self) -> Result<(), WorkloadError> {
        tch::no_grad(|| {
            for (copy, mut t) in self.saved {
                t.f_copy_(&copy)?;
            }
            Ok(())
        })
    }
}

/// Per-sample cross-entropy of logits against labels.
fn per_sample_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor, WorkloadError> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::None, -100, 0.0)?)
}

/// Mean cross-entropy over a minibatch: the training loss.
pub fn mean_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor, WorkloadError> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)?)
}

fn sums_of(logits: &Tensor, labels: &Tensor) -> Result<EvalSums, WorkloadError> {
    let values = crate::state::to_host(&per_sample_loss(logits, labels)?.f_to_kind(Kind::Float)?)?;
    let correct = logits
        .f_argmax(-1, false)?
        .f_eq_tensor(labels)?
        .f_sum(Kind::Int64)?
        .f_int64_value(&[])?;
    let mut s = EvalSums {
        correct: correct as u64,
        samples: values.len() as u64,
        ..Default::default()
    };
    for v in values {
        let v = f64::from(v);
        if v.is_finite() {
            s.loss_sum += v;
            s.loss_sq_sum += v * v;
        } else {
            s.nonfinite += 1;
        }
    }
    Ok(s)
}

/// Evaluates the model's current state on `ids` of `split`, in consecutive batches of
/// `batch_size` (the partition that train-mode BatchNorm sees), with optional augmentation
/// choices (one per id).
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    split: Split,
    ids: &[u32],
    aug: Option<&[AugChoice]>,
    batch_size: usize,
    policy: BnPolicy,
) -> Result<EvalSums, WorkloadError> {
    if ids.is_empty() {
        return Err(WorkloadError::EmptyEvaluation);
    }
    let batches = prepare_batches(data, split, ids, aug, batch_size, model.device())?;
    evaluate_batches(model, &batches, policy)
}

/// The train-mode BatchNorm partition of `ids`: consecutive batches of `batch_size` samples
/// (the last one may be shorter), each with its augmentation choices (`aug` holds one per id).
/// Training, per-epoch evaluation and the analyzer's replay all cut their samples here, so
/// train-mode BatchNorm sees the same batches everywhere.
pub fn bn_batches<'a>(
    ids: &'a [u32],
    aug: Option<&'a [AugChoice]>,
    batch_size: usize,
) -> Result<impl Iterator<Item = (&'a [u32], Option<&'a [AugChoice]>)> + 'a, WorkloadError> {
    if let Some(a) = aug
        && a.len() != ids.len()
    {
        return Err(WorkloadError::BadAugmentation {
            reason: format!("{} choices for {} samples", a.len(), ids.len()),
        });
    }
    let batch_size = batch_size.max(1);
    Ok(ids.chunks(batch_size).enumerate().map(move |(i, chunk)| {
        let start = i * batch_size;
        (chunk, aug.map(|a| &a[start..start + chunk.len()]))
    }))
}

/// The batches `(images, labels)` of [`bn_batches`] on `device`, ready to be evaluated at many
/// states (as interpolation does).
pub fn prepare_batches(
    data: &Dataset,
    split: Split,
    ids: &[u32],
    aug: Option<&[AugChoice]>,
    batch_size: usize,
    device: tch::Device,
) -> Result<Vec<(Tensor, Tensor)>, WorkloadError> {
    let mut batches = Vec::with_capacity(ids.len().div_ceil(batch_size.max(1)));
    for (chunk, a) in bn_batches(ids, aug, batch_size)? {
        batches.push(data.batch(split, chunk, a, device)?);
    }
    Ok(batches)
}

/// Evaluates the model's current state on prepared batches `(images, labels)`; each batch is
/// one train-mode BatchNorm batch. Preparing batches once and evaluating many states on them is
/// what interpolation does.
pub fn evaluate_batches(
    model: &Model,
    batches: &[(Tensor, Tensor)],
    policy: BnPolicy,
) -> Result<EvalSums, WorkloadError> {
    if batches.is_empty() {
        return Err(WorkloadError::EmptyEvaluation);
    }
    let guard = BnGuard::for_policy(model, policy)?;
    let result = tch::no_grad(|| -> Result<EvalSums, WorkloadError> {
        let mut total = EvalSums::default();
        for (x, y) in batches {
            let logits = model.forward_t(x, policy == BnPolicy::TrainMode)?;
            total.add(&sums_of(&logits, y)?);
        }
        Ok(total)
    });
    if let Some(g) = guard {
        g.restore()?;
    }
    result
}

/// Mean loss of one batch and its gradient with respect to the trainable parameters under a
/// BatchNorm policy: `TrainMode` normalizes with the batch's statistics (running statistics are
/// restored afterwards), `EvalMode` with the stored running statistics, held fixed.
pub fn loss_and_grad(
    model: &Model,
    images: &Tensor,
    labels: &Tensor,
    policy: BnPolicy,
) -> Result<(f64, Vec<Tensor>), WorkloadError> {
    let guard = BnGuard::for_policy(model, policy)?;
    let params = trainable_tensors(model)?;
    let logits = model.forward_t(images, policy == BnPolicy::TrainMode)?;
    let loss = mean_loss(&logits, labels)?;
    let grads = Tensor::f_run_backward(&[&loss], &params, false, false)?;
    if let Some(g) = guard {
        g.restore()?;
    }
    Ok((loss.f_double_value(&[])?, grads))
}

/// The trainable parameters in canonical order.
pub fn trainable_tensors(model: &Model) -> Result<Vec<Tensor>, WorkloadError> {
    Ok(model
        .layout()
        .entries
        .iter()
        .zip(model.tensors())
        .filter(|(e, _)| e.trainable)
        .map(|(_, t)| t.shallow_clone())
        .collect())
}

/// Hessian-vector products of the mean loss over `batches` (averaged with weights
/// proportional to batch size) for each vector in `vs` (each a list of tensors shaped like the
/// trainable parameters), by double backward, under a BatchNorm policy: `TrainMode` uses each
/// batch's statistics (the loss, and so the Hessian, depends on the partition into batches),
/// `EvalMode` the stored running statistics as constants. Running statistics are left
/// unchanged. Returns the mean loss and one product per vector.
pub fn hessian_vector_products(
    model: &Model,
    batches: &[(Tensor, Tensor)],
    vs: &[Vec<Tensor>],
    policy: BnPolicy,
) -> Result<(f64, Vec<Vec<Tensor>>), WorkloadError> {
    let guard = BnGuard::for_policy(model, policy)?;
    let params = trainable_tensors(model)?;
    let total: i64 = batches.iter().map(|(x, _)| x.size()[0]).sum();
    let mut loss_sum = 0.0;
    let mut out: Vec<Vec<Tensor>> = vs
        .iter()
        .map(|v| v.iter().map(|t| t.zeros_like()).collect())
        .collect();
    for (x, y) in batches {
        let weight = x.size()[0] as f64 / total as f64;
        let logits = model.forward_t(x, policy == BnPolicy::TrainMode)?;
        let loss = mean_loss(&logits, y)?;
        loss_sum += weight * loss.f_double_value(&[])?;
        let grads = Tensor::f_run_backward(&[&loss], &params, true, true)?;
        for (k, v) in vs.iter().enumerate() {
            let mut dot = Tensor::f_zeros([], (Kind::Float, model.device()))?;
            for (g, vi) in grads.iter().zip(v) {
                dot = dot.f_add(&g.f_mul(vi)?.f_sum(Kind::Float)?)?;
            }
            let keep = k + 1 < vs.len();
            let hv = Tensor::f_run_backward(&[&dot], &params, keep, false)?;
            for (acc, h) in out[k].iter_mut().zip(hv) {
                *acc = acc.f_add(&h.f_mul_scalar(weight)?)?;
            }
        }
    }
    if let Some(g) = guard {
        g.restore()?;
    }
    Ok((loss_sum, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bn_batches_cut_consecutive_batches_with_their_choices() {
        let ids = [10, 11, 12, 13, 14];
        let aug: Vec<AugChoice> = (0..5)
            .map(|i| AugChoice {
                dx: i,
                dy: 0,
                flip: false,
            })
            .collect();
        let got: Vec<(Vec<u32>, Vec<u8>)> = bn_batches(&ids, Some(&aug), 2)
            .unwrap()
            .map(|(b, a)| (b.to_vec(), a.unwrap().iter().map(|c| c.dx).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![10, 11], vec![0, 1]),
                (vec![12, 13], vec![2, 3]),
                (vec![14], vec![4])
            ]
        );
        // A batch size of 0 means 1, and no augmentation gives no choices.
        assert_eq!(bn_batches(&ids, None, 0).unwrap().count(), 5);
        assert!(bn_batches(&ids, None, 3).unwrap().all(|(_, a)| a.is_none()));
        assert!(matches!(
            bn_batches(&ids, Some(&aug[..4]), 2).map(|_| ()),
            Err(WorkloadError::BadAugmentation { .. })
        ));
    }
}
