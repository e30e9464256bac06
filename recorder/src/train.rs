//! The training loop: one update per step, from plans that are pure functions of the recorded
//! seeds and the step number (so a resumed run and a replay draw the same batches).

use std::collections::HashMap;

use sgdwalk_workload::augment::{self, AugChoice};
use sgdwalk_workload::eval::{bn_batches, mean_loss, trainable_tensors};
use sgdwalk_workload::run::{RunDescription, derive_seed};
use sgdwalk_workload::sampling::epoch_permutation;
use sgdwalk_workload::{Dataset, Model, Split};
use tch::{Device, Kind, Tensor};

use crate::error::RecordError;
use crate::optim::Optimizer;

/// What update `step` uses: its samples, their augmentation choices and its learning rate.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    pub step: u64,
    /// Training-file indices; for full-batch steps the whole training split, in chunk order.
    pub sample_ids: Vec<u32>,
    pub augmentation: Option<Vec<AugChoice>>,
    pub lr: f64,
}

impl StepPlan {
    /// Augmentation choices as recorded bytes (empty without augmentation).
    pub fn augmentation_bytes(&self) -> Vec<u8> {
        self.augmentation
            .as_deref()
            .map(augment::encode_choices)
            .unwrap_or_default()
    }
}

/// Scalars measured while applying one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Mean loss over the step's samples at θ_t (train-mode BatchNorm).
    pub minibatch_loss: f64,
    /// L2 norm of the loss gradient (before weight decay and noise).
    pub grad_norm: f64,
    /// L2 norm of the parameter update the optimizer computed.
    pub update_norm: f64,
}

/// A model, its data and its optimizer, stepping through a run.
pub struct Trainer {
    pub model: Model,
    pub data: Dataset,
    pub desc: RunDescription,
    params: Vec<Tensor>,
    optimizer: Optimizer,
    train_ids: Vec<u32>,
    permutations: HashMap<u64, Vec<u32>>,
}

impl Trainer {
    /// Builds the model at θ_0 (from the init seed, or the TorchScript module's saved tensors
    /// in `module`) for the run `desc` on `device`.
    pub fn new(
        desc: RunDescription,
        data: Dataset,
        device: Device,
        module: Option<&[u8]>,
    ) -> Result<Self, RecordError> {
        let model = Model::load(&desc.model, device, desc.seeds.init, module)?;
        let params = trainable_tensors(&model)?;
        let optimizer = Optimizer::new(desc.optimizer.clone(), params.len());
        let train_ids = data.split_ids(Split::Train);
        Ok(Trainer {
            model,
            data,
            desc,
            params,
            optimizer,
            train_ids,
            permutations: HashMap::new(),
        })
    }

    /// The trainable tensors in canonical order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Replaces the optimizer state (resume).
    pub fn set_optimizer(&mut self, optimizer: Optimizer) {
        self.optimizer = optimizer;
    }

    /// Exports the optimizer state for a resume record.
    pub fn export_optimizer(&self) -> Result<(Vec<f32>, String), RecordError> {
        self.optimizer.export(&self.params)
    }

    /// The plan of update `step`.
    pub fn plan(&mut self, step: u64) -> StepPlan {
        let bs = self.desc.batch_size as usize;
        let sample_ids = if self.desc.full_batch.is_some() {
            self.train_ids.clone()
        } else {
            let spe = self.desc.steps_per_epoch.max(1);
            let epoch = step / spe;
            let k = (step % spe) as usize;
            if !self.permutations.contains_key(&epoch) {
                // Keep only the current epoch's order.
                self.permutations.clear();
                let order = epoch_permutation(self.desc.seeds.data_order, epoch, &self.train_ids);
                self.permutations.insert(epoch, order);
            }
            let order = &self.permutations[&epoch];
            let end = ((k + 1) * bs).min(order.len());
            order[(k * bs).min(end)..end].to_vec()
        };
        let augmentation = self.data.spec.augment.then(|| {
            augment::choices_for_step(self.desc.seeds.augmentation, step, sample_ids.len())
        });
        StepPlan {
            step,
            lr: self
                .desc
                .schedule
                .lr_at(step, self.desc.steps_per_epoch, self.desc.total_steps),
            sample_ids,
            augmentation,
        }
    }

    /// Applies the update of `plan` to the model: forward and backward in train mode (which also
    /// advances the BatchNorm running statistics), optional noise, then the optimizer.
    pub fn apply(&mut self, plan: &StepPlan) -> Result<StepOutcome, RecordError> {
        let device = self.model.device();
        let chunk = self.desc.batch_size as usize;
        let n_total = plan.sample_ids.len();
        let sum_of_means = self
            .desc
            .full_batch
            .as_ref()
            .is_some_and(|f| f.sum_of_chunk_means);
        let mut grads: Option<Vec<Tensor>> = None;
        let mut loss_mean = 0.0;
        for (ids, aug) in bn_batches(&plan.sample_ids, plan.augmentation.as_deref(), chunk)? {
            let (x, y) = self.data.batch(Split::Train, ids, aug, device)?;
            let loss = mean_loss(&self.model.forward_t(&x, true)?, &y)?;
            let share = ids.len() as f64 / n_total as f64;
            let weight = if sum_of_means { 1.0 } else { share };
            loss_mean += share * loss.f_double_value(&[])?;
            let g = Tensor::f_run_backward(&[&loss], &self.params, false, false)?;
            grads = Some(match grads {
                // One minibatch: the gradient as computed, untouched (bit-exact replay).
                None if weight == 1.0 => g,
                None => g
                    .iter()
                    .map(|t| t.f_mul_scalar(weight))
                    .collect::<Result<_, _>>()?,
                Some(acc) => acc
                    .iter()
                    .zip(&g)
                    .map(|(a, t)| a.f_add(&t.f_mul_scalar(weight)?))
                    .collect::<Result<_, _>>()?,
            });
        }
        let mut grads = grads.ok_or(sgdwalk_workload::WorkloadError::EmptyEvaluation)?;
        let grad_norm = global_norm(&grads)?;
        if self.desc.noise_std > 0.0 {
            // libtorch's generator, reseeded per step from the noise seed: the same noise on a
            // resumed run, and fast on any device.
            let _seeded = sgdwalk_workload::models::seeded_generator(derive_seed(
                self.desc.seeds.noise,
                plan.step,
            ));
            grads = grads
                .iter()
                .map(|g| g.f_add(&g.f_randn_like()?.f_mul_scalar(self.desc.noise_std)?))
                .collect::<Result<_, _>>()?;
        }
        let update_norm = self.optimizer.step(&self.params, &grads, plan.lr)?;
        Ok(StepOutcome {
            minibatch_loss: loss_mean,
            grad_norm,
            update_norm,
        })
    }

    /// The full state for the recording pipeline: with the snapshot ring, a device-side copy
    /// into a free ring buffer that the pipeline moves to the host off the training stream
    /// (training waits only while every buffer is in flight); else a host vector copied on the
    /// training thread (cheap on the CPU).
    pub fn snapshot(
        &self,
        sink: &mut crate::sink::Sink,
        step: u64,
    ) -> Result<crate::sink::Snapshot, RecordError> {
        if sink.has_ring() {
            return sink.snapshot_into_ring(step, |buffer| Ok(self.model.concat_into(buffer)?));
        }
        let started = std::time::Instant::now();
        let state = self.model.flatten()?;
        sink.note_snapshot_time(started);
        Ok(crate::sink::Snapshot::Host(state))
    }
}

fn global_norm(tensors: &[Tensor]) -> Result<f64, RecordError> {
    // Summed on the device: one synchronisation per step, not one per tensor.
    let Some(first) = tensors.first() else {
        return Ok(0.0);
    };
    let mut sq = Tensor::f_zeros([], (Kind::Double, first.device()))?;
    for t in tensors {
        sq = sq.f_add(&t.f_to_kind(Kind::Double)?.f_square()?.f_sum(Kind::Double)?)?;
    }
    Ok(sq.f_double_value(&[])?.sqrt())
}
