//! The analyzer on small real recordings: interpolation ends equal direct evaluations, the
//! `batch` set reproduces the recorded minibatch loss, geometry equals a direct computation,
//! curvature equals the eigenvalues of an explicit Hessian, shards equal one run, reruns skip
//! finished work, NaN is counted, and bad inputs get named errors.

use std::path::{Path, PathBuf};

use clap::Parser;
use sgdwalk_analyzer::analyze::analyze;
use sgdwalk_analyzer::curvature::symmetric_eigen;
use sgdwalk_analyzer::replay::Session;
use sgdwalk_analyzer::tables::{
    BarrierRow, CurvatureRow, EpochRow, EvalSampleRow, FloorRow, InterpRow, StepRow, TableRows,
    read_rows,
};
use sgdwalk_analyzer::{AnalyzeArgs, AnalyzeError};
use sgdwalk_format::Reader;
use sgdwalk_recorder::{StopFlag, record};
use sgdwalk_workload::{BnPolicy, Dataset, ModelSpec, Split, evaluate};

use crate::recorder::{fashion_args, run, synthetic_args};

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: AnalyzeArgs,
}

fn analyze_args(recording: &Path, out: &Path, extra: &[&str]) -> AnalyzeArgs {
    let mut argv: Vec<String> = vec!["analyze".into(), recording.display().to_string()];
    argv.extend([
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--threads".into(),
        "1".into(),
    ]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(argv).args
}

pub fn run_analysis(
    recording: &Path,
    out: &Path,
    extra: &[&str],
) -> sgdwalk_analyzer::analyze::AnalyzeSummary {
    let (cfg, settings) = analyze_args(recording, out, extra).validate().unwrap();
    analyze(&cfg, &settings).unwrap()
}

/// The error an analysis with these flags stops with (its flags themselves are valid).
pub fn analysis_error(recording: &Path, out: &Path, extra: &[&str]) -> AnalyzeError {
    let (cfg, settings) = analyze_args(recording, out, extra).validate().unwrap();
    analyze(&cfg, &settings).unwrap_err()
}

pub use crate::table_rows::{rows, sorted_debug};

/// A 2-epoch Fashion-MNIST recording (20 steps), shared by several tests.
fn fashion_recording(dir: &Path) -> PathBuf {
    let out = dir.join("run.walk");
    run(&fashion_args(&out, &["--epochs", "2"]));
    out
}

#[test]
fn interpolation_ends_and_batch_loss_match_direct_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let rec = fashion_recording(dir.path());
    let out = dir.path().join("a");
    let data_dir = crate::util::fashion_mnist_dir().display().to_string();
    let s = run_analysis(
        &rec,
        &out,
        &[
            "--data-dir",
            &data_dir,
            "--phases",
            "interp,floors",
            "--eval",
            "probe:300,batch",
            "--bn",
            "train-mode,eval-mode",
            "--steps",
            "0..6",
            "--eval-batch-size",
            "100",
        ],
    );
    assert_eq!(s.nonfinite_losses, 0);
    let interp: Vec<InterpRow> = rows(&out);
    assert_eq!(interp.len(), 6 * 2 * 2 * 11);
    let mut reader = Reader::open(&rec).unwrap();
    let data = Dataset::load(
        &sgdwalk_analyzer::replay::run_description(&reader, &rec)
            .unwrap()
            .dataset,
        Path::new(&data_dir),
    )
    .unwrap();
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &rec).unwrap();
    let model = sgdwalk_workload::Model::new(&desc.model, tch::Device::Cpu, 0).unwrap();
    let probe = sgdwalk_workload::sampling::probe_subset(0, &data.split_ids(Split::Train), 300);
    for t in [0u64, 3, 5] {
        for (alpha, state_step) in [(0.0, t), (1.0, t + 1)] {
            model.load_flat(&reader.state(state_step).unwrap()).unwrap();
            for bn in [BnPolicy::TrainMode, BnPolicy::EvalMode] {
                let direct = evaluate(&model, &data, Split::Train, &probe, None, 100, bn).unwrap();
                let row = interp
                    .iter()
                    .find(|r| {
                        r.step == t
                            && r.alpha == alpha
                            && r.eval_set == "probe:300"
                            && r.bn_policy == bn.as_str()
                    })
                    .unwrap();
                assert_eq!(row.loss, direct.mean_loss(), "step {t} α={alpha} {bn:?}");
                assert_eq!(row.accuracy, direct.accuracy());
                assert_eq!(row.samples, 300);
                assert!(row.loss_stderr.unwrap() > 0.0);
            }
        }
        // `batch` at α = 0 in train mode is the recorded minibatch loss (same samples, same
        // batch statistics), up to the f32 mean libtorch computed during training.
        let recorded = reader.step_info(t).unwrap().scalars.minibatch_loss.unwrap();
        let row = interp
            .iter()
            .find(|r| {
                r.step == t
                    && r.alpha == 0.0
                    && r.eval_set == "batch"
                    && r.bn_policy == "train-mode"
            })
            .unwrap();
        assert_eq!(row.samples, 64);
        assert!(
            (row.loss - recorded).abs() < 1e-5 * recorded,
            "{} vs recorded {recorded}",
            row.loss
        );
    }
    // The probe's ids, in evaluation order with their train-mode batches, are in the folder;
    // `batch` ids are the recording's own and are not repeated.
    let samples: Vec<EvalSampleRow> = rows(&out);
    assert_eq!(samples.len(), 300);
    for (i, (row, &id)) in samples.iter().zip(&probe).enumerate() {
        assert_eq!(
            (row.eval_set.as_str(), row.split.as_str()),
            ("probe:300", "train")
        );
        assert_eq!((row.position, row.sample_id), (i as u32, id));
        assert_eq!(row.bn_batch, i as u32 / 100);
    }
    // Each floor lies at the grid argmin's bracket and is no higher than the grid minimum.
    let floors: Vec<FloorRow> = rows(&out);
    assert_eq!(floors.len(), 6 * 2 * 2);
    for f in &floors {
        let grid_min = interp
            .iter()
            .filter(|r| r.step == f.step && r.eval_set == f.eval_set && r.bn_policy == f.bn_policy)
            .map(|r| r.loss)
            .fold(f64::INFINITY, f64::min);
        assert!(f.loss_at_floor <= grid_min + 1e-12, "{f:?}");
        assert!(
            (f.alpha_star - f.grid_argmin_alpha).abs() <= 0.1 + 1e-9,
            "{f:?}"
        );
        assert_eq!(f.height_start, f.loss_start - f.loss_at_floor);
        assert!(
            ["interior_min", "monotone_down", "monotone_up", "multi_min"]
                .contains(&f.shape.as_str())
        );
    }
}

#[test]
fn geometry_matches_a_direct_computation_and_epochs_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let rec = fashion_recording(dir.path());
    let out = dir.path().join("g");
    let data_dir = crate::util::fashion_mnist_dir().display().to_string();
    run_analysis(
        &rec,
        &out,
        &["--data-dir", &data_dir, "--phases", "geometry,epochs"],
    );
    let steps: Vec<StepRow> = rows(&out);
    let mut r = Reader::open(&rec).unwrap();
    let s = |r: &mut Reader, t: u64| {
        r.state(t)
            .unwrap()
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<f64>>()
    };
    let (t0, t6, t7, t8) = (s(&mut r, 0), s(&mut r, 6), s(&mut r, 7), s(&mut r, 8));
    let d6: Vec<f64> = t7.iter().zip(&t6).map(|(a, b)| a - b).collect();
    let d7: Vec<f64> = t8.iter().zip(&t7).map(|(a, b)| a - b).collect();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos = d6.iter().zip(&d7).map(|(a, b)| a * b).sum::<f64>() / (n(&d6) * n(&d7));
    let dist: Vec<f64> = t7.iter().zip(&t0).map(|(a, b)| a - b).collect();
    let row = steps
        .iter()
        .find(|x| x.step == 7 && x.layer == "all")
        .unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(row.update_norm.unwrap(), n(&d7)));
    assert!(close(row.cos_prev_update.unwrap(), cos));
    assert!(close(row.dist_from_init.unwrap(), n(&dist)));
    assert_eq!(row.epoch, 1);
    assert_eq!(
        row.minibatch_loss,
        r.step_info(7).unwrap().scalars.minibatch_loss
    );
    // The `params` row: the same over the trainable elements only (BatchNorm buffers out).
    let layout = sgdwalk_analyzer::replay::run_description(&r, &rec)
        .unwrap()
        .layout;
    let keep: Vec<bool> = {
        let mut k = vec![false; t0.len()];
        for e in layout.entries.iter().filter(|e| e.trainable) {
            k[e.offset_elements..e.offset_elements + e.len_elements].fill(true);
        }
        k
    };
    assert!(
        keep.iter().any(|k| !k),
        "the small CNN has BatchNorm buffers"
    );
    let only =
        |v: &[f64]| -> Vec<f64> { v.iter().zip(&keep).filter(|p| *p.1).map(|p| *p.0).collect() };
    let (pd6, pd7, pdist) = (only(&d6), only(&d7), only(&dist));
    let pcos = pd6.iter().zip(&pd7).map(|(a, b)| a * b).sum::<f64>() / (n(&pd6) * n(&pd7));
    let prow = steps
        .iter()
        .find(|x| x.step == 7 && x.layer == "params")
        .unwrap();
    assert!(close(prow.update_norm.unwrap(), n(&pd7)));
    assert!(close(prow.cos_prev_update.unwrap(), pcos));
    assert!(close(prow.dist_from_init.unwrap(), n(&pdist)));
    assert!(!close(prow.dist_from_init.unwrap(), n(&dist)));
    // One row per step and layer; the last state has no update.
    let layers = steps.iter().filter(|x| x.step == 7).count();
    assert!(layers > 5);
    assert_eq!(steps.len(), 21 * layers);
    assert_eq!(
        steps
            .iter()
            .find(|x| x.step == 20 && x.layer == "all")
            .unwrap()
            .update_norm,
        None
    );
    assert_eq!(
        steps
            .iter()
            .find(|x| x.step == 0 && x.layer == "all")
            .unwrap()
            .cos_prev_update,
        None
    );
    let epochs: Vec<EpochRow> = rows(&out);
    assert_eq!(epochs.len(), 6);
    assert_eq!(epochs[0].split, "train");

    // A phase added later to the same folder: allowed, the manifest lists the union, and the
    // tables already there are kept as they were.
    let before = sorted_debug(&steps);
    let curvature_only = |top_k: &'static str| {
        let flags = [
            "--data-dir",
            data_dir.as_str(),
            "--phases",
            "curvature",
            "--curvature-steps",
            "0",
        ];
        [&flags[..], &["--top-k", top_k, "--trace-probes", "0"]].concat()
    };
    let added = run_analysis(&rec, &out, &curvature_only("1"));
    assert!(added.rows.contains_key("curvature"), "{:?}", added.rows);
    let manifest = std::fs::read_to_string(out.join("_sgdwalk_analysis.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        m["config"]["phases"],
        serde_json::json!(["geometry", "curvature", "epochs"]),
        "{manifest}"
    );
    assert_eq!(sorted_debug(&rows::<StepRow>(&out)), before);
    let curv: Vec<CurvatureRow> = rows(&out);
    assert!(
        curv.iter()
            .any(|c| c.step == 0 && c.quantity == "eigenvalue")
    );
    // Once curvature has run, its settings are fixed for this folder.
    let err = analysis_error(&rec, &out, &curvature_only("2"));
    assert!(matches!(err, AnalyzeError::FolderInUse { .. }), "{err}");
}

/// An MLP on 4×4 synthetic images (16 inputs, `hidden` widths, 10 classes) recorded for one
/// epoch of 400 synthetic samples without augmentation; its validation split has 40 samples.
fn small_mlp_recording(rec: &Path, hidden: Vec<i64>, batch_norm: bool) {
    let flags = [
        "--synthetic-size",
        "4",
        "--augment",
        "false",
        "--epochs",
        "1",
    ];
    let mut cfg = synthetic_args(rec, &flags).validate().unwrap();
    cfg.model = ModelSpec::Mlp {
        input_features: 16,
        hidden,
        classes: 10,
        batch_norm,
    };
    record(&cfg, &StopFlag::default()).unwrap();
}

#[test]
fn curvature_matches_the_explicit_hessian_of_a_linear_model() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("lin.walk");
    small_mlp_recording(&rec, vec![], false);
    let out = dir.path().join("c");
    run_analysis(
        &rec,
        &out,
        &[
            "--phases",
            "curvature",
            "--eval",
            "val",
            "--bn",
            "eval-mode",
            "--curvature-steps",
            "3",
            "--top-k",
            "3",
            "--trace-probes",
            "200",
        ],
    );
    let curv: Vec<CurvatureRow> = rows(&out);
    // The Hessian of mean cross-entropy of a linear softmax model, in closed form:
    // H = 1/N Σ (diag(p) − p pᵀ) ⊗ [x;1][x;1]ᵀ, ordered as the canonical state (out.bias,
    // out.weight row-major), evaluated at θ_3 on the validation split.
    let mut reader = Reader::open(&rec).unwrap();
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &rec).unwrap();
    let data = Dataset::load(&desc.dataset, Path::new(".")).unwrap();
    let model = sgdwalk_workload::Model::new(&desc.model, tch::Device::Cpu, 0).unwrap();
    model.load_flat(&reader.state(3).unwrap()).unwrap();
    let names: Vec<&str> = model
        .layout()
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["out.bias", "out.weight"]);
    let ids = data.split_ids(Split::Val);
    let (x, _) = data
        .batch(Split::Val, &ids, None, tch::Device::Cpu)
        .unwrap();
    let x = x.flatten(1, -1);
    let p = model
        .forward_t(&x.view([-1, 1, 4, 4]), false)
        .unwrap()
        .softmax(-1, tch::Kind::Double);
    let xs = Vec::<Vec<f64>>::try_from(x.to_kind(tch::Kind::Double)).unwrap();
    let ps = Vec::<Vec<f64>>::try_from(p).unwrap();
    let (c, d) = (10usize, 16usize);
    let m = c + c * d;
    // Index of parameter (class k, feature j); feature d is the bias.
    let idx = |k: usize, j: usize| if j == d { k } else { c + k * d + j };
    let mut h = vec![0f64; m * m];
    for (xi, pi) in xs.iter().zip(&ps) {
        let xe: Vec<f64> = xi.iter().copied().chain([1.0]).collect();
        for k in 0..c {
            for l in 0..c {
                let a = if k == l { pi[k] } else { 0.0 } - pi[k] * pi[l];
                for j in 0..=d {
                    for jj in 0..=d {
                        h[idx(k, j) * m + idx(l, jj)] += a * xe[j] * xe[jj] / xs.len() as f64;
                    }
                }
            }
        }
    }
    let (eig, _) = symmetric_eigen(&h, m);
    let exact_trace: f64 = (0..m).map(|i| h[i * m + i]).sum();
    let mut top: Vec<f64> = eig.clone();
    top.sort_by(|a, b| b.total_cmp(a));
    for rank in 0..3 {
        let row = curv
            .iter()
            .find(|r| r.quantity == "eigenvalue" && r.rank == Some(rank))
            .unwrap();
        assert!(row.converged, "{row:?}");
        assert!(
            (row.value - top[rank as usize]).abs() <= 1e-3 * top[0],
            "rank {rank}: {} vs {}",
            row.value,
            top[rank as usize]
        );
    }
    let tr = curv.iter().find(|r| r.quantity == "trace").unwrap();
    let se = tr.stderr.unwrap();
    assert!(
        (tr.value - exact_trace).abs() <= 4.0 * se,
        "trace {} ± {se} vs exact {exact_trace}",
        tr.value
    );
}

/// A small BatchNorm MLP (16 → 4 with BatchNorm1d and ReLU → 10), see [`small_mlp_recording`].
fn batchnorm_mlp_recording(dir: &Path) -> PathBuf {
    let rec = dir.join("bn.walk");
    small_mlp_recording(&rec, vec![4], true);
    rec
}

/// The Hessian (f64, m × m, canonical order of the trainable tensors) of the mean
/// cross-entropy of [`batchnorm_mlp_recording`]'s network at `state`, over `batches` weighted
/// by size, written here from the layer definitions (not the workload's model): train mode
/// normalizes each batch with its own mean and biased variance, eval mode with the recorded
/// running statistics. Columns are central differences of the f64 autograd gradient.
fn explicit_bn_mlp_hessian(
    layout: &sgdwalk_workload::StateLayout,
    state: &[f32],
    batches: &[(tch::Tensor, tch::Tensor)],
    policy: BnPolicy,
) -> Vec<f64> {
    use tch::{Kind, Tensor};
    let get = |name: &str| -> Tensor {
        let e = layout.entries.iter().find(|e| e.name == name).unwrap();
        let v: Vec<f64> = state[e.offset_elements..e.offset_elements + e.len_elements]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        Tensor::from_slice(&v).view(e.shape.as_slice())
    };
    let trainable: Vec<&sgdwalk_workload::StateEntry> =
        layout.entries.iter().filter(|e| e.trainable).collect();
    let names: Vec<&str> = trainable.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn0.bias",
            "bn0.weight",
            "fc0.bias",
            "fc0.weight",
            "out.bias",
            "out.weight"
        ]
    );
    let (running_mean, running_var) = (get("bn0.running_mean"), get("bn0.running_var"));
    let theta: Vec<f64> = trainable
        .iter()
        .flat_map(|e| &state[e.offset_elements..e.offset_elements + e.len_elements])
        .map(|&x| f64::from(x))
        .collect();
    let m = theta.len();
    let total: i64 = batches.iter().map(|(x, _)| x.size()[0]).sum();
    let grad = |p: &[f64]| -> Vec<f64> {
        let flat = Tensor::from_slice(p).set_requires_grad(true);
        let mut parts = Vec::new();
        let mut at = 0i64;
        for e in &trainable {
            let n = e.len_elements as i64;
            parts.push(flat.narrow(0, at, n).view(e.shape.as_slice()));
            at += n;
        }
        let (beta, gamma, b0, w0, b1, w1) = (
            &parts[0], &parts[1], &parts[2], &parts[3], &parts[4], &parts[5],
        );
        let mut terms = Vec::new();
        for (x, y) in batches {
            let x = x.flatten(1, -1).to_kind(Kind::Double);
            let h = x.matmul(&w0.tr()) + b0;
            let (mean, var) = match policy {
                BnPolicy::TrainMode => {
                    (h.mean_dim(0, true, Kind::Double), h.var_dim(0, false, true))
                }
                BnPolicy::EvalMode => (running_mean.shallow_clone(), running_var.shallow_clone()),
            };
            let z = ((h - mean) / (var + 1e-5).sqrt() * gamma + beta).relu();
            let logits = z.matmul(&w1.tr()) + b1;
            let ce = logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0);
            terms.push(ce * (x.size()[0] as f64 / total as f64));
        }
        let loss = Tensor::stack(&terms, 0).sum(Kind::Double);
        let g = Tensor::run_backward(&[&loss], &[&flat], false, false);
        Vec::<f64>::try_from(&g[0]).unwrap()
    };
    let step = 1e-5;
    let mut h = vec![0f64; m * m];
    for i in 0..m {
        let (mut plus, mut minus) = (theta.clone(), theta.clone());
        plus[i] += step;
        minus[i] -= step;
        let (gp, gm) = (grad(&plus), grad(&minus));
        for j in 0..m {
            h[j * m + i] = (gp[j] - gm[j]) / (2.0 * step);
        }
    }
    // Symmetric by definition; average away the difference error.
    for i in 0..m {
        for j in 0..i {
            let a = 0.5 * (h[i * m + j] + h[j * m + i]);
            h[i * m + j] = a;
            h[j * m + i] = a;
        }
    }
    h
}

#[test]
fn curvature_follows_the_batchnorm_policy_of_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let rec = batchnorm_mlp_recording(dir.path());
    let out = dir.path().join("c");
    run_analysis(
        &rec,
        &out,
        &[
            "--phases",
            "curvature",
            "--eval",
            "val",
            "--bn",
            "train-mode,eval-mode",
            "--eval-batch-size",
            "20",
            "--curvature-steps",
            "6",
            "--top-k",
            "3",
            "--trace-probes",
            "300",
        ],
    );
    let curv: Vec<CurvatureRow> = rows(&out);
    let mut reader = Reader::open(&rec).unwrap();
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &rec).unwrap();
    let data = Dataset::load(&desc.dataset, Path::new(".")).unwrap();
    let state = reader.state(6).unwrap();
    // The partition train-mode sees: the validation split in order, in batches of 20.
    let ids = data.split_ids(Split::Val);
    assert_eq!(ids.len(), 40);
    let batches: Vec<_> = ids
        .chunks(20)
        .map(|c| data.batch(Split::Val, c, None, tch::Device::Cpu).unwrap())
        .collect();
    let mut lambda_max = Vec::new();
    for policy in [BnPolicy::TrainMode, BnPolicy::EvalMode] {
        let h = explicit_bn_mlp_hessian(&desc.layout, &state, &batches, policy);
        let m = (h.len() as f64).sqrt() as usize;
        let (mut eig, _) = symmetric_eigen(&h, m);
        eig.sort_by(|a, b| b.total_cmp(a));
        let mine: Vec<&CurvatureRow> = curv
            .iter()
            .filter(|r| r.bn_policy == policy.as_str() && r.step == 6)
            .collect();
        for rank in 0..3 {
            let row = mine
                .iter()
                .find(|r| r.quantity == "eigenvalue" && r.rank == Some(rank))
                .unwrap();
            assert!(row.converged, "{row:?}");
            assert!(
                (row.value - eig[rank as usize]).abs() <= 1e-3 * eig[0],
                "{} rank {rank}: {} vs explicit {}",
                policy.as_str(),
                row.value,
                eig[rank as usize]
            );
        }
        let exact_trace: f64 = (0..m).map(|i| h[i * m + i]).sum();
        let tr = mine.iter().find(|r| r.quantity == "trace").unwrap();
        let se = tr.stderr.unwrap();
        assert!(
            (tr.value - exact_trace).abs() <= 4.0 * se,
            "{} trace {} ± {se} vs explicit {exact_trace}",
            policy.as_str(),
            tr.value
        );
        lambda_max.push(eig[0]);
    }
    // The fixture must tell the policies apart, or the comparison above proves nothing.
    assert!(
        (lambda_max[0] - lambda_max[1]).abs() > 0.05 * lambda_max[0].max(lambda_max[1]),
        "train-mode λ_max {} vs eval-mode {}",
        lambda_max[0],
        lambda_max[1]
    );
}

#[test]
fn eval_mode_curvature_of_an_earlier_analyzer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rec = batchnorm_mlp_recording(dir.path());
    let out = dir.path().join("c");
    let flags = [
        "--phases",
        "curvature",
        "--eval",
        "val",
        "--bn",
        "eval-mode",
        "--curvature-steps",
        "2",
        "--top-k",
        "1",
    ];
    run_analysis(&rec, &out, &flags);
    // A folder written before the fix has no revision in its manifest.
    let manifest = out.join("_sgdwalk_analysis.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["revision"], sgdwalk_analyzer::dir::ANALYSIS_REVISION);
    m.as_object_mut().unwrap().remove("revision");
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    let err = analysis_error(&rec, &out, &flags).to_string();
    assert!(err.contains("batch statistics"), "{err}");
    let report = sgdwalk_analyzer::report::report(&sgdwalk_analyzer::report::ReportArgs {
        analyses: vec![out.clone()],
        out: dir.path().join("r"),
        preamble: None,
        barrier_threshold: 1e-3,
        font: None,
        no_plots: true,
        json: false,
    });
    let err = report.unwrap_err().to_string();
    assert!(err.contains("batch statistics"), "{err}");
}

#[test]
fn shards_together_equal_one_run_and_reruns_skip_finished_items() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(&rec, &["--epochs", "2"]));
    let common = [
        "--eval",
        "probe:100,batch",
        "--grid",
        "-0.5:1.5:5",
        "--strides",
        "1,3",
        "--curvature-every",
        "10",
        "--eps-sharpness",
        "0.001",
    ];
    let whole = dir.path().join("whole");
    let mut a = common.to_vec();
    a.extend([
        "--phases",
        "geometry,interp,floors,barriers,curvature,epochs",
    ]);
    let one = run_analysis(&rec, &whole, &a);
    assert_eq!(one.work_items_total, 1);
    let sharded = dir.path().join("sharded");
    // Small work items so both shards get some.
    let cfg_file = dir.path().join("items.toml");
    std::fs::write(&cfg_file, "steps_per_item = 5\n").unwrap();
    let whole5 = dir.path().join("whole5");
    let mut b = a.clone();
    b.extend(["--config", cfg_file.to_str().unwrap()]);
    let w5 = run_analysis(&rec, &whole5, &b);
    assert_eq!(w5.work_items_total, 5);
    let mut shards = Vec::new();
    for i in 0..2 {
        let spec = format!("{i}/2");
        let mut c = b.clone();
        c.extend(["--shard", &spec]);
        shards.push(run_analysis(&rec, &sharded, &c));
    }
    assert_eq!(
        shards[0].work_items_this_shard + shards[1].work_items_this_shard,
        5
    );
    fn same<R: TableRows + std::fmt::Debug>(a: &Path, b: &Path, c: &Path) {
        let (x, y, z) = (
            sorted_debug(&rows::<R>(a)),
            sorted_debug(&rows::<R>(b)),
            sorted_debug(&rows::<R>(c)),
        );
        assert!(!x.is_empty(), "{}", R::TABLE.as_str());
        assert_eq!(x, y, "{}: sharded vs one run", R::TABLE.as_str());
        assert_eq!(
            x,
            z,
            "{}: item size does not change results",
            R::TABLE.as_str()
        );
    }
    same::<StepRow>(&sharded, &whole5, &whole);
    same::<InterpRow>(&sharded, &whole5, &whole);
    same::<FloorRow>(&sharded, &whole5, &whole);
    same::<BarrierRow>(&sharded, &whole5, &whole);
    same::<CurvatureRow>(&sharded, &whole5, &whole);
    same::<EpochRow>(&sharded, &whole5, &whole);
    let barriers: Vec<BarrierRow> = rows(&whole);
    assert!(barriers.iter().any(|r| r.path == "floor" && r.stride == 3));
    assert!(
        barriers
            .iter()
            .any(|r| r.path == "iterate" && r.stride == 1)
    );
    // A rerun finds every item done.
    let again = run_analysis(&rec, &sharded, &[&b[..], &["--shard", "1/2"]].concat());
    assert_eq!(again.work_items_skipped, again.work_items_this_shard);
    assert!(again.rows.is_empty(), "{:?}", again.rows);
    // Another setting into the same folder is refused, not mixed in.
    let err = analysis_error(
        &rec,
        &sharded,
        &[&b[..], &["--shard", "1/2", "--grid", "0:1:3"]].concat(),
    );
    assert!(matches!(err, AnalyzeError::FolderInUse { .. }), "{err}");
    // The message says which settings differ, with both values.
    let msg = err.to_string();
    assert!(
        msg.contains("grid_points: 5 in the folder, 3 now")
            && msg.contains("grid_lo: -0.5 in the folder, 0.0 now"),
        "{msg}"
    );
    let err = analysis_error(&rec, &sharded, &[&b[..], &["--shard", "1/3"]].concat());
    assert!(err.to_string().contains("2 shards"), "{err}");
}

/// Phases added to a folder later read what earlier runs stored instead of recomputing it, and
/// give the rows a single run gives: floors refine the stored interpolation grid, curvature at
/// the valley floor finds the stored floors (it used to write no floor rows at all).
#[test]
fn phases_added_later_reuse_the_stored_tables() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(&rec, &["--epochs", "2"]));
    let common = [
        "--eval",
        "probe:100",
        "--curvature-every",
        "10",
        "--curvature-at-floor",
        "true",
    ];
    let once = dir.path().join("once");
    run_analysis(
        &rec,
        &once,
        &[&common[..], &["--phases", "interp,floors,curvature"]].concat(),
    );
    let staged = dir.path().join("staged");
    let first = run_analysis(
        &rec,
        &staged,
        &[&common[..], &["--phases", "interp"]].concat(),
    );
    let grid_evaluations = first.forward_evaluations;
    let second = run_analysis(
        &rec,
        &staged,
        &[&common[..], &["--phases", "floors"]].concat(),
    );
    assert!(
        !second.rows.contains_key("interp"),
        "interp is not rewritten: {:?}",
        second.rows
    );
    let floors: Vec<FloorRow> = rows(&staged);
    let refinements: u64 = floors.iter().map(|f| u64::from(f.evaluations)).sum();
    assert_eq!(
        second.forward_evaluations, refinements,
        "only the refinement is evaluated (the grid of {grid_evaluations} evaluations is read back)"
    );
    let third = run_analysis(
        &rec,
        &staged,
        &[&common[..], &["--phases", "curvature"]].concat(),
    );
    assert_eq!(third.work_items_skipped, 0);
    let curvature: Vec<CurvatureRow> = rows(&staged);
    assert!(
        curvature.iter().any(|r| r.point == "floor"),
        "curvature at the stored floors"
    );
    assert_eq!(
        sorted_debug(&rows::<FloorRow>(&once)),
        sorted_debug(&floors)
    );
    assert_eq!(
        sorted_debug(&rows::<CurvatureRow>(&once)),
        sorted_debug(&curvature)
    );
    assert_eq!(
        sorted_debug(&rows::<InterpRow>(&once)),
        sorted_debug(&rows::<InterpRow>(&staged))
    );
}

/// A run whose learning rate (1e30) makes its losses NaN within its 6 updates.
fn diverged_recording(dir: &Path) -> PathBuf {
    let rec = dir.join("diverge.walk");
    run(&synthetic_args(
        &rec,
        &[
            "--lr",
            "1e30",
            "--max-steps",
            "6",
            "--augment",
            "false",
            "--eval-splits",
            "",
        ],
    ));
    rec
}

#[test]
fn nonfinite_losses_are_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rec = diverged_recording(dir.path());
    let out = dir.path().join("n");
    let s = run_analysis(
        &rec,
        &out,
        &["--phases", "interp,floors", "--eval", "probe:50"],
    );
    assert!(s.nonfinite_losses > 0, "{s:?}");
    let interp: Vec<InterpRow> = rows(&out);
    assert_eq!(interp.len(), 6 * 11, "no row dropped");
    assert!(interp.iter().any(|r| r.loss.is_nan() && r.nonfinite > 0));
    let floors: Vec<FloorRow> = rows(&out);
    assert!(
        floors
            .iter()
            .any(|f| f.shape == "nonfinite" && f.alpha_star.is_nan())
    );
}

#[test]
fn a_diverged_run_keeps_nan_losses_as_nan_and_only_absent_scalars_null() {
    // Format 1.2: a NaN loss is recorded as NaN, the last state's scalars as absent; the
    // `steps` table keeps the two apart (NaN → NaN, absent → null).
    let dir = tempfile::tempdir().unwrap();
    let rec = diverged_recording(dir.path());
    let r = Reader::open(&rec).unwrap();
    assert_eq!(r.steps(), &[0, 1, 2, 3, 4, 5, 6]);
    let recorded: Vec<sgdwalk_format::StepScalars> =
        (0..=6).map(|t| r.step_info(t).unwrap().scalars).collect();
    assert!(
        recorded[..6]
            .iter()
            .any(|s| s.minibatch_loss.is_some_and(f64::is_nan)),
        "lr 1e30 diverges to NaN losses: {recorded:?}"
    );
    let out = dir.path().join("g");
    run_analysis(&rec, &out, &["--phases", "geometry"]);
    let mut all: Vec<StepRow> = rows::<StepRow>(&out)
        .into_iter()
        .filter(|r| r.layer == "all")
        .collect();
    all.sort_by_key(|r| r.step);
    assert_eq!(all.len(), 7);
    let bits = |v: Option<f64>| v.map(f64::to_bits);
    for (row, s) in all.iter().zip(&recorded) {
        let t = row.step;
        // Every update's scalars are present, NaN or not; the table has them bit for bit.
        assert_eq!(row.lr.is_none(), t == 6, "step {t}");
        assert_eq!(row.minibatch_loss.is_none(), t == 6, "step {t}");
        assert_eq!(row.grad_norm.is_none(), t == 6, "step {t}");
        assert_eq!(row.recorded_update_norm.is_none(), t == 6, "step {t}");
        assert!(row.wall_time_secs.is_some(), "step {t}");
        assert_eq!(bits(row.lr), bits(s.learning_rate), "step {t}");
        assert_eq!(bits(row.minibatch_loss), bits(s.minibatch_loss), "step {t}");
        assert_eq!(bits(row.grad_norm), bits(s.grad_norm), "step {t}");
        assert_eq!(
            bits(row.recorded_update_norm),
            bits(s.update_norm),
            "step {t}"
        );
    }
    assert!(
        all.iter()
            .any(|r| r.minibatch_loss.is_some_and(f64::is_nan)),
        "NaN losses reach the table as NaN, not null"
    );
}

#[test]
fn bad_inputs_get_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No consecutive pairs.
    let sparse = dir.path().join("sparse.walk");
    run(&synthetic_args(
        &sparse,
        &["--record", "every:5", "--eval-splits", ""],
    ));
    let err = analysis_error(&sparse, &dir.path().join("o1"), &[]);
    assert!(matches!(err, AnalyzeError::NoPairs { .. }), "{err}");
    assert!(err.to_string().contains("sparse.walk"), "{err}");

    // A dataset other than the recorded one.
    let idx_dir = dir.path().join("mnist");
    std::fs::create_dir_all(&idx_dir).unwrap();
    let fm = crate::util::fashion_mnist_dir();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(fm.join(f), idx_dir.join(f)).unwrap();
    }
    let rec = dir.path().join("fm.walk");
    run(&fashion_args(
        &rec,
        &[
            "--data-dir",
            idx_dir.to_str().unwrap(),
            "--max-steps",
            "2",
            "--eval-splits",
            "",
        ],
    ));
    // Same shape, other content: Fashion-MNIST's test labels replaced by the train file's first
    // 10,000 labels.
    let labels = sgdwalk_workload::data::load_idx_pair(&idx_dir, "train")
        .unwrap()
        .0
        .labels;
    let first: Vec<u8> = Vec::<i64>::try_from(labels.narrow(0, 0, 10_000))
        .unwrap()
        .iter()
        .map(|&l| l as u8)
        .collect();
    let mut bytes = vec![0, 0, 8, 1, 0, 0, 0x27, 0x10];
    bytes.extend(first);
    std::fs::remove_file(idx_dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(idx_dir.join("t10k-labels-idx1-ubyte"), bytes).unwrap();
    let err = analysis_error(
        &rec,
        &dir.path().join("o2"),
        &["--data-dir", idx_dir.to_str().unwrap()],
    );
    assert!(matches!(err, AnalyzeError::DatasetMismatch { .. }), "{err}");
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");

    // A recording whose metadata is not a run description (another writer of the format).
    let foreign = dir.path().join("foreign.walk");
    let header = sgdwalk_format::Header::new(
        [7; 16],
        0,
        vec![sgdwalk_format::TensorSpec {
            name: "w".into(),
            dtype: sgdwalk_format::DType::F32,
            shape: vec![4],
            offset_elements: 0,
        }],
        0,
        r#"{"model": "mystery"}"#.into(),
        sgdwalk_format::CodecSettings::default(),
    )
    .unwrap();
    let w = sgdwalk_format::Writer::create(&foreign, header, Default::default()).unwrap();
    w.finish().unwrap();
    let (cfg, settings) = analyze_args(&foreign, &dir.path().join("o3"), &[])
        .validate()
        .unwrap();
    let err = match Session::open(&settings, &cfg) {
        Err(e) => e,
        Ok(_) => panic!("a foreign recording opened"),
    };
    assert!(
        matches!(err, AnalyzeError::NoRunDescription { .. }),
        "{err}"
    );

    // Flags that cannot work: refused when parsed (the value names what was expected) or when
    // checked against each other.
    for (bad, expected) in [
        (&["--eval", "probe:0"][..], "probe:N"),
        (&["--shard", "2/2"], "need 0 <= I < N"),
        (&["--bn", "frozen"], "train-mode or eval-mode"),
        (&["--phases", "magic"], "known: geometry"),
        (&["--grid", "0:1"], "LO:HI:POINTS"),
        (&["--steps", "5"], "START..END"),
    ] {
        let argv = [&["analyze", "r.walk", "-o", "o4"][..], bad].concat();
        let err = match Cli::try_parse_from(argv) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{bad:?} parsed"),
        };
        assert!(err.contains(expected), "{bad:?}: {err}");
    }
    for (bad, setting) in [
        (&["--grid", "1:0:5"][..], "grid"),
        (&["--strides", "0"], "strides"),
        (&["--top-k", "50"], "top-k"),
    ] {
        let err = analyze_args(&rec, &dir.path().join("o4"), bad)
            .validate()
            .unwrap_err();
        assert!(
            matches!(&err, AnalyzeError::InvalidSetting { setting: s, .. } if *s == setting),
            "{bad:?}: {err}"
        );
    }
}

/// Every phase on a 2-epoch Fashion-MNIST recording: probe of 200, barrier strides 1 and 2,
/// curvature at steps 0, 10 and 20.
pub fn small_full_analysis(rec: &Path, out: &Path) {
    let data_dir = crate::util::fashion_mnist_dir().display().to_string();
    run_analysis(
        rec,
        out,
        &[
            "--data-dir",
            &data_dir,
            "--eval",
            "probe:200",
            "--strides",
            "1,2",
            "--curvature-steps",
            "0,10,20",
            "--top-k",
            "1",
            "--trace-probes",
            "2",
        ],
    );
}

/// The Python used for the query examples: `SGDWALK_QUERY_PYTHON`, else the venv that
/// `scripts/setup` creates. Missing means the set-up was not run: the test fails, it does not skip.
pub fn query_python() -> PathBuf {
    crate::util::setup_python("SGDWALK_QUERY_PYTHON", "venv-q", "duckdb and polars")
}

/// The query examples answer the report's questions with the report's definitions: polars
/// (examples/query.py), DuckDB (examples/queries.sql) and summary.parquet give equal numbers
/// for the per-epoch cos, distance and valley-floor shares and the barrier share.
#[test]
fn example_queries_answer_as_the_report() {
    #[derive(clap::Parser)]
    struct ReportCli {
        #[command(flatten)]
        args: sgdwalk_analyzer::report::ReportArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = fashion_recording(dir.path());
    let out = dir.path().join("q");
    small_full_analysis(&rec, &out);
    let report_dir = dir.path().join("report");
    let report_args = <ReportCli as clap::Parser>::parse_from([
        "report",
        out.to_str().unwrap(),
        "-o",
        report_dir.to_str().unwrap(),
        "--no-plots",
    ])
    .args;
    sgdwalk_analyzer::report::report(&report_args).unwrap();
    let examples = crate::util::workspace_root().join("examples");
    let script = r#"
import math, sys
from pathlib import Path
import polars as pl
sys.path.insert(0, sys.argv[1])
import query

out, summary_path = Path(sys.argv[2]), sys.argv[3]
answers = query.questions(out)
summary = pl.read_parquet(summary_path)
primary = summary.select("eval_set", "bn_policy").row(0)

def close(a, b, what):
    ok = (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))
    if not ok:
        sys.exit(f"{what}: example {a} vs report {b}")

def report(metric, epoch):
    rows = summary.filter((pl.col("metric") == metric) & (pl.col("epoch") == epoch))
    assert rows.height == 1, (metric, epoch, rows)
    return rows.row(0, named=True)

compared = 0
for g in answers["geometry"].iter_rows(named=True):
    e = g["epoch"]
    close(g["share_negative_cos"], report("cos_negative_share", e)["value"], f"cos<0 share, epoch {e}")
    close(g["mean_cos"], report("cos_mean", e)["value"], f"mean cos, epoch {e}")
    close(g["dist_from_init_end"], report("dist_from_init_end", e)["value"], f"distance, epoch {e}")
    assert g["pairs"] == report("cos_mean", e)["count"], (e, g)
    compared += 4
for v in answers["valley"].iter_rows(named=True):
    if (v["eval_set"], v["bn_policy"]) != primary:
        continue
    e = v["epoch"]
    close(v["share_interior_min"], report("interior_floor_share", e)["value"], f"interior share, epoch {e}")
    compared += 1
for b in answers["barriers"].iter_rows(named=True):
    if (b["eval_set"], b["bn_policy"], b["path"], b["stride"]) != (*primary, "floor", 1):
        continue
    row = summary.filter(pl.col("metric") == "barrier_share_floor_stride1").row(0, named=True)
    close(b["share_with_barrier"], row["value"], "barrier share, floor stride 1")
    assert b["segments"] == row["count"], (b, row)
    compared += 1

# The SQL gives the polars answers, column by column.
sql = query.sql_answers(out)
for name, (columns, rows) in zip(["valley", "geometry", "barriers", "layers"], sql):
    df = answers[name]
    assert list(df.columns) == list(columns), (name, df.columns, columns)
    assert df.height == len(rows), (name, df.height, len(rows))
    for mine, theirs in zip(df.iter_rows(), rows):
        for c, a, b in zip(columns, mine, theirs):
            if isinstance(a, float) or isinstance(b, float):
                close(a, b, f"{name}.{c}: polars vs DuckDB")
            else:
                assert a == b, (name, c, a, b)
        compared += 1
print(f"compared {compared}")
"#;
    let res = std::process::Command::new(query_python())
        .arg("-c")
        .arg(script)
        .arg(&examples)
        .arg(&out)
        .arg(report_dir.join("summary.parquet"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let compared: usize = stdout
        .trim()
        .strip_prefix("compared ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(compared >= 12, "{stdout}");
    // The script itself runs end to end, with the DuckDB statements.
    let res = std::process::Command::new(query_python())
        .arg(examples.join("query.py"))
        .arg(&out)
        .arg("--sql")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        stdout.contains("share_interior_min") && stdout.contains("lambda_max"),
        "{stdout}"
    );
}

/// The probe's sample ids join to the dataset in DuckDB: the labels of the evaluated samples,
/// read by numpy from the idx file and joined on `sample_id`, equal the labels the analyzer's
/// dataset gives those ids, and every probe `interp` row's sample count equals the ids listed.
#[test]
fn probe_sample_ids_join_to_the_data_in_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let rec = fashion_recording(dir.path());
    let out = dir.path().join("p");
    let data_dir = crate::util::fashion_mnist_dir();
    run_analysis(
        &rec,
        &out,
        &[
            "--data-dir",
            &data_dir.display().to_string(),
            "--phases",
            "interp",
            "--eval",
            "probe:250",
            "--steps",
            "0..2",
            "--grid",
            "0:1:3",
        ],
    );
    let script = r#"
import gzip, json, sys
import duckdb, numpy as np
out, labels_path = sys.argv[1], sys.argv[2]
raw = gzip.open(labels_path).read() if labels_path.endswith('.gz') else open(labels_path, 'rb').read()
assert int.from_bytes(raw[:4], 'big') == 2049
labels = np.frombuffer(raw[8:], dtype=np.uint8)
data = {'sample_id': np.arange(len(labels), dtype=np.uint32), 'label': labels.astype(np.int64)}
con = duckdb.connect()
con.register('train_file', data)
rows = con.execute(f"""
    SELECT s.position, s.sample_id, t.label
    FROM read_parquet('{out}/eval_samples/*/*.parquet', hive_partitioning = true) s
    JOIN train_file t USING (sample_id)
    WHERE s.eval_set = 'probe:250'
    ORDER BY s.position""").fetchall()
counts = con.execute(f"""
    SELECT DISTINCT i.samples, (SELECT count(*) FROM read_parquet('{out}/eval_samples/*/*.parquet',
        hive_partitioning = true) s WHERE s.eval_set = i.eval_set) AS listed
    FROM read_parquet('{out}/interp/*/*.parquet', hive_partitioning = true) i""").fetchall()
print(json.dumps({'rows': rows, 'counts': counts}))
"#;
    let labels = ["train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"]
        .iter()
        .map(|f| data_dir.join(f))
        .find(|p| p.exists())
        .unwrap();
    let res = std::process::Command::new(query_python())
        .arg("-c")
        .arg(script)
        .arg(&out)
        .arg(&labels)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(v["counts"], serde_json::json!([[250, 250]]));
    let joined = v["rows"].as_array().unwrap();
    assert_eq!(joined.len(), 250);
    let reader = Reader::open(&rec).unwrap();
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &rec).unwrap();
    let data = Dataset::load(&desc.dataset, &data_dir).unwrap();
    let probe = sgdwalk_workload::sampling::probe_subset(0, &data.split_ids(Split::Train), 250);
    let (_, y) = data
        .batch(Split::Train, &probe, None, tch::Device::Cpu)
        .unwrap();
    let expected = Vec::<i64>::try_from(&y).unwrap();
    for (i, row) in joined.iter().enumerate() {
        assert_eq!(row[0], i as u64);
        assert_eq!(row[1], probe[i]);
        assert_eq!(row[2], expected[i], "label of sample {}", probe[i]);
    }
}

/// A recording still being written (no footer yet, a torn last record) is analyzed up to the
/// steps present.
#[test]
fn a_recording_still_being_written_is_analyzed_up_to_its_last_complete_step() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.walk");
    run(&synthetic_args(
        &full,
        &["--epochs", "2", "--eval-splits", ""],
    ));
    let bytes = std::fs::read(&full).unwrap();
    let partial = dir.path().join("partial.walk");
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    let present = Reader::open(&partial).unwrap().steps().to_vec();
    assert!(present.len() > 3 && present.len() < 25, "{present:?}");
    let out = dir.path().join("p");
    let s = run_analysis(
        &partial,
        &out,
        &["--phases", "geometry,interp", "--eval", "probe:50"],
    );
    assert_eq!(s.steps_present, present.len());
    let interp: Vec<InterpRow> = rows(&out);
    let steps: std::collections::BTreeSet<u64> = interp.iter().map(|r| r.step).collect();
    assert_eq!(
        steps.into_iter().collect::<Vec<_>>(),
        present[..present.len() - 1].to_vec()
    );
}

fn same_rows<R: TableRows + std::fmt::Debug>(a: &Path, b: &Path) {
    let (x, y) = (sorted_debug(&rows::<R>(a)), sorted_debug(&rows::<R>(b)));
    assert!(!x.is_empty(), "{}", R::TABLE.as_str());
    assert_eq!(x, y, "{}", R::TABLE.as_str());
}

/// An analysis of an unfinished recording marks the work items whose steps are not all there
/// as partial and redoes them once the recording has grown: the rerun equals a fresh analysis
/// (the last step seen first used to keep a null update norm for good).
#[test]
fn an_unfinished_recording_is_completed_by_rerunning_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.walk");
    run(&synthetic_args(
        &full,
        &["--epochs", "2", "--eval-splits", ""],
    ));
    let bytes = std::fs::read(&full).unwrap();
    let items = dir.path().join("items.toml");
    std::fs::write(&items, "steps_per_item = 5\n").unwrap();
    let flags = [
        "--phases",
        "geometry,interp,floors,barriers",
        "--eval",
        "probe:50",
        "--grid",
        "0:1:5",
        "--strides",
        "1,3",
        "--config",
        items.to_str().unwrap(),
    ];
    let growing = dir.path().join("growing.walk");
    let out = dir.path().join("grown");
    let mut partial_seen = 0;
    for len in [bytes.len() / 2, bytes.len() * 3 / 4] {
        std::fs::write(&growing, &bytes[..len]).unwrap();
        let s = run_analysis(&growing, &out, &flags);
        assert!(s.recording_unfinished, "{s}");
        assert!(s.work_items_partial >= 1, "{s}");
        assert!(s.to_string().contains("unfinished"), "{s}");
        // A rerun on the same bytes keeps the partial items: nothing new to see.
        let again = run_analysis(&growing, &out, &flags);
        assert_eq!(
            again.work_items_skipped, again.work_items_this_shard,
            "{again}"
        );
        partial_seen += s.work_items_partial;
    }
    assert!(partial_seen >= 2);
    std::fs::write(&growing, &bytes).unwrap();
    let last = run_analysis(&growing, &out, &flags);
    assert!(!last.recording_unfinished, "{last}");
    assert_eq!(last.work_items_partial, 0);
    assert!(
        last.work_items_skipped < last.work_items_this_shard,
        "{last}"
    );
    let fresh = dir.path().join("fresh");
    run_analysis(&full, &fresh, &flags);
    same_rows::<StepRow>(&out, &fresh);
    same_rows::<InterpRow>(&out, &fresh);
    same_rows::<FloorRow>(&out, &fresh);
    same_rows::<BarrierRow>(&out, &fresh);
    let steps: Vec<StepRow> = rows(&out);
    let total = Reader::open(&full).unwrap().steps().len() as u64;
    let distinct: std::collections::BTreeSet<u64> = steps.iter().map(|r| r.step).collect();
    assert_eq!(distinct.len() as u64, total);
    assert!(
        steps
            .iter()
            .filter(|r| r.step + 1 < total)
            .all(|r| r.update_norm.is_some()),
        "every step but the last has its closing pair"
    );
}

/// Analyzing while the recorder writes (in another thread), then again once it stopped,
/// gives what a fresh analysis of the stopped recording gives.
#[test]
fn analyzing_while_the_recorder_writes_then_rerunning_equals_a_fresh_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("live.walk");
    // Far more steps than the test waits for: the stop flag ends it.
    let cfg = synthetic_args(&rec, &["--epochs", "1000", "--eval-splits", ""])
        .validate()
        .unwrap();
    let stop = StopFlag::default();
    let requested = std::sync::Arc::clone(&stop.requested);
    let recorder = std::thread::spawn(move || record(&cfg, &stop));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Ok(r) = Reader::open(&rec)
            && r.steps().len() >= 12
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no steps in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let items = dir.path().join("items.toml");
    std::fs::write(&items, "steps_per_item = 5\n").unwrap();
    let flags = [
        "--phases",
        "geometry,interp",
        "--eval",
        "probe:50",
        "--grid",
        "0:1:3",
        "--config",
        items.to_str().unwrap(),
    ];
    let out = dir.path().join("live");
    let during = run_analysis(&rec, &out, &flags);
    requested.store(true, std::sync::atomic::Ordering::SeqCst);
    let recorded = recorder.join().unwrap().unwrap();
    assert!(during.recording_unfinished, "{during}");
    assert!(during.work_items_partial >= 1, "{during}");
    assert!(recorded.last_step > during.last_step.unwrap());
    run_analysis(&rec, &out, &flags);
    let fresh = dir.path().join("fresh");
    run_analysis(&rec, &fresh, &flags);
    same_rows::<StepRow>(&out, &fresh);
    same_rows::<InterpRow>(&out, &fresh);
}

/// Sizes are checked against what exists before anything is allocated or written: a refused
/// analysis leaves no folder or manifest behind, so the next command with other settings runs.
#[test]
fn infeasible_analyses_are_refused_before_the_folder_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(
        &rec,
        &["--max-steps", "6", "--eval-splits", ""],
    ));
    let out = dir.path().join("a");
    // 32 GB of α values.
    let err = analyze_args(&rec, &out, &["--grid", "0:1:4000000000"])
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AnalyzeError::InvalidSetting {
                setting: "grid",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at most 10000"), "{err}");
    let err = analyze_args(&rec, &out, &["--eps-sharpness", "NaN"])
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("eps-sharpness"), "{err}");
    // A probe larger than the training split (400 samples, 20% held out for validation).
    let err = analysis_error(&rec, &out, &["--eval", "probe:100000000"]);
    assert!(
        matches!(
            &err,
            AnalyzeError::InvalidSetting {
                setting: "eval",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("probe:100000000"), "{err}");
    // Curvature at a step the recording does not hold (it holds 0..=6).
    let err = analysis_error(
        &rec,
        &out,
        &[
            "--phases",
            "curvature",
            "--curvature-steps",
            "2,5000",
            "--eval",
            "probe:20",
        ],
    );
    let msg = err.to_string();
    assert!(
        msg.contains("curvature-steps") && msg.contains("5000"),
        "{msg}"
    );
    assert!(msg.contains("0..=6"), "{msg}");
    let err = analysis_error(
        &rec,
        &out,
        &[
            "--phases",
            "curvature",
            "--curvature-steps",
            "4",
            "--steps",
            "0..3",
            "--eval",
            "probe:20",
        ],
    );
    assert!(err.to_string().contains("outside --steps"), "{err}");
    assert!(!out.exists(), "a refused analysis wrote {}", out.display());
    // The folder takes the next analysis, whatever its settings.
    let s = run_analysis(
        &rec,
        &out,
        &[
            "--phases",
            "geometry,curvature",
            "--curvature-steps",
            "2",
            "--eval",
            "probe:20",
        ],
    );
    assert_eq!(s.rows.get("curvature").copied(), Some(1), "{s}");
    // The summary says where the time went, and on how many threads.
    assert_eq!(
        s.phase_secs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["curvature", "steps"],
        "{s}"
    );
    assert!(s.to_string().contains("time per phase: curvature"), "{s}");
    assert_eq!(s.threads, 1);
    // The default probe (1000) on a smaller training split is the whole split, named by its
    // real size; only an explicit probe:N larger than the split is refused.
    let small = dir.path().join("default-probe");
    run_analysis(&rec, &small, &["--phases", "interp", "--grid", "0:1:3"]);
    let ids: Vec<EvalSampleRow> = rows(&small);
    let name = format!("probe:{}", ids.len());
    assert!(ids.len() > 100 && ids.len() < 1000, "{}", ids.len());
    assert!(ids.iter().all(|r| r.eval_set == name && r.split == "train"));
    let interp: Vec<InterpRow> = rows(&small);
    assert!(interp.iter().all(|r| r.eval_set == name));
}

/// Tables live in `<out>/<table>/shard=<i>/`; a folder in the earlier `table=<name>` layout is
/// still read, and `analyze` refuses to add to it with the command that renames it.
#[test]
fn folders_in_the_earlier_layout_are_read_and_not_extended() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(
        &rec,
        &["--max-steps", "4", "--eval-splits", ""],
    ));
    let out = dir.path().join("a");
    let flags = [
        "--phases",
        "geometry,interp",
        "--eval",
        "probe:20",
        "--grid",
        "0:1:3",
    ];
    run_analysis(&rec, &out, &flags);
    assert!(out.join("interp/shard=0").is_dir());
    let before: Vec<InterpRow> = rows(&out);
    let folder = sgdwalk_analyzer::dir::AnalysisDir::new(&out);
    for t in ["steps", "interp", "eval_samples"] {
        std::fs::rename(out.join(t), out.join(format!("table={t}"))).unwrap();
    }
    let files = folder
        .table_files(sgdwalk_analyzer::tables::TableName::Interp)
        .unwrap()
        .unwrap();
    let mut again = Vec::new();
    for f in &files {
        assert!(
            f.to_string_lossy().contains("table=interp"),
            "{}",
            f.display()
        );
        again.extend(read_rows::<InterpRow>(f).unwrap());
    }
    assert_eq!(sorted_debug(&again), sorted_debug(&before));
    let err = analysis_error(&rec, &out, &flags);
    let msg = err.to_string();
    assert!(matches!(err, AnalyzeError::FolderInUse { .. }), "{msg}");
    assert!(msg.contains("table=interp") && msg.contains("mv"), "{msg}");
}

/// Every table carries the run's label, every per-step table its epoch, and every `steps` row
/// the recorded scalars, so tables join on (run_label, step) without tricks.
#[test]
fn labels_epochs_and_scalars_are_on_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(
        &rec,
        &["--epochs", "2", "--eval-splits", "test"],
    ));
    let out = dir.path().join("runs/lr0.05/analysis");
    let flags = [
        "--phases",
        "geometry,interp,floors,barriers,curvature,epochs",
        "--eval",
        "probe:40",
        "--grid",
        "0:1:5",
        "--strides",
        "1,2",
        "--curvature-every",
        "10",
    ];
    run_analysis(&rec, &out, &flags);
    let steps: Vec<StepRow> = rows(&out);
    let epoch_of: std::collections::HashMap<u64, u32> =
        steps.iter().map(|r| (r.step, r.epoch)).collect();
    assert!(epoch_of.values().any(|&e| e == 2), "{epoch_of:?}");
    // The default label: runs/<name>/analysis → <name>.
    assert!(steps.iter().all(|r| r.run_label == "lr0.05"));
    let all: std::collections::HashMap<u64, &StepRow> = steps
        .iter()
        .filter(|r| r.layer == "all")
        .map(|r| (r.step, r))
        .collect();
    let bits = |v: Option<f64>| v.map(f64::to_bits);
    for r in steps.iter().filter(|r| r.layer != "all") {
        let a = all[&r.step];
        assert_eq!(
            (bits(r.lr), bits(r.minibatch_loss), bits(r.grad_norm)),
            (bits(a.lr), bits(a.minibatch_loss), bits(a.grad_norm)),
            "step {} layer {}",
            r.step,
            r.layer
        );
    }
    assert!(steps.iter().any(|r| r.layer == "params" && r.lr.is_some()));
    let interp: Vec<InterpRow> = rows(&out);
    let floors: Vec<FloorRow> = rows(&out);
    let barriers: Vec<BarrierRow> = rows(&out);
    let curvature: Vec<CurvatureRow> = rows(&out);
    let epochs: Vec<EpochRow> = rows(&out);
    let samples: Vec<EvalSampleRow> = rows(&out);
    assert!(!curvature.is_empty() && !barriers.is_empty() && !epochs.is_empty());
    // --curvature-every includes the run's final state, a multiple of 10 or not.
    let last = steps.iter().map(|r| r.step).max().unwrap();
    assert!(last % 10 != 0, "{last}");
    assert!(
        curvature.iter().any(|r| r.step == last),
        "no curvature at {last}"
    );
    assert!(
        interp
            .iter()
            .all(|r| r.run_label == "lr0.05" && r.epoch == epoch_of[&r.step])
    );
    assert!(
        floors
            .iter()
            .all(|r| r.run_label == "lr0.05" && r.epoch == epoch_of[&r.step])
    );
    assert!(
        barriers
            .iter()
            .all(|r| r.run_label == "lr0.05" && r.epoch == epoch_of[&r.step_from])
    );
    assert!(
        curvature
            .iter()
            .all(|r| r.run_label == "lr0.05" && r.epoch == epoch_of[&r.step])
    );
    assert!(epochs.iter().all(|r| r.run_label == "lr0.05"));
    assert!(samples.iter().all(|r| r.run_label == "lr0.05"));
    // A label given later must match the folder's; the folder keeps its own.
    let err = analysis_error(&rec, &out, &[&flags[..], &["--label", "other"]].concat());
    assert!(err.to_string().contains("labelled \"lr0.05\""), "{err}");
    run_analysis(&rec, &out, &[&flags[..], &["--label", "lr0.05"]].concat());
    let named = dir.path().join("named");
    run_analysis(
        &rec,
        &named,
        &["--phases", "geometry", "--label", "baseline"],
    );
    assert!(
        rows::<StepRow>(&named)
            .iter()
            .all(|r| r.run_label == "baseline")
    );
    // A folder of an earlier revision (other columns) is not extended.
    let manifest = named.join(sgdwalk_analyzer::dir::AnalysisDir::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["revision"] = 2.into();
    std::fs::write(&manifest, json.to_string()).unwrap();
    let err = analysis_error(&rec, &named, &["--phases", "geometry"]);
    assert!(
        matches!(err, AnalyzeError::FolderInUse { .. }) && err.to_string().contains("revision 2"),
        "{err}"
    );
}

/// α = 1 of step t and α = 0 of step t+1 are the same state: evaluated once on a set that does
/// not change with the step (every grid point of `batch` is its own evaluation).
#[test]
fn interpolations_share_the_evaluation_at_a_common_state() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("s.walk");
    run(&synthetic_args(
        &rec,
        &["--max-steps", "6", "--eval-splits", ""],
    ));
    let out = dir.path().join("a");
    let s = run_analysis(
        &rec,
        &out,
        &[
            "--phases",
            "interp",
            "--eval",
            "probe:20,batch",
            "--grid",
            "0:1:5",
        ],
    );
    // 6 pairs in one work item: probe 6 × 5 − 5 shared, batch 6 × 5.
    assert_eq!(s.forward_evaluations, 25 + 30, "{s}");
    let interp: Vec<InterpRow> = rows(&out);
    let at = |set: &str, step: u64, alpha: f64| {
        interp
            .iter()
            .find(|r| r.eval_set == set && r.step == step && r.alpha == alpha)
            .map(|r| (r.loss.to_bits(), r.accuracy.to_bits(), r.samples))
            .unwrap()
    };
    for t in 0..5 {
        assert_eq!(
            at("probe:20", t, 1.0),
            at("probe:20", t + 1, 0.0),
            "step {t}"
        );
    } // A floor segment v_t → v_{t+1} starts and ends at points evaluated while locating the
    // floors: only its 3 inner points are evaluated (stride 1 between iterates is the
    // interpolation itself: none).
    let flags = ["--eval", "probe:20", "--grid", "0:1:5", "--strides", "1"];
    let floors_only = run_analysis(
        &rec,
        &dir.path().join("f"),
        &[&flags[..], &["--phases", "interp,floors"]].concat(),
    );
    let with_barriers = dir.path().join("b");
    let all = run_analysis(
        &rec,
        &with_barriers,
        &[&flags[..], &["--phases", "interp,floors,barriers"]].concat(),
    );
    let barriers: Vec<BarrierRow> = rows(&with_barriers);
    let floor_segments = barriers.iter().filter(|r| r.path == "floor").count() as u64;
    assert!(floor_segments >= 4, "{floor_segments}");
    assert_eq!(
        all.forward_evaluations - floors_only.forward_evaluations,
        3 * floor_segments,
        "{all}"
    );
}
