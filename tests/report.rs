//! `sgdwalk-analyze report` on two real Fashion-MNIST analyses: every figure in
//! `summary.parquet` equals a direct computation on the analysis tables (read with arrow-rs,
//! independently of the report's polars queries), verdicts follow from those numbers, every
//! figure passes a reader's checks on its plan (ranges, ticks, series, text) and its PNG, SVG
//! and data file match it, and bad inputs get named errors without losing what was computed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array, StringArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use sgdwalk_analyzer::dir::{AnalysisDir, DirError};
use sgdwalk_analyzer::report::load::load_run;
use sgdwalk_analyzer::report::plots::plan::{Axis, FigurePlan, Mark, Scale, TickKind};
use sgdwalk_analyzer::report::plots::{plan_figures, write_data};
use sgdwalk_analyzer::report::{ReportArgs, ReportError, RunData, report};
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

    // Figures: PNG and SVG files linked from the report, each with its data; every figure
    // checked as a reader would (ranges, ticks, series, text) on its plan.
    let runs = vec![
        load_run(&fast, THRESHOLD).unwrap(),
        load_run(&slow, THRESHOLD).unwrap(),
    ];
    let plans = plan_figures(&runs, THRESHOLD);
    let stems: Vec<&str> = plans.iter().map(|p| p.stem.as_str()).collect();
    for name in [
        "walk-fast",
        "walk-slow",
        "height",
        "barriers",
        "lambda-max",
        "lr-batch",
    ] {
        assert!(stems.contains(&name), "{name} not planned: {stems:?}");
    }
    assert_eq!(done.figures.len(), plans.len());
    assert_eq!(done.figure_files.len(), 2 * plans.len());
    for plan in &plans {
        check_plan(plan);
        check_files(plan, &out, &md);
    }
    assert_eq!(done.figures.len(), md.matches("![").count());
    figure_cases(&runs, &plans);
}

/// Text of a figure as TeX would write it, or a flag name, instead of what a reader reads.
fn check_text(t: &str, figure: &str) {
    for bad in ["_{", "_t", "θ_", "d_", "λ_", "--", "\\"] {
        assert!(!t.contains(bad), "{figure}: {bad:?} in {t:?}");
    }
}

/// A reader's objections to an axis: a degenerate or non-finite range, missing or colliding
/// ticks, "9999999e-5"-style labels, fractional steps, labels that do not read as their value.
fn check_axis(a: &Axis, what: &str) {
    check_text(&a.label, what);
    assert!(
        a.lo.is_finite() && a.hi.is_finite() && a.lo < a.hi,
        "{what}: range {}..{}",
        a.lo,
        a.hi
    );
    if a.scale == Scale::Log10 {
        assert!(a.lo > 0.0, "{what}: log axis from {}", a.lo);
    }
    assert!(
        a.ticks.len() >= 2 && a.ticks.len() <= 11,
        "{what}: {} ticks: {:?}",
        a.ticks.len(),
        a.ticks
    );
    let mut seen = std::collections::HashSet::new();
    for t in &a.ticks {
        assert!(a.contains(t.value), "{what}: tick {} outside", t.value);
        assert!(
            !t.label.is_empty() && seen.insert(t.label.clone()),
            "{what}: {:?}",
            a.ticks
        );
        assert!(
            !t.label.contains('e') && !t.label.contains('E'),
            "{what}: {:?}",
            t.label
        );
        let readable = !t.label.contains('×') && !t.label.starts_with("10");
        if readable || a.kind != TickKind::Log {
            let parsed: f64 = t.label.replace('−', "-").parse().unwrap_or_else(|e| {
                panic!("{what}: tick label {:?} is not a number: {e}", t.label)
            });
            let decimals = t.label.split('.').nth(1).map_or(0, str::len);
            let unit = 10f64.powi(-(decimals as i32));
            assert!(
                (parsed - t.value).abs() <= 0.5 * unit + 1e-12 * t.value.abs(),
                "{what}: label {:?} for {}",
                t.label,
                t.value
            );
        }
    }
    match a.kind {
        TickKind::Integer => {
            for t in &a.ticks {
                assert!(
                    t.label.parse::<i64>().is_ok() || t.label.starts_with('−'),
                    "{what}: step tick {:?}",
                    t.label
                );
            }
        }
        TickKind::Decimal => {
            let decimals = |l: &str| l.split('.').nth(1).map_or(0, str::len);
            let d0 = decimals(&a.ticks[0].label);
            assert!(
                a.ticks.iter().all(|t| decimals(&t.label) == d0),
                "{what}: {:?}",
                a.ticks
            );
        }
        TickKind::Log | TickKind::Given => {
            // Labels of neighbouring ticks on a log axis collide below a factor 1.15.
            for w in a.ticks.windows(2) {
                assert!(w[1].value / w[0].value >= 1.15, "{what}: {:?}", a.ticks);
            }
        }
    }
}

/// Everything on a figure: readable text, the evaluation set named, the grid filled, every
/// series with points and every point inside its panel (nothing clipped).
fn check_plan(f: &FigurePlan) {
    let what = f.stem.as_str();
    for t in [&f.title, &f.subtitle, &f.caption] {
        check_text(t, what);
    }
    assert!(
        f.subtitle.contains("probe:200") && f.subtitle.contains("BatchNorm train-mode"),
        "{what}: evaluation set not stated: {}",
        f.subtitle
    );
    assert!(!f.legend.is_empty(), "{what}: no legend");
    for e in &f.legend {
        check_text(&e.name, what);
    }
    assert_eq!(f.panels.len(), f.grid.0 * f.grid.1, "{what}");
    for p in &f.panels {
        let what = format!("{what}/{}", p.id);
        check_axis(&p.x, &format!("{what} x"));
        check_axis(&p.y, &format!("{what} y"));
        if let Some(t) = &p.title {
            check_text(t, &what);
        }
        assert!(
            p.note.is_some() || p.series.iter().any(|s| s.mark != Mark::Reference),
            "{what}: no data and no note"
        );
        for s in &p.series {
            assert!(!s.points.is_empty(), "{what}: series {} empty", s.name);
            for &(x, y) in &s.points {
                assert!(
                    p.x.contains(x) && p.y.contains(y),
                    "{what}: ({x}, {y}) of {} outside {}..{} × {}..{}",
                    s.name,
                    p.x.lo,
                    p.x.hi,
                    p.y.lo,
                    p.y.hi
                );
            }
        }
    }
}

/// The PNG, the SVG and the data file of a figure; the data equals the points planned.
fn check_files(f: &FigurePlan, out: &Path, md: &str) {
    let png = std::fs::read(out.join(format!("{}.png", f.stem))).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", f.stem);
    assert!(png.len() > 10_000, "{}: {} bytes", f.stem, png.len());
    assert!(
        md.contains(&format!("]({}.png)", f.stem)),
        "{} not linked",
        f.stem
    );
    let svg = std::fs::read_to_string(out.join(format!("{}.svg", f.stem))).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{}",
        f.stem
    );
    let escaped = f
        .title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;");
    assert!(svg.contains(&escaped), "{}: title not in SVG", f.stem);

    let back = read_batches(&out.join(format!("{}.parquet", f.stem))).unwrap();
    let mut got: Vec<(String, String, f64, f64)> = Vec::new();
    for b in &back.batches {
        let text = |name: &str| {
            let c = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
            let c = c.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        };
        let num = |name: &str| {
            let c = b.column_by_name(name).unwrap();
            c.as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        let (panel, series, x, y) = (text("panel"), text("series"), num("x"), num("y"));
        for i in 0..b.num_rows() {
            got.push((panel[i].clone(), series[i].clone(), x[i], y[i]));
        }
    }
    let want: Vec<(String, String, f64, f64)> = f
        .panels
        .iter()
        .flat_map(|p| {
            p.series.iter().flat_map(move |s| {
                s.points
                    .iter()
                    .map(move |&(x, y)| (p.id.clone(), s.name.clone(), x, y))
            })
        })
        .collect();
    assert_eq!(got, want, "{}: data file differs from the figure", f.stem);
}

/// The cases the issue named, on these runs and on edited copies of them.
fn figure_cases(runs: &[RunData], plans: &[FigurePlan]) {
    let plan = |stem: &str| plans.iter().find(|p| p.stem == stem).unwrap();
    // Every step analyzed: the height is a curve per run over both epochs, not one dot.
    let h = &plan("height").panels[0];
    assert_eq!(h.series.len(), 2);
    for s in &h.series {
        assert!(s.points.len() >= 10, "{}: {:?}", s.name, s.points);
        let (first, last) = (s.points[0].0, s.points[s.points.len() - 1].0);
        assert!(
            first < 0.2 && last > 1.8,
            "{}: epochs {first}..{last}",
            s.name
        );
    }
    // A log axis only spans what the data spans (not 6 decades by force).
    if h.y.scale == Scale::Log10 {
        let v: Vec<f64> = h
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let ratio =
            v.iter().copied().fold(0.0, f64::max) / v.iter().copied().fold(f64::MAX, f64::min);
        assert!(h.y.hi / h.y.lo <= ratio.powf(1.1) * 1.6, "{:?}", h.y);
    }
    // Walk panels count steps in whole numbers.
    for p in &plan("walk-fast").panels {
        assert_eq!(p.x.kind, TickKind::Integer, "{}", p.id);
    }

    // Every barrier 0: the figure says so and 0 is inside the axis, not on its edge.
    let mut zero = runs.to_vec();
    for r in &mut zero {
        r.floor_barriers.iter_mut().for_each(|b| b.2 = 0.0);
    }
    let zplans = plan_figures(&zero, THRESHOLD);
    let b = zplans.iter().find(|p| p.stem == "barriers").unwrap();
    check_plan(b);
    let note = b.panels[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("every barrier is 0"), "{note:?}");
    assert!(b.panels[0].y.lo < 0.0 && b.panels[0].y.hi > THRESHOLD);
    assert!(
        plan("barriers").panels[0]
            .note
            .as_deref()
            .is_none_or(|n| !n.contains("every barrier"))
            || runs
                .iter()
                .all(|r| r.floor_barriers.iter().all(|b| b.2 == 0.0))
    );

    // Two measurements of one step: one point, their mean, x strictly increasing.
    let mut twice = runs.to_vec();
    let first = twice[0].curvature[0];
    twice[0]
        .curvature
        .push(sgdwalk_analyzer::report::load::CurvPoint {
            lambda_max: first.lambda_max + 2.0,
            ..first
        });
    let lp = plan_figures(&twice, THRESHOLD);
    let l = lp.iter().find(|p| p.stem == "lambda-max").unwrap();
    check_plan(l);
    let s = &l.panels[0].series[0];
    assert_eq!(s.points.len(), runs[0].curvature.len());
    assert!(
        s.points.windows(2).all(|w| w[0].0 < w[1].0),
        "{:?}",
        s.points
    );
    assert!((s.points[0].1 - (first.lambda_max + 1.0)).abs() < 1e-9);

    // A figure's data file is written from its plan alone.
    let tmp = tempfile::tempdir().unwrap();
    let rows = write_data(l, &tmp.path().join("l.parquet")).unwrap();
    assert_eq!(
        rows,
        l.panels
            .iter()
            .map(|p| p.series.iter().map(|s| s.points.len()).sum::<usize>())
            .sum::<usize>()
    );
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
    let part = std::fs::read_dir(a.join("floors/shard=0"))
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
