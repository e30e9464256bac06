//! The command line: `analyze`, `report`, `verify`, `inspect`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::AnalyzeArgs;

/// Replay an sgdwalk recording and measure the loss landscape along the path: interpolation
/// between consecutive steps, valley floors, barriers, geometry and curvature, as Parquet.
///
/// Example: sgdwalk-analyze analyze run.walk -o analysis/ --eval probe:1000
#[derive(Debug, Parser)]
#[command(name = "sgdwalk-analyze", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute the measurements and write Parquet tables.
    ///
    /// Example: sgdwalk-analyze analyze run.walk -o out/ --phases geometry,interp,floors
    Analyze(Box<AnalyzeArgs>),
    /// Read one or more analysis folders (one per run) and write report.md, with each claim of
    /// the paper, the measured numbers and a verdict, summary.parquet and PNG figures.
    ///
    /// Example: sgdwalk-analyze report runs/*/analysis -o report/
    Report(Box<crate::report::ReportArgs>),
    /// Check every checksum and the whole delta chain of a recording; exits 1 on any problem.
    ///
    /// Example: sgdwalk-analyze verify run.walk
    Verify {
        /// The recording.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a recording's header, the steps present, and sizes and ratios per codec.
    ///
    /// Example: sgdwalk-analyze inspect run.walk --json
    Inspect {
        /// The recording.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// Runs the command, writing results to `out`.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
        match &self.command {
            Command::Analyze(args) => {
                let (cfg, settings) = args.validate()?;
                let summary = crate::analyze::analyze(&cfg, &settings)?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
                } else {
                    write!(out, "{summary}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Report(args) => {
                let summary = crate::report::report(args)?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
                } else {
                    write!(out, "{summary}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Verify { file, json } => {
                let report = sgdwalk_format::verify(file)?;
                if *json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
                } else {
                    writeln!(out, "{report}")?;
                }
                Ok(if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Command::Inspect { file, json } => {
                let report = sgdwalk_format::inspect(file)?;
                if *json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
                } else {
                    writeln!(out, "{report}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
