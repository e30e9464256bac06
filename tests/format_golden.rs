//! Golden files: every file in `format-spec/fixtures/v1/` decodes to exactly what the seeded
//! generator (`sgdwalk_format::synth`) wrote, and every file in `fixtures/bad/` fails with its
//! exact error. Inventory checks fail on a missing or untested file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sgdwalk_format::synth::{fixture_inputs, fixture_resume, fixture_specs_v1};
use sgdwalk_format::{FormatError, Reader, verify};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/fixtures")
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect()
}

#[test]
fn golden_v1_inventory_matches_the_generator() {
    let specs: BTreeSet<String> = fixture_specs_v1()
        .iter()
        .map(|s| s.name.to_owned())
        .collect();
    assert_eq!(names_in(&fixtures().join("v1")), specs);
    let readme = std::fs::read_to_string(fixtures().join("v1/README.md")).unwrap();
    for name in &specs {
        assert!(readme.contains(name.as_str()), "{name} missing from README");
    }
}

#[test]
fn golden_v1_files_decode_to_the_generator_inputs() {
    for spec in fixture_specs_v1() {
        let path = fixtures().join("v1").join(spec.name);
        let mut r = Reader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert_eq!(r.header(), &spec.header, "{}", spec.name);
        assert_eq!(r.is_finished(), spec.finish, "{}", spec.name);
        // A torn last step is not visible.
        let visible = if spec.cut_tail_bytes > 0 {
            spec.steps.len() - 1
        } else {
            spec.steps.len()
        };
        assert_eq!(r.steps(), &spec.steps[..visible], "{}", spec.name);
        for (step, input) in spec.steps.iter().zip(fixture_inputs(&spec)).take(visible) {
            let state = r.state(*step).unwrap();
            assert!(
                state
                    .iter()
                    .zip(&input.state)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} step {step}",
                spec.name
            );
            let info = r.step_info(*step).unwrap();
            assert_eq!(info.sample_ids, input.sample_ids);
            assert_eq!(info.augmentation, input.augmentation);
            assert!(info.scalars.bits_eq(&input.scalars));
        }
        let epochs = r.epochs().unwrap();
        assert_eq!(epochs.len(), spec.epochs.len());
        for (got, want) in epochs.iter().zip(&spec.epochs) {
            assert_eq!((got.epoch, got.step), (want.epoch, want.step));
            for (a, b) in got.evals.iter().zip(&want.evals) {
                assert_eq!(
                    (&a.split, a.loss.to_bits(), a.accuracy.to_bits(), a.samples),
                    (&b.split, b.loss.to_bits(), b.accuracy.to_bits(), b.samples)
                );
            }
        }
        for &s in &spec.resume_steps {
            assert_eq!(r.resume_state(s).unwrap(), Some(fixture_resume(&spec, s)));
        }
        let report = verify(&path).unwrap();
        assert_eq!(report.steps, visible as u64);
        assert_eq!(report.is_clean(), spec.finish);
    }
}

/// How each bad file must fail, and at which stage.
fn expect_bad(name: &str, open: Result<Reader, FormatError>, path: &Path) {
    let verify_err = || verify(path).expect_err(name);
    match name {
        "not_a_recording.bin" => assert!(
            matches!(open, Err(FormatError::NotARecording { found_magic, .. }) if &found_magic[..4] == b"PK\x03\x04")
        ),
        "newer_major.sgdw" => assert!(matches!(
            open,
            Err(FormatError::NewerVersion {
                major: 2,
                minor: 0,
                supported_major: 1,
                ..
            })
        )),
        "unknown_incompat_flag.sgdw" => assert!(matches!(
            open,
            Err(FormatError::UnsupportedFeature {
                which: "incompat",
                flags: 1,
                ..
            })
        )),
        "prologue_crc.sgdw" => assert!(matches!(
            open,
            Err(FormatError::ChecksumMismatch {
                what: "prologue",
                offset_from_file_start: 0,
                ..
            })
        )),
        "truncated_header.sgdw" => assert!(matches!(
            open,
            Err(FormatError::Truncated {
                offset_from_file_start: 64,
                file_len_bytes: 100,
                ..
            })
        )),
        "trailer_crc.sgdw" => assert!(matches!(
            open,
            Err(FormatError::ChecksumMismatch {
                what: "trailer",
                ..
            })
        )),
        "garbage_tail.sgdw" => assert!(
            matches!(
                open,
                Err(FormatError::ChecksumMismatch {
                    what: "record payload",
                    ..
                })
            ),
            "{open:?}"
        ),
        "step_payload_bitflip.sgdw" => {
            assert!(open.is_ok(), "opens through the index");
            assert!(matches!(
                verify_err(),
                FormatError::ChecksumMismatch {
                    what: "record payload",
                    ..
                }
            ));
        }
        "chain_hash_mismatch.sgdw" => {
            assert!(open.is_ok());
            assert!(matches!(
                verify_err(),
                FormatError::ChainHashMismatch { chunk: 0, .. }
            ));
        }
        other => panic!("untested bad fixture {other}: add it to expect_bad"),
    }
}

#[test]
fn bad_files_fail_with_their_exact_error() {
    let dir = fixtures().join("bad");
    let names = names_in(&dir);
    assert_eq!(names.len(), 9, "inventory: {names:?}");
    for name in names {
        let path = dir.join(&name);
        let open = Reader::open(&path);
        if let Err(e) = &open {
            // Errors name the file last.
            assert!(e.to_string().ends_with(&*path.to_string_lossy()), "{e}");
        }
        expect_bad(&name, open, &path);
    }
}
