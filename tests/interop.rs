//! `examples/python/read_walk.py`, a numpy reader written from SPEC.md, reads the same states,
//! sample ids and steps as the Rust reader, on a finished and on a killed (cut) recording,
//! rejects every corrupt fixture with the Rust reader's error class, accepts every edge
//! fixture, and reads the same trainable flags from the run description (SPEC Appendix A) as
//! the Rust reader and the independent reader of `format-spec/tests/spec_reader/reader.rs`.

use std::path::{Path, PathBuf};

use sgdwalk_format::{Reader, verify};
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

/// Runs read_walk.py on `path` with `flag`: (success, stdout lines, stderr).
fn python(path: &Path, flag: &str) -> (bool, Vec<String>, String) {
    let script = crate::util::workspace_root().join("examples/python/read_walk.py");
    let out = std::process::Command::new(query_python())
        .arg(script)
        .arg(path)
        .arg(flag)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn python_digests(path: &Path) -> Vec<String> {
    let (ok, lines, stderr) = python(path, "--digests");
    assert!(ok, "{}: {stderr}", path.display());
    lines
}

/// (name, trainable) of every tensor, as read_walk.py --tensors prints them.
fn python_trainable(path: &Path) -> Vec<(String, bool)> {
    let (ok, lines, stderr) = python(path, "--tensors");
    assert!(ok, "{stderr}");
    lines
        .iter()
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 3, "{l}");
            (cols[0].to_owned(), cols[2] == "1")
        })
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
    assert!(python(&rec, "--verify").0);

    // Trainable flags: the run description, the independent reader and Python agree.
    let mut reader = Reader::open(&rec).unwrap();
    let desc = sgdwalk_recorder::run_description(reader.header(), &rec).unwrap();
    let flags: Vec<(String, bool)> = desc
        .layout
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.trainable))
        .collect();
    let names: Vec<&str> = reader
        .header()
        .layout
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        flags.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        names
    );
    // small-cnn has BatchNorm: trained weights and untrained running statistics.
    assert!(flags.iter().any(|f| f.1) && flags.iter().any(|f| !f.1));
    assert!(
        flags
            .iter()
            .all(|(n, t)| *t != (n.ends_with("running_mean") || n.ends_with("running_var"))),
        "{flags:?}"
    );
    let spec = crate::spec_reader::parse(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(
        crate::spec_reader::trainable_flags(&spec),
        Ok(Some(flags.clone()))
    );
    assert_eq!(python_trainable(&rec), flags);

    // SPEC §4.3: update_norm is the norm of the update of the trainable parameters only; the
    // whole-state difference also holds the BatchNorm running statistics' change.
    let trainable: Vec<std::ops::Range<usize>> = desc
        .layout
        .entries
        .iter()
        .filter(|e| e.trainable)
        .map(|e| e.offset_elements..e.offset_elements + e.len_elements)
        .collect();
    for t in 0u64..24 {
        let (a, b) = (reader.state(t).unwrap(), reader.state(t + 1).unwrap());
        let sq = |d: f64| d * d;
        let whole: f64 = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| sq(f64::from(*y) - f64::from(*x)))
            .sum::<f64>()
            .sqrt();
        let params: f64 = trainable
            .iter()
            .flat_map(|r| a[r.clone()].iter().zip(&b[r.clone()]))
            .map(|(x, y)| sq(f64::from(*y) - f64::from(*x)))
            .sum::<f64>()
            .sqrt();
        let recorded = reader.step_info(t).unwrap().scalars.update_norm.unwrap();
        // Equal up to the f32 rounding of θ_t + Δ_t (observed: 3e-8 relative).
        assert!(
            (params - recorded).abs() <= 1e-5 * recorded,
            "step {t}: trainable {params} recorded {recorded}"
        );
        // Observed: 2.1 times at step 0, at least 1.25 times later.
        assert!(
            whole > 1.1 * recorded,
            "step {t}: whole {whole} recorded {recorded}"
        );
    }

    // A killed writer's file: both read the same complete prefix.
    let bytes = std::fs::read(&rec).unwrap();
    let cut = dir.path().join("cut.walk");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let rust_cut = rust_digests(&cut);
    assert!(rust_cut.len() > 5 && rust_cut.len() < 25);
    assert_eq!(python_digests(&cut), rust_cut);
}

fn fixture_files(sub: &str) -> Vec<PathBuf> {
    let dir = crate::util::workspace_root()
        .join("format-spec/fixtures")
        .join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    v.sort();
    v
}

#[test]
fn python_reader_accepts_and_rejects_the_fixtures_as_the_rust_reader() {
    for path in fixture_files("v1").iter().chain(&fixture_files("edge")) {
        let (ok, _, stderr) = python(path, "--verify");
        assert!(ok, "{}: {stderr}", path.display());
        assert_eq!(
            python_digests(path),
            rust_digests(path),
            "{}",
            path.display()
        );
    }
    let bad = fixture_files("bad");
    assert!(bad.len() >= 16);
    for path in bad {
        // The Rust reader's first error: opening, then verifying everything.
        let rust = Reader::open(&path)
            .and_then(|_| verify(&path))
            .expect_err("a bad fixture verifies");
        let (ok, _, stderr) = python(&path, "--verify");
        assert!(!ok, "{} accepted by read_walk.py", path.display());
        assert!(
            stderr.starts_with(&format!("error: {}: ", rust.kind_name())),
            "{}: Rust says {rust}, Python says {stderr}",
            path.display()
        );
    }
}

#[test]
fn python_reader_reads_typed_tensors_and_attachments_as_the_rust_reader() {
    let v1 = crate::util::workspace_root().join("format-spec/fixtures/v1");
    for name in ["typed_attachment.sgdw", "typed_attachment_killed.sgdw"] {
        let path = v1.join(name);
        let r = Reader::open(&path).unwrap();
        // Attachments: name, length and SHA-256 (checked by both readers).
        let (ok, lines, stderr) = python(&path, "--attachments");
        assert!(ok, "{name}: {stderr}");
        let rust: Vec<String> = r
            .attachments()
            .iter()
            .map(|a| {
                let data = r.attachment(&a.name).unwrap().unwrap();
                assert_eq!(hex::encode(Sha256::digest(data)), a.sha256_hex());
                format!("{}\t{}\t{}", a.name, a.len_bytes, a.sha256_hex())
            })
            .collect();
        assert_eq!(lines, rust, "{name}");
        assert_eq!(rust.len(), 2);
    }
    // state_dict: every tensor with its recorded dtype, from the Rust reader's words.
    let path = v1.join("typed_attachment.sgdw");
    let script = crate::util::workspace_root().join("examples/python");
    let code = format!(
        "import sys; sys.path.insert(0, {:?}); import read_walk\n\
         w = read_walk.open({:?})\n\
         for t in w.steps:\n\
         \x20   for k, v in w.state_dict(t).items():\n\
         \x20       print(t, k, v.dtype, 'x'.join(map(str, v.shape)), v.tobytes().hex())\n",
        script.display().to_string(),
        path.display().to_string()
    );
    let out = std::process::Command::new(query_python())
        .arg("-c")
        .arg(code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut reader = Reader::open(&path).unwrap();
    let numpy = |d: sgdwalk_format::DType| match d.name() {
        "f32" => "float32",
        "i64" => "int64",
        "u8" => "uint8",
        "bool" => "bool",
        "f16" => "float16",
        other => panic!("{other}"),
    };
    let mut rust = Vec::new();
    for t in reader.steps().to_vec() {
        let bytes: Vec<u8> = reader
            .state(t)
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        for spec in &reader.header().layout {
            let start = spec.offset_elements as usize * 4;
            let len = (spec.numel().unwrap() * spec.dtype.size_bytes()) as usize;
            let shape: Vec<String> = spec.shape.iter().map(u64::to_string).collect();
            rust.push(format!(
                "{t} {} {} {} {}",
                spec.name,
                numpy(spec.dtype),
                shape.join("x"),
                hex::encode(&bytes[start..start + len])
            ));
        }
    }
    assert_eq!(py, rust);
    assert!(
        rust.iter().any(|l| l.starts_with("3 count int64  ")),
        "{rust:?}"
    );
}
