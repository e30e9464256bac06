//! Golden files: every file in `format-spec/fixtures/v1/` decodes to exactly what the seeded
//! generator (`sgdwalk_format::testkit::synth`) wrote, every file in `fixtures/bad/` fails with its
//! exact error, and every file in `fixtures/edge/` (valid bytes the writer never produces)
//! reads as the data of `v1/basic_pred2.sgdw`. Inventory checks fail on a missing or untested
//! file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sgdwalk_format::testkit::synth::{
    FixtureSpec, edge_fixtures, fixture_inputs, fixture_resume, fixture_specs_v1,
};
use sgdwalk_format::{DType, FormatError, Reader, verify};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("fixtures")
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

/// Asserts that the file at `path` holds exactly what the generator wrote for `spec`, and
/// verifies it; `finished` says whether the file is finished.
fn assert_holds_spec(path: &Path, spec: &FixtureSpec, finished: bool) {
    let name = path.display();
    let mut r = Reader::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(r.header(), &spec.header, "{name}");
    assert_eq!(r.is_finished(), finished, "{name}");
    // A torn last step is not visible.
    let visible = if spec.cut_tail_bytes > 0 {
        spec.steps.len() - 1
    } else {
        spec.steps.len()
    };
    assert_eq!(r.steps(), &spec.steps[..visible], "{name}");
    for (step, input) in spec.steps.iter().zip(fixture_inputs(spec)).take(visible) {
        let state = r.state(*step).unwrap();
        assert!(
            state
                .iter()
                .zip(&input.state)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} step {step}"
        );
        let info = r.step_info(*step).unwrap();
        assert_eq!(info.sample_ids, input.sample_ids, "{name} step {step}");
        assert_eq!(info.augmentation, input.augmentation, "{name} step {step}");
        assert!(info.scalars.bits_eq(&input.scalars), "{name} step {step}");
    }
    let epochs = r.epochs().unwrap();
    assert_eq!(epochs.len(), spec.epochs.len(), "{name}");
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
        assert_eq!(r.resume_state(s).unwrap(), Some(fixture_resume(spec, s)));
    }
    // Format 1.1: attachments in order, data and SHA-256 exact; the typed layout's bit.
    let names: Vec<(&str, u64)> = r
        .attachments()
        .iter()
        .map(|a| (a.name.as_str(), a.len_bytes))
        .collect();
    let want: Vec<(&str, u64)> = spec
        .attachments
        .iter()
        .map(|(n, d)| (*n, d.len() as u64))
        .collect();
    assert_eq!(names, want, "{name}");
    for (n, data) in &spec.attachments {
        assert_eq!(
            r.attachment(n).unwrap(),
            Some(data.as_slice()),
            "{name} {n}"
        );
        let a = r.attachments().iter().find(|a| a.name == *n).unwrap();
        assert_eq!(&a.sha256[..], &Sha256::digest(data)[..], "{name} {n}");
        let hex: String = a.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a.sha256_hex(), hex);
    }
    assert_eq!(r.attachment("absent").unwrap(), None);
    let typed = spec.header.layout.iter().any(|t| t.dtype != DType::F32);
    let absent_mask = spec.format_minor >= 2;
    let split = spec.header.codec.split_streams;
    assert!(
        !split || spec.format_minor >= 3,
        "{name}: split streams are 1.3"
    );
    assert_eq!(
        r.prologue().incompat_flags,
        u64::from(typed) | u64::from(absent_mask) << 1 | u64::from(split) << 2,
        "{name}"
    );
    assert_eq!(
        r.prologue().minor,
        spec.format_minor,
        "{name}: a fixture keeps the version it was written with"
    );
    let report = verify(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(report.steps, visible as u64);
    assert_eq!(report.attachments, r.attachments(), "{name}");
    assert_eq!(report.is_clean(), finished, "{name}");
}

#[test]
fn golden_v1_files_decode_to_the_generator_inputs() {
    for spec in fixture_specs_v1() {
        let path = fixtures().join("v1").join(spec.name);
        assert_holds_spec(&path, &spec, spec.finish);
    }
}

#[test]
fn edge_files_hold_the_basic_fixture_and_match_the_generator() {
    let basic = fixture_specs_v1()
        .into_iter()
        .find(|s| s.name == "basic_pred2.sgdw")
        .unwrap();
    let bytes = std::fs::read(fixtures().join("v1/basic_pred2.sgdw")).unwrap();
    let edges = edge_fixtures(&bytes).unwrap();
    let dir = fixtures().join("edge");
    let names: BTreeSet<String> = edges.iter().map(|e| e.name.to_owned()).collect();
    assert_eq!(names_in(&dir), names, "inventory");
    for e in &edges {
        let path = dir.join(e.name);
        // The stored file is the generator's output (the fixtures are derived, not golden).
        assert_eq!(std::fs::read(&path).unwrap(), e.bytes, "{}", e.name);
        assert_holds_spec(&path, &basic, e.finished);
    }
    // Unknown SKIPPABLE kinds are data records, in file order, whichever path read them.
    for name in ["skippable_flags.sgdw", "skippable_flags_unfinished.sgdw"] {
        let r = Reader::open(&dir.join(name)).unwrap();
        let unknown: Vec<(u8, u64)> = r
            .entries()
            .iter()
            .filter(|e| e.record_kind().is_none())
            .map(|e| (e.kind, e.step))
            .collect();
        assert_eq!(unknown, [(200, u64::MAX), (255, 5)], "{name}");
    }
}

/// The bytes of a finished file up to its INDEX record: the same records, unfinished.
fn unfinished_prefix(bytes: &[u8]) -> Vec<u8> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let footer = u64_at(bytes.len() - 32) as usize;
    let index = u64_at(footer + 32) as usize;
    bytes[..index].to_vec()
}

#[test]
fn scanning_applies_the_rules_the_index_path_applies() {
    // The same damage read through a scan (no index): the same kind of error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sgdw");
    for (name, reason) in [
        ("unknown_kind.sgdw", "unknown record kind 200"),
        ("missing_keyframe.sgdw", "keyframe interval"),
        ("attachment_duplicate_name.sgdw", "is used twice"),
        ("attachment_after_step.sgdw", "after a step"),
    ] {
        let bytes = std::fs::read(fixtures().join("bad").join(name)).unwrap();
        std::fs::write(&path, unfinished_prefix(&bytes)).unwrap();
        match Reader::open(&path) {
            Err(FormatError::Corrupt { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
            other => panic!("{name}: {other:?}"),
        }
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
                flags: 0x8000_0000_0000_0000,
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
        "header_delta_codec.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "header record", offset_from_file_start: 64, reason, .. }) if reason.contains("delta_codec")),
            "{open:?}"
        ),
        "missing_keyframe.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "step record", reason, .. }) if reason.contains("step 2 is a multiple of the keyframe interval 2")),
            "{open:?}"
        ),
        "unknown_kind.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "record", reason, .. }) if reason.contains("unknown record kind 200")),
            "{open:?}"
        ),
        "ids_raw_length.sgdw" | "empty_ids_zstd_no_frame.sgdw" | "aug_raw_length.sgdw" => {
            // The step records are sound; reading their ids or augmentation is not.
            let step = if name == "empty_ids_zstd_no_frame.sgdw" {
                23
            } else {
                1
            };
            let r = open.unwrap();
            let err = r.step_info(step).unwrap_err();
            let what = if name == "aug_raw_length.sgdw" {
                "augmentation"
            } else {
                "sample ids"
            };
            assert!(
                matches!(&err, FormatError::Corrupt { record_kind: "step record", reason, .. } if reason.contains(what)),
                "{err:?}"
            );
            assert_eq!(verify_err().kind_name(), "corrupt");
        }
        "unfinished_ends_in_magic.sgdw" => assert!(
            matches!(
                open,
                Err(FormatError::ChecksumMismatch {
                    what: "trailer",
                    ..
                })
            ),
            "{open:?}"
        ),
        "typed_layout_without_flag.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "header record", reason, .. }) if reason.contains("\"count\" has dtype i64") && reason.contains("TYPED_LAYOUT")),
            "{open:?}"
        ),
        "unknown_dtype.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "header record", reason, .. }) if reason.contains("c128")),
            "{open:?}"
        ),
        "attachment_sha256.sgdw" => {
            let r = open.unwrap();
            // The other attachment and every step are intact.
            assert!(r.attachment("notes.txt").unwrap().is_some());
            let check = |e: FormatError| {
                assert!(
                    matches!(&e, FormatError::AttachmentChecksumMismatch { name, .. } if &**name == "model.pt"),
                    "{e:?}"
                );
                assert_eq!(e.kind_name(), "checksum_mismatch");
                assert!(e.to_string().contains("\"model.pt\""), "{e}");
            };
            check(r.attachment("model.pt").unwrap_err());
            check(verify_err());
        }
        "attachment_duplicate_name.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "attachment record", reason, .. }) if reason.contains("\"model.pt\" is used twice")),
            "{open:?}"
        ),
        "attachment_after_step.sgdw" => assert!(
            matches!(&open, Err(FormatError::Corrupt { record_kind: "attachment record", reason, .. }) if reason.contains("after a step")),
            "{open:?}"
        ),
        other => expect_bad_v1_3(other, open, path),
    }
}

/// How each bad file of format 1.3 (split streams) must fail, and at which stage.
fn expect_bad_v1_3(name: &str, open: Result<Reader, FormatError>, path: &Path) {
    let verify_err = || verify(path).expect_err(name);
    match name {
        "split_codec_without_flag.sgdw" => {
            // Opens (the prologue is sound), and the codecs 5–8 of its steps are refused.
            let mut r = open.unwrap();
            let err = r.state(0).unwrap_err();
            assert!(
                matches!(&err, FormatError::Corrupt { reason, .. } if reason.contains("key_split without the prologue's SPLIT_STREAMS bit")),
                "{err:?}"
            );
            assert_eq!(verify_err().kind_name(), "corrupt");
        }
        "split_stream_mode.sgdw" => {
            let mut r = open.unwrap();
            // Steps before the broken one read; step 2 does not, naming the stream.
            assert!(r.state(1).is_ok());
            let err = r.state(2).unwrap_err();
            assert!(
                err.to_string().contains("stream 1 has unknown mode 7"),
                "{err:?}"
            );
            assert_eq!(err.kind_name(), "corrupt");
            assert_eq!(verify_err().kind_name(), "corrupt");
        }
        other => panic!("untested bad fixture {other}: add it to expect_bad"),
    }
}

#[test]
fn bad_files_fail_with_their_exact_error() {
    let dir = fixtures().join("bad");
    let names = names_in(&dir);
    assert_eq!(names.len(), 23, "inventory: {names:?}");
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
