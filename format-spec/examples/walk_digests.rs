//! Prints what the Rust reader reads from each recording given, as one JSON line per file:
//! steps, finished or not, torn tail, attachments (SHA-256), epoch records, and per step the
//! SHA-256 of θ_t's little-endian bytes, sample ids, augmentation (hex), scalars (as f64 bit
//! patterns, `null` when absent) and the keyframe flag; or `{"path", "error": kind}` when the
//! file cannot be read. Other readers (the Python package's tests) compare themselves with it.
//!
//! `cargo run -p sgdwalk-format --example walk_digests -- FILE...`

use serde_json::{Value, json};
use sgdwalk_format::{FormatError, Reader};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(path: &std::path::Path) -> Result<Value, FormatError> {
    let mut r = Reader::open(path)?;
    let mut steps = Vec::new();
    for step in r.steps().to_vec() {
        let state = r.state(step)?;
        let bytes: Vec<u8> = state.iter().flat_map(|v| v.to_le_bytes()).collect();
        let info = r.step_info(step)?;
        let scalars: Vec<Option<String>> = info
            .scalars
            .to_array()
            .iter()
            .map(|v| v.map(|x| format!("{:016x}", x.to_bits())))
            .collect();
        steps.push(json!({
            "step": step,
            "state_sha256": hex(&Sha256::digest(&bytes)),
            "sample_ids": info.sample_ids,
            "augmentation": hex(&info.augmentation),
            "scalars": scalars,
            "keyframe": info.keyframe,
        }));
    }
    let mut attachments = serde_json::Map::new();
    for a in r.attachments().to_vec() {
        let data = r.attachment(&a.name)?.unwrap_or_default();
        attachments.insert(a.name.clone(), json!(hex(&Sha256::digest(data))));
    }
    Ok(json!({
        "path": path.display().to_string(),
        "finished": r.is_finished(),
        "torn_tail_bytes": r.torn_tail_bytes(),
        "metadata_json": r.header().metadata_json,
        "attachments": attachments,
        "epochs": r.epochs()?,
        "steps": steps,
    }))
}

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::PathBuf::from(&arg);
        let line = match describe(&path) {
            Ok(v) => v,
            Err(e) => json!({"path": arg, "error": e.kind_name(), "message": e.to_string()}),
        };
        println!("{line}");
    }
}
