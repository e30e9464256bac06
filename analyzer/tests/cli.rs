//! The `sgdwalk-analyze` binary: verify / inspect / analyze exit codes and output.

// Test helpers unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sgdwalk-analyze");

/// Synthetic data, 3 updates: states 0..=3.
fn tiny_recording(path: &Path) {
    let args = sgdwalk_recorder::RecordArgs {
        out: path.to_path_buf(),
        ..default_args()
    };
    sgdwalk_recorder::record(&args.validate().unwrap(), &sgdwalk_recorder::StopFlag::default())
        .unwrap();
}

fn default_args() -> sgdwalk_recorder::RecordArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct C {
        #[command(flatten)]
        a: sgdwalk_recorder::RecordArgs,
    }
    C::parse_from([
        "x", "--quiet", "--threads", "1", "--dataset", "synthetic", "--synthetic-samples", "200",
        "--synthetic-size", "8", "--batch-size", "60", "--eval-splits", "test", "--out", "unused",
    ])
    .a
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_inspect_and_analyze_report_and_exit_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.walk");
    tiny_recording(&rec);
    let rec_s = rec.to_str().unwrap();

    let (code, out, _) = run(&["verify", rec_s]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("all checksums and the delta chain OK"), "{out}");

    let (code, out, _) = run(&["inspect", rec_s, "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["step_count"], 4, "{out}");
    assert!(v["ratio"].as_f64().unwrap() > 1.0);

    let out_dir = dir.path().join("a");
    let (code, out, err) = run(&[
        "analyze", rec_s, "-o", out_dir.to_str().unwrap(), "--eval", "probe:50", "--json",
        "--quiet", "--curvature-steps", "1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pairs_analyzed"], 3, "{out}");
    assert_eq!(v["rows"]["interp"], 33, "{out}");

    // An unfinished file (footer cut off) verifies but is not clean: exit 1.
    let bytes = std::fs::read(&rec).unwrap();
    let cut = dir.path().join("cut.walk");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let (code, out, _) = run(&["verify", cut.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOT finished"), "{out}");

    // A flipped byte in the middle: exit 2 with an error naming the file.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    let flipped = dir.path().join("flipped.walk");
    std::fs::write(&flipped, &bad).unwrap();
    let (code, _, err) = run(&["verify", flipped.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("flipped.walk"), "{err}");

    // Not a recording at all.
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello, these are not the bytes you are looking for").unwrap();
    let (code, _, err) = run(&["inspect", txt.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not an sgdwalk recording") || err.contains("not a recording"), "{err}");

    let (code, out, _) = run(&["analyze", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--shard") && out.contains("probe:N"), "{out}");
}
