//! The `sgdwalk-analyze` binary: verify / inspect / analyze / report exit codes and output.

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
    sgdwalk_recorder::record(
        &args.validate().unwrap(),
        &sgdwalk_recorder::StopFlag::default(),
    )
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
        "x",
        "--quiet",
        "--threads",
        "1",
        "--dataset",
        "synthetic",
        "--synthetic-samples",
        "200",
        "--synthetic-size",
        "8",
        "--batch-size",
        "60",
        "--eval-splits",
        "test",
        "--out",
        "unused",
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
    assert!(
        out.contains("all checksums and the delta chain OK"),
        "{out}"
    );

    let (code, out, _) = run(&["inspect", rec_s, "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["step_count"], 4, "{out}");
    assert!(v["ratio"].as_f64().unwrap() > 1.0);

    let out_dir = dir.path().join("a");
    let (code, out, err) = run(&[
        "analyze",
        rec_s,
        "-o",
        out_dir.to_str().unwrap(),
        "--eval",
        "probe:50",
        "--json",
        "--quiet",
        "--curvature-steps",
        "1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pairs_analyzed"], 3, "{out}");
    assert_eq!(v["rows"]["interp"], 33, "{out}");

    // The report of that analysis: every claim gets a verdict; the files exist.
    let rep = dir.path().join("rep");
    let (code, out, err) = run(&[
        "report",
        out_dir.to_str().unwrap(),
        "-o",
        rep.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"], serde_json::json!(["a"]), "{out}");
    let verdicts = v["verdicts"].as_array().unwrap();
    assert!(verdicts.len() >= 10, "{out}");
    for pair in verdicts {
        let verdict = pair[1].as_str().unwrap();
        assert!(
            ["held", "not held", "not measured"].contains(&verdict),
            "{out}"
        );
    }
    assert!(rep.join("report.md").is_file() && rep.join("summary.parquet").is_file());
    // A folder that is not an analysis: exit 2, the folder named.
    let (code, _, err) = run(&[
        "report",
        dir.path().to_str().unwrap(),
        "-o",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("not an sgdwalk analysis folder")
            && err.contains(dir.path().to_str().unwrap()),
        "{err}"
    );

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
    assert!(
        err.contains("not an sgdwalk recording") || err.contains("not a recording"),
        "{err}"
    );

    let (code, out, _) = run(&["analyze", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--shard") && out.contains("probe:N"), "{out}");
}

/// All rows of a table under `out`, across shards, as sorted debug strings.
fn table_rows<R: sgdwalk_analyzer::tables::TableRows + std::fmt::Debug>(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    let dir = out.join(format!("table={}", R::TABLE.as_str()));
    for shard in std::fs::read_dir(dir).unwrap() {
        for part in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let part = part.unwrap().path();
            for r in sgdwalk_analyzer::tables::read_rows::<R>(&part).unwrap() {
                rows.push(format!("{r:?}"));
            }
        }
    }
    rows.sort();
    rows
}

/// The Slurm job-array script, run as 3 concurrent processes on one folder, gives exactly the
/// tables of one unsharded run.
#[test]
fn slurm_array_shards_as_separate_processes_equal_one_run() {
    use sgdwalk_analyzer::tables::{BarrierRow, FloorRow, InterpRow, StepRow};
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.walk");
    let args = sgdwalk_recorder::RecordArgs {
        out: rec.clone(),
        epochs: 3,
        ..default_args()
    };
    sgdwalk_recorder::record(
        &args.validate().unwrap(),
        &sgdwalk_recorder::StopFlag::default(),
    )
    .unwrap();
    let cfg = dir.path().join("small-items.toml");
    std::fs::write(&cfg, "steps_per_item = 2\neval = [{ probe = 40 }]\n").unwrap();
    let extra = format!(
        "--config {} --phases geometry,interp,floors,barriers",
        cfg.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster/slurm-analyze.sh");
    let sharded = dir.path().join("sharded");
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new("bash")
                .arg(&script)
                .arg(&rec)
                .arg(&sharded)
                .env("SLURM_ARRAY_TASK_COUNT", "3")
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .env("SLURM_CPUS_PER_TASK", "1")
                .env("SGDWALK_ANALYZE", BIN)
                .env("SGDWALK_ANALYZE_ARGS", &extra)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let c = c.wait_with_output().unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
    let whole = dir.path().join("whole");
    let mut argv = vec![
        "analyze".to_string(),
        rec.display().to_string(),
        "-o".into(),
        whole.display().to_string(),
        "--quiet".into(),
    ];
    argv.extend(extra.split(' ').map(String::from));
    let out = Command::new(BIN).args(&argv).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards: Vec<_> = std::fs::read_dir(sharded.join("table=interp"))
        .unwrap()
        .collect();
    assert_eq!(shards.len(), 3, "every task wrote its shard");
    assert_eq!(
        table_rows::<StepRow>(&sharded),
        table_rows::<StepRow>(&whole)
    );
    assert_eq!(
        table_rows::<InterpRow>(&sharded),
        table_rows::<InterpRow>(&whole)
    );
    assert_eq!(
        table_rows::<FloorRow>(&sharded),
        table_rows::<FloorRow>(&whole)
    );
    assert_eq!(
        table_rows::<BarrierRow>(&sharded),
        table_rows::<BarrierRow>(&whole)
    );
    assert!(!table_rows::<InterpRow>(&whole).is_empty());
}
