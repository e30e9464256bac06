//! The report's figures. Each is planned as plain data first ([`plan::FigurePlan`]: panels,
//! axis ranges, tick labels, series, legend, caption; [`figures`] decides what each figure
//! shows), then drawn from the plan with plotters as `<figure>.png` (text in a TrueType font
//! read from disk once; no system font library is linked) and `<figure>.svg`, and the points
//! drawn are written beside as `<figure>.parquet` (panel, series, x, y, x_label, y_label) for
//! redrawing in another style.

pub mod figures;
pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::*;

use self::plan::{Axis, FigurePlan, LegendEntry, Mark, Panel};
use super::ReportError;
use super::load::RunData;

pub use self::figures::plan_figures;

const FONT: &str = "sans-serif";

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

/// The figures `draw_all` will write, as (PNG file name, caption), for the report's links.
pub fn planned(runs: &[RunData], barrier_threshold: f64) -> Vec<(String, String)> {
    plan_figures(runs, barrier_threshold)
        .into_iter()
        .map(|f| (format!("{}.png", f.stem), f.caption))
        .collect()
}

/// The files of one figure.
#[derive(Debug, Clone)]
pub struct DrawnFigure {
    pub png: PathBuf,
    pub svg: PathBuf,
    /// The points drawn, long format (see [`write_data`]).
    pub data: PathBuf,
}

fn plot_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ReportError + '_ {
    move |e| ReportError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Draws every figure into `out` as PNG and SVG, with its data as Parquet.
pub fn draw_all(
    runs: &[RunData],
    out: &Path,
    _font: FontLoaded,
    barrier_threshold: f64,
) -> Result<Vec<DrawnFigure>, ReportError> {
    let mut written = Vec::new();
    for plan in plan_figures(runs, barrier_threshold) {
        let png = out.join(format!("{}.png", plan.stem));
        let svg = out.join(format!("{}.svg", plan.stem));
        let data = out.join(format!("{}.parquet", plan.stem));
        {
            let err = plot_err(&png);
            let root = BitMapBackend::new(&png, plan.size).into_drawing_area();
            draw_plan(&root, &plan).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        {
            let err = plot_err(&svg);
            let root = SVGBackend::new(&svg, plan.size).into_drawing_area();
            draw_plan(&root, &plan).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        write_data(&plan, &data)?;
        written.push(DrawnFigure { png, svg, data });
    }
    Ok(written)
}

/// Writes the points of every series of `plan` as one long table: panel, series, x, y (in
/// data units, also on log axes) and the axis labels of the panel.
pub fn write_data(plan: &FigurePlan, path: &Path) -> Result<usize, ReportError> {
    let (mut panel, mut series, mut x, mut y, mut xl, mut yl) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in &plan.panels {
        for s in &p.series {
            for &(px, py) in &s.points {
                panel.push(p.id.as_str());
                series.push(s.name.as_str());
                x.push(px);
                y.push(py);
                xl.push(p.x.label.as_str());
                yl.push(p.y.label.as_str());
            }
        }
    }
    let rows = x.len();
    let columns = vec![
        Column::new("panel".into(), panel),
        Column::new("series".into(), series),
        Column::new("x".into(), x),
        Column::new("y".into(), y),
        Column::new("x_label".into(), xl),
        Column::new("y_label".into(), yl),
    ];
    super::summary::write_frame(path, rows, columns)?;
    Ok(rows)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Palette index to colour: distinguishable on white, in a fixed order.
fn color(i: usize) -> RGBColor {
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

const REFERENCE_GREY: RGBColor = RGBColor(110, 110, 110);

fn text_style(size: u32, c: RGBColor) -> TextStyle<'static> {
    TextStyle {
        color: c.to_backend_color(),
        ..TextStyle::from((FONT, size).into_font())
    }
}

/// A linear coordinate in drawing units (log10 already applied on log axes) whose ticks are
/// exactly the plan's: plotters' own tick choice is what produced "9999999e-5".
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn of(a: &Axis) -> Ticked {
        Ticked {
            lo: a.map(a.lo),
            hi: a.map(a.hi),
            ticks: a.ticks.iter().map(|t| a.map(t.value)).collect(),
        }
    }
}

impl Ranged for Ticked {
    // Labels come from the mesh's formatters; this only satisfies plotters' bounds.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f64::from(limit.1 - limit.0) * frac).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Title, subtitle and legend above the panels; the panels below.
fn draw_plan<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plan: &FigurePlan) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let title = text_style(22, BLACK);
    let sub = text_style(14, RGBColor(70, 70, 70));
    let center = Pos::new(HPos::Center, VPos::Top);
    root.draw_text(&plan.title, &title.pos(center), (w as i32 / 2, 8))?;
    root.draw_text(&plan.subtitle, &sub.pos(center), (w as i32 / 2, 38))?;
    let legend_h = draw_legend(root, &plan.legend, 62)?;
    let (_, body) = root.split_vertically(62 + legend_h + 4);
    let areas = body.split_evenly(plan.grid);
    // One width for every panel's y labels, so that stacked panels line up.
    let y_width = plan
        .panels
        .iter()
        .map(|p| y_label_width(&p.y))
        .max()
        .unwrap_or(60);
    for (area, panel) in areas.iter().zip(&plan.panels) {
        draw_panel(area, panel, y_width)?;
    }
    Ok(())
}

/// The legend as rows of entries across the figure, starting at `top`; returns its height.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    top: i32,
) -> Result<u32, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    const ROW: i32 = 22;
    let (w, _) = root.dim_in_pixel();
    let style = text_style(14, BLACK);
    let left = Pos::new(HPos::Left, VPos::Center);
    let widths: Vec<i32> = entries
        .iter()
        .map(|e| {
            root.estimate_text_size(&e.name, &style)
                .map(|(tw, _)| tw as i32 + 50)
        })
        .collect::<Result<_, _>>()?;
    // Rows filled left to right, each row centred.
    let mut rows: Vec<Vec<usize>> = vec![vec![]];
    let mut used = 0;
    for (i, wi) in widths.iter().enumerate() {
        if used + wi > w as i32 - 40 && !rows.last().is_none_or(Vec::is_empty) {
            rows.push(vec![]);
            used = 0;
        }
        used += wi;
        if let Some(r) = rows.last_mut() {
            r.push(i);
        }
    }
    for (ri, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|&i| widths[i]).sum();
        let mut x = (w as i32 - total) / 2;
        let y = top + ROW * ri as i32 + ROW / 2;
        for &i in row {
            let e = &entries[i];
            draw_mark(root, e.mark, color(e.color), x + 4, y)?;
            root.draw_text(&e.name, &style.pos(left), (x + 32, y))?;
            x += widths[i];
        }
    }
    Ok(if entries.is_empty() {
        0
    } else {
        (ROW * rows.len() as i32) as u32
    })
}

/// A legend sample of a mark, 22 pixels wide from `x`.
fn draw_mark<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    mark: Mark,
    c: RGBColor,
    x: i32,
    y: i32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let line = |col: RGBColor| PathElement::new(vec![(x, y), (x + 22, y)], col.stroke_width(2));
    match mark {
        Mark::Line => root.draw(&line(c))?,
        Mark::Reference => root.draw(&line(REFERENCE_GREY))?,
        Mark::Points => root.draw(&Circle::new((x + 11, y), 4, c.filled()))?,
        Mark::OpenPoints => root.draw(&Circle::new((x + 11, y), 4, c.stroke_width(2)))?,
        Mark::LinePoints => {
            root.draw(&line(c))?;
            root.draw(&Circle::new((x + 11, y), 4, c.filled()))?;
        }
    }
    Ok(())
}

/// The label of the tick at `v` (a position in drawing coordinates), or nothing.
fn tick_label(axis: &Axis, v: f64) -> String {
    let eps = 1e-9 * (axis.map(axis.hi) - axis.map(axis.lo)).abs();
    axis.ticks
        .iter()
        .find(|t| (axis.map(t.value) - v).abs() <= eps)
        .map(|t| t.label.clone())
        .unwrap_or_default()
}

/// Pixels for the y tick labels and the axis title.
fn y_label_width(axis: &Axis) -> u32 {
    let chars = axis
        .ticks
        .iter()
        .map(|t| t.label.chars().count())
        .max()
        .unwrap_or(1) as u32;
    30 + 8 * chars
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    y_width: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut b = ChartBuilder::on(area);
    // The right margin leaves room for the last x tick label.
    b.margin_top(6)
        .margin_left(6)
        .margin_right(30)
        .margin_bottom(4)
        .x_label_area_size(46)
        .y_label_area_size(y_width);
    if let Some(t) = &p.title {
        b.caption(t, (FONT, 16));
    }
    let mut ch = b.build_cartesian_2d(Ticked::of(&p.x), Ticked::of(&p.y))?;
    let x_fmt = |v: &f64| tick_label(&p.x, *v);
    let y_fmt = |v: &f64| tick_label(&p.y, *v);
    ch.configure_mesh()
        .bold_line_style(BLACK.mix(0.1))
        .light_line_style(TRANSPARENT)
        .x_desc(p.x.label.as_str())
        .y_desc(p.y.label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let to = |q: &(f64, f64)| (p.x.map(q.0), p.y.map(q.1));
    for s in &p.series {
        let c = color(s.color);
        let pts: Vec<(f64, f64)> = s.points.iter().map(to).collect();
        match s.mark {
            Mark::Line => {
                ch.draw_series(LineSeries::new(pts, c.stroke_width(2)))?;
            }
            Mark::Reference => {
                ch.draw_series(LineSeries::new(pts, REFERENCE_GREY.stroke_width(2)))?;
            }
            Mark::Points => {
                ch.draw_series(pts.iter().map(|&q| Circle::new(q, 3, c.filled())))?;
            }
            Mark::OpenPoints => {
                ch.draw_series(pts.iter().map(|&q| Circle::new(q, 3, c.stroke_width(1))))?;
            }
            Mark::LinePoints => {
                ch.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
                ch.draw_series(pts.iter().map(|&q| Circle::new(q, 3, c.filled())))?;
            }
        }
    }
    if let Some(note) = &p.note {
        let plot = ch.plotting_area().strip_coord_spec();
        let (w, h) = plot.dim_in_pixel();
        let style = text_style(15, RGBColor(150, 30, 30)).pos(Pos::new(HPos::Center, VPos::Center));
        for (i, line) in note.lines().enumerate() {
            plot.draw_text(line, &style, (w as i32 / 2, h as i32 / 3 + 20 * i as i32))?;
        }
    }
    Ok(())
}
