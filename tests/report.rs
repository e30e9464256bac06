//! `sgdwalk-analyze report` on two real Fashion-MNIST analyses: every figure in
//! `summary.parquet` equals a direct computation on the analysis tables (read with arrow-rs,
//! independently of the report's polars queries), verdicts follow from those numbers, the
//! figures are PNG files, and bad inputs get named errors without losing what was computed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, StringArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use sgdwalk_analyzer::dir::{AnalysisDir, DirError};
use sgdwalk_analyzer::report::{ReportArgs, ReportError, report};
use sgdwalk_analyzer::tables::{
    BarrierRow, CurvatureRow, EpochRow, FloorRow, StepRow, TableName, read_batches,
};

use crate::analyzer::{rows, small_full_analysis};
use crate::recorder::{fashion_args, run};

const THRESHOLD: f64 = 1e-3;

/// Records 2 epochs (10 steps each) at `lr` and analyzes it into `<dir>/<name>/analysis`.
fn analysis(dir: &Path, name: &str, lr: &str) -> PathBuf {
    let rec = dir.join(format!("{name}.walk"));
    run(&fashion_args(&rec, &["--epochs", "2", "--lr", lr]));
    let out = dir.join(name).join("analysis");
    small_full_analysis(&rec, &out);
    out
}

fn args(analyses: Vec<PathBuf>, out: &Path) -> ReportArgs {
    ReportArgs {
        analyses,
        out: out.to_path_buf(),
        preamble: None,
        barrier_threshold: THRESHOLD,
        font: None,
        no_plots: false,
        json: false,
    }
}

type Key = (String, String, Option<u32>);
/// summary.parquet rows by key: (value, count).
type Summary = HashMap<Key, Vec<(Option<f64>, Option<u64>)>>;

/// summary.parquet as (run, metric, epoch) → (value, count), read with arrow-rs.
fn summary(path: &Path) -> Summary {
    let back = read_batches(path).unwrap();
    let mut map: Summary = HashMap::new();
    for b in &back.batches {
        let col = |name: &str, t: &DataType| cast(b.column_by_name(name).unwrap(), t).unwrap();
        let run = col("run", &DataType::Utf8);
        let run = run.as_any().downcast_ref::<StringArray>().unwrap();
        let metric = col("metric", &DataType::Utf8);
        let metric = metric.as_any().downcast_ref::<StringArray>().unwrap();
        let epoch = col("epoch", &DataType::UInt32);
        let epoch = epoch.as_any().downcast_ref::<UInt32Array>().unwrap();
        let value = col("value", &DataType::Float64);
        let value = value.as_any().downcast_ref::<Float64Array>().unwrap();
        let count = col("count", &DataType::Float64);
        let count = count.as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            let opt_f = |a: &Float64Array| (!a.is_null(i)).then(|| a.value(i));
            map.entry((
                run.value(i).to_string(),
                metric.value(i).to_string(),
                (!epoch.is_null(i)).then(|| epoch.value(i)),
            ))
            .or_default()
            .push((opt_f(value), opt_f(count).map(|c| c as u64)));
        }
    }
    map
}

fn one(s: &Summary, run: &str, metric: &str, epoch: Option<u32>) -> f64 {
    let v = &s[&(run.to_string(), metric.to_string(), epoch)];
    assert_eq!(v.len(), 1, "{run} {metric} {epoch:?}");
    v[0].0.unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
        "{what}: report {a} vs direct {b}"
    );
}

#[test]
fn report_numbers_equal_direct_computations_and_figures_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let fast = analysis(dir.path(), "fast", "0.05");
    let slow = analysis(dir.path(), "slow", "0.01");
    let out = dir.path().join("report");
    let done = report(&args(vec![fast.clone(), slow.clone()], &out)).unwrap();
    assert_eq!(done.runs, ["fast", "slow"]);
    let s = summary(&out.join("summary.parquet"));
    let mut c1_held = true;

    for (name, a) in [("fast", &fast), ("slow", &slow)] {
        // Valley floors: interior share over the run and per epoch (epochs from the steps table).
        let floors: Vec<FloorRow> = rows(a);
        let steps: Vec<StepRow> = rows::<StepRow>(a)
            .into_iter()
            .filter(|r| r.layer == "params")
            .collect();
        let epoch_of: HashMap<u64, u32> = steps.iter().map(|r| (r.step, r.epoch)).collect();
        let primary: Vec<&FloorRow> = floors
            .iter()
            .filter(|f| f.eval_set == "probe:200" && f.bn_policy == "train-mode")
            .collect();
        assert!(!primary.is_empty());
        let share = |fs: &[&FloorRow]| {
            fs.iter().filter(|f| f.shape == "interior_min").count() as f64 / fs.len() as f64
        };
        close(
            one(&s, name, "interior_floor_share", None),
            share(&primary),
            "interior share",
        );
        for e in [1u32, 2] {
            let fe: Vec<&FloorRow> = primary
                .iter()
                .copied()
                .filter(|f| epoch_of[&f.step] == e)
                .collect();
            close(
                one(&s, name, "interior_floor_share", Some(e)),
                share(&fe),
                "share per epoch",
            );
            // The claim is judged after the first epoch.
            if e == 2 {
                c1_held &= share(&fe) > 0.5;
            }
        }
        let mean_h = primary.iter().map(|f| f.height_start).sum::<f64>() / primary.len() as f64;
        close(
            one(&s, name, "height_start_mean", None),
            mean_h,
            "mean height",
        );

        // Geometry: mean cos and the last distance from θ_0.
        let cos: Vec<f64> = steps.iter().filter_map(|r| r.cos_prev_update).collect();
        close(
            one(&s, name, "cos_mean", None),
            cos.iter().sum::<f64>() / cos.len() as f64,
            "mean cos",
        );
        let neg = cos.iter().filter(|c| **c < 0.0).count() as f64 / cos.len() as f64;
        close(one(&s, name, "cos_negative_share", None), neg, "cos < 0");
        let last = steps
            .iter()
            .filter(|r| r.dist_from_init.is_some())
            .max_by_key(|r| r.step)
            .unwrap();
        assert_eq!(last.step, 20);
        close(
            one(&s, name, "dist_from_init_end", None),
            last.dist_from_init.unwrap(),
            "distance",
        );

        // Barriers along the floor, stride 1 and 2.
        let bars: Vec<BarrierRow> = rows(a);
        for (stride, metric) in [
            (1, "barrier_share_floor_stride1"),
            (2, "barrier_share_floor_strideK"),
        ] {
            let seg: Vec<&BarrierRow> = bars
                .iter()
                .filter(|b| b.path == "floor" && b.stride == stride)
                .collect();
            let with = seg
                .iter()
                .filter(|b| b.barrier_max / b.loss_start.max(b.loss_end) > THRESHOLD)
                .count();
            close(
                one(&s, name, metric, None),
                with as f64 / seg.len() as f64,
                metric,
            );
        }

        // λ_max at steps 0, 10, 20 (count column = step).
        let curv: Vec<CurvatureRow> = rows(a);
        let mut lam: Vec<(u64, f64)> = curv
            .iter()
            .filter(|c| c.quantity == "eigenvalue" && c.rank == Some(0) && c.point == "iterate")
            .map(|c| (c.step, c.value))
            .collect();
        lam.sort_by_key(|p| p.0);
        assert_eq!(lam.len(), 3);
        let mut reported: Vec<(u64, f64)> = s
            .iter()
            .filter(|((r, m, _), _)| r == name && m == "lambda_max")
            .flat_map(|(_, v)| v.iter().map(|(val, c)| (c.unwrap(), val.unwrap())))
            .collect();
        reported.sort_by_key(|p| p.0);
        assert_eq!(reported, lam);

        // Recorded per-epoch evaluation.
        let ev: Vec<EpochRow> = rows(a);
        let test2 = ev
            .iter()
            .find(|e| e.epoch == 2 && e.split == "test")
            .unwrap();
        close(
            one(&s, name, "test_accuracy", Some(2)),
            test2.accuracy,
            "test accuracy",
        );
    }
    // The first claim's verdict follows from the per-epoch shares computed here.
    let c1 = &done
        .verdicts
        .iter()
        .find(|v| v.0.starts_with("For most of training"))
        .unwrap()
        .1;
    assert_eq!(c1, if c1_held { "held" } else { "not held" });

    // The Markdown: both runs, every claim with one of the three verdicts.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| fast |") && md.contains("| slow |"), "{md}");
    for (claim, verdict) in &done.verdicts {
        assert!(["held", "not held", "not measured"].contains(&verdict.as_str()));
        assert!(
            md.contains(&format!("{claim} | **{verdict}** |")),
            "{claim}"
        );
    }
    // No full-batch run was given: those claims are not measured.
    assert!(md.contains("C1-GD Full-batch GD") && md.contains("| C7 "));
    let c7 = done
        .verdicts
        .iter()
        .find(|v| v.0.starts_with("Full-batch GD with isotropic"))
        .unwrap();
    assert_eq!(c7.1, "not measured");

    // Figures: PNG files linked from the report.
    for name in [
        "walk-fast.png",
        "walk-slow.png",
        "height.png",
        "lambda-max.png",
        "lr-batch.png",
    ] {
        let p = out.join(name);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        assert!(bytes.len() > 10_000, "{name}: {} bytes", bytes.len());
        assert!(md.contains(&format!("]({name})")), "{name} not linked");
    }
    assert_eq!(done.figures.len(), md.matches("![").count());
}

#[test]
fn report_errors_name_the_input_and_a_missing_font_loses_no_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let a = analysis(dir.path(), "only", "0.05");
    let out = dir.path().join("r");

    // Not an analysis folder: the folder and the missing manifest named.
    let err = report(&args(vec![dir.path().join("nowhere")], &out)).unwrap_err();
    assert!(
        matches!(err, ReportError::Dir(DirError::NotAnAnalysis { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("nowhere") && msg.contains(AnalysisDir::MANIFEST_FILE),
        "{err}"
    );

    // The same run twice.
    let err = report(&args(vec![a.clone(), a.clone()], &out)).unwrap_err();
    assert!(matches!(err, ReportError::DuplicateLabel { .. }), "{err}");

    // A font that does not exist: the error names it, report.md and summary.parquet are written.
    let mut bad_font = args(vec![a.clone()], &out);
    bad_font.font = Some(dir.path().join("no-such-font.ttf"));
    let err = report(&bad_font).unwrap_err();
    assert!(matches!(err, ReportError::NoFont { .. }), "{err}");
    assert!(err.to_string().contains("no-such-font.ttf"), "{err}");
    assert!(out.join("report.md").is_file() && out.join("summary.parquet").is_file());

    // A corrupt table file: the error names the table and the folder.
    let part = std::fs::read_dir(a.join("table=floors/shard=0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::write(&part, b"PAR1 this is not a parquet file PAR1").unwrap();
    let err = report(&args(vec![a.clone()], &out)).unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Query {
                table: TableName::Floors,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("only"), "{err}");

    // A broken manifest: the error names the file.
    let manifest = a.join(AnalysisDir::MANIFEST_FILE);
    std::fs::write(&manifest, "{\"recording_id\": ").unwrap();
    let err = report(&args(vec![a.clone()], &out)).unwrap_err();
    assert!(
        matches!(err, ReportError::Dir(DirError::BadFile { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains(&*manifest.to_string_lossy()),
        "{err}"
    );
}
