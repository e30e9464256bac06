//! The workload crate: parameter counts, canonical state, loaders, augmentation, evaluation.

use std::io::Write;

use sgdwalk_workload::augment::{self, AugChoice};
use sgdwalk_workload::data;
use sgdwalk_workload::{
    BnPolicy, Dataset, DatasetName, DatasetSpec, Model, ModelSpec, Split, SyntheticSpec,
    WorkloadError, evaluate,
};
use tch::{Device, Kind, Tensor};

use crate::util::fashion_mnist_dir;

fn counts(spec: &ModelSpec) -> (usize, usize) {
    let m = Model::new(spec, Device::Cpu, 0).unwrap();
    let total = m.layout().len_elements();
    (m.parameter_count(), total - m.parameter_count())
}

#[test]
fn parameter_counts_match_the_paper() {
    assert_eq!(counts(&ModelSpec::paper_mlp()), (573_060, 1_700));
    assert_eq!(counts(&ModelSpec::vgg11()), (9_756_426, 5_504));
    assert_eq!(counts(&ModelSpec::resnet56()), (855_578, 4_064));
    assert_eq!(counts(&ModelSpec::resnet20()), (272_282, 1_376));
    assert_eq!(counts(&ModelSpec::small_cnn()), (26_746, 48));
}

#[test]
fn models_run_forward_with_expected_output_shape() {
    for (spec, shape) in [
        (ModelSpec::paper_mlp(), [4, 1, 28, 28]),
        (ModelSpec::small_cnn(), [4, 1, 28, 28]),
        (ModelSpec::resnet20(), [4, 3, 32, 32]),
        (ModelSpec::vgg11(), [4, 3, 32, 32]),
    ] {
        let m = Model::new(&spec, Device::Cpu, 1).unwrap();
        let y = m
            // Not randn: libtorch's global generator is shared with the tests that seed it.
            .forward_t(&Tensor::ones(shape, (Kind::Float, Device::Cpu)), false)
            .unwrap();
        assert_eq!(y.size(), vec![4, 10], "{spec:?}");
    }
}

#[test]
fn model_spec_round_trips_through_json_and_names() {
    for name in ModelSpec::NAMES {
        let spec = ModelSpec::from_name(name, 3, 32).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let back: ModelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(spec.short_name(), name);
    }
    assert!(matches!(
        ModelSpec::from_name("alexnet", 3, 32),
        Err(WorkloadError::UnknownModel { .. })
    ));
    let bad = ModelSpec::PreactResnet {
        depth: 21,
        in_channels: 3,
        classes: 10,
    };
    assert!(matches!(
        Model::new(&bad, Device::Cpu, 0),
        Err(WorkloadError::InvalidModel { .. })
    ));
}

#[test]
fn state_order_is_sorted_and_contiguous() {
    let m = Model::new(&ModelSpec::resnet20(), Device::Cpu, 3).unwrap();
    let entries = &m.layout().entries;
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
    let mut offset = 0;
    for e in entries {
        assert_eq!(e.offset_elements, offset);
        assert_eq!(e.len_elements as i64, e.shape.iter().product::<i64>());
        offset += e.len_elements;
    }
    assert!(
        entries
            .iter()
            .any(|e| e.name.ends_with("running_mean") && !e.trainable)
    );
}

#[test]
fn flatten_unflatten_round_trip_is_bit_exact() {
    let a = Model::new(&ModelSpec::small_cnn(), Device::Cpu, 1).unwrap();
    let b = Model::new(&ModelSpec::small_cnn(), Device::Cpu, 2).unwrap();
    let state_a = a.flatten().unwrap();
    assert_ne!(
        state_a,
        b.flatten().unwrap(),
        "different seeds give different θ_0"
    );
    b.load_flat(&state_a).unwrap();
    let back = b.flatten().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&state_a));
    // Arbitrary bit patterns (subnormals, negative zero, infinities) survive too.
    let weird: Vec<f32> = (0..state_a.len() as u32)
        .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0x7f7f_ffff | (i & 1) << 31))
        .chain([])
        .collect();
    b.load_flat(&weird).unwrap();
    assert_eq!(bits(&b.flatten().unwrap()), bits(&weird));
    // The same seed gives the same θ_0.
    let a2 = Model::new(&ModelSpec::small_cnn(), Device::Cpu, 1).unwrap();
    assert_eq!(bits(&a2.flatten().unwrap()), bits(&state_a));
    assert!(matches!(
        b.load_flat(&state_a[1..]),
        Err(WorkloadError::StateMismatch { .. })
    ));
}

#[test]
fn fashion_mnist_loads_with_paper_splits() {
    let spec = DatasetSpec::paper(DatasetName::FashionMnist);
    let d = Dataset::load(&spec, &fashion_mnist_dir()).unwrap();
    assert_eq!(d.pool.len(), 60_000);
    assert_eq!(d.test.len(), 10_000);
    assert_eq!(d.image_shape(), (1, 28, 28));
    let hist = d.test.labels.bincount::<Tensor>(None, 10);
    assert_eq!(Vec::<i64>::try_from(&hist).unwrap(), vec![1000; 10]);
    let hist = d.pool.labels.bincount::<Tensor>(None, 10);
    assert_eq!(Vec::<i64>::try_from(&hist).unwrap(), vec![6000; 10]);
    assert_eq!(d.split_ids(Split::Train).len(), 45_000);
    assert_eq!(
        d.split_ids(Split::Val),
        (50_000..60_000).collect::<Vec<u32>>()
    );
    assert_eq!(d.identity.files.len(), 4);
    // Identity hashes the uncompressed bytes: 16-byte header + 60000*784 pixels.
    assert_eq!(d.identity.files[0].file, "train-images-idx3-ubyte");
    assert_eq!(d.identity.files[0].len_bytes, 16 + 60_000 * 784);
    let (x, y) = d.batch(Split::Test, &[0, 1], None, Device::Cpu).unwrap();
    assert_eq!(x.size(), vec![2, 1, 28, 28]);
    // Normalized as x - 0.5: values in [-0.5, 0.5].
    assert!(x.max().double_value(&[]) <= 0.5 && x.min().double_value(&[]) >= -0.5);
    // The first test image is an ankle boot (class 9), as in every copy of the dataset.
    assert_eq!(y.int64_value(&[0]), 9);
}

fn write_idx(dir: &std::path::Path, name: &str, magic: u32, dims: &[u32], body: &[u8], gz: bool) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(body);
    if gz {
        let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
    } else {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn write_small_idx_set(dir: &std::path::Path, gz: bool) {
    let img: Vec<u8> = (0..5 * 4 * 4).map(|i| i as u8).collect();
    write_idx(dir, "train-images-idx3-ubyte", 0x803, &[5, 4, 4], &img, gz);
    write_idx(
        dir,
        "train-labels-idx1-ubyte",
        0x801,
        &[5],
        &[0, 1, 2, 3, 4],
        gz,
    );
    write_idx(
        dir,
        "t10k-images-idx3-ubyte",
        0x803,
        &[2, 4, 4],
        &img[..32],
        gz,
    );
    write_idx(dir, "t10k-labels-idx1-ubyte", 0x801, &[2], &[9, 8], gz);
}

#[test]
fn idx_loader_reads_plain_and_gz_identically() {
    let plain = tempfile::tempdir().unwrap();
    let gz = tempfile::tempdir().unwrap();
    write_small_idx_set(plain.path(), false);
    write_small_idx_set(gz.path(), true);
    let (a, da) = data::load_idx_pair(plain.path(), "train").unwrap();
    let (b, db) = data::load_idx_pair(gz.path(), "train").unwrap();
    assert_eq!(da, db, "identity does not depend on compression");
    assert!(a.images.equal(&b.images) && a.labels.equal(&b.labels));
    assert_eq!(a.images.size(), vec![5, 1, 4, 4]);
    assert_eq!(a.images.int64_value(&[1, 0, 0, 1]), 17);
    assert_eq!(
        Vec::<i64>::try_from(&a.labels).unwrap(),
        vec![0, 1, 2, 3, 4]
    );
}

#[test]
fn idx_loader_names_truncated_wrong_magic_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write_small_idx_set(dir.path(), false);
    let img_path = dir.path().join("train-images-idx3-ubyte");
    let full = std::fs::read(&img_path).unwrap();
    std::fs::write(&img_path, &full[..full.len() - 3]).unwrap();
    let err = data::load_idx_pair(dir.path(), "train").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            WorkloadError::DatasetFormat {
                field: "file length",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("96 bytes")
            && msg.contains("93 bytes")
            && msg.contains("train-images-idx3-ubyte"),
        "{msg}"
    );

    let mut wrong = full.clone();
    wrong[3] = 0x01;
    std::fs::write(&img_path, &wrong).unwrap();
    let err = data::load_idx_pair(dir.path(), "train").unwrap_err();
    assert!(
        matches!(err, WorkloadError::DatasetFormat { field: "magic", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0x00000803"), "{err}");

    std::fs::remove_file(&img_path).unwrap();
    let err = data::load_idx_pair(dir.path(), "train").unwrap_err();
    assert!(
        matches!(err, WorkloadError::DatasetFileMissing { .. }),
        "{err}"
    );

    std::fs::write(&img_path, &full).unwrap();
    write_idx(
        dir.path(),
        "train-labels-idx1-ubyte",
        0x801,
        &[4],
        &[0, 1, 2, 3],
        false,
    );
    let err = data::load_idx_pair(dir.path(), "train").unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::DatasetFormat {
                field: "label count",
                ..
            }
        ),
        "{err}"
    );
}

fn cifar_records(n: usize, label_of: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(label_of(i));
        out.extend((0..3072).map(|p| ((p + i * 7) % 256) as u8));
    }
    out
}

#[test]
fn cifar_loader_accepts_any_record_count_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data_batch_1.bin"),
        cifar_records(20, |i| (i % 10) as u8),
    )
    .unwrap();
    std::fs::write(dir.path().join("data_batch_2.bin"), cifar_records(7, |_| 3)).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), cifar_records(5, |_| 1)).unwrap();
    let spec = DatasetSpec {
        train_range: (0, 20),
        val_range: (20, 27),
        ..DatasetSpec::paper(DatasetName::Cifar10)
    };
    let d = Dataset::load(&spec, dir.path()).unwrap();
    assert_eq!((d.pool.len(), d.test.len()), (27, 5));
    assert_eq!(d.image_shape(), (3, 32, 32));
    assert_eq!(d.pool.labels.int64_value(&[21]), 3);
    // Channel planes: pixel (c, y, x) of record i is byte 1 + c*1024 + y*32 + x.
    assert_eq!(
        d.pool.images.int64_value(&[1, 1, 0, 2]),
        ((1024 + 2 + 7) % 256) as i64
    );
    assert_eq!(d.identity.files.len(), 3);

    std::fs::write(
        dir.path().join("test_batch.bin"),
        &cifar_records(5, |_| 1)[..3073 * 5 - 1],
    )
    .unwrap();
    let err = Dataset::load(&spec, dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::DatasetFormat {
                field: "file length",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
    std::fs::write(dir.path().join("test_batch.bin"), cifar_records(5, |_| 12)).unwrap();
    let err = Dataset::load(&spec, dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::DatasetFormat {
                field: "label value",
                ..
            }
        ),
        "{err}"
    );

    // A split past the end of the data is refused up front.
    std::fs::write(dir.path().join("test_batch.bin"), cifar_records(5, |_| 1)).unwrap();
    let too_far = DatasetSpec {
        train_range: (0, 45_000),
        ..spec
    };
    assert!(matches!(
        Dataset::load(&too_far, dir.path()),
        Err(WorkloadError::SampleOutOfRange { .. })
    ));
}

#[test]
fn augmentation_replays_exactly_from_choices() {
    let images = Tensor::arange(2 * 3 * 8 * 8, (Kind::Float, Device::Cpu)).view([2, 3, 8, 8]);
    let choices = augment::choices_for_step(42, 7, 2);
    assert_eq!(
        choices,
        augment::choices_for_step(42, 7, 2),
        "same seed and step, same choices"
    );
    assert_ne!(
        augment::choices_for_step(42, 7, 64),
        augment::choices_for_step(42, 8, 64),
        "another step draws other choices"
    );
    let a = augment::apply(&images, &choices).unwrap();
    let b = augment::apply(&images, &choices).unwrap();
    assert!(a.equal(&b));
    // Identity choice leaves the image unchanged.
    let id = augment::apply(&images, &[AugChoice::IDENTITY; 2]).unwrap();
    assert!(id.equal(&images));
    // dx = 5 shifts content left by one; the last column comes from the zero padding.
    let c = AugChoice {
        dx: 5,
        dy: 4,
        flip: false,
    };
    let shifted = augment::apply(&images, &[c, c]).unwrap();
    assert!(shifted.narrow(3, 0, 7).equal(&images.narrow(3, 1, 7)));
    assert_eq!(
        shifted
            .narrow(3, 7, 1)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    let f = AugChoice {
        flip: true,
        ..AugChoice::IDENTITY
    };
    let flipped = augment::apply(&images, &[f, f]).unwrap();
    assert!(flipped.equal(&images.flip([3])));
    // Bytes round trip, invalid bytes are named.
    let bytes = augment::encode_choices(&choices);
    assert_eq!(bytes.len(), 2 * sgdwalk_workload::AUG_BYTES_PER_SAMPLE);
    assert_eq!(augment::decode_choices(&bytes).unwrap(), choices);
    assert!(augment::decode_choices(&[0x9f, 0]).is_err());
    assert!(augment::decode_choices(&[0x44]).is_err());
}

fn tiny_dataset() -> Dataset {
    Dataset::load(
        &DatasetSpec::synthetic(SyntheticSpec {
            channels: 1,
            image_size: 8,
            classes: 10,
            train_samples: 50,
            test_samples: 30,
            seed: 5,
        }),
        std::path::Path::new("."),
    )
    .unwrap()
}

#[test]
fn evaluation_returns_exact_means_on_a_known_case() {
    let d = tiny_dataset();
    let spec = ModelSpec::Mlp {
        input_features: 64,
        hidden: vec![16],
        classes: 10,
        batch_norm: true,
    };
    let m = Model::new(&spec, Device::Cpu, 0).unwrap();
    // Zero weights: every logit is 0, each sample's loss is ln 10, argmax is class 0.
    m.load_flat(&vec![0.0; m.layout().len_elements()]).unwrap();
    let ids = d.split_ids(Split::Test);
    let labels = Vec::<i64>::try_from(&d.test.labels).unwrap();
    let zeros = labels.iter().filter(|&&l| l == 0).count() as u64;
    for policy in [BnPolicy::EvalMode, BnPolicy::TrainMode] {
        // 30 samples in batches of 7: the last batch is short, the mean must still be exact.
        let s = evaluate(&m, &d, Split::Test, &ids, None, 7, policy).unwrap();
        assert_eq!(s.samples, 30);
        assert!(
            (s.mean_loss() - 10f64.ln()).abs() < 1e-6,
            "{}",
            s.mean_loss()
        );
        assert_eq!(s.correct, zeros);
        assert!(s.loss_stderr() < 1e-6);
    }
}

#[test]
fn train_mode_evaluation_leaves_running_stats_unchanged() {
    let d = tiny_dataset();
    let m = Model::new(
        &ModelSpec::SmallCnn {
            in_channels: 1,
            image_size: 8,
            classes: 10,
        },
        Device::Cpu,
        0,
    )
    .unwrap();
    let before = m.flatten().unwrap();
    let ids = d.split_ids(Split::Train);
    let s = evaluate(&m, &d, Split::Train, &ids, None, 16, BnPolicy::TrainMode).unwrap();
    assert_eq!(s.samples, ids.len() as u64);
    assert_eq!(m.flatten().unwrap(), before);
    // Train-mode and eval-mode differ on an untrained net with default running stats.
    let e = evaluate(&m, &d, Split::Train, &ids, None, 16, BnPolicy::EvalMode).unwrap();
    assert_ne!(s.loss_sum, e.loss_sum);
    assert!(matches!(
        evaluate(&m, &d, Split::Train, &[], None, 16, BnPolicy::EvalMode),
        Err(WorkloadError::EmptyEvaluation)
    ));
    assert!(matches!(
        d.batch(Split::Test, &[30], None, Device::Cpu),
        Err(WorkloadError::SampleOutOfRange { .. })
    ));
}

#[test]
fn nonfinite_losses_are_counted_not_hidden() {
    let d = tiny_dataset();
    let spec = ModelSpec::Mlp {
        input_features: 64,
        hidden: vec![],
        classes: 10,
        batch_norm: false,
    };
    let m = Model::new(&spec, Device::Cpu, 0).unwrap();
    m.load_flat(&vec![f32::NAN; m.layout().len_elements()])
        .unwrap();
    let s = evaluate(
        &m,
        &d,
        Split::Test,
        &d.split_ids(Split::Test),
        None,
        8,
        BnPolicy::EvalMode,
    )
    .unwrap();
    assert_eq!(s.nonfinite, 30);
    assert!(s.mean_loss().is_nan());
}
