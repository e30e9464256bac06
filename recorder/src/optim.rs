//! Optimizers applied to the trainable tensors in canonical order. Written here rather than
//! taken from tch so that the update is explicit (its norm is measured), the state can be
//! exported for resume, and weight decay follows the paper's coupled convention exactly.

use sgdwalk_workload::run::OptimizerSpec;
use tch::{Kind, Tensor};

use crate::error::RecordError;

/// The gradient with coupled weight decay added (L2 in the loss, as the paper's code), or as
/// is when the decay is decoupled (applied to the weights by the caller) or zero.
fn coupled_decay(
    g: &Tensor,
    p: &Tensor,
    weight_decay: f64,
    decoupled: bool,
) -> Result<Tensor, tch::TchError> {
    if weight_decay != 0.0 && !decoupled {
        g.f_add(&p.f_mul_scalar(weight_decay)?)
    } else {
        Ok(g.shallow_clone())
    }
}

/// Optimizer state: momentum / moment buffers per trainable tensor, created lazily.
pub struct Optimizer {
    spec: OptimizerSpec,
    /// SGD: momentum buffers. Adam: first moments.
    buf1: Vec<Option<Tensor>>,
    /// Adam: second moments.
    buf2: Vec<Option<Tensor>>,
    /// Updates applied so far (Adam bias correction).
    steps_applied: u64,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("spec", &self.spec)
            .field("steps_applied", &self.steps_applied)
            .finish_non_exhaustive()
    }
}

impl Optimizer {
    /// A fresh optimizer for `n_tensors` trainable tensors.
    pub fn new(spec: OptimizerSpec, n_tensors: usize) -> Self {
        Optimizer {
            spec,
            buf1: (0..n_tensors).map(|_| None).collect(),
            buf2: (0..n_tensors).map(|_| None).collect(),
            steps_applied: 0,
        }
    }

    /// Applies one update with learning rate `lr` to `params` given their gradients, and
    /// returns the L2 norm of the parameter update it computed.
    pub fn step(
        &mut self,
        params: &[Tensor],
        grads: &[Tensor],
        lr: f64,
    ) -> Result<f64, RecordError> {
        self.steps_applied += 1;
        let t = self.steps_applied;
        tch::no_grad(|| -> Result<f64, RecordError> {
            let mut sq = Tensor::f_zeros([], (Kind::Double, params[0].device()))?;
            for (i, (p, g)) in params.iter().zip(grads).enumerate() {
                let delta = match &self.spec {
                    OptimizerSpec::Sgd {
                        momentum,
                        nesterov,
                        weight_decay,
                        decoupled_weight_decay,
                    } => {
                        let mut d = coupled_decay(g, p, *weight_decay, *decoupled_weight_decay)?;
                        if *momentum != 0.0 {
                            let buf = match self.buf1[i].take() {
                                None => d.f_detach()?.copy(),
                                Some(b) => b.f_mul_scalar(*momentum)?.f_add(&d)?,
                            };
                            d = if *nesterov {
                                d.f_add(&buf.f_mul_scalar(*momentum)?)?
                            } else {
                                buf.shallow_clone()
                            };
                            self.buf1[i] = Some(buf);
                        }
                        let mut delta = d.f_mul_scalar(-lr)?;
                        if *weight_decay != 0.0 && *decoupled_weight_decay {
                            delta = delta.f_sub(&p.f_mul_scalar(lr * weight_decay)?)?;
                        }
                        delta
                    }
                    OptimizerSpec::Adam {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                        decoupled_weight_decay,
                    } => {
                        let d = coupled_decay(g, p, *weight_decay, *decoupled_weight_decay)?;
                        let m = match self.buf1[i].take() {
                            None => d.f_mul_scalar(1.0 - beta1)?,
                            Some(m) => m
                                .f_mul_scalar(*beta1)?
                                .f_add(&d.f_mul_scalar(1.0 - beta1)?)?,
                        };
                        let sq_d = d.f_mul(&d)?;
                        let v = match self.buf2[i].take() {
                            None => sq_d.f_mul_scalar(1.0 - beta2)?,
                            Some(v) => v
                                .f_mul_scalar(*beta2)?
                                .f_add(&sq_d.f_mul_scalar(1.0 - beta2)?)?,
                        };
                        let bc1 = 1.0 - beta1.powi(t.min(i32::MAX as u64) as i32);
                        let bc2 = 1.0 - beta2.powi(t.min(i32::MAX as u64) as i32);
                        let denom = v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(*eps)?;
                        let mut delta = m.f_div(&denom)?.f_mul_scalar(-lr / bc1)?;
                        if *weight_decay != 0.0 && *decoupled_weight_decay {
                            delta = delta.f_sub(&p.f_mul_scalar(lr * weight_decay)?)?;
                        }
                        self.buf1[i] = Some(m);
                        self.buf2[i] = Some(v);
                        delta
                    }
                };
                sq = sq.f_add(
                    &delta
                        .f_to_kind(Kind::Double)?
                        .f_square()?
                        .f_sum(Kind::Double)?,
                )?;
                let mut p = p.shallow_clone();
                let _updated = p.f_add_(&delta)?;
            }
            Ok(sq.f_double_value(&[])?.sqrt())
        })
    }

    /// The buffers that exist, as one f32 vector (buf1 of every tensor that has one, then
    /// buf2 likewise), and a JSON descriptor saying which exist. Plain SGD exports nothing.
    pub fn export(&self, params: &[Tensor]) -> Result<(Vec<f32>, String), RecordError> {
        let mut parts = Vec::new();
        let present1: Vec<bool> = self.buf1.iter().map(Option::is_some).collect();
        let present2: Vec<bool> = self.buf2.iter().map(Option::is_some).collect();
        for b in self.buf1.iter().chain(&self.buf2).flatten() {
            parts.push(
                b.f_detach()?
                    .f_reshape([-1])?
                    .f_to_device(tch::Device::Cpu)?,
            );
        }
        let out = if parts.is_empty() {
            Vec::new()
        } else {
            sgdwalk_workload::state::to_host(&Tensor::f_cat(&parts, 0)?.f_to_kind(Kind::Float)?)?
        };
        debug_assert_eq!(params.len(), present1.len());
        let descriptor = serde_json::json!({
            "optimizer": self.spec,
            "steps_applied": self.steps_applied,
            "buf1_present": present1,
            "buf2_present": present2,
        });
        Ok((out, descriptor.to_string()))
    }

    /// Restores buffers written by [`Optimizer::export`].
    pub fn import(
        spec: OptimizerSpec,
        params: &[Tensor],
        flat: &[f32],
        descriptor: &str,
    ) -> Result<Self, RecordError> {
        let bad = |reason: String| RecordError::BadResumeState { reason };
        let d: serde_json::Value =
            serde_json::from_str(descriptor).map_err(|e| bad(format!("descriptor: {e}")))?;
        let stored: OptimizerSpec = serde_json::from_value(d["optimizer"].clone())
            .map_err(|e| bad(format!("optimizer: {e}")))?;
        if stored != spec {
            return Err(bad(format!(
                "recorded optimizer {stored:?} differs from the requested {spec:?}"
            )));
        }
        let steps_applied = d["steps_applied"]
            .as_u64()
            .ok_or_else(|| bad("steps_applied missing".into()))?;
        let flags = |key: &str| -> Result<Vec<bool>, RecordError> {
            d[key]
                .as_array()
                .ok_or_else(|| bad(format!("{key} missing")))?
                .iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| bad(format!("{key} not booleans")))
                })
                .collect()
        };
        let (p1, p2) = (flags("buf1_present")?, flags("buf2_present")?);
        let stored: usize = params
            .iter()
            .zip(p1.iter().zip(&p2))
            .map(|(p, (a, b))| p.numel() * (usize::from(*a) + usize::from(*b)))
            .sum();
        if p1.len() != params.len() || p2.len() != params.len() || flat.len() != stored {
            return Err(bad(format!(
                "{} values stored, the descriptor and {} tensors need {stored}",
                flat.len(),
                params.len()
            )));
        }
        let mut opt = Optimizer::new(spec, params.len());
        opt.steps_applied = steps_applied;
        let mut offset = 0;
        for (slot, present) in [(&mut opt.buf1, &p1), (&mut opt.buf2, &p2)] {
            for (i, p) in params.iter().enumerate() {
                if present[i] {
                    let n = p.numel();
                    let t = Tensor::f_from_slice(&flat[offset..offset + n])?
                        .f_view(p.size().as_slice())?
                        .f_to_device(p.device())?;
                    slot[i] = Some(t);
                    offset += n;
                }
            }
        }
        Ok(opt)
    }
}
