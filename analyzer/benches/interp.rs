//! Analyzer speed, measured in one run on the same data and thread count:
//! 1. time per interpolation point (build θ_t + α·d_t, load it, evaluate loss and accuracy on
//!    the prepared probe set) against a bare tch forward pass over the same samples with the
//!    state already loaded (goal: ratio <= 1.10);
//! 2. geometry throughput: steps/s and GB/s of state decoded from the recording.
//!
//!   cargo bench -p sgdwalk-analyzer --bench interp [-- --model mlp --points 40]
//! Data: Fashion-MNIST in data/fashion-mnist (run scripts/setup).

use std::path::Path;
use std::time::Instant;

use clap::Parser as _;
use sgdwalk_analyzer::config::{AnalyzeConfig, EvalSet};
use sgdwalk_analyzer::metrics::{GeometryTracker, TotalScope};
use sgdwalk_analyzer::replay::{Session, interpolate};
use sgdwalk_recorder::{StopFlag, record};
use sgdwalk_workload::BnPolicy;

mod common;
use common::{RecCli, arg, cpu_settings, median};

fn main() -> anyhow::Result<()> {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    std::env::set_current_dir(&root)?;
    let model = arg("--model", "small-cnn");
    let points: usize = arg("--points", "30").parse()?;
    let probe: u32 = arg("--probe", "1000").parse()?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("bench.walk");
    let rec_args = RecCli::parse_from([
        "x",
        "--quiet",
        "--model",
        &model,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        "data/fashion-mnist",
        "--train-samples",
        "0..12800",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--eval-splits",
        "",
        "--out",
        rec.to_str().unwrap_or_default(),
    ])
    .args;
    record(&rec_args.validate()?, &StopFlag::default())?;
    let cfg = AnalyzeConfig {
        eval: vec![EvalSet::Probe(probe)],
        eval_batch_size: 500,
        ..AnalyzeConfig::default()
    };
    let settings = cpu_settings(&rec);
    let mut s = Session::open(&settings, &cfg)?;
    let batches = s.prepared(&EvalSet::Probe(probe), 0)?;
    let a = s.reader.state(10)?;
    let b = s.reader.state(11)?;
    println!(
        "analyzer bench: model {model}, {} threads, probe {probe} samples in batches of 500, {points} points per measurement",
        tch::get_num_threads()
    );
    for bn in [BnPolicy::EvalMode, BnPolicy::TrainMode] {
        let (mut ours, mut bare, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut buf = Vec::new();
        s.evaluate_state(&a, &batches, bn)?; // warm-up
        for _ in 0..5 {
            let t0 = Instant::now();
            for i in 0..points {
                let alpha = i as f64 / points as f64 + 0.01;
                interpolate(&a, &b, alpha, &mut buf);
                std::hint::black_box(s.evaluate_state(&buf, &batches, bn)?);
            }
            let t_ours = t0.elapsed().as_secs_f64() / points as f64;
            let t1 = Instant::now();
            tch::no_grad(|| {
                for _ in 0..points {
                    for (x, _) in batches.iter() {
                        let _logits =
                            std::hint::black_box(s.model.forward_t(x, bn == BnPolicy::TrainMode));
                    }
                }
            });
            let t_bare = t1.elapsed().as_secs_f64() / points as f64;
            ours.push(t_ours * 1e3);
            bare.push(t_bare * 1e3);
            ratios.push(t_ours / t_bare);
        }
        println!(
            "{:10} per interpolation point: analyzer {:.2} ms, bare forward {:.2} ms, ratio {:.3} (median of 5; all {:.3?})",
            bn.as_str(),
            median(ours),
            median(bare),
            median(ratios.clone()),
            ratios
        );
    }
    // Where the analyzer's extra time goes: building θ_t + α·d_t, and loading it.
    let (mut t_interp, mut t_load) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..points {
            interpolate(&a, &b, i as f64 / points as f64 + 0.01, &mut buf);
        }
        t_interp.push(t0.elapsed().as_secs_f64() * 1e3 / points as f64);
        let t1 = Instant::now();
        for _ in 0..points {
            s.model.load_flat(&buf)?;
        }
        t_load.push(t1.elapsed().as_secs_f64() * 1e3 / points as f64);
    }
    println!(
        "per point: interpolation {:.3} ms, loading the state {:.3} ms (medians of 5)",
        median(t_interp),
        median(t_load)
    );
    // Geometry: decode every step in order and update the tracker.
    let layers = s.desc.layout.layer_ranges();
    let len = s.desc.layout.len_elements();
    let steps = s.reader.steps().to_vec();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut reader = sgdwalk_format::Reader::open(&rec)?;
        let mut tracker = GeometryTracker::new(layers.clone(), len, TotalScope::AllElements)?;
        let t0 = Instant::now();
        for &t in &steps {
            let st = reader.state(t)?;
            std::hint::black_box(tracker.push(t, &st)?);
        }
        rates.push(t0.elapsed().as_secs_f64());
    }
    let secs = median(rates);
    let bytes = (steps.len() * len * 4) as f64;
    println!(
        "geometry: {} steps of {} f32 in {:.3} s: {:.0} steps/s, {:.2} GB/s of state decoded (median of 3)",
        steps.len(),
        len,
        secs,
        steps.len() as f64 / secs,
        bytes / secs / 1e9
    );
    Ok(())
}
