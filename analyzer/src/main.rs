//! `sgdwalk-analyze`: replay a recording and write the paper's measurements as Parquet.
//! Thin: parse, call, map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sgdwalk_analyzer::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.run(&mut out) {
        Ok(code) => code,
        // A closed pipe (`| head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("sgdwalk-analyze: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
