//! Random command lines for a binary: each run must end by itself with exit status 0, 1 or 2
//! and, when not 0, say why on stderr; never a panic, an abort (a signal), or a hang.
//!
//! Included with `#[path]` by the binaries' own CLI tests (recorder/tests/cli.rs and
//! analyzer/tests/cli.rs), where cargo says where each binary is.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A flag and the values to draw for it; an empty list is a flag without a value.
pub struct Flag {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// splitmix64: reproducible cases from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs `cases` command lines: `base(case)` with up to `max_flags` flags drawn from `flags`
/// (replacing the value of a flag the base line has). Returns how often each exit status was seen, so a caller can check that the cases
/// reached both success and refusal.
pub fn fuzz(
    bin: &Path,
    base: &dyn Fn(usize) -> Vec<String>,
    flags: &[Flag],
    max_flags: usize,
    cases: usize,
    seed: u64,
    timeout: Duration,
) -> std::collections::BTreeMap<i32, usize> {
    let mut rng = Rng(seed);
    let mut seen = std::collections::BTreeMap::new();
    for case in 0..cases {
        let mut args = base(case);
        for _ in 0..rng.below(max_flags + 1) {
            let flag = &flags[rng.below(flags.len())];
            let value = (!flag.values.is_empty())
                .then(|| flag.values[rng.below(flag.values.len())].to_string());
            // A flag the base line (or an earlier draw) already has takes the drawn value, so
            // the line stays one a user could type (a flag given twice is a usage error).
            match (args.iter().position(|a| a == flag.name), value) {
                (Some(i), Some(v)) if i + 1 < args.len() => args[i + 1] = v,
                (Some(_), _) => {}
                (None, v) => {
                    args.push(flag.name.to_string());
                    args.extend(v);
                }
            }
        }
        let shown = format!(
            "case {case} (seed {seed}): {} {}",
            bin.display(),
            args.join(" ")
        );
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{shown}: cannot start: {e}"));
        // Drain stderr while waiting, so a chatty child cannot block on a full pipe.
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown}: still running after {timeout:?} (a hang)");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = reader.join().expect("stderr reader");
        let Some(code) = status.code() else {
            panic!("{shown}: ended by a signal ({status}); stderr:\n{err}");
        };
        assert!(
            matches!(code, 0..=2),
            "{shown}: exit status {code}; stderr:\n{err}"
        );
        assert!(!err.contains("panicked"), "{shown}: panicked:\n{err}");
        assert!(
            code == 0 || !err.trim().is_empty(),
            "{shown}: exit status {code} without a message"
        );
        *seen.entry(code).or_insert(0) += 1;
    }
    seen
}
