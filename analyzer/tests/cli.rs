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

/// A file of the workspace (read at run time: the target dir may be shared between clones).
fn workspace_path(rel: &str) -> std::path::PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
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

#[path = "../../tests/support/table_rows.rs"]
mod table_rows;

/// All rows of a table under `out`, across shards, as sorted debug strings without the run label.
fn table_rows<R: sgdwalk_analyzer::tables::TableRows + std::fmt::Debug>(out: &Path) -> Vec<String> {
    table_rows::sorted_debug(&table_rows::rows::<R>(out))
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
    let script = workspace_path("examples/cluster/slurm-analyze.sh");
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
        // As each shard: libtorch's reductions may split differently on more threads, and
        // this test is about sharding, not thread counts.
        "--threads".into(),
        "1".into(),
    ];
    argv.extend(extra.split(' ').map(String::from));
    let out = Command::new(BIN).args(&argv).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards: Vec<_> = std::fs::read_dir(sharded.join("interp")).unwrap().collect();
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

#[path = "../../tests/support/cli_fuzz.rs"]
mod cli_fuzz;

/// Random flags and values, valid and not, on every subcommand: exit 0, 1 or 2 with a message,
/// never a panic, an abort or a hang (a 4 GB grid, a probe larger than the data, a step past
/// the end used to abort, run for minutes or succeed with no rows).
#[test]
fn random_command_lines_end_with_a_status_and_a_message() {
    use cli_fuzz::Flag;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.walk");
    tiny_recording(&rec);
    let rec_s = rec.display().to_string();
    let root = dir.path().to_path_buf();
    let flags = [
        Flag {
            name: "--phases",
            values: &[
                "geometry",
                "interp,floors",
                "barriers",
                "curvature",
                "epochs",
                "magic",
                "",
            ],
        },
        Flag {
            name: "--eval",
            values: &[
                "probe:10",
                "probe:0",
                "probe:100000000",
                "batch",
                "train",
                "val",
                "test",
                "nope",
            ],
        },
        Flag {
            name: "--bn",
            values: &["train-mode", "eval-mode", "train-mode,eval-mode", "frozen"],
        },
        Flag {
            name: "--grid",
            values: &[
                "0:1:3",
                "1:0:3",
                "0:1:4000000000",
                "0:1",
                "NaN:1:3",
                "-1:2:5",
            ],
        },
        Flag {
            name: "--strides",
            values: &["1", "0", "1,2", "99999999999"],
        },
        Flag {
            name: "--curvature-steps",
            values: &["0", "1,3", "5000", "x"],
        },
        Flag {
            name: "--curvature-every",
            values: &["1", "0", "18446744073709551615"],
        },
        Flag {
            name: "--curvature-at-floor",
            values: &["true", "false", "maybe"],
        },
        Flag {
            name: "--top-k",
            values: &["1", "0", "50"],
        },
        Flag {
            name: "--trace-probes",
            values: &["0", "2", "4294967295"],
        },
        Flag {
            name: "--eps-sharpness",
            values: &["0", "0.001", "NaN", "-1"],
        },
        Flag {
            name: "--eval-batch-size",
            values: &["1", "0", "4294967295"],
        },
        Flag {
            name: "--steps",
            values: &["0..2", "2..1", "0..18446744073709551615", "x"],
        },
        Flag {
            name: "--shard",
            values: &["0/1", "1/1", "0/0", "1/2"],
        },
        Flag {
            name: "--threads",
            values: &["1", "0"],
        },
        Flag {
            name: "--floor-tolerance",
            values: &["0.01", "0", "NaN"],
        },
        Flag {
            name: "--seed",
            values: &["0", "-1"],
        },
        Flag {
            name: "--force",
            values: &[],
        },
        Flag {
            name: "--json",
            values: &[],
        },
        Flag {
            name: "--bogus",
            values: &[],
        },
    ];
    let base = |case: usize| -> Vec<String> {
        let out = root.join(format!("out{case}")).display().to_string();
        let bad_input = root.display().to_string();
        match case % 8 {
            0 => vec!["verify".into(), rec_s.clone()],
            1 => vec!["inspect".into(), rec_s.clone()],
            2 => vec!["report".into(), rec_s.clone()],
            // A folder where a recording is expected.
            3 => vec!["analyze".into(), bad_input, "-o".into(), out],
            _ => vec![
                "analyze".into(),
                rec_s.clone(),
                "-o".into(),
                out,
                "--quiet".into(),
            ],
        }
    };
    let seen = cli_fuzz::fuzz(
        Path::new(BIN),
        &base,
        &flags,
        4,
        48,
        11,
        std::time::Duration::from_secs(120),
    );
    assert!(seen.contains_key(&0) && seen.contains_key(&2), "{seen:?}");
}

/// Every row of every table under `out`, sorted, per table.
fn all_rows(out: &Path) -> Vec<(String, Vec<String>)> {
    use sgdwalk_analyzer::tables::{BarrierRow, FloorRow, InterpRow, StepRow, TableRows};
    fn table<R: TableRows + std::fmt::Debug>(out: &Path) -> (String, Vec<String>) {
        (R::TABLE.as_str().to_string(), table_rows::<R>(out))
    }
    vec![
        table::<StepRow>(out),
        table::<InterpRow>(out),
        table::<FloorRow>(out),
        table::<BarrierRow>(out),
    ]
}

/// SIGKILL at random times, then a rerun: the tables equal an uninterrupted analysis.
#[test]
fn an_analyzer_killed_at_random_times_and_rerun_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.walk");
    let mut args = default_args();
    args.out = rec.clone();
    args.batch_size = 12;
    args.epochs = 2;
    sgdwalk_recorder::record(
        &args.validate().unwrap(),
        &sgdwalk_recorder::StopFlag::default(),
    )
    .unwrap();
    let items = dir.path().join("items.toml");
    std::fs::write(&items, "steps_per_item = 3\n").unwrap();
    let analyze = |out: &Path| -> Vec<String> {
        [
            "analyze",
            rec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--quiet",
            "--threads",
            "1",
            "--phases",
            "geometry,interp,floors,barriers",
            "--eval",
            "probe:40",
            "--grid",
            "0:1:7",
            "--config",
            items.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let reference = dir.path().join("reference");
    let started = std::time::Instant::now();
    let (code, out, err) = run(&analyze(&reference)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}{err}");
    let full_ms = started.elapsed().as_millis() as u64;
    let killed = dir.path().join("killed");
    let mut seed = 0x5eed_u64;
    let mut landed = 0;
    for _ in 0..8 {
        // A kill time within the first half of an uninterrupted run (an LCG keeps it seeded).
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let after_ms = 100 + (seed >> 33) % (full_ms / 2).max(1);
        let mut child = Command::new(BIN)
            .args(analyze(&killed))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(after_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            landed += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        landed >= 3,
        "only {landed} kills landed mid-run ({full_ms} ms runs)"
    );
    let (code, out, err) = run(&analyze(&killed)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}{err}");
    let (want, got) = (all_rows(&reference), all_rows(&killed));
    for ((table, a), (_, b)) in want.iter().zip(&got) {
        assert!(!a.is_empty(), "{table}");
        assert_eq!(a, b, "{table}");
    }
}

/// `analyze`'s flags that are not analysis settings (no `AnalyzeConfig` field behind them).
const NOT_SETTINGS: [&str; 11] = [
    "recording",
    "out",
    "config",
    "data_dir",
    "shard",
    "device",
    "threads",
    "label",
    "force",
    "quiet",
    "json",
];

fn analyze_command() -> clap::Command {
    use clap::CommandFactory;
    sgdwalk_analyzer::cli::Cli::command()
        .find_subcommand("analyze")
        .unwrap()
        .clone()
}

/// An argument's whole help text (clap keeps a one-paragraph doc comment as `help` only).
fn help_of(arg: &clap::Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The `[default: X]` a help text states, if any.
fn stated_default(help: &str) -> Option<&str> {
    let (_, rest) = help.rsplit_once("[default: ")?;
    rest.split_once(']').map(|(d, _)| d)
}

/// The config-file (and JSON) form of the defaults: key → value.
fn default_config_keys() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::to_value(sgdwalk_analyzer::config::AnalyzeConfig::default()).unwrap();
    v.as_object().unwrap().clone()
}

/// Every setting flag's help states a default, and that default, given as the flag's value,
/// yields exactly `AnalyzeConfig::default()`: the help cannot drift from the code.
#[test]
fn analyze_help_states_each_settings_default_as_the_code_has_it() {
    use clap::Parser;
    use sgdwalk_analyzer::cli::{Cli, Command};
    use sgdwalk_analyzer::config::AnalyzeConfig;
    let defaults = default_config_keys();
    let mut checked = 0;
    for arg in analyze_command().get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        let help = help_of(arg);
        let long = arg.get_long().unwrap();
        let shown = stated_default(&help)
            .unwrap_or_else(|| panic!("--{long} states no [default: ...]: {help:?}"));
        if matches!(shown, "none" | "all") {
            // "Nothing chosen": the default is an empty list or no range.
            let v = &defaults[id];
            assert!(
                v.is_null() || v.as_array().is_some_and(Vec::is_empty),
                "--{long} says {shown} but the default is {v}"
            );
        } else {
            let flag = format!("--{long}");
            let cli = Cli::try_parse_from([
                "sgdwalk-analyze",
                "analyze",
                "r.walk",
                "-o",
                "o",
                flag.as_str(),
                shown,
            ])
            .unwrap_or_else(|e| panic!("--{long} {shown}: {e}"));
            let Command::Analyze(args) = cli.command else {
                panic!("not analyze")
            };
            let (cfg, _) = args.validate().unwrap();
            assert_eq!(
                cfg,
                AnalyzeConfig::default(),
                "--{long}: the help says {shown}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} setting flags found");
    // And the rendered help shows them.
    let (code, out, _) = run(&["analyze", "--help"]);
    assert_eq!(code, Some(0));
    for shown in [
        "[default: 0:1:11]",
        "[default: probe:1000]",
        "[default: 500]",
    ] {
        assert!(out.contains(shown), "{shown} missing from:\n{out}");
    }
}

/// Every config-file key is a row of the README's "Configuration file" table, whose default
/// cell, read as TOML, gives the code's default; keys without a flag are also in `--config`'s
/// help.
#[test]
fn every_config_file_key_is_documented_with_its_default() {
    let readme = std::fs::read_to_string(workspace_path("README.md")).unwrap();
    let config_help = help_of(
        analyze_command()
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .unwrap(),
    );
    let flag_ids: Vec<String> = analyze_command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let defaults = sgdwalk_analyzer::config::AnalyzeConfig::default();
    // The example file parses.
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split_once("```"))
        .map(|(toml, _)| toml)
        .expect("a toml example in README.md");
    let parsed: sgdwalk_analyzer::config::AnalyzeConfig = toml::from_str(example).unwrap();
    assert_eq!(parsed.grid.points, 21);
    for (key, value) in default_config_keys() {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("config key {key} has no row in README.md's table"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let default_cell = cells[3].trim_matches('`');
        if value.is_null() {
            assert!(default_cell.starts_with("none"), "{row}");
        } else {
            let parsed: sgdwalk_analyzer::config::AnalyzeConfig =
                toml::from_str(&format!("{key} = {default_cell}"))
                    .unwrap_or_else(|e| panic!("{row}: {e}"));
            assert_eq!(parsed, defaults, "README default of {key}: {row}");
        }
        let has_flag = flag_ids.contains(&key) || key.starts_with("grid_") || key == "step_range";
        if !has_flag {
            assert!(
                config_help.contains(&format!("`{key}`")),
                "{key} has no flag and is missing from --config's help: {config_help}"
            );
        }
    }
}

/// Every flag and subcommand of `sgdwalk-analyze` has a description.
#[test]
fn every_analyzer_flag_has_a_description() {
    use clap::CommandFactory;
    let cmd = sgdwalk_analyzer::cli::Cli::command();
    for sub in cmd.get_subcommands() {
        assert!(
            sub.get_about().is_some(),
            "{} has no description",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            assert!(
                !help_of(arg).trim().is_empty(),
                "{} {} has no help",
                sub.get_name(),
                arg.get_id()
            );
        }
    }
}

/// `inspect` on an sgdwalk-record recording: the run's model, data, optimizer, schedule and
/// length, times for people (no raw milliseconds); `--json` with a hex run id and the metadata
/// as an object. On another tool's recording: its metadata as it is.
#[test]
fn inspect_describes_the_run_and_its_json_is_plain() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.walk");
    tiny_recording(&rec);
    let rec_s = rec.to_str().unwrap();
    let (code, out, err) = run(&["inspect", rec_s]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "  model      small-cnn (",
        "  dataset    synthetic (1x8x8 images, 10 classes",
        ": train 0..180 (180 samples), val 180..200 (20 samples)",
        "  optimizer  sgd, lr 0.1, momentum 0, weight decay 0.0001 (coupled)",
        "  schedule   constant",
        "  training   batch size 60, 1 epoch(s) x 3 steps = 3 steps",
        "  recorded   policy every",
        " UTC",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(!out.contains(" ms"), "raw milliseconds in:\n{out}");

    let (code, out, _) = run(&["inspect", rec_s, "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["run_id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(v["metadata"]["model"].is_object(), "{out}");
    assert_eq!(v["metadata"]["batch_size"], 60, "{out}");
    assert!(
        v["created_utc"].as_str().unwrap().ends_with(" UTC"),
        "{out}"
    );

    // Another tool's recording: the metadata is printed raw.
    use sgdwalk_format::{
        CodecId, CodecSettings, FsyncPolicy, Header, StepInput, StepScalars, Writer, WriterOptions,
    };
    let other = dir.path().join("other.walk");
    let header = Header::new(
        [7; 16],
        1_700_000_000_000,
        Header::contiguous_layout(&[("w", &[4])]).unwrap(),
        0,
        r#"{"tool":"elsewhere","lr":0.5}"#.into(),
        CodecSettings {
            chunk_len_elements: 4,
            keyframe_interval: 4,
            zstd_level: 1,
            delta_codec: CodecId::Pred2,
            split_streams: true,
        },
    )
    .unwrap();
    let options = WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 1,
        overlap_writes: false,
    };
    let mut w = Writer::create(&other, header, options).unwrap();
    w.write_step(&StepInput {
        step: 0,
        state: &[1.0, 2.0, 3.0, 4.0],
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars::absent(),
    })
    .unwrap();
    w.finish().unwrap();
    let (code, out, err) = run(&["inspect", other.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(r#"metadata (not an sgdwalk-record run): {"tool":"elsewhere","lr":0.5}"#)
            && out.contains("created 2023-11-14 22:13:20 UTC"),
        "{out}"
    );
    let (_, out, _) = run(&["inspect", other.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["run_id"], "07".repeat(16), "{out}");
    assert_eq!(v["metadata"]["tool"], "elsewhere", "{out}");
}
