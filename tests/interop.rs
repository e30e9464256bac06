//! `examples/python/read_walk.py`, a numpy reader written from SPEC.md, reads the same states,
//! sample ids and steps as the Rust reader, on a finished and on a killed (cut) recording.

use std::path::Path;

use sgdwalk_format::Reader;
use sha2::{Digest, Sha256};

use crate::analyzer::query_python;
use crate::recorder::{run, synthetic_args};

/// "step sha256(state) ids" lines, as read_walk.py --digests prints them.
fn rust_digests(path: &Path) -> Vec<String> {
    let mut r = Reader::open(path).unwrap();
    r.steps()
        .to_vec()
        .into_iter()
        .map(|t| {
            let bytes: Vec<u8> = r
                .state(t)
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let ids: Vec<String> = r
                .step_info(t)
                .unwrap()
                .sample_ids
                .iter()
                .map(u32::to_string)
                .collect();
            format!(
                "{t} {} {}",
                hex::encode(Sha256::digest(&bytes)),
                ids.join(",")
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

fn python_digests(path: &Path) -> Vec<String> {
    let script = crate::util::workspace_root().join("examples/python/read_walk.py");
    let out = std::process::Command::new(query_python())
        .arg(script)
        .arg(path)
        .arg("--digests")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn python_reader_matches_the_rust_reader() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("m.walk");
    // Momentum (pred2 with μ > 0), augmentation, several keyframes (K = 8).
    run(&synthetic_args(
        &rec,
        &["--optimizer", "momentum", "--epochs", "2"],
    ));
    let rust = rust_digests(&rec);
    assert_eq!(rust.len(), 25);
    assert_eq!(python_digests(&rec), rust);
    // A killed writer's file: both read the same complete prefix.
    let bytes = std::fs::read(&rec).unwrap();
    let cut = dir.path().join("cut.walk");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let rust_cut = rust_digests(&cut);
    assert!(rust_cut.len() > 5 && rust_cut.len() < 25);
    assert_eq!(python_digests(&cut), rust_cut);
}
