//! `sgdwalk-analyze report`: reads the tables of one or more analyses with polars (lazy
//! queries), restates each claim of *A Walk with SGD* with the measured numbers and a verdict,
//! and writes `report.md`, `summary.parquet` and figures (PNG, SVG and their data as Parquet).
//!
//! Built with the cargo feature `report` (on by default): polars and plotters are compiled only
//! for it, so analysis-only builds (`--no-default-features`) leave them out.
//!
//! - [`load`]: the polars queries; each analysis folder ([`crate::dir::AnalysisDir`]) becomes
//!   one [`RunData`] of plain vectors.
//! - [`claims`]: the paper's claims as data ([`claims::ClaimSpec`]): statement, source, the rule
//!   that decides each verdict, and the function that measures it.
//! - [`markdown`]: `report.md`, rendered from the assessed claims and the runs.
//! - [`summary`]: `summary.parquet`, every aggregate as one tidy table.
//! - [`plots`]: the figures, planned as data then drawn (plotters: PNG with a TrueType font
//!   read from disk, and SVG), each with its points as Parquet.

pub mod claims;
pub mod load;
pub mod markdown;
pub mod plots;
pub mod summary;

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

pub use load::{RunData, RunKind};

use crate::dir::{AnalysisDir, DirError};
use crate::tables::TableName;

/// Everything that stops a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The analysis folder's own files: no manifest (not the output of `sgdwalk-analyze
    /// analyze`: [`DirError::NotAnAnalysis`]), a manifest or run description that does not
    /// parse ([`DirError::BadFile`]), or a folder that cannot be listed.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The folder predates the run description (`sgdwalk-analyze` before 0.1).
    #[error(
        "not an sgdwalk analysis folder of sgdwalk-analyze 0.1 or later (no {}; rerun analyze): {}",
        AnalysisDir::RUN_INFO_FILE,
        dir.display()
    )]
    NoRunInfo { dir: PathBuf },
    /// A file of the analysis cannot be used (stale numbers), or summary.parquet cannot be
    /// encoded.
    #[error("cannot read {}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A polars query over a table failed (a missing column, a foreign file, a corrupt page).
    #[error("reading table {table} of {}", dir.display())]
    Query {
        dir: PathBuf,
        table: TableName,
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
    #[error("i/o error on {}", path.display())]
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
    /// Output folder for report.md, summary.parquet and the figures (each as PNG and SVG, with
    /// the points drawn as <figure>.parquet).
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
    /// The PNG figures, linked from report.md.
    pub figures: Vec<String>,
    /// Beside each PNG: the same figure as SVG and its points as Parquet.
    pub figure_files: Vec<String>,
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
            writeln!(
                f,
                "figures as SVG and their data: {}",
                self.figure_files.join(", ")
            )?;
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
    let summary_rows = summary::write_summary(&runs, &summary_path)?;
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
        plots::planned(&runs, args.barrier_threshold)
    };
    let report_md = markdown::markdown(
        &runs,
        &assessed,
        preamble.as_deref(),
        &figures_planned,
        args.barrier_threshold,
    );
    let report_path = args.out.join("report.md");
    write_atomic(&report_path, report_md.as_bytes())?;
    let figures = if args.no_plots {
        Vec::new()
    } else {
        let font = plots::load_font(args.font.as_deref())?;
        plots::draw_all(&runs, &args.out, font, args.barrier_threshold)?
    };
    let show = |p: &PathBuf| p.display().to_string();
    Ok(ReportSummary {
        runs: runs.iter().map(|r| r.label.clone()).collect(),
        report: report_path.display().to_string(),
        summary_parquet: summary_path.display().to_string(),
        summary_rows,
        figures: figures.iter().map(|f| show(&f.png)).collect(),
        figure_files: figures
            .iter()
            .flat_map(|f| [show(&f.svg), show(&f.data)])
            .collect(),
        verdicts: assessed
            .iter()
            .map(|c| (c.claim.to_string(), c.verdict.to_string()))
            .collect(),
    })
}

/// Writes durably through a temporary file and a rename: a reader never sees half a report.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    use std::io::Write;
    crate::dir::write_durably(path, |f| f.write_all(bytes)).map_err(|e| ReportError::Io {
        path: path.to_path_buf(),
        source: e.into_io(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{AnalyzeConfig, Phase};
    use crate::dir::{ANALYSIS_REVISION, Manifest};
    use sgdwalk_workload::BnPolicy;

    fn manifest(revision: u32, bn: Vec<BnPolicy>) -> Manifest {
        Manifest {
            recording_id: "00".into(),
            shard_count: 1,
            revision,
            config: AnalyzeConfig {
                phases: vec![Phase::Curvature],
                bn,
                ..AnalyzeConfig::default()
            },
            label: None,
        }
    }

    /// Errors of reading a folder's contract, before any table is read.
    fn load_err(dir: &Path) -> ReportError {
        load::load_run(dir, 1e-3).unwrap_err()
    }

    #[test]
    fn a_missing_or_broken_manifest_names_the_folder_and_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = AnalysisDir::new(tmp.path());
        let err = load_err(folder.root());
        assert!(
            matches!(err, ReportError::Dir(DirError::NotAnAnalysis { .. })),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(AnalysisDir::MANIFEST_FILE), "{msg}");
        assert!(msg.contains(&*tmp.path().to_string_lossy()), "{msg}");

        std::fs::write(folder.manifest_path(), "{\"revision\": 2").unwrap();
        let err = load_err(folder.root());
        assert!(
            matches!(err, ReportError::Dir(DirError::BadFile { .. })),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&*folder.manifest_path().to_string_lossy()),
            "{msg}"
        );
    }

    #[test]
    fn a_folder_without_run_description_or_with_stale_curvature_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = AnalysisDir::new(tmp.path());
        folder
            .write_manifest(&manifest(ANALYSIS_REVISION, vec![BnPolicy::EvalMode]))
            .unwrap();
        let err = load_err(folder.root());
        assert!(matches!(err, ReportError::NoRunInfo { .. }), "{err}");
        assert!(
            err.to_string().contains(AnalysisDir::RUN_INFO_FILE),
            "{err}"
        );

        // Revision 1 computed eval-mode curvature with batch statistics: refused when the
        // report would read it (the first policy), not when only a later policy is stale.
        folder
            .write_manifest(&manifest(1, vec![BnPolicy::EvalMode]))
            .unwrap();
        let err = load_err(folder.root());
        assert!(matches!(err, ReportError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("batch statistics"), "{err}");
        folder
            .write_manifest(&manifest(1, vec![BnPolicy::TrainMode, BnPolicy::EvalMode]))
            .unwrap();
        assert!(matches!(
            load_err(folder.root()),
            ReportError::NoRunInfo { .. }
        ));
    }
}
