//! `sgdwalk-record`: train a network and record every step. Thin: parse, call, map errors.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use sgdwalk_recorder::{RecordArgs, StopFlag, record};

/// Train a network with SGD (or GD, Adam, ...) and record every step: full state, minibatch ids,
/// augmentation choices and scalars, into one .walk file.
///
/// Example: sgdwalk-record --model small-cnn --dataset fashion-mnist --epochs 2 -o run.walk
#[derive(Parser)]
#[command(name = "sgdwalk-record", version)]
struct Cli {
    #[command(flatten)]
    args: RecordArgs,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // --resume refuses flags that differ from the recording: it needs to know which were given.
    cli.args.note_given(&matches);
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sgdwalk-record: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let cfg = cli.args.validate()?;
    let stop = StopFlag::default();
    stop.install_signal_handlers()?;
    let summary = record(&cfg, &stop)?;
    if cli.args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprint!("{summary}");
    }
    // A run stopped by a signal still leaves a finished recording, but did not do all it was
    // asked: exit as the shell convention for that signal.
    Ok(match summary.interrupted_by_signal {
        None => ExitCode::SUCCESS,
        Some(sig) => ExitCode::from((128 + sig.clamp(0, 127)) as u8),
    })
}
