//! Format 1.2's absent step scalars (recorded NaN and "absent" stay apart through every read
//! path, 1.0/1.1 files keep NaN as absent, a damaged absent mask is corrupt) and the writer's
//! lock for its whole life (a second writer fails naming the file and its holder, readers open).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::path::{Path, PathBuf};

use sgdwalk_format::testkit::synth::nan_and_absent_scalars;
use sgdwalk_format::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(name)
}

fn opts() -> WriterOptions {
    WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 1,
        overlap_writes: false,
    }
}

fn header() -> Header {
    Header::new(
        [7; 16],
        0,
        Header::contiguous_layout(&[("w", &[16])]).unwrap(),
        0,
        "{}".into(),
        CodecSettings {
            chunk_len_elements: 8,
            keyframe_interval: 4,
            ..CodecSettings::default()
        },
    )
    .unwrap()
}

fn write(w: &mut Writer, step: u64, scalars: StepScalars) {
    let state: Vec<f32> = (0..16).map(|i| (i as f32 + step as f32).sin()).collect();
    w.write_step(&StepInput {
        step,
        state: &state,
        sample_ids: &[],
        augmentation: &[],
        scalars,
    })
    .unwrap();
}

/// Scalars of step t: recorded NaNs (three payloads), ±inf, −0.0 and absent scalars mixed.
fn scalars(t: u64) -> StepScalars {
    nan_and_absent_scalars(t % 8)
}

fn bits(s: &StepScalars) -> [Option<u64>; 5] {
    s.to_array().map(|v| v.map(f64::to_bits))
}

fn assert_scalars(path: &Path, steps: std::ops::Range<u64>) {
    let r = Reader::open(path).unwrap();
    assert_eq!(r.steps(), steps.clone().collect::<Vec<_>>().as_slice());
    for t in steps {
        let got = r.step_info(t).unwrap().scalars;
        assert_eq!(bits(&got), bits(&scalars(t)), "step {t}");
    }
}

#[test]
fn recorded_nan_and_absent_round_trip_distinctly_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sgdw");
    let mut w = Writer::create(&path, header(), opts()).unwrap();
    for t in 0..6 {
        write(&mut w, t, scalars(t));
    }
    drop(w);
    // Unfinished: the scan path.
    assert_scalars(&path, 0..6);
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.prologue().minor, r.prologue().incompat_flags), (3, 2));
    // Step 1 has a recorded NaN loss, step 6 has none at all: not the same thing.
    let nan_loss = r.step_info(1).unwrap().scalars.minibatch_loss;
    assert!(nan_loss.is_some_and(f64::is_nan), "{nan_loss:?}");
    drop(r);
    // Continued and finished: the index path, and the bytes a reopened writer appends.
    let (mut w, _) = Writer::reopen(&path, opts(), None).unwrap();
    for t in 6..10 {
        write(&mut w, t, scalars(t));
    }
    w.finish().unwrap();
    assert_scalars(&path, 0..10);
    assert!(verify(&path).unwrap().is_clean());
    let r = Reader::open(&path).unwrap();
    let absent = r.step_info(6).unwrap().scalars;
    assert_eq!(bits(&absent), [None; 5]);
}

#[test]
fn a_continued_1_1_file_keeps_nan_meaning_absent() {
    // typed_attachment_killed.sgdw is format 1.1 without ABSENT_MASK: its update_norm NaNs read
    // as absent, and a writer continuing it cannot store a recorded NaN (documented loss).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sgdw");
    std::fs::copy(fixture("typed_attachment_killed.sgdw"), &path).unwrap();
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.prologue().minor, r.prologue().incompat_flags), (1, 1));
    assert_eq!(r.step_info(3).unwrap().scalars.update_norm, None);
    assert_eq!(r.step_info(1).unwrap().scalars.update_norm, Some(0.01));
    let n = r.header().state_len_elements as usize;
    drop(r);
    let (mut w, _) = Writer::reopen(&path, opts(), None).unwrap();
    let state = vec![0.5f32; n];
    w.write_step(&StepInput {
        step: 4,
        state: &state,
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars {
            minibatch_loss: Some(f64::NAN),
            learning_rate: Some(0.5),
            ..StepScalars::absent()
        },
    })
    .unwrap();
    w.finish().unwrap();
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.prologue().minor, r.prologue().incompat_flags), (1, 1));
    let s = r.step_info(4).unwrap().scalars;
    assert_eq!((s.minibatch_loss, s.learning_rate), (None, Some(0.5)));
    assert!(verify(&path).unwrap().is_clean());
}

/// The finished file `name` with step `step`'s payload changed by `edit` and its record's
/// CRCs recomputed (same length: the index stays valid).
fn edit_step_payload(name: &str, step: u64, edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let path = fixture(name);
    let at = Reader::open(&path)
        .unwrap()
        .entries()
        .iter()
        .find(|e| e.is_step() && e.step == step)
        .unwrap()
        .record_offset as usize;
    let mut b = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize;
    edit(&mut b[at + 32..at + 32 + len]);
    let crc = crc32c(&b[at + 32..at + 32 + len]);
    b[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c(&b[at..at + 28]);
    b[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// CRC32C (SPEC.md §1), bitwise: the test does not lean on the crate's dependency.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn corrupt_reason(bytes: &[u8], step: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.sgdw");
    std::fs::write(&path, bytes).unwrap();
    // The index path decodes the payload when the step is read, verify scans it.
    let r = Reader::open(&path).unwrap();
    let read = r.step_info(step).unwrap_err();
    let scanned = verify(&path).unwrap_err();
    for e in [&read, &scanned] {
        assert!(
            matches!(
                e,
                FormatError::Corrupt {
                    record_kind: "step record",
                    ..
                }
            ),
            "{e:?}"
        );
    }
    read.to_string()
}

#[test]
fn a_damaged_absent_mask_or_absent_value_is_corrupt() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    let v12 = "absent_scalars.sgdw";
    // Reserved mask bits 5..=7.
    let e = corrupt_reason(&edit_step_payload(v12, 6, |p| p[62] |= 0x20), 6);
    assert!(e.contains("reserved bits 5..=7"), "{e}");
    // An absent scalar (step 4's learning_rate) holding a value instead of the absent NaN.
    let e = corrupt_reason(
        &edit_step_payload(v12, 4, |p| {
            p[16..24].copy_from_slice(&0.01f64.to_le_bytes())
        }),
        4,
    );
    assert!(e.contains("absent scalar learning_rate"), "{e}");
    // Byte 63 stays reserved.
    let e = corrupt_reason(&edit_step_payload(v12, 2, |p| p[63] = 1), 2);
    assert!(e.contains("reserved"), "{e}");
    // Without ABSENT_MASK (format 1.0) byte 62 is reserved.
    let e = corrupt_reason(
        &edit_step_payload("basic_pred2.sgdw", 3, |p| p[62] = 0x08),
        3,
    );
    assert!(e.contains("reserved step byte 62"), "{e}");
}

#[test]
fn a_writer_holds_its_lock_until_dropped_and_readers_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sgdw");
    let mut w = Writer::create(&path, header(), opts()).unwrap();
    write(&mut w, 0, scalars(0));
    let second = |path: &Path| Writer::reopen(path, opts(), None).map(|_| ());
    // A created writer: a second writer fails, naming the file (and, on Linux, this process).
    let e = second(&path).unwrap_err();
    match &e {
        FormatError::Locked { path: p, holders } => {
            assert_eq!(&**p, path.as_path());
            if cfg!(target_os = "linux") {
                assert!(
                    holders.iter().any(|h| h.pid == std::process::id()),
                    "{holders:?}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.kind_name(), "locked");
    assert!(e.to_string().ends_with(&*path.to_string_lossy()), "{e}");
    if cfg!(target_os = "linux") {
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
    }
    // Readers open the file the writer is writing, and follow it.
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.steps(), &[0]);
    write(&mut w, 1, scalars(1));
    assert!(r.refresh().unwrap());
    assert_eq!(r.steps(), &[0, 1]);
    drop(r);
    assert!(matches!(second(&path), Err(FormatError::Locked { .. })));
    drop(w);

    // A reopened writer holds the lock too, after its truncation.
    let (mut w, report) = Writer::reopen(&path, opts(), None).unwrap();
    assert_eq!(report.complete_steps, 2);
    assert!(matches!(second(&path), Err(FormatError::Locked { .. })));
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.steps(), &[0, 1]);
    drop(r);
    write(&mut w, 2, scalars(2));
    assert!(matches!(second(&path), Err(FormatError::Locked { .. })));
    // Finishing (or dropping) releases it.
    w.finish().unwrap();
    let (w, _) = Writer::reopen(&path, opts(), None).unwrap();
    drop(w);
    assert_scalars(&path, 0..3);
}

/// A reader that only polls a live recording (open, read, close) does not make a resume fail
/// by chance: the continuing writer retries its exclusive lock for `REOPEN_LOCK_WAIT`. A
/// reader that keeps the file open past that still makes it fail, naming the holder.
#[test]
fn a_resume_waits_for_a_polling_reader_and_fails_on_one_that_stays() {
    // Long for a poll, short against the wait: the reopen starts while it is held.
    const POLL_HOLD: std::time::Duration = std::time::Duration::from_millis(200);
    assert!(REOPEN_LOCK_WAIT >= 5 * POLL_HOLD);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sgdw");
    let mut w = Writer::create(&path, header(), opts()).unwrap();
    write(&mut w, 0, scalars(0));
    write(&mut w, 1, scalars(1));
    drop(w);

    // Held across the start of the reopen, let go well within the wait.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let r = Reader::open(&path).unwrap();
            opened_tx.send(()).unwrap();
            std::thread::sleep(POLL_HOLD);
            drop(r);
        })
    };
    opened_rx.recv().unwrap();
    let (mut w, report) = Writer::reopen(&path, opts(), None).unwrap();
    reader.join().unwrap();
    assert_eq!(report.complete_steps, 2);
    write(&mut w, 2, scalars(2));
    w.finish().unwrap();
    assert_scalars(&path, 0..3);

    // Held for good: the reopen fails as locked and the file is untouched.
    let before = std::fs::read(&path).unwrap();
    let r = Reader::open(&path).unwrap();
    let e = Writer::reopen(&path, opts(), None).map(|_| ()).unwrap_err();
    match &e {
        FormatError::Locked { path: p, holders } => {
            assert_eq!(&**p, path.as_path());
            if cfg!(target_os = "linux") {
                assert!(
                    holders
                        .iter()
                        .any(|h| h.pid == std::process::id() && !h.exclusive),
                    "{holders:?}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
    drop(r);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
