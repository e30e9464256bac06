//! Chunk codecs (SPEC.md "Codecs"): pure functions on f32 slices. The side-by-side benchmark
//! harness over them is in the test-kit (`testkit::codec_bench`).
//!
//! All transforms work on the IEEE-754 bit patterns as `u32`, so encode∘decode is the identity
//! on bits (NaN payloads, -0.0 and subnormals included); there is no float arithmetic on the
//! path.

use std::cell::RefCell;

use crate::error::FormatError;
use crate::types::CodecId;

/// Bytes of the μ·256 prefix of a pred2 chunk.
pub const PRED2_PREFIX_BYTES: usize = 2;

/// Per-thread zstd contexts and scratch buffers, reused across chunks: creating a zstd context
/// per chunk costs about as much as compressing a small chunk.
struct Scratch {
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
    /// The split streams' compressor ([`split_compressor`]).
    split_compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    planes: Vec<u8>,
    compressed: Vec<u8>,
    words: Vec<u32>,
    streams: [Vec<u8>; SPLIT_STREAMS],
    /// The split encoding of `n` zero words, per `n` met (a state's chunk length and its last
    /// chunk's): what an unchanged chunk stores ([`zero_split_encoding`]).
    zero_split: Vec<(usize, Vec<u8>)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            compressor: None,
            split_compressor: None,
            decompressor: None,
            planes: Vec::new(),
            compressed: Vec::new(),
            words: Vec::new(),
            streams: [const { Vec::new() }; SPLIT_STREAMS],
            zero_split: Vec::new(),
        })
    };
}

/// Streams of a split chunk (SPEC.md §5.2): the *class* stream (each word's count of
/// significant bytes − 1, four 2-bit classes per byte), one *leading-byte* stream per class
/// (the highest significant byte of every word of that class: it carries the skew of the
/// magnitudes), and the *low* stream (the bytes below each word's leading byte, nearly uniform).
pub const SPLIT_STREAMS: usize = 6;
/// Bytes of one stream descriptor of a split chunk: mode u8, raw_len u32, stored_len u32.
pub const SPLIT_DESCRIPTOR_BYTES: usize = 9;
/// Stream mode: the bytes as they are.
pub const STREAM_RAW: u8 = 0;
/// Stream mode: one zstd frame of exactly raw_len bytes.
pub const STREAM_ZSTD: u8 = 1;
/// Order-0 entropy (bits per byte) at or above which a stream is stored raw without trying
/// zstd: measured tails sit at 7.95–8.00, where zstd saves under 1 % at the cost of a pass.
const RAW_ENTROPY_BITS: f64 = 7.9;

fn zstd_err(what: &str, e: std::io::Error) -> FormatError {
    FormatError::invalid_input(format!("zstd {what} failed: {e}"))
}

/// zigzag: small signed values → small unsigned values (0,-1,1,-2 → 0,1,2,3).
#[inline(always)]
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Inverse of [`zigzag`].
#[inline(always)]
pub fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

/// The order-2 prediction of SPEC.md: `b1 + floor((b1 − b2) · q / 256)`, all in wrapping
/// 32-bit arithmetic on bit patterns (`b1 − b2` read as i32; SPEC.md widens the product to i64).
///
/// Computed in 32-bit lanes, which vectorize twice as wide as 64-bit products: with
/// `d1 = 256·a + b` (`a = d1 >> 8` arithmetic, `b = d1 & 255`), `floor(d1·q / 256) =
/// a·q + floor(b·q / 256)` exactly, `b·q < 2^24` fits, and the low 32 bits of `a·q` are those of
/// its wrapping product, so the result's low 32 bits match the i64 formula for every `q`
/// (tested against it).
#[inline(always)]
pub fn pred2_predict(b1: u32, b2: u32, mu_q8: u16) -> u32 {
    let d1 = b1.wrapping_sub(b2);
    let q = u32::from(mu_q8);
    let high = ((d1 as i32) >> 8) as u32;
    let low = ((d1 & 0xFF) * q) >> 8;
    b1.wrapping_add(high.wrapping_mul(q)).wrapping_add(low)
}

/// xxh3-64 of the little-endian bytes of `values` (the chunk hash of SPEC.md).
pub fn chunk_hash(values: &[f32]) -> u64 {
    // In memory the words already are those bytes: hash them in place (a copy into a byte
    // buffer first cost as much as the hash itself).
    #[cfg(target_endian = "little")]
    {
        xxhash_rust::xxh3::xxh3_64(bytemuck::cast_slice(values))
    }
    #[cfg(not(target_endian = "little"))]
    {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = [0u8; 16384];
        for block in values.chunks(buf.len() / 4) {
            for (dst, v) in buf.chunks_exact_mut(4).zip(block) {
                dst.copy_from_slice(&v.to_bits().to_le_bytes());
            }
            h.update(&buf[..block.len() * 4]);
        }
        h.digest()
    }
}

/// Estimates the pred2 coefficient q = round(256·μ) in 0..=256 by least squares of
/// `d0 = b0 − b1` on `d1 = b1 − b2` over every 16th element (bit patterns as i32 differences):
/// one element per 64-byte line of each state, a quarter of the loads every 4th element took.
/// Every 64th element (a quarter of the lines) measured no faster on the codec bench's
/// trajectories and stored 0.1% more with momentum.
pub fn estimate_mu_q8(cur: &[f32], prev: &[f32], prev2: &[f32]) -> u16 {
    let (mut num, mut den) = (0f64, 0f64);
    // Differences of 2^22 or more are sign flips or exponent jumps, which no momentum
    // predicts; left in, they would dominate the squares.
    const OUTLIER: i32 = 1 << 22;
    // Outliers add zeros instead of skipping (no unpredictable branch); the elements are read
    // by index, as a strided iterator over three zipped slices is slow.
    let n = cur.len().min(prev.len()).min(prev2.len());
    for i in (0..n).step_by(16) {
        let (c, p, p2) = (cur[i].to_bits(), prev[i].to_bits(), prev2[i].to_bits());
        let d0 = c.wrapping_sub(p) as i32;
        let d1 = p.wrapping_sub(p2) as i32;
        let inlier = d0.unsigned_abs() < OUTLIER as u32 && d1.unsigned_abs() < OUTLIER as u32;
        let (d0, d1) = if inlier {
            (f64::from(d0), f64::from(d1))
        } else {
            (0.0, 0.0)
        };
        num += d0 * d1;
        den += d1 * d1;
    }
    if den <= 0.0 || !num.is_finite() || !den.is_finite() {
        return 0;
    }
    let mu = (num / den).clamp(0.0, 1.0);
    (mu * 256.0).round() as u16
}

/// Splits `words` into 4 byte planes (plane k = byte k of every word, little-endian order).
fn shuffle_into(planes: &mut [u8], n: usize, words: impl Iterator<Item = u32>) {
    let (p0, rest) = planes.split_at_mut(n);
    let (p1, rest) = rest.split_at_mut(n);
    let (p2, p3) = rest.split_at_mut(n);
    for ((((a, b), c), d), w) in p0
        .iter_mut()
        .zip(p1.iter_mut())
        .zip(p2.iter_mut())
        .zip(p3.iter_mut())
        .zip(words)
    {
        let [w0, w1, w2, w3] = w.to_le_bytes();
        *a = w0;
        *b = w1;
        *c = w2;
        *d = w3;
    }
}

/// Iterator over the words of 4 byte planes.
fn unshuffled(planes: &[u8], n: usize) -> impl Iterator<Item = u32> + '_ {
    let (p0, rest) = planes.split_at(n);
    let (p1, rest) = rest.split_at(n);
    let (p2, p3) = rest.split_at(n);
    p0.iter()
        .zip(p1)
        .zip(p2)
        .zip(p3)
        .map(|(((a, b), c), d)| u32::from_le_bytes([*a, *b, *c, *d]))
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), FormatError> {
    if got != want {
        return Err(FormatError::invalid_input(format!(
            "{what} has {got} elements, expected {want}"
        )));
    }
    Ok(())
}

fn need_base(codec: CodecId, base: Option<&[f32]>, n: usize) -> Result<&[f32], FormatError> {
    let b = base.ok_or(FormatError::MissingBase {
        codec: codec.name(),
        needed: codec.bases_needed(),
    })?;
    check_len("base state chunk", b.len(), n)?;
    Ok(b)
}

/// The residual whose words `codec` stores in a chunk of `n` values: its unsplit residual, but
/// zigzag_delta_prev for pred2 with `mu_q8 = 0`, which predicts `p` itself (SPEC.md): the same
/// words from one base read instead of two. Such a chunk still needs both bases, as any pred2
/// chunk does (checked here, in the order the pred2 path checks them).
fn residual_of(
    codec: CodecId,
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    n: usize,
    mu_q8: u16,
) -> Result<CodecId, FormatError> {
    match codec.residual() {
        CodecId::Pred2 if mu_q8 == 0 => {
            need_base(codec, prev, n)?;
            need_base(codec, prev2, n)?;
            Ok(CodecId::ZigzagDeltaPrev)
        }
        residual => Ok(residual),
    }
}

/// Runs `$body` with `$words` bound to an iterator over the residual words of `codec`'s
/// residual (key, xor, zigzag delta or pred2; a split codec's unsplit one) of `cur` against its
/// bases: the one definition of the residuals, expanded per codec so each loop stays
/// monomorphic. Returns early (`?`) when a base is missing or of the wrong length.
macro_rules! with_residual_words {
    ($codec:expr, $cur:expr, $prev:expr, $prev2:expr, $mu_q8:expr, |$words:ident| $body:expr) => {{
        let (codec, cur, mu_q8): (CodecId, &[f32], u16) = ($codec, $cur, $mu_q8);
        let n = cur.len();
        match residual_of(codec, $prev, $prev2, n, mu_q8)? {
            CodecId::XorPrev => {
                let p = need_base(codec, $prev, n)?;
                let $words = cur.iter().zip(p).map(|(c, p)| c.to_bits() ^ p.to_bits());
                $body
            }
            CodecId::ZigzagDeltaPrev => {
                let p = need_base(codec, $prev, n)?;
                let $words = cur
                    .iter()
                    .zip(p)
                    .map(|(c, p)| zigzag(c.to_bits().wrapping_sub(p.to_bits()) as i32));
                $body
            }
            CodecId::Pred2 => {
                let p = need_base(codec, $prev, n)?;
                let p2 = need_base(codec, $prev2, n)?;
                let $words = cur.iter().zip(p).zip(p2).map(|((c, p), p2)| {
                    let pred = pred2_predict(p.to_bits(), p2.to_bits(), mu_q8);
                    zigzag(c.to_bits().wrapping_sub(pred) as i32)
                });
                $body
            }
            _ => {
                let $words = cur.iter().map(|v| v.to_bits());
                $body
            }
        }
    }};
}

/// Writes the residual words of `codec` for `cur` against its bases into 4 byte planes
/// (`planes.len() == 4 · cur.len()`, plane k = byte k of every little-endian word). `mu_q8` is
/// pred2's coefficient (ignored by the other codecs). The byte-plane codecs' first pass (see
/// [`encode_planes`]); a device computes split streams instead ([`residual_streams`]).
pub fn residual_planes(
    codec: CodecId,
    cur: &[f32],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    mu_q8: u16,
    planes: &mut [u8],
) -> Result<(), FormatError> {
    let n = cur.len();
    check_len("plane buffer", planes.len(), n * 4)?;
    with_residual_words!(codec, cur, prev, prev2, mu_q8, |words| shuffle_into(
        planes, n, words
    ));
    Ok(())
}

/// Writes the split streams (SPEC.md §5.2) of `codec`'s residual words for `cur` against its
/// bases into `streams`: the host reference of what a device computes for
/// [`encode_split_streams`]. `codec` names the residual (a split codec or its byte-plane twin);
/// `mu_q8` is pred2's coefficient (ignored by the other codecs).
pub fn residual_streams(
    codec: CodecId,
    cur: &[f32],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    mu_q8: u16,
    streams: &mut [Vec<u8>; SPLIT_STREAMS],
) -> Result<(), FormatError> {
    check_split_len(cur.len())?;
    let mut words = Vec::with_capacity(cur.len());
    with_residual_words!(codec.residual(), cur, prev, prev2, mu_q8, |w| words
        .extend(w));
    split_into_streams(&words, streams);
    Ok(())
}

/// Order-0 entropy of `bytes` in bits per byte (0 for an empty slice); long slices are
/// estimated on every 8th byte, which the codec's raw-or-zstd choice does not need finer.
pub fn byte_entropy_bits(bytes: &[u8]) -> f64 {
    sampled_entropy_bits(bytes, if bytes.len() > 65_536 { 8 } else { 1 })
}

/// Order-0 entropy in bits per byte of every `stride`-th byte of `bytes` (0 for none).
pub(crate) fn sampled_entropy_bits(bytes: &[u8], stride: usize) -> f64 {
    let mut counts = [0u64; 256];
    let mut total = 0u64;
    for &b in bytes.iter().step_by(stride) {
        counts[usize::from(b)] += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total_f = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total_f;
            -p * p.log2()
        })
        .sum()
}

/// Writes the residual words of `codec`'s residual (key, xor, zigzag delta or pred2; split
/// codecs use their unsplit residual) for `cur` against its bases into `words`.
pub(crate) fn residual_words(
    codec: CodecId,
    cur: &[f32],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    mu_q8: u16,
    words: &mut [u32],
) -> Result<(), FormatError> {
    check_len("word buffer", words.len(), cur.len())?;
    with_residual_words!(codec, cur, prev, prev2, mu_q8, |residuals| {
        for (w, r) in words.iter_mut().zip(residuals) {
            *w = r;
        }
    });
    Ok(())
}

/// A chunk's residual codec with what undoing it needs: its bases and pred2's μ.
#[derive(Clone, Copy)]
struct Residual<'a> {
    codec: CodecId,
    prev: Option<&'a [f32]>,
    prev2: Option<&'a [f32]>,
    mu_q8: u16,
}

impl Residual<'_> {
    /// Inverse of [`residual_words`]: the values from their residual words and the bases (with
    /// AVX2 where the CPU has it: the loops vectorize twice as wide).
    fn apply(&self, words: &[u32], out: &mut [f32]) -> Result<(), FormatError> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = x86::Avx2::detect() {
            return avx2.apply_residual(self, words, out);
        }
        self.apply_inline(words, out)
    }

    /// [`Residual::apply`]'s work, inlined into each CPU-feature variant.
    #[inline(always)]
    fn apply_inline(&self, words: &[u32], out: &mut [f32]) -> Result<(), FormatError> {
        let Residual {
            codec,
            prev,
            prev2,
            mu_q8,
        } = *self;
        let n = out.len();
        check_len("word buffer", words.len(), n)?;
        match residual_of(codec, prev, prev2, n, mu_q8)? {
            CodecId::XorPrev => {
                let p = need_base(codec, prev, n)?;
                for ((o, w), p) in out.iter_mut().zip(words).zip(p) {
                    *o = f32::from_bits(w ^ p.to_bits());
                }
            }
            CodecId::ZigzagDeltaPrev => {
                let p = need_base(codec, prev, n)?;
                for ((o, w), p) in out.iter_mut().zip(words).zip(p) {
                    *o = f32::from_bits(p.to_bits().wrapping_add(unzigzag(*w) as u32));
                }
            }
            CodecId::Pred2 => {
                let p = need_base(codec, prev, n)?;
                let p2 = need_base(codec, prev2, n)?;
                for (((o, w), p), p2) in out.iter_mut().zip(words).zip(p).zip(p2) {
                    let pred = pred2_predict(p.to_bits(), p2.to_bits(), mu_q8);
                    *o = f32::from_bits(pred.wrapping_add(unzigzag(*w) as u32));
                }
            }
            _ => {
                for (o, w) in out.iter_mut().zip(words) {
                    *o = f32::from_bits(*w);
                }
            }
        }
        Ok(())
    }
}

/// The class of a word (SPEC.md §5.2): its count of significant bytes − 1 (0 for 0..=255).
#[inline(always)]
fn word_class(w: u32) -> usize {
    // The index of the highest set bit, in bytes (w | 1: class 0 for w = 0).
    ((31 - (w | 1).leading_zeros()) >> 3) as usize
}

/// Split chunks hold at most 2^24 words (the format's chunk cap).
fn check_split_len(n: usize) -> Result<(), FormatError> {
    if n > 1 << 24 {
        return Err(FormatError::invalid_input(format!(
            "split chunk of {n} words, more than 2^24"
        )));
    }
    Ok(())
}

/// Words the split and the join work on at a time: each class's bytes of one block fit a
/// fixed-size buffer (every cursor is masked to it, so no access needs a bounds check), a
/// block's per-class counts fit 16 bits, and the decoder undoes the residual on each joined
/// block while its words are still in the L1 cache.
const BLOCK_WORDS: usize = 4096;

#[cfg(target_arch = "x86_64")]
mod x86;

/// What one byte of the class stream says about its 4 words, for the split and the join: per word,
/// the shift that takes its class's cursor out of the packed cursors, where its leading byte
/// lies in the block's leading bytes (its class's start plus its rank among the group's words of
/// that class), the shift of that byte into the word, the mask of its low bytes and where they
/// start within the group's low bytes; per group, the count of low bytes and the count of each
/// class packed as four 16-bit fields.
#[derive(Clone, Copy)]
struct GroupShape {
    cursor_shift: [u8; 4],
    lead_at: [u16; 4],
    lead_shift: [u8; 4],
    low_mask: [u32; 4],
    low_at: [u8; 4],
    low_len: u8,
    per_class: u64,
}

const GROUP_SHAPES: [GroupShape; 256] = {
    let mut table = [GroupShape {
        cursor_shift: [0; 4],
        lead_at: [0; 4],
        lead_shift: [0; 4],
        low_mask: [0; 4],
        low_at: [0; 4],
        low_len: 0,
        per_class: 0,
    }; 256];
    let mut p = 0;
    while p < 256 {
        let mut g = table[p];
        let mut rank = [0u16; 4];
        let mut q = 0;
        while q < 4 {
            let c = (p >> (2 * q)) & 3;
            g.cursor_shift[q] = 16 * c as u8;
            g.lead_at[q] = (c * BLOCK_WORDS) as u16 + rank[c];
            g.lead_shift[q] = 8 * c as u8;
            g.low_mask[q] = [0, 0xFF, 0xFFFF, 0xFF_FFFF][c];
            g.low_at[q] = g.low_len;
            g.low_len += c as u8;
            g.per_class += 1 << (16 * c);
            rank[c] += 1;
            q += 1;
        }
        table[p] = g;
        p += 1;
    }
    table
};

/// The four 16-bit class counts packed by [`GroupShape::per_class`] (summed over at most
/// [`BLOCK_WORDS`] words, so no field overflows).
fn unpack_counts(packed: u64) -> [usize; 4] {
    [0, 16, 32, 48].map(|shift| ((packed >> shift) & 0xFFFF) as usize)
}

/// Leading-byte buffer of a block for the SIMD path: class `c`'s bytes start at
/// `c · LEAD_STRIDE`, a power of two, so a cursor masked to it stays in its class's part; the
/// room past [`BLOCK_WORDS`] takes the 4-byte accesses past a class's last byte. (The scalar
/// path puts class `c` at `c · BLOCK_WORDS`.)
const LEAD_STRIDE: usize = 2 * BLOCK_WORDS;
const LEAD_BUF_BYTES: usize = 4 * LEAD_STRIDE + 4;
/// Low-byte buffer of a block: at most 3 bytes a word, positions masked to `4 · BLOCK_WORDS`,
/// and room for a 16-byte access from the last of them.
const LOW_BUF_BYTES: usize = 4 * BLOCK_WORDS + 16;

/// How a block is split and joined: the same bytes either way (tested), SIMD where the CPU has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SplitPath {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Ssse3(x86::Ssse3),
}

impl SplitPath {
    /// Every path this CPU runs, the scalar one first (for the tests and the bench).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn all() -> Vec<Self> {
        let mut paths = vec![SplitPath::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            paths.extend(x86::Ssse3::detect().map(SplitPath::Ssse3));
        }
        paths
    }

    /// The path's name, for the bench.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            SplitPath::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            SplitPath::Ssse3(_) => "SSSE3",
        }
    }

    /// The fastest path this CPU runs.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = x86::Ssse3::detect() {
            return SplitPath::Ssse3(simd);
        }
        SplitPath::Scalar
    }

    /// Where class `c`'s leading bytes start in a block's buffer.
    fn lead_stride(self) -> usize {
        match self {
            SplitPath::Scalar => BLOCK_WORDS,
            #[cfg(target_arch = "x86_64")]
            SplitPath::Ssse3(_) => LEAD_STRIDE,
        }
    }

    fn split_block(
        self,
        block: &[u32],
        classes: &mut [u8],
        lead: &mut [u8; LEAD_BUF_BYTES],
        low: &mut [u8; LOW_BUF_BYTES],
    ) -> (u64, usize) {
        match self {
            SplitPath::Scalar => split_block_scalar(block, classes, lead, low),
            #[cfg(target_arch = "x86_64")]
            SplitPath::Ssse3(simd) => simd.split_block(block, classes, lead, low),
        }
    }

    /// Joins the groups of one block into the start of `words` (a short last group's padding
    /// words too).
    fn join_block(
        self,
        classes: &[u8],
        streams: &BlockStreams<'_>,
        buffers: &mut BlockBuffers,
        words: &mut [u32; BLOCK_WORDS],
    ) {
        match self {
            SplitPath::Scalar => {
                streams.copy_into(buffers, BLOCK_WORDS);
                join_block_scalar(classes, &buffers.lead, &buffers.low, words);
            }
            #[cfg(target_arch = "x86_64")]
            SplitPath::Ssse3(simd) => simd.join_block(classes, streams, buffers, words),
        }
    }
}

/// Cuts residual words into the [`SPLIT_STREAMS`] streams of SPEC.md §5.2 (each buffer is
/// resized to its stream's length).
pub fn split_into_streams(words: &[u32], streams: &mut [Vec<u8>; SPLIT_STREAMS]) {
    split_with(SplitPath::detect(), words, streams);
}

pub(crate) fn split_with(path: SplitPath, words: &[u32], streams: &mut [Vec<u8>; SPLIT_STREAMS]) {
    let n = words.len();
    for s in streams.iter_mut() {
        s.clear();
    }
    let [class, l0, l1, l2, l3, low] = streams;
    class.reserve(n.div_ceil(4));
    low.reserve(3 * n);
    let mut class_block = [0u8; BLOCK_WORDS / 4];
    let mut lead_block = [0u8; LEAD_BUF_BYTES];
    let mut low_block = [0u8; LOW_BUF_BYTES];
    let stride = path.lead_stride();
    for block in words.chunks(BLOCK_WORDS) {
        let groups = block.len().div_ceil(4);
        // The block functions take whole groups: a short last group is padded with zero
        // words, class 0, which the counts below leave out.
        let (cursors, low_len) = if block.len() % 4 == 0 {
            path.split_block(block, &mut class_block, &mut lead_block, &mut low_block)
        } else {
            let mut tail = [0u32; BLOCK_WORDS];
            tail[..block.len()].copy_from_slice(block);
            let tail = &tail[..groups * 4];
            path.split_block(tail, &mut class_block, &mut lead_block, &mut low_block)
        };
        class.extend_from_slice(&class_block[..groups]);
        // A short last group's missing words count as class 0 in its shape.
        let mut counts = unpack_counts(cursors);
        counts[0] -= groups * 4 - block.len();
        for (c, (stream, k)) in [&mut *l0, &mut *l1, &mut *l2, &mut *l3]
            .into_iter()
            .zip(counts)
            .enumerate()
        {
            stream.extend_from_slice(&lead_block[c * stride..][..k]);
        }
        low.extend_from_slice(&low_block[..low_len]);
    }
}

/// Splits one block of whole groups a group at a time, as the join reads it: the 4 classes
/// make the class byte, and the group's shape says where each word's leading byte and low
/// bytes go, so a word costs two stores and no branch on its class. Returns the per-class
/// counts (four 16-bit fields) and the count of low bytes.
fn split_block_scalar(
    block: &[u32],
    classes: &mut [u8],
    lead: &mut [u8; LEAD_BUF_BYTES],
    low: &mut [u8; LOW_BUF_BYTES],
) -> (u64, usize) {
    // Every word writes 4 bytes where its low bytes start; the next word's write covers the
    // excess. Positions are masked to 4 · BLOCK_WORDS (they stay below 3 · BLOCK_WORDS for the
    // low bytes and below 4 · BLOCK_WORDS for the leading bytes), so no access needs a bounds
    // check.
    let mut cursors = 0u64;
    let mut low_len = 0usize;
    let (quads, rest) = block.as_chunks::<4>();
    assert!(rest.is_empty(), "split_with pads the last group");
    for (quad, packed) in quads.iter().zip(classes.iter_mut()) {
        let mut p = 0;
        for (q, &w) in quad.iter().enumerate() {
            p |= word_class(w) << (2 * q);
        }
        let g = &GROUP_SHAPES[p];
        for (q, &w) in quad.iter().enumerate() {
            let cursor = (cursors >> g.cursor_shift[q]) as usize & 0xFFFF;
            let at = (cursor + usize::from(g.lead_at[q])) & (4 * BLOCK_WORDS - 1);
            lead[at] = (w >> g.lead_shift[q]) as u8;
            let at = (low_len + usize::from(g.low_at[q])) & (4 * BLOCK_WORDS - 1);
            low[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        cursors += g.per_class;
        low_len += usize::from(g.low_len);
        *packed = p as u8;
    }
    (cursors, low_len)
}

/// Reassembles residual words from the streams of SPEC.md §5.2. The class stream decides how
/// many bytes every other stream must hold; a stream of another length, or nonzero padding
/// bits, is an error, never a panic.
pub fn join_streams(streams: [&[u8]; SPLIT_STREAMS], words: &mut [u32]) -> Result<(), FormatError> {
    join_with(SplitPath::detect(), streams, words)
}

pub(crate) fn join_with(
    path: SplitPath,
    streams: [&[u8]; SPLIT_STREAMS],
    words: &mut [u32],
) -> Result<(), FormatError> {
    join_streams_blocks(path, streams, words.len(), |start, block| {
        words[start..start + block.len()].copy_from_slice(block);
        Ok(())
    })
}

/// [`join_streams`] for `n` words, handed to `emit` a block of at most [`BLOCK_WORDS`] at a
/// time with the index of its first word, in order.
fn join_streams_blocks(
    path: SplitPath,
    streams: [&[u8]; SPLIT_STREAMS],
    n: usize,
    mut emit: impl FnMut(usize, &[u32]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let block_counts = checked_block_counts(&streams, n)?;
    let [class, l0, l1, l2, l3, low] = streams;
    let leads = [l0, l1, l2, l3];
    // Per block: the path joins from the streams, or from copies of the block's bytes in
    // fixed-size buffers. The lengths match the classes, so the join reads only what is there
    // (the bytes past a class's count are read and dropped).
    let mut lead_at = [0usize; 4];
    let mut low_at = 0usize;
    let mut buffers = BlockBuffers {
        lead: [0u8; LEAD_BUF_BYTES],
        low: [0u8; LOW_BUF_BYTES],
    };
    let mut block = [0u32; BLOCK_WORDS];
    for (start, &packed) in (0..n).step_by(BLOCK_WORDS).zip(&block_counts) {
        let len = BLOCK_WORDS.min(n - start);
        let groups = &class[start / 4..][..len.div_ceil(4)];
        // The last block's padding words are class 0 in the class stream, not words.
        let mut counts = unpack_counts(packed);
        counts[0] -= groups.len() * 4 - len;
        let low_len = counts[1] + 2 * counts[2] + 3 * counts[3];
        let streams = BlockStreams {
            lead: std::array::from_fn(|c| &leads[c][lead_at[c]..]),
            low: &low[low_at..],
            counts,
            low_len,
        };
        path.join_block(groups, &streams, &mut buffers, &mut block);
        for (at, k) in lead_at.iter_mut().zip(counts) {
            *at += k;
        }
        low_at += low_len;
        emit(start, &block[..len])?;
    }
    Ok(())
}

/// One block's bytes in the streams: each class's leading bytes and the low bytes, each slice
/// from the block's first byte to the stream's end (the totals are checked, so each holds at
/// least the block's count).
struct BlockStreams<'a> {
    lead: [&'a [u8]; 4],
    low: &'a [u8],
    counts: [usize; 4],
    low_len: usize,
}

/// Fixed-size copies of one block's bytes, for a join that reads past them.
struct BlockBuffers {
    lead: [u8; LEAD_BUF_BYTES],
    low: [u8; LOW_BUF_BYTES],
}

impl BlockStreams<'_> {
    /// Copies the block's bytes into `buffers`, class `c`'s leading bytes at `c · lead_stride`.
    fn copy_into(&self, buffers: &mut BlockBuffers, lead_stride: usize) {
        for (c, (lead, k)) in self.lead.iter().zip(self.counts).enumerate() {
            buffers.lead[c * lead_stride..][..k].copy_from_slice(&lead[..k]);
        }
        buffers.low[..self.low_len].copy_from_slice(&self.low[..self.low_len]);
    }
}

/// Joins the groups of one block from the buffers [`split_block_scalar`] fills, with masked
/// cursors, into the start of `words` (a short last group's padding words too): the caller
/// has checked the buffers hold what the classes need, so the masks never change an index;
/// they only spare the bounds checks.
fn join_block_scalar(
    classes: &[u8],
    lead: &[u8; LEAD_BUF_BYTES],
    low: &[u8; LOW_BUF_BYTES],
    words: &mut [u32; BLOCK_WORDS],
) {
    let mut cursors = 0u64;
    let mut low_pos = 0usize;
    let (quads, _) = words.as_chunks_mut::<4>();
    for (quad, &p) in quads.iter_mut().zip(classes) {
        let g = &GROUP_SHAPES[usize::from(p)];
        for (q, w) in quad.iter_mut().enumerate() {
            // Every word reads 4 bytes where its low bytes start and masks them to its class.
            let at = (low_pos + usize::from(g.low_at[q])) & (4 * BLOCK_WORDS - 1);
            let below = u32::from_le_bytes([low[at], low[at + 1], low[at + 2], low[at + 3]])
                & g.low_mask[q];
            let cursor = (cursors >> g.cursor_shift[q]) as usize & 0xFFFF;
            let lead = lead[(cursor + usize::from(g.lead_at[q])) & (4 * BLOCK_WORDS - 1)];
            *w = u32::from(lead) << g.lead_shift[q] | below;
        }
        cursors += g.per_class;
        low_pos += usize::from(g.low_len);
    }
}

/// A zstd compressor for the split streams: zstd's fastest match search (its lowest level) with
/// Huffman-coded literals forced on (zstd turns them off at negative levels). The split leaves
/// streams with no repeats worth matching, so their gain is all in the entropy coding: against
/// level 1 this encodes 1.5–3× faster, decodes up to 2× faster and stores the class and class-2
/// streams 1–7% smaller (MLP trajectory, format-spec's codec bench). The frames are ordinary
/// zstd frames; the header's `zstd_level` applies to the other codecs and the blobs.
fn split_compressor() -> Result<zstd::bulk::Compressor<'static>, FormatError> {
    use zstd::zstd_safe::{CParameter, ParamSwitch};
    let mut c = zstd::bulk::Compressor::new(zstd::zstd_safe::min_c_level())
        .map_err(|e| zstd_err("init", e))?;
    c.set_parameter(CParameter::LiteralCompressionMode(ParamSwitch::Enable))
        .map_err(|e| zstd_err("init", e))?;
    Ok(c)
}

/// Appends the split-stream encoding (SPEC.md §5.2) of `words` to `out`: per stream, raw when
/// its measured entropy says zstd cannot pay (or zstd does not shrink it), else one zstd frame
/// ([`split_compressor`]).
fn encode_split(
    words: &[u32],
    streams: &mut [Vec<u8>; SPLIT_STREAMS],
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    compressed: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    check_split_len(words.len())?;
    split_into_streams(words, streams);
    encode_streams(
        std::array::from_fn(|k| streams[k].as_slice()),
        compressor,
        compressed,
        out,
    )
}

/// Appends the stream table and the stored data of 6 split streams (SPEC.md §5.2), each raw or
/// one zstd frame as its sampled entropy pays.
fn encode_streams(
    streams: [&[u8]; SPLIT_STREAMS],
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    compressed: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let table_at = out.len();
    out.resize(table_at + SPLIT_STREAMS * SPLIT_DESCRIPTOR_BYTES, 0);
    for (k, stream) in streams.iter().enumerate() {
        let mut mode = STREAM_RAW;
        let data_at = out.len();
        if !stream.is_empty() && byte_entropy_bits(stream) < RAW_ENTROPY_BITS {
            let ctx = match compressor {
                Some(c) => c,
                None => compressor.insert(split_compressor()?),
            };
            compressed.clear();
            compressed.reserve(zstd::zstd_safe::compress_bound(stream.len()));
            ctx.compress_to_buffer(stream, compressed)
                .map_err(|e| zstd_err("compress", e))?;
            if compressed.len() < stream.len() {
                mode = STREAM_ZSTD;
                out.extend_from_slice(compressed);
            }
        }
        if mode == STREAM_RAW {
            out.extend_from_slice(stream);
        }
        let stored = out.len() - data_at;
        let too_long = |what| FormatError::invalid_input(format!("split stream {what} over 4 GiB"));
        let raw_len = u32::try_from(stream.len()).map_err(|_| too_long("raw length"))?;
        let stored_len = u32::try_from(stored).map_err(|_| too_long("stored length"))?;
        let d = &mut out[table_at + k * SPLIT_DESCRIPTOR_BYTES..][..SPLIT_DESCRIPTOR_BYTES];
        d[0] = mode;
        d[1..5].copy_from_slice(&raw_len.to_le_bytes());
        d[5..9].copy_from_slice(&stored_len.to_le_bytes());
    }
    Ok(())
}

/// Encodes one chunk of `n` words from its split streams (SPEC.md §5.2) computed elsewhere, e.g.
/// on a device, and appends the stored bytes to `out` (the `mu_q8` prefix first for
/// pred2_split); returns the number of bytes appended. The streams' lengths are checked against
/// their classes, so a malformed set is refused here rather than stored; whether they hold the
/// chunk's residual is the caller's to check ([`decode_chunk`] and compare, as the writer does
/// on a sample).
pub fn encode_split_streams(
    codec: CodecId,
    mu_q8: u16,
    streams: [&[u8]; SPLIT_STREAMS],
    n: usize,
    out: &mut Vec<u8>,
) -> Result<usize, FormatError> {
    if !codec.is_split() {
        return Err(FormatError::invalid_input(format!(
            "split streams given for codec {codec:?}, which stores no split streams"
        )));
    }
    check_split_len(n)?;
    checked_block_counts(&streams, n)?;
    let start = out.len();
    if codec.residual() == CodecId::Pred2 {
        out.extend_from_slice(&mu_q8.to_le_bytes());
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch {
            split_compressor,
            compressed,
            ..
        } = &mut *s;
        encode_streams(streams, split_compressor, compressed, out)
    })?;
    Ok(out.len() - start)
}

/// Checks split streams of `n` words against their classes (SPEC.md §5.2): the class stream's
/// length and zero padding bits, each leading-byte stream's length against its class's count,
/// the low stream's against the low bytes those counts need. Returns each block's packed class
/// counts ([`GroupShape::per_class`] summed), which the join needs before it reads a block.
fn checked_block_counts(
    streams: &[&[u8]; SPLIT_STREAMS],
    n: usize,
) -> Result<Vec<u64>, FormatError> {
    let corrupt = |what: String| FormatError::invalid_input(format!("split chunk: {what}"));
    let [class, l0, l1, l2, l3, low] = *streams;
    check_len("class stream", class.len(), n.div_ceil(4))?;
    let block_counts: Vec<u64> = class
        .chunks(BLOCK_WORDS / 4)
        .map(|groups| {
            groups
                .iter()
                .map(|&p| GROUP_SHAPES[usize::from(p)].per_class)
                .sum()
        })
        .collect();
    let mut per_class = [0usize; 4];
    for &packed in &block_counts {
        for (total, k) in per_class.iter_mut().zip(unpack_counts(packed)) {
            *total += k;
        }
    }
    // The padding classes of the last byte must be zero (class 0); take them off the count.
    let pad = class.len() * 4 - n;
    if pad > 0 && class[class.len() - 1] >> (2 * (4 - pad)) != 0 {
        return Err(corrupt("nonzero padding in the class stream".into()));
    }
    per_class[0] -= pad;
    let leads = [l0, l1, l2, l3];
    for (c, (s, &want)) in leads.iter().zip(&per_class).enumerate() {
        if s.len() != want {
            return Err(corrupt(format!(
                "leading-byte stream of class {c} holds {} bytes for {want} words",
                s.len()
            )));
        }
    }
    let low_want = per_class[1] + 2 * per_class[2] + 3 * per_class[3];
    if low.len() != low_want {
        return Err(corrupt(format!(
            "low-byte stream holds {} bytes, the classes need {low_want}",
            low.len()
        )));
    }
    Ok(block_counts)
}

/// Decodes the split streams of one chunk of `words.len()` words (SPEC.md §5.2).
fn decode_split(
    stored: &[u8],
    n: usize,
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
    buffers: &mut [Vec<u8>; SPLIT_STREAMS],
    emit: impl FnMut(usize, &[u32]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let corrupt = |what: String| FormatError::invalid_input(format!("split chunk: {what}"));
    check_split_len(n)?;
    let table_len = SPLIT_STREAMS * SPLIT_DESCRIPTOR_BYTES;
    let (table, mut data) = stored.split_at_checked(table_len).ok_or_else(|| {
        corrupt(format!(
            "{} bytes, shorter than its stream table",
            stored.len()
        ))
    })?;
    let mut spans: [(u8, usize, &[u8]); SPLIT_STREAMS] = [(STREAM_RAW, 0, &[]); SPLIT_STREAMS];
    for (k, d) in table.chunks_exact(SPLIT_DESCRIPTOR_BYTES).enumerate() {
        let mode = d[0];
        let raw_len = u32::from_le_bytes([d[1], d[2], d[3], d[4]]) as usize;
        let stored_len = u32::from_le_bytes([d[5], d[6], d[7], d[8]]) as usize;
        // No stream holds more than 3 bytes per word (the low stream at most); join_streams
        // checks the exact lengths against the classes.
        if raw_len > n.saturating_mul(3) {
            return Err(corrupt(format!(
                "stream {k} declares {raw_len} bytes for {n} words"
            )));
        }
        let (bytes, rest) = data.split_at_checked(stored_len).ok_or_else(|| {
            corrupt(format!(
                "stream {k} declares {stored_len} stored bytes, {} remain",
                data.len()
            ))
        })?;
        data = rest;
        match mode {
            STREAM_RAW if stored_len != raw_len => {
                return Err(corrupt(format!(
                    "raw stream {k} stores {stored_len} bytes for {raw_len}"
                )));
            }
            STREAM_RAW | STREAM_ZSTD => {}
            m => return Err(corrupt(format!("stream {k} has unknown mode {m}"))),
        }
        spans[k] = (mode, raw_len, bytes);
    }
    if !data.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the last stream",
            data.len()
        )));
    }
    for (k, ((mode, raw_len, bytes), buf)) in spans.iter_mut().zip(buffers.iter_mut()).enumerate() {
        if *mode != STREAM_ZSTD {
            continue;
        }
        match zstd::zstd_safe::find_frame_compressed_size(bytes) {
            Ok(len) if len == bytes.len() => {}
            _ => return Err(corrupt(format!("stream {k} is not exactly one zstd frame"))),
        }
        buf.resize(*raw_len, 0);
        let ctx = match decompressor {
            Some(d) => d,
            None => decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(|e| zstd_err("init", e))?),
        };
        let got = ctx
            .decompress_to_buffer(bytes, &mut buf[..])
            .map_err(|e| corrupt(format!("stream {k} does not decode: {e}")))?;
        if got != *raw_len {
            return Err(corrupt(format!(
                "stream {k} decodes to {got} bytes, expected {raw_len}"
            )));
        }
    }
    let mut slices: [&[u8]; SPLIT_STREAMS] = [&[]; SPLIT_STREAMS];
    for (k, ((mode, _, bytes), buf)) in spans.iter().zip(buffers.iter()).enumerate() {
        slices[k] = if *mode == STREAM_ZSTD {
            buf.as_slice()
        } else {
            bytes
        };
    }
    join_streams_blocks(SplitPath::detect(), slices, n, emit)
}

/// Whether `codec`'s residual words of `cur` are all zero, judged from the states alone: `cur`
/// is bit for bit `prev` (xor and zigzag deltas), and for pred2 also its prediction is `prev`
/// (μ = 0, or `prev` bit for bit `prev2`). A chunk that changed stops the comparison at its first
/// difference, so the check costs next to nothing where it fails.
fn residual_is_zero(
    codec: CodecId,
    cur: &[f32],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    mu_q8: u16,
) -> bool {
    let same = |a: &[f32], b: &[f32]| {
        bytemuck::cast_slice::<f32, u32>(a) == bytemuck::cast_slice::<f32, u32>(b)
    };
    match (codec.residual(), prev, prev2) {
        (CodecId::XorPrev | CodecId::ZigzagDeltaPrev, Some(p), _) => same(cur, p),
        (CodecId::Pred2, Some(p), Some(p2)) => same(cur, p) && (mu_q8 == 0 || same(p, p2)),
        _ => false,
    }
}

/// The split-stream encoding of `n` zero words (after the pred2 prefix), made once per length
/// and thread by the general encoder, so that the unchanged-chunk fast paths store exactly its
/// bytes and recognise them.
fn zero_split_encoding(s: &mut Scratch, n: usize) -> Result<&[u8], FormatError> {
    let Scratch {
        split_compressor,
        compressed,
        words,
        streams,
        zero_split,
        ..
    } = s;
    let at = match zero_split.iter().position(|(len, _)| *len == n) {
        Some(at) => at,
        None => {
            words.clear();
            words.resize(n, 0);
            let mut bytes = Vec::new();
            encode_split(words, streams, split_compressor, compressed, &mut bytes)?;
            // A state has at most two chunk lengths; 16 entries (about 90 bytes each) cover a
            // thread that reads several recordings in turn without rebuilding them.
            if zero_split.len() == 16 {
                zero_split.remove(0);
            }
            zero_split.push((n, bytes));
            zero_split.len() - 1
        }
    };
    Ok(&zero_split[at].1)
}

/// Whether a split chunk's stream table declares class-0 words only (streams lead1, lead2, lead3
/// and low empty), as the encoding of zero words does: a check of 4 table fields that keeps
/// the decoder from building that encoding (and a compressor) for chunks that cannot be it.
fn only_class_zero(stored: &[u8]) -> bool {
    (2..SPLIT_STREAMS).all(|k| {
        stored
            .get(k * SPLIT_DESCRIPTOR_BYTES + 1..k * SPLIT_DESCRIPTOR_BYTES + 5)
            .is_some_and(|raw_len| raw_len == [0; 4])
    })
}

/// Decodes residual words that are all zero (a delta codec's): `out` is the prediction itself.
fn apply_zero_residual(
    codec: CodecId,
    p: Option<&[f32]>,
    p2: Option<&[f32]>,
    mu_q8: u16,
    out: &mut [f32],
) -> Result<(), FormatError> {
    let mismatch = || FormatError::invalid_input("codec and bases do not match");
    let p = p.ok_or_else(mismatch)?;
    if codec.residual() == CodecId::Pred2 && mu_q8 != 0 {
        let p2 = p2.ok_or_else(mismatch)?;
        for ((o, p), p2) in out.iter_mut().zip(p).zip(p2) {
            *o = f32::from_bits(pred2_predict(p.to_bits(), p2.to_bits(), mu_q8));
        }
    } else {
        // Copies the bits (NaN payloads included): the prediction of xor, zigzag and μ = 0.
        out.copy_from_slice(p);
    }
    Ok(())
}

/// Appends the split-stream encoding of the residual words `fill` writes into this thread's
/// scratch buffer, after the pred2 prefix `mu_q8` when given.
fn encode_split_scratch(
    mu_q8: Option<u16>,
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u32>) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    SCRATCH.with(|s| -> Result<(), FormatError> {
        let mut s = s.borrow_mut();
        let Scratch {
            split_compressor,
            compressed,
            words,
            streams,
            ..
        } = &mut *s;
        fill(words)?;
        if let Some(mu_q8) = mu_q8 {
            out.extend_from_slice(&mu_q8.to_le_bytes());
        }
        encode_split(words, streams, split_compressor, compressed, out)
    })
}

/// Encodes one chunk with `codec` and appends the stored bytes to `out`; returns the number of
/// bytes appended. `prev` (state t−1) is needed by the delta codecs, `prev2` (state t−2) by
/// pred2. Raw needs nothing; Key ignores the bases.
pub fn encode_chunk(
    codec: CodecId,
    cur: &[f32],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    level: i32,
    out: &mut Vec<u8>,
) -> Result<usize, FormatError> {
    let n = cur.len();
    let start = out.len();
    if codec == CodecId::Raw {
        out.reserve(n * 4);
        out.extend(cur.iter().flat_map(|v| v.to_bits().to_le_bytes()));
        return Ok(out.len() - start);
    }
    let mu_q8 = if codec.residual() == CodecId::Pred2 {
        estimate_mu_q8(cur, need_base(codec, prev, n)?, need_base(codec, prev2, n)?)
    } else {
        0
    };
    if codec.is_split() {
        let prefix = (codec.residual() == CodecId::Pred2).then_some(mu_q8);
        if residual_is_zero(codec, cur, prev, prev2, mu_q8) {
            // An unchanged chunk (frozen weights): the bytes the general path would store,
            // without its residual, split and compression passes.
            return SCRATCH.with(|s| -> Result<usize, FormatError> {
                let mut s = s.borrow_mut();
                if let Some(mu_q8) = prefix {
                    out.extend_from_slice(&mu_q8.to_le_bytes());
                }
                out.extend_from_slice(zero_split_encoding(&mut s, n)?);
                Ok(out.len() - start)
            });
        }
        encode_split_scratch(prefix, out, |words| {
            words.resize(n, 0);
            residual_words(codec, cur, prev, prev2, mu_q8, words)
        })?;
        return Ok(out.len() - start);
    }
    SCRATCH.with(|s| -> Result<(), FormatError> {
        let mut planes = std::mem::take(&mut s.borrow_mut().planes);
        planes.resize(n * 4, 0);
        let r = residual_planes(codec, cur, prev, prev2, mu_q8, &mut planes)
            .and_then(|()| encode_planes(codec, mu_q8, &planes, n, level, out).map(drop));
        s.borrow_mut().planes = planes;
        r
    })?;
    Ok(out.len() - start)
}

/// Encodes the residual planes of one chunk of `n` elements (as [`residual_planes`] writes them)
/// and appends the stored bytes to `out`; returns
/// the number of bytes appended. `mu_q8` is the pred2 coefficient the planes were computed with.
/// Not for [`CodecId::Raw`], whose stored bytes are the words themselves.
pub fn encode_planes(
    codec: CodecId,
    mu_q8: u16,
    planes: &[u8],
    n: usize,
    level: i32,
    out: &mut Vec<u8>,
) -> Result<usize, FormatError> {
    check_len("plane buffer", planes.len(), n * 4)?;
    if codec == CodecId::Raw {
        return Err(FormatError::invalid_input(
            "raw chunks store words, not planes",
        ));
    }
    let start = out.len();
    if codec.residual() == CodecId::Pred2 {
        out.extend_from_slice(&mu_q8.to_le_bytes());
    }
    if codec.is_split() {
        encode_split_scratch(None, out, |words| {
            words.clear();
            words.extend(unshuffled(planes, n));
            Ok(())
        })?;
        return Ok(out.len() - start);
    }
    SCRATCH.with(|s| -> Result<(), FormatError> {
        let mut s = s.borrow_mut();
        let Scratch {
            compressor,
            compressed,
            ..
        } = &mut *s;
        let ctx = match compressor {
            Some((l, c)) if *l == level => c,
            _ => {
                let c = zstd::bulk::Compressor::new(level).map_err(|e| zstd_err("init", e))?;
                &mut compressor.insert((level, c)).1
            }
        };
        compressed.clear();
        compressed.reserve(zstd::zstd_safe::compress_bound(planes.len()));
        ctx.compress_to_buffer(planes, compressed)
            .map_err(|e| zstd_err("compress", e))?;
        out.extend_from_slice(compressed);
        Ok(())
    })?;
    Ok(out.len() - start)
}

/// Decodes one chunk's stored bytes into `out` (whose length is the chunk's element count).
/// Every malformed input is an error, never a panic: a wrong raw length, a zstd frame that is
/// not exactly one frame of exactly `4 · out.len()` bytes, a missing base.
pub fn decode_chunk(
    codec: CodecId,
    encoded: &[u8],
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), FormatError> {
    let n = out.len();
    if codec == CodecId::Raw {
        if encoded.len() != n * 4 {
            return Err(FormatError::invalid_input(format!(
                "raw chunk has {} bytes, expected {}",
                encoded.len(),
                n * 4
            )));
        }
        for (o, b) in out.iter_mut().zip(encoded.chunks_exact(4)) {
            *o = f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        return Ok(());
    }
    let (q, frame) = if codec.residual() == CodecId::Pred2 {
        if encoded.len() < PRED2_PREFIX_BYTES {
            return Err(FormatError::invalid_input(
                "pred2 chunk shorter than its μ prefix",
            ));
        }
        (
            u16::from_le_bytes([encoded[0], encoded[1]]),
            &encoded[PRED2_PREFIX_BYTES..],
        )
    } else {
        (0, encoded)
    };
    let p = if codec.bases_needed() >= 1 {
        Some(need_base(codec, prev, n)?)
    } else {
        None
    };
    let p2 = if codec.bases_needed() >= 2 {
        Some(need_base(codec, prev2, n)?)
    } else {
        None
    };
    if codec.is_split() {
        return SCRATCH.with(|s| -> Result<(), FormatError> {
            let mut s = s.borrow_mut();
            if codec != CodecId::KeySplit
                && only_class_zero(frame)
                && frame == zero_split_encoding(&mut s, n)?
            {
                // The stored bytes are this writer's encoding of n zero words (an unchanged
                // chunk): undo the residual of zeros without decompressing and joining them.
                return apply_zero_residual(codec, p, p2, q, out);
            }
            let Scratch {
                decompressor,
                streams,
                ..
            } = &mut *s;
            // The residual is undone a block at a time, as the join hands the words on.
            decode_split(frame, n, decompressor, streams, |start, words| {
                let range = start..start + words.len();
                let residual = Residual {
                    codec,
                    prev: p.map(|p| &p[range.clone()]),
                    prev2: p2.map(|p| &p[range.clone()]),
                    mu_q8: q,
                };
                residual.apply(words, &mut out[range])
            })
        });
    }
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(len) if len == frame.len() => {}
        _ => {
            return Err(FormatError::invalid_input(
                "stored chunk is not exactly one zstd frame",
            ));
        }
    }
    SCRATCH.with(|s| -> Result<(), FormatError> {
        let mut s = s.borrow_mut();
        let Scratch {
            decompressor,
            planes,
            ..
        } = &mut *s;
        planes.resize(n * 4, 0);
        let ctx = match decompressor {
            Some(d) => d,
            None => decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(|e| zstd_err("init", e))?),
        };
        let got = ctx
            .decompress_to_buffer(frame, &mut planes[..])
            .map_err(|e| FormatError::invalid_input(format!("zstd frame does not decode: {e}")))?;
        if got != n * 4 {
            return Err(FormatError::invalid_input(format!(
                "zstd frame decodes to {got} bytes, expected {}",
                n * 4
            )));
        }
        let words = unshuffled(planes, n);
        match (codec, p, p2) {
            (CodecId::Key, _, _) => {
                for (o, w) in out.iter_mut().zip(words) {
                    *o = f32::from_bits(w);
                }
            }
            (CodecId::XorPrev, Some(p), _) => {
                for ((o, w), p) in out.iter_mut().zip(words).zip(p) {
                    *o = f32::from_bits(w ^ p.to_bits());
                }
            }
            (CodecId::ZigzagDeltaPrev, Some(p), _) => {
                for ((o, w), p) in out.iter_mut().zip(words).zip(p) {
                    *o = f32::from_bits(p.to_bits().wrapping_add(unzigzag(w) as u32));
                }
            }
            (CodecId::Pred2, Some(p), Some(p2)) => {
                for (((o, w), p), p2) in out.iter_mut().zip(words).zip(p).zip(p2) {
                    let pred = pred2_predict(p.to_bits(), p2.to_bits(), q);
                    *o = f32::from_bits(pred.wrapping_add(unzigzag(w) as u32));
                }
            }
            _ => return Err(FormatError::invalid_input("codec and bases do not match")),
        }
        Ok(())
    })
}

/// Compresses `bytes` with zstd at `level` (sample ids, augmentation).
pub(crate) fn zstd_bytes(bytes: &[u8], level: i32) -> Result<Vec<u8>, FormatError> {
    zstd::bulk::compress(bytes, level).map_err(|e| zstd_err("compress", e))
}

/// Decompresses a single zstd frame of exactly `expected_len` bytes.
pub(crate) fn unzstd_bytes(frame: &[u8], expected_len: usize) -> Result<Vec<u8>, FormatError> {
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(len) if len == frame.len() => {}
        _ => {
            return Err(FormatError::invalid_input(
                "stored blob is not exactly one zstd frame",
            ));
        }
    }
    if !crate::consts::plausible_expansion(frame.len() as u64, expected_len as u64) {
        return Err(FormatError::invalid_input(
            "zstd blob too small for its declared length",
        ));
    }
    let mut out = vec![0u8; expected_len];
    let got = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(frame, &mut out[..]))
        .map_err(|e| FormatError::invalid_input(format!("zstd blob does not decode: {e}")))?;
    if got != expected_len {
        return Err(FormatError::invalid_input(format!(
            "zstd blob decodes to {got} bytes, expected {expected_len}"
        )));
    }
    Ok(out)
}

/// Byte-shuffles u32 words into 4 planes (sample ids).
pub(crate) fn shuffle_u32(words: &[u32]) -> Vec<u8> {
    let mut planes = vec![0u8; words.len() * 4];
    shuffle_into(&mut planes, words.len(), words.iter().copied());
    planes
}

/// Inverse of [`shuffle_u32`]; `planes.len()` must be `4n`.
pub(crate) fn unshuffle_u32(planes: &[u8], n: usize) -> Vec<u32> {
    unshuffled(planes, n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded xorshift64 generator for test inputs.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 2, -2, i32::MAX, i32::MIN, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i32::MIN), u32::MAX);
    }

    #[test]
    fn pred2_formula_floors_and_wraps() {
        // d1 = 10, q = 128 -> +5
        assert_eq!(pred2_predict(110, 100, 128), 115);
        // d1 = -3, q = 128 -> floor(-1.5) = -2
        assert_eq!(pred2_predict(100, 103, 128), 98);
        // wrapping at the u32 boundary
        assert_eq!(pred2_predict(u32::MAX, u32::MAX - 2, 256), 1);
        // The 32-bit computation equals SPEC.md's i64 formula for every q a reader may meet.
        let spec = |b1: u32, b2: u32, q: u16| {
            let d1 = b1.wrapping_sub(b2) as i32;
            b1.wrapping_add(((i64::from(d1) * i64::from(q)) >> 8) as u32)
        };
        let mut next = xorshift(0x0005_EED0_F9E2);
        let edges = [
            0,
            1,
            0xFF,
            0x100,
            0x7FFF_FFFF,
            0x8000_0000,
            0x8000_00FF,
            u32::MAX,
        ];
        for q in (0..=600u16).chain([0x7FFF, 0x8000, 0xFFFE, u16::MAX]) {
            for &b1 in &edges {
                for &b2 in &edges {
                    assert_eq!(pred2_predict(b1, b2, q), spec(b1, b2, q), "{b1} {b2} {q}");
                }
            }
            for _ in 0..2000 {
                let (r, s) = (next(), next());
                // Small differences (the common case) and any.
                let b1 = r as u32;
                let b2 = if s & 1 == 0 {
                    b1.wrapping_add((s >> 8) as u32 % 4096).wrapping_sub(2048)
                } else {
                    (s >> 32) as u32
                };
                assert_eq!(pred2_predict(b1, b2, q), spec(b1, b2, q), "{b1} {b2} {q}");
            }
        }
    }

    #[test]
    fn every_codec_round_trips_special_values() {
        let cur = [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::from_bits(0x7fc0_1234),
            f32::INFINITY,
            1e-40,
            -3.5,
            7.0,
        ];
        let prev = [1.0f32, -0.0, 0.5, f32::NEG_INFINITY, 2.0, 1e-41, -3.25, 7.5];
        let prev2 = [2.0f32, 1.0, 0.25, 3.0, 1.0, 0.0, -3.0, 8.0];
        for codec in CodecId::ALL {
            let mut enc = Vec::new();
            let len = encode_chunk(codec, &cur, Some(&prev), Some(&prev2), 1, &mut enc).unwrap();
            assert_eq!(len, enc.len());
            let mut out = [0f32; 8];
            decode_chunk(codec, &enc, Some(&prev), Some(&prev2), &mut out).unwrap();
            assert_eq!(out.map(f32::to_bits), cur.map(f32::to_bits), "{codec}");
        }
    }

    #[test]
    fn decode_rejects_malformed_inputs() {
        let mut out = [0f32; 4];
        assert!(decode_chunk(CodecId::Raw, &[0; 15], None, None, &mut out).is_err());
        assert!(decode_chunk(CodecId::Key, &[1, 2, 3], None, None, &mut out).is_err());
        let mut enc = Vec::new();
        encode_chunk(CodecId::Key, &[1.0, 2.0, 3.0, 4.0], None, None, 1, &mut enc).unwrap();
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode_chunk(CodecId::Key, &longer, None, None, &mut out).is_err());
        let mut out5 = [0f32; 5];
        assert!(decode_chunk(CodecId::Key, &enc, None, None, &mut out5).is_err());
        assert!(matches!(
            decode_chunk(CodecId::XorPrev, &enc, None, None, &mut out),
            Err(FormatError::MissingBase { .. })
        ));
        assert!(
            decode_chunk(
                CodecId::Pred2,
                &[1],
                Some(&[0.0; 4]),
                Some(&[0.0; 4]),
                &mut out
            )
            .is_err()
        );
    }

    /// Split then join gives back every word, for every length around the group size (short
    /// last group) and the blocks of 4096 words (a block of one class fills that class's
    /// cursor), with words of all four classes mixed, in runs and alone; the streams hold
    /// exactly what SPEC.md §5.2 says, and the SIMD path (where the CPU has one) splits to the
    /// scalar path's bytes and joins them back.
    #[test]
    fn split_and_join_round_trip_every_length_and_class_mix() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut streams: [Vec<u8>; SPLIT_STREAMS] = Default::default();
        // Around the group size and the blocks of 4096 words.
        for n in (0..70).chain([1021, 1024, 4095, 4096, 4099, 8192, 8197, 12_290]) {
            for mix in 0..6 {
                let (words, intended): (Vec<u32>, Vec<usize>) = (0..n)
                    .map(|i| {
                        let r = next();
                        let class = match mix {
                            0 => (r >> 40) as usize % 4,
                            1 => (i / 5) % 4,
                            2 => 3,
                            3 => 0,
                            m => m - 3,
                        };
                        let w = (r as u32) >> (8 * (3 - class));
                        // Force the class: its leading byte nonzero (class 0 may be zero).
                        let w = if class == 0 {
                            w & 0xFF
                        } else {
                            w | 1 << (8 * class)
                        };
                        (w, class)
                    })
                    .unzip();
                // Every path gives the scalar path's streams, byte for byte.
                let mut scalar: [Vec<u8>; SPLIT_STREAMS] = Default::default();
                split_with(SplitPath::Scalar, &words, &mut scalar);
                for path in SplitPath::all() {
                    split_with(path, &words, &mut streams);
                    assert_eq!(streams, scalar, "{path:?} n {n} mix {mix}");
                }
                let classes: Vec<usize> = words.iter().map(|&w| word_class(w)).collect();
                assert_eq!(classes, intended, "n {n} mix {mix}");
                assert_eq!(streams[0].len(), n.div_ceil(4));
                for c in 0..4 {
                    let lead_c: Vec<u8> = words
                        .iter()
                        .zip(&classes)
                        .filter(|&(_, &k)| k == c)
                        .map(|(&w, _)| (w >> (8 * c)) as u8)
                        .collect();
                    assert_eq!(streams[1 + c], lead_c, "n {n} mix {mix} class {c}");
                }
                let low: Vec<u8> = words
                    .iter()
                    .zip(&classes)
                    .flat_map(|(&w, &k)| w.to_le_bytes().into_iter().take(k))
                    .collect();
                assert_eq!(streams[5], low, "n {n} mix {mix}");
                let slices: [&[u8]; SPLIT_STREAMS] = std::array::from_fn(|k| streams[k].as_slice());
                for path in SplitPath::all() {
                    let mut back = vec![0u32; n];
                    join_with(path, slices, &mut back).unwrap();
                    assert_eq!(back, words, "{path:?} n {n} mix {mix}");
                }
            }
        }
    }

    #[test]
    fn split_decode_rejects_malformed_tables_without_panicking() {
        // Small and large residual words, so every stream is non-empty.
        let n = 4000;
        let cur: Vec<f32> = (0..n)
            .map(|i| f32::from_bits((i as u32).wrapping_mul(2_654_435_761) >> (i % 29)))
            .collect();
        let mut enc = Vec::new();
        encode_chunk(CodecId::KeySplit, &cur, None, None, 1, &mut enc).unwrap();
        let mut out = vec![0f32; n];
        decode_chunk(CodecId::KeySplit, &enc, None, None, &mut out).unwrap();
        assert!(
            out.iter()
                .zip(&cur)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let table = SPLIT_STREAMS * SPLIT_DESCRIPTOR_BYTES;
        let lens = |d: &[u8], k: usize| {
            let at = k * SPLIT_DESCRIPTOR_BYTES;
            (
                u32::from_le_bytes(d[at + 1..at + 5].try_into().unwrap()),
                u32::from_le_bytes(d[at + 5..at + 9].try_into().unwrap()),
            )
        };
        assert!(
            (0..SPLIT_STREAMS).all(|k| lens(&enc, k).0 > 0),
            "every stream used"
        );
        let reject = |bytes: &[u8], why: &str| {
            let mut out = vec![0f32; n];
            let e = decode_chunk(CodecId::KeySplit, bytes, None, None, &mut out).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        };
        reject(&enc[..table - 1], "shorter than its stream table");
        reject(&enc[..enc.len() - 1], "remain");
        let mut longer = enc.clone();
        longer.push(0);
        reject(&longer, "after the last stream");
        let mut bad = enc.clone();
        bad[0] = 9;
        reject(&bad, "unknown mode 9");
        let mut bad = enc.clone();
        bad[1..5].copy_from_slice(&(3 * n as u32 + 1).to_le_bytes());
        reject(&bad, "declares");
        // A hand-built all-raw chunk decodes; moving one byte from stream 1 to 2 keeps the
        // lengths adding up, but no longer matches the class counts.
        let words: Vec<u32> = cur.iter().map(|v| v.to_bits()).collect();
        let mut streams: [Vec<u8>; SPLIT_STREAMS] = Default::default();
        split_into_streams(&words, &mut streams);
        let all_raw = |lens: [usize; SPLIT_STREAMS]| {
            let mut b = Vec::new();
            for len in lens {
                b.push(STREAM_RAW);
                b.extend_from_slice(&(len as u32).to_le_bytes());
                b.extend_from_slice(&(len as u32).to_le_bytes());
            }
            for s in &streams {
                b.extend_from_slice(s);
            }
            b
        };
        let mut lens = streams.clone().map(|s| s.len());
        decode_chunk(CodecId::KeySplit, &all_raw(lens), None, None, &mut out).unwrap();
        assert!(
            out.iter()
                .zip(&cur)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        lens[1] -= 1;
        lens[2] += 1;
        reject(
            &all_raw(lens),
            "split chunk: leading-byte stream of class 0",
        );
        // Any single flipped byte: an error or other words, never a panic.
        for at in 0..enc.len().min(table + 64) {
            let mut bad = enc.clone();
            bad[at] ^= 0x5A;
            let _ = decode_chunk(CodecId::KeySplit, &bad, None, None, &mut out);
        }
    }

    /// An unchanged chunk takes the fast paths (no residual, split or compression pass; decoded
    /// by copying the prediction) and stores exactly the bytes the general path stores; a chunk
    /// changed anywhere, even in its last element, takes the general path.
    #[test]
    fn unchanged_chunks_store_the_general_paths_bytes() {
        let mut state = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut next = move || state() as u32;
        for n in [1, 3, 4, 5, 4095, 4096, 4097, 70_001] {
            // Any bit patterns: NaN payloads and -0.0 must come back as they were.
            let base: Vec<f32> = (0..n).map(|_| f32::from_bits(next())).collect();
            let other: Vec<f32> = base
                .iter()
                .map(|v| f32::from_bits(v.to_bits() ^ (next() & 0xFF) ^ 1))
                .collect();
            let mut last_moved = base.clone();
            last_moved[n - 1] = f32::from_bits(base[n - 1].to_bits() ^ 1);
            // (what, θ_t, θ_{t−1}, θ_{t−2})
            type Case<'a> = (&'a str, &'a [f32], &'a [f32], &'a [f32]);
            let cases: [Case<'_>; 4] = [
                ("unchanged", &base, &base, &base),
                ("unchanged since t-1", &base, &base, &other),
                ("last element moved", &last_moved, &base, &base),
                ("every element moved", &other, &base, &base),
            ];
            for codec in [
                CodecId::XorPrevSplit,
                CodecId::ZigzagDeltaPrevSplit,
                CodecId::Pred2Split,
            ] {
                for (what, cur, prev, prev2) in cases {
                    let mut stored = Vec::new();
                    encode_chunk(codec, cur, Some(prev), Some(prev2), 1, &mut stored).unwrap();
                    // The general path: residual words, split, compression.
                    let pred2 = codec.residual() == CodecId::Pred2;
                    let mu_q8 = if pred2 {
                        estimate_mu_q8(cur, prev, prev2)
                    } else {
                        0
                    };
                    let mut general = Vec::new();
                    encode_split_scratch(pred2.then_some(mu_q8), &mut general, |words| {
                        words.resize(n, 0);
                        residual_words(codec, cur, Some(prev), Some(prev2), mu_q8, words)
                    })
                    .unwrap();
                    assert_eq!(stored, general, "{codec} {what} n {n}");
                    let mut out = vec![0f32; n];
                    decode_chunk(codec, &stored, Some(prev), Some(prev2), &mut out).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&out), bits(cur), "{codec} {what} n {n}");
                }
            }
            // Zero words under a pred2 μ > 0 whose bases differ decode to the prediction
            // (SPEC.md's formula), not to a copy of θ_{t−1}.
            let mut zero = Vec::new();
            encode_chunk(
                CodecId::XorPrevSplit,
                &base,
                Some(&base),
                None,
                1,
                &mut zero,
            )
            .unwrap();
            let mut stored = 230u16.to_le_bytes().to_vec();
            stored.extend_from_slice(&zero);
            let mut out = vec![0f32; n];
            decode_chunk(
                CodecId::Pred2Split,
                &stored,
                Some(&base),
                Some(&other),
                &mut out,
            )
            .unwrap();
            for ((o, p), p2) in out.iter().zip(&base).zip(&other) {
                let d1 = i64::from(p.to_bits().wrapping_sub(p2.to_bits()) as i32);
                let want = p.to_bits().wrapping_add(((d1 * 230) >> 8) as u32);
                assert_eq!(o.to_bits(), want, "n {n}");
            }
        }
    }

    /// The residual pass gives the same bits on every path this CPU runs (the AVX2 variant is
    /// the same source compiled for other instructions), across block-sized and odd lengths.
    #[test]
    fn residual_pass_is_the_same_on_every_path() {
        let mut state = xorshift(0x2545_F491_4F6C_DD1D);
        let mut next = move || state() as u32;
        for n in [0, 1, 7, 31, 4096, 5003] {
            let words: Vec<u32> = (0..n).map(|i| next() >> (i % 32)).collect();
            let prev: Vec<f32> = (0..n).map(|_| f32::from_bits(next())).collect();
            let prev2: Vec<f32> = (0..n).map(|_| f32::from_bits(next())).collect();
            for codec in [
                CodecId::Key,
                CodecId::XorPrev,
                CodecId::ZigzagDeltaPrev,
                CodecId::Pred2,
            ] {
                for mu_q8 in [0, 1, 230, 256] {
                    let run = |apply: &dyn Fn(&mut [f32]) -> Result<(), FormatError>| {
                        let mut out = vec![0f32; n];
                        apply(&mut out).unwrap();
                        out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
                    };
                    let residual = Residual {
                        codec,
                        prev: Some(&prev),
                        prev2: Some(&prev2),
                        mu_q8,
                    };
                    let want = run(&|out| residual.apply_inline(&words, out));
                    assert_eq!(
                        run(&|out| residual.apply(&words, out)),
                        want,
                        "{codec} n {n} mu {mu_q8}"
                    );
                    // pred2 by SPEC.md's formula, term by term (q = 0 takes a one-base path).
                    if codec == CodecId::Pred2 {
                        let spec: Vec<u32> = words
                            .iter()
                            .zip(prev.iter().zip(&prev2))
                            .map(|(w, (p, p2))| {
                                let d1 = i64::from(p.to_bits().wrapping_sub(p2.to_bits()) as i32);
                                let pred = p
                                    .to_bits()
                                    .wrapping_add(((d1 * i64::from(mu_q8)) >> 8) as u32);
                                pred.wrapping_add(unzigzag(*w) as u32)
                            })
                            .collect();
                        assert_eq!(want, spec, "n {n} mu {mu_q8}");
                    }
                    // The encoder's residual of the decoded values gives the words back.
                    let cur: Vec<f32> = want.iter().map(|&b| f32::from_bits(b)).collect();
                    let mut again = vec![0u32; n];
                    residual_words(codec, &cur, Some(&prev), Some(&prev2), mu_q8, &mut again)
                        .unwrap();
                    assert_eq!(again, words, "{codec} n {n} mu {mu_q8}");
                }
            }
        }
    }

    #[test]
    fn mu_estimate_recovers_momentum() {
        // b0 - b1 = 0.5 (b1 - b2) exactly in the integer domain.
        let prev2: Vec<f32> = (0..4096)
            .map(|i| f32::from_bits(0x3f80_0000 + i * 7))
            .collect();
        let prev: Vec<f32> = prev2
            .iter()
            .map(|v| f32::from_bits(v.to_bits() + 400))
            .collect();
        let cur: Vec<f32> = prev
            .iter()
            .map(|v| f32::from_bits(v.to_bits() + 200))
            .collect();
        assert_eq!(estimate_mu_q8(&cur, &prev, &prev2), 128);
    }

    #[test]
    fn chunk_hash_is_xxh3_of_le_bytes() {
        let v = [1.0f32, -2.0, 3.5];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        assert_eq!(chunk_hash(&v), xxhash_rust::xxh3::xxh3_64(&bytes));
        let long: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let bytes: Vec<u8> = long
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect();
        assert_eq!(chunk_hash(&long), xxhash_rust::xxh3::xxh3_64(&bytes));
    }
}
