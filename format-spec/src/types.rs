//! Public data types of the API (what the writer is given and the reader returns).

use serde::{Deserialize, Serialize};

use crate::consts::{
    MAX_AUGMENTATION_BYTES_PER_SAMPLE, MAX_CHUNK_LEN_ELEMENTS, MAX_KEYFRAME_INTERVAL,
    MAX_LAYOUT_TENSORS, MAX_STATE_LEN_ELEMENTS, MAX_TENSOR_NAME_BYTES,
};
use crate::error::FormatError;

/// Element type of a tensor in the layout. Format 1.0 holds only `f32`; 1.1 adds the others
/// (SPEC.md §4.2): a tensor of another dtype is stored as its little-endian bytes packed into
/// 4-byte words of the flat state, zero-padded to a whole word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DType {
    /// IEEE-754 binary32, little endian (one word per element).
    F32,
    /// IEEE-754 binary64.
    F64,
    /// IEEE-754 binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    BF16,
    /// Two's complement 64-bit integer.
    I64,
    /// Two's complement 32-bit integer.
    I32,
    /// Two's complement 16-bit integer.
    I16,
    /// Two's complement 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte: 0 or 1.
    Bool,
}

impl DType {
    /// Every dtype, `f32` first.
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// 4-byte words that `numel` elements occupy in the flat state: `ceil(numel × size / 4)`
    /// (`numel` for `f32`); `None` on overflow.
    pub fn words(self, numel: u64) -> Option<u64> {
        Some(numel.checked_mul(self.size_bytes())?.div_ceil(4))
    }

    /// The name in layout JSON (`"f32"`, `"i64"`, `"bf16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of the canonical state: a contiguous range of 4-byte words of the flat state
/// vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name (e.g. `layers.0.weight`), UTF-8, unique.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (row-major). The element count is the product (1 for a scalar).
    pub shape: Vec<u64>,
    /// Offset of the first word in the flat state vector (= elements before it when every
    /// tensor is `f32`).
    pub offset_elements: u64,
}

impl TensorSpec {
    /// Elements of the tensor (the product of its shape); `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        shape_elements(&self.shape)
    }

    /// 4-byte words the tensor occupies in the flat state; `None` on overflow.
    pub fn len_words(&self) -> Option<u64> {
        self.dtype.words(self.numel()?)
    }

    /// Word range of the tensor in the flat state; `None` on overflow.
    pub fn word_range(&self) -> Option<std::ops::Range<u64>> {
        Some(self.offset_elements..self.offset_elements.checked_add(self.len_words()?)?)
    }
}

/// Codec of one stored chunk (the `codec` byte of a chunk table entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CodecId {
    /// Little-endian bytes, uncompressed.
    Raw = 0,
    /// Byte-shuffle (4 planes) + zstd.
    Key = 1,
    /// XOR with the previous step's bit pattern, byte-shuffle + zstd.
    XorPrev = 2,
    /// Zigzag of the wrapping i32 difference to the previous step, byte-shuffle + zstd.
    ZigzagDeltaPrev = 3,
    /// Order-2 integer predictor with a stored momentum coefficient, zigzag, shuffle + zstd.
    Pred2 = 4,
    /// The words of `Key`, stored as split byte streams (format 1.3).
    KeySplit = 5,
    /// The residual of `XorPrev`, stored as split byte streams (format 1.3).
    XorPrevSplit = 6,
    /// The residual of `ZigzagDeltaPrev`, stored as split byte streams (format 1.3).
    ZigzagDeltaPrevSplit = 7,
    /// The residual of `Pred2`, stored as split byte streams (format 1.3).
    Pred2Split = 8,
}

impl CodecId {
    /// The codec a delta chunk is actually written with: pred2 needs θ_{t−2}, and without it
    /// (the first delta of a chain) falls back to the zigzag delta against θ_{t−1}.
    pub fn effective(self, has_prev2: bool) -> CodecId {
        match self {
            CodecId::Pred2 if !has_prev2 => CodecId::ZigzagDeltaPrev,
            CodecId::Pred2Split if !has_prev2 => CodecId::ZigzagDeltaPrevSplit,
            c => c,
        }
    }

    /// All codecs, in id order.
    pub const ALL: [CodecId; 9] = [
        CodecId::Raw,
        CodecId::Key,
        CodecId::XorPrev,
        CodecId::ZigzagDeltaPrev,
        CodecId::Pred2,
        CodecId::KeySplit,
        CodecId::XorPrevSplit,
        CodecId::ZigzagDeltaPrevSplit,
        CodecId::Pred2Split,
    ];

    /// The codec whose residual words this one stores (itself for 0–4; 5–8 store those of
    /// 1–4 as split byte streams instead of zstd(shuffle4)).
    pub fn residual(self) -> CodecId {
        match self {
            CodecId::KeySplit => CodecId::Key,
            CodecId::XorPrevSplit => CodecId::XorPrev,
            CodecId::ZigzagDeltaPrevSplit => CodecId::ZigzagDeltaPrev,
            CodecId::Pred2Split => CodecId::Pred2,
            c => c,
        }
    }

    /// The split-stream variant of a codec (raw and the split codecs stay as they are).
    pub fn split(self) -> CodecId {
        match self {
            CodecId::Key => CodecId::KeySplit,
            CodecId::XorPrev => CodecId::XorPrevSplit,
            CodecId::ZigzagDeltaPrev => CodecId::ZigzagDeltaPrevSplit,
            CodecId::Pred2 => CodecId::Pred2Split,
            c => c,
        }
    }

    /// Whether chunks of this codec are stored as split byte streams (SPEC.md §5.2).
    pub fn is_split(self) -> bool {
        self.as_u8() >= CodecId::KeySplit.as_u8()
    }

    /// Parses a stored codec id; `None` for ids this version does not know.
    pub fn from_u8(id: u8) -> Option<CodecId> {
        CodecId::ALL.get(usize::from(id)).copied()
    }

    /// The stored id.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Stable lowercase name (as in `--json` output).
    pub fn name(self) -> &'static str {
        match self {
            CodecId::Raw => "raw",
            CodecId::Key => "key",
            CodecId::XorPrev => "xor_prev",
            CodecId::ZigzagDeltaPrev => "zigzag_delta_prev",
            CodecId::Pred2 => "pred2",
            CodecId::KeySplit => "key_split",
            CodecId::XorPrevSplit => "xor_prev_split",
            CodecId::ZigzagDeltaPrevSplit => "zigzag_delta_prev_split",
            CodecId::Pred2Split => "pred2_split",
        }
    }

    /// Whether a chunk in this codec decodes without any previous state.
    pub fn is_standalone(self) -> bool {
        matches!(self.residual(), CodecId::Raw | CodecId::Key)
    }

    /// How many previous states the decoder needs (0, 1 or 2).
    pub fn bases_needed(self) -> u8 {
        match self.residual() {
            CodecId::XorPrev | CodecId::ZigzagDeltaPrev => 1,
            CodecId::Pred2 => 2,
            _ => 0,
        }
    }
}

impl std::fmt::Display for CodecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How states are cut into chunks and encoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodecSettings {
    /// Elements per chunk (the last chunk may be shorter). Default 262 144 (1 MiB of f32).
    pub chunk_len_elements: u32,
    /// A keyframe is stored at every step that is a multiple of this (K). Default 32.
    pub keyframe_interval: u32,
    /// zstd compression level. Default 1.
    pub zstd_level: i32,
    /// Codec for chunks of non-keyframe steps. Default [`CodecId::Pred2`] (measured best, see
    /// `benches/codec.rs`).
    pub delta_codec: CodecId,
    /// Store chunks as split byte streams (codecs 5–8, format 1.3, incompat bit SPLIT_STREAMS)
    /// rather than zstd(shuffle4) (codecs 1–4): as small and several times faster
    /// (`benches/codec.rs`), but readable by 1.3 readers only. Default `false`, so that a new
    /// file stays readable by 1.2 readers unless asked otherwise. Read from the prologue;
    /// absent in older descriptions.
    #[serde(default)]
    pub split_streams: bool,
}

impl Default for CodecSettings {
    fn default() -> Self {
        CodecSettings {
            chunk_len_elements: 262_144,
            keyframe_interval: 32,
            zstd_level: 1,
            delta_codec: CodecId::Pred2,
            split_streams: false,
        }
    }
}

impl CodecSettings {
    pub(crate) fn validate(&self) -> Result<(), FormatError> {
        if self.chunk_len_elements == 0 || self.chunk_len_elements > MAX_CHUNK_LEN_ELEMENTS {
            return Err(FormatError::SizeCap {
                what: "chunk_len_elements",
                value: u64::from(self.chunk_len_elements),
                cap: u64::from(MAX_CHUNK_LEN_ELEMENTS),
            });
        }
        if self.keyframe_interval == 0 || self.keyframe_interval > MAX_KEYFRAME_INTERVAL {
            return Err(FormatError::SizeCap {
                what: "keyframe_interval",
                value: u64::from(self.keyframe_interval),
                cap: u64::from(MAX_KEYFRAME_INTERVAL),
            });
        }
        // zstd accepts negative levels down to -131072 and up to 22.
        if !(-131_072..=22).contains(&self.zstd_level) {
            return Err(FormatError::invalid_input(format!(
                "zstd_level {} outside -131072..=22",
                self.zstd_level
            )));
        }
        if self.delta_codec.is_standalone() {
            return Err(FormatError::invalid_input(format!(
                "delta_codec must be a delta codec, got {}",
                self.delta_codec
            )));
        }
        Ok(())
    }
}

/// Everything recorded once per file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Random run identifier (e.g. a UUID v4).
    pub run_id: [u8; 16],
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Tensors of the canonical state, in the given order: contiguous, no holes, no overlap.
    pub layout: Vec<TensorSpec>,
    /// Total 4-byte words (elements) of the state; must equal the sum of the layout's word
    /// counts ([`TensorSpec::len_words`]).
    pub state_len_elements: u64,
    /// Bytes of opaque augmentation choice per sample id.
    pub augmentation_bytes_per_sample: u32,
    /// Opaque JSON object (model, dataset, optimizer, seeds, host...).
    pub metadata_json: String,
    /// Chunking and codec settings.
    pub codec: CodecSettings,
}

impl Header {
    /// A header whose `state_len_elements` is derived from `layout`.
    pub fn new(
        run_id: [u8; 16],
        created_unix_ms: u64,
        layout: Vec<TensorSpec>,
        augmentation_bytes_per_sample: u32,
        metadata_json: String,
        codec: CodecSettings,
    ) -> Result<Header, FormatError> {
        let state_len_elements = layout_len_elements(&layout)?;
        let header = Header {
            run_id,
            created_unix_ms,
            layout,
            state_len_elements,
            augmentation_bytes_per_sample,
            metadata_json,
            codec,
        };
        header.validate()?;
        Ok(header)
    }

    /// Builds a contiguous layout of `f32` tensors from `(name, shape)` pairs in the given order.
    pub fn contiguous_layout(tensors: &[(&str, &[u64])]) -> Result<Vec<TensorSpec>, FormatError> {
        let typed: Vec<(&str, DType, &[u64])> =
            tensors.iter().map(|&(n, s)| (n, DType::F32, s)).collect();
        Header::typed_layout(&typed)
    }

    /// Builds a contiguous layout from `(name, dtype, shape)` triples in the given order: each
    /// tensor takes [`DType::words`] of its element count.
    pub fn typed_layout(tensors: &[(&str, DType, &[u64])]) -> Result<Vec<TensorSpec>, FormatError> {
        let mut offset_elements = 0u64;
        let mut layout = Vec::with_capacity(tensors.len());
        for &(name, dtype, shape) in tensors {
            let words = shape_elements(shape)
                .and_then(|n| dtype.words(n))
                .ok_or_else(|| FormatError::invalid_layout(format!("shape of {name} overflows")))?;
            layout.push(TensorSpec {
                name: name.to_owned(),
                dtype,
                shape: shape.to_vec(),
                offset_elements,
            });
            offset_elements = offset_elements
                .checked_add(words)
                .ok_or_else(|| FormatError::invalid_layout("total size overflows"))?;
        }
        Ok(layout)
    }

    /// Whether some tensor of the layout is not `f32` (the file then needs the incompat
    /// feature bit [`crate::INCOMPAT_TYPED_LAYOUT`], format 1.1).
    pub fn has_typed_layout(&self) -> bool {
        self.layout.iter().any(|t| t.dtype != DType::F32)
    }

    /// Checks every rule of SPEC.md "Header record" (the writer runs this before writing, the
    /// reader after reading).
    pub fn validate(&self) -> Result<(), FormatError> {
        self.codec.validate()?;
        let total = layout_len_elements(&self.layout)?;
        if total != self.state_len_elements {
            return Err(FormatError::invalid_layout(format!(
                "state_len_elements {} but layout covers {total}",
                self.state_len_elements
            )));
        }
        if self.augmentation_bytes_per_sample > MAX_AUGMENTATION_BYTES_PER_SAMPLE {
            return Err(FormatError::SizeCap {
                what: "augmentation_bytes_per_sample",
                value: u64::from(self.augmentation_bytes_per_sample),
                cap: u64::from(MAX_AUGMENTATION_BYTES_PER_SAMPLE),
            });
        }
        match serde_json::from_str::<serde_json::Value>(&self.metadata_json) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(FormatError::invalid_input(
                "metadata_json must be a JSON object",
            )),
        }
    }

    /// Number of chunks each state is cut into.
    pub fn chunk_count(&self) -> u64 {
        self.state_len_elements
            .div_ceil(u64::from(self.codec.chunk_len_elements.max(1)))
    }
}

fn shape_elements(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Validates the layout (contiguous from 0 in 4-byte words, in order, unique non-empty names)
/// and returns the total word count.
fn layout_len_elements(layout: &[TensorSpec]) -> Result<u64, FormatError> {
    if layout.len() > MAX_LAYOUT_TENSORS {
        return Err(FormatError::SizeCap {
            what: "layout tensors",
            value: layout.len() as u64,
            cap: MAX_LAYOUT_TENSORS as u64,
        });
    }
    let mut names = std::collections::BTreeSet::new();
    let mut next_offset = 0u64;
    for t in layout {
        if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME_BYTES {
            return Err(FormatError::invalid_layout(format!(
                "tensor name must be 1..={MAX_TENSOR_NAME_BYTES} bytes: {:?}",
                t.name
            )));
        }
        if !names.insert(t.name.as_str()) {
            return Err(FormatError::invalid_layout(format!(
                "duplicate tensor name {:?}",
                t.name
            )));
        }
        if t.offset_elements != next_offset {
            return Err(FormatError::invalid_layout(format!(
                "tensor {:?} starts at element {} but the previous tensor ends at {next_offset} \
                 (holes and overlaps are not allowed)",
                t.name, t.offset_elements
            )));
        }
        let n = t.len_words().ok_or_else(|| {
            FormatError::invalid_layout(format!("shape of {:?} overflows", t.name))
        })?;
        next_offset = next_offset
            .checked_add(n)
            .ok_or_else(|| FormatError::invalid_layout("total size overflows"))?;
    }
    if next_offset > MAX_STATE_LEN_ELEMENTS {
        return Err(FormatError::SizeCap {
            what: "state_len_elements",
            value: next_offset,
            cap: MAX_STATE_LEN_ELEMENTS,
        });
    }
    Ok(next_offset)
}

/// Per-step scalars of update t. `None` means "absent" (not recorded); `Some(NaN)` is a NaN
/// that was recorded (a diverged run's loss). Files of format 1.2 keep the two apart (an absent
/// mask, SPEC.md §4.3); in 1.0 and 1.1 files NaN stands for "absent", so a reader returns `None`
/// for every NaN there, and a writer continuing such a file stores `None` and `Some(NaN)` alike
/// as NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepScalars {
    /// Learning rate used by update t.
    pub learning_rate: Option<f64>,
    /// Loss of minibatch B_t at θ_t.
    pub minibatch_loss: Option<f64>,
    /// Norm of the minibatch gradient w.r.t. the trainable parameters.
    pub grad_norm: Option<f64>,
    /// Norm of update t of the trainable parameters.
    pub update_norm: Option<f64>,
    /// Seconds since the start of the run.
    pub wall_time_secs: Option<f64>,
}

/// How a file says that a step scalar is absent (SPEC.md §4.3): decided once per file by its
/// prologue's incompat bit [`crate::INCOMPAT_ABSENT_MASK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalarPresence {
    /// Format 1.0 and 1.1 (bit clear): NaN means absent, STEP byte 62 is reserved (zero).
    NanMeansAbsent,
    /// Format 1.2 (bit set): STEP byte 62 is the absent mask; NaN is a recorded value.
    AbsentMask,
}

impl ScalarPresence {
    /// The encoding a file with these prologue incompat flags uses.
    pub fn from_incompat_flags(incompat_flags: u64) -> ScalarPresence {
        if incompat_flags & crate::consts::INCOMPAT_ABSENT_MASK != 0 {
            ScalarPresence::AbsentMask
        } else {
            ScalarPresence::NanMeansAbsent
        }
    }
}

/// Bits of the f64 stored for an absent scalar (the canonical quiet NaN), in every version.
pub const ABSENT_SCALAR_BITS: u64 = 0x7FF8_0000_0000_0000;
/// Names of the step scalars in stored order (bit i of the absent mask is scalar i).
pub const STEP_SCALAR_NAMES: [&str; 5] = [
    "learning_rate",
    "minibatch_loss",
    "grad_norm",
    "update_norm",
    "wall_time_secs",
];

impl StepScalars {
    /// Every scalar absent.
    pub fn absent() -> StepScalars {
        StepScalars::default()
    }

    /// Every scalar present with these values (NaN stays a value).
    pub fn all(
        learning_rate: f64,
        minibatch_loss: f64,
        grad_norm: f64,
        update_norm: f64,
        wall_time_secs: f64,
    ) -> StepScalars {
        StepScalars::from_array(
            [
                learning_rate,
                minibatch_loss,
                grad_norm,
                update_norm,
                wall_time_secs,
            ]
            .map(Some),
        )
    }

    /// Bitwise equality: the same scalars absent, the others with the same bit patterns (NaN
    /// equals NaN with the same payload).
    pub fn bits_eq(&self, other: &StepScalars) -> bool {
        let bits = |s: &StepScalars| s.to_array().map(|v| v.map(f64::to_bits));
        bits(self) == bits(other)
    }

    /// The scalars in stored order ([`STEP_SCALAR_NAMES`]).
    pub fn to_array(self) -> [Option<f64>; 5] {
        [
            self.learning_rate,
            self.minibatch_loss,
            self.grad_norm,
            self.update_norm,
            self.wall_time_secs,
        ]
    }

    /// The inverse of [`StepScalars::to_array`].
    pub fn from_array(a: [Option<f64>; 5]) -> StepScalars {
        StepScalars {
            learning_rate: a[0],
            minibatch_loss: a[1],
            grad_norm: a[2],
            update_norm: a[3],
            wall_time_secs: a[4],
        }
    }

    /// The stored values and absent mask (SPEC.md §4.3). An absent scalar is stored as
    /// [`ABSENT_SCALAR_BITS`]; without a mask (1.0/1.1) the mask is 0 and a recorded NaN is
    /// indistinguishable from an absent value.
    pub(crate) fn to_stored(self, presence: ScalarPresence) -> ([f64; 5], u8) {
        let mut mask = 0u8;
        let values = self.to_array();
        let mut stored = [0f64; 5];
        for (i, v) in values.iter().enumerate() {
            stored[i] = v.unwrap_or_else(|| {
                mask |= 1 << i;
                f64::from_bits(ABSENT_SCALAR_BITS)
            });
        }
        match presence {
            ScalarPresence::AbsentMask => (stored, mask),
            ScalarPresence::NanMeansAbsent => (stored, 0),
        }
    }

    /// The scalars from stored values and mask, validated: in a file with absent masks the
    /// mask's bits 5..=7 are zero and an absent scalar holds [`ABSENT_SCALAR_BITS`]; without
    /// masks NaN reads as absent. `Err` names the broken rule.
    pub(crate) fn from_stored(
        stored: [f64; 5],
        mask: u8,
        presence: ScalarPresence,
    ) -> Result<StepScalars, String> {
        let mut out = [None; 5];
        match presence {
            ScalarPresence::NanMeansAbsent => {
                if mask != 0 {
                    return Err(format!(
                        "reserved step byte 62 is {mask:#04x} in a file without absent masks"
                    ));
                }
                for (o, v) in out.iter_mut().zip(stored) {
                    *o = (!v.is_nan()).then_some(v);
                }
            }
            ScalarPresence::AbsentMask => {
                if mask >> 5 != 0 {
                    return Err(format!(
                        "absent mask {mask:#04x} has reserved bits 5..=7 set"
                    ));
                }
                for (i, (o, v)) in out.iter_mut().zip(stored).enumerate() {
                    if mask & (1 << i) == 0 {
                        *o = Some(v);
                    } else if v.to_bits() != ABSENT_SCALAR_BITS {
                        return Err(format!(
                            "absent scalar {} holds {:#018x}, not the absent NaN {ABSENT_SCALAR_BITS:#018x}",
                            STEP_SCALAR_NAMES[i],
                            v.to_bits()
                        ));
                    }
                }
            }
        }
        Ok(StepScalars::from_array(out))
    }
}

/// What the writer is given for one step t: θ_t (the state BEFORE update t), and the minibatch
/// B_t, its augmentation choices and the scalars of update t. The last state of a run has empty
/// ids.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    /// Step number t.
    pub step: u64,
    /// θ_t, `state_len_elements` long.
    pub state: &'a [f32],
    /// Sample ids of B_t.
    pub sample_ids: &'a [u32],
    /// `sample_ids.len() * augmentation_bytes_per_sample` bytes.
    pub augmentation: &'a [u8],
    /// Scalars of update t.
    pub scalars: StepScalars,
}

/// One evaluation result of an epoch record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Split name ("train", "val", "test", ...).
    pub split: String,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy in 0..=1.
    pub accuracy: f64,
    /// Number of samples evaluated.
    pub samples: u64,
}

/// Evaluation results of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number.
    pub epoch: u32,
    /// The step whose state the evaluation was run on.
    pub step: u64,
    /// One entry per split.
    pub evals: Vec<EvalRecord>,
}

/// When the writer calls `fdatasync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsyncPolicy {
    /// Never (only the OS decides); `finish` still syncs nothing. For tests and scratch files.
    Never,
    /// After every keyframe step record, at `flush` and at `finish`.
    #[default]
    EveryKeyframe,
    /// After every record.
    EveryRecord,
}

/// Writer options that do not affect the bytes written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterOptions {
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Encoder threads; 0 = rayon's global pool.
    pub threads: usize,
    /// Write each step record while the next step is encoded, on a second thread, instead of
    /// before `write_step` returns: the file then lags the calls by one step record (written
    /// by the next write of any record, `flush`, `finish` or dropping the writer), and an I/O
    /// error of that record is returned by the call that writes it. Not under
    /// [`FsyncPolicy::EveryRecord`], and a keyframe under [`FsyncPolicy::EveryKeyframe`] is
    /// written and synced before its call returns, as without it.
    pub overlap_writes: bool,
}

/// A step's residual computed elsewhere (on the training device), as the split streams of each
/// chunk ([`crate::Writer::write_step_with_residual`]): what the writer would compute from θ_t and its
/// bases, so that it only entropy-codes the streams.
#[derive(Clone, Debug)]
pub struct PrecomputedResidual<'a> {
    /// The split delta codec the residual was computed with (`xor_prev_split`,
    /// `zigzag_delta_prev_split` or `pred2_split`).
    pub codec: CodecId,
    /// The step of θ_{t−1}, the state the residual was taken against.
    pub base_step: u64,
    /// The step of θ_{t−2} (pred2_split only).
    pub base2_step: Option<u64>,
    /// One entry per chunk, in chunk order.
    pub chunks: Vec<PrecomputedChunk<'a>>,
}

/// One chunk of a [`PrecomputedResidual`].
#[derive(Clone, Copy, Debug)]
pub struct PrecomputedChunk<'a> {
    /// pred2's coefficient the residual was computed with (ignored by the other codecs).
    pub mu_q8: u16,
    /// The 6 streams of SPEC.md §5.2: classes, lead0 … lead3, low.
    pub streams: [&'a [u8]; crate::codec::SPLIT_STREAMS],
}

/// What one `write_step` stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepWriteStats {
    /// Bytes of the raw state.
    pub raw_bytes: u64,
    /// Bytes of the whole step record on disk.
    pub stored_bytes: u64,
    /// Whether the step was stored as a keyframe.
    pub keyframe: bool,
    /// Time encoding the state's chunks (in parallel), with the wait for the previous record's
    /// write when writes overlap; the rest of the call is serial: the file write (unless
    /// overlapped), syncs, and advancing the bases.
    pub encode_time: std::time::Duration,
    /// Whether the step's chunks were coded from a [`PrecomputedResidual`] (false when none
    /// was given or it did not fit the step: a keyframe, other bases, another codec).
    pub precomputed: bool,
}

/// What `finish` produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSummary {
    /// Step records in the file.
    pub steps: u64,
    /// Raw bytes of all states in the file.
    pub raw_bytes: u64,
    /// Final file length.
    pub file_bytes: u64,
}

/// What `Writer::reopen` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Step records kept.
    pub complete_steps: u64,
    /// Bytes cut from the end of the file (torn tail, index, footer, dropped records).
    pub truncated_bytes: u64,
    /// Whether the file had a valid footer.
    pub had_footer: bool,
    /// Last step kept.
    pub last_step: Option<u64>,
}

/// Everything of one step except its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// Step number.
    pub step: u64,
    /// Sample ids of B_t.
    pub sample_ids: Vec<u32>,
    /// Augmentation bytes.
    pub augmentation: Vec<u8>,
    /// Scalars of update t.
    pub scalars: StepScalars,
    /// Whether the state is stored as a keyframe.
    pub keyframe: bool,
    /// Bytes of the step record on disk.
    pub stored_bytes: u64,
}

/// One attachment of a recording (an ATTACHMENT record, SPEC.md §4.9): a named blob such as
/// the TorchScript module file `model.pt`. Read its bytes with [`crate::Reader::attachment`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachmentInfo {
    /// Name, 1..=256 bytes of UTF-8, unique in the file.
    pub name: String,
    /// Length of the data.
    pub len_bytes: u64,
    /// SHA-256 of the data as stored in the record (checked when the data is read).
    #[serde(serialize_with = "serialize_hex")]
    pub sha256: [u8; 32],
    /// Offset of the ATTACHMENT record header.
    pub record_offset: u64,
    /// Offset of the first data byte in the file.
    pub data_offset: u64,
}

impl AttachmentInfo {
    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex_string(&self.sha256)
    }
}

pub(crate) fn hex_string(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex_string(bytes))
}
