//! An independent reader of the recording format, written from `format-spec/SPEC.md` alone.
//!
//! It uses only std, zstd, crc32c, xxhash-rust, sha2 and serde_json (no sgdwalk-format types or
//! functions) and checks everything SPEC.md §8 asks a reader to check. The format crate's
//! `spec_reader` test compares what it finds with what `sgdwalk_format::Reader` reads (if the two
//! disagree, either the spec or the crate is wrong); the workspace's interop test reads files
//! that Python wrote with it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::collections::{BTreeMap, BTreeSet};

const MAGIC: &[u8; 8] = b"\x89SGDWLK\n";
const RECORD_MAGIC: &[u8; 4] = b"SWRC";
const NO_STEP: u64 = u64::MAX;
const SKIPPABLE: u8 = 1;
const KIND_HEADER: u8 = 1;
const KIND_STEP: u8 = 2;
const KIND_EPOCH: u8 = 3;
const KIND_RESUME: u8 = 4;
const KIND_INDEX: u8 = 5;
const KIND_FOOTER: u8 = 6;
const KIND_ATTACHMENT: u8 = 7;
/// §3: incompat bit 0, TYPED_LAYOUT (format 1.1).
pub const TYPED_LAYOUT: u64 = 1;
/// §3: incompat bit 1, ABSENT_MASK (format 1.2): STEP byte 62 marks absent scalars.
pub const ABSENT_MASK: u64 = 2;
/// §3: incompat bit 2, SPLIT_STREAMS (format 1.3): codecs 5–8 (§5.2).
pub const SPLIT_STREAMS: u64 = 4;
/// §4.3: the bits an absent scalar holds in a file with ABSENT_MASK.
const ABSENT_BITS: u64 = 0x7FF8_0000_0000_0000;

/// A bounds-checked little-endian reader; every failure is an `Err(String)`.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8]) -> Self {
        Rd { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("short read")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| "u16")?,
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "u32")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "u64")?,
        ))
    }
    fn zeros(&mut self, n: usize) -> Result<(), String> {
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err("reserved bytes not zero".into());
        }
        Ok(())
    }
    fn end(&self) -> Result<(), String> {
        if self.pos != self.b.len() {
            return Err(format!(
                "{} trailing payload bytes",
                self.b.len() - self.pos
            ));
        }
        Ok(())
    }
}

fn cap(what: &str, v: u64, max: u64) -> Result<(), String> {
    if v > max {
        return Err(format!("{what} {v} above the cap {max}"));
    }
    Ok(())
}

/// §8.7: `stored × 32 768 + 4096 ≥ raw`.
fn plausible(stored: u64, raw: u64) -> Result<(), String> {
    if u128::from(stored) * 32_768 + 4096 < u128::from(raw) {
        return Err(format!("{stored} stored bytes cannot hold {raw} raw bytes"));
    }
    Ok(())
}

/// (epoch, step, [(split, loss bits, accuracy bits, samples)])
pub type SpecEpoch = (u32, u64, Vec<(String, u64, u64, u64)>);

#[derive(Debug, Clone, PartialEq)]
pub struct SpecStep {
    pub step: u64,
    pub chain_start: u64,
    pub keyframe: bool,
    /// Bit patterns of θ_t.
    pub state: Vec<u32>,
    pub ids: Vec<u32>,
    pub aug: Vec<u8>,
    /// Bit patterns of the 5 scalars, `None` where absent (§4.3: the absent mask, or NaN in a
    /// file without ABSENT_MASK).
    pub scalars: [Option<u64>; 5],
}

/// One tensor of the HEADER layout: name, shape, offset_elements.
pub type SpecTensor = (String, Vec<u64>, u64);

#[derive(Debug, Default)]
pub struct SpecFile {
    pub major: u16,
    pub minor: u16,
    pub n: u64,
    pub chunk_len: u64,
    pub k: u32,
    pub delta_codec: u8,
    pub aug_per_sample: u64,
    pub layout: Vec<SpecTensor>,
    pub layout_json: String,
    pub metadata_json: String,
    pub steps: Vec<SpecStep>,
    /// (epoch, step, [(split, loss bits, accuracy bits, samples)])
    pub epochs: Vec<SpecEpoch>,
    /// (step, buffer bits, descriptor)
    pub resume: Vec<(u64, Vec<u32>, String)>,
    pub finished: bool,
    /// (offset, whole length, kind, step) of every data record, in file order.
    pub data_records: Vec<(u64, u64, u8, u64)>,
    /// Prologue incompat flags.
    pub incompat: u64,
    /// §4.2 dtype name of every layout tensor, in layout order.
    pub dtypes: Vec<String>,
    /// §4.9 (name, data) of every attachment, SHA-256 checked, in file order.
    pub attachments: Vec<(String, Vec<u8>)>,
}

/// §4.2: bytes per element of a dtype name; `None` for a name the format does not define.
fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "f64" | "i64" => 8,
        "f32" | "i32" => 4,
        "f16" | "bf16" | "i16" => 2,
        "i8" | "u8" | "bool" => 1,
        _ => return None,
    })
}

fn unshuffle(planes: &[u8], n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            u32::from(planes[i])
                | u32::from(planes[n + i]) << 8
                | u32::from(planes[2 * n + i]) << 16
                | u32::from(planes[3 * n + i]) << 24
        })
        .collect()
}

/// §5.2: the residual words of a split-stream chunk (the bytes after `mu_q8`): a table of 6
/// descriptors (mode, raw length, stored length), then the streams classes, lead0 … lead3 and
/// low.
pub fn split_words(stored: &[u8], n: usize) -> Result<Vec<u32>, String> {
    let (table, mut data) = stored.split_at_checked(6 * 9).ok_or("split stream table")?;
    let mut streams: Vec<Vec<u8>> = Vec::new();
    for (k, d) in table.chunks_exact(9).enumerate() {
        let mode = d[0];
        let raw = u32::from_le_bytes([d[1], d[2], d[3], d[4]]) as usize;
        let st = u32::from_le_bytes([d[5], d[6], d[7], d[8]]) as usize;
        if raw > 3 * n {
            return Err(format!("split stream {k} longer than 3 bytes per word"));
        }
        let (bytes, rest) = data
            .split_at_checked(st)
            .ok_or_else(|| format!("split stream {k} runs past the chunk"))?;
        data = rest;
        let stream = match mode {
            0 if st == raw => bytes.to_vec(),
            1 => one_frame(bytes, raw)?,
            m => return Err(format!("split stream mode {m} with {st} of {raw} bytes")),
        };
        streams.push(stream);
    }
    if !data.is_empty() {
        return Err("bytes after the last split stream".into());
    }
    let classes = &streams[0];
    let low = &streams[5];
    if classes.len() != n.div_ceil(4) {
        return Err("split class stream length".into());
    }
    // The class of word i: bits 2(i mod 4) and 2(i mod 4)+1 of byte i/4. The classes after the
    // last word (padding) must be zero.
    let class_of = |i: usize| usize::from((classes[i / 4] >> (2 * (i % 4))) & 3);
    for i in n..4 * classes.len() {
        if class_of(i) != 0 {
            return Err("split class padding".into());
        }
    }
    let mut count = [0usize; 4];
    for i in 0..n {
        count[class_of(i)] += 1;
    }
    for k in 0..4 {
        if streams[1 + k].len() != count[k] {
            return Err(format!("split lead{k} stream length"));
        }
    }
    if low.len() != count[1] + 2 * count[2] + 3 * count[3] {
        return Err("split low stream length".into());
    }
    // Word i of class k: the next byte of lead_k at byte k, above the next k bytes of low
    // (little-endian).
    let mut next_lead = [0usize; 4];
    let mut next_low = 0;
    let mut words = Vec::with_capacity(n);
    for i in 0..n {
        let k = class_of(i);
        let mut w = u32::from(streams[1 + k][next_lead[k]]) << (8 * k);
        next_lead[k] += 1;
        for j in 0..k {
            w |= u32::from(low[next_low]) << (8 * j);
            next_low += 1;
        }
        words.push(w);
    }
    Ok(words)
}

/// §3, §4.3, §4.5: codec ids a chunk of this table may use.
fn check_codecs(
    table: &[(u8, u32, u32, u64)],
    incompat: u64,
    standalone: bool,
) -> Result<(), String> {
    for &(c, ..) in table {
        if c > 8 {
            return Err(format!("unknown codec {c}"));
        }
        if c >= 5 && incompat & SPLIT_STREAMS == 0 {
            return Err(format!("codec {c} without SPLIT_STREAMS"));
        }
        if standalone && !matches!(c, 0 | 1 | 5) {
            return Err(format!("delta codec {c} in a keyframe or resume record"));
        }
    }
    Ok(())
}

/// Exactly one zstd frame of exactly `len` bytes (SPEC §5.1).
fn one_frame(frame: &[u8], len: usize) -> Result<Vec<u8>, String> {
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(l) if l == frame.len() => {}
        _ => return Err("not exactly one zstd frame".into()),
    }
    let out = zstd::bulk::decompress(frame, len).map_err(|e| format!("zstd: {e}"))?;
    if out.len() != len {
        return Err("zstd frame has the wrong size".into());
    }
    Ok(out)
}

fn le_words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn unzigzag(z: u32) -> u32 {
    (z >> 1) ^ 0u32.wrapping_sub(z & 1)
}

fn pred2(p: u32, q: u32, mu: u16) -> u32 {
    let d = i64::from(p.wrapping_sub(q) as i32);
    p.wrapping_add(((d * i64::from(mu)) >> 8) as u32)
}

fn decode_chunk(
    codec: u8,
    stored: &[u8],
    n: usize,
    p: Option<&[u32]>,
    q: Option<&[u32]>,
) -> Result<Vec<u32>, String> {
    if codec == 0 {
        if stored.len() != 4 * n {
            return Err("raw chunk length".into());
        }
        return Ok(le_words(stored));
    }
    // Codecs 5–8 store the residual words of 1–4 as split streams (§5.2).
    let (residual, split) = if codec >= 5 {
        (codec - 4, true)
    } else {
        (codec, false)
    };
    let (mu, frame) = if residual == 4 {
        if stored.len() < 2 {
            return Err("pred2 prefix".into());
        }
        (u16::from_le_bytes([stored[0], stored[1]]), &stored[2..])
    } else {
        (0, stored)
    };
    fn need(b: Option<&[u32]>, n: usize) -> Result<&[u32], String> {
        b.filter(|b| b.len() == n)
            .ok_or_else(|| "delta codec lacks a base".to_owned())
    }
    // The bases the chain rules allow must exist before anything is decompressed.
    match residual {
        1 => {}
        2 | 3 => {
            need(p, n)?;
        }
        4 => {
            need(p, n)?;
            need(q, n)?;
        }
        _ => return Err(format!("unknown codec {codec}")),
    }
    let w = if split {
        split_words(frame, n)?
    } else {
        unshuffle(&one_frame(frame, 4 * n)?, n)
    };
    Ok(match residual {
        1 => w,
        2 => w.iter().zip(need(p, n)?).map(|(w, p)| w ^ p).collect(),
        3 => w
            .iter()
            .zip(need(p, n)?)
            .map(|(w, p)| p.wrapping_add(unzigzag(*w)))
            .collect(),
        _ => {
            let (p, q) = (need(p, n)?, need(q, n)?);
            w.iter()
                .zip(p)
                .zip(q)
                .map(|((w, p), q)| pred2(*p, *q, mu).wrapping_add(unzigzag(*w)))
                .collect()
        }
    })
}

fn xxh3_of(words: &[u32]) -> u64 {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Reads the data of the chunks of `entries` and returns the decoded words of all chunks.
fn decode_chunks(
    rd: &mut Rd<'_>,
    entries: &[(u8, u32, u32, u64)],
    total: usize,
    chunk_len: usize,
    p: Option<&[u32]>,
    q: Option<&[u32]>,
) -> Result<Vec<u32>, String> {
    let mut out = Vec::with_capacity(total);
    for (i, &(codec, len, crc, hash)) in entries.iter().enumerate() {
        let stored = rd.take(len as usize)?;
        if crc32c::crc32c(stored) != crc {
            return Err(format!("chunk {i} crc"));
        }
        let start = i * chunk_len;
        let n = chunk_len.min(total - start);
        let words = decode_chunk(
            codec,
            stored,
            n,
            p.map(|p| &p[start..start + n]),
            q.map(|q| &q[start..start + n]),
        )?;
        if xxh3_of(&words) != hash {
            return Err(format!("chunk {i} reconstructed hash"));
        }
        out.extend(words);
    }
    Ok(out)
}

fn chunk_table(rd: &mut Rd<'_>, count: usize) -> Result<Vec<(u8, u32, u32, u64)>, String> {
    if count
        .checked_mul(24)
        .is_none_or(|b| b > rd.b.len() - rd.pos)
    {
        return Err("chunk table exceeds the payload".into());
    }
    (0..count)
        .map(|_| {
            let codec = rd.u8()?;
            rd.zeros(3)?;
            let len = rd.u32()?;
            let crc = rd.u32()?;
            rd.zeros(4)?;
            Ok((codec, len, crc, rd.u64()?))
        })
        .collect()
}

/// A record header (§4.1) and its payload, as found at some offset.
struct Rec<'a> {
    kind: u8,
    flags: u8,
    step: u64,
    payload: &'a [u8],
    /// Whole length with header and padding.
    total: u64,
}

/// What lies at a record offset.
enum At<'a> {
    Rec(Rec<'a>),
    /// Fewer than 32 bytes left, or a valid header whose record runs past the end.
    Torn,
    /// Anything else; `payload_crc` says whether only the payload CRC failed.
    Bad {
        reason: String,
        payload_crc: bool,
    },
}

fn record_at(bytes: &[u8], pos: usize) -> At<'_> {
    let bad = |reason: String| At::Bad {
        reason,
        payload_crc: false,
    };
    if bytes.len() - pos < 32 {
        return At::Torn;
    }
    let h = &bytes[pos..pos + 32];
    if &h[0..4] != RECORD_MAGIC {
        return bad(format!("bad record magic at {pos}"));
    }
    if crc32c::crc32c(&h[..28]) != u32::from_le_bytes(h[28..32].try_into().unwrap()) {
        return bad(format!("record header crc at {pos}"));
    }
    let kind = h[4];
    let flags = h[5];
    if flags & !SKIPPABLE != 0 || h[6] != 0 || h[7] != 0 {
        return bad(format!("reserved record header bits at {pos}"));
    }
    let plen = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let step = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let pcrc = u32::from_le_bytes(h[24..28].try_into().unwrap());
    if plen > 1 << 36 {
        return bad(format!("payload length {plen} above the cap at {pos}"));
    }
    let total = 32 + plen + (8 - plen % 8) % 8;
    if total > (bytes.len() - pos) as u64 {
        return At::Torn;
    }
    let (start, total_us) = (pos + 32, total as usize);
    let payload = &bytes[start..start + plen as usize];
    if crc32c::crc32c(payload) != pcrc {
        return At::Bad {
            reason: format!("payload crc at {pos}"),
            payload_crc: true,
        };
    }
    if bytes[start + plen as usize..pos + total_us]
        .iter()
        .any(|&b| b != 0)
    {
        return bad(format!("padding at {pos}"));
    }
    At::Rec(Rec {
        kind,
        flags,
        step,
        payload,
        total,
    })
}

/// The fields of the HEADER record (§4.2), validated.
fn parse_header(f: &mut SpecFile, payload: &[u8]) -> Result<(), String> {
    let mut rd = Rd::new(payload);
    rd.take(16)?;
    rd.u64()?;
    f.n = rd.u64()?;
    let c = rd.u32()?;
    f.k = rd.u32()?;
    let level = rd.u32()? as i32;
    f.delta_codec = rd.u8()?;
    rd.zeros(3)?;
    let a = rd.u32()?;
    let l = rd.u32()?;
    let m = rd.u32()?;
    rd.zeros(4)?;
    cap("layout bytes", u64::from(l), 64 << 20)?;
    cap("metadata bytes", u64::from(m), 64 << 20)?;
    f.layout_json = String::from_utf8(rd.take(l as usize)?.to_vec()).map_err(|_| "layout utf8")?;
    f.metadata_json =
        String::from_utf8(rd.take(m as usize)?.to_vec()).map_err(|_| "metadata utf8")?;
    rd.end()?;
    if c == 0 || c > 1 << 24 {
        return Err(format!("chunk length {c}"));
    }
    if f.k == 0 || f.k > 1 << 16 {
        return Err(format!("keyframe interval {}", f.k));
    }
    if !(-131_072..=22).contains(&level) {
        return Err(format!("zstd level {level}"));
    }
    if !(2..=4).contains(&f.delta_codec) {
        return Err(format!("delta_codec {}", f.delta_codec));
    }
    cap("augmentation bytes per sample", u64::from(a), 4096)?;
    f.chunk_len = u64::from(c);
    f.aug_per_sample = u64::from(a);
    if !serde_json::from_str::<serde_json::Value>(&f.metadata_json)
        .map_err(|e| format!("metadata JSON: {e}"))?
        .is_object()
    {
        return Err("metadata is not a JSON object".into());
    }
    let layout: serde_json::Value =
        serde_json::from_str(&f.layout_json).map_err(|e| format!("layout JSON: {e}"))?;
    let tensors = layout.as_array().ok_or("layout is not an array")?;
    cap("tensors", tensors.len() as u64, 1 << 20)?;
    let mut names = BTreeSet::new();
    let mut next = 0u64;
    for t in tensors {
        let name = t["name"].as_str().ok_or("tensor name")?.to_owned();
        if name.is_empty() || name.len() > 4096 || !names.insert(name.clone()) {
            return Err(format!("tensor name {name:?}"));
        }
        let dtype = t["dtype"].as_str().ok_or("dtype")?.to_owned();
        let size = dtype_size(&dtype).ok_or_else(|| format!("dtype {dtype:?} of {name}"))?;
        if dtype != "f32" && f.incompat & TYPED_LAYOUT == 0 {
            return Err(format!(
                "dtype {dtype} of {name} without the TYPED_LAYOUT incompat bit"
            ));
        }
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .ok_or("shape")?
            .iter()
            .map(|d| d.as_u64().ok_or("shape entry"))
            .collect::<Result<_, _>>()?;
        let offset = t["offset_elements"].as_u64().ok_or("offset_elements")?;
        if offset != next {
            return Err(format!("{name} starts at {offset}, expected {next}"));
        }
        // §4.2: ceil(numel × size / 4) words (numel for f32).
        let words = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|numel| numel.checked_mul(size))
            .ok_or("shape overflows")?
            .div_ceil(4);
        next = next.checked_add(words).ok_or("layout overflows")?;
        f.layout.push((name, shape, offset));
        f.dtypes.push(dtype);
    }
    cap("state length", next, 1 << 33)?;
    if next != f.n {
        return Err(format!("layout holds {next} elements, N = {}", f.n));
    }
    Ok(())
}

/// Decoding state carried from record to record.
#[derive(Default)]
struct Walk {
    states: BTreeMap<u64, Vec<u32>>,
    /// (step, chain start) of the last step record.
    last_step: Option<(u64, u64)>,
    /// Whether a STEP, EPOCH or RESUME record was seen (§4.9: attachments come before).
    data_seen: bool,
}

/// Decodes one data record (§4.3–4.5, unknown SKIPPABLE kinds) into `f`; `pos` is its offset.
fn data_record(f: &mut SpecFile, w: &mut Walk, rec: &Rec<'_>, pos: usize) -> Result<(), String> {
    let mut rd = Rd::new(rec.payload);
    let step = rec.step;
    if matches!(rec.kind, KIND_STEP | KIND_EPOCH | KIND_RESUME) {
        w.data_seen = true;
    }
    match rec.kind {
        KIND_ATTACHMENT => attachment_record(f, w, rec, pos)?,
        KIND_STEP => step_record(f, w, rec)?,
        KIND_EPOCH => {
            let epoch = rd.u32()?;
            let e = rd.u32()?;
            cap("evals", u64::from(e), 65_536)?;
            let mut evals = Vec::new();
            for _ in 0..e {
                let l = rd.u32()?;
                cap("split name", u64::from(l), 4096)?;
                let split =
                    String::from_utf8(rd.take(l as usize)?.to_vec()).map_err(|_| "split utf8")?;
                evals.push((split, rd.u64()?, rd.u64()?, rd.u64()?));
            }
            rd.end()?;
            f.epochs.push((epoch, step, evals));
        }
        KIND_RESUME => {
            let r = rd.u64()?;
            let count = rd.u32()? as usize;
            let d = rd.u32()?;
            cap("resume elements", r, 1 << 33)?;
            cap("resume descriptor", u64::from(d), 64 << 20)?;
            if count as u64 != r.div_ceil(f.chunk_len) {
                return Err("resume chunk count".into());
            }
            plausible(rec.payload.len() as u64, r * 4)?;
            let table = chunk_table(&mut rd, count)?;
            check_codecs(&table, f.incompat, true)?;
            let desc =
                String::from_utf8(rd.take(d as usize)?.to_vec()).map_err(|_| "descriptor utf8")?;
            let buf = decode_chunks(
                &mut rd,
                &table,
                r as usize,
                f.chunk_len as usize,
                None,
                None,
            )?;
            rd.end()?;
            f.resume.push((step, buf, desc));
        }
        k if k > KIND_ATTACHMENT || k == 0 => {
            // §4.1: an unknown kind is skipped if SKIPPABLE, corrupt otherwise.
            if rec.flags & SKIPPABLE == 0 {
                return Err(format!(
                    "unknown record kind {k} at {pos} without SKIPPABLE"
                ));
            }
        }
        k => return Err(format!("record kind {k} at {pos} in the data region")),
    }
    f.data_records
        .push((pos as u64, rec.total, rec.kind, rec.step));
    Ok(())
}

/// §4.9: an ATTACHMENT record, before any step, epoch or resume record.
fn attachment_record(f: &mut SpecFile, w: &Walk, rec: &Rec<'_>, pos: usize) -> Result<(), String> {
    let mut rd = Rd::new(rec.payload);
    let step = rec.step;
    // §4.9
    if step != NO_STEP || w.data_seen {
        return Err(format!(
            "attachment at {pos} after a step/epoch/resume record or with a step"
        ));
    }
    let name_len = u64::from(rd.u32()?);
    rd.zeros(4)?;
    let data_len = rd.u64()?;
    let sha = rd.take(32)?.to_vec();
    if name_len == 0 || name_len > 256 {
        return Err(format!("attachment name length {name_len}"));
    }
    cap("attachment bytes", data_len, 4 << 30)?;
    if 48u64
        .checked_add(name_len)
        .and_then(|v| v.checked_add(data_len))
        != Some(rec.payload.len() as u64)
    {
        return Err("attachment lengths do not add up".into());
    }
    let name = String::from_utf8(rd.take(name_len as usize)?.to_vec())
        .map_err(|_| "attachment name utf8")?;
    let data = rd.take(data_len as usize)?.to_vec();
    rd.end()?;
    if f.attachments.iter().any(|(n, _)| *n == name) {
        return Err(format!("attachment name {name:?} twice"));
    }
    use sha2::Digest as _;
    if sha2::Sha256::digest(&data).as_slice() != sha.as_slice() {
        return Err(format!("attachment sha256 of {name:?}"));
    }
    f.attachments.push((name, data));
    Ok(())
}

/// §4.3: a STEP record, decoded against the states of its chain.
fn step_record(f: &mut SpecFile, w: &mut Walk, rec: &Rec<'_>) -> Result<(), String> {
    let mut rd = Rd::new(rec.payload);
    let step = rec.step;
    let flags = rd.u32()?;
    let count = rd.u32()? as usize;
    let chain_start = rd.u64()?;
    let mut stored = [0u64; 5];
    for s in &mut stored {
        *s = rd.u64()?;
    }
    let s_count = rd.u32()? as usize;
    let ids_codec = rd.u8()?;
    let aug_codec = rd.u8()?;
    // §4.3: byte 62 is the absent mask with ABSENT_MASK, else reserved; byte 63 reserved.
    let mask = rd.u8()?;
    rd.zeros(1)?;
    let mut scalars = [None; 5];
    if f.incompat & ABSENT_MASK != 0 {
        if mask & 0xE0 != 0 {
            return Err("absent mask bits 5-7".into());
        }
        for (i, (out, bits)) in scalars.iter_mut().zip(stored).enumerate() {
            if mask & (1 << i) == 0 {
                *out = Some(bits);
            } else if bits != ABSENT_BITS {
                return Err(format!("absent scalar {i} is not the absent NaN"));
            }
        }
    } else {
        if mask != 0 {
            return Err("reserved step byte 62".into());
        }
        for (out, bits) in scalars.iter_mut().zip(stored) {
            if !f64::from_bits(bits).is_nan() {
                *out = Some(bits);
            }
        }
    }
    let ids_len = rd.u32()? as usize;
    let aug_len = rd.u32()? as usize;
    if flags & !1 != 0 {
        return Err("step flags".into());
    }
    cap("sample ids", s_count as u64, 1 << 24)?;
    let keyframe = flags & 1 != 0;
    if step == NO_STEP
        || count as u64 != f.n.div_ceil(f.chunk_len)
        || keyframe != (chain_start == step)
    {
        return Err("step fields".into());
    }
    plausible(rec.total, f.n * 4)?;
    // §4.3 chains, §8.4
    if let Some((last, _)) = w.last_step
        && step <= last
    {
        return Err("steps not increasing".into());
    }
    if !keyframe && step.is_multiple_of(u64::from(f.k)) {
        return Err(format!("step {step} is a multiple of K but no keyframe"));
    }
    if !keyframe && w.last_step != Some((step - 1, chain_start)) {
        return Err("broken chain".into());
    }
    let table = chunk_table(&mut rd, count)?;
    check_codecs(&table, f.incompat, keyframe)?;
    // §4.3 sample ids and augmentation: exact sizes, zstd blobs one frame.
    let raw_aug = s_count as u64 * f.aug_per_sample;
    let ids_stored = rd.take(ids_len)?;
    let ids = match ids_codec {
        0 if ids_len == 4 * s_count => le_words(ids_stored),
        1 => {
            plausible(ids_len as u64, 4 * s_count as u64)?;
            unshuffle(&one_frame(ids_stored, 4 * s_count)?, s_count)
        }
        _ => return Err("sample ids codec or length".into()),
    };
    let aug_stored = rd.take(aug_len)?;
    let aug = match aug_codec {
        0 if aug_len as u64 == raw_aug => aug_stored.to_vec(),
        2 => {
            plausible(aug_len as u64, raw_aug)?;
            one_frame(aug_stored, raw_aug as usize)?
        }
        _ => return Err("augmentation codec or length".into()),
    };
    let p = if keyframe {
        None
    } else {
        w.states.get(&(step - 1)).map(Vec::as_slice)
    };
    let q = if step >= chain_start + 2 {
        w.states.get(&(step - 2)).map(Vec::as_slice)
    } else {
        None
    };
    let state = decode_chunks(&mut rd, &table, f.n as usize, f.chunk_len as usize, p, q)?;
    rd.end()?;
    if keyframe {
        w.states.clear();
    }
    w.states.insert(step, state.clone());
    w.last_step = Some((step, chain_start));
    f.steps.push(SpecStep {
        step,
        chain_start,
        keyframe,
        state,
        ids,
        aug,
        scalars,
    });
    Ok(())
}

/// Parses a whole recording per SPEC.md, decoding every state and checking every checksum.
pub fn parse(bytes: &[u8]) -> Result<SpecFile, String> {
    // §3 prologue
    if bytes.len() < 64 || &bytes[..8] != MAGIC {
        return Err("no prologue".into());
    }
    let mut f = SpecFile::default();
    let mut rd = Rd {
        b: &bytes[..64],
        pos: 8,
    };
    f.major = rd.u16()?;
    f.minor = rd.u16()?;
    if f.major != 1 {
        return Err(format!("major {}", f.major));
    }
    if crc32c::crc32c(&bytes[..60]) != u32::from_le_bytes(bytes[60..64].try_into().unwrap()) {
        return Err("prologue crc".into());
    }
    rd.zeros(4)?;
    f.incompat = rd.u64()?;
    if f.incompat & !(TYPED_LAYOUT | ABSENT_MASK | SPLIT_STREAMS) != 0 {
        return Err("incompat flags".into());
    }
    rd.take(32)?;
    rd.zeros(4)?;

    // §4.2 the HEADER record, at 64
    let header = match record_at(bytes, 64) {
        At::Rec(r) if r.kind == KIND_HEADER => r,
        At::Rec(_) => return Err("first record is not a header".into()),
        At::Torn => return Err("truncated header record".into()),
        At::Bad { reason, .. } => return Err(reason),
    };
    parse_header(&mut f, header.payload)?;
    let header_end = 64 + header.total as usize;

    // §9: finished iff it ends in the magic; then no fallback to scanning.
    let len = bytes.len();
    f.finished = len >= header_end + 32 && &bytes[len - 8..] == MAGIC;
    let mut w = Walk::default();
    if f.finished {
        let index = finished_index(bytes, header_end, &f)?;
        for &(offset, length, kind, step, chain, key) in &index {
            let rec = match record_at(bytes, offset as usize) {
                At::Rec(r) => r,
                At::Torn => return Err("indexed record is incomplete".into()),
                At::Bad { reason, .. } => return Err(reason),
            };
            if (rec.total, rec.kind, rec.step) != (length, kind, step) {
                return Err(format!("index entry differs from the record at {offset}"));
            }
            data_record(&mut f, &mut w, &rec, offset as usize)?;
            let (got_chain, got_key) = match f.steps.last() {
                Some(s) if kind == KIND_STEP => (s.chain_start, s.keyframe),
                _ => (step, false),
            };
            if (got_chain, got_key) != (chain, key) {
                return Err(format!("index chain fields differ at {offset}"));
            }
        }
    } else {
        // §9 scan: stop at a torn tail, reject anything a crash cannot leave.
        let mut pos = header_end;
        while pos < len {
            match record_at(bytes, pos) {
                At::Torn => break,
                At::Bad {
                    reason,
                    payload_crc,
                } => {
                    let rest = &bytes[pos..];
                    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
                    let unwritten_end = payload_crc && {
                        let plen = u64::from_le_bytes(rest[8..16].try_into().unwrap());
                        let total = (32 + plen + (8 - plen % 8) % 8) as usize;
                        zeros(&rest[total..])
                    };
                    if zeros(rest) || unwritten_end {
                        break;
                    }
                    return Err(reason);
                }
                At::Rec(rec) => {
                    match rec.kind {
                        KIND_HEADER => return Err("a second header record".into()),
                        KIND_INDEX | KIND_FOOTER => {}
                        _ => data_record(&mut f, &mut w, &rec, pos)?,
                    }
                    pos += rec.total as usize;
                }
            }
        }
    }
    Ok(f)
}

/// (offset, length, kind, step, chain start, keyframe) of every index entry.
type SpecEntry = (u64, u64, u8, u64, u64, bool);

/// §4.6–4.8 and §8.5: the trailer, FOOTER and INDEX of a finished file, validated; the
/// entries tile the data region.
fn finished_index(bytes: &[u8], header_end: usize, f: &SpecFile) -> Result<Vec<SpecEntry>, String> {
    let len = bytes.len();
    let t = &bytes[len - 32..];
    if crc32c::crc32c(&t[..20]) != u32::from_le_bytes(t[20..24].try_into().unwrap()) {
        return Err("trailer crc".into());
    }
    let mut rd = Rd::new(t);
    let (footer_at, footer_len) = (rd.u64()?, rd.u64()?);
    if (rd.u16()?, rd.u16()?) != (f.major, f.minor) {
        return Err("trailer version".into());
    }
    if footer_at.checked_add(footer_len) != Some((len - 32) as u64) || footer_at < header_end as u64
    {
        return Err("footer location".into());
    }
    let footer = match record_at(&bytes[..len - 32], footer_at as usize) {
        At::Rec(r) if r.kind == KIND_FOOTER && r.total == footer_len => r,
        At::Bad { reason, .. } => return Err(reason),
        _ => return Err("trailer does not point at a footer".into()),
    };
    let mut rd = Rd::new(footer.payload);
    let (index_at, index_len) = (rd.u64()?, rd.u64()?);
    let counts = (rd.u64()?, rd.u64()?, rd.u64()?, rd.u64()?);
    rd.zeros(16)?;
    rd.end()?;
    if index_at.checked_add(index_len) != Some(footer_at) || index_at < header_end as u64 {
        return Err("index location".into());
    }
    let index = match record_at(&bytes[..footer_at as usize], index_at as usize) {
        At::Rec(r) if r.kind == KIND_INDEX && r.total == index_len => r,
        At::Bad { reason, .. } => return Err(reason),
        _ => return Err("footer does not point at an index".into()),
    };
    let mut rd = Rd::new(index.payload);
    let n = rd.u64()?;
    if Some(index.payload.len() as u64) != n.checked_mul(40).and_then(|b| b.checked_add(8)) {
        return Err("index entry count".into());
    }
    let mut entries = Vec::new();
    let mut next = header_end as u64;
    for _ in 0..n {
        let (o, l, s, chain) = (rd.u64()?, rd.u64()?, rd.u64()?, rd.u64()?);
        let kind = rd.u8()?;
        let flags = rd.u8()?;
        rd.zeros(6)?;
        if o != next || l < 32 || l % 8 != 0 || flags & !1 != 0 {
            return Err("index entries do not tile the data region".into());
        }
        next = o
            .checked_add(l)
            .filter(|&e| e <= index_at)
            .ok_or("entry past the index")?;
        if kind != KIND_STEP && (flags != 0 || chain != s) {
            return Err("non-step entry with step fields".into());
        }
        if matches!(kind, KIND_HEADER | KIND_INDEX | KIND_FOOTER) {
            return Err("index lists a non-data record".into());
        }
        entries.push((o, l, kind, s, chain, flags & 1 != 0));
    }
    rd.end()?;
    if next != index_at {
        return Err("index entries do not cover the data region".into());
    }
    let steps: Vec<u64> = entries
        .iter()
        .filter(|e| e.2 == KIND_STEP)
        .map(|e| e.3)
        .collect();
    let want = (
        n,
        steps.len() as u64,
        steps.first().copied().unwrap_or(NO_STEP),
        steps.last().copied().unwrap_or(NO_STEP),
    );
    if counts != want {
        return Err("footer counts".into());
    }
    Ok(entries)
}

/// Appendix A: the trainable flags of an `sgdwalk-record` run description, `None` for other
/// metadata. The description's `layout.entries` must agree with the HEADER layout.
pub fn trainable_flags(f: &SpecFile) -> Result<Option<Vec<(String, bool)>>, String> {
    let meta: serde_json::Value =
        serde_json::from_str(&f.metadata_json).map_err(|e| e.to_string())?;
    if meta["schema_version"] != 1 || meta["provenance"]["tool"] != "sgdwalk-record" {
        return Ok(None);
    }
    let entries = meta["layout"]["entries"]
        .as_array()
        .ok_or("layout.entries missing")?;
    if entries.len() != f.layout.len() {
        return Err("layout.entries and the header layout differ in length".into());
    }
    entries
        .iter()
        .zip(&f.layout)
        .map(|(e, (name, shape, offset))| {
            let e_shape: Option<Vec<u64>> = e["shape"]
                .as_array()
                .and_then(|s| s.iter().map(serde_json::Value::as_u64).collect());
            let count: u64 = shape.iter().product();
            if e["name"] != name.as_str()
                || e_shape.as_ref() != Some(shape)
                || e["offset_elements"].as_u64() != Some(*offset)
                || e["len_elements"].as_u64() != Some(count)
            {
                return Err(format!(
                    "layout.entries disagrees with the header at {name}"
                ));
            }
            let trainable = e["trainable"].as_bool().ok_or("trainable missing")?;
            Ok((name.clone(), trainable))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}
