//! The canonical state order: every variable of a `VarStore` (parameters and BatchNorm running
//! statistics), sorted by name, concatenated into one f32 vector.
//!
//! `VarStore::variables()` is a `HashMap`, so its iteration order is arbitrary; sorting by the
//! variable's path name ("features.conv0.weight", ...) gives an order that depends only on the
//! model description. Each tensor is stored row-major (libtorch's contiguous layout).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::error::WorkloadError;

/// One variable of the canonical state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Path name in the `VarStore`, e.g. `stage0.block0.conv0.weight`.
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<i64>,
    /// First element of this tensor in the flat state.
    pub offset_elements: usize,
    /// Number of elements.
    pub len_elements: usize,
    /// True for trained parameters, false for buffers (BatchNorm running mean/var).
    pub trainable: bool,
}

/// The ordered list of variables of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateLayout {
    /// Entries in canonical (name-sorted) order.
    pub entries: Vec<StateEntry>,
}

impl StateLayout {
    /// Reads the layout of `vs` (names sorted).
    pub fn of(vs: &nn::VarStore) -> Self {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut offset = 0;
        let entries = named
            .into_iter()
            .map(|(name, t)| {
                let len = t.numel();
                let entry = StateEntry {
                    name,
                    shape: t.size(),
                    offset_elements: offset,
                    len_elements: len,
                    trainable: t.requires_grad(),
                };
                offset += len;
                entry
            })
            .collect();
        StateLayout { entries }
    }

    /// Total number of f32 elements in the flat state.
    pub fn len_elements(&self) -> usize {
        self.entries.iter().map(|e| e.len_elements).sum()
    }

    /// Number of trainable elements.
    pub fn parameter_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.trainable)
            .map(|e| e.len_elements)
            .sum()
    }

    /// Variables of `vs` in canonical order, checked against this layout.
    pub fn tensors(&self, vs: &nn::VarStore) -> Result<Vec<Tensor>, WorkloadError> {
        let vars = vs.variables();
        if vars.len() != self.entries.len() {
            return Err(WorkloadError::StateMismatch {
                reason: format!(
                    "model has {} variables, layout has {}",
                    vars.len(),
                    self.entries.len()
                ),
            });
        }
        self.entries
            .iter()
            .map(|e| {
                let t = vars
                    .get(&e.name)
                    .ok_or_else(|| WorkloadError::StateMismatch {
                        reason: format!("variable {} missing from the model", e.name),
                    })?;
                if t.size() != e.shape {
                    return Err(WorkloadError::StateMismatch {
                        reason: format!(
                            "variable {} has shape {:?}, layout says {:?}",
                            e.name,
                            t.size(),
                            e.shape
                        ),
                    });
                }
                Ok(t.shallow_clone())
            })
            .collect()
    }

    /// The variables concatenated in canonical order into one flat f32 tensor on their device
    /// (a copy; no host transfer).
    pub fn concat(&self, vs: &nn::VarStore) -> Result<Tensor, WorkloadError> {
        let tensors = self.tensors(vs)?;
        Ok(tch::no_grad(|| concat_flat(&tensors))?)
    }

    /// Copies the variables into one host f32 vector in canonical order.
    pub fn flatten(&self, vs: &nn::VarStore) -> Result<Vec<f32>, WorkloadError> {
        to_host(&self.concat(vs)?)
    }

    /// Flattens a list of tensors that follow this layout (e.g. gradients) the same way.
    pub fn flatten_tensors(&self, tensors: &[Tensor]) -> Result<Vec<f32>, WorkloadError> {
        to_host(&concat_flat(tensors)?)
    }

    /// Writes a flat state (canonical order) into the variables of `vs`, bit-exactly.
    pub fn unflatten(&self, vs: &nn::VarStore, state: &[f32]) -> Result<(), WorkloadError> {
        if state.len() != self.len_elements() {
            return Err(WorkloadError::StateMismatch {
                reason: format!(
                    "state has {} elements, the model needs {}",
                    state.len(),
                    self.len_elements()
                ),
            });
        }
        let tensors = self.tensors(vs)?;
        let device = vs.device();
        tch::no_grad(|| -> Result<(), WorkloadError> {
            let src = Tensor::f_from_slice(state)?.f_to_device(device)?;
            for (entry, t) in self.entries.iter().zip(tensors) {
                let part = src
                    .f_narrow(0, entry.offset_elements as i64, entry.len_elements as i64)?
                    .f_view(entry.shape.as_slice())?;
                let mut t = t;
                t.f_copy_(&part)?;
            }
            Ok(())
        })
    }

    /// Element ranges of each trainable parameter group, by layer name (the tensor name without
    /// its last component), in canonical order. Used for per-layer metrics.
    pub fn layer_ranges(&self) -> Vec<(String, Vec<std::ops::Range<usize>>)> {
        let mut out: Vec<(String, Vec<std::ops::Range<usize>>)> = Vec::new();
        for e in &self.entries {
            let layer = e
                .name
                .rsplit_once('.')
                .map_or(e.name.as_str(), |(l, _)| l)
                .to_string();
            let range = e.offset_elements..e.offset_elements + e.len_elements;
            match out.iter_mut().find(|(l, _)| *l == layer) {
                Some((_, ranges)) => ranges.push(range),
                None => out.push((layer, vec![range])),
            }
        }
        out
    }
}

/// The tensors flattened and concatenated, as f32.
fn concat_flat(tensors: &[Tensor]) -> Result<Tensor, tch::TchError> {
    let parts: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.f_detach()?.f_reshape([-1]))
        .collect::<Result<_, _>>()?;
    Tensor::f_cat(&parts, 0)?.f_to_kind(Kind::Float)
}

/// A flat f32 tensor's values as a host vector (from any device).
pub fn to_host(flat: &Tensor) -> Result<Vec<f32>, WorkloadError> {
    let flat = flat.f_to_device(tch::Device::Cpu)?;
    let n = flat.numel();
    let mut out = vec![0f32; n];
    flat.f_copy_data(&mut out, n)?;
    Ok(out)
}
