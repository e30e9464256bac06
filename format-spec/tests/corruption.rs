//! Damage tests on a small finished file: every flipped byte is detected (open or verify fails,
//! never a panic), every truncation yields the complete prefix or "truncated".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::path::{Path, PathBuf};

use sgdwalk_format::{FormatError, Reader, verify};

fn golden_path(name: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(name)
}

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(golden_path(name)).unwrap()
}

/// Open, read everything, verify: the first error, if any.
fn check_all(path: &Path) -> Result<Vec<u64>, FormatError> {
    let mut r = Reader::open(path)?;
    let steps = r.steps().to_vec();
    for &s in &steps {
        r.state(s)?;
        r.step_info(s)?;
    }
    r.epochs()?;
    verify(path)?;
    Ok(steps)
}

#[test]
fn every_flipped_byte_is_detected() {
    for name in ["basic_pred2.sgdw", "empty.sgdw"] {
        let bytes = golden(name);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sgdw");
        for mask in [0x01u8, 0x80] {
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= mask;
                std::fs::write(&path, &b).unwrap();
                let res = check_all(&path);
                assert!(
                    res.is_err(),
                    "{name}: flip {mask:#04x} at byte {i} not detected"
                );
            }
        }
    }
}

/// (record offset, payload byte range, step) of every STEP record, walked as SPEC.md §4.1 lays
/// records out from the end of the prologue to the INDEX record.
fn step_records(bytes: &[u8]) -> Vec<(usize, std::ops::Range<usize>, u64)> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 64;
    while at + 32 <= bytes.len() && &bytes[at..at + 4] == b"SWRC" {
        let kind = bytes[at + 4];
        let len = usize::try_from(u64_at(at + 8)).unwrap();
        if kind == 5 {
            break;
        }
        if kind == 2 {
            out.push((at, at + 32..at + 32 + len, u64_at(at + 16)));
        }
        at += 32 + len.next_multiple_of(8);
    }
    out
}

/// Decoding a state checks every byte of its step record: a flipped payload byte fails
/// `state` with that record's payload checksum, wherever it is (table, ids, augmentation or
/// chunk data). The decode derives the payload checksum from the chunk checksums it checks
/// anyway, so this shows the derivation covers the bytes before the chunk data too.
#[test]
fn a_flipped_step_payload_byte_fails_its_state_with_the_payload_checksum() {
    for name in ["basic_pred2.sgdw", "split_streams.sgdw"] {
        let bytes = golden(name);
        let records = step_records(&bytes);
        assert!(records.len() >= 3, "{name}: {} step records", records.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sgdw");
        for (offset, payload, step) in records {
            // Every byte of small records; of the larger split-stream chunk data a spread.
            let stride = if payload.len() > 4096 { 61 } else { 1 };
            for i in payload.clone().step_by(stride) {
                let mut b = bytes.clone();
                b[i] ^= 0x10;
                std::fs::write(&path, &b).unwrap();
                // The index is intact: the file opens, and only this step's record is bad.
                let mut r = Reader::open(&path).unwrap();
                let err = r.state(step).unwrap_err();
                assert!(
                    matches!(
                        err,
                        FormatError::ChecksumMismatch {
                            what: "record payload",
                            offset_from_file_start,
                            ..
                        } if offset_from_file_start == offset as u64
                    ),
                    "{name}: byte {} of step {step}'s payload: {err:?}",
                    i - payload.start
                );
            }
            // Nonzero padding after the payload: "corrupt", unless the payload is damaged too,
            // which is reported first.
            if payload.end % 8 != 0 {
                for damaged_payload in [false, true] {
                    let mut b = bytes.clone();
                    b[payload.end] = 0x01;
                    if damaged_payload {
                        b[payload.start] ^= 0x10;
                    }
                    std::fs::write(&path, &b).unwrap();
                    let err = Reader::open(&path).unwrap().state(step).unwrap_err();
                    let payload_crc = matches!(
                        err,
                        FormatError::ChecksumMismatch {
                            what: "record payload",
                            ..
                        }
                    );
                    let padding = matches!(&err, FormatError::Corrupt { reason, .. } if reason.contains("padding"));
                    assert!(
                        if damaged_payload {
                            payload_crc
                        } else {
                            padding
                        },
                        "{name}: step {step}, padding set, payload damaged {damaged_payload}: {err:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_recovers_a_prefix_or_reports_truncated() {
    let bytes = golden("basic_pred2.sgdw");
    let full = Reader::open(&golden_path("basic_pred2.sgdw")).unwrap();
    let all_steps = full.steps().to_vec();
    let step_ends: Vec<(u64, u64)> = full
        .entries()
        .iter()
        .filter(|e| e.is_step())
        .map(|e| (e.step, e.record_offset + e.record_len_bytes))
        .collect();
    let first_record = full.entries()[0].record_offset as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sgdw");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        match check_all(&path) {
            Ok(steps) => {
                assert!(
                    len >= first_record,
                    "len {len}: opened before the header was complete"
                );
                let expected: Vec<u64> = step_ends
                    .iter()
                    .filter(|(_, end)| *end <= len as u64)
                    .map(|(s, _)| *s)
                    .collect();
                assert_eq!(steps, expected, "len {len}");
                assert!(all_steps.starts_with(&steps));
                assert!(!Reader::open(&path).unwrap().is_finished());
            }
            Err(FormatError::Truncated { .. }) => assert!(
                len < first_record,
                "len {len}: truncated error after the header"
            ),
            Err(e) => panic!("len {len}: {e}"),
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(check_all(&path).unwrap(), all_steps);
}

#[test]
fn zero_filled_tail_counts_as_torn() {
    let mut bytes = golden("killed_writer.sgdw");
    bytes.extend([0u8; 4096]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.sgdw");
    std::fs::write(&path, &bytes).unwrap();
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.steps(), &[0, 1, 2, 3, 4, 5]);
    assert!(r.torn_tail_bytes() > 4096);
}

#[test]
fn follower_sees_steps_as_they_are_written() {
    use sgdwalk_format::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sgdw");
    let layout = Header::contiguous_layout(&[("w", &[50])]).unwrap();
    let header = Header::new(
        [1; 16],
        0,
        layout,
        0,
        "{}".into(),
        CodecSettings {
            chunk_len_elements: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let mut w = Writer::create(
        &path,
        header,
        WriterOptions {
            fsync: FsyncPolicy::Never,
            threads: 1,
            overlap_writes: false,
        },
    )
    .unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert!(r.steps().is_empty());
    let state: Vec<f32> = (0..50).map(|i| i as f32).collect();
    let input = |step| StepInput {
        step,
        state: &state,
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars::absent(),
    };
    w.write_step(&input(0)).unwrap();
    w.write_step(&input(1)).unwrap();
    assert!(r.refresh().unwrap());
    assert_eq!(r.steps(), &[0, 1]);
    assert!(!r.refresh().unwrap());
    w.write_step(&input(2)).unwrap();
    w.finish().unwrap();
    assert!(r.refresh().unwrap());
    assert!(r.is_finished());
    assert_eq!(r.steps(), &[0, 1, 2]);
    assert_eq!(r.state(2).unwrap().as_slice(), &state[..]);
    // While a reader holds the file, a writer cannot truncate it.
    assert!(matches!(
        Writer::reopen(&path, WriterOptions::default(), None),
        Err(FormatError::Locked { .. })
    ));
}

/// A folder given as a recording is named as such (mapping it failed with "no such device").
#[test]
fn a_folder_is_not_a_recording_file() {
    let dir = tempfile::tempdir().unwrap();
    for err in [
        Reader::open(dir.path()).unwrap_err(),
        verify(dir.path()).unwrap_err(),
    ] {
        assert!(matches!(err, FormatError::NotAFile { .. }), "{err}");
        assert!(err.to_string().contains("is a folder"), "{err}");
    }
}
