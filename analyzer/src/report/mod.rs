//! `sgdwalk-analyze report`: reads the tables of one or more analyses with polars (lazy
//! queries), restates each claim of *A Walk with SGD* with the measured numbers and a verdict,
//! and writes `report.md`, `summary.parquet` and PNG figures.
//!
//! - [`load`]: the polars queries; each analysis folder becomes one [`RunData`] of plain vectors.
//! - [`claims`]: the paper's claims, the rule that decides each verdict, the Markdown.
//! - [`plots`]: the figures (plotters, bitmap back end, a TrueType font read from disk).

pub mod claims;
pub mod load;
pub mod plots;

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

pub use load::{RunData, RunKind};

/// Everything that stops a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The folder is not the output of `sgdwalk-analyze analyze`.
    #[error("not an sgdwalk analysis folder (no {missing}): {}", dir.display())]
    NotAnAnalysis { dir: PathBuf, missing: &'static str },
    /// A file of the analysis does not parse.
    #[error("cannot read {}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A polars query over a table failed (a missing column, a foreign file, a corrupt page).
    #[error("reading table {table} of {}: {source}", dir.display())]
    Query {
        dir: PathBuf,
        table: &'static str,
        #[source]
        source: polars::error::PolarsError,
    },
    /// Two folders hold the same run under the same label.
    #[error("two analysis folders are labelled {label:?}: {} and {}; pass distinct folders", first.display(), second.display())]
    DuplicateLabel {
        label: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// No TrueType font for the figures.
    #[error(
        "no font for the figures: tried {tried}; install fonts-dejavu-core, pass --font FILE, or --no-plots"
    )]
    NoFont { tried: String },
    /// Drawing a figure failed.
    #[error("drawing {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    /// An I/O error.
    #[error("{source}: {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Flags of `sgdwalk-analyze report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Analysis folders (outputs of `sgdwalk-analyze analyze`), one per run.
    #[arg(required = true)]
    pub analyses: Vec<PathBuf>,
    /// Output folder for report.md, summary.parquet and the figures.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// A Markdown file placed at the top of the report (how and where the runs were made).
    #[arg(long)]
    pub preamble: Option<PathBuf>,
    /// A segment of the valley floor counts as a barrier when its barrier exceeds this fraction
    /// of the higher end's loss.
    #[arg(long, default_value_t = 1e-3)]
    pub barrier_threshold: f64,
    /// TrueType font for the figures (default: DejaVu Sans or Liberation Sans from the system).
    #[arg(long)]
    pub font: Option<PathBuf>,
    /// Write report.md and summary.parquet only.
    #[arg(long)]
    pub no_plots: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `report` wrote.
#[derive(Debug, Serialize)]
pub struct ReportSummary {
    pub runs: Vec<String>,
    pub report: String,
    pub summary_parquet: String,
    pub summary_rows: usize,
    pub figures: Vec<String>,
    pub verdicts: Vec<(String, String)>,
}

impl fmt::Display for ReportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "runs: {}", self.runs.join(", "))?;
        for (claim, verdict) in &self.verdicts {
            writeln!(f, "  {verdict:<13} {claim}")?;
        }
        writeln!(
            f,
            "report: {}\nsummary: {} ({} rows)",
            self.report, self.summary_parquet, self.summary_rows
        )?;
        if !self.figures.is_empty() {
            writeln!(f, "figures: {}", self.figures.join(", "))?;
        }
        Ok(())
    }
}

/// Reads every analysis, writes `summary.parquet`, `report.md` and (unless `--no-plots`) the
/// figures into `args.out`. The Markdown and the summary are written before the figures, so a
/// missing font loses no numbers.
pub fn report(args: &ReportArgs) -> Result<ReportSummary, ReportError> {
    let mut runs: Vec<RunData> = Vec::with_capacity(args.analyses.len());
    for dir in &args.analyses {
        let run = load::load_run(dir, args.barrier_threshold)?;
        if let Some(other) = runs.iter().find(|r| r.label == run.label) {
            return Err(ReportError::DuplicateLabel {
                label: run.label.clone(),
                first: other.dir.clone(),
                second: dir.clone(),
            });
        }
        runs.push(run);
    }
    runs.sort_by(RunData::order);
    std::fs::create_dir_all(&args.out).map_err(|source| ReportError::Io {
        path: args.out.clone(),
        source,
    })?;
    let summary_path = args.out.join("summary.parquet");
    let summary_rows = load::write_summary(&runs, &summary_path)?;
    let preamble = match &args.preamble {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| ReportError::Io {
                path: p.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let assessed = claims::assess(&runs, args.barrier_threshold);
    let figures_planned = if args.no_plots {
        Vec::new()
    } else {
        plots::planned(&runs)
    };
    let markdown = claims::markdown(
        &runs,
        &assessed,
        preamble.as_deref(),
        &figures_planned,
        args.barrier_threshold,
    );
    let report_path = args.out.join("report.md");
    write_atomic(&report_path, markdown.as_bytes())?;
    let figures = if args.no_plots {
        Vec::new()
    } else {
        let font = plots::load_font(args.font.as_deref())?;
        plots::draw_all(&runs, &args.out, font, args.barrier_threshold)?
    };
    Ok(ReportSummary {
        runs: runs.iter().map(|r| r.label.clone()).collect(),
        report: report_path.display().to_string(),
        summary_parquet: summary_path.display().to_string(),
        summary_rows,
        figures: figures.iter().map(|p| p.display().to_string()).collect(),
        verdicts: assessed
            .iter()
            .map(|c| (c.claim.to_string(), c.verdict.to_string()))
            .collect(),
    })
}

/// Writes through a temporary file and a rename: a reader never sees half a report.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::analyze::write_file_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}
