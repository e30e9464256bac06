//! Side-by-side benchmark of the chunk codecs over a trajectory, used by `benches/codec.rs`.
//! Every decode is checked bit-exact and a mismatch panics: that is a benchmark's job, and the
//! reason this lives in the test-kit rather than in [`crate::codec`].

use std::time::Instant;

use crate::codec::{
    SPLIT_DESCRIPTOR_BYTES, SPLIT_STREAMS, STREAM_ZSTD, decode_chunk, encode_chunk, estimate_mu_q8,
    residual_words, split_into_streams,
};
use crate::types::CodecId;

/// One row of [`bench_trajectory`]'s table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CodecBenchRow {
    /// Method name.
    pub method: String,
    /// Raw bytes processed (one encode pass).
    pub raw_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// raw / stored.
    pub ratio: f64,
    /// Raw MB/s of encoding on one thread (10^6 bytes).
    pub encode_mb_per_s: f64,
    /// Raw MB/s of decoding on one thread.
    pub decode_mb_per_s: f64,
}

const BENCH_CHUNK: usize = 262_144;

fn row(method: &str, raw: u64, stored: u64, enc_secs: f64, dec_secs: f64) -> CodecBenchRow {
    CodecBenchRow {
        method: method.to_owned(),
        raw_bytes: raw,
        stored_bytes: stored,
        ratio: raw as f64 / stored.max(1) as f64,
        encode_mb_per_s: raw as f64 / 1e6 / enc_secs.max(1e-9),
        decode_mb_per_s: raw as f64 / 1e6 / dec_secs.max(1e-9),
    }
}

/// Side-by-side benchmark over a trajectory (states of consecutive steps), on the calling
/// thread, in 262 144-element chunks: plain zstd on the raw bytes, byte-shuffle + zstd (the key
/// codec), each delta codec on every transition (pred2 falls back to zigzag for the first one,
/// which has no t−2), and the writer's scheme "key every 32 + delta" for each delta codec.
/// Every decode is checked bit-exact; a mismatch panics (this is a benchmark, not a library
/// path). Returns an empty vector for fewer than 2 states.
pub fn bench_trajectory(states: &[Vec<f32>], level: i32) -> Vec<CodecBenchRow> {
    let mut rows = Vec::new();
    if states.len() < 2 {
        return rows;
    }
    let n = states[0].len();
    if states.iter().any(|s| s.len() != n) || n == 0 {
        return rows;
    }
    let raw_per_state = (n * 4) as u64;

    // Plain zstd on the raw little-endian bytes.
    {
        let raw: Vec<Vec<u8>> = states
            .iter()
            .map(|s| s.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect())
            .collect();
        let mut enc = Vec::new();
        let t = Instant::now();
        for r in &raw {
            for c in r.chunks(BENCH_CHUNK * 4) {
                enc.push(zstd::bulk::compress(c, level).unwrap_or_default());
            }
        }
        let enc_secs = t.elapsed().as_secs_f64();
        let stored: u64 = enc.iter().map(|e| e.len() as u64).sum();
        let t = Instant::now();
        let mut dec = Vec::new();
        for e in &enc {
            dec.push(zstd::bulk::decompress(e, BENCH_CHUNK * 4).unwrap_or_default());
        }
        let dec_secs = t.elapsed().as_secs_f64();
        let ok = dec.concat() == raw.concat();
        assert!(ok, "plain zstd round trip failed");
        rows.push(row(
            &format!("zstd{level} raw bytes"),
            raw_per_state * states.len() as u64,
            stored,
            enc_secs,
            dec_secs,
        ));
    }

    // Per-state sizes of each codec, for the K=32 mix; each codec beside its split variant.
    let mut key_sizes = [Vec::new(), Vec::new()];
    for (i, key) in [CodecId::Key, CodecId::KeySplit].into_iter().enumerate() {
        key_sizes[i] = bench_codec(states, key, level, &mut rows);
    }
    let deltas = [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2];
    for codec in deltas.into_iter().flat_map(|c| [c, c.split()]) {
        let key_sizes = &key_sizes[usize::from(codec.is_split())];
        let delta_sizes = bench_codec(states, codec, level, &mut rows);
        let stored: u64 = (0..states.len())
            .map(|t| {
                if t % 32 == 0 {
                    key_sizes[t]
                } else {
                    delta_sizes[t]
                }
            })
            .sum();
        let raw = raw_per_state * states.len() as u64;
        rows.push(CodecBenchRow {
            method: format!(
                "{}/32 + {}",
                if codec.is_split() { "key_split" } else { "key" },
                codec.name()
            ),
            raw_bytes: raw,
            stored_bytes: stored,
            ratio: raw as f64 / stored.max(1) as f64,
            encode_mb_per_s: f64::NAN,
            decode_mb_per_s: f64::NAN,
        });
    }
    rows
}

/// Benchmarks one codec over all states (Key) or all transitions (deltas); pushes a row and
/// returns the stored size per state index (index 0 is the key size for deltas).
fn bench_codec(
    states: &[Vec<f32>],
    codec: CodecId,
    level: i32,
    rows: &mut Vec<CodecBenchRow>,
) -> Vec<u64> {
    let n = states[0].len();
    let first = if codec.is_standalone() { 0 } else { 1 };
    let mut sizes = vec![0u64; states.len()];
    let mut encoded: Vec<(CodecId, Vec<u8>)> = Vec::new();
    let t = Instant::now();
    for (ti, s) in states.iter().enumerate().skip(first) {
        let prev = ti.checked_sub(1).map(|i| &states[i]);
        let prev2 = ti.checked_sub(2).map(|i| &states[i]);
        for c0 in (0..n).step_by(BENCH_CHUNK) {
            let c1 = (c0 + BENCH_CHUNK).min(n);
            let use_codec = codec.effective(prev2.is_some());
            let mut out = Vec::new();
            let len = encode_chunk(
                use_codec,
                &s[c0..c1],
                prev.map(|p| &p[c0..c1]),
                prev2.map(|p| &p[c0..c1]),
                level,
                &mut out,
            )
            .unwrap_or(0);
            sizes[ti] += len as u64;
            encoded.push((use_codec, out));
        }
    }
    let enc_secs = t.elapsed().as_secs_f64();
    let mut out = vec![0f32; n];
    let mut it = encoded.iter();
    let mut dec_secs = 0.0;
    let mut ok = true;
    for (ti, s) in states.iter().enumerate().skip(first) {
        // Decoding is timed; the check of each state against the original is not.
        let t = Instant::now();
        let prev = ti.checked_sub(1).map(|i| &states[i]);
        let prev2 = ti.checked_sub(2).map(|i| &states[i]);
        for c0 in (0..n).step_by(BENCH_CHUNK) {
            let c1 = (c0 + BENCH_CHUNK).min(n);
            let Some((use_codec, bytes)) = it.next() else {
                break;
            };
            ok &= decode_chunk(
                *use_codec,
                bytes,
                prev.map(|p| &p[c0..c1]),
                prev2.map(|p| &p[c0..c1]),
                &mut out[c0..c1],
            )
            .is_ok();
        }
        dec_secs += t.elapsed().as_secs_f64();
        ok &= out.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits());
    }
    assert!(ok, "{codec} round trip failed");
    let raw = ((states.len() - first) * n * 4) as u64;
    let name = match codec {
        CodecId::Key => "shuffle+zstd (key)".to_owned(),
        c if c.is_split() => c.name().to_owned(),
        c => format!("{} (+shuffle+zstd)", c.name()),
    };
    rows.push(row(&name, raw, sizes.iter().sum(), enc_secs, dec_secs));
    if !codec.is_standalone() {
        // The first state has no delta; the K-mix uses the key size there.
        sizes[0] = 0;
    }
    sizes
}

/// Formats bench rows as a fixed-width table.
pub fn format_bench_table(rows: &[CodecBenchRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} {:>12} {:>12} {:>7} {:>10} {:>10}",
        "method", "raw MB", "stored MB", "ratio", "enc MB/s", "dec MB/s"
    );
    for r in rows {
        let f = |v: f64| {
            if v.is_finite() {
                format!("{v:.0}")
            } else {
                "-".to_owned()
            }
        };
        let _ = writeln!(
            s,
            "{:<34} {:>12.2} {:>12.2} {:>7.3} {:>10} {:>10}",
            r.method,
            r.raw_bytes as f64 / 1e6,
            r.stored_bytes as f64 / 1e6,
            r.ratio,
            f(r.encode_mb_per_s),
            f(r.decode_mb_per_s)
        );
    }
    s
}

/// Exact order-0 entropy of `bytes` in bits per byte (0 when empty).
fn entropy_bits(bytes: &[u8]) -> f64 {
    crate::codec::sampled_entropy_bits(bytes, 1)
}

/// Where the bytes of `codec`'s residual go, against their order-0 entropy: per byte plane
/// (what shuffle4 + zstd sees) and per split stream (SPEC.md §5.2), over every transition of
/// `states` (the first, without t−2, uses the zigzag residual for pred2), in the bench's
/// chunks. Entropy is measured per chunk and summed as bytes, so "limit" is what an order-0
/// coder per chunk and stream would store; "stored" is what the split codec stored (its stream
/// tables and zstd frame headers counted in the total line only).
pub fn stream_entropy_table(states: &[Vec<f32>], codec: CodecId, level: i32) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if states.first().is_none_or(Vec::is_empty) {
        return s;
    }
    let base = codec.residual();
    // C: the class stream; Lk: leading bytes of class k (k + 1 significant bytes); R: the rest.
    let names = ["C", "L0", "L1", "L2", "L3", "R"];
    // Per plane: [bytes, limit bytes]; per stream: [bytes, limit bytes, stored bytes, zstd chunks].
    let mut planes = [[0f64; 2]; 4];
    let mut streams = [[0f64; 4]; SPLIT_STREAMS];
    let (mut raw_total, mut stored_total, mut chunks) = (0f64, 0f64, 0usize);
    let mut split: [Vec<u8>; SPLIT_STREAMS] = Default::default();
    for_each_residual_chunk(states, base, |c, cur, prev, prev2, words| {
        for (k, plane) in planes.iter_mut().enumerate() {
            let bytes: Vec<u8> = words.iter().map(|w| (w >> (8 * k)) as u8).collect();
            plane[0] += bytes.len() as f64;
            plane[1] += bytes.len() as f64 * entropy_bits(&bytes) / 8.0;
        }
        split_into_streams(words, &mut split);
        let mut enc = Vec::new();
        let Ok(len) = encode_chunk(c, cur, Some(prev), prev2, level, &mut enc) else {
            return;
        };
        let table = &enc[if c.residual() == CodecId::Pred2 { 2 } else { 0 }..];
        for (k, st) in streams.iter_mut().enumerate() {
            let d = &table[k * SPLIT_DESCRIPTOR_BYTES..][..SPLIT_DESCRIPTOR_BYTES];
            st[0] += split[k].len() as f64;
            st[1] += split[k].len() as f64 * entropy_bits(&split[k]) / 8.0;
            st[2] += f64::from(u32::from_le_bytes([d[5], d[6], d[7], d[8]]));
            st[3] += f64::from(u8::from(d[0] == STREAM_ZSTD));
        }
        raw_total += (4 * words.len()) as f64;
        stored_total += len as f64;
        chunks += 1;
    });
    if chunks == 0 {
        return s;
    }
    let bits = |bytes: f64, of: f64| if of > 0.0 { 8.0 * bytes / of } else { 0.0 };
    let _ = writeln!(
        s,
        "{} residual, {chunks} chunks: order-0 entropy vs stored (bits per byte of each part)",
        base.name()
    );
    let plane_limit: f64 = planes.iter().map(|p| p[1]).sum();
    let _ = writeln!(
        s,
        "  byte planes (shuffle4):  {}  -> limit ratio {:.3}",
        planes
            .iter()
            .enumerate()
            .map(|(k, p)| format!("b{k} {:.2}", bits(p[1], p[0])))
            .collect::<Vec<_>>()
            .join("  "),
        raw_total / plane_limit
    );
    let _ = writeln!(
        s,
        "  {:<6} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "stream", "words %", "entropy", "stored", "limit MB", "zstd/all"
    );
    for (k, st) in streams.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:<6} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>6}/{}",
            names[k],
            100.0 * st[0] / (raw_total / 4.0),
            bits(st[1], st[0]),
            bits(st[2], st[0]),
            st[1] / 1e6,
            st[3],
            chunks
        );
    }
    let stream_limit: f64 = streams.iter().map(|st| st[1]).sum();
    let _ = writeln!(
        s,
        "  split streams: limit ratio {:.3}, stored ratio {:.3} ({:.1}% above the limit, tables and frame headers included)",
        raw_total / stream_limit,
        raw_total / stored_total,
        100.0 * (stored_total / stream_limit - 1.0)
    );
    s
}

/// Calls `visit` for every bench chunk of every transition of `states`, with the chunk's split
/// codec of the `base` residual (pred2 falls back to zigzag for the first transition), its
/// values, bases and residual words (chunks whose residual fails are skipped).
fn for_each_residual_chunk(
    states: &[Vec<f32>],
    base: CodecId,
    mut visit: impl FnMut(CodecId, &[f32], &[f32], Option<&[f32]>, &[u32]),
) {
    let n = states.first().map_or(0, Vec::len);
    let mut words = Vec::new();
    for t in 1..states.len() {
        let (cur, prev) = (&states[t], &states[t - 1]);
        let prev2 = t.checked_sub(2).map(|i| &states[i]);
        let c = base.split().effective(prev2.is_some());
        for c0 in (0..n).step_by(BENCH_CHUNK) {
            let c1 = (c0 + BENCH_CHUNK).min(n);
            let (cur, prev) = (&cur[c0..c1], &prev[c0..c1]);
            let prev2 = prev2.map(|p| &p[c0..c1]);
            let mu = match prev2 {
                Some(p2) if c.residual() == CodecId::Pred2 => estimate_mu_q8(cur, prev, p2),
                _ => 0,
            };
            words.resize(c1 - c0, 0);
            if residual_words(c, cur, Some(prev), prev2, mu, &mut words).is_ok() {
                visit(c, cur, prev, prev2, &words);
            }
        }
    }
}

/// Split and join alone, per path this CPU runs (scalar, SSSE3): the split-stream
/// work without the entropy coder and the residual pass, over the `codec` residual words of
/// every transition in the bench's chunks, alternating the paths `rounds` times; prints each
/// path's median MB/s of raw words (4 bytes a word) and its ratio to the scalar path's. Every
/// path's streams equal the scalar path's and join back to the words; a mismatch panics.
pub fn split_path_table(states: &[Vec<f32>], codec: CodecId, rounds: usize) -> String {
    use std::fmt::Write as _;

    use crate::codec::{SplitPath, join_with, split_with};
    let mut s = String::new();
    if states.first().is_none_or(Vec::is_empty) {
        return s;
    }
    let mut chunks: Vec<Vec<u32>> = Vec::new();
    for_each_residual_chunk(states, codec.residual(), |_, _, _, _, words| {
        chunks.push(words.to_vec());
    });
    let raw_mb = chunks.iter().map(|w| 4 * w.len()).sum::<usize>() as f64 / 1e6;
    let mut reference: Vec<[Vec<u8>; SPLIT_STREAMS]> = Vec::new();
    for words in &chunks {
        let mut streams: [Vec<u8>; SPLIT_STREAMS] = Default::default();
        split_with(SplitPath::Scalar, words, &mut streams);
        reference.push(streams);
    }
    let paths = SplitPath::all();
    // Per path: split seconds and join seconds of each round.
    let mut secs = vec![(Vec::new(), Vec::new()); paths.len()];
    let mut streams: [Vec<u8>; SPLIT_STREAMS] = Default::default();
    let mut back = Vec::new();
    for _ in 0..rounds.max(1) {
        for (path, (split_secs, join_secs)) in paths.iter().zip(&mut secs) {
            let t = Instant::now();
            for words in &chunks {
                split_with(*path, words, &mut streams);
                std::hint::black_box(&streams);
            }
            split_secs.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for (words, streams) in chunks.iter().zip(&reference) {
                back.resize(words.len(), 0);
                let slices: [&[u8]; SPLIT_STREAMS] = std::array::from_fn(|k| streams[k].as_slice());
                let joined = join_with(*path, slices, &mut back);
                assert!(
                    joined.is_ok(),
                    "{path:?} cannot join the scalar path's streams"
                );
                std::hint::black_box(&back);
            }
            join_secs.push(t.elapsed().as_secs_f64());
        }
    }
    // Outside the timing: every path's bytes, both ways.
    for path in &paths {
        for (words, want) in chunks.iter().zip(&reference) {
            split_with(*path, words, &mut streams);
            assert!(&streams == want, "{path:?} splits differently");
            let slices: [&[u8]; SPLIT_STREAMS] = std::array::from_fn(|k| want[k].as_slice());
            back.resize(words.len(), 0);
            let joined = join_with(*path, slices, &mut back);
            assert!(
                joined.is_ok() && &back == words,
                "{path:?} joins differently"
            );
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let _ = writeln!(
        s,
        "split and join alone, {} residual, {} chunks, medians of {} alternating rounds",
        codec.residual().name(),
        chunks.len(),
        rounds.max(1)
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>10} {:>10} {:>10} {:>10}",
        "path", "split MB/s", "vs scalar", "join MB/s", "vs scalar"
    );
    let scalar = (median(&secs[0].0), median(&secs[0].1));
    for (path, (split_secs, join_secs)) in paths.iter().zip(&secs) {
        let (split, join) = (median(split_secs), median(join_secs));
        let _ = writeln!(
            s,
            "  {:<10} {:>10.0} {:>9.2}× {:>10.0} {:>9.2}×",
            path.name(),
            raw_mb / split,
            scalar.0 / split,
            raw_mb / join,
            scalar.1 / join
        );
    }
    s
}
