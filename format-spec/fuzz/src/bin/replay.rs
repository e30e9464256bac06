//! Stable-toolchain fuzz driver (libFuzzer needs nightly): replays every file given on the
//! command line (or a corpus directory), then mutates the golden files and random bytes with a
//! seeded generator for `--secs N` seconds (default 30), and prints the number of executions.
//! Any panic aborts with the offending input saved to `crash-<n>.bin`.
//!
//! `cargo run --release --bin replay -- [--secs N] [--seed S] [FILES_OR_DIRS...]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sgdwalk_format::testkit::synth::SplitMix64;

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                collect(&e.path(), out);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
}

fn run_one(bytes: &[u8], n: u64) -> bool {
    match std::panic::catch_unwind(|| sgdwalk_format_fuzz::check(bytes)) {
        Ok(opened) => opened,
        Err(_) => {
            let name = format!("crash-{n}.bin");
            let _ = std::fs::write(&name, bytes);
            eprintln!("PANIC on input saved as {name}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut secs = 30u64;
    let mut seed = 1u64;
    let mut inputs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => {
                secs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(secs);
                i += 1;
            }
            "--seed" => {
                seed = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(seed);
                i += 1;
            }
            p => collect(Path::new(p), &mut inputs),
        }
        i += 1;
    }
    let fixtures =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../fixtures");
    let mut seeds = Vec::new();
    collect(&fixtures, &mut seeds);
    let seeds: Vec<Vec<u8>> = seeds
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    let (mut execs, mut opened) = (0u64, 0u64);
    for p in &inputs {
        if let Ok(b) = std::fs::read(p) {
            opened += u64::from(run_one(&b, execs));
            execs += 1;
        }
    }
    let mut rng = SplitMix64::new(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let mut b = if seeds.is_empty() || rng.next_u64() % 8 == 0 {
            let len = (rng.next_u64() % 4096) as usize;
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[(rng.next_u64() % seeds.len() as u64) as usize].clone()
        };
        // 1-8 mutations: byte flips, overwrites with boundary values, truncation, duplication.
        for _ in 0..1 + rng.next_u64() % 8 {
            if b.is_empty() {
                break;
            }
            let at = (rng.next_u64() % b.len() as u64) as usize;
            match rng.next_u64() % 5 {
                0 => b[at] ^= 1 << (rng.next_u64() % 8),
                1 => b[at] = [0, 0xFF, 0x7F, 0x80, 1][(rng.next_u64() % 5) as usize],
                2 => b.truncate(at),
                3 => {
                    let end = (at + 8).min(b.len());
                    let v = rng.next_u64().to_le_bytes();
                    b[at..end].copy_from_slice(&v[..end - at]);
                }
                _ => {
                    let end = (at + (rng.next_u64() % 64) as usize).min(b.len());
                    let chunk = b[at..end].to_vec();
                    b.splice(at..at, chunk);
                }
            }
        }
        opened += u64::from(run_one(&b, execs));
        execs += 1;
    }
    println!("{execs} executions, {opened} inputs opened, 0 panics (seed {seed}, {secs} s)");
}
