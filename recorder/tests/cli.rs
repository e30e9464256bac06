//! The `sgdwalk-record` binary: exit codes, signals, kill -9 then --resume, and a write error
//! (file-size limit) in the middle of a run.

// Test helpers unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sgdwalk_format::Reader;

const BIN: &str = env!("CARGO_BIN_EXE_sgdwalk-record");

/// Synthetic data (no files needed), 32x32x3 images with augmentation, small CNN: about 40
/// updates per epoch.
fn base_args(out: &Path) -> Vec<String> {
    [
        "--quiet",
        "--threads",
        "1",
        "--dataset",
        "synthetic",
        "--synthetic-samples",
        "1400",
        "--synthetic-size",
        "32",
        "--synthetic-channels",
        "3",
        "--augment",
        "true",
        "--model",
        "small-cnn",
        "--batch-size",
        "32",
        "--optimizer",
        "momentum",
        "--keyframe-interval",
        "8",
        "--eval-splits",
        "test",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the recording holds at least `steps` steps.
fn wait_for_steps(path: &Path, steps: usize, child: &mut Child) {
    let start = Instant::now();
    loop {
        if let Ok(r) = Reader::open(path)
            && r.steps().len() >= steps
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
            }
            panic!("the recorder exited ({status}) before step {steps}:\n{stderr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn state_bits(path: &Path) -> Vec<(u64, Vec<u32>, Vec<u32>)> {
    let mut r = Reader::open(path).unwrap();
    r.steps()
        .to_vec()
        .into_iter()
        .map(|t| {
            let ids = r.step_info(t).unwrap().sample_ids;
            let bits = r.state(t).unwrap().iter().map(|x| x.to_bits()).collect();
            (t, ids, bits)
        })
        .collect()
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--record") && help.contains("Example:"),
        "{help}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--model", "alexnet", "--out"])
        .arg(tmp(&dir, "x.walk"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model \"alexnet\""), "{err}");
    assert!(!tmp(&dir, "x.walk").exists());
}

#[test]
fn sigterm_stops_at_a_step_boundary_with_a_finished_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(&dir, "run.walk");
    let mut args = base_args(&out);
    args.extend(["--epochs", "50"].map(String::from));
    let mut child = spawn(&args);
    wait_for_steps(&out, 5, &mut child);
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("interrupted by signal 15"), "{err}");
    let r = Reader::open(&out).unwrap();
    assert!(r.is_finished(), "footer written on SIGTERM");
    let report = sgdwalk_format::verify(&out).unwrap();
    assert!(report.is_clean(), "{report}");
    let steps = r.steps().to_vec();
    assert!(steps.len() >= 5);
    assert_eq!(
        steps,
        (0..steps.len() as u64).collect::<Vec<_>>(),
        "consecutive up to the stop"
    );
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = tmp(&dir, "full.walk");
    let killed = tmp(&dir, "killed.walk");
    let epochs = ["--epochs", "2"].map(String::from);
    let mut a = base_args(&full);
    a.extend(epochs.clone());
    assert!(Command::new(BIN).args(&a).status().unwrap().success());

    let mut b = base_args(&killed);
    b.extend(epochs.clone());
    let mut child = spawn(&b);
    wait_for_steps(&killed, 20, &mut child);
    signal(&child, "-KILL");
    let _ = child.wait();
    let r = Reader::open(&killed).unwrap();
    assert!(!r.is_finished(), "no footer after kill -9");
    let partial = r.steps().len();
    assert!(partial >= 20);
    drop(r);
    // Every complete step reads back bit-exactly as in the uninterrupted run.
    let full_bits = state_bits(&full);
    let killed_bits = state_bits(&killed);
    assert_eq!(&full_bits[..killed_bits.len()], killed_bits.as_slice());

    let mut c = base_args(&killed);
    c.extend(epochs);
    c.push("--resume".into());
    let out = Command::new(BIN).args(&c).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed from step"));
    assert_eq!(state_bits(&killed), full_bits);
    assert!(Reader::open(&killed).unwrap().is_finished());
}

#[test]
fn a_write_error_mid_run_stops_with_a_clear_error_and_keeps_complete_steps() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(&dir, "full.walk");
    let mut args = base_args(&out);
    args.extend(["--epochs", "5", "--fsync", "record"].map(String::from));
    // A file-size limit makes the disk "full" for this process after ~300 KB; SIGXFSZ is
    // ignored (inherited through exec), so the write fails with EFBIG like ENOSPC would.
    let script = "trap '' XFSZ; ulimit -f 300; exec \"$0\" \"$@\"".to_string();
    let result = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(2));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("writing the recording failed at step"),
        "{err}"
    );
    let r = Reader::open(&out).unwrap();
    assert!(!r.steps().is_empty());
    assert!(std::fs::metadata(&out).unwrap().len() <= 300 * 1024);
    let n = r.steps().len();
    let mut r = r;
    for t in 0..n as u64 {
        r.state(t).unwrap();
    }
}

/// Fashion-MNIST as `scripts/setup` fetches it (`SGDWALK_DATA_DIR` or `data/` of the
/// workspace); a test that needs it fails, never skips, when it is missing.
fn fashion_mnist_dir() -> PathBuf {
    let dir = std::env::var_os("SGDWALK_DATA_DIR")
        .map_or_else(
            || {
                Path::new(
                    &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
                )
                .join("../data")
            },
            PathBuf::from,
        )
        .join("fashion-mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists(),
        "Fashion-MNIST is missing from {}: run scripts/setup",
        dir.display()
    );
    dir
}

/// Every bad setting of issue 11 exits 2 before any training, naming the flag (or the
/// dataset) and what is allowed, and leaves an existing output untouched (even with
/// --overwrite).
#[test]
fn bad_settings_exit_2_naming_the_flag_and_leave_the_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(&dir, "precious.walk");
    std::fs::write(&out, b"precious").unwrap();
    let fashion = fashion_mnist_dir().display().to_string();
    let empty = tmp(&dir, "empty");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.display().to_string();
    // Synthetic data unless the case names its dataset (a flag given twice is a usage error).
    let synthetic = ["--dataset", "synthetic", "--model", "mlp"];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--optimizer", "adam", "--beta2", "NaN"],
            vec!["--beta2", "[0, 1)"],
        ),
        (
            vec!["--optimizer", "adam", "--beta2", "1"],
            vec!["--beta2", "[0, 1)"],
        ),
        (
            vec!["--optimizer", "adam", "--beta1", "1.5"],
            vec!["--beta1", "[0, 1)"],
        ),
        (
            vec!["--optimizer", "adam", "--beta1=-0.1"],
            vec!["--beta1", "[0, 1)"],
        ),
        (
            vec!["--optimizer", "adam", "--adam-eps", "0"],
            vec!["--adam-eps", "> 0"],
        ),
        (
            vec!["--optimizer", "adam", "--adam-eps", "inf"],
            vec!["--adam-eps", "> 0"],
        ),
        (vec!["--schedule", "step:1,NaN"], vec!["--schedule", "> 0"]),
        (vec!["--schedule", "step:1,-1"], vec!["--schedule", "> 0"]),
        (vec!["--schedule", "step:1,0"], vec!["--schedule", "> 0"]),
        (
            vec!["--schedule", "step:0,0.5"],
            vec!["--schedule", "at least 1"],
        ),
        (
            vec!["--schedule", "step:1,1e300", "--epochs", "3"],
            vec!["--schedule", "finite number > 0"],
        ),
        (vec!["--lr", "NaN"], vec!["--lr", "> 0"]),
        (vec!["--lr", "inf"], vec!["--lr", "> 0"]),
        (vec!["--lr=-1"], vec!["--lr", "> 0"]),
        (vec!["--zstd-level=-1"], vec!["--zstd-level", "1..=22"]),
        (vec!["--zstd-level", "23"], vec!["--zstd-level", "1..=22"]),
        (
            vec!["--eval-batch-size", "0"],
            vec!["--eval-batch-size", "at least 1"],
        ),
        (
            vec!["--train-samples", "0..1000", "--val-samples", "500..1500"],
            vec!["--val-samples", "overlap", "0..1000", "500..1500"],
        ),
        (
            vec!["--synthetic-size", "4000000000"],
            vec!["--synthetic-size", "4 GiB"],
        ),
        (
            vec!["--synthetic-channels", "0"],
            vec!["--synthetic-channels", "at least 1"],
        ),
        (
            vec!["--dataset", "mnist", "--data-dir", &fashion],
            vec!["Fashion-MNIST files, not MNIST", "--dataset fashion-mnist"],
        ),
        (
            vec!["--dataset", "mnist", "--data-dir", &empty],
            vec![
                "train-images-idx3-ubyte",
                "train-images.idx3-ubyte",
                ".gz",
                "does not fetch MNIST",
                "--data-dir",
            ],
        ),
    ];
    for (flags, wanted) in &cases {
        let result = Command::new(BIN)
            .args(["--quiet", "--threads", "1", "--overwrite", "--out"])
            .arg(&out)
            .args(if flags.contains(&"--dataset") {
                &[][..]
            } else {
                &synthetic[..]
            })
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{flags:?}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{flags:?}: {w:?} missing from {err}");
        }
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
        assert!(
            !(flags.contains(&"mnist") && err.contains("run scripts/setup")),
            "scripts/setup does not fetch MNIST: {err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"precious", "{flags:?}");
    }
    // --out naming a folder (with --overwrite: it used to end in "Is a directory").
    let result = Command::new(BIN)
        .args(["--quiet", "--overwrite", "--out", &empty])
        .args(synthetic)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is a folder") && err.contains("run.walk"),
        "{err}"
    );
    assert!(Path::new(&empty).is_dir());
}

/// `--resume` with a flag that differs from the recording exits 2 naming the flag and the
/// recorded value, and leaves the recording as it was; an equal flag is accepted.
#[test]
fn resume_with_a_differing_flag_exits_2_and_an_equal_one_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(&dir, "run.walk");
    let tiny = |out: &Path| -> Vec<String> {
        [
            "--quiet",
            "--threads",
            "1",
            "--dataset",
            "synthetic",
            "--synthetic-samples",
            "200",
            "--synthetic-size",
            "8",
            "--model",
            "small-cnn",
            "--batch-size",
            "16",
            "--record",
            "window:2,5",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    assert!(
        Command::new(BIN)
            .args(tiny(&out))
            .status()
            .unwrap()
            .success()
    );
    let full = std::fs::read(&out).unwrap();
    // Killed in the middle: the first half.
    std::fs::write(&out, &full[..full.len() / 2]).unwrap();
    let before = std::fs::read(&out).unwrap();
    for (flags, wanted) in [
        (&["--lr", "5"][..], &["--lr 5", "recording's 0.1"][..]),
        (&["--epochs", "9"], &["--epochs 9", "recording's 1"]),
        (
            &["--model", "mlp"],
            &["--model mlp", "recording's small-cnn"],
        ),
        (
            &["--record", "every"],
            &["--record every", "recording's window:2,5"],
        ),
    ] {
        let result = Command::new(BIN)
            .args(["--quiet", "--resume", "--out"])
            .arg(&out)
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{flags:?}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{flags:?}: {w:?} missing from {err}");
        }
        assert_eq!(std::fs::read(&out).unwrap(), before, "{flags:?}");
    }
    let mut again = tiny(&out);
    again.push("--resume".into());
    let result = Command::new(BIN).args(&again).output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let reference = tmp(&dir, "reference.walk");
    assert!(
        Command::new(BIN)
            .args(tiny(&reference))
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(decoded(&out), decoded(&reference));
}

/// Whether process `pid` catches signal `sig` (its handler is installed): bit sig-1 of
/// SigCgt in /proc/PID/status.
fn catches(pid: u32, sig: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("SigCgt:"))?;
            u64::from_str_radix(line["SigCgt:".len()..].trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// SIGTERM while the data is still loading (issue 11): exit 143 with a message that says to
/// continue with --resume, and that command then works (it starts over from step 0) and
/// gives the uninterrupted recording.
#[test]
fn sigterm_while_loading_says_resume_and_resume_then_works() {
    let dir = tempfile::tempdir().unwrap();
    let fashion = fashion_mnist_dir();
    let run_args = |out: &Path| -> Vec<String> {
        [
            "--quiet",
            "--threads",
            "1",
            "--dataset",
            "fashion-mnist",
            "--model",
            "mlp",
            "--train-samples",
            "0..320",
            "--batch-size",
            "64",
            "--eval-splits",
            "",
            "--data-dir",
            fashion.to_str().unwrap(),
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let out = tmp(&dir, "run.walk");
    let mut child = spawn(&run_args(&out));
    let start = Instant::now();
    // As soon as the handlers are installed, which is before the data is loaded.
    while !catches(child.id(), 15) {
        assert!(child.try_wait().unwrap().is_none(), "exited before SIGTERM");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no handler in 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{err}");
    assert!(
        err.contains("before the first update") && err.contains("continue with --resume"),
        "{err}"
    );
    assert_eq!(Reader::open(&out).unwrap().steps(), &[0]);

    // The command the message suggests.
    let resumed = Command::new(BIN)
        .args([
            "--quiet",
            "--resume",
            "--data-dir",
            fashion.to_str().unwrap(),
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("started over"), "{err}");
    let reference = tmp(&dir, "reference.walk");
    assert!(
        Command::new(BIN)
            .args(run_args(&reference))
            .status()
            .unwrap()
            .success()
    );
    let (a, b) = (decoded(&out), decoded(&reference));
    let at = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        at.is_none() && a.len() == b.len(),
        "first difference at entry {at:?}: {:?}",
        at.map(|i| {
            let c = a[i]
                .bytes()
                .zip(b[i].bytes())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            (&a[i][c.saturating_sub(80)..], &b[i][c.saturating_sub(80)..])
        })
    );
}

/// Everything a recording holds, decoded, except its run-specific fields (run id, creation
/// time, wall times, host and start time).
fn decoded(path: &Path) -> Vec<String> {
    let mut r = Reader::open(path).unwrap();
    assert!(r.is_finished(), "{}", path.display());
    let mut meta: serde_json::Value = serde_json::from_str(&r.header().metadata_json).unwrap();
    meta["provenance"]["started_unix_secs"] = 0.into();
    meta["provenance"]["hostname"] = "".into();
    let mut out = vec![
        meta.to_string(),
        format!("{:?} {:?}", r.header().layout, r.header().codec),
        format!("{:?}", r.epochs().unwrap()),
    ];
    for t in r.steps().to_vec() {
        let mut info = r.step_info(t).unwrap();
        info.scalars.wall_time_secs = None;
        out.push(format!(
            "{t} {:?} {:?} {:?}",
            info.sample_ids,
            info.augmentation,
            [
                info.scalars.learning_rate,
                info.scalars.minibatch_loss,
                info.scalars.grad_norm,
                info.scalars.update_norm
            ]
            .map(|v| v.map(f64::to_bits))
        ));
        let bits: Vec<u32> = r.state(t).unwrap().iter().map(|x| x.to_bits()).collect();
        out.push(format!("{bits:?}"));
        if let Some((buf, d)) = r.resume_state(t).unwrap() {
            let bits: Vec<u32> = buf.iter().map(|x| x.to_bits()).collect();
            out.push(format!("resume {t} {d} {bits:?}"));
        }
    }
    out
}

/// The outside kill trial kept in the suite (issue 11): one run SIGKILLed at 24 seeded random
/// moments (after random delays, and when the file reaches random target sizes up to 97% of
/// its final length, so also during --resume and late in the run), resumed with --resume
/// alone after each kill. After every kill each complete step equals the uninterrupted run's;
/// at the end the recording decodes equal to it. SGDWALK_KILL_SEED picks another seed.
#[test]
fn sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run() {
    use sgdwalk_workload::run::derive_seed;
    const KILLS: usize = 24;
    let seed: u64 = std::env::var("SGDWALK_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let dir = tempfile::tempdir().unwrap();
    let tiny = |out: &Path| -> Vec<String> {
        [
            "--quiet",
            "--threads",
            "1",
            "--dataset",
            "synthetic",
            "--synthetic-samples",
            "400",
            "--synthetic-size",
            "8",
            "--augment",
            "true",
            "--model",
            "small-cnn",
            "--batch-size",
            "8",
            "--epochs",
            "3",
            "--optimizer",
            "momentum",
            "--keyframe-interval",
            "4",
            "--record",
            "window:6,10",
            "--eval-splits",
            "val",
            "--fsync",
            "never",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let reference = tmp(&dir, "reference.walk");
    let t0 = Instant::now();
    assert!(
        Command::new(BIN)
            .args(tiny(&reference))
            .status()
            .unwrap()
            .success()
    );
    let reference_secs = t0.elapsed().as_secs_f64();
    let expected = decoded(&reference);
    let final_len = std::fs::metadata(&reference).unwrap().len();
    let expected_steps = state_bits(&reference);

    let out = tmp(&dir, "killed.walk");
    let mut targets: Vec<u64> = (0..KILLS / 2)
        .map(|i| final_len / 20 + derive_seed(seed, i as u64) % (final_len * 92 / 100))
        .collect();
    targets.sort_unstable();
    let mut kills = 0;
    for i in 0..KILLS {
        let mut a = if out.exists() {
            vec![
                "--quiet".to_string(),
                "--resume".into(),
                "--out".into(),
                out.display().to_string(),
            ]
        } else {
            tiny(&out)
        };
        if !out.exists() {
            a.push("--overwrite".into());
        }
        let mut child = spawn(&a);
        let r = derive_seed(seed, 1000 + i as u64);
        let started = Instant::now();
        // Even kills at a target size, odd ones after a delay of up to 60% of the reference
        // run's length.
        let delay = Duration::from_secs_f64(reference_secs * 0.6 * (r % 1000) as f64 / 1000.0);
        loop {
            let due = if i % 2 == 0 {
                std::fs::metadata(&out).is_ok_and(|m| m.len() >= targets[i / 2])
            } else {
                started.elapsed() >= delay
            };
            if due || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "kill {i} (seed {seed}): no progress in 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            signal(&child, "-KILL");
            kills += 1;
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() || output.status.code().is_none(),
            "kill {i} (seed {seed}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // A kill before the header was complete leaves a file that a fresh run replaces.
        match Reader::open(&out) {
            Ok(_) => {
                let got = state_bits(&out);
                let differ = got
                    .iter()
                    .zip(&expected_steps)
                    .find(|(g, e)| g != e)
                    .map(|(g, e)| (g.0, e.0, g.1 == e.1));
                assert!(
                    got.len() <= expected_steps.len() && differ.is_none(),
                    "kill {i} (seed {seed}): complete steps differ from the uninterrupted run: (step, expected step, same ids) {differ:?} of {} steps",
                    got.len()
                );
            }
            Err(_) if out.exists() && i == 0 => std::fs::remove_file(&out).unwrap(),
            Err(e) => panic!("kill {i} (seed {seed}): unreadable after the kill: {e}"),
        }
    }
    assert!(
        kills >= 20,
        "only {kills} of {KILLS} runs were killed (seed {seed})"
    );
    let result = Command::new(BIN)
        .args(["--quiet", "--resume", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(decoded(&out), expected, "seed {seed}");
}

#[path = "../../tests/support/cli_fuzz.rs"]
mod cli_fuzz;

use cli_fuzz::Flag;

/// The recorder flags the fuzz draws from, with values valid and not.
const FUZZ_FLAGS: &[Flag] = &[
    Flag {
        name: "--epochs",
        values: &["1", "0", "2"],
    },
    Flag {
        name: "--lr",
        values: &["0.1", "NaN", "-1", "1e30", "inf", "0"],
    },
    Flag {
        name: "--optimizer",
        values: &["sgd", "momentum", "adam", "lion"],
    },
    Flag {
        name: "--beta1",
        values: &["0.9", "1", "-0.1", "NaN"],
    },
    Flag {
        name: "--beta2",
        values: &["0.999", "1", "NaN"],
    },
    Flag {
        name: "--adam-eps",
        values: &["1e-8", "0", "NaN"],
    },
    Flag {
        name: "--weight-decay",
        values: &["0", "0.1", "-1", "NaN"],
    },
    Flag {
        name: "--schedule",
        values: &[
            "constant",
            "step:1,0.5",
            "step:1,NaN",
            "step:1,-1",
            "step:0,1",
            "cosine",
        ],
    },
    Flag {
        name: "--zstd-level",
        values: &["3", "-5", "100"],
    },
    Flag {
        name: "--synthetic-size",
        values: &["8", "0", "4000000000"],
    },
    Flag {
        name: "--synthetic-samples",
        values: &["100", "0", "1", "4000000000"],
    },
    Flag {
        name: "--synthetic-channels",
        values: &["1", "0", "100000"],
    },
    Flag {
        name: "--batch-size",
        values: &["60", "0", "1000000"],
    },
    Flag {
        name: "--record",
        values: &[
            "every",
            "every:0",
            "every:3",
            "window:2,5",
            "window:0,0",
            "nothing",
            "x",
        ],
    },
    Flag {
        name: "--keyframe-interval",
        values: &["8", "0", "1"],
    },
    Flag {
        name: "--train-samples",
        values: &["0..100", "50..10", "0..1000000000"],
    },
    Flag {
        name: "--val-samples",
        values: &["100..150", "0..50", "x"],
    },
    Flag {
        name: "--model",
        values: &["mlp", "small-cnn", "alexnet", "torchscript:/nonexistent.pt"],
    },
    Flag {
        name: "--dataset",
        values: &[
            "synthetic",
            "mnist",
            "tensors:/nonexistent.safetensors",
            "x",
        ],
    },
    Flag {
        name: "--eval-splits",
        values: &["", "test", "val,test", "nope"],
    },
    Flag {
        name: "--noise-std",
        values: &["0", "0.01", "-1", "NaN"],
    },
    Flag {
        name: "--augment",
        values: &["true", "false", "maybe"],
    },
    Flag {
        name: "--seed",
        values: &["0", "-1", "18446744073709551615"],
    },
    Flag {
        name: "--resume",
        values: &[],
    },
    Flag {
        name: "--overwrite",
        values: &[],
    },
    Flag {
        name: "--bogus",
        values: &[],
    },
];

/// Random flags and values, valid and not: exit 0 or 2 with a message, never a panic, an abort
/// or a hang (a 4 GB synthetic image, NaN optimizer constants and negative learning rates
/// used to crash or record nonsense).
#[test]
fn random_command_lines_end_with_a_status_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let existing = root.join("existing.walk");
    std::fs::write(&existing, b"precious").unwrap();
    let base = |case: usize| -> Vec<String> {
        let out = match case % 6 {
            // An existing file, and a folder.
            0 => existing.display().to_string(),
            1 => root.display().to_string(),
            _ => root.join(format!("r{case}.walk")).display().to_string(),
        };
        [
            "--quiet",
            "--threads",
            "1",
            "--dataset",
            "synthetic",
            "--synthetic-samples",
            "200",
            "--synthetic-size",
            "8",
            "--model",
            "mlp",
            "--batch-size",
            "60",
            "--max-steps",
            "3",
            "--eval-splits",
            "test",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out])
        .collect()
    };
    let seen = cli_fuzz::fuzz(
        Path::new(BIN),
        &base,
        FUZZ_FLAGS,
        4,
        48,
        7,
        Duration::from_secs(120),
    );
    assert!(seen.contains_key(&0) && seen.contains_key(&2), "{seen:?}");
}

#[test]
fn disk_full_while_writing_the_index_keeps_every_step_readable() {
    let dir = tempfile::tempdir().unwrap();
    let full = tmp(&dir, "full.walk");
    let out = tmp(&dir, "limited.walk");
    let epochs = ["--epochs", "1"].map(String::from);
    let mut a = base_args(&full);
    a.extend(epochs.clone());
    assert!(Command::new(BIN).args(&a).status().unwrap().success());
    let r = Reader::open(&full).unwrap();
    let steps = r.steps().to_vec();
    // The same run writes the same records: they end where the INDEX record starts.
    let data_end = r.entries().last().unwrap().end_offset();
    let file_len = std::fs::metadata(&full).unwrap().len();
    drop(r);
    // bash's `ulimit -f` counts 1024-byte blocks: every data record fits, the index does not
    // (or, at worst, the footer or trailer after it).
    let blocks = data_end.div_ceil(1024);
    assert!(
        blocks * 1024 < file_len,
        "index too small to cut: data {data_end}, file {file_len}"
    );
    let mut args = base_args(&out);
    args.extend(epochs);
    let script = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"");
    let result = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(
        err.contains("finishing the recording (index, footer) failed")
            && err.contains("every recorded step is kept")
            && err.contains(&*out.to_string_lossy()),
        "{err}"
    );
    assert_eq!(
        err.matches(&*out.to_string_lossy()).count(),
        1,
        "the file is named once: {err}"
    );
    // Unfinished, every step there, each one bit-exact.
    let r = Reader::open(&out).unwrap();
    assert!(!r.is_finished());
    assert_eq!(r.steps(), steps.as_slice());
    assert_eq!(r.committed_len_bytes(), data_end);
    drop(r);
    assert_eq!(state_bits(&out), state_bits(&full));
}

#[test]
fn a_second_resume_of_a_file_being_written_exits_2_naming_the_file_and_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(&dir, "run.walk");
    let mut args = base_args(&out);
    args.extend(["--epochs", "50"].map(String::from));
    let mut killed = spawn(&args);
    wait_for_steps(&out, 10, &mut killed);
    signal(&killed, "-KILL");
    let _ = killed.wait();
    let before = Reader::open(&out).unwrap().steps().len();

    let mut resume = args.clone();
    resume.push("--resume".into());
    let mut first = spawn(&resume);
    // Past its reopen: it appends, holding the file.
    wait_for_steps(&out, before + 3, &mut first);
    let second = Command::new(BIN).args(&resume).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("recording is in use by"), "{err}");
    assert!(err.contains(&*out.to_string_lossy()), "{err}");
    if cfg!(target_os = "linux") {
        assert!(
            err.contains(&format!("pid {} (sgdwalk-record)", first.id())),
            "{err}"
        );
    }
    // The first writer is undisturbed: it stops cleanly with a verified recording.
    assert!(first.try_wait().unwrap().is_none(), "the first writer died");
    signal(&first, "-TERM");
    let output = first.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = sgdwalk_format::verify(&out).unwrap();
    assert!(report.is_clean(), "{report}");
    let steps = Reader::open(&out).unwrap().steps().to_vec();
    assert_eq!(steps, (0..steps.len() as u64).collect::<Vec<_>>());
}

/// Every flag of `sgdwalk-record --help` has a description; every flag taking a value states
/// its default (clap's `[default: ...]` or the text), and the checked ones their allowed range.
#[test]
fn every_record_flag_has_help_with_its_default_and_range() {
    use clap::Args;
    let cmd = sgdwalk_recorder::RecordArgs::augment_args(clap::Command::new("sgdwalk-record"));
    let help_of = |id: &str| -> String {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no flag {id}"));
        arg.get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let help = help_of(id);
        assert!(!help.trim().is_empty(), "--{id} has no help");
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
        if takes_value && !arg.is_required_set() {
            assert!(
                !arg.get_default_values().is_empty() || help.to_lowercase().contains("default"),
                "--{id} states no default: {help:?}"
            );
        }
    }
    // Allowed ranges, as validate() checks them.
    for (id, range) in [
        ("epochs", "at least 1"),
        ("batch_size", "at least 1"),
        ("lr", "> 0"),
        ("momentum", "[0, 1)"),
        ("beta1", "[0, 1)"),
        ("beta2", "[0, 1)"),
        ("adam_eps", "> 0"),
        ("weight_decay", ">= 0"),
        ("noise_std", ">= 0"),
        ("zstd_level", "1..=22"),
        ("keyframe_interval", "power of two"),
        ("synthetic_samples", "at least 20"),
        ("synthetic_size", "at least 1"),
        ("synthetic_channels", "at least 1"),
        ("record", "window:W,K"),
        ("record", "0 < W < K"),
        ("decoupled_wd", "lr · weight-decay"),
    ] {
        assert!(help_of(id).contains(range), "--{id}: {range:?} missing");
    }
    // The binary renders them.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for shown in [
        "--synthetic-channels",
        "[default: 0.999]",
        "0 < W < K",
        "--adam-eps",
    ] {
        assert!(text.contains(shown), "{shown} missing from:\n{text}");
    }
}
