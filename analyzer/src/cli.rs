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

use sgdwalk_workload::RunDescription;

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
                    let metadata = &report.header.metadata_json;
                    match RunDescription::from_metadata_json(metadata) {
                        Ok(desc) => write!(out, "{}", describe_run(&desc))?,
                        // Another tool's recording: its metadata as it is.
                        Err(_) => {
                            writeln!(out, "  metadata (not an sgdwalk-record run): {metadata}")?
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The run an sgdwalk-record recording describes, for `inspect`: model, data, optimizer,
/// schedule, length, record policy and where it was made, one aligned line each.
pub fn describe_run(d: &RunDescription) -> String {
    use sgdwalk_workload::DatasetName;
    use sgdwalk_workload::run::{OptimizerSpec, ScheduleKind};
    let mut lines: Vec<(&str, String)> = Vec::new();
    lines.push((
        "model",
        format!(
            "{} ({} trainable parameters, {} state elements)",
            d.model.short_name(),
            d.layout.parameter_count(),
            d.layout.len_elements()
        ),
    ));
    let ds = &d.dataset;
    let name = match (&ds.name, &ds.tensors, &ds.synthetic) {
        (DatasetName::Tensors, Some(t), _) => format!("tensors file {}", t.path.display()),
        (DatasetName::Synthetic, _, Some(s)) => format!(
            "synthetic ({}x{}x{} images, {} classes, seed {})",
            s.channels, s.image_size, s.image_size, s.classes, s.seed
        ),
        (name, _, _) => name.to_string(),
    };
    let range = |(a, b): (u32, u32)| format!("{a}..{b} ({} samples)", b.saturating_sub(a));
    lines.push((
        "dataset",
        format!(
            "{name}: train {}, val {}, test file {} samples{}",
            range(ds.train_range),
            range(ds.val_range),
            d.dataset_identity.test_samples,
            match &d.augmentation {
                Some(a) => format!(", augmentation {}", a.kind),
                None => ", no augmentation".to_owned(),
            }
        ),
    ));
    let decay = |wd: f64, decoupled: bool| {
        format!(
            "weight decay {wd} ({})",
            if decoupled { "decoupled" } else { "coupled" }
        )
    };
    let lr = d.schedule.base_lr;
    lines.push((
        "optimizer",
        match &d.optimizer {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                decoupled_weight_decay,
            } => format!(
                "{}, lr {lr}, momentum {momentum}, {}",
                if *nesterov { "sgd (nesterov)" } else { "sgd" },
                decay(*weight_decay, *decoupled_weight_decay)
            ),
            OptimizerSpec::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled_weight_decay,
            } => format!(
                "{}, lr {lr}, betas {beta1}/{beta2}, eps {eps}, {}",
                if *decoupled_weight_decay {
                    "adamw"
                } else {
                    "adam"
                },
                decay(*weight_decay, *decoupled_weight_decay)
            ),
        },
    ));
    let shape = match &d.schedule.kind {
        ScheduleKind::Constant => "constant".to_owned(),
        ScheduleKind::Step {
            every_epochs,
            gamma,
        } => format!("step: x{gamma} every {every_epochs} epoch(s)"),
        ScheduleKind::Cosine => "cosine to 0 over the run".to_owned(),
    };
    lines.push((
        "schedule",
        match d.schedule.warmup_steps {
            0 => shape,
            w => format!("{shape}, linear warm-up over {w} steps"),
        },
    ));
    let mut training = format!(
        "batch size {}, {} epoch(s) x {} steps = {} steps",
        d.batch_size, d.epochs, d.steps_per_epoch, d.total_steps
    );
    if let Some(fb) = &d.full_batch {
        training += if fb.sum_of_chunk_means {
            ", full batch (sum of chunk means)"
        } else {
            ", full batch (mean over the set)"
        };
    }
    if d.noise_std > 0.0 {
        training += &format!(", gradient noise std {}", d.noise_std);
    }
    lines.push(("training", training));
    let splits = d.eval_splits.as_ref().map_or_else(
        || "not stored".to_owned(),
        |s| {
            let names: Vec<&str> = s.iter().map(|x| x.as_str()).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(",")
            }
        },
    );
    lines.push((
        "recorded",
        format!(
            "policy {}; per-epoch evaluation of {splits} (batch {})",
            d.record_policy, d.eval_batch_size
        ),
    ));
    let s = &d.seeds;
    lines.push((
        "seeds",
        format!(
            "init {}, data order {}, augmentation {}, noise {}",
            s.init, s.data_order, s.augmentation, s.noise
        ),
    ));
    let p = &d.provenance;
    let mut made = format!(
        "{} {} on {}, device {}, {} thread(s), started {}",
        p.tool,
        p.tool_version,
        p.hostname,
        p.device,
        p.threads,
        sgdwalk_format::utc_time(p.started_unix_secs.saturating_mul(1000))
    );
    if !p.resumed_at_steps.is_empty() {
        made += &format!(", resumed at steps {:?}", p.resumed_at_steps);
    }
    lines.push(("made by", made));
    lines
        .iter()
        .map(|(k, v)| format!("  {k:<10} {v}\n"))
        .collect()
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
