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
        assert!(
            child.try_wait().unwrap().is_none(),
            "the recorder exited before step {steps}"
        );
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
