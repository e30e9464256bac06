//! A step's residual and its split streams (SPEC.md §5.2) computed on the training device
//! (`--device-residual`), so that the host only entropy-codes them.
//!
//! Right after θ_t is copied into a snapshot-ring buffer, on the training stream, integer tensor
//! ops compute the residual words of θ_t against θ_{t−1} (and θ_{t−2} for pred2) that the device
//! keeps, then split every chunk's words into their class stream, leading bytes per class and
//! low bytes, in a fixed layout after the state in the same buffer ([`TailLayout`]). Nothing
//! waits on the host: every output has a fixed size (stream compaction by prefix sums and
//! scatters, no `nonzero`), so the copy to pinned memory moves state and streams together. The
//! writer codes the streams ([`sgdwalk_format::Writer::write_step_with_residual`]), hashes each
//! chunk from the state itself, and decodes one chunk per step to compare it with the state.
//!
//! The words are those of the host encoder bit for bit (tests check every stream against
//! `sgdwalk_format::codec::residual_streams`); pred2's μ is estimated per chunk on the device
//! (least squares as on the host, summed in another order, so a tie may round the other way:
//! any μ decodes exactly). Little-endian devices only (x86, ARM, CUDA).

use sgdwalk_format::codec::SPLIT_STREAMS;
use sgdwalk_format::{CodecId, PrecomputedChunk, PrecomputedResidual};
use tch::{Device, Kind, Tensor};

use crate::error::RecordError;

/// Unsigned 32-bit words held in i64 lanes (libtorch has no u32 arithmetic).
const LOW32: i64 = 0xFFFF_FFFF;
/// pred2's μ estimate ignores differences of this magnitude or more (as the host encoder does).
const MU_OUTLIER: i64 = 1 << 22;

/// Where the streams of one state lie in the bytes after it, per chunk of `chunk_len` words (the
/// last chunk padded to `chunk_len` with zero words, class 0): class streams, leading bytes
/// (a chunk's classes one after the other, padding among class 0 after its words), low bytes
/// (room for 3 per word), one scratch word that masked-off scatters write to, then per chunk the
/// counts of classes 1–3 and μ as i32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailLayout {
    state_len: usize,
    chunk_len: usize,
    chunks: usize,
}

impl TailLayout {
    /// The layout for states of `state_len` words in chunks of `chunk_len`, which must be a
    /// multiple of 16 (so every region starts on a 4-byte boundary and μ's sample of every 16th
    /// word starts each chunk).
    pub fn new(state_len: usize, chunk_len: usize) -> Result<Self, RecordError> {
        if chunk_len == 0 || !chunk_len.is_multiple_of(16) || state_len == 0 {
            return Err(RecordError::Snapshot {
                reason: format!(
                    "device residuals need a chunk length that is a multiple of 16 and a state of at least 1 element (chunk {chunk_len}, state {state_len})"
                ),
            });
        }
        Ok(TailLayout {
            state_len,
            chunk_len,
            chunks: state_len.div_ceil(chunk_len),
        })
    }

    fn padded(&self) -> usize {
        self.chunks * self.chunk_len
    }
    fn leads_at(&self) -> usize {
        self.padded() / 4
    }
    /// Where the low bytes start in the bytes after the state.
    pub(crate) fn low_at(&self) -> usize {
        self.leads_at() + self.padded()
    }
    fn scratch_at(&self) -> usize {
        self.low_at() + 3 * self.padded()
    }
    fn counts_at(&self) -> usize {
        self.scratch_at() + 4
    }
    fn mu_at(&self) -> usize {
        self.counts_at() + 12 * self.chunks
    }

    /// Bytes after the state.
    pub fn len_bytes(&self) -> usize {
        self.mu_at() + 4 * self.chunks
    }

    /// f32 words after the state (the buffer holds the state, then these).
    pub fn len_f32(&self) -> usize {
        self.len_bytes() / 4
    }

    /// The per-chunk streams in `tail` (the bytes after the state, as the device wrote them).
    /// Counts that do not fit their chunk are an error, not a panic: the writer then encodes
    /// the step on the host.
    pub fn chunks<'a>(&self, tail: &'a [u8]) -> Result<Vec<PrecomputedChunk<'a>>, RecordError> {
        let bad = |reason: String| RecordError::Snapshot {
            reason: format!("device residual: {reason}"),
        };
        if tail.len() != self.len_bytes() {
            return Err(bad(format!(
                "{} bytes after the state, the layout needs {}",
                tail.len(),
                self.len_bytes()
            )));
        }
        let word =
            |at: usize| i32::from_le_bytes([tail[at], tail[at + 1], tail[at + 2], tail[at + 3]]);
        let cl = self.chunk_len;
        (0..self.chunks)
            .map(|c| {
                let len = cl.min(self.state_len - c * cl);
                let count =
                    |k: usize| usize::try_from(word(self.counts_at() + 12 * c + 4 * (k - 1)));
                let (Ok(c1), Ok(c2), Ok(c3)) = (count(1), count(2), count(3)) else {
                    return Err(bad(format!("chunk {c} has a negative class count")));
                };
                let c0 = len
                    .checked_sub(c1)
                    .and_then(|v| v.checked_sub(c2))
                    .and_then(|v| v.checked_sub(c3))
                    .ok_or_else(|| {
                        bad(format!(
                            "chunk {c}: class counts {c1} {c2} {c3} exceed its {len} words"
                        ))
                    })?;
                let mu_q8 = u16::try_from(word(self.mu_at() + 4 * c))
                    .map_err(|_| bad(format!("chunk {c}: μ out of range")))?;
                // Class 0 holds the padding of a short last chunk after the chunk's words.
                let c0_with_padding = c0 + (cl - len);
                let lead0 = self.leads_at() + c * cl;
                let lead1 = lead0 + c0_with_padding;
                let (lead2, lead3) = (lead1 + c1, lead1 + c1 + c2);
                let low = self.low_at() + 3 * c * cl;
                let streams: [&[u8]; SPLIT_STREAMS] = [
                    &tail[c * cl / 4..][..len.div_ceil(4)],
                    &tail[lead0..][..c0],
                    &tail[lead1..][..c1],
                    &tail[lead2..][..c2],
                    &tail[lead3..][..c3],
                    &tail[low..][..c1 + 2 * c2 + 3 * c3],
                ];
                Ok(PrecomputedChunk { mu_q8, streams })
            })
            .collect()
    }
}

/// What a ring buffer's tail holds: the residual of `step`'s state, coded with `codec` (a split
/// delta codec) against `base_step` (and `base2_step` for pred2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualTag {
    pub codec: CodecId,
    pub base_step: u64,
    pub base2_step: Option<u64>,
}

impl ResidualTag {
    /// The writer's view of the residual in `tail`.
    pub fn precomputed<'a>(
        &self,
        layout: &TailLayout,
        tail: &'a [u8],
    ) -> Result<PrecomputedResidual<'a>, RecordError> {
        Ok(PrecomputedResidual {
            codec: self.codec,
            base_step: self.base_step,
            base2_step: self.base2_step,
            chunks: layout.chunks(tail)?,
        })
    }
}

/// The device's bases and the residual pass over them (training thread).
pub struct DeviceResidual {
    layout: TailLayout,
    /// The recording's delta codec (its byte-plane id; the split variant is written).
    delta_codec: CodecId,
    keyframe_interval: u64,
    /// θ of `prev_step` and, for pred2, of `prev2_step`, on the device.
    prev: Tensor,
    prev2: Option<Tensor>,
    prev_step: Option<u64>,
    prev2_step: Option<u64>,
    /// 1, 4, 16, 64 on the device: made once, as a copy from pageable host memory waits for
    /// the device stream.
    class_weights: Tensor,
}

impl DeviceResidual {
    /// Allocates the bases on `device`: one state, two for pred2.
    pub fn new(
        layout: TailLayout,
        delta_codec: CodecId,
        keyframe_interval: u32,
        device: Device,
    ) -> Result<Self, RecordError> {
        let delta_codec = delta_codec.residual();
        if !matches!(
            delta_codec,
            CodecId::XorPrev | CodecId::ZigzagDeltaPrev | CodecId::Pred2
        ) {
            return Err(RecordError::Snapshot {
                reason: format!("device residuals need a delta codec, not {delta_codec:?}"),
            });
        }
        let n = layout.state_len as i64;
        let base = || Tensor::f_zeros([n], (Kind::Float, device));
        Ok(DeviceResidual {
            layout,
            delta_codec,
            keyframe_interval: u64::from(keyframe_interval.max(1)),
            prev: base()?,
            prev2: (delta_codec == CodecId::Pred2).then(base).transpose()?,
            prev_step: None,
            prev2_step: None,
            class_weights: Tensor::f_from_slice(&[1_i64, 4, 16, 64])?.f_to_device(device)?,
        })
    }

    /// Step `step`'s state is in `state` (f32 `[state_len]`): writes its residual's streams
    /// into `tail` (f32 `[layout.len_f32()]`, same device) when the step has one (a delta step
    /// that follows the last state seen), and keeps the state as the next base. Enqueued on the
    /// current stream; nothing waits for the device.
    pub fn compute(
        &mut self,
        step: u64,
        state: &Tensor,
        tail: &Tensor,
    ) -> Result<Option<ResidualTag>, RecordError> {
        let follows = |base: Option<u64>, gap: u64| base.is_some() && base == step.checked_sub(gap);
        let keyframe = step.is_multiple_of(self.keyframe_interval);
        let tag = if follows(self.prev_step, 1) && !keyframe {
            // θ_{t−2} is a base only when θ_{t−1} was not a keyframe (the writer's rule).
            let has_prev2 = self.prev2.is_some()
                && follows(self.prev2_step, 2)
                && !(step - 1).is_multiple_of(self.keyframe_interval);
            let codec = self.delta_codec.effective(has_prev2).split();
            let prev2 = if has_prev2 { self.prev2.as_ref() } else { None };
            let bases = Bases {
                prev: &self.prev,
                prev2,
                class_weights: &self.class_weights,
            };
            split_residual(&self.layout, codec, state, &bases, tail)?;
            Some(ResidualTag {
                codec,
                base_step: step - 1,
                base2_step: has_prev2.then(|| step - 2),
            })
        } else {
            None
        };
        // Rotate the bases: θ_{t−1} becomes θ_{t−2}, θ_t is copied into the freed buffer.
        if let Some(prev2) = &mut self.prev2 {
            std::mem::swap(prev2, &mut self.prev);
            self.prev2_step = self.prev_step;
        }
        self.prev.f_copy_(state)?;
        self.prev_step = Some(step);
        Ok(tag)
    }
}

/// The u32 bit patterns of an f32 tensor, in i64 lanes.
fn bits(t: &Tensor) -> Result<Tensor, RecordError> {
    Ok(t.f_view_dtype(Kind::Int)?
        .f_to_kind(Kind::Int64)?
        .f_bitwise_and(LOW32)?)
}

/// A u32 value (in an i64 lane, any i64 taken mod 2^32) read as i32.
fn signed(u: &Tensor) -> Result<Tensor, RecordError> {
    Ok(u.f_bitwise_and(LOW32)?
        .f_bitwise_xor(1_i64 << 31)?
        .f_sub_scalar(1_i64 << 31)?)
}

/// zigzag of a wrapping u32 difference (any i64, taken mod 2^32), as a u32 in an i64 lane.
fn zigzag(d: &Tensor) -> Result<Tensor, RecordError> {
    let s = signed(d)?;
    Ok(s.f_mul_scalar(2)?
        .f_bitwise_xor_tensor(&s.f_bitwise_right_shift_tensor_scalar(63)?)?
        .f_bitwise_and(LOW32)?)
}

/// A `[len]` view of `bytes` from `at`.
fn region(bytes: &Tensor, at: usize, len: usize) -> Result<Tensor, RecordError> {
    Ok(bytes.f_narrow(0, at as i64, len as i64)?)
}

/// pred2's μ per chunk (`[chunks]` i64, round(256 μ) in 0..=256) by least squares of
/// d0 = i32(c − p) on d1 over every 16th word of each chunk, outliers left out, as the host
/// encoder estimates it. Only the sampled words are read (a chunk starts on a multiple of 16).
fn estimate_mu(
    layout: &TailLayout,
    c: &Tensor,
    p: &Tensor,
    d1: &Tensor,
) -> Result<Tensor, RecordError> {
    let (chunks, per_chunk) = (layout.chunks as i64, (layout.chunk_len / 16) as i64);
    let sampled = |t: &Tensor| -> Result<Tensor, RecordError> {
        let every_16th = t.f_slice(0, 0, layout.state_len as i64, 16)?;
        Ok(pad_to(&every_16th, chunks * per_chunk)?.f_view([chunks, per_chunk])?)
    };
    let (x, y) = (signed(&sampled(c)?.f_sub(&sampled(p)?)?)?, sampled(d1)?);
    let inlier = x
        .f_abs()?
        .f_lt(MU_OUTLIER)?
        .f_logical_and(&y.f_abs()?.f_lt(MU_OUTLIER)?)?
        .f_to_kind(Kind::Double)?;
    let x = x.f_to_kind(Kind::Double)?.f_mul(&inlier)?;
    let y = y.f_to_kind(Kind::Double)?.f_mul(&inlier)?;
    let num = x.f_mul(&y)?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let den = y.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let mu = num.f_div(&den)?.f_clamp(0.0, 1.0)?;
    let mu = mu.f_where_self(&den.f_gt(0.0)?, &mu.f_zeros_like()?)?;
    Ok(mu.f_mul_scalar(256.0)?.f_round()?.f_to_kind(Kind::Int64)?)
}

/// `t` (`[state_len]`) padded with zeros to whole chunks.
fn pad(layout: &TailLayout, t: &Tensor) -> Result<Tensor, RecordError> {
    pad_to(t, layout.padded() as i64)
}

/// A 1-D `t` padded with zeros to `len` elements.
fn pad_to(t: &Tensor, len: i64) -> Result<Tensor, RecordError> {
    let extra = len - t.size1()?;
    if extra == 0 {
        return Ok(t.shallow_clone());
    }
    let zeros = Tensor::f_zeros([extra], (t.f_kind()?, t.device()))?;
    Ok(Tensor::f_cat(&[t, &zeros], 0)?)
}

/// What [`split_residual`] takes besides the state: the bases and a constant, on the device.
struct Bases<'a> {
    prev: &'a Tensor,
    prev2: Option<&'a Tensor>,
    class_weights: &'a Tensor,
}

/// The residual words of `codec` for `state` against its bases, split per chunk into `tail`.
fn split_residual(
    layout: &TailLayout,
    codec: CodecId,
    state: &Tensor,
    bases: &Bases<'_>,
    tail: &Tensor,
) -> Result<(), RecordError> {
    let (chunks, cl) = (layout.chunks as i64, layout.chunk_len as i64);
    let device = state.device();
    let (c, p) = (bits(state)?, bits(bases.prev)?);
    let (words, mu) = match (codec.residual(), bases.prev2) {
        (CodecId::XorPrev, _) => (c.f_bitwise_xor_tensor(&p)?, None),
        (CodecId::ZigzagDeltaPrev, _) => (zigzag(&c.f_sub(&p)?)?, None),
        (CodecId::Pred2, Some(prev2)) => {
            let d1 = signed(&p.f_sub(&bits(prev2)?)?)?;
            let mu = estimate_mu(layout, &c, &p, &d1)?;
            let mu_per_word = mu
                .f_view([chunks, 1])?
                .f_expand([chunks, cl], false)?
                .f_reshape([chunks * cl])?
                .f_narrow(0, 0, layout.state_len as i64)?;
            // pred2 = p + floor(i32(p − q) · μ / 256), wrapping.
            let pred = p.f_add(&d1.f_mul(&mu_per_word)?.f_div_scalar_mode(256, "floor")?)?;
            (zigzag(&c.f_sub(&pred)?)?, Some(mu))
        }
        (other, _) => {
            return Err(RecordError::Snapshot {
                reason: format!("device residual of {other:?} without the bases it needs"),
            });
        }
    };
    let w = pad(layout, &words)?.f_view([chunks, cl])?;
    let class = w
        .f_ge(1_i64 << 8)?
        .f_to_kind(Kind::Int64)?
        .f_add(&w.f_ge(1_i64 << 16)?)?
        .f_add(&w.f_ge(1_i64 << 24)?)?;
    let bytes = tail.f_view_dtype(Kind::Uint8)?;

    // Classes, 4 words a byte, least significant bits first.
    let packed = class
        .f_view([chunks, cl / 4, 4])?
        .f_mul(bases.class_weights)?
        .f_sum_dim_intlist(2, false, Kind::Int64)?
        .f_to_kind(Kind::Uint8)?
        .f_reshape([chunks * cl / 4])?;
    let mut classes = region(&bytes, 0, layout.padded() / 4)?;
    classes.f_copy_(&packed)?;

    // Leading bytes: a word's place is its chunk's start, its class's start in the chunk and
    // its rank among the chunk's words of its class: one prefix sum over the chunk of each
    // word's class as one-hot in i32 lanes (a chunk holds at most 2^24 words), read back at
    // the word's class.
    let one_hot = class
        .f_unsqueeze(2)?
        .f_eq_tensor(&Tensor::f_arange(4, (Kind::Int64, device))?)?;
    let running = one_hot.f_cumsum(1, Kind::Int)?;
    let counts = running.f_select(1, cl - 1)?.f_to_kind(Kind::Int64)?;
    let rank = running
        .f_gather(2, &class.f_unsqueeze(2)?, false)?
        .f_squeeze_dim(2)?
        .f_to_kind(Kind::Int64)?
        .f_sub_scalar(1)?;
    drop((one_hot, running));
    let class_start = counts.f_cumsum(1, Kind::Int64)?.f_sub(&counts)?;
    let chunk_start = Tensor::f_arange_start_step(0, chunks * cl, cl, (Kind::Int64, device))?
        .f_view([chunks, 1])?;
    let lead_at = chunk_start
        .f_add(&class_start.f_gather(1, &class, false)?)?
        .f_add(&rank)?;
    let lead = w
        .f_bitwise_right_shift(&class.f_mul_scalar(8)?)?
        .f_bitwise_and(0xFF)?
        .f_to_kind(Kind::Uint8)?;
    let mut leads = region(&bytes, layout.leads_at(), layout.padded())?;
    let _in_place = leads.f_scatter_(0, &lead_at.f_reshape([-1])?, &lead.f_reshape([-1])?)?;

    // Low bytes: byte j of a word of class k > j goes after the low bytes of the words before
    // it in its chunk; other words write byte j to the scratch word.
    let low_at = chunk_start
        .f_mul_scalar(3)?
        .f_add(&class.f_cumsum(1, Kind::Int64)?.f_sub(&class)?)?;
    let scratch = (3 * layout.padded()) as i64;
    let mut low = region(&bytes, layout.low_at(), 3 * layout.padded() + 1)?;
    for j in 0..3_i64 {
        let at = low_at
            .f_add_scalar(j)?
            .f_where_scalarother(&class.f_gt(j)?, scratch)?;
        let byte = w
            .f_bitwise_right_shift_tensor_scalar(8 * j)?
            .f_bitwise_and(0xFF)?
            .f_to_kind(Kind::Uint8)?;
        let _in_place = low.f_scatter_(0, &at.f_reshape([-1])?, &byte.f_reshape([-1])?)?;
    }

    // Counts of classes 1–3 and μ per chunk, as i32.
    let ints = tail.f_view_dtype(Kind::Int)?;
    let counts_123 = counts
        .f_narrow(1, 1, 3)?
        .f_to_kind(Kind::Int)?
        .f_reshape([chunks * 3])?;
    let mut counts_out = region(&ints, layout.counts_at() / 4, 3 * layout.chunks)?;
    counts_out.f_copy_(&counts_123)?;
    let mu = match mu {
        Some(mu) => mu.f_to_kind(Kind::Int)?,
        None => Tensor::f_zeros([chunks], (Kind::Int, device))?,
    };
    let mut mu_out = region(&ints, layout.mu_at() / 4, layout.chunks)?;
    mu_out.f_copy_(&mu)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sgdwalk_format::codec::residual_streams;

    /// Bit patterns a residual must carry unchanged: NaN payloads (quiet and signalling, both
    /// signs), ±0, ±inf, subnormals, the extremes, and ordinary values.
    fn edge_bits() -> Vec<u32> {
        vec![
            0x7fc0_0000,
            0x7fc0_0001,
            0xffc1_2345,
            0x7f80_0001,
            0xff80_0f00,
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x0000_0001,
            0x8000_0001,
            0x007f_ffff,
            0x807f_ffff,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x3f80_0000,
            0xbf80_0000,
        ]
    }

    /// Three states of `n` words: every edge pattern against every other in the first 289×3
    /// words (so XOR, the wrapping difference and pred2's products see each pair), then an
    /// SGD-with-momentum-like stretch with unchanged words here and there.
    fn states(n: usize) -> [Vec<f32>; 3] {
        let e = edge_bits();
        let mut s: [Vec<f32>; 3] = Default::default();
        for &a in &e {
            for &b in &e {
                for (c, p, q) in [(a, b, a), (b, a, b), (a, a, b)] {
                    s[0].push(f32::from_bits(c));
                    s[1].push(f32::from_bits(p));
                    s[2].push(f32::from_bits(q));
                }
            }
        }
        let mut i = 0;
        while s[0].len() < n {
            let q = (i as f32 * 0.37).sin() * 0.05;
            let step = 1e-4 * (i as f32 * 1.3).cos();
            let p = q - step;
            let c = if i % 7 == 0 { p } else { p - 0.9 * step - 1e-6 };
            s[2].push(q);
            s[1].push(p);
            s[0].push(c);
            i += 1;
        }
        for v in &mut s {
            v.truncate(n);
        }
        s
    }

    /// Runs the device pass on CPU tensors for step 5 after steps 3 and 4 and compares every
    /// chunk's streams with the host reference for the tag's codec and μ.
    fn check(n: usize, chunk_len: usize, delta: CodecId, keyframe_interval: u32) {
        let [cur, prev, prev2] = states(n);
        let layout = TailLayout::new(n, chunk_len).unwrap();
        let mut dr = DeviceResidual::new(layout, delta, keyframe_interval, Device::Cpu).unwrap();
        let tail = Tensor::f_full(
            [layout.len_f32() as i64],
            f64::from(f32::from_bits(0x5a5a_5a5a)),
            (Kind::Float, Device::Cpu),
        )
        .unwrap();
        assert_eq!(
            dr.compute(3, &Tensor::from_slice(&prev2), &tail).unwrap(),
            None,
            "no base yet"
        );
        let tag4 = dr.compute(4, &Tensor::from_slice(&prev), &tail).unwrap();
        let tag = dr
            .compute(5, &Tensor::from_slice(&cur), &tail)
            .unwrap()
            .unwrap();
        let expect_pred2 = delta == CodecId::Pred2 && keyframe_interval != 4;
        assert_eq!(tag.base_step, 4);
        assert_eq!(tag.base2_step, expect_pred2.then_some(3), "{delta:?}");
        assert_eq!(
            tag4.is_some(),
            keyframe_interval != 4,
            "step 4 is a keyframe at K = 4"
        );
        let words = Vec::<f32>::try_from(&tail).unwrap();
        let pre = tag
            .precomputed(&layout, bytemuck::cast_slice(&words))
            .unwrap();
        assert_eq!(pre.chunks.len(), n.div_ceil(chunk_len));
        for (c, chunk) in pre.chunks.iter().enumerate() {
            let r = c * chunk_len..(c * chunk_len + chunk_len).min(n);
            let mut want: [Vec<u8>; SPLIT_STREAMS] = Default::default();
            let p2 = expect_pred2.then(|| &prev2[r.clone()]);
            residual_streams(
                tag.codec,
                &cur[r.clone()],
                Some(&prev[r.clone()]),
                p2,
                chunk.mu_q8,
                &mut want,
            )
            .unwrap();
            for (k, (got, want)) in chunk.streams.iter().zip(&want).enumerate() {
                assert_eq!(
                    *got,
                    &want[..],
                    "{:?} n {n} chunk {c} stream {k}",
                    tag.codec
                );
            }
            if expect_pred2 {
                let host_mu = sgdwalk_format::codec::estimate_mu_q8(
                    &cur[r.clone()],
                    &prev[r.clone()],
                    &prev2[r],
                );
                assert!(
                    host_mu.abs_diff(chunk.mu_q8) <= 1,
                    "chunk {c}: μ {} vs host {host_mu}",
                    chunk.mu_q8
                );
            } else {
                assert_eq!(chunk.mu_q8, 0);
            }
        }
    }

    #[test]
    fn device_streams_equal_the_host_reference_bit_for_bit() {
        for delta in [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2] {
            // Whole chunks; a last chunk of 1, 2 and 3 words past a multiple of 4; one chunk.
            for (n, cl) in [
                (1024, 256),
                (1089, 256),
                (1090, 256),
                (1091, 256),
                (900, 1024),
            ] {
                check(n, cl, delta, 32);
            }
        }
        // Step 4 a keyframe: step 5 has no θ_{t−2} base and takes the zigzag delta.
        check(1000, 256, CodecId::Pred2, 4);
    }

    #[test]
    fn pred2_mu_follows_the_momentum() {
        // A clean momentum trajectory: d0 = 0.9 d1 in the bit patterns' differences.
        let n = 4096;
        let q: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let p: Vec<f32> = q
            .iter()
            .map(|v| f32::from_bits(v.to_bits() + 1000))
            .collect();
        let c: Vec<f32> = p
            .iter()
            .map(|v| f32::from_bits(v.to_bits() + 900))
            .collect();
        let layout = TailLayout::new(n, 2048).unwrap();
        let mut dr = DeviceResidual::new(layout, CodecId::Pred2, 32, Device::Cpu).unwrap();
        let tail = Tensor::f_zeros([layout.len_f32() as i64], (Kind::Float, Device::Cpu)).unwrap();
        dr.compute(1, &Tensor::from_slice(&q), &tail).unwrap();
        dr.compute(2, &Tensor::from_slice(&p), &tail).unwrap();
        dr.compute(3, &Tensor::from_slice(&c), &tail)
            .unwrap()
            .unwrap();
        let words = Vec::<f32>::try_from(&tail).unwrap();
        for chunk in layout.chunks(bytemuck::cast_slice(&words)).unwrap() {
            assert_eq!(chunk.mu_q8, 230, "round(0.9 · 256)");
            // pred2 predicts p + floor(1000 · 230 / 256) = p + 898, 2 short of c: every word is
            // zigzag(2) = 4, class 0.
            assert!(chunk.streams[0].iter().all(|&b| b == 0));
            assert!(chunk.streams[1].iter().all(|&b| b == 4));
            assert!(chunk.streams[2..].iter().all(|s| s.is_empty()));
        }
    }

    #[test]
    fn counts_that_do_not_fit_their_chunk_are_an_error() {
        let layout = TailLayout::new(100, 64).unwrap();
        let mut tail = vec![0u8; layout.len_bytes()];
        assert_eq!(layout.chunks(&tail).unwrap().len(), 2);
        // Chunk 1 holds 36 words; 37 of class 3 cannot be.
        let at = layout.counts_at() + 12 + 8;
        tail[at..at + 4].copy_from_slice(&37_i32.to_le_bytes());
        let err = layout.chunks(&tail).unwrap_err().to_string();
        assert!(err.contains("chunk 1") && err.contains("exceed"), "{err}");
        tail[at..at + 4].copy_from_slice(&(-1_i32).to_le_bytes());
        assert!(
            layout
                .chunks(&tail)
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        assert!(layout.chunks(&tail[1..]).is_err(), "a short tail");
        assert!(
            TailLayout::new(100, 40).is_err(),
            "chunk length not a multiple of 16"
        );
    }
}
