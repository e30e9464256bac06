//! An independent reader of the recording format, written from `format-spec/SPEC.md` alone.
//!
//! It uses only std, zstd, crc32c and xxhash-rust (no sgdwalk-format types or functions) to
//! decode the golden files, and compares what it finds with what `sgdwalk_format::Reader` reads.
//! If the two disagree, either the spec or the crate is wrong.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"\x89SGDWLK\n";
const NO_STEP: u64 = u64::MAX;

/// A bounds-checked little-endian reader; every failure is an `Err(String)`.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
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
    /// Bit patterns of the 5 scalars.
    pub scalars: [u64; 5],
}

#[derive(Debug, Default)]
pub struct SpecFile {
    pub major: u16,
    pub minor: u16,
    pub n: u64,
    pub chunk_len: u64,
    pub k: u32,
    pub delta_codec: u8,
    pub aug_per_sample: u64,
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
        return Ok(stored
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    let (mu, frame) = if codec == 4 {
        if stored.len() < 2 {
            return Err("pred2 prefix".into());
        }
        (u16::from_le_bytes([stored[0], stored[1]]), &stored[2..])
    } else {
        (0, stored)
    };
    let w = unshuffle(&one_frame(frame, 4 * n)?, n);
    fn need(b: Option<&[u32]>, n: usize) -> Result<&[u32], String> {
        b.filter(|b| b.len() == n)
            .ok_or_else(|| "delta codec lacks a base".to_owned())
    }
    Ok(match codec {
        1 => w,
        2 => w.iter().zip(need(p, n)?).map(|(w, p)| w ^ p).collect(),
        3 => w
            .iter()
            .zip(need(p, n)?)
            .map(|(w, p)| p.wrapping_add(unzigzag(*w)))
            .collect(),
        4 => {
            let (p, q) = (need(p, n)?, need(q, n)?);
            w.iter()
                .zip(p)
                .zip(q)
                .map(|((w, p), q)| pred2(*p, *q, mu).wrapping_add(unzigzag(*w)))
                .collect()
        }
        _ => return Err(format!("unknown codec {codec}")),
    })
}

fn xxh3_of(words: &[u32]) -> u64 {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Reads a chunk table and the data after `data_start` bytes of other fields; returns the
/// decoded words of all chunks.
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
    if crc32c::crc32c(&bytes[..60])
        != u32::from_le_bytes(bytes[60..64].try_into().map_err(|_| "crc")?)
    {
        return Err("prologue crc".into());
    }
    rd.zeros(4)?;
    if rd.u64()? != 0 {
        return Err("incompat flags".into());
    }
    // §4.8: a finished file ends with the trailer.
    let len = bytes.len();
    f.finished = len >= 64 + 32 && &bytes[len - 8..] == MAGIC;
    let region_end = if f.finished { len - 32 } else { len };

    let mut pos = 64usize;
    let mut states: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut last_step: Option<(u64, u64)> = None; // (step, chain start)
    let mut index: Option<Vec<(u64, u64, u8, u64)>> = None;
    let mut footer_at = None;
    let mut seen_header = false;
    while pos < region_end {
        // §4.1 record header
        if region_end - pos < 32 {
            if f.finished {
                return Err("short record before trailer".into());
            }
            break;
        }
        let h = &bytes[pos..pos + 32];
        if &h[0..4] != b"SWRC"
            || crc32c::crc32c(&h[..28])
                != u32::from_le_bytes(h[28..32].try_into().map_err(|_| "crc")?)
        {
            return Err(format!("bad record header at {pos}"));
        }
        let mut rd = Rd { b: h, pos: 4 };
        let kind = rd.u8()?;
        let _flags = rd.u8()?;
        rd.zeros(2)?;
        let plen = rd.u64()? as usize;
        let step = rd.u64()?;
        let pcrc = rd.u32()?;
        let total = 32 + plen + (8 - plen % 8) % 8;
        if pos + total > region_end {
            if f.finished {
                return Err("record beyond trailer".into());
            }
            break; // torn tail
        }
        let payload = &bytes[pos + 32..pos + 32 + plen];
        if crc32c::crc32c(payload) != pcrc {
            return Err(format!("payload crc at {pos}"));
        }
        if bytes[pos + 32 + plen..pos + total].iter().any(|&b| b != 0) {
            return Err("padding".into());
        }
        let mut rd = Rd { b: payload, pos: 0 };
        match kind {
            1 if pos == 64 => {
                // §4.2
                rd.take(16)?;
                rd.u64()?;
                f.n = rd.u64()?;
                f.chunk_len = u64::from(rd.u32()?);
                f.k = rd.u32()?;
                rd.u32()?;
                f.delta_codec = rd.u8()?;
                rd.zeros(3)?;
                f.aug_per_sample = u64::from(rd.u32()?);
                let l = rd.u32()? as usize;
                let m = rd.u32()? as usize;
                rd.zeros(4)?;
                f.layout_json =
                    String::from_utf8(rd.take(l)?.to_vec()).map_err(|_| "layout utf8")?;
                f.metadata_json =
                    String::from_utf8(rd.take(m)?.to_vec()).map_err(|_| "metadata utf8")?;
                rd.end()?;
                seen_header = true;
            }
            2 if seen_header => {
                // §4.3
                let flags = rd.u32()?;
                let count = rd.u32()? as usize;
                let chain_start = rd.u64()?;
                let mut scalars = [0u64; 5];
                for s in &mut scalars {
                    *s = rd.u64()?;
                }
                let s_count = rd.u32()? as usize;
                let ids_codec = rd.u8()?;
                let aug_codec = rd.u8()?;
                rd.zeros(2)?;
                let ids_len = rd.u32()? as usize;
                let aug_len = rd.u32()? as usize;
                let keyframe = flags & 1 != 0;
                if count as u64 != f.n.div_ceil(f.chunk_len) || keyframe != (chain_start == step) {
                    return Err("step fields".into());
                }
                if let Some((last, _)) = last_step
                    && step <= last
                {
                    return Err("steps not increasing".into());
                }
                if !keyframe && last_step != Some((step - 1, chain_start)) {
                    return Err("broken chain".into());
                }
                let table = chunk_table(&mut rd, count)?;
                if keyframe && table.iter().any(|e| e.0 > 1) {
                    return Err("delta codec in a keyframe".into());
                }
                let ids_stored = rd.take(ids_len)?;
                let ids = match ids_codec {
                    0 => ids_stored
                        .chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    1 => unshuffle(&one_frame(ids_stored, 4 * s_count)?, s_count),
                    _ => return Err("ids codec".into()),
                };
                let aug_stored = rd.take(aug_len)?;
                let aug = match aug_codec {
                    0 => aug_stored.to_vec(),
                    2 => one_frame(aug_stored, s_count * f.aug_per_sample as usize)?,
                    _ => return Err("aug codec".into()),
                };
                if ids.len() != s_count || aug.len() as u64 != s_count as u64 * f.aug_per_sample {
                    return Err("ids/aug length".into());
                }
                let p = if keyframe {
                    None
                } else {
                    states.get(&(step - 1)).map(Vec::as_slice)
                };
                let q = if step >= chain_start + 2 {
                    states.get(&(step - 2)).map(Vec::as_slice)
                } else {
                    None
                };
                let state =
                    decode_chunks(&mut rd, &table, f.n as usize, f.chunk_len as usize, p, q)?;
                rd.end()?;
                states.insert(step, state.clone());
                last_step = Some((step, chain_start));
                f.steps.push(SpecStep {
                    step,
                    chain_start,
                    keyframe,
                    state,
                    ids,
                    aug,
                    scalars,
                });
                f.data_records.push((pos as u64, total as u64, kind, step));
            }
            3 if seen_header => {
                // §4.4
                let epoch = rd.u32()?;
                let e = rd.u32()?;
                let mut evals = Vec::new();
                for _ in 0..e {
                    let l = rd.u32()? as usize;
                    let split =
                        String::from_utf8(rd.take(l)?.to_vec()).map_err(|_| "split utf8")?;
                    evals.push((split, rd.u64()?, rd.u64()?, rd.u64()?));
                }
                rd.end()?;
                f.epochs.push((epoch, step, evals));
                f.data_records.push((pos as u64, total as u64, kind, step));
            }
            4 if seen_header => {
                // §4.5
                let r = rd.u64()? as usize;
                let count = rd.u32()? as usize;
                let d = rd.u32()? as usize;
                if count != r.div_ceil(f.chunk_len as usize) {
                    return Err("resume chunk count".into());
                }
                let table = chunk_table(&mut rd, count)?;
                if table.iter().any(|e| e.0 > 1) {
                    return Err("resume codec".into());
                }
                let desc =
                    String::from_utf8(rd.take(d)?.to_vec()).map_err(|_| "descriptor utf8")?;
                let buf = decode_chunks(&mut rd, &table, r, f.chunk_len as usize, None, None)?;
                rd.end()?;
                f.resume.push((step, buf, desc));
                f.data_records.push((pos as u64, total as u64, kind, step));
            }
            5 => {
                // §4.6
                let n = rd.u64()?;
                let mut entries = Vec::new();
                for _ in 0..n {
                    let (o, l, s, _chain) = (rd.u64()?, rd.u64()?, rd.u64()?, rd.u64()?);
                    let k = rd.u8()?;
                    rd.u8()?;
                    rd.zeros(6)?;
                    entries.push((o, l, k, s));
                }
                rd.end()?;
                index = Some(entries);
            }
            6 => footer_at = Some((pos as u64, total as u64)),
            _ => return Err(format!("unexpected record kind {kind} at {pos}")),
        }
        pos += total;
    }
    if !seen_header {
        return Err("no header record".into());
    }
    if f.finished {
        // §4.8 trailer, §4.6 index
        let t = &bytes[len - 32..];
        if crc32c::crc32c(&t[..20]) != u32::from_le_bytes(t[20..24].try_into().map_err(|_| "crc")?)
        {
            return Err("trailer crc".into());
        }
        let mut rd = Rd { b: t, pos: 0 };
        let footer = (rd.u64()?, rd.u64()?);
        if Some(footer) != footer_at || pos != len - 32 {
            return Err("trailer does not point at the footer".into());
        }
        if index.as_ref() != Some(&f.data_records) {
            return Err("index differs from the records".into());
        }
        let _ = NO_STEP;
    }
    Ok(f)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/fixtures")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    v.sort();
    v
}

#[test]
fn spec_reader_agrees_with_the_crate_on_every_golden_file() {
    let files = files_in(&fixtures().join("v1"));
    assert!(files.len() >= 5, "golden files missing");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let spec = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut r = sgdwalk_format::Reader::open(&path).unwrap();
        assert_eq!(r.is_finished(), spec.finished, "{}", path.display());
        let steps: Vec<u64> = spec.steps.iter().map(|s| s.step).collect();
        assert_eq!(r.steps(), &steps[..], "{}", path.display());
        assert_eq!(r.header().state_len_elements, spec.n);
        assert_eq!(
            u64::from(r.header().codec.chunk_len_elements),
            spec.chunk_len
        );
        assert_eq!(r.header().metadata_json, spec.metadata_json);
        for s in &spec.steps {
            let state = r.state(s.step).unwrap();
            let bits: Vec<u32> = state.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, s.state, "{} step {}", path.display(), s.step);
            let info = r.step_info(s.step).unwrap();
            assert_eq!(info.sample_ids, s.ids);
            assert_eq!(info.augmentation, s.aug);
            assert_eq!(info.keyframe, s.keyframe);
            let sc = info.scalars;
            let got = [
                sc.learning_rate,
                sc.minibatch_loss,
                sc.grad_norm,
                sc.update_norm,
                sc.wall_time_secs,
            ]
            .map(f64::to_bits);
            assert_eq!(got, s.scalars);
        }
        let epochs = r.epochs().unwrap();
        assert_eq!(epochs.len(), spec.epochs.len());
        for (e, (epoch, step, evals)) in epochs.iter().zip(&spec.epochs) {
            assert_eq!(
                (e.epoch, e.step, e.evals.len()),
                (*epoch, *step, evals.len())
            );
            for (a, b) in e.evals.iter().zip(evals) {
                assert_eq!(
                    (
                        a.split.as_str(),
                        a.loss.to_bits(),
                        a.accuracy.to_bits(),
                        a.samples
                    ),
                    (b.0.as_str(), b.1, b.2, b.3)
                );
            }
        }
        for (step, buf, desc) in &spec.resume {
            let (got, got_desc) = r.resume_state(*step).unwrap().unwrap();
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), *buf);
            assert_eq!(&got_desc, desc);
        }
    }
}

#[test]
fn spec_reader_rejects_every_bad_file() {
    for path in files_in(&fixtures().join("bad")) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(parse(&bytes).is_err(), "{} accepted", path.display());
    }
}
