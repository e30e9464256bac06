//! The report's figures, drawn with plotters into PNG files. Text needs a TrueType font, read
//! from disk once (no system font library is linked).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;
use super::claims::{final_lambda, late_height};
use super::load::{RunData, RunKind};

const FONT: &str = "sans-serif";
/// Steps shown in one walk panel: the paper's figures show 50 iterations.
const WALK_STEPS: usize = 50;

/// Font files tried in order when `--font` is not given.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// A loaded font (registered with plotters once per process).
#[derive(Debug, Clone, Copy)]
pub struct FontLoaded(());

/// Whether a font is registered with plotters (once per process; plotters keeps it).
static REGISTERED: Mutex<bool> = Mutex::new(false);

/// Finds a font (`--font`, then `SGDWALK_FONT`, then common system paths) and registers it.
/// An explicit `--font` must be readable even when a font is already registered.
pub fn load_font(explicit: Option<&Path>) -> Result<FontLoaded, ReportError> {
    let mut tried: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        tried.push(p.to_path_buf());
    } else {
        if let Some(p) = std::env::var_os("SGDWALK_FONT") {
            tried.push(PathBuf::from(p));
        }
        tried.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
    }
    let no_font = |tried: &[PathBuf]| ReportError::NoFont {
        tried: tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    if explicit.is_some_and(|p| !p.is_file()) {
        return Err(no_font(&tried));
    }
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if *registered {
        return Ok(FontLoaded(()));
    }
    for p in &tried {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        // plotters keeps registered fonts for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let ok = [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| plotters::style::register_font(FONT, style, bytes).is_ok());
        if ok {
            *registered = true;
            return Ok(FontLoaded(()));
        }
    }
    Err(no_font(&tried))
}

#[derive(Debug, Clone)]
enum Kind {
    Walk(usize),
    Height,
    Barriers,
    LambdaMax,
    LrBatch,
}

struct Figure {
    file: String,
    caption: String,
    kind: Kind,
}

fn safe_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn figures(runs: &[RunData]) -> Vec<Figure> {
    let mut v = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if !r.interp.is_empty() || !r.geometry.is_empty() {
            v.push(Figure {
                file: format!("walk-{}.png", safe_name(&r.label)),
                caption: format!(
                    "{}: loss along consecutive steps (floors marked), cos(d_{{t−1}}, d_t) and ‖θ_t − θ_0‖, first and last analyzed steps",
                    r.label
                ),
                kind: Kind::Walk(i),
            });
        }
    }
    if runs.iter().any(|r| !r.floors.is_empty()) {
        v.push(Figure {
            file: "height.png".into(),
            caption:
                "Height of θ_t above its step's valley floor (mean per window of consecutive steps)"
                    .into(),
            kind: Kind::Height,
        });
    }
    if runs.iter().any(|r| !r.floor_barriers.is_empty()) {
        v.push(Figure {
            file: "barriers.png".into(),
            caption: "Barriers along the valley floor v_t → v_{t+k}, relative to the higher end; \
                      the line is the threshold above which a segment counts as having one"
                .into(),
            kind: Kind::Barriers,
        });
    }
    if runs.iter().any(|r| !r.curvature.is_empty()) {
        v.push(Figure {
            file: "lambda-max.png".into(),
            caption: "Top Hessian eigenvalue λ_max over training".into(),
            kind: Kind::LambdaMax,
        });
    }
    let sgd = runs.iter().filter(|r| r.kind == RunKind::Sgd).count();
    if sgd >= 2 {
        v.push(Figure {
            file: "lr-batch.png".into(),
            caption: "Learning rate and batch size: distance travelled, height above the floor, λ_max, test accuracy".into(),
            kind: Kind::LrBatch,
        });
    }
    v
}

/// The figures `draw_all` will write, as (file name, caption), for the report's links.
pub fn planned(runs: &[RunData]) -> Vec<(String, String)> {
    figures(runs)
        .into_iter()
        .map(|f| (f.file, f.caption))
        .collect()
}

fn plot_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ReportError + '_ {
    move |e| ReportError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws every figure into `out`; returns the files written.
pub fn draw_all(
    runs: &[RunData],
    out: &Path,
    _font: FontLoaded,
    barrier_threshold: f64,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for f in figures(runs) {
        let path = out.join(&f.file);
        let for_err = path.clone();
        let err = plot_err(&for_err);
        let size = match f.kind {
            Kind::Walk(_) => (1400, 900),
            Kind::LrBatch => (1200, 900),
            _ => (1200, 520),
        };
        {
            let root = BitMapBackend::new(&path, size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            match f.kind {
                Kind::Walk(i) => walk(&root, &runs[i]),
                Kind::Height => height(&root, runs),
                Kind::Barriers => barriers(&root, runs, barrier_threshold),
                Kind::LambdaMax => lambda_max(&root, runs),
                Kind::LrBatch => lr_batch(&root, runs),
            }
            .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        written.push(path);
    }
    Ok(written)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One run's points in a panel: (colour index, run, points).
type Series<'r> = (usize, &'r RunData, Vec<(f64, f64)>);

/// A per-run number of the learning-rate comparison, with its title.
type Metric = (&'static str, Box<dyn Fn(&RunData) -> Option<f64>>);

fn color(i: usize) -> RGBColor {
    // Distinguishable on white, in a fixed order.
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Finite range with a margin; a flat or empty series gets a unit range.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5_f64.max(lo.abs() * 0.05)
    };
    (lo - pad, hi + pad)
}

/// Maximal runs of consecutive steps among `steps` (sorted).
fn consecutive_runs(steps: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in steps {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn walk(root: &Area<'_>, r: &RunData) -> DrawResult {
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "{} — {} on {}, lr {}, batch {} ({}, {} BatchNorm)",
            r.label,
            r.model,
            r.dataset,
            r.lr,
            r.batch_label(),
            r.eval_set,
            r.bn_policy
        ),
        (FONT, 20),
    )?;
    let mut steps: Vec<u64> = r.interp.iter().map(|p| p.0).collect();
    steps.dedup();
    if steps.is_empty() {
        steps = r.geometry.iter().map(|g| g.step).collect();
    }
    let runs = consecutive_runs(&steps);
    let mut windows: Vec<(u64, u64)> = Vec::new();
    if let Some(&(lo, hi)) = runs.first() {
        windows.push((lo, hi.min(lo + WALK_STEPS as u64 - 1)));
    }
    if let Some(&(lo, hi)) = runs.last() {
        let w = (hi.saturating_sub(WALK_STEPS as u64 - 1).max(lo), hi);
        if windows.first() != Some(&w) {
            windows.push(w);
        }
    }
    let cols = body.split_evenly((3, windows.len().max(1)));
    for (c, &(lo, hi)) in windows.iter().enumerate() {
        let x_range = lo as f64..(hi + 1) as f64;
        let n = windows.len();
        // Loss along the steps, concatenated.
        let pts: Vec<(f64, f64)> = r
            .interp
            .iter()
            .filter(|p| (lo..=hi).contains(&p.0) && (0.0..=1.0).contains(&p.1))
            .map(|p| (p.0 as f64 + p.1, p.2))
            .collect();
        let floors: Vec<(f64, f64)> = r
            .floors
            .iter()
            .filter(|f| (lo..=hi).contains(&f.step))
            .map(|f| (f.step as f64 + f.alpha_star, f.loss_at_floor))
            .collect();
        let (y0, y1) = range(pts.iter().chain(&floors).map(|p| p.1));
        let mut ch = ChartBuilder::on(&cols[c])
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .caption(
                if r.batch_size.is_some() {
                    format!(
                        "steps {lo}–{} (epoch {})",
                        hi + 1,
                        lo / r.steps_per_epoch.max(1) + 1
                    )
                } else {
                    format!("steps {lo}–{} (full batch)", hi + 1)
                },
                (FONT, 16),
            )
            .build_cartesian_2d(x_range.clone(), y0..y1)?;
        ch.configure_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc(format!("loss ({})", r.eval_set))
            .x_desc("step t + α")
            .label_style((FONT, 12))
            .draw()?;
        ch.draw_series(LineSeries::new(pts, &color(0)))?
            .label("L(θ_t + α d_t)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color(0)));
        ch.draw_series(
            floors
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color(3).filled())),
        )?
        .label("valley floor")
        .legend(|(x, y)| Circle::new((x + 9, y), 3, color(3).filled()));
        if c + 1 == n {
            ch.configure_series_labels()
                .label_font((FONT, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        // cos between consecutive updates.
        let cos: Vec<(f64, f64)> = r
            .geometry
            .iter()
            .filter(|g| (lo..=hi).contains(&g.step))
            .filter_map(|g| g.cos.map(|v| (g.step as f64, v)))
            .collect();
        let mut ch = ChartBuilder::on(&cols[n + c])
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone(), -1.0..1.0)?;
        ch.configure_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("cos(d_{t−1}, d_t)")
            .x_desc("step t")
            .label_style((FONT, 12))
            .draw()?;
        ch.draw_series(LineSeries::new(
            [(x_range.start, 0.0), (x_range.end, 0.0)],
            BLACK.mix(0.4),
        ))?;
        ch.draw_series(LineSeries::new(cos.clone(), &color(1)))?;
        ch.draw_series(cos.iter().map(|&p| Circle::new(p, 2, color(1).filled())))?;
        // Distance from initialization.
        let dist: Vec<(f64, f64)> = r
            .geometry
            .iter()
            .filter(|g| (lo..=hi + 1).contains(&g.step))
            .filter_map(|g| g.dist.map(|v| (g.step as f64, v)))
            .collect();
        let (d0, d1) = range(dist.iter().map(|p| p.1));
        let mut ch = ChartBuilder::on(&cols[2 * n + c])
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range, d0..d1)?;
        ch.configure_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("‖θ_t − θ_0‖")
            .x_desc("step t")
            .label_style((FONT, 12))
            .draw()?;
        ch.draw_series(LineSeries::new(dist, &color(2)))?;
    }
    Ok(())
}

/// x position of a step: epochs for minibatch runs, steps for full-batch runs.
fn epoch_x(r: &RunData, step: u64) -> f64 {
    step as f64 / r.steps_per_epoch.max(1) as f64
}

/// Splits runs into minibatch and full-batch panels (x in epochs vs steps).
fn panels(runs: &[RunData]) -> Vec<(&'static str, Vec<(usize, &RunData)>)> {
    let mb: Vec<(usize, &RunData)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.batch_size.is_some())
        .collect();
    let gd: Vec<(usize, &RunData)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.batch_size.is_none())
        .collect();
    let mut v = Vec::new();
    if !mb.is_empty() {
        v.push(("epoch", mb));
    }
    if !gd.is_empty() {
        v.push(("step (full-batch)", gd));
    }
    v
}

/// How [`series_panels`] draws: points only (no lines), log y axis, a labelled horizontal line.
#[derive(Clone, Copy)]
struct Style<'a> {
    points_only: bool,
    log_y: bool,
    hline: Option<(f64, &'a str)>,
}

fn series_panels(
    root: &Area<'_>,
    runs: &[RunData],
    title: &str,
    y_desc: &str,
    series: impl Fn(&RunData) -> Vec<(f64, f64)>,
    style: Style<'_>,
) -> DrawResult {
    let Style {
        points_only,
        log_y,
        hline,
    } = style;
    let (t, body) = root.split_vertically(36);
    t.titled(title, (FONT, 20))?;
    let p = panels(runs);
    let areas = body.split_evenly((1, p.len().max(1)));
    for (area, (x_desc, rs)) in areas.iter().zip(&p) {
        let data: Vec<Series<'_>> = rs
            .iter()
            .map(|(i, r)| {
                let mut s = series(r);
                if log_y {
                    s.retain(|q| q.1 > 0.0);
                }
                (*i, *r, s)
            })
            .filter(|d| !d.2.is_empty())
            .collect();
        let (x0, x1) = range(data.iter().flat_map(|d| d.2.iter().map(|q| q.0)));
        let (y0, y1) = range(
            data.iter()
                .flat_map(|d| d.2.iter().map(|q| q.1))
                .chain(hline.map(|h| h.0)),
        );
        let mut b = ChartBuilder::on(area);
        b.margin(10).x_label_area_size(35).y_label_area_size(65);
        // The two coordinate types differ in type, not in what is drawn on them.
        macro_rules! draw {
            ($ch:expr) => {{
                let mut ch = $ch;
                ch.configure_mesh()
                    .light_line_style(TRANSPARENT)
                    .x_desc(*x_desc)
                    .y_desc(y_desc)
                    .label_style((FONT, 12))
                    .draw()?;
                for (i, r, s) in &data {
                    let c = color(*i);
                    if !points_only {
                        ch.draw_series(LineSeries::new(s.clone(), c.stroke_width(2)))?;
                    }
                    ch.draw_series(s.iter().map(|&q| Circle::new(q, 3, c.filled())))?
                        .label(r.label.clone())
                        .legend(move |(x, y)| Circle::new((x + 9, y), 3, c.filled()));
                }
                if let Some((h, name)) = hline {
                    let grey = BLACK.mix(0.5);
                    ch.draw_series(LineSeries::new([(x0, h), (x1, h)], grey.stroke_width(2)))?
                        .label(name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(2))
                        });
                }
                ch.configure_series_labels()
                    .label_font((FONT, 11))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()?;
            }};
        }
        if log_y {
            let y0 = y0.max(y1 * 1e-6).max(f64::MIN_POSITIVE);
            draw!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
        } else {
            draw!(b.build_cartesian_2d(x0..x1, y0..y1)?);
        }
    }
    Ok(())
}

fn height(root: &Area<'_>, runs: &[RunData]) -> DrawResult {
    series_panels(
        root,
        runs,
        "Height of θ_t above the valley floor, L(θ_t) − L(v_t) (log scale)",
        "mean height (loss units)",
        |r| {
            // Mean per window of consecutive steps.
            let steps: Vec<u64> = r.floors.iter().map(|f| f.step).collect();
            consecutive_runs(&steps)
                .into_iter()
                .filter_map(|(lo, hi)| {
                    let h: Vec<f64> = r
                        .floors
                        .iter()
                        .filter(|f| (lo..=hi).contains(&f.step) && f.height_start.is_finite())
                        .map(|f| f.height_start)
                        .collect();
                    (!h.is_empty()).then(|| {
                        (
                            epoch_x(r, (lo + hi) / 2),
                            h.iter().sum::<f64>() / h.len() as f64,
                        )
                    })
                })
                .collect()
        },
        Style {
            points_only: false,
            log_y: true,
            hline: None,
        },
    )
}

fn barriers(root: &Area<'_>, runs: &[RunData], threshold: f64) -> DrawResult {
    series_panels(
        root,
        runs,
        "Barriers along the valley floor v_t → v_{t+k}, every stride, relative to the higher end",
        "barrier / loss at the higher end",
        |r| {
            r.floor_barriers
                .iter()
                .filter(|b| b.2.is_finite())
                .map(|b| (epoch_x(r, b.1), b.2))
                .collect()
        },
        Style {
            points_only: true,
            log_y: false,
            hline: Some((threshold, "--barrier-threshold")),
        },
    )
}

fn lambda_max(root: &Area<'_>, runs: &[RunData]) -> DrawResult {
    series_panels(
        root,
        runs,
        "Top Hessian eigenvalue λ_max at the iterates",
        "λ_max",
        |r| {
            r.curvature
                .iter()
                .map(|p| (epoch_x(r, p.step), p.lambda_max))
                .collect()
        },
        Style {
            points_only: false,
            log_y: false,
            hline: None,
        },
    )
}

fn lr_batch(root: &Area<'_>, runs: &[RunData]) -> DrawResult {
    let (t, body) = root.split_vertically(36);
    t.titled(
        "Plain SGD: effect of learning rate (x, log scale) at each batch size",
        (FONT, 20),
    )?;
    let sgd: Vec<&RunData> = runs.iter().filter(|r| r.kind == RunKind::Sgd).collect();
    let mut batches: Vec<u32> = sgd.iter().filter_map(|r| r.batch_size).collect();
    batches.sort_unstable();
    batches.dedup();
    let metrics: [Metric; 4] = [
        ("‖θ − θ_0‖ at the end", Box::new(|r| r.whole.dist_end)),
        (
            "mean height above the floor after epoch 1",
            Box::new(late_height),
        ),
        ("λ_max (last)", Box::new(final_lambda)),
        (
            "test accuracy (%)",
            Box::new(|r| r.final_eval("test").map(|e| 100.0 * e.accuracy)),
        ),
    ];
    let areas = body.split_evenly((2, 2));
    let (lr0, lr1) = {
        let (a, b) = range(sgd.iter().map(|r| r.lr.ln()));
        (a.exp(), b.exp())
    };
    for (area, (name, f)) in areas.iter().zip(metrics.iter()) {
        let (y0, y1) = range(sgd.iter().filter_map(|r| f(r)));
        let mut ch = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(65)
            .caption(*name, (FONT, 16))
            .build_cartesian_2d((lr0..lr1).log_scale(), y0..y1)?;
        ch.configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("learning rate")
            .label_style((FONT, 12))
            .draw()?;
        for (bi, b) in batches.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = sgd
                .iter()
                .filter(|r| r.batch_size == Some(*b))
                .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.lr, v)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let c = color(bi);
            ch.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(format!("batch {b}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        ch.configure_series_labels()
            .label_font((FONT, 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}
