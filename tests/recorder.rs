//! The recorder library: a tiny real run, bit-exact replay of recorded steps, determinism,
//! resume after a simulated kill, and the errors raised before any training.

use std::path::Path;

use clap::{CommandFactory, FromArgMatches, Parser};
use sgdwalk_format::Reader;
use sgdwalk_recorder::train::Trainer;
use sgdwalk_recorder::{RecordArgs, RecordError, StopFlag, record, run_description};
use sgdwalk_workload::{Dataset, WorkloadError};

use crate::util::fashion_mnist_dir;

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: RecordArgs,
}

/// Recorder arguments for `out` plus extra flags.
pub fn args(out: &Path, extra: &[&str]) -> RecordArgs {
    let mut argv = vec![
        "sgdwalk-record".to_string(),
        "--quiet".into(),
        "--threads".into(),
        "1".into(),
    ];
    argv.push("--out".into());
    argv.push(out.display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    let matches = Cli::command().get_matches_from(argv);
    let mut args = Cli::from_arg_matches(&matches).unwrap().args;
    // As the binary does: --resume compares the flags given with the recording.
    args.note_given(&matches);
    args
}

/// A small CNN on 640 Fashion-MNIST training images: 10 steps per epoch.
pub fn fashion_args(out: &Path, extra: &[&str]) -> RecordArgs {
    let dir = fashion_mnist_dir().display().to_string();
    let mut all = vec![
        "--dataset",
        "fashion-mnist",
        "--model",
        "small-cnn",
        "--train-samples",
        "0..640",
        "--val-samples",
        "59000..59200",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--keyframe-interval",
        "8",
        "--eval-batch-size",
        "500",
        "--data-dir",
    ];
    all.push(&dir);
    all.extend_from_slice(extra);
    args(out, &all)
}

/// Synthetic data with augmentation, so augmentation replay is exercised too.
pub fn synthetic_args(out: &Path, extra: &[&str]) -> RecordArgs {
    let mut all = vec![
        "--dataset",
        "synthetic",
        "--synthetic-samples",
        "400",
        "--synthetic-size",
        "16",
        "--model",
        "small-cnn",
        "--batch-size",
        "32",
        "--augment",
        "true",
        "--lr",
        "0.05",
        "--keyframe-interval",
        "8",
        "--eval-splits",
        "val,test",
    ];
    all.extend_from_slice(extra);
    args(out, &all)
}

pub fn run(args: &RecordArgs) -> sgdwalk_recorder::RecordSummary {
    record(&args.validate().unwrap(), &StopFlag::default()).unwrap()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn tiny_fashion_mnist_run_verifies_and_records_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.walk");
    let summary = run(&fashion_args(&out, &["--epochs", "2"]));
    assert_eq!(summary.updates, 20);
    assert_eq!(summary.steps_recorded, 21, "θ_0..θ_20");
    assert!(summary.compression_ratio > 1.0, "{summary:?}");
    let report = sgdwalk_format::verify(&out).unwrap();
    assert!(report.is_clean(), "{report}");
    let mut reader = Reader::open(&out).unwrap();
    assert!(reader.is_finished());
    assert_eq!(reader.steps(), (0..=20).collect::<Vec<u64>>().as_slice());
    assert_eq!(reader.consecutive_pairs(), (0..20).collect::<Vec<u64>>());
    let desc = run_description(reader.header(), &out).unwrap();
    assert_eq!(desc.steps_per_epoch, 10);
    assert_eq!(
        desc.layout.len_elements() as u64,
        reader.header().state_len_elements
    );
    // Every step has its 64 distinct training ids; the last state has none.
    for t in 0..20 {
        let info = reader.step_info(t).unwrap();
        assert_eq!(info.sample_ids.len(), 64, "step {t}");
        let mut ids = info.sample_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|&i| i < 640));
        assert!(info.scalars.minibatch_loss.unwrap().is_finite());
        assert!(info.scalars.grad_norm.unwrap() > 0.0);
        assert_eq!(info.scalars.learning_rate, Some(0.05));
    }
    let last = reader.step_info(20).unwrap();
    // No update follows the last state: its update scalars are absent, its wall time is not.
    assert!(last.sample_ids.is_empty());
    assert_eq!(
        last.scalars,
        sgdwalk_format::StepScalars {
            wall_time_secs: last.scalars.wall_time_secs,
            ..sgdwalk_format::StepScalars::absent()
        }
    );
    assert!(last.scalars.wall_time_secs.is_some_and(f64::is_finite));
    // One epoch = a permutation of the training split.
    let mut epoch0: Vec<u32> = (0..10)
        .flat_map(|t| reader.step_info(t).unwrap().sample_ids)
        .collect();
    epoch0.sort_unstable();
    assert_eq!(epoch0, (0..640).collect::<Vec<u32>>());
    // Per-epoch evaluations, train/val/test, after steps 10 and 20.
    let epochs = reader.epochs().unwrap();
    assert_eq!(
        epochs.iter().map(|e| (e.epoch, e.step)).collect::<Vec<_>>(),
        vec![(1, 10), (2, 20)]
    );
    let splits: Vec<&str> = epochs[1].evals.iter().map(|e| e.split.as_str()).collect();
    assert_eq!(splits, ["train", "val", "test"]);
    assert_eq!(epochs[1].evals[2].samples, 10_000);
    assert!(epochs[1].evals[2].accuracy > 0.3, "{:?}", epochs[1]);
    // The recorded update norm is the norm of θ_{t+1} − θ_t over the parameters.
    let layout = desc.layout.clone();
    let a = reader.state(3).unwrap();
    let b = reader.state(4).unwrap();
    let mut sq = 0.0f64;
    for e in layout.entries.iter().filter(|e| e.trainable) {
        for i in e.offset_elements..e.offset_elements + e.len_elements {
            sq += (f64::from(b[i]) - f64::from(a[i])).powi(2);
        }
    }
    let recorded = reader.step_info(3).unwrap().scalars.update_norm.unwrap();
    assert!(
        (sq.sqrt() - recorded).abs() <= 1e-4 * recorded,
        "{} vs {recorded}",
        sq.sqrt()
    );
}

/// Replays every recorded pair of the recording `out` with the data at `data_dir`: θ_0 from the
/// init seed, then each step's plan (ids, augmentation) equals the recorded one and re-running
/// it from θ_t gives θ_{t+1} bit-exactly. Returns (pairs, pairs with augmentation choices).
pub fn replay_pairs_bit_exactly(out: &Path, data_dir: &Path) -> (usize, usize) {
    let mut reader = Reader::open(out).unwrap();
    let desc = run_description(reader.header(), out).unwrap();
    let data = Dataset::load(&desc.dataset, data_dir).unwrap();
    let module = sgdwalk_analyzer::replay::recorded_module(&reader, &desc, out).unwrap();
    let mut trainer = Trainer::new(desc, data, tch::Device::Cpu, module.as_deref()).unwrap();
    assert_eq!(
        bits(&trainer.model.flatten().unwrap()),
        bits(&reader.state(0).unwrap()),
        "θ_0 from the init seed (or the module)"
    );
    let (mut pairs, mut augmented) = (0, 0);
    for t in reader.consecutive_pairs() {
        let info = reader.step_info(t).unwrap();
        let plan = trainer.plan(t);
        assert_eq!(plan.sample_ids, info.sample_ids, "ids of step {t}");
        assert_eq!(
            plan.augmentation_bytes(),
            info.augmentation,
            "augmentation of step {t}"
        );
        trainer.model.load_flat(&reader.state(t).unwrap()).unwrap();
        trainer.apply(&plan).unwrap();
        assert_eq!(
            bits(&trainer.model.flatten().unwrap()),
            bits(&reader.state(t + 1).unwrap()),
            "θ_{} from θ_{t}",
            t + 1
        );
        pairs += 1;
        augmented += usize::from(!info.augmentation.is_empty());
    }
    (pairs, augmented)
}

/// Re-running step t from θ_t on the recorded batch gives θ_{t+1} bit-exactly (plain SGD with
/// weight decay; augmentation on).
#[test]
fn replaying_a_recorded_step_reproduces_the_next_state_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.walk");
    let a = synthetic_args(&out, &["--epochs", "2"]);
    run(&a);
    let cfg = a.validate().unwrap();
    let (pairs, augmented) = replay_pairs_bit_exactly(&out, &cfg.data_dir);
    assert_eq!(
        (pairs, augmented),
        (24, 24),
        "every step replayed, with augmentation"
    );
}

/// Decoded contents, without the documented run-specific fields (run id, creation time, wall
/// times, host and start time in the provenance).
fn contents(path: &Path) -> Vec<String> {
    let mut r = Reader::open(path).unwrap();
    let mut desc = run_description(r.header(), path).unwrap();
    desc.provenance.started_unix_secs = 0;
    desc.provenance.hostname.clear();
    let mut out = vec![
        format!("{desc:?}"),
        format!("{:?}", r.header().layout),
        format!("{:?}", r.epochs().unwrap()),
    ];
    for t in r.steps().to_vec() {
        let mut info = r.step_info(t).unwrap();
        info.scalars.wall_time_secs = None;
        let f32_bits = |v: Option<f64>| v.map(|v| (v as f32).to_bits());
        out.push(format!(
            "{t} {:?} {:?} {:?}",
            info.sample_ids,
            info.augmentation,
            [
                info.scalars.learning_rate,
                info.scalars.minibatch_loss,
                info.scalars.grad_norm,
                info.scalars.update_norm,
            ]
            .map(f32_bits)
        ));
        out.push(format!("{:?}", bits(&r.state(t).unwrap())));
        if let Some((buf, d)) = r.resume_state(t).unwrap() {
            out.push(format!("resume {t} {d} {:?}", bits(&buf)));
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.walk"),
        dir.path().join("b.walk"),
        dir.path().join("c.walk"),
    );
    run(&synthetic_args(&a, &["--optimizer", "momentum"]));
    run(&synthetic_args(&b, &["--optimizer", "momentum"]));
    run(&synthetic_args(
        &c,
        &["--optimizer", "momentum", "--seed", "7"],
    ));
    let first = contents(&a);
    assert_eq!(first, contents(&b));
    assert_ne!(first, contents(&c));
}

#[test]
fn resume_after_a_kill_equals_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // Nesterov resumes with momentum buffers; plain SGD with none.
    for optimizer in ["nesterov", "sgd"] {
        let full = dir.path().join(format!("full-{optimizer}.walk"));
        let extra = [
            "--optimizer",
            optimizer,
            "--epochs",
            "3",
            "--weight-decay",
            "5e-4",
        ];
        run(&synthetic_args(&full, &extra));
        let expected = contents(&full);
        let bytes = std::fs::read(&full).unwrap();
        let len = bytes.len() as u64;
        // Cut points in the first, middle and last third: a writer killed there leaves this prefix.
        for (i, cut) in [len / 5, len / 2, len * 4 / 5].into_iter().enumerate() {
            let killed = dir.path().join(format!("killed-{optimizer}-{i}.walk"));
            std::fs::write(&killed, &bytes[..cut as usize]).unwrap();
            let mut a = synthetic_args(&killed, &extra);
            a.resume = true;
            let s = run(&a);
            assert!(s.resumed_from_step.is_some());
            assert_eq!(
                contents(&killed),
                expected,
                "{optimizer}, cut at byte {cut}"
            );
        }
    }
}

#[test]
fn stop_flag_leaves_a_finished_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.walk");
    let cfg = synthetic_args(&out, &["--epochs", "2"]).validate().unwrap();
    let stop = StopFlag::default();
    stop.requested
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let s = record(&cfg, &stop).unwrap();
    assert_eq!(s.interrupted_by_signal, Some(0));
    assert_eq!(s.updates, 0);
    let r = Reader::open(&out).unwrap();
    assert!(r.is_finished());
    assert_eq!(r.steps(), &[0]);
}

#[test]
fn sparse_policies_keep_consecutive_windows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.walk");
    run(&synthetic_args(
        &out,
        &["--epochs", "2", "--record", "window:2,7"],
    ));
    let r = Reader::open(&out).unwrap();
    // 360 training samples / 32 = 12 steps per epoch, 24 updates.
    assert_eq!(r.steps(), &[0, 1, 2, 7, 8, 9, 14, 15, 16, 21, 22, 23, 24]);
    assert_eq!(r.consecutive_pairs(), vec![0, 1, 7, 8, 14, 15, 21, 22, 23]);
    let out2 = dir.path().join("e.walk");
    run(&synthetic_args(
        &out2,
        &["--epochs", "3", "--record", "epochs:2"],
    ));
    let r = Reader::open(&out2).unwrap();
    // θ_0, epoch 2 with the state after its last update, and the final state (kept always).
    let expected: Vec<u64> = std::iter::once(0).chain(12..=24).chain([36]).collect();
    assert_eq!(r.steps(), expected.as_slice());
}

#[test]
fn full_batch_gd_and_noise_runs_record_one_step_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let gd = dir.path().join("gd.walk");
    let gd_args = [
        "--epochs",
        "3",
        "--full-batch",
        "--batch-size",
        "100",
        "--augment",
        "false",
    ];
    run(&synthetic_args(&gd, &gd_args));
    let mut r = Reader::open(&gd).unwrap();
    assert_eq!(r.steps(), &[0, 1, 2, 3]);
    assert_eq!(r.step_info(0).unwrap().sample_ids.len(), 360);
    // Deterministic full-batch GD: the same step twice gives the same update.
    let desc = run_description(r.header(), &gd).unwrap();
    let data = Dataset::load(&desc.dataset, Path::new(".")).unwrap();
    let mut t = Trainer::new(desc, data, tch::Device::Cpu, None).unwrap();
    t.model.load_flat(&r.state(1).unwrap()).unwrap();
    let plan = t.plan(1);
    t.apply(&plan).unwrap();
    assert_eq!(
        bits(&t.model.flatten().unwrap()),
        bits(&r.state(2).unwrap())
    );

    let noisy = dir.path().join("noise.walk");
    run(&synthetic_args(
        &noisy,
        &[&gd_args[..], &["--noise-std", "0.01"]].concat(),
    ));
    let mut n = Reader::open(&noisy).unwrap();
    assert_eq!(
        bits(&n.state(0).unwrap()),
        bits(&r.state(0).unwrap()),
        "same θ_0"
    );
    assert_ne!(
        bits(&n.state(1).unwrap()),
        bits(&r.state(1).unwrap()),
        "noise changes the update"
    );
    assert_eq!(
        n.step_info(0).unwrap().scalars.grad_norm,
        r.step_info(0).unwrap().scalars.grad_norm
    );
}

#[test]
fn every_optimizer_and_schedule_trains() {
    let dir = tempfile::tempdir().unwrap();
    for (i, extra) in [
        &["--optimizer", "adam", "--lr", "0.001"][..],
        &[
            "--optimizer",
            "adamw",
            "--lr",
            "0.001",
            "--weight-decay",
            "0.01",
        ],
        &[
            "--optimizer",
            "momentum",
            "--decoupled-wd",
            "--schedule",
            "step:1,0.5",
        ],
        &[
            "--optimizer",
            "nesterov",
            "--schedule",
            "cosine",
            "--warmup-steps",
            "5",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("o{i}.walk"));
        let s = run(&synthetic_args(
            &out,
            &[extra, &["--epochs", "2"][..]].concat(),
        ));
        assert_eq!(s.updates, 24);
        let r = Reader::open(&out).unwrap();
        let lrs: Vec<f64> = (0..24)
            .map(|t| r.step_info(t).unwrap().scalars.learning_rate.unwrap())
            .collect();
        if extra.contains(&"step:1,0.5") {
            assert_eq!((lrs[0], lrs[11], lrs[12]), (0.05, 0.05, 0.025));
        }
        if extra.contains(&"cosine") {
            assert!(
                (lrs[0] - 0.05 / 5.0).abs() < 1e-12,
                "warm-up starts at lr/5: {}",
                lrs[0]
            );
            assert!(lrs[23] < lrs[10]);
        }
        let ep = r.epochs().unwrap();
        assert!(
            ep.last().unwrap().evals.iter().all(|e| e.loss.is_finite()),
            "{extra:?}"
        );
    }
}

#[test]
fn bad_settings_fail_before_training_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.walk");
    std::fs::write(&out, b"precious").unwrap();
    let err = record(
        &synthetic_args(&out, &[]).validate().unwrap(),
        &StopFlag::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RecordError::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious", "nothing lost");

    let err = synthetic_args(&out, &["--model", "alexnet"])
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::Workload(WorkloadError::UnknownModel { .. })
        ),
        "{err}"
    );

    let err = synthetic_args(&out, &["--device", "cuda:99"])
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("cuda:99"), "{err}");

    let missing = dir.path().join("nodata");
    let a = args(
        &dir.path().join("y.walk"),
        &[
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            missing.to_str().unwrap(),
        ],
    );
    let err = record(&a.validate().unwrap(), &StopFlag::default()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::Workload(WorkloadError::DatasetFileMissing { .. })
        ),
        "{err}"
    );
    assert!(!dir.path().join("y.walk").exists());

    let unwritable = out.join("inside-a-file.walk");
    let err = record(
        &synthetic_args(&unwritable, &[]).validate().unwrap(),
        &StopFlag::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RecordError::OutputUnwritable { .. }), "{err}");

    let err = synthetic_args(&out, &["--record", "window:9,3"])
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("--record"), "{err}");

    let mut a = synthetic_args(&dir.path().join("nothing.walk"), &[]);
    a.resume = true;
    let err = record(&a.validate().unwrap(), &StopFlag::default()).unwrap_err();
    assert!(matches!(err, RecordError::CannotResume { .. }), "{err}");
}

/// The copy stage that CUDA runs use (device snapshot → host → writer) keeps order and bits; on
/// the CPU a CPU tensor stands in for the device tensor.
#[test]
fn copy_stage_pipeline_writes_device_snapshots_in_order() {
    use sgdwalk_format::{CodecSettings, DType, Header, StepScalars, TensorSpec, Writer};
    use sgdwalk_recorder::sink::{Record, Sink, Snapshot};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.walk");
    let n = 1000usize;
    let layout = vec![TensorSpec {
        name: "w".into(),
        dtype: DType::F32,
        shape: vec![n as u64],
        offset_elements: 0,
    }];
    let header = Header::new([3; 16], 0, layout, 0, "{}".into(), CodecSettings::default()).unwrap();
    let writer = Writer::create(&path, header, Default::default()).unwrap();
    let mut sink = Sink::start(writer, 2, path.clone(), true).unwrap();
    let states: Vec<Vec<f32>> = (0..12)
        .map(|t| (0..n).map(|i| (i as f32 * 0.01 + t as f32).sin()).collect())
        .collect();
    for (t, s) in states.iter().enumerate() {
        let state = if t % 2 == 0 {
            Snapshot::Device(tch::Tensor::from_slice(s))
        } else {
            Snapshot::Host(s.clone())
        };
        let scalars = StepScalars::all(0.1, t as f64, 1.0, 1.0, 0.0);
        sink.send(Record::Step {
            step: t as u64,
            state,
            sample_ids: vec![t as u32],
            augmentation: vec![],
            scalars,
        })
        .unwrap();
    }
    let summary = sink.finish().unwrap();
    assert_eq!(summary.steps, 12);
    let mut r = Reader::open(&path).unwrap();
    for (t, s) in states.iter().enumerate() {
        assert_eq!(bits(&r.state(t as u64).unwrap()), bits(s), "step {t}");
        assert_eq!(r.step_info(t as u64).unwrap().sample_ids, vec![t as u32]);
    }
}

/// The device snapshot path (ring buffers, copy stage with markers, host buffers the writer
/// encodes from) run on the CPU with CPU tensors standing in: the same run through it and
/// through the host path decodes to the same states bit for bit, and to the same recording.
/// A ring of one buffer (training waits for every copy) and a resumed ring run agree too.
#[test]
fn ring_snapshot_path_records_the_host_paths_states_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (host, ring, ring1) = (
        dir.path().join("host.walk"),
        dir.path().join("ring.walk"),
        dir.path().join("ring1.walk"),
    );
    let common = [
        "--optimizer",
        "momentum",
        "--epochs",
        "2",
        "--encode-threads",
        "2",
    ];
    let h = run(&synthetic_args(
        &host,
        &[&common[..], &["--snapshot-path", "host"]].concat(),
    ));
    let r = run(&synthetic_args(
        &ring,
        &[
            &common[..],
            &["--snapshot-path", "ring", "--snapshot-ring", "3"],
        ]
        .concat(),
    ));
    let r1 = run(&synthetic_args(
        &ring1,
        &[
            &common[..],
            &[
                "--snapshot-path",
                "ring",
                "--snapshot-ring",
                "1",
                "--queue",
                "1",
            ],
        ]
        .concat(),
    ));
    assert_eq!(
        (h.snapshot_path.as_str(), h.snapshot_ring_buffers),
        ("host", 0)
    );
    assert_eq!(
        (r.snapshot_path.as_str(), r.snapshot_ring_buffers),
        ("ring", 3)
    );
    assert_eq!(r1.snapshot_ring_buffers, 1);
    let (mut rh, mut rr) = (Reader::open(&host).unwrap(), Reader::open(&ring).unwrap());
    let steps = rh.steps().to_vec();
    assert_eq!(steps.len() as u64, h.steps_recorded);
    assert!(steps.len() > 20, "{steps:?}");
    assert_eq!(rr.steps(), steps.as_slice());
    for &t in &steps {
        assert_eq!(
            bits(&rr.state(t).unwrap()),
            bits(&rh.state(t).unwrap()),
            "step {t}"
        );
    }
    let expected = contents(&host);
    assert_eq!(contents(&ring), expected);
    assert_eq!(contents(&ring1), expected);
    assert!(sgdwalk_format::verify(&ring).unwrap().is_clean());
    // Where the time went is accounted for on both paths.
    assert!(
        r.writer_copy_secs > 0.0 && h.writer_copy_secs == 0.0,
        "{r:?} {h:?}"
    );
    assert!(r.training_snapshot_secs > 0.0 && h.training_snapshot_secs > 0.0);
    // The summary names the path it took, and a copy stage only where there is one.
    let (rs, hs) = (r.to_string(), h.to_string());
    assert!(
        rs.contains("snapshots via the ring (3 buffers)") && rs.contains("copy thread"),
        "{rs}"
    );
    assert!(
        hs.contains("snapshots via host memory") && !hs.contains("copy thread"),
        "{hs}"
    );
    assert!(hs.contains("s of it encoding, 2 encode threads)"), "{hs}");
    // Ring memory: 3 buffers of the state's f32 words.
    let desc = run_description(rr.header(), &ring).unwrap();
    assert_eq!(
        r.snapshot_ring_device_bytes,
        3 * 4 * desc.layout.len_elements() as u64
    );
}

/// Device residuals (`--device-residual`, CPU tensors standing in for the device) record the
/// same recording as the host path, state for state and bit for bit, with the delta steps coded
/// from them; a run killed and resumed with them agrees too, and the flag is refused where the
/// device has nothing to compute into (the host path, byte-plane codecs).
#[test]
fn device_residuals_record_the_host_paths_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (host, device) = (dir.path().join("host.walk"), dir.path().join("dev.walk"));
    let common = [
        "--optimizer",
        "momentum",
        "--epochs",
        "3",
        "--encode-threads",
        "2",
    ];
    run(&synthetic_args(
        &host,
        &[&common[..], &["--snapshot-path", "host"]].concat(),
    ));
    let dev_flags = [
        &common[..],
        &[
            "--snapshot-path",
            "ring",
            "--snapshot-ring",
            "2",
            "--device-residual",
        ],
    ]
    .concat();
    let d = run(&synthetic_args(&device, &dev_flags));
    let (mut rh, mut rd) = (Reader::open(&host).unwrap(), Reader::open(&device).unwrap());
    let steps = rh.steps().to_vec();
    assert_eq!(rd.steps(), steps.as_slice());
    for &t in &steps {
        assert_eq!(
            bits(&rd.state(t).unwrap()),
            bits(&rh.state(t).unwrap()),
            "step {t}"
        );
    }
    assert_eq!(contents(&device), contents(&host));
    assert!(sgdwalk_format::verify(&device).unwrap().is_clean());
    // Every step is coded from the device's residual but the forced keyframes (every 8th,
    // K = 8) and a step after a keyframe the encoder chose itself (every chunk standalone):
    // the device cannot know of it and sends pred2 where the writer wants the zigzag delta, so
    // that step is encoded on the host.
    assert!(!d.device_residual_refused, "{d:?}");
    let is_key = |t: u64| rd.step_info(t).unwrap().keyframe;
    let forced = steps.iter().filter(|&&t| t % 8 == 0).count();
    let after_chosen = steps
        .windows(2)
        .filter(|w| w[0] % 8 != 0 && is_key(w[0]) && w[1] == w[0] + 1 && w[1] % 8 != 0)
        .count();
    assert_eq!(
        d.device_residual_steps as usize,
        steps.len() - forced - after_chosen,
        "{d:?}"
    );
    assert!(d.device_residual_steps > 20, "{d:?}");
    let mut pred2_chunks = 0;
    for &t in &steps {
        for c in rd.chunk_table(t).unwrap() {
            pred2_chunks += usize::from(c.codec == sgdwalk_format::CodecId::Pred2Split);
        }
    }
    assert!(
        pred2_chunks > 10,
        "momentum steps take pred2: {pred2_chunks}"
    );
    let text = d.to_string();
    assert!(
        text.contains(&format!(
            "device residuals: {} of {} steps coded from them",
            d.device_residual_steps, d.steps_recorded
        )),
        "{text}"
    );
    // Each ring buffer holds the state and 4.25 bytes per padded chunk word after it; the
    // device holds two bases (pred2) besides.
    let n = run_description(rd.header(), &device)
        .unwrap()
        .layout
        .len_elements() as u64;
    let chunk = u64::from(rd.header().codec.chunk_len_elements);
    let padded = n.div_ceil(chunk) * chunk;
    let tail = padded / 4 + 4 * padded + 4 + 16 * n.div_ceil(chunk);
    assert_eq!(d.snapshot_ring_device_bytes, 2 * (4 * n + tail) + 2 * 4 * n);

    // Killed two thirds in and resumed with device residuals: the same recording.
    let bytes = std::fs::read(&host).unwrap();
    let killed = dir.path().join("killed.walk");
    std::fs::write(&killed, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut a = synthetic_args(&killed, &dev_flags);
    a.resume = true;
    let resumed = run(&a);
    assert!(resumed.device_residual_steps > 0, "{resumed:?}");
    assert_eq!(contents(&killed), contents(&host));

    for (extra, what) in [
        (&["--snapshot-path", "host"][..], "snapshot ring"),
        (
            &["--snapshot-path", "ring", "--split-streams", "false"][..],
            "split streams",
        ),
    ] {
        let out = dir.path().join("refused.walk");
        let err = synthetic_args(&out, &[extra, &["--device-residual"]].concat())
            .validate()
            .expect_err(what)
            .to_string();
        assert!(
            err.contains("device-residual") && err.contains(what),
            "{err}"
        );
        assert!(!out.exists());
    }
}

/// Split streams (the default) record the same states, bit for bit, as `--split-streams false`
/// (byte planes in one zstd frame), with the split-stream codecs (format 1.3's SPLIT_STREAMS
/// bit set, every delta chunk a split codec); a resumed plain recording stays plain (the
/// setting comes from the file, not the default).
#[test]
fn split_streams_record_the_same_states() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, split) = (dir.path().join("plain.walk"), dir.path().join("split.walk"));
    let extra = ["--epochs", "2", "--optimizer", "momentum"];
    run(&synthetic_args(
        &plain,
        &[&extra[..], &["--split-streams", "false"]].concat(),
    ));
    run(&synthetic_args(&split, &extra));
    let (mut rp, mut rs) = (Reader::open(&plain).unwrap(), Reader::open(&split).unwrap());
    assert!(!rp.header().codec.split_streams);
    assert!(rs.header().codec.split_streams);
    let steps = rp.steps().to_vec();
    assert_eq!(rs.steps(), steps.as_slice());
    let mut split_chunks = 0;
    for &t in &steps {
        assert_eq!(
            bits(&rs.state(t).unwrap()),
            bits(&rp.state(t).unwrap()),
            "step {t}"
        );
        for c in rs.chunk_table(t).unwrap() {
            assert!(
                !rp.chunk_table(t)
                    .unwrap()
                    .iter()
                    .any(|p| p.codec.is_split())
            );
            if !c.codec.is_standalone() {
                assert!(c.codec.is_split(), "step {t}: {:?}", c.codec);
                split_chunks += 1;
            }
        }
    }
    assert!(split_chunks > 10, "{split_chunks}");
    assert!(sgdwalk_format::verify(&split).unwrap().is_clean());
    // Resumed with no codec flags: the recording's setting holds (plain, not the default).
    let bytes = std::fs::read(&plain).unwrap();
    let killed = dir.path().join("killed.walk");
    std::fs::write(&killed, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut a = synthetic_args(&killed, &extra);
    a.resume = true;
    run(&a);
    assert_eq!(contents(&killed), contents(&plain));
}

/// `--encode-threads` not given: 1 on the CPU (the cores train), all cores but two on CUDA
/// (at least 1); given, it is taken as is.
#[test]
fn encode_threads_default_depends_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.walk");
    assert_eq!(
        synthetic_args(&out, &["--device", "cpu"])
            .validate()
            .unwrap()
            .encode_threads,
        1
    );
    assert_eq!(
        synthetic_args(&out, &["--encode-threads", "0"])
            .validate()
            .unwrap()
            .encode_threads,
        0
    );
    let cores = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(
        sgdwalk_recorder::default_encode_threads(tch::Device::Cuda(0)),
        cores.saturating_sub(2).max(1)
    );
    assert_eq!(
        sgdwalk_recorder::default_encode_threads(tch::Device::Cpu),
        1
    );
}

/// `--threads` not given: libtorch's default (0) on the CPU, 2 on CUDA (the encode threads
/// take the other cores); given, it is taken as is.
#[test]
fn libtorch_threads_default_depends_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.walk");
    let mut not_given = synthetic_args(&out, &["--device", "cpu"]);
    // The test helper pins --threads 1; this one is about the flag left out.
    not_given.threads = None;
    assert_eq!(not_given.validate().unwrap().threads, 0);
    assert_eq!(
        synthetic_args(&out, &["--threads", "3"])
            .validate()
            .unwrap()
            .threads,
        3
    );
    assert_eq!(sgdwalk_recorder::default_threads(tch::Device::Cuda(0)), 2);
    assert_eq!(sgdwalk_recorder::default_threads(tch::Device::Cpu), 0);
}

/// `--snapshot-ring` outside 1..=64 is refused naming the flag, before anything is written.
#[test]
fn snapshot_ring_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.walk");
    for n in ["0", "65"] {
        let err = synthetic_args(&out, &["--snapshot-ring", n])
            .validate()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("snapshot-ring") && msg.contains(n), "{msg}");
    }
    assert!(!out.exists());
}

/// A run that records windows (issue 11): a copy killed midway and resumed with no flags but
/// --out records the same steps as the uninterrupted run (policy, keyframe interval, eval
/// batch size and splits come from the recording), as does one resumed with every flag
/// repeated or with flags that may differ.
#[test]
fn resume_of_a_sparse_run_without_flags_takes_every_setting_from_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.walk");
    let extra = [
        "--epochs",
        "3",
        "--record",
        "window:2,7",
        "--optimizer",
        "momentum",
        "--eval-batch-size",
        "37",
    ];
    run(&synthetic_args(&full, &extra));
    let expected = contents(&full);
    let bytes = std::fs::read(&full).unwrap();
    let len = bytes.len();
    let repeated: Vec<&str> =
        [&extra[..], &["--fsync", "record", "--encode-threads", "2"]].concat();
    for (i, cut) in [len / 3, len * 2 / 3].into_iter().enumerate() {
        for (how, flags) in [("no flags", &[][..]), ("flags repeated", &repeated[..])] {
            let killed = dir.path().join(format!("killed-{i}-{}.walk", flags.len()));
            std::fs::write(&killed, &bytes[..cut]).unwrap();
            let mut a = if flags.is_empty() {
                args(&killed, &[])
            } else {
                synthetic_args(&killed, flags)
            };
            a.resume = true;
            let s = run(&a);
            assert!(s.resumed_from_step.is_some_and(|t| t > 0), "{s:?}");
            assert_eq!(contents(&killed), expected, "{how}, cut at byte {cut}");
        }
    }
}

/// --resume with a flag that differs from the recording is refused before anything is
/// written, naming the flag and the recorded value; an equal flag is accepted.
#[test]
fn resume_refuses_flags_that_differ_from_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.walk");
    let extra = ["--epochs", "2", "--record", "window:2,7"];
    run(&synthetic_args(&full, &extra));
    let bytes = std::fs::read(&full).unwrap();
    let killed = dir.path().join("killed.walk");
    std::fs::write(&killed, &bytes[..bytes.len() / 2]).unwrap();
    let before = std::fs::read(&killed).unwrap();
    for (flags, flag, recorded) in [
        (&["--lr", "5"][..], "--lr 5", "0.05"),
        (&["--epochs", "9"], "--epochs 9", "2"),
        (&["--model", "mlp"], "--model mlp", "small-cnn"),
        (&["--record", "every"], "--record every", "window:2,7"),
        (
            &["--keyframe-interval", "32"],
            "--keyframe-interval 32",
            "8",
        ),
        (&["--eval-batch-size", "7"], "--eval-batch-size 7", "1000"),
        (&["--optimizer", "adam"], "--optimizer adam", "sgd"),
        (&["--beta1", "0.5"], "--beta1 0.5", "none (optimizer sgd)"),
        (&["--schedule", "cosine"], "--schedule cosine", "constant"),
        (&["--seed", "3"], "--seed 3", "another seed"),
        (&["--dataset", "mnist"], "--dataset mnist", "synthetic"),
        (
            &["--synthetic-samples", "800"],
            "--synthetic-samples 800",
            "400",
        ),
        (&["--eval-splits", "test"], "--eval-splits test", "val,test"),
        (&["--zstd-level", "3"], "--zstd-level 3", "1"),
        (
            &["--split-streams", "false"],
            "--split-streams false",
            "true",
        ),
        (&["--max-steps", "5"], "--max-steps 5", "24"),
        (&["--augment", "false"], "--augment false", "true"),
    ] {
        let mut a = synthetic_args(&killed, &[&extra[..], flags].concat());
        a.resume = true;
        let err = a.validate().unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, RecordError::ResumeConflict { .. }),
            "{flags:?}: {msg}"
        );
        assert!(
            msg.contains(flag) && msg.contains(recorded),
            "{flags:?}: {msg}"
        );
        assert_eq!(std::fs::read(&killed).unwrap(), before, "{flags:?}");
    }
    // Equal values (also written differently), and flags that may differ, are accepted.
    let mut a = synthetic_args(
        &killed,
        &[
            &extra[..],
            &[
                "--lr",
                "0.050",
                "--seed",
                "1111",
                "--max-steps",
                "1000",
                "--weight-decay",
                "1e-4",
                "--device",
                "cpu",
                "--queue",
                "3",
                "--snapshot-path",
                "ring",
                "--snapshot-ring",
                "2",
            ],
        ]
        .concat(),
    );
    a.resume = true;
    run(&a);
    assert_eq!(contents(&killed), contents(&full));
}

/// A file killed or stopped before its first resume point starts over from step 0 on
/// --resume, with the recorded settings (issue 11): stopped at once, and cut right after
/// its header.
#[test]
fn resume_of_a_file_without_a_resume_point_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.walk");
    let extra = [
        "--epochs",
        "2",
        "--record",
        "window:3,9",
        "--optimizer",
        "nesterov",
    ];
    run(&synthetic_args(&full, &extra));
    let expected = contents(&full);

    let stopped = dir.path().join("stopped.walk");
    let cfg = synthetic_args(&stopped, &extra).validate().unwrap();
    let stop = StopFlag::default();
    stop.requested
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let s = record(&cfg, &stop).unwrap();
    assert_eq!((s.updates, s.last_step), (0, 0));
    assert!(s.to_string().contains("continue with --resume"), "{s}");
    let r = Reader::open(&stopped).unwrap();
    assert_eq!(
        r.last_resume_step(),
        None,
        "step 0 without its resume state"
    );
    drop(r);

    let bytes = std::fs::read(&full).unwrap();
    let header_only = dir.path().join("header-only.walk");
    let first_record = Reader::open(&full).unwrap().entries()[0].record_offset;
    std::fs::write(&header_only, &bytes[..first_record as usize]).unwrap();

    for path in [&stopped, &header_only] {
        let mut a = args(path, &[]);
        a.resume = true;
        let s = run(&a);
        assert!(s.started_over && s.resumed_from_step == Some(0), "{s:?}");
        assert!(s.to_string().contains("started over"), "{s}");
        assert_eq!(contents(path), expected, "{}", path.display());
    }
}

/// `-o runs/<name>/run.walk` creates the folders it names, as `analyze -o` does.
#[test]
fn the_output_folder_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs/lr0.05/run.walk");
    run(&synthetic_args(
        &out,
        &["--max-steps", "2", "--eval-splits", ""],
    ));
    assert_eq!(Reader::open(&out).unwrap().steps(), &[0, 1, 2]);
}
