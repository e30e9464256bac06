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

use sgdwalk_format::testkit::codec_bench::{bench_trajectory, format_bench_table};
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

fn writer_reader_round(states: &[Vec<f32>], delta: CodecId) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.sgdw");
    let n = states[0].len() as u64;
    let layout = Header::contiguous_layout(&[("state", &[n])]).expect("layout");
    let codec = CodecSettings {
        delta_codec: delta,
        ..CodecSettings::default()
    };
    let header = Header::new([0; 16], 0, layout, 0, "{}".into(), codec).expect("header");
    let mut w = Writer::create(
        &path,
        header,
        WriterOptions {
            fsync: FsyncPolicy::Never,
            threads: 1,
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
        "writer+reader, K=32, {:<17}  ratio {:.3} (whole file)  encode {:>6.0} MB/s  decode {:>6.0} MB/s (1 thread)",
        delta.name(),
        raw / summary.file_bytes as f64,
        raw / 1e6 / enc,
        raw / 1e6 / dec
    );
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
    for delta in [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2] {
        writer_reader_round(states, delta);
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
