//! TorchScript vs built-in, side by side in one process: the same network (784-32-16-10 MLP with
//! BatchNorm: `tests/fixtures/torchscript/mlp_bn.pt` and the built-in `Mlp` with the same names
//! and shapes), the same data, seed and thread count, alternating:
//! 1. recording wall time (every step recorded), built-in vs TorchScript (goal: ratio <= 1.10);
//! 2. analyzer time per interpolation point (θ_t + α·d_t built, loaded, evaluated on a probe)
//!    under both BatchNorm policies.
//!
//!   cargo bench -p sgdwalk-analyzer --bench jit [-- --steps 300 --points 30 --repeats 5]
//! Data: Fashion-MNIST in data/fashion-mnist (run scripts/setup).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser as _;
use sgdwalk_analyzer::config::{AnalyzeConfig, EvalSet};
use sgdwalk_analyzer::replay::Session;
use sgdwalk_recorder::{StopFlag, record};
use sgdwalk_workload::{BnPolicy, ModelSpec};

mod common;
use common::{RecCli, arg, cpu_settings, median};

fn record_args(
    out: &Path,
    model: &str,
    steps: &str,
) -> anyhow::Result<sgdwalk_recorder::RecordConfig> {
    let mut cfg = RecCli::parse_from([
        "x",
        "--quiet",
        "--overwrite",
        "--model",
        model,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        "data/fashion-mnist",
        "--batch-size",
        "100",
        "--max-steps",
        steps,
        "--epochs",
        "100",
        "--eval-splits",
        "",
        "--fsync",
        "keyframe",
        "--out",
        out.to_str().unwrap_or_default(),
    ])
    .args
    .validate()?;
    if model == "mlp" {
        cfg.model = ModelSpec::Mlp {
            input_features: 784,
            hidden: vec![32, 16],
            classes: 10,
            batch_norm: true,
        };
    }
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    std::env::set_current_dir(&root)?;
    let steps = arg("--steps", "300");
    let points: usize = arg("--points", "30").parse()?;
    let repeats: usize = arg("--repeats", "5").parse()?;
    let module = root.join("tests/fixtures/torchscript/mlp_bn.pt");
    let script = format!("torchscript:{}", module.display());
    let dir = tempfile::tempdir()?;
    let (builtin_rec, script_rec) = (
        dir.path().join("builtin.walk"),
        dir.path().join("script.walk"),
    );
    let builtin_cfg = record_args(&builtin_rec, "mlp", &steps)?;
    let script_cfg = record_args(&script_rec, &script, &steps)?;
    println!(
        "TorchScript vs built-in: 784-32-16-10 MLP with BatchNorm, Fashion-MNIST, batch 100, {steps} steps recorded every step, {} threads, {repeats} pairs; embedded module {} bytes",
        tch::get_num_threads(),
        std::fs::metadata(&module)?.len()
    );
    let (mut tb, mut ts, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t0 = Instant::now();
        record(&builtin_cfg, &StopFlag::default())?;
        let b = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        record(&script_cfg, &StopFlag::default())?;
        let s = t1.elapsed().as_secs_f64();
        tb.push(b);
        ts.push(s);
        ratios.push(s / b);
    }
    println!(
        "recording: built-in {:.2} s, TorchScript {:.2} s, ratio {:.3} (median; all {:.3?})",
        median(tb),
        median(ts),
        median(ratios.clone()),
        ratios
    );
    let cfg = AnalyzeConfig {
        eval: vec![EvalSet::Probe(1000)],
        eval_batch_size: 500,
        ..AnalyzeConfig::default()
    };
    let session =
        |rec: &PathBuf| -> anyhow::Result<Session> { Ok(Session::open(&cpu_settings(rec), &cfg)?) };
    let mut sessions = [session(&builtin_rec)?, session(&script_rec)?];
    for bn in [BnPolicy::EvalMode, BnPolicy::TrainMode] {
        let (mut per_point, mut ratios) = ([Vec::new(), Vec::new()], Vec::new());
        for _ in 0..repeats {
            let mut t = [0.0; 2];
            for (k, s) in sessions.iter_mut().enumerate() {
                let batches = s.prepared(&EvalSet::Probe(1000), 0)?;
                let (a, b) = (s.reader.state(10)?, s.reader.state(11)?);
                let mut buf = Vec::new();
                s.evaluate_state(&a, &batches, bn)?; // warm-up
                let t0 = Instant::now();
                for i in 0..points {
                    s.interpolate(&a, &b, i as f64 / points as f64 + 0.01, &mut buf);
                    std::hint::black_box(s.evaluate_state(&buf, &batches, bn)?);
                }
                t[k] = t0.elapsed().as_secs_f64() * 1e3 / points as f64;
                per_point[k].push(t[k]);
            }
            ratios.push(t[1] / t[0]);
        }
        let [b, s] = per_point;
        println!(
            "{:10} per interpolation point (probe 1000): built-in {:.2} ms, TorchScript {:.2} ms, ratio {:.3} (median; all {:.3?})",
            bn.as_str(),
            median(b),
            median(s),
            median(ratios.clone()),
            ratios
        );
    }
    Ok(())
}
