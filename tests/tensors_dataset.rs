//! `--dataset tensors:PATH`: safetensors files written by the tests themselves. The same
//! Fashion-MNIST images give the same recording as the idx files, f32 tables train an MLP,
//! val/test splits are sized and evaluated, crop-flip replays, every bad file gets a named
//! error, and the analyzer checks the file's sha256 wherever the file is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sgdwalk_analyzer::AnalyzeError;
use sgdwalk_format::Reader;
use sgdwalk_recorder::{RecordError, StopFlag, record, run_description};
use sgdwalk_workload::tensors::{META_CLASSES, META_MEAN, META_STD};
use sgdwalk_workload::{Dataset, DatasetName, DatasetSpec, Split, WorkloadError};
use sha2::Digest;
use tch::Device;

use crate::analyzer::{analysis_error, run_analysis};
use crate::recorder::{args, bits, replay_pairs_bit_exactly, run};
use crate::util::fashion_mnist_dir;

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub type Entry = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// Writes a safetensors file as `safetensors.torch.save_file` would.
pub fn write(path: &Path, tensors: &[Entry], meta: &[(&str, &str)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize_to_file(views, (!meta.is_empty()).then_some(meta), path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Deterministic noise in [0, 1) (an LCG, so the tests need no RNG crate).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut z = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            z = z
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (z >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// `n` u8 images `[n, c, side, side]` whose brightness pattern depends on the label
/// (`classes` classes), plus noise: learnable and deterministic.
fn images(seed: u64, n: usize, c: usize, side: usize, classes: i64) -> (Vec<u8>, Vec<i64>) {
    let px = c * side * side;
    let r = noise(seed, n * (px + 1));
    let mut x = Vec::with_capacity(n * px);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = (r[i * (px + 1)] * classes as f32) as i64;
        y.push(label);
        for p in 0..px {
            let base = if (p % classes as usize) as i64 == label {
                180.0
            } else {
                40.0
            };
            x.push((base + 60.0 * r[i * (px + 1) + 1 + p]) as u8);
        }
    }
    (x, y)
}

/// A u8 image file with train, and optionally val and test, parts.
fn image_file(path: &Path, train: usize, val: usize, test: usize, c: usize, side: usize) {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, (xn, yn, n)) in [
        ("train_x", "train_y", train),
        ("val_x", "val_y", val),
        ("test_x", "test_y", test),
    ]
    .into_iter()
    .enumerate()
    {
        if n > 0 {
            let (x, y) = images(i as u64 + 1, n, c, side, 4);
            entries.push((xn, Dtype::U8, vec![n, c, side, side], x));
            entries.push((yn, Dtype::I64, vec![n], i64_bytes(&y)));
        }
    }
    write(path, &entries, &[(META_MEAN, "0.5"), (META_STD, "0.25")]);
}

/// Serializes this module's tests that build models. `Model::new` seeds libtorch's global
/// generator and then draws θ_0 from it, so two models built at once on two test threads can
/// interleave their draws and a replay would then see another θ_0.
fn models_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static MODELS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MODELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tensors_flag(path: &Path) -> String {
    format!("tensors:{}", path.display())
}

fn validate_error(out: &Path, extra: &[&str]) -> RecordError {
    args(out, extra).validate().unwrap_err()
}

/// The first `n` images and labels of an idx pair, as stored (u8).
pub fn idx_prefix(dir: &Path, prefix: &str, n: i64) -> (Vec<u8>, Vec<u8>) {
    let (set, _) = sgdwalk_workload::data::load_idx_pair(dir, prefix).unwrap();
    let x = Vec::<u8>::try_from(set.images.narrow(0, 0, n).flatten(0, -1)).unwrap();
    let y: Vec<u8> = Vec::<i64>::try_from(set.labels.narrow(0, 0, n))
        .unwrap()
        .into_iter()
        .map(|l| l as u8)
        .collect();
    (x, y)
}

/// Everything a recording holds that depends on the data: states, ids, augmentation, step
/// scalars (without wall time) and per-epoch evaluations.
fn recorded_numbers(path: &Path) -> Vec<String> {
    let mut r = Reader::open(path).unwrap();
    let mut out = vec![format!("{:?}", r.epochs().unwrap())];
    for t in r.steps().to_vec() {
        let mut info = r.step_info(t).unwrap();
        info.scalars.wall_time_secs = None;
        out.push(format!(
            "{t} {:?} {:?} {:?}",
            info.sample_ids, info.augmentation, info.scalars
        ));
        out.push(format!("{:?}", bits(&r.state(t).unwrap())));
    }
    out
}

/// (1) The first 400 Fashion-MNIST training images as a u8 safetensors file (train_x 0..320,
/// val_x 320..400) give bit-for-bit the recording of the idx files with the same ranges and
/// normalization: same pixels, same scaling, same ids.
#[test]
fn fashion_mnist_as_tensors_records_the_same_states_as_the_idx_files() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let idx = fashion_mnist_dir();
    let (x, y) = idx_prefix(&idx, "train", 400);
    let (tx, ty) = idx_prefix(&idx, "t10k", 100);
    let file = dir.path().join("fmnist400.safetensors");
    let px = 28 * 28;
    write(
        &file,
        &[
            (
                "train_x",
                Dtype::U8,
                vec![320, 1, 28, 28],
                x[..320 * px].to_vec(),
            ),
            ("train_y", Dtype::U8, vec![320], y[..320].to_vec()),
            (
                "val_x",
                Dtype::U8,
                vec![80, 1, 28, 28],
                x[320 * px..].to_vec(),
            ),
            ("val_y", Dtype::U8, vec![80], y[320..].to_vec()),
            ("test_x", Dtype::U8, vec![100, 1, 28, 28], tx),
            ("test_y", Dtype::U8, vec![100], ty),
        ],
        // The idx loader's normalization (the paper's x - 0.5) and class count.
        &[(META_MEAN, "0.5"), (META_STD, "1"), (META_CLASSES, "10")],
    );
    let common = [
        "--model",
        "small-cnn",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--epochs",
        "2",
        "--keyframe-interval",
        "4",
        // The test files differ (10,000 vs 100 images); train and val are the same samples.
        "--eval-splits",
        "train,val",
    ];
    let from_idx = dir.path().join("idx.walk");
    let idx_dir = idx.display().to_string();
    let mut a = vec![
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        &idx_dir,
        "--train-samples",
        "0..320",
        "--val-samples",
        "320..400",
    ];
    a.extend(common);
    run(&args(&from_idx, &a));
    let from_tensors = dir.path().join("tensors.walk");
    let flag = tensors_flag(&file);
    let mut b = vec!["--dataset", flag.as_str()];
    b.extend(common);
    let cfg = args(&from_tensors, &b).validate().unwrap();
    assert_eq!(
        (cfg.dataset.train_range, cfg.dataset.val_range),
        ((0, 320), (320, 400)),
        "train_x, then val_x in the training file's ids"
    );
    record(&cfg, &StopFlag::default()).unwrap();
    let expected = recorded_numbers(&from_idx);
    assert_eq!(expected.len(), 1 + 2 * 11, "θ_0..θ_10 of 5 steps per epoch");
    assert_eq!(recorded_numbers(&from_tensors), expected);

    let r = Reader::open(&from_tensors).unwrap();
    let desc = run_description(r.header(), &from_tensors).unwrap();
    assert_eq!(desc.dataset.name, DatasetName::Tensors);
    let t = desc.dataset.tensors.as_ref().unwrap();
    assert_eq!(
        (t.path.clone(), t.mean.clone(), t.std.clone(), t.classes),
        (file.clone(), vec![0.5], vec![1.0], 10)
    );
    let id = &desc.dataset_identity;
    assert_eq!(id.files.len(), 1);
    assert_eq!(id.files[0].file, "fmnist400.safetensors");
    assert_eq!(
        id.files[0].sha256,
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()))
    );
    assert_eq!((id.train_samples, id.test_samples), (400, 100));
}

/// (2) f32 `[N, D]` inputs, as stored plus the flags' normalization, train the MLP; the
/// recording verifies and every pair replays bit-exactly.
#[test]
fn f32_tables_train_an_mlp_and_replay() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("table.safetensors");
    let (n, d) = (120usize, 12usize);
    let r = noise(7, n * d);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    // Feature `label` carries the class; the rest is noise.
    let x: Vec<f32> = (0..n * d)
        .map(|k| r[k] + if (k % d) as i64 == y[k / d] { 2.0 } else { 0.0 })
        .collect();
    write(
        &file,
        &[
            ("train_x", Dtype::F32, vec![n, d], f32_bytes(&x)),
            (
                "train_y",
                Dtype::I16,
                vec![n],
                y.iter().flat_map(|&l| (l as i16).to_le_bytes()).collect(),
            ),
        ],
        &[],
    );
    let out = dir.path().join("mlp.walk");
    let flag = tensors_flag(&file);
    let a = args(
        &out,
        &[
            "--dataset",
            &flag,
            "--model",
            "mlp",
            "--input-mean",
            "0.5",
            "--input-std",
            "2",
            "--batch-size",
            "20",
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--val-samples",
            "100..120",
            "--train-samples",
            "0..100",
        ],
    );
    let cfg = a.validate().unwrap();
    match &cfg.model {
        sgdwalk_workload::ModelSpec::Mlp {
            input_features,
            classes,
            ..
        } => assert_eq!(
            (*input_features, *classes),
            (12, 3),
            "classes = largest label + 1"
        ),
        other => panic!("{other:?}"),
    }
    let summary = record(&cfg, &StopFlag::default()).unwrap();
    assert_eq!(summary.updates, 10);
    let report = sgdwalk_format::verify(&out).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(replay_pairs_bit_exactly(&out, &cfg.data_dir), (10, 0));
    let epochs = Reader::open(&out).unwrap().epochs().unwrap();
    let last = epochs.last().unwrap();
    assert_eq!(
        last.evals
            .iter()
            .map(|e| (e.split.as_str(), e.samples))
            .collect::<Vec<_>>(),
        [("train", 100), ("val", 20)],
        "no test_x: test is not evaluated"
    );
    assert!(last.evals[0].accuracy > 0.6, "{last:?}");
    // The batch is the stored f32 values, normalized: (x - 0.5) / 2, rows as asked.
    let desc = run_description(Reader::open(&out).unwrap().header(), &out).unwrap();
    let data = Dataset::load(&desc.dataset, &file).unwrap();
    assert_eq!(data.input_shape(), vec![12]);
    let (xb, yb) = data
        .batch(Split::Val, &[101, 7], None, Device::Cpu)
        .unwrap();
    let expected: Vec<f32> = [101usize, 7]
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().map(|v| (v - 0.5) / 2.0))
        .collect();
    assert_eq!(
        bits(&Vec::<f32>::try_from(xb.flatten(0, -1)).unwrap()),
        bits(&expected)
    );
    assert_eq!(Vec::<i64>::try_from(yb).unwrap(), vec![y[101], y[7]]);
}

/// (3) val_x and test_x size the splits and are evaluated; a file without them gets an empty
/// val split (or the flags' ranges) and no test evaluation.
#[test]
fn val_and_test_parts_size_the_splits_and_the_evaluations() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("img.safetensors");
    image_file(&file, 96, 32, 40, 1, 8);
    let out = dir.path().join("a.walk");
    let flag = tensors_flag(&file);
    let base = [
        "--dataset",
        flag.as_str(),
        "--model",
        "small-cnn",
        "--batch-size",
        "32",
    ];
    run(&args(&out, &base));
    let r = Reader::open(&out).unwrap();
    let desc = run_description(r.header(), &out).unwrap();
    assert_eq!(
        (desc.dataset.train_range, desc.dataset.val_range),
        ((0, 96), (96, 128))
    );
    assert_eq!(
        (
            desc.dataset_identity.train_samples,
            desc.dataset_identity.test_samples
        ),
        (128, 40)
    );
    assert_eq!(desc.steps_per_epoch, 3);
    let evals = &r.epochs().unwrap()[0].evals;
    assert_eq!(
        evals
            .iter()
            .map(|e| (e.split.as_str(), e.samples))
            .collect::<Vec<_>>(),
        [("train", 96), ("val", 32), ("test", 40)]
    );
    // Val ids read val_x: id 96 is val_x[0].
    let data = Dataset::load(&desc.dataset, &file).unwrap();
    assert_eq!(data.split_ids(Split::Val), (96..128).collect::<Vec<u32>>());
    let (a, _) = data.batch(Split::Val, &[96], None, Device::Cpu).unwrap();
    let (x, _) = images(2, 32, 1, 8, 4);
    // libtorch may scale by a reciprocal: equal within float rounding, not bit for bit.
    let first: Vec<f32> = x[..64]
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.5) / 0.25)
        .collect();
    let got = Vec::<f32>::try_from(a.flatten(0, -1)).unwrap();
    assert!(
        got.iter().zip(&first).all(|(g, e)| (g - e).abs() <= 1e-5),
        "{got:?} vs {first:?}"
    );
    assert!(matches!(
        data.batch(Split::Test, &[40], None, Device::Cpu),
        Err(WorkloadError::SampleOutOfRange { .. })
    ));

    // Train only: the val split is empty unless given, test is neither default nor allowed.
    let bare = dir.path().join("bare.safetensors");
    image_file(&bare, 96, 0, 0, 1, 8);
    let bare_flag = tensors_flag(&bare);
    let b = [
        "--dataset",
        bare_flag.as_str(),
        "--model",
        "small-cnn",
        "--batch-size",
        "32",
    ];
    let cfg = args(&dir.path().join("b.walk"), &b).validate().unwrap();
    assert_eq!(
        (cfg.dataset.train_range, cfg.dataset.val_range),
        ((0, 96), (96, 96))
    );
    assert_eq!(cfg.eval_splits, [Split::Train, Split::Val]);
    let flags = [
        &b[..],
        &["--train-samples", "0..64", "--val-samples", "64..96"],
    ]
    .concat();
    let out_b = dir.path().join("b.walk");
    run(&args(&out_b, &flags));
    let r = Reader::open(&out_b).unwrap();
    let evals = &r.epochs().unwrap()[0].evals;
    assert_eq!(
        evals
            .iter()
            .map(|e| (e.split.as_str(), e.samples))
            .collect::<Vec<_>>(),
        [("train", 64), ("val", 32)]
    );
    let err = validate_error(
        &dir.path().join("c.walk"),
        &[&b[..], &["--eval-splits", "train,test"]].concat(),
    );
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "eval-splits",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("test_x"), "{err}");
    let data = Dataset::load(&run_description(r.header(), &out_b).unwrap().dataset, &bare).unwrap();
    assert!(!data.has_split(Split::Test));
    let err = data
        .batch(Split::Test, &[0], None, Device::Cpu)
        .unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::SplitMissing {
                split: "test",
                tensor: "test_x",
                ..
            }
        ),
        "{err}"
    );
    // The analyzer refuses to evaluate the missing split, naming it.
    let err = analysis_error(
        &out_b,
        &dir.path().join("an"),
        &["--phases", "interp", "--eval", "test", "--steps", "0..1"],
    );
    assert!(
        matches!(
            err,
            AnalyzeError::Workload(WorkloadError::SplitMissing { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("test_x"), "{err}");
}

/// (4) crop-flip on `[N, C, H, W]` images records a choice per sample and every pair replays
/// with them; `none` records none; a table refuses crop-flip naming the flag.
#[test]
fn crop_flip_on_images_records_choices_that_replay() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rgb.safetensors");
    image_file(&file, 64, 16, 16, 3, 8);
    let flag = tensors_flag(&file);
    let out = dir.path().join("aug.walk");
    let base = [
        "--dataset",
        flag.as_str(),
        "--model",
        "small-cnn",
        "--batch-size",
        "16",
        "--epochs",
        "2",
    ];
    run(&args(
        &out,
        &[&base[..], &["--augment", "crop-flip"]].concat(),
    ));
    let r = Reader::open(&out).unwrap();
    let desc = run_description(r.header(), &out).unwrap();
    assert_eq!(desc.augmentation.as_ref().unwrap().kind, "crop-pad4-flip");
    assert_eq!(r.step_info(0).unwrap().augmentation.len(), 16 * 2);
    assert_eq!(replay_pairs_bit_exactly(&out, &file), (8, 8));

    let plain = dir.path().join("plain.walk");
    run(&args(&plain, &[&base[..], &["--augment", "none"]].concat()));
    let r = Reader::open(&plain).unwrap();
    assert!(
        run_description(r.header(), &plain)
            .unwrap()
            .augmentation
            .is_none()
    );

    let table = dir.path().join("table.safetensors");
    write(
        &table,
        &[
            ("train_x", Dtype::F32, vec![8, 5], f32_bytes(&[0.25; 40])),
            ("train_y", Dtype::U8, vec![8], vec![0, 1, 0, 1, 0, 1, 0, 1]),
        ],
        &[],
    );
    let tflag = tensors_flag(&table);
    let err = validate_error(
        &dir.path().join("t.walk"),
        &[
            "--dataset",
            &tflag,
            "--model",
            "mlp",
            "--augment",
            "crop-flip",
        ],
    );
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "augment",
                ..
            }
        ),
        "{err}"
    );
    // The existing true/false spellings still parse.
    let cfg = args(
        &dir.path().join("u.walk"),
        &[&base[..], &["--augment", "true"]].concat(),
    )
    .validate()
    .unwrap();
    assert!(cfg.dataset.augment);
}

/// (5) Every bad file or setting is a named error before any training, and no output is left.
#[test]
fn bad_tensors_files_get_named_errors_before_training() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.walk");
    let p = |name: &str| dir.path().join(name);
    let good_x = || ("train_x", Dtype::U8, vec![10, 1, 4, 4], vec![1u8; 160]);
    let good_y = || {
        (
            "train_y",
            Dtype::U8,
            vec![10],
            vec![0u8, 1, 2, 0, 1, 2, 0, 1, 2, 0],
        )
    };
    let check = |file: &Path, extra: &[&str]| {
        let flag = tensors_flag(file);
        let all = [&["--dataset", flag.as_str(), "--model", "mlp"][..], extra].concat();
        args(&out, &all)
            .validate()
            .map(|cfg| record(&cfg, &StopFlag::default()))
    };
    let workload_err = |file: &Path, extra: &[&str]| -> WorkloadError {
        let e = match check(file, extra) {
            Err(e) | Ok(Err(e)) => e,
            Ok(Ok(s)) => panic!("recorded {s:?}"),
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&file.display().to_string()),
            "path missing from {msg}"
        );
        match e {
            RecordError::Workload(w) => w,
            other => panic!("{other}"),
        }
    };

    let missing = p("absent.safetensors");
    assert!(matches!(
        workload_err(&missing, &[]),
        WorkloadError::TensorsFileMissing { .. }
    ));
    std::fs::write(p("junk.safetensors"), b"certainly not a safetensors file").unwrap();
    assert!(matches!(
        workload_err(&p("junk.safetensors"), &[]),
        WorkloadError::NotSafetensors { .. }
    ));
    std::fs::write(p("tiny.safetensors"), b"{}").unwrap();
    assert!(matches!(
        workload_err(&p("tiny.safetensors"), &[]),
        WorkloadError::NotSafetensors { .. }
    ));

    write(&p("no_y.safetensors"), &[good_x()], &[]);
    let e = workload_err(&p("no_y.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::TensorMissing {
                tensor: "train_y",
                required_by: None,
                ..
            }
        ),
        "{e}"
    );
    write(&p("no_x.safetensors"), &[good_y()], &[]);
    let e = workload_err(&p("no_x.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::TensorMissing {
                tensor: "train_x",
                ..
            }
        ),
        "{e}"
    );
    write(
        &p("half_val.safetensors"),
        &[
            good_x(),
            good_y(),
            ("val_x", Dtype::U8, vec![2, 1, 4, 4], vec![0; 32]),
        ],
        &[],
    );
    let e = workload_err(&p("half_val.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::TensorMissing {
                tensor: "val_y",
                required_by: Some("val_x"),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("val_y") && e.to_string().contains("val_x"),
        "{e}"
    );

    write(
        &p("f64.safetensors"),
        &[("train_x", Dtype::F64, vec![10, 2], vec![0; 160]), good_y()],
        &[],
    );
    let e = workload_err(&p("f64.safetensors"), &[]);
    match &e {
        WorkloadError::TensorDtype {
            tensor,
            found,
            allowed,
            ..
        } => {
            assert_eq!((*tensor, found.as_str()), ("train_x", "F64"));
            assert!(
                allowed.contains("U8") && allowed.contains("F32"),
                "{allowed}"
            );
        }
        other => panic!("{other}"),
    }
    write(
        &p("float_labels.safetensors"),
        &[good_x(), ("train_y", Dtype::F32, vec![10], vec![0; 40])],
        &[],
    );
    let e = workload_err(&p("float_labels.safetensors"), &[]);
    assert!(
        matches!(&e, WorkloadError::TensorDtype { tensor: "train_y", allowed, .. } if allowed.contains("I64")),
        "{e}"
    );
    write(
        &p("mixed.safetensors"),
        &[
            good_x(),
            good_y(),
            ("test_x", Dtype::F32, vec![1, 1, 4, 4], vec![0; 64]),
            ("test_y", Dtype::U8, vec![1], vec![0]),
        ],
        &[],
    );
    let e = workload_err(&p("mixed.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::TensorDtype {
                tensor: "test_x",
                ..
            }
        ),
        "{e}"
    );

    write(
        &p("count.safetensors"),
        &[good_x(), ("train_y", Dtype::U8, vec![9], vec![0; 9])],
        &[],
    );
    let e = workload_err(&p("count.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::SampleCountMismatch {
                x_tensor: "train_x",
                x_samples: 10,
                y_tensor: "train_y",
                y_samples: 9,
                ..
            }
        ),
        "{e}"
    );
    write(
        &p("shape.safetensors"),
        &[
            good_x(),
            good_y(),
            ("test_x", Dtype::U8, vec![2, 1, 4, 5], vec![0; 40]),
            ("test_y", Dtype::U8, vec![2], vec![0; 2]),
        ],
        &[],
    );
    let e = workload_err(&p("shape.safetensors"), &[]);
    assert!(
        matches!(&e, WorkloadError::TensorShape { tensor: "test_x", found, .. } if found == &[2, 1, 4, 5]),
        "{e}"
    );
    write(
        &p("rank1.safetensors"),
        &[("train_x", Dtype::U8, vec![10], vec![0; 10]), good_y()],
        &[],
    );
    let e = workload_err(&p("rank1.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::TensorShape {
                tensor: "train_x",
                ..
            }
        ),
        "{e}"
    );
    write(
        &p("empty.safetensors"),
        &[
            ("train_x", Dtype::U8, vec![0, 4], vec![]),
            ("train_y", Dtype::U8, vec![0], vec![]),
        ],
        &[],
    );
    let e = workload_err(&p("empty.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::NoSamples {
                tensor: "train_x",
                ..
            }
        ),
        "{e}"
    );

    // Labels: outside the metadata's classes, negative, or outside --classes.
    write(
        &p("labels.safetensors"),
        &[good_x(), good_y()],
        &[(META_CLASSES, "2")],
    );
    let e = workload_err(&p("labels.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::LabelOutOfRange {
                tensor: "train_y",
                index: 2,
                value: 2,
                classes: 2,
                ..
            }
        ),
        "{e}"
    );
    let neg: Vec<i64> = vec![0, 1, 2, 0, 1, 2, -1, 1, 2, 0];
    write(
        &p("neg.safetensors"),
        &[good_x(), ("train_y", Dtype::I64, vec![10], i64_bytes(&neg))],
        &[],
    );
    let e = workload_err(&p("neg.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::LabelOutOfRange {
                tensor: "train_y",
                index: 6,
                value: -1,
                ..
            }
        ),
        "{e}"
    );
    write(
        &p("test_labels.safetensors"),
        &[
            good_x(),
            good_y(),
            ("test_x", Dtype::U8, vec![2, 1, 4, 4], vec![0; 32]),
            (
                "test_y",
                Dtype::U32,
                vec![2],
                [1u32, 5].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ],
        &[],
    );
    let e = workload_err(&p("test_labels.safetensors"), &["--classes", "3"]);
    assert!(
        matches!(
            e,
            WorkloadError::LabelOutOfRange {
                tensor: "test_y",
                index: 1,
                value: 5,
                classes: 3,
                ..
            }
        ),
        "{e}"
    );

    // Non-finite f32 inputs, by tensor and first index.
    let mut x = vec![0.5f32; 20];
    x[7] = f32::NAN;
    x[9] = f32::INFINITY;
    write(
        &p("nan.safetensors"),
        &[
            ("train_x", Dtype::F32, vec![10, 2], f32_bytes(&x)),
            good_y(),
        ],
        &[],
    );
    let e = workload_err(&p("nan.safetensors"), &[]);
    assert!(
        matches!(&e, WorkloadError::NonFiniteInput { tensor: "train_x", index, .. } if index == &[3, 1]),
        "{e}"
    );
    let mut v = vec![0.5f32; 4];
    v[2] = f32::NEG_INFINITY;
    write(
        &p("inf.safetensors"),
        &[
            ("train_x", Dtype::F32, vec![10, 2], f32_bytes(&[0.5; 20])),
            good_y(),
            ("val_x", Dtype::F32, vec![2, 2], f32_bytes(&v)),
            ("val_y", Dtype::U8, vec![2], vec![0, 1]),
        ],
        &[],
    );
    let e = workload_err(&p("inf.safetensors"), &[]);
    assert!(
        matches!(&e, WorkloadError::NonFiniteInput { tensor: "val_x", index, .. } if index == &[1, 0]),
        "{e}"
    );

    // Metadata and normalization.
    write(
        &p("meta.safetensors"),
        &[good_x(), good_y()],
        &[(META_MEAN, "0.1,zero")],
    );
    let e = workload_err(&p("meta.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::BadTensorsMetadata {
                key: "sgdwalk.mean",
                ..
            }
        ),
        "{e}"
    );
    write(&p("ok.safetensors"), &[good_x(), good_y()], &[]);
    let ok = tensors_flag(&p("ok.safetensors"));
    let err = validate_error(&out, &["--dataset", &ok, "--input-std", "0.5,0.5"]);
    assert!(
        matches!(
            err,
            RecordError::Workload(WorkloadError::BadNormalization {
                source_name: "--input-std",
                ..
            })
        ),
        "{err}"
    );
    let err = validate_error(&out, &["--dataset", &ok, "--input-std", "0"]);
    assert!(err.to_string().contains("--input-std"), "{err}");
    let err = validate_error(&out, &["--dataset", &ok, "--input-mean", "x"]);
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "input-mean",
                ..
            }
        ),
        "{err}"
    );
    let err = validate_error(&out, &["--dataset", "synthetic", "--classes", "3"]);
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "classes",
                ..
            }
        ),
        "{err}"
    );
    let err = validate_error(&out, &["--dataset", "tensors:"]);
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "dataset",
                ..
            }
        ),
        "{err}"
    );
    let err = validate_error(&out, &["--dataset", "tensors"]);
    assert!(
        matches!(
            err,
            RecordError::InvalidSetting {
                flag: "dataset",
                ..
            }
        ),
        "{err}"
    );

    // Built-in conv nets need square images; a table suits only the MLP.
    write(
        &p("table.safetensors"),
        &[
            ("train_x", Dtype::F32, vec![10, 6], f32_bytes(&[0.0; 60])),
            good_y(),
        ],
        &[],
    );
    let table = tensors_flag(&p("table.safetensors"));
    for model in ["small-cnn", "resnet20", "vgg11"] {
        let err = validate_error(&out, &["--dataset", &table, "--model", model]);
        assert!(
            matches!(err, RecordError::InvalidSetting { flag: "model", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("mlp"), "{err}");
    }
    let err = validate_error(&out, &["--dataset", &ok, "--model", "vgg11"]);
    assert!(err.to_string().contains("32, 32"), "{err}");
    assert!(!out.exists(), "no output for a refused run");
    // An unreadable (un-mappable) path: a folder named like a file.
    std::fs::create_dir(p("folder.safetensors")).unwrap();
    let e = workload_err(&p("folder.safetensors"), &[]);
    assert!(
        matches!(
            e,
            WorkloadError::DatasetIo { .. } | WorkloadError::NotSafetensors { .. }
        ),
        "{e}"
    );
}

/// (6) The analyzer loads the recorded path by default, finds the same bytes moved (a folder
/// holding the recorded name, or a renamed file), and refuses other bytes naming both sha256.
#[test]
fn analyzer_checks_the_file_by_sha256_wherever_it_is() {
    let _models = models_one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let file = home.join("set.safetensors");
    image_file(&file, 48, 16, 0, 1, 8);
    let rec = dir.path().join("r.walk");
    let flag = tensors_flag(&file);
    run(&args(
        &rec,
        &[
            "--dataset",
            &flag,
            "--model",
            "small-cnn",
            "--batch-size",
            "16",
            "--eval-splits",
            "",
        ],
    ));
    let analysis = [
        "--phases",
        "interp",
        "--eval",
        "batch,val",
        "--steps",
        "0..2",
    ];
    let s = run_analysis(&rec, &dir.path().join("a0"), &analysis);
    assert_eq!(s.nonfinite_losses, 0);

    // Moved: the recorded path is gone; a folder or a renamed file is accepted.
    let moved_dir = dir.path().join("elsewhere");
    std::fs::create_dir(&moved_dir).unwrap();
    std::fs::rename(&file, moved_dir.join("set.safetensors")).unwrap();
    let err = analysis_error(&rec, &dir.path().join("a1"), &analysis);
    assert!(
        matches!(
            err,
            AnalyzeError::Workload(WorkloadError::TensorsFileMissing { .. })
        ),
        "{err}"
    );
    let folder = moved_dir.display().to_string();
    run_analysis(
        &rec,
        &dir.path().join("a2"),
        &[&analysis[..], &["--data-dir", &folder]].concat(),
    );
    let renamed = moved_dir.join("renamed.safetensors");
    std::fs::rename(moved_dir.join("set.safetensors"), &renamed).unwrap();
    let renamed_arg = renamed.display().to_string();
    run_analysis(
        &rec,
        &dir.path().join("a3"),
        &[&analysis[..], &["--data-dir", &renamed_arg]].concat(),
    );

    // Other bytes of the same layout: refused, with both hashes in full.
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = other_dir.join("set.safetensors");
    image_file(&other, 48, 16, 0, 1, 8);
    let mut bytes = std::fs::read(&other).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&other, &bytes).unwrap();
    let sha = |p: &PathBuf| hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()));
    let other_arg = other_dir.display().to_string();
    let err = analysis_error(
        &rec,
        &dir.path().join("a4"),
        &[&analysis[..], &["--data-dir", &other_arg]].concat(),
    );
    assert!(matches!(err, AnalyzeError::DatasetMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&sha(&renamed)), "recorded hash missing: {msg}");
    assert!(msg.contains(&sha(&other)), "found hash missing: {msg}");
}

/// Recordings made before tensors datasets existed keep loading: their dataset descriptions
/// have no `tensors` field, and new built-in descriptions do not write one.
#[test]
fn dataset_descriptions_stay_backward_compatible() {
    let old = r#"{"name":"fashion-mnist","train_range":[0,640],"val_range":[59000,59200],"augment":false}"#;
    let spec: DatasetSpec = serde_json::from_str(old).unwrap();
    assert_eq!(spec.name, DatasetName::FashionMnist);
    assert!(spec.tensors.is_none());
    assert_eq!(serde_json::to_string(&spec).unwrap(), old);
    assert_eq!(
        spec.default_location(),
        Path::new("data").join("fashion-mnist")
    );
}
