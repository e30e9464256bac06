//! Side-by-side codec benchmark (one run, one table per trajectory).
//!
//! `SGDWALK_TRAJECTORY=path/to/recording.sgdw cargo bench -p sgdwalk-format --bench codec`
//! decodes up to `SGDWALK_BENCH_STEPS` (default 200) consecutive states from a real recording;
//! without it, synthetic SGD-like trajectories are used (and the output says so). Every method
//! runs on one thread (MB/s per core); the last table times the real writer and reader end to
//! end on one thread.

#![allow(
    clippy::expect_used,
    reason = "a benchmark binary aborts on setup errors"
)]

use std::time::Instant;

use sgdwalk_format::testkit::codec_bench::{
    bench_trajectory, format_bench_table, split_path_table, stream_entropy_table,
};
use sgdwalk_format::testkit::synth::sgd_trajectory;
use sgdwalk_format::*;

fn load_real(path: &str, max_steps: usize) -> Result<Vec<Vec<f32>>, FormatError> {
    let mut r = Reader::open(std::path::Path::new(path))?;
    // The longest run of consecutive steps, up to max_steps.
    let steps = r.steps().to_vec();
    let (mut best, mut cur) = ((0usize, 0usize), (0usize, 0usize));
    for i in 0..steps.len() {
        if i > 0 && steps[i] == steps[i - 1] + 1 {
            cur.1 = i;
        } else {
            cur = (i, i);
        }
        if cur.1 - cur.0 > best.1 - best.0 {
            best = cur;
        }
    }
    let mut out = Vec::new();
    for &s in steps
        .iter()
        .skip(best.0)
        .take((best.1 - best.0 + 1).min(max_steps))
    {
        out.push(r.state(s)?.as_ref().clone());
    }
    Ok(out)
}

fn writer_reader_round(states: &[Vec<f32>], delta: CodecId, split_streams: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.sgdw");
    let n = states[0].len() as u64;
    let layout = Header::contiguous_layout(&[("state", &[n])]).expect("layout");
    let codec = CodecSettings {
        delta_codec: delta,
        split_streams,
        ..CodecSettings::default()
    };
    let header = Header::new([0; 16], 0, layout, 0, "{}".into(), codec).expect("header");
    let mut w = Writer::create(
        &path,
        header,
        WriterOptions {
            fsync: FsyncPolicy::Never,
            threads: 1,
            overlap_writes: false,
        },
    )
    .expect("create");
    let t = Instant::now();
    for (i, s) in states.iter().enumerate() {
        w.write_step(&StepInput {
            step: i as u64,
            state: s,
            sample_ids: &[],
            augmentation: &[],
            scalars: StepScalars::absent(),
        })
        .expect("write");
    }
    let summary = w.finish().expect("finish");
    let enc = t.elapsed().as_secs_f64();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let dec = pool.install(|| {
        let mut r = Reader::open(&path).expect("open");
        let t = Instant::now();
        for i in 0..states.len() as u64 {
            r.state(i).expect("state");
        }
        t.elapsed().as_secs_f64()
    });
    let raw = summary.raw_bytes as f64;
    println!(
        "writer+reader, K=32, {:<23}  ratio {:.3} (whole file)  encode {:>6.0} MB/s  decode {:>6.0} MB/s (1 thread)",
        if split_streams { delta.split() } else { delta }.name(),
        raw / summary.file_bytes as f64,
        raw / 1e6 / enc,
        raw / 1e6 / dec
    );
}

/// pcodec (a peer compressor for numeric columns, level 8, its default) in the bench's chunks,
/// on one thread: on every state's floats, and with key/32 mixing on the zigzag deltas of
/// consecutive states' bits (each chunk round-tripped and checked).
fn pcodec_rows(states: &[Vec<f32>]) {
    const CHUNK: usize = 262_144;
    let config = pco::ChunkConfig::default();
    let n = states[0].len();
    let raw = (states.len() * n * 4) as f64;
    let (mut key, mut mixed) = (0usize, 0usize);
    let (mut enc_key, mut dec_key, mut enc_mix, mut dec_mix) = (0.0, 0.0, 0.0, 0.0);
    for (t, s) in states.iter().enumerate() {
        for c0 in (0..n).step_by(CHUNK) {
            let c1 = (c0 + CHUNK).min(n);
            let at = Instant::now();
            let bytes = pco::standalone::simple_compress(&s[c0..c1], &config).expect("pco");
            enc_key += at.elapsed().as_secs_f64();
            let at = Instant::now();
            let back: Vec<f32> = pco::standalone::simple_decompress(&bytes).expect("pco");
            dec_key += at.elapsed().as_secs_f64();
            assert!(
                back.iter()
                    .zip(&s[c0..c1])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            key += bytes.len();
            if t % 32 == 0 {
                mixed += bytes.len();
                continue;
            }
            let at = Instant::now();
            let deltas: Vec<u32> = s[c0..c1]
                .iter()
                .zip(&states[t - 1][c0..c1])
                .map(|(c, p)| codec::zigzag(c.to_bits().wrapping_sub(p.to_bits()) as i32))
                .collect();
            let bytes = pco::standalone::simple_compress(&deltas, &config).expect("pco");
            enc_mix += at.elapsed().as_secs_f64();
            // Decoding includes adding the deltas back to the previous state, as the
            // codecs' decode does.
            let at = Instant::now();
            let back: Vec<u32> = pco::standalone::simple_decompress(&bytes).expect("pco");
            let values: Vec<f32> = back
                .iter()
                .zip(&states[t - 1][c0..c1])
                .map(|(&z, p)| f32::from_bits(p.to_bits().wrapping_add(codec::unzigzag(z) as u32)))
                .collect();
            dec_mix += at.elapsed().as_secs_f64();
            assert!(
                values
                    .iter()
                    .zip(&s[c0..c1])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            mixed += bytes.len();
        }
    }
    let key_states = states.len().div_ceil(32) as f64 / states.len() as f64;
    for (name, stored, enc, dec) in [
        ("pcodec-8 floats (every state)", key, enc_key, dec_key),
        (
            "pcodec-8 key/32 + zigzag deltas",
            mixed,
            // The key states' share of the float pass, plus the delta pass.
            enc_key * key_states + enc_mix,
            dec_key * key_states + dec_mix,
        ),
    ] {
        println!(
            "{name:<34} {:>12.2} {:>12.2} {:>7.3} {:>10.0} {:>10.0}",
            raw / 1e6,
            stored as f64 / 1e6,
            raw / stored as f64,
            raw / 1e6 / enc,
            raw / 1e6 / dec
        );
    }
}

/// A state identical to its predecessors (frozen weights, a layer that no longer trains): every
/// delta codec's residual is zero, which the split codecs store and read back without their
/// residual, split and compression passes. One thread, medians of 9 passes over the state
/// (which stays in cache at this size: memory bandwidth bounds larger states).
fn unchanged_state_rows(states: &[Vec<f32>]) {
    const CHUNK: usize = 262_144;
    let s = &states[states.len() - 1];
    let raw_mb = s.len() as f64 * 4e-6;
    println!("unchanged state (= θ_{{t−1}} = θ_{{t−2}}), 1 thread, medians of 9 passes:");
    for c in [
        CodecId::XorPrevSplit,
        CodecId::ZigzagDeltaPrevSplit,
        CodecId::Pred2Split,
        CodecId::Pred2,
    ] {
        let (mut enc_s, mut dec_s, mut stored) = (Vec::new(), Vec::new(), 0);
        let mut out = vec![0f32; s.len()];
        for _ in 0..9 {
            let mut chunks = Vec::new();
            let t = Instant::now();
            for part in s.chunks(CHUNK) {
                let mut bytes = Vec::new();
                codec::encode_chunk(c, part, Some(part), Some(part), 1, &mut bytes)
                    .expect("encode");
                chunks.push(bytes);
            }
            enc_s.push(t.elapsed().as_secs_f64());
            stored = chunks.iter().map(Vec::len).sum();
            let t = Instant::now();
            for ((bytes, part), o) in chunks
                .iter()
                .zip(s.chunks(CHUNK))
                .zip(out.chunks_mut(CHUNK))
            {
                codec::decode_chunk(c, bytes, Some(part), Some(part), o).expect("decode");
            }
            dec_s.push(t.elapsed().as_secs_f64());
            assert!(out.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "  {:<24} {:>8} bytes stored   encode {:>7.0} MB/s   decode {:>7.0} MB/s",
            c.name(),
            stored,
            raw_mb / median(enc_s),
            raw_mb / median(dec_s)
        );
    }
}

fn run(name: &str, states: &[Vec<f32>]) {
    println!(
        "\n== {name}: {} states × {} f32 ({:.1} MB raw each)",
        states.len(),
        states[0].len(),
        states[0].len() as f64 * 4e-6
    );
    let rows = bench_trajectory(states, 1);
    print!("{}", format_bench_table(&rows));
    pcodec_rows(states);
    for codec in [CodecId::ZigzagDeltaPrev, CodecId::Pred2] {
        print!("{}", stream_entropy_table(states, codec, 1));
    }
    print!("{}", split_path_table(states, CodecId::Pred2, 5));
    unchanged_state_rows(states);
    for split_streams in [false, true] {
        for delta in [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2] {
            writer_reader_round(states, delta, split_streams);
        }
    }
}

fn main() {
    // `cargo test --benches` passes --bench-free args; keep smoke runs short.
    let smoke = std::env::args().any(|a| a == "--test");
    let max_steps = std::env::var("SGDWALK_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (params, steps) = if smoke {
        (20_000, 8)
    } else {
        (203_530 * 2, max_steps.min(96))
    };
    match std::env::var("SGDWALK_TRAJECTORY") {
        Ok(path) => match load_real(&path, if smoke { 8 } else { max_steps }) {
            Ok(states) if states.len() >= 2 => run(&format!("recording {path}"), &states),
            Ok(_) => eprintln!("{path}: fewer than 2 consecutive steps"),
            Err(e) => eprintln!("cannot read {path}: {e}"),
        },
        Err(_) => {
            println!(
                "SGDWALK_TRAJECTORY not set: using SYNTHETIC SGD-like trajectories (noisy quadratic, not a real network)"
            );
            run(
                "synthetic SGD + momentum 0.9, lr 0.01",
                &sgd_trajectory(params, steps, 0.9, 0.01, 1),
            );
            run(
                "synthetic plain SGD (momentum 0), lr 0.05",
                &sgd_trajectory(params, steps, 0.0, 0.05, 2),
            );
        }
    }
}
