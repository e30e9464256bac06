//! Helpers shared by the analyzer's bench binaries (each includes this file as a module).

use std::path::{Path, PathBuf};

use clap::Parser;
use sgdwalk_analyzer::config::RunSettings;
use sgdwalk_recorder::RecordArgs;

/// `sgdwalk-record`'s flags, parsed from a list.
#[derive(Parser)]
#[command(args_override_self = true)]
pub struct RecCli {
    #[command(flatten)]
    pub args: RecordArgs,
}

/// The median (upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The value after flag `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Settings of an analysis of `rec` on the CPU with Fashion-MNIST from data/fashion-mnist (the
/// benches measure in-process and write no tables).
pub fn cpu_settings(rec: &Path) -> RunSettings {
    RunSettings {
        recording: rec.to_path_buf(),
        out: PathBuf::from("unused"),
        data_dir: Some(PathBuf::from("data/fashion-mnist")),
        shard: sgdwalk_analyzer::config::Shard::default(),
        device: tch::Device::Cpu,
        threads: 0,
        force: false,
        progress: false,
        eval_is_default: false,
        label: None,
    }
}
