//! The codec's x86-64 paths, chosen at run time. The split and the join of one block (SPEC.md
//! §5.2) with SSSE3 byte shuffles: the same streams as the scalar path, byte for byte, but a
//! group of 4 words costs one shuffle for its low bytes and one for its leading bytes instead
//! of a load, a mask and a store per word. The decoder's residual pass compiled for AVX2.
//!
//! `unsafe` is confined to unaligned 16-byte loads and stores of ranges that are bounds-checked
//! slices, unaligned 4-byte loads at cursors checked against their slices, and to calling the
//! `target_feature` functions through an [`Ssse3`] or [`Avx2`] token.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, _mm_castsi128_ps, _mm_cmpgt_epi32, _mm_cvtsi128_si32, _mm_loadu_si128,
    _mm_movemask_ps, _mm_or_si128, _mm_set_epi32, _mm_set1_epi32, _mm_shuffle_epi8,
    _mm_shuffle_epi32, _mm_storeu_si128, _mm_xor_si128,
};

use super::{
    BLOCK_WORDS, BlockBuffers, BlockStreams, FormatError, GROUP_SHAPES, LEAD_BUF_BYTES,
    LEAD_STRIDE, LOW_BUF_BYTES, Residual,
};

/// Low-byte positions stay below `3 · BLOCK_WORDS`; masked to this, they need no bounds check.
const LOW_MASK: usize = 4 * BLOCK_WORDS - 1;

/// Proof that this CPU has SSSE3: only [`Ssse3::detect`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ssse3(());

impl Ssse3 {
    /// `Some` where this CPU runs the functions of this module (std caches the answer).
    pub(super) fn detect() -> Option<Self> {
        std::is_x86_feature_detected!("ssse3").then_some(Ssse3(()))
    }

    /// See [`split_block`].
    pub(super) fn split_block(
        self,
        block: &[u32],
        classes: &mut [u8],
        lead: &mut [u8; LEAD_BUF_BYTES],
        low: &mut [u8; LOW_BUF_BYTES],
    ) -> (u64, usize) {
        // SAFETY: `self` exists, so the CPU has SSSE3.
        unsafe { split_block(block, classes, lead, low) }
    }

    /// Joins the groups of one block (see [`join_block`]) from the streams where each has
    /// room for the reads past the block's last bytes, else from copies in `buffers`.
    pub(super) fn join_block(
        self,
        classes: &[u8],
        streams: &BlockStreams<'_>,
        buffers: &mut BlockBuffers,
        words: &mut [u32; BLOCK_WORDS],
    ) {
        let room = streams
            .lead
            .iter()
            .zip(streams.counts)
            .all(|(lead, k)| lead.len() >= k + 4)
            && streams.low.len() >= streams.low_len + 16;
        if room {
            // SAFETY: `self` exists, so the CPU has SSSE3.
            unsafe { join_block(classes, streams.lead, streams.low, words) }
        } else {
            streams.copy_into(buffers, LEAD_STRIDE);
            let lead: [&[u8]; 4] = std::array::from_fn(|c| &buffers.lead[c * LEAD_STRIDE..]);
            // SAFETY: `self` exists, so the CPU has SSSE3.
            unsafe { join_block(classes, lead, &buffers.low, words) }
        }
    }
}

/// Proof that this CPU has AVX2: only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Avx2(());

impl Avx2 {
    /// `Some` where this CPU has AVX2 (std caches the answer).
    pub(super) fn detect() -> Option<Self> {
        std::is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// [`Residual::apply`] compiled for AVX2.
    pub(super) fn apply_residual(
        self,
        residual: &Residual<'_>,
        words: &[u32],
        out: &mut [f32],
    ) -> Result<(), FormatError> {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { apply_residual_avx2(residual, words, out) }
    }
}

#[target_feature(enable = "avx2")]
fn apply_residual_avx2(
    residual: &Residual<'_>,
    words: &[u32],
    out: &mut [f32],
) -> Result<(), FormatError> {
    residual.apply_inline(words, out)
}

/// What one byte of the class stream means for a group of 4 words, as shuffles: `low` and
/// `lead` pick bytes (0x80 = zero), `per_class` counts the group's words of each class in four
/// 16-bit fields and `low_len` its low bytes.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Shuffle {
    low: [u8; 16],
    lead: [u8; 16],
    per_class: u64,
    low_len: usize,
}

const ZERO_SHUFFLE: Shuffle = Shuffle {
    low: [0x80; 16],
    lead: [0x80; 16],
    per_class: 0,
    low_len: 0,
};

/// The class of word `q` of the group whose class byte is `p`.
const fn class_of(p: usize, q: usize) -> usize {
    (p >> (2 * q)) & 3
}

/// Split: `low` packs the group's low bytes (word by word, lowest byte first); `lead` puts the
/// leading bytes of the group's words of class `c` in 32-bit lane `c`, in word order.
const SPLIT: [Shuffle; 256] = {
    let mut table = [ZERO_SHUFFLE; 256];
    let mut p = 0;
    while p < 256 {
        let mut s = table[p];
        let mut rank = [0usize; 4];
        let mut q = 0;
        while q < 4 {
            let c = class_of(p, q);
            let mut j = 0;
            while j < c {
                s.low[s.low_len] = (4 * q + j) as u8;
                s.low_len += 1;
                j += 1;
            }
            s.lead[4 * c + rank[c]] = (4 * q + c) as u8;
            rank[c] += 1;
            q += 1;
        }
        s.per_class = GROUP_SHAPES[p].per_class;
        table[p] = s;
        p += 1;
    }
    table
};

/// Join, the inverse: `low` spreads the packed low bytes over the words, `lead` takes each
/// word's leading byte from its class's lane (see [`SPLIT`]) to the word's byte `c`.
const JOIN: [Shuffle; 256] = {
    let mut table = [ZERO_SHUFFLE; 256];
    let mut p = 0;
    while p < 256 {
        let split = SPLIT[p];
        let mut s = table[p];
        let mut k = 0;
        while k < 16 {
            if split.low[k] != 0x80 {
                s.low[split.low[k] as usize] = k as u8;
            }
            if split.lead[k] != 0x80 {
                s.lead[split.lead[k] as usize] = k as u8;
            }
            k += 1;
        }
        s.per_class = split.per_class;
        s.low_len = split.low_len;
        table[p] = s;
        p += 1;
    }
    table
};

/// Bit `q` of a 4-bit lane mask moved to bit `2q`: three of them summed make the class byte.
const SPREAD: [usize; 16] = {
    let mut table = [0; 16];
    let mut m = 0;
    while m < 16 {
        let mut q = 0;
        while q < 4 {
            table[m] |= ((m >> q) & 1) << (2 * q);
            q += 1;
        }
        m += 1;
    }
    table
};

/// The 16 bytes of `bytes` from `at` (panics past the end, as indexing does).
#[inline]
#[target_feature(enable = "ssse3")]
fn load16(bytes: &[u8], at: usize) -> __m128i {
    let bytes = &bytes[at..at + 16];
    // SAFETY: `bytes` holds 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// Stores `v` in the 16 bytes of `bytes` from `at` (panics past the end, as indexing does).
#[inline]
#[target_feature(enable = "ssse3")]
fn store16(bytes: &mut [u8], at: usize, v: __m128i) {
    let bytes = &mut bytes[at..at + 16];
    // SAFETY: `bytes` holds 16 writable bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(bytes.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "ssse3")]
fn load_words(words: &[u32; 4]) -> __m128i {
    // SAFETY: 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(words.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "ssse3")]
fn store_words(words: &mut [u32; 4], v: __m128i) {
    // SAFETY: 16 writable bytes; the store is unaligned.
    unsafe { _mm_storeu_si128(words.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "ssse3")]
fn shuffle(v: __m128i, pick: &[u8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes; the load is unaligned.
    let pick = unsafe { _mm_loadu_si128(pick.as_ptr().cast()) };
    _mm_shuffle_epi8(v, pick)
}

/// Splits one block of whole groups (at most [`BLOCK_WORDS`] words) into its class bytes, each
/// class's leading bytes at `c · LEAD_STRIDE` of `lead` and the low bytes at the start of
/// `low`; returns the per-class counts (four 16-bit fields) and the count of low bytes.
///
/// Every group writes 16 low bytes and 4 leading bytes per class where their cursors stand; the
/// next group overwrites the excess, and the strides leave room for it. Cursors are masked to
/// their part of the buffers (they never exceed it), which spares the bounds checks.
#[target_feature(enable = "ssse3")]
fn split_block(
    block: &[u32],
    classes: &mut [u8],
    lead: &mut [u8; LEAD_BUF_BYTES],
    low: &mut [u8; LOW_BUF_BYTES],
) -> (u64, usize) {
    let (quads, rest) = block.as_chunks::<4>();
    assert!(
        rest.is_empty() && quads.len() <= BLOCK_WORDS / 4,
        "whole groups, one block"
    );
    // Unsigned comparisons as signed ones: flip the sign bit of both sides.
    let sign = _mm_set1_epi32(i32::MIN);
    let above1 = _mm_set1_epi32((0xFFu32 ^ 0x8000_0000) as i32);
    let above2 = _mm_set1_epi32((0xFFFFu32 ^ 0x8000_0000) as i32);
    let above3 = _mm_set1_epi32((0xFF_FFFFu32 ^ 0x8000_0000) as i32);
    let mut cursors = 0u64;
    let mut low_len = 0usize;
    for (quad, class_byte) in quads.iter().zip(classes.iter_mut()) {
        let words = load_words(quad);
        let flipped = _mm_xor_si128(words, sign);
        let m1 = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(flipped, above1)));
        let m2 = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(flipped, above2)));
        let m3 = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(flipped, above3)));
        let p = SPREAD[m1 as usize & 15] + SPREAD[m2 as usize & 15] + SPREAD[m3 as usize & 15];
        let s = &SPLIT[p & 255];
        store16(low, low_len & LOW_MASK, shuffle(words, &s.low));
        let lanes = shuffle(words, &s.lead);
        let lane = [
            _mm_cvtsi128_si32(lanes),
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b01>(lanes)),
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b10>(lanes)),
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b11>(lanes)),
        ];
        for (c, lane) in lane.into_iter().enumerate() {
            let at = c * LEAD_STRIDE + (((cursors >> (16 * c)) as usize) & (LEAD_STRIDE - 1));
            lead[at..at + 4].copy_from_slice(&lane.to_le_bytes());
        }
        cursors += s.per_class;
        low_len += s.low_len;
        *class_byte = p as u8;
    }
    (cursors, low_len)
}

/// Joins the groups of one block whose class bytes are `classes` into the start of `words` (a
/// short last group's padding words too), from each class's leading bytes and the low bytes
/// of the block (slices that hold 4 and 16 bytes more than the classes need: those are read
/// and dropped by the shuffles).
#[target_feature(enable = "ssse3")]
fn join_block(classes: &[u8], lead: [&[u8]; 4], low: &[u8], words: &mut [u32; BLOCK_WORDS]) {
    // Where each class's last 4-byte window starts, in four 16-bit fields with the top bit
    // set: a block's cursors stay below 2^13, so a start past 2^15 − 1 is as good as it, and
    // `fields − cursors` then borrows across no field and clears a field's top bit exactly
    // where that cursor is past its window. One test a group instead of one per class.
    assert!(lead.iter().all(|l| l.len() >= 4), "4 bytes past each class");
    let last = lead.iter().enumerate().fold(0u64, |packed, (c, l)| {
        packed | ((l.len() - 4).min(0x7FFF) as u64 | 0x8000) << (16 * c)
    });
    const TOP_BITS: u64 = 0x8000_8000_8000_8000;
    let mut cursors = 0u64;
    let mut low_at = 0usize;
    let (quads, _) = words.as_chunks_mut::<4>();
    for (quad, &p) in quads.iter_mut().zip(classes) {
        let s = &JOIN[usize::from(p)];
        let lows = load16(low, low_at);
        assert!(
            (last - cursors) & TOP_BITS == TOP_BITS,
            "a class's cursor past its stream"
        );
        let lane = |c: usize| {
            let at = ((cursors >> (16 * c)) & 0xFFFF) as usize;
            // SAFETY: the assert above: `at + 4 <= lead[c].len()`.
            unsafe { lead[c].as_ptr().add(at).cast::<i32>().read_unaligned() }
        };
        let leads = _mm_set_epi32(lane(3), lane(2), lane(1), lane(0));
        store_words(
            quad,
            _mm_or_si128(shuffle(lows, &s.low), shuffle(leads, &s.lead)),
        );
        cursors += s.per_class;
        low_at += s.low_len;
    }
}
