//! The canonical state order: every tensor of a model (parameters and buffers such as
//! BatchNorm running statistics), sorted by name, concatenated into one vector of 4-byte words.
//!
//! A built-in model's `VarStore::variables()` is a `HashMap` and a TorchScript module lists its
//! tensors in definition order; sorting by name ("features.conv0.weight", ...) gives one rule
//! for both that depends only on the model. Each tensor is stored row-major (libtorch's
//! contiguous layout); `f32` tensors as their values, others as their bytes (see
//! [`StateDType`]).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::WorkloadError;

/// Element type of a state tensor. Trainable parameters are always `f32`; buffers may be of
/// any of these (BatchNorm's `num_batches_tracked` is `i64`). A tensor of another type than
/// `f32` is stored bit-exactly as its little-endian bytes packed into 4-byte words of the flat
/// state (zero-padded to a whole word), so it survives the f32-word codecs unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateDType {
    #[default]
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StateDType {
    /// The dtype of a libtorch kind, if the state can hold it.
    pub fn of_kind(kind: Kind) -> Option<Self> {
        Some(match kind {
            Kind::Float => StateDType::F32,
            Kind::Double => StateDType::F64,
            Kind::Half => StateDType::F16,
            Kind::BFloat16 => StateDType::Bf16,
            Kind::Int64 => StateDType::I64,
            Kind::Int => StateDType::I32,
            Kind::Int16 => StateDType::I16,
            Kind::Int8 => StateDType::I8,
            Kind::Uint8 => StateDType::U8,
            Kind::Bool => StateDType::Bool,
            _ => return None,
        })
    }

    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            StateDType::F32 => Kind::Float,
            StateDType::F64 => Kind::Double,
            StateDType::F16 => Kind::Half,
            StateDType::Bf16 => Kind::BFloat16,
            StateDType::I64 => Kind::Int64,
            StateDType::I32 => Kind::Int,
            StateDType::I16 => Kind::Int16,
            StateDType::I8 => Kind::Int8,
            StateDType::U8 => Kind::Uint8,
            StateDType::Bool => Kind::Bool,
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            StateDType::F64 | StateDType::I64 => 8,
            StateDType::F32 | StateDType::I32 => 4,
            StateDType::F16 | StateDType::Bf16 | StateDType::I16 => 2,
            StateDType::I8 | StateDType::U8 | StateDType::Bool => 1,
        }
    }

    /// The name used in layouts (`f32`, `i64`, ...), as the recording format spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StateDType::F32 => "f32",
            StateDType::F64 => "f64",
            StateDType::F16 => "f16",
            StateDType::Bf16 => "bf16",
            StateDType::I64 => "i64",
            StateDType::I32 => "i32",
            StateDType::I16 => "i16",
            StateDType::I8 => "i8",
            StateDType::U8 => "u8",
            StateDType::Bool => "bool",
        }
    }

    /// 4-byte words that `numel` elements occupy in the flat state.
    pub fn words(self, numel: usize) -> usize {
        (numel * self.size_bytes()).div_ceil(4)
    }

    fn is_f32(&self) -> bool {
        *self == StateDType::F32
    }
}

/// One variable of the canonical state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Name, e.g. `stage0.block0.conv0.weight` (a built-in model's `VarStore` path, or the
    /// PyTorch `state_dict` key of a TorchScript module).
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<i64>,
    /// First 4-byte word of this tensor in the flat state.
    pub offset_elements: usize,
    /// Number of 4-byte words (= elements for `f32`).
    pub len_elements: usize,
    /// True for trained parameters, false for buffers (BatchNorm running mean/var).
    pub trainable: bool,
    /// Element type (absent in run descriptions written before it existed: `f32`).
    #[serde(default, skip_serializing_if = "StateDType::is_f32")]
    pub dtype: StateDType,
}

impl StateEntry {
    /// Elements of the tensor (the product of its shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().map(|&d| d.max(0) as usize).product()
    }

    /// Word range in the flat state.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset_elements..self.offset_elements + self.len_elements
    }
}

/// The ordered list of variables of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateLayout {
    /// Entries in canonical (name-sorted) order.
    pub entries: Vec<StateEntry>,
}

impl StateLayout {
    /// The canonical layout of named tensors (sorted by name) and the tensors in that order.
    pub fn from_named_tensors(
        named: impl IntoIterator<Item = (String, Tensor, bool)>,
        module: &str,
    ) -> Result<(Self, Vec<Tensor>), WorkloadError> {
        let mut named: Vec<(String, Tensor, bool)> = named.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut offset = 0;
        let mut entries = Vec::with_capacity(named.len());
        let mut tensors = Vec::with_capacity(named.len());
        for (name, t, trainable) in named {
            let kind = t.f_kind()?;
            let dtype =
                StateDType::of_kind(kind).ok_or_else(|| WorkloadError::UnsupportedDtype {
                    module: module.to_string(),
                    tensor: name.clone(),
                    dtype: format!("{kind:?}"),
                    reason: "not a dtype a recording can hold",
                })?;
            if trainable && dtype != StateDType::F32 {
                return Err(WorkloadError::UnsupportedDtype {
                    module: module.to_string(),
                    tensor: name,
                    dtype: dtype.as_str().into(),
                    reason: "trainable parameters must be f32 (sgdwalk trains in f32)",
                });
            }
            let len = dtype.words(t.numel());
            entries.push(StateEntry {
                name,
                shape: t.size(),
                offset_elements: offset,
                len_elements: len,
                trainable,
                dtype,
            });
            offset += len;
            tensors.push(t);
        }
        Ok((StateLayout { entries }, tensors))
    }

    /// Total number of 4-byte words in the flat state.
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

    /// Word ranges of the tensors that are not `f32` (they are copied, never interpolated or
    /// included in norms).
    pub fn non_float_ranges(&self) -> Vec<std::ops::Range<usize>> {
        self.entries
            .iter()
            .filter(|e| e.dtype != StateDType::F32)
            .map(StateEntry::range)
            .collect()
    }

    /// Checks that `tensors` follow this layout (count, shapes, dtypes).
    pub fn check(&self, tensors: &[Tensor]) -> Result<(), WorkloadError> {
        if tensors.len() != self.entries.len() {
            return Err(WorkloadError::StateMismatch {
                reason: format!(
                    "model has {} tensors, layout has {}",
                    tensors.len(),
                    self.entries.len()
                ),
            });
        }
        for (e, t) in self.entries.iter().zip(tensors) {
            if t.size() != e.shape || StateDType::of_kind(t.f_kind()?) != Some(e.dtype) {
                return Err(WorkloadError::StateMismatch {
                    reason: format!(
                        "tensor {} is {:?} {:?}, layout says {} {:?}",
                        e.name,
                        t.f_kind()?,
                        t.size(),
                        e.dtype.as_str(),
                        e.shape
                    ),
                });
            }
        }
        Ok(())
    }

    /// The tensors (canonical order) concatenated into one flat f32-word tensor on their
    /// device (a copy; no host transfer).
    pub fn concat(&self, tensors: &[Tensor]) -> Result<Tensor, WorkloadError> {
        Ok(Tensor::f_cat(&self.word_views(tensors)?, 0)?)
    }

    /// The tensors (canonical order) seen as flat f32 words.
    fn word_views(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>, WorkloadError> {
        self.entries
            .iter()
            .zip(tensors)
            .map(|(e, t)| as_words(t, e.dtype))
            .collect()
    }

    /// Writes the tensors (canonical order) as flat f32 words into `out`, a flat f32 tensor of
    /// [`Self::len_elements`] on their device, without allocating a state-sized tensor.
    pub fn concat_into(&self, tensors: &[Tensor], out: &Tensor) -> Result<(), WorkloadError> {
        let n = self.len_elements();
        if out.size() != [n as i64] || out.f_kind()? != Kind::Float {
            return Err(WorkloadError::StateMismatch {
                reason: format!(
                    "snapshot buffer is {:?} {:?}, the state needs f32 [{n}]",
                    out.f_kind()?,
                    out.size()
                ),
            });
        }
        // The result aliases `out`.
        let _filled = Tensor::f_cat_out(out, &self.word_views(tensors)?, 0)?;
        Ok(())
    }

    /// Copies the tensors into one host f32-word vector in canonical order.
    pub fn flatten(&self, tensors: &[Tensor]) -> Result<Vec<f32>, WorkloadError> {
        to_host(&tch::no_grad(|| self.concat(tensors))?)
    }

    /// Flattens f32 tensors that follow the trainable part of this layout (e.g. gradients).
    pub fn flatten_tensors(&self, tensors: &[Tensor]) -> Result<Vec<f32>, WorkloadError> {
        to_host(&concat_flat(tensors)?)
    }

    /// Writes a flat state (canonical order) into `tensors`, bit-exactly.
    pub fn unflatten(&self, tensors: &[Tensor], state: &[f32]) -> Result<(), WorkloadError> {
        if state.len() != self.len_elements() {
            return Err(WorkloadError::StateMismatch {
                reason: format!(
                    "state has {} elements, the model needs {}",
                    state.len(),
                    self.len_elements()
                ),
            });
        }
        let Some(first) = tensors.first() else {
            return Ok(());
        };
        let device = first.device();
        tch::no_grad(|| -> Result<(), WorkloadError> {
            let src = Tensor::f_from_slice(state)?.f_to_device(device)?;
            for (entry, t) in self.entries.iter().zip(tensors) {
                let words =
                    src.f_narrow(0, entry.offset_elements as i64, entry.len_elements as i64)?;
                let part = from_words(&words, entry)?;
                let mut t = t.shallow_clone();
                t.f_copy_(&part)?;
            }
            Ok(())
        })
    }

    /// Word ranges of each group of `f32` tensors, by layer name (the tensor name without its
    /// last component), in canonical order. Used for per-layer metrics.
    pub fn layer_ranges(&self) -> Vec<(String, Vec<std::ops::Range<usize>>)> {
        let mut out: Vec<(String, Vec<std::ops::Range<usize>>)> = Vec::new();
        for e in self.entries.iter().filter(|e| e.dtype == StateDType::F32) {
            let layer = e
                .name
                .rsplit_once('.')
                .map_or(e.name.as_str(), |(l, _)| l)
                .to_string();
            let range = e.range();
            match out.iter_mut().find(|(l, _)| *l == layer) {
                Some((_, ranges)) => ranges.push(range),
                None => out.push((layer, vec![range])),
            }
        }
        out
    }
}

/// A tensor as flat 4-byte words: f32 as is; any other dtype as its bytes, zero-padded.
fn as_words(t: &Tensor, dtype: StateDType) -> Result<Tensor, WorkloadError> {
    let flat = t.f_detach()?.f_contiguous()?.f_reshape([-1])?;
    if dtype == StateDType::F32 {
        return Ok(flat);
    }
    let bytes = flat.f_view_dtype(Kind::Uint8)?;
    let n = bytes.size()[0];
    let padded = if n % 4 == 0 {
        bytes
    } else {
        let pad = Tensor::f_zeros([4 - n % 4], (Kind::Uint8, bytes.device()))?;
        Tensor::f_cat(&[bytes, pad], 0)?
    };
    Ok(padded.f_view_dtype(Kind::Float)?)
}

/// Inverse of [`as_words`]: the tensor of `entry` from its words.
fn from_words(words: &Tensor, entry: &StateEntry) -> Result<Tensor, WorkloadError> {
    if entry.dtype == StateDType::F32 {
        return Ok(words.f_view(entry.shape.as_slice())?);
    }
    let bytes = entry.numel() * entry.dtype.size_bytes();
    Ok(words
        .f_contiguous()?
        .f_view_dtype(Kind::Uint8)?
        .f_narrow(0, 0, bytes as i64)?
        .f_view_dtype(entry.dtype.kind())?
        .f_view(entry.shape.as_slice())?)
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
