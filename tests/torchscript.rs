//! TorchScript models: the fixtures made by PyTorch 2.11 (tests/fixtures/torchscript, with the
//! script that regenerates them) load with PyTorch's names, dtypes and outputs; their state
//! flattens and reloads bit-exactly; bad modules get named errors; recordings of TorchScript
//! models replay, resume and analyze like the built-ins.

use std::path::{Path, PathBuf};

use sgdwalk_workload::{Model, ModelSpec, StateDType, WorkloadError};
use tch::{Device, Kind, Tensor};

pub fn fixture_dir() -> PathBuf {
    crate::util::workspace_root().join("tests/fixtures/torchscript")
}

pub fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap()
}

/// The description of a module file, as the recorder writes it.
pub fn script_spec(path: &Path, classes: i64) -> (ModelSpec, Vec<u8>) {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    let spec = ModelSpec::TorchScript {
        file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        len_bytes: bytes.len() as u64,
        classes,
    };
    (spec, bytes)
}

fn load(name: &str) -> Result<Model, WorkloadError> {
    let (spec, bytes) = script_spec(&fixture(name), 10);
    Model::load(&spec, Device::Cpu, 0, Some(&bytes))
}

fn probe_input() -> Tensor {
    Tensor::linspace(-1.0, 1.0, 1568, (Kind::Float, Device::Cpu)).reshape([2, 1, 28, 28])
}

/// A JSON list of numbers (PyTorch's output, flattened row-major).
fn as_vec(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn fixtures_load_with_pytorchs_names_dtypes_and_outputs() {
    let m = manifest();
    let mut checked = 0;
    for f in m["fixtures"].as_array().unwrap() {
        if !f["valid"].as_bool().unwrap() {
            continue;
        }
        let file = f["file"].as_str().unwrap();
        let model = load(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let layout = model.layout();
        // Canonical order: PyTorch's state_dict names, sorted.
        let names: Vec<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
        let expected: Vec<&str> = f["canonical_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "{file}");
        assert_eq!(
            layout.len_elements() as u64,
            f["state_words"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(
            model.parameter_count() as u64,
            f["parameter_count"].as_u64().unwrap(),
            "{file}"
        );
        for (kind, trainable) in [("parameters", true), ("buffers", false)] {
            for t in f[kind].as_array().unwrap() {
                let name = t["name"].as_str().unwrap();
                let e = layout.entries.iter().find(|e| e.name == name).unwrap();
                let shape: Vec<i64> = t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap())
                    .collect();
                assert_eq!(e.shape, shape, "{file} {name}");
                assert_eq!(
                    e.dtype.as_str(),
                    t["dtype"].as_str().unwrap(),
                    "{file} {name}"
                );
                let requires_grad = t["requires_grad"].as_bool().unwrap_or(false);
                assert_eq!(e.trainable, trainable && requires_grad, "{file} {name}");
                // The values came through: the sum PyTorch computed.
                let sum = model.tensors()
                    [layout.entries.iter().position(|x| x.name == name).unwrap()]
                .to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
                let want = t["sum"].as_f64().unwrap();
                assert!(
                    (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{file} {name}: {sum} vs {want}"
                );
            }
        }
        // Forward through the shim equals PyTorch's on the same input, in both modes; train
        // mode's running-statistics update is undone by reloading the state.
        let theta = model.flatten().unwrap();
        for (mode, key) in [(false, "probe_output_eval"), (true, "probe_output_train")] {
            let out = tch::no_grad(|| model.forward_t(&probe_input(), mode)).unwrap();
            assert_eq!(out.size(), [2, 10], "{file}");
            let got = Vec::<f64>::try_from(out.to_kind(Kind::Double).reshape([-1])).unwrap();
            let want = as_vec(&f[key]);
            assert_eq!(got.len(), want.len(), "{file} {key}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{file} {key}: {g} vs {w}"
                );
            }
            model.load_flat(&theta).unwrap();
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn integer_buffers_round_trip_bit_exactly_through_the_flat_state() {
    let model = load("mlp_bn.pt").unwrap();
    let layout = model.layout().clone();
    let nbt = layout
        .entries
        .iter()
        .position(|e| e.name == "bn0.num_batches_tracked")
        .unwrap();
    let e = &layout.entries[nbt];
    assert_eq!((e.dtype, e.len_elements), (StateDType::I64, 2));
    let mut theta = model.flatten().unwrap();
    // A count above 2^32 whose words are a NaN pattern as f32: both must survive.
    let count: i64 = (0x7fc0_0001_i64 << 32) | 0x7fa0_0002;
    let bytes = count.to_le_bytes();
    theta[e.offset_elements] = f32::from_bits(u32::from_le_bytes(bytes[..4].try_into().unwrap()));
    theta[e.offset_elements + 1] =
        f32::from_bits(u32::from_le_bytes(bytes[4..].try_into().unwrap()));
    model.load_flat(&theta).unwrap();
    assert_eq!(model.tensors()[nbt].int64_value(&[]), count);
    let back = model.flatten().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&theta));
    // A training-mode forward advances the counter by one, as in PyTorch.
    let _ = model.forward_t(&probe_input(), true).unwrap();
    assert_eq!(model.tensors()[nbt].int64_value(&[]), count + 1);
}

#[test]
fn bad_modules_get_named_errors() {
    match load("not_a_module.pt") {
        Err(WorkloadError::TorchScript { what, reason }) => {
            assert!(what.contains("loading"), "{what}");
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match load("no_params.pt") {
        Err(WorkloadError::NoTrainableParameters { module }) => {
            assert_eq!(module, "no_params.pt");
        }
        other => panic!("{other:?}"),
    }
    // Bytes that are not the described module are refused before loading.
    let (spec, mut bytes) = script_spec(&fixture("mlp_bn.pt"), 10);
    bytes[100] ^= 1;
    let err = Model::load(&spec, Device::Cpu, 0, Some(&bytes))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256"), "{err}");
    let err = Model::load(&spec, Device::Cpu, 0, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}

/// Recorder flags for a TorchScript fixture on 640 Fashion-MNIST training images.
fn script_args(out: &Path, module: &Path, extra: &[&str]) -> sgdwalk_recorder::RecordArgs {
    let model = format!("torchscript:{}", module.display());
    let mut all = vec!["--model", model.as_str()];
    all.extend_from_slice(extra);
    crate::recorder::fashion_args(out, &all)
}

/// The built-in MLP whose names and shapes `mlp_bn.pt` repeats.
fn small_mlp() -> ModelSpec {
    ModelSpec::Mlp {
        input_features: 784,
        hidden: vec![32, 16],
        classes: 10,
        batch_norm: true,
    }
}

#[test]
fn a_torchscript_recording_embeds_its_module_and_replays_bit_exactly() {
    use sgdwalk_format::Reader;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("script.walk");
    let module = fixture("mlp_bn.pt");
    let s = crate::recorder::run(&script_args(&out, &module, &["--epochs", "2"]));
    assert_eq!(s.updates, 20);
    let reader = Reader::open(&out).unwrap();
    // Self-contained: the module file travels in the recording, byte for byte.
    let embedded = reader
        .attachment(sgdwalk_workload::models::MODULE_ATTACHMENT)
        .unwrap()
        .unwrap()
        .to_vec();
    assert_eq!(embedded, std::fs::read(&module).unwrap());
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &out).unwrap();
    assert!(matches!(
        desc.model,
        ModelSpec::TorchScript { classes: 10, .. }
    ));
    // The header layout carries PyTorch's names and dtypes; θ_0 is the module's saved state.
    let i64_tensors: Vec<&str> = reader
        .header()
        .layout
        .iter()
        .filter(|t| t.dtype == sgdwalk_format::DType::I64)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        i64_tensors,
        ["bn0.num_batches_tracked", "bn1.num_batches_tracked"]
    );
    drop(reader);
    let direct = load("mlp_bn.pt").unwrap().flatten().unwrap();
    let mut reader = Reader::open(&out).unwrap();
    assert_eq!(
        crate::recorder::bits(&reader.state(0).unwrap()),
        crate::recorder::bits(&direct)
    );
    // num_batches_tracked counts the updates, exactly.
    let model = load("mlp_bn.pt").unwrap();
    model.load_flat(&reader.state(20).unwrap()).unwrap();
    let nbt = model
        .layout()
        .entries
        .iter()
        .position(|e| e.name == "bn1.num_batches_tracked")
        .unwrap();
    assert_eq!(model.tensors()[nbt].int64_value(&[]), 20);
    drop(reader);
    let (pairs, _) =
        crate::recorder::replay_pairs_bit_exactly(&out, &crate::util::fashion_mnist_dir());
    assert_eq!(pairs, 20);
}

/// The same network as a TorchScript module and as the built-in MLP, from the same θ_0, on
/// the same data and seed: the common tensors follow the same trajectory.
#[test]
fn a_torchscript_export_of_the_builtin_mlp_records_the_same_trajectory() {
    use sgdwalk_format::Reader;
    let dir = tempfile::tempdir().unwrap();
    // θ_0 of the built-in, written into the fixture module and saved as a new module file.
    let builtin = Model::new(&small_mlp(), Device::Cpu, 7).unwrap();
    let script = load("mlp_bn.pt").unwrap();
    for (e, t) in script.layout().entries.iter().zip(script.tensors()) {
        if let Some(i) = builtin
            .layout()
            .entries
            .iter()
            .position(|b| b.name == e.name)
        {
            tch::no_grad(|| t.shallow_clone().copy_(&builtin.tensors()[i]));
        }
    }
    let module = dir.path().join("builtin_as_script.pt");
    script.script_module().unwrap().save(&module).unwrap();

    let a = dir.path().join("builtin.walk");
    let mut cfg = crate::recorder::fashion_args(&a, &["--epochs", "1"])
        .validate()
        .unwrap();
    cfg.model = small_mlp();
    cfg.seeds.init = 7;
    sgdwalk_recorder::record(&cfg, &sgdwalk_recorder::StopFlag::default()).unwrap();
    let b = dir.path().join("script.walk");
    crate::recorder::run(&script_args(&b, &module, &["--epochs", "1"]));

    let (mut ra, mut rb) = (Reader::open(&a).unwrap(), Reader::open(&b).unwrap());
    assert_eq!(ra.steps(), rb.steps());
    let la = ra.header().layout.clone();
    let lb = rb.header().layout.clone();
    let mut worst = 0f64;
    let mut identical = true;
    for t in ra.steps().to_vec() {
        let (sa, sb) = (ra.state(t).unwrap(), rb.state(t).unwrap());
        assert_eq!(
            ra.step_info(t).unwrap().sample_ids,
            rb.step_info(t).unwrap().sample_ids
        );
        for ta in &la {
            let tb = lb.iter().find(|x| x.name == ta.name).unwrap();
            let n: u64 = ta.shape.iter().product::<u64>().max(1);
            let xa = &sa[ta.offset_elements as usize..(ta.offset_elements + n) as usize];
            let xb = &sb[tb.offset_elements as usize..(tb.offset_elements + n) as usize];
            identical &= crate::recorder::bits(xa) == crate::recorder::bits(xb);
            let (mut d, mut s) = (0f64, 0f64);
            for (p, q) in xa.iter().zip(xb) {
                d += (f64::from(*p) - f64::from(*q)).powi(2);
                s += f64::from(*q).powi(2);
            }
            worst = worst.max(d.sqrt() / s.sqrt().max(1e-30));
        }
    }
    eprintln!(
        "built-in vs TorchScript MLP: bit-identical {identical}, max relative difference {worst:.3e}"
    );
    assert!(identical, "max relative difference {worst:.3e}");
}

#[test]
fn a_killed_torchscript_recording_resumes_to_the_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let module = fixture("cnn_residual.pt");
    let extra = ["--epochs", "2", "--optimizer", "momentum"];
    let full = dir.path().join("full.walk");
    crate::recorder::run(&script_args(&full, &module, &extra));
    let bytes = std::fs::read(&full).unwrap();
    let killed = dir.path().join("killed.walk");
    std::fs::write(&killed, &bytes[..bytes.len() * 3 / 5]).unwrap();
    // The module comes from the recording on resume: point the flag elsewhere to prove it.
    let moved = dir.path().join("elsewhere.pt");
    std::fs::copy(&module, &moved).unwrap();
    let mut a = script_args(&killed, &moved, &extra);
    a.resume = true;
    let s = crate::recorder::run(&a);
    assert!(s.resumed_from_step.is_some());
    let numbers = |p: &Path| {
        let mut r = sgdwalk_format::Reader::open(p).unwrap();
        r.steps()
            .to_vec()
            .into_iter()
            .map(|t| {
                (
                    crate::recorder::bits(&r.state(t).unwrap()),
                    r.step_info(t).unwrap().sample_ids,
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(numbers(&killed) == numbers(&full));
}

#[test]
fn bad_torchscript_models_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    for (file, needle) in [
        ("not_a_module.pt", "loading"),
        ("no_params.pt", "no trainable parameters"),
        ("wrong_output.pt", "expected [2, 10] logits"),
        ("missing.pt", "cannot read"),
    ] {
        let out = dir.path().join(format!("{file}.walk"));
        let err = match script_args(&out, &fixture(file), &[]).validate() {
            Err(e) => e.to_string(),
            Ok(cfg) => sgdwalk_recorder::record(&cfg, &sgdwalk_recorder::StopFlag::default())
                .unwrap_err()
                .to_string(),
        };
        assert!(err.contains(needle), "{file}: {err}");
        assert!(!out.exists(), "{file}: nothing written");
    }
}

/// Every analyzer phase runs on a TorchScript recording; interpolation ends equal direct
/// evaluations of the recorded states under both BatchNorm policies.
#[test]
fn every_phase_analyzes_a_torchscript_recording() {
    use sgdwalk_analyzer::tables::{BarrierRow, CurvatureRow, FloorRow, InterpRow, StepRow};
    use sgdwalk_workload::{BnPolicy, Dataset, Split, evaluate};
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("cf.walk");
    crate::recorder::run(&script_args(
        &rec,
        &fixture("control_flow.pt"),
        &["--epochs", "1"],
    ));
    let out = dir.path().join("a");
    let data_dir = crate::util::fashion_mnist_dir().display().to_string();
    crate::analyzer::run_analysis(
        &rec,
        &out,
        &[
            "--data-dir",
            &data_dir,
            "--eval",
            "probe:200",
            "--bn",
            "train-mode,eval-mode",
            "--steps",
            "0..4",
            "--grid",
            "0:1:5",
            "--curvature-steps",
            "2",
            "--top-k",
            "1",
            "--trace-probes",
            "2",
            "--eval-batch-size",
            "100",
        ],
    );
    let steps: Vec<StepRow> = crate::analyzer::rows(&out);
    assert!(steps.iter().any(|r| r.layer == "params"));
    let interp: Vec<InterpRow> = crate::analyzer::rows(&out);
    let floors: Vec<FloorRow> = crate::analyzer::rows(&out);
    let barriers: Vec<BarrierRow> = crate::analyzer::rows(&out);
    let curv: Vec<CurvatureRow> = crate::analyzer::rows(&out);
    assert_eq!(interp.len(), 4 * 2 * 5);
    assert_eq!(floors.len(), 4 * 2);
    assert!(!barriers.is_empty());
    for bn in ["train-mode", "eval-mode"] {
        let lam = curv
            .iter()
            .find(|r| r.bn_policy == bn && r.quantity == "eigenvalue")
            .unwrap();
        assert!(lam.value.is_finite() && lam.value > 0.0, "{lam:?}");
    }
    let mut reader = sgdwalk_format::Reader::open(&rec).unwrap();
    let desc = sgdwalk_analyzer::replay::run_description(&reader, &rec).unwrap();
    let data = Dataset::load(&desc.dataset, Path::new(&data_dir)).unwrap();
    let probe = sgdwalk_workload::sampling::probe_subset(0, &data.split_ids(Split::Train), 200);
    let model = load("control_flow.pt").unwrap();
    for (alpha, step) in [(0.0, 2u64), (1.0, 3)] {
        model.load_flat(&reader.state(step).unwrap()).unwrap();
        for bn in [BnPolicy::TrainMode, BnPolicy::EvalMode] {
            let direct = evaluate(&model, &data, Split::Train, &probe, None, 100, bn).unwrap();
            let row = interp
                .iter()
                .find(|r| r.step == 2 && r.alpha == alpha && r.bn_policy == bn.as_str())
                .unwrap();
            assert_eq!(row.loss, direct.mean_loss(), "α={alpha} {bn:?}");
        }
    }
}

/// The Python with PyTorch 2.11 that `scripts/setup` installs (see [`crate::util::setup_python`]).
fn torch_python() -> PathBuf {
    crate::util::setup_python(
        "SGDWALK_TORCH_PYTHON",
        "venv-torch",
        "torch 2.11 for this cross-check",
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// PyTorch itself, trained on the recorded sample ids from the recorded θ_0, follows the
/// recording for 20 steps, and its losses along three steps at α ∈ {0, 0.5, 1} under both
/// BatchNorm policies equal the analyzer's, to 1e-5 relative.
#[test]
fn pytorch_agrees_with_the_recording_and_the_analyzer() {
    use safetensors::Dtype;
    use sgdwalk_analyzer::tables::InterpRow;
    let dir = tempfile::tempdir().unwrap();
    // Fashion-MNIST in the safetensors layout a PyTorch user has.
    let fm = crate::util::fashion_mnist_dir();
    let (x, y) = crate::tensors_dataset::idx_prefix(&fm, "train", 840);
    let (tx, ty) = crate::tensors_dataset::idx_prefix(&fm, "t10k", 100);
    let labels = |y: &[u8]| {
        y.iter()
            .flat_map(|&l| i64::from(l).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let data = dir.path().join("fm.safetensors");
    crate::tensors_dataset::write(
        &data,
        &[
            (
                "train_x",
                Dtype::U8,
                vec![640, 1, 28, 28],
                x[..640 * 784].to_vec(),
            ),
            ("train_y", Dtype::I64, vec![640], labels(&y[..640])),
            (
                "val_x",
                Dtype::U8,
                vec![200, 1, 28, 28],
                x[640 * 784..].to_vec(),
            ),
            ("val_y", Dtype::I64, vec![200], labels(&y[640..])),
            ("test_x", Dtype::U8, vec![100, 1, 28, 28], tx),
            ("test_y", Dtype::I64, vec![100], labels(&ty)),
        ],
        &[
            ("sgdwalk.mean", "0.5"),
            ("sgdwalk.std", "1.0"),
            ("sgdwalk.classes", "10"),
        ],
    );
    let module = fixture("mlp_bn.pt");
    let rec = dir.path().join("run.walk");
    let model = format!("torchscript:{}", module.display());
    let dataset = format!("tensors:{}", data.display());
    crate::recorder::run(&crate::recorder::args(
        &rec,
        &[
            "--model",
            &model,
            "--dataset",
            &dataset,
            "--batch-size",
            "64",
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--weight-decay",
            "5e-4",
            "--eval-batch-size",
            "100",
        ],
    ));
    let json = dir.path().join("torch.json");
    let script = crate::util::workspace_root().join("tests/python/torch_crosscheck.py");
    let res = std::process::Command::new(torch_python())
        .arg(&script)
        .args([&rec, &module, &data])
        .args([
            "--steps",
            "20",
            "--eval-split",
            "val",
            "--eval-samples",
            "200",
        ])
        .args(["--eval-batch-size", "100", "--threads", "1", "--out"])
        .arg(&json)
        .env(
            "PYTHONPATH",
            crate::util::workspace_root().join("examples/python"),
        )
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let train = doc["train"].as_array().unwrap();
    assert_eq!(train.len(), 20);
    let mut worst = 0f64;
    for row in train {
        let d = row["free_run"]["max_rel_diff"].as_f64().unwrap();
        worst = worst.max(d);
        assert!(
            d <= 1e-5,
            "step {}: {d:e} in {}",
            row["step"],
            row["free_run"]["worst_tensor"]
        );
    }
    eprintln!("PyTorch vs recording over 20 steps: max relative difference {worst:.3e}");
    // The analyzer on the same points: the validation split (200 samples, batches of 100).
    let out = dir.path().join("a");
    crate::analyzer::run_analysis(
        &rec,
        &out,
        &[
            "--phases",
            "interp",
            "--eval",
            "val",
            "--bn",
            "train-mode,eval-mode",
            "--grid",
            "0:1:3",
            "--steps",
            "0..11",
            "--eval-batch-size",
            "100",
        ],
    );
    let interp: Vec<InterpRow> = crate::analyzer::rows(&out);
    let points = doc["interp"].as_array().unwrap();
    assert_eq!(points.len(), 3 * 3 * 2);
    let mut worst = 0f64;
    for p in points {
        let (t, alpha, bn) = (
            p["step"].as_u64().unwrap(),
            p["alpha"].as_f64().unwrap(),
            p["bn"].as_str().unwrap(),
        );
        let row = interp
            .iter()
            .find(|r| r.step == t && r.alpha == alpha && r.bn_policy == bn)
            .unwrap();
        let d = rel(row.loss, p["loss"].as_f64().unwrap());
        worst = worst.max(d);
        assert!(
            d <= 1e-5,
            "step {t} α={alpha} {bn}: {} vs PyTorch {}",
            row.loss,
            p["loss"]
        );
    }
    eprintln!("PyTorch vs analyzer interpolation losses: max relative difference {worst:.3e}");
}

/// The recorder's settings are model-agnostic: other optimizers, a sparse policy and
/// full-batch GD with noise record TorchScript runs that verify, and the same seed gives the
/// same recording.
#[test]
fn torchscript_runs_take_every_recorder_setting_and_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let module = fixture("traced_cnn.pt");
    for (i, extra) in [
        &[
            "--optimizer",
            "adamw",
            "--schedule",
            "cosine",
            "--warmup-steps",
            "3",
        ][..],
        &[
            "--optimizer",
            "nesterov",
            "--record",
            "window:3,5",
            "--epochs",
            "2",
        ][..],
        &[
            "--full-batch",
            "--noise-std",
            "0.01",
            "--train-samples",
            "0..128",
            "--epochs",
            "3",
        ][..],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("run{i}.walk"));
        let s = crate::recorder::run(&script_args(&out, &module, extra));
        assert!(s.steps_recorded >= 2, "{extra:?}: {s:?}");
        let report = sgdwalk_format::verify(&out).unwrap();
        assert!(report.finished, "{extra:?}");
        let again = dir.path().join(format!("again{i}.walk"));
        crate::recorder::run(&script_args(&again, &module, extra));
        let states = |p: &Path| {
            let mut r = sgdwalk_format::Reader::open(p).unwrap();
            r.steps()
                .to_vec()
                .into_iter()
                .map(|t| crate::recorder::bits(&r.state(t).unwrap()))
                .collect::<Vec<_>>()
        };
        assert!(
            states(&out) == states(&again),
            "{extra:?}: same seed, same states"
        );
    }
}
