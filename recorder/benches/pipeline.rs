//! The recorder's host pipeline at VGG-11 size, without training: a synthetic SGD-with-momentum
//! trajectory of 9,756,426 f32 per step (format-spec's `sgd_trajectory`: realistic relative
//! updates) goes through the snapshot ring with CPU tensors standing in for device buffers, the
//! copy stage, the encoder and the writer into a temporary file, as fast as the pipeline takes
//! it. Prints sustained GB/s of raw state for 1, 2 and all encode threads (medians of repeats),
//! where the time went, the host path for comparison, the ring with device residuals (CPU
//! tensors computing what the device would; the writer's encode+write is what the host keeps),
//! and per step what the host's encode costs with and without the residual and split passes a
//! device residual takes off it.
//!
//!   cargo bench -p sgdwalk-recorder --bench pipeline
//!   cargo bench -p sgdwalk-recorder --bench pipeline -- --test        (smoke: tiny, seconds)
//! Options: --params N, --steps N, --repeats N, --ring N, --fsync never|keyframe|record,
//! --split-streams true|false (default true, as `sgdwalk-record`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a benchmark binary aborts on setup errors"
)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sgdwalk_format::codec::{
    SPLIT_STREAMS, encode_chunk, encode_split_streams, estimate_mu_q8, residual_streams,
};
use sgdwalk_format::testkit::synth::sgd_trajectory;
use sgdwalk_format::{
    CodecId, CodecSettings, FsyncPolicy, Header, StepScalars, Writer, WriterOptions,
};
use sgdwalk_recorder::device_residual::{DeviceResidual, TailLayout};
use sgdwalk_recorder::sink::{Record, ResidualOptions, RingOptions, Sink, Snapshot};
use tch::Tensor;

struct Opts {
    params: usize,
    steps: usize,
    repeats: usize,
    ring: usize,
    fsync: FsyncPolicy,
    split_streams: bool,
}

fn parse() -> Opts {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let test = args.iter().any(|a| a == "--test");
    let mut o = if test {
        Opts {
            params: 50_000,
            steps: 6,
            repeats: 1,
            ring: 2,
            fsync: FsyncPolicy::EveryKeyframe,
            split_streams: true,
        }
    } else {
        Opts {
            params: 9_756_426,
            steps: 32,
            repeats: 3,
            ring: 4,
            fsync: FsyncPolicy::EveryKeyframe,
            split_streams: true,
        }
    };
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: usize| {
        value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
    };
    o.params = num("--params", o.params);
    o.steps = num("--steps", o.steps).max(2);
    o.repeats = num("--repeats", o.repeats).max(1);
    o.ring = num("--ring", o.ring).max(1);
    if let Some(f) = value("--fsync") {
        o.fsync = match f.as_str() {
            "never" => FsyncPolicy::Never,
            "keyframe" => FsyncPolicy::EveryKeyframe,
            "record" => FsyncPolicy::EveryRecord,
            other => panic!("--fsync never|keyframe|record, not {other:?}"),
        };
    }
    if let Some(v) = value("--split-streams") {
        o.split_streams = v
            .parse()
            .unwrap_or_else(|_| panic!("--split-streams true|false, not {v:?}"));
    }
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn writer(path: &Path, n: usize, threads: usize, opts: &Opts) -> Writer {
    let layout = Header::contiguous_layout(&[("state", &[n as u64])]).expect("layout");
    let codec = CodecSettings {
        split_streams: opts.split_streams,
        ..CodecSettings::default()
    };
    let header = Header::new([7; 16], 0, layout, 0, "{}".into(), codec).expect("header");
    let _ = std::fs::remove_file(path);
    Writer::create(
        path,
        header,
        WriterOptions {
            fsync: opts.fsync,
            threads,
            overlap_writes: std::env::var_os("SGDWALK_NO_OVERLAP").is_none(),
        },
    )
    .expect("create")
}

/// One pass of the trajectory through the pipeline; times in seconds.
struct Pass {
    wall: f64,
    snapshot: f64,
    copy: f64,
    encode_write: f64,
    blocked: f64,
    stored_bytes: u64,
}

/// How snapshots go: host vectors, the ring, or the ring with device residuals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Host,
    Ring,
    RingResidual,
}

fn pass(states: &[Tensor], path: &Path, threads: usize, opts: &Opts, how: Route) -> Pass {
    let n = states[0].numel();
    let w = writer(path, n, threads, opts);
    let ring = how != Route::Host;
    let ring_opts = ring.then_some(RingOptions {
        slots: opts.ring,
        state_len: n,
        device: tch::Device::Cpu,
        residual: (how == Route::RingResidual)
            .then(|| ResidualOptions::for_codec(&w.header().codec)),
    });
    let mut sink = Sink::start_with_ring(w, 8, path.to_path_buf(), false, ring_opts).expect("sink");
    let started = Instant::now();
    for (t, s) in states.iter().enumerate() {
        let state = if ring {
            sink.snapshot_into_ring(t as u64, |buf| {
                buf.shallow_clone().f_copy_(s)?;
                Ok(())
            })
            .expect("snapshot")
        } else {
            let t0 = Instant::now();
            let v = Vec::<f32>::try_from(s).expect("to host");
            sink.note_snapshot_time(t0);
            Snapshot::Host(v)
        };
        sink.send(Record::Step {
            step: t as u64,
            state,
            sample_ids: vec![t as u32; 128],
            augmentation: Vec::new(),
            scalars: StepScalars::all(0.1, 1.0, 1.0, 1.0, t as f64),
        })
        .expect("send");
    }
    let c = std::sync::Arc::clone(&sink.counters);
    sink.finish().expect("finish");
    let secs = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 * 1e-9;
    Pass {
        wall: started.elapsed().as_secs_f64(),
        snapshot: secs(&c.snapshot_nanos),
        copy: secs(&c.copy_nanos),
        encode_write: secs(&c.write_nanos),
        blocked: secs(&c.blocked_nanos),
        stored_bytes: c.stored_bytes.load(Ordering::Relaxed),
    }
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("(uptime failed: {e})"))
}

fn main() {
    let opts = parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let raw_step = opts.params as f64 * 4.0;
    println!(
        "pipeline bench: {} f32 per step ({:.1} MB), {} steps, {} repeats, ring {} buffers, fsync {:?}, split streams {}, {cores} cores",
        opts.params,
        raw_step * 1e-6,
        opts.steps,
        opts.repeats,
        opts.ring,
        opts.fsync,
        opts.split_streams
    );
    println!("load before: {}", uptime());
    let t = Instant::now();
    let states: Vec<Tensor> = sgd_trajectory(opts.params, opts.steps, 0.9, 0.05, 0x5eed)
        .into_iter()
        .map(|s| Tensor::from_slice(&s))
        .collect();
    println!(
        "trajectory generated in {:.1} s (not timed below)",
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.walk");
    let raw_total = raw_step * opts.steps as f64;

    println!(
        "\n{:<7} {:>8} {:>9} {:>9} {:>10} {:>9} {:>13} {:>10} {:>8}",
        "path",
        "threads",
        "GB/s raw",
        "wall s",
        "snapshot s",
        "copy s",
        "encode+write s",
        "blocked s",
        "ratio"
    );
    let mut last_stored = 0u64;
    let mut rows = vec![
        ("ring", 1usize),
        ("ring", 2),
        ("ring", 0),
        ("host", 0),
        ("ring+dr", 1),
        ("ring+dr", 0),
    ];
    if cores <= 2 {
        // "all" is 2 here: keep the row (it says so) but do not run 2 twice.
        rows.retain(|r| r.1 != 2);
    }
    if !opts.split_streams {
        // Device residuals are split streams.
        rows.retain(|r| r.0 != "ring+dr");
    }
    for (which, threads) in rows {
        let how = match which {
            "ring" => Route::Ring,
            "ring+dr" => Route::RingResidual,
            _ => Route::Host,
        };
        let mut all = Vec::new();
        for _ in 0..opts.repeats {
            all.push(pass(&states, &path, threads, &opts, how));
        }
        let m = |f: fn(&Pass) -> f64| median(all.iter().map(f).collect());
        let wall = m(|p| p.wall);
        last_stored = all.last().map_or(0, |p| p.stored_bytes);
        let label = if threads == 0 {
            format!("all={cores}")
        } else {
            threads.to_string()
        };
        println!(
            "{:<7} {:>8} {:>9.3} {:>9.2} {:>10.2} {:>9.2} {:>13.2} {:>10.2} {:>8.2}",
            which,
            label,
            raw_total / wall * 1e-9,
            wall,
            m(|p| p.snapshot),
            m(|p| p.copy),
            m(|p| p.encode_write),
            m(|p| p.blocked),
            raw_total / last_stored.max(1) as f64
        );
    }
    println!(
        "(medians of {} repeats; snapshot = producer filling ring buffers or host vectors, with device residuals (ring+dr) also computing them in CPU tensor ops, which a GPU does on the training stream; copy = copy stage (CPU stand-in: a memcpy); blocked = producer waiting for a ring buffer or queue slot)",
        opts.repeats
    );

    // What encode+write splits into: the same stored bytes written alone.
    let stored_step = last_stored as usize / opts.steps;
    let junk = vec![0x5au8; stored_step.max(1)];
    let wpath = dir.path().join("write-only.bin");
    let t = Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&wpath).expect("create");
        for i in 0..opts.steps {
            f.write_all(&junk).expect("write");
            if opts.fsync == FsyncPolicy::EveryRecord
                || (opts.fsync == FsyncPolicy::EveryKeyframe && i % 32 == 0)
            {
                f.sync_data().expect("sync");
            }
        }
    }
    let write_secs = t.elapsed().as_secs_f64();
    println!(
        "\nwrite alone: {:.1} MB stored per step written to a file in {:.3} s per {} steps ({:.2} GB/s of stored bytes)",
        stored_step as f64 * 1e-6,
        write_secs,
        opts.steps,
        last_stored as f64 / write_secs * 1e-9
    );

    host_encode_costs(&states, raw_step);
    println!("load after: {}", uptime());
}

/// Per step on one thread: the host's pred2_split encode, the same from streams a device
/// computed (what the writer keeps with device residuals), and the device pass in CPU ops.
fn host_encode_costs(states: &[Tensor], raw_step: f64) {
    let steps = states.len();
    let host = |t: usize| Vec::<f32>::try_from(&states[t]).expect("host");
    let (cur, prev, prev2) = (host(steps - 1), host(steps - 2), host(steps - 3));
    let cl = CodecSettings::default().chunk_len_elements as usize;
    let ranges: Vec<_> = (0..cur.len())
        .step_by(cl)
        .map(|a| a..(a + cl).min(cur.len()))
        .collect();
    let mut out = Vec::new();
    let mut full_t = Vec::new();
    let mut entropy_t = Vec::new();
    let mut streams: Vec<(u16, [Vec<u8>; SPLIT_STREAMS])> = Vec::new();
    for r in &ranges {
        let mu = estimate_mu_q8(&cur[r.clone()], &prev[r.clone()], &prev2[r.clone()]);
        let mut s: [Vec<u8>; SPLIT_STREAMS] = Default::default();
        residual_streams(
            CodecId::Pred2Split,
            &cur[r.clone()],
            Some(&prev[r.clone()]),
            Some(&prev2[r.clone()]),
            mu,
            &mut s,
        )
        .expect("streams");
        streams.push((mu, s));
    }
    for _ in 0..5 {
        let t = Instant::now();
        for r in &ranges {
            out.clear();
            encode_chunk(
                CodecId::Pred2Split,
                &cur[r.clone()],
                Some(&prev[r.clone()]),
                Some(&prev2[r.clone()]),
                1,
                &mut out,
            )
            .expect("encode");
        }
        full_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for (r, (mu, s)) in ranges.iter().zip(&streams) {
            out.clear();
            let s = std::array::from_fn(|k| s[k].as_slice());
            encode_split_streams(CodecId::Pred2Split, *mu, s, r.len(), &mut out).expect("encode");
        }
        entropy_t.push(t.elapsed().as_secs_f64());
    }
    let (full_s, entropy_s) = (median(full_t), median(entropy_t));
    println!(
        "\nhost encode per step, pred2_split, 1 thread: {:.1} ms ({:.2} GB/s of raw state); from device streams {:.1} ms ({:.2} GB/s), {:.0}% of it",
        full_s * 1e3,
        raw_step / full_s * 1e-9,
        entropy_s * 1e3,
        raw_step / entropy_s * 1e-9,
        100.0 * entropy_s / full_s
    );
    let layout = TailLayout::new(cur.len(), cl).expect("layout");
    let mut device =
        DeviceResidual::new(layout, CodecId::Pred2, 32, tch::Device::Cpu).expect("bases");
    let tail = Tensor::zeros(
        [layout.len_f32() as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    let mut pass_t = Vec::new();
    for (t, s) in states.iter().enumerate().take(steps.min(8)) {
        let started = Instant::now();
        let tag = device.compute(t as u64, s, &tail).expect("device pass");
        if tag.is_some() {
            pass_t.push(started.elapsed().as_secs_f64());
        }
    }
    if !pass_t.is_empty() {
        let pass_s = median(pass_t);
        println!(
            "device pass in libtorch CPU ops ({} threads): {:.1} ms per step ({:.2} GB/s of raw state; on a GPU, scripts/gpu-check measures it)",
            tch::get_num_threads(),
            pass_s * 1e3,
            raw_step / pass_s * 1e-9,
        );
    }
}
