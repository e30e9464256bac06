//! The command line: `analyze`, `report`, `verify`, `inspect`.
//!
//! `report` needs the cargo feature `report` (on by default). A build without it keeps the
//! subcommand, says so in `--help`, and refuses it with exit status 2 and how to get it, so a
//! script that calls it on an analysis-only build fails with the reason instead of clap's
//! "unrecognized subcommand".

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
    #[cfg(feature = "report")]
    Report(Box<crate::report::ReportArgs>),
    /// Not in this build: sgdwalk-analyze was built without the `report` feature (an
    /// analysis-only build); rebuild with default features to write reports.
    #[cfg(not(feature = "report"))]
    Report {
        /// Ignored: the report is not in this build.
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<std::ffi::OsString>,
    },
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

/// Why `report` fails in a build without the `report` feature (main exits 2 on errors).
#[cfg(not(feature = "report"))]
pub const NO_REPORT: &str =
    "this sgdwalk-analyze was built without the report feature; rebuild with default features";

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
            #[cfg(feature = "report")]
            Command::Report(args) => {
                let summary = crate::report::report(args)?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
                } else {
                    write!(out, "{summary}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            #[cfg(not(feature = "report"))]
            Command::Report { .. } => Err(anyhow::anyhow!(NO_REPORT)),
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// The `report` subcommand's `--help` text.
    fn report_help() -> String {
        let mut cmd = Cli::command();
        cmd.find_subcommand_mut("report")
            .expect("report is always a subcommand")
            .render_long_help()
            .to_string()
    }

    #[cfg(feature = "report")]
    #[test]
    fn report_is_there_with_the_feature() {
        assert!(report_help().contains("summary.parquet"));
        let cli = Cli::try_parse_from(["sgdwalk-analyze", "report", "a", "-o", "r"]);
        assert!(cli.is_ok());
    }

    #[cfg(not(feature = "report"))]
    #[test]
    fn report_without_the_feature_says_so_and_fails() {
        assert!(report_help().contains("without the `report` feature"));
        let cli = Cli::try_parse_from(["sgdwalk-analyze", "report", "a", "-o", "r", "--json"])
            .expect("any arguments parse");
        let err = cli.run(&mut Vec::new()).expect_err("report is refused");
        assert_eq!(err.to_string(), super::NO_REPORT);
    }
}
