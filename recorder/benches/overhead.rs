//! Recording overhead: the same model trained for the same steps with recording off (policy
//! `none`: header only) and on (every step), alternating, in one process. Prints the median
//! ratio of wall times, steps/s and bytes/step.
//!
//! CPU (default): small CNN on Fashion-MNIST (data/fashion-mnist).
//!   cargo bench -p sgdwalk-recorder --bench overhead
//! GPU: cargo bench -p sgdwalk-recorder --bench overhead -- --device cuda --model vgg11 \
//!        --dataset synthetic --synthetic-size 32 --synthetic-channels 3 --steps 200 --batch-size 128
//! Extra arguments are passed to sgdwalk-record (later ones win); `--repeats N` sets the number
//! of off/on pairs (default 5).

use std::time::Instant;

use clap::Parser;
use sgdwalk_recorder::{RecordArgs, StopFlag, record};

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: RecordArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut user: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut repeats = 5usize;
    if let Some(i) = user.iter().position(|a| a == "--repeats") {
        repeats = user.get(i + 1).and_then(|r| r.parse().ok()).unwrap_or(5);
        user.drain(i..(i + 2).min(user.len()));
    }
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("bench.walk");
    let mut argv: Vec<String> = [
        "overhead",
        "--quiet",
        "--overwrite",
        "--model",
        "small-cnn",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        "data/fashion-mnist",
        "--batch-size",
        "100",
        "--max-steps",
        "300",
        "--epochs",
        "100",
        "--eval-splits",
        "",
        "--fsync",
        "keyframe",
    ]
    .map(String::from)
    .to_vec();
    argv.extend(["--out".into(), out.display().to_string()]);
    // Benches run from the package folder; the data lives at the workspace root. Run outside
    // cargo (carried to a GPU box, as scripts/gpu-check runs it), paths are taken as given.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let root = std::path::Path::new(&dir).join("..");
        if root.join("data").is_dir() {
            std::env::set_current_dir(&root)?;
        }
    }
    argv.extend(user);
    // libtorch's own default, before any run sets it.
    let libtorch_default_threads = u32::try_from(tch::get_num_threads()).unwrap_or(0);
    let mut off_args = Cli::parse_from(&argv).args;
    off_args.record = "none".into();
    let mut on_args = off_args.clone();
    on_args.record = "every".into();
    // The baseline is training as it runs without the recorder: libtorch's default threads,
    // unless --threads was given (then both runs use it).
    off_args.threads = off_args.threads.or(Some(libtorch_default_threads));
    let off_cfg = off_args.validate()?;
    let on_cfg = on_args.validate()?;
    println!(
        "recorder overhead: model {:?} on {:?}, device {:?}, libtorch threads {} off / {} on, {} steps per run, {repeats} off/on pairs",
        off_cfg.model.short_name(),
        off_cfg.dataset.name,
        off_cfg.device,
        off_cfg.threads,
        if on_cfg.threads == 0 {
            libtorch_default_threads
        } else {
            on_cfg.threads
        },
        off_cfg.max_steps.unwrap_or(0)
    );
    // One warm-up run of each (allocator, caches, CUDA context).
    record(&off_cfg, &StopFlag::default())?;
    record(&on_cfg, &StopFlag::default())?;
    let (mut off_t, mut on_t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loop_ratios, mut extra_secs) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let a = record(&off_cfg, &StopFlag::default())?;
        let t_off = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let b = record(&on_cfg, &StopFlag::default())?;
        let t_on = t1.elapsed().as_secs_f64();
        off_t.push(a.updates as f64 / t_off);
        on_t.push(b.updates as f64 / t_on);
        ratios.push(t_on / t_off);
        loop_ratios.push(b.training_loop_secs / a.training_loop_secs.max(1e-9));
        // What recording adds outside the loop: setting up the ring and writer, draining them.
        extra_secs.push((t_on - b.training_loop_secs) - (t_off - a.training_loop_secs));
        last = Some(b);
    }
    let b = last.ok_or_else(|| anyhow::anyhow!("no repeats"))?;
    println!(
        "steps/s recording off  (median, whole run): {:.1}",
        median(off_t)
    );
    println!(
        "steps/s recording on   (median, whole run): {:.1}",
        median(on_t)
    );
    println!(
        "overhead ratio on/off  (median of {repeats} pairs, whole run): {:.3}   all: {ratios:.3?}",
        median(ratios.clone())
    );
    println!(
        "overhead ratio on/off  (median, training loop only): {:.3}   all: {loop_ratios:.3?}",
        median(loop_ratios.clone())
    );
    println!(
        "fixed cost of recording outside the loop (setup, closing snapshot, drain; median): {:.3} s",
        median(extra_secs)
    );
    print_breakdown(&b);
    Ok(())
}

/// Where the last recorded run's time went, per recorded step and in total.
fn print_breakdown(b: &sgdwalk_recorder::RecordSummary) {
    let steps = b.steps_recorded.max(1) as f64;
    let per_step = |secs: f64| 1e3 * secs / steps;
    println!(
        "last recorded run ({} steps, snapshots via {}, {} ring buffers = {:.1} MB on the device, {} encode threads), per recorded step:",
        b.steps_recorded,
        b.snapshot_path,
        b.snapshot_ring_buffers,
        b.snapshot_ring_device_bytes as f64 * 1e-6,
        b.encode_threads
    );
    if let Some(line) = b.device_residual_line() {
        println!(
            "  {line} (on CUDA the pass runs on the training stream and shows in the loop time; on the CPU it is in snapshot)"
        );
    }
    println!(
        "  training thread: snapshot {:.2} ms, blocked {:.2} ms | copy thread: copy {:.2} ms | writer: encode+write {:.2} ms (encode {:.2}, serial rest {:.2}) | loop {:.2} ms, wall {:.2} ms per step",
        per_step(b.training_snapshot_secs),
        per_step(b.training_blocked_secs),
        per_step(b.writer_copy_secs),
        per_step(b.writer_encode_write_secs),
        per_step(b.writer_encode_secs),
        per_step(b.writer_encode_write_secs - b.writer_encode_secs),
        per_step(b.training_loop_secs),
        per_step(b.wall_secs)
    );
    // Without a copy stage (the host path) there is no copy rate to print.
    let copy_rate = if b.writer_copy_secs > 0.0 {
        format!(
            "copy {:.2} GB/s, ",
            b.raw_state_bytes as f64 / b.writer_copy_secs * 1e-9
        )
    } else {
        String::new()
    };
    println!(
        "  totals: snapshot {:.3} s, copy {:.3} s, encode+write {:.3} s, training blocked {:.3} s, wall {:.3} s; {copy_rate}encode+write {:.2} GB/s of raw state",
        b.training_snapshot_secs,
        b.writer_copy_secs,
        b.writer_encode_write_secs,
        b.training_blocked_secs,
        b.wall_secs,
        b.raw_state_bytes as f64 / b.writer_encode_write_secs.max(1e-9) * 1e-9
    );
    println!(
        "bytes/step: raw state {:.0}, stored state {:.0} (ratio {:.2}x), file {:.0}",
        b.raw_state_bytes as f64 / steps,
        b.stored_state_bytes as f64 / steps,
        b.compression_ratio,
        b.file_bytes as f64 / steps
    );
}
