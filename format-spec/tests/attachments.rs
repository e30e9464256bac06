//! Format 1.1: typed layouts (word counts, the TYPED_LAYOUT incompat bit) and attachments
//! (written with the header, kept by `reopen`, read from finished, unfinished and growing
//! files, SHA-256 checked).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use sgdwalk_format::testkit::synth::sgd_trajectory;
use sgdwalk_format::*;

fn typed_header() -> Header {
    // f32 [3, 2] = 6 words, i64 [] = 2, u8 [5] = 2 (3 padding bytes), bf16 [3] = 2, f64 [1] = 2.
    let layout = Header::typed_layout(&[
        ("w", DType::F32, &[3, 2]),
        ("n", DType::I64, &[]),
        ("m", DType::U8, &[5]),
        ("h", DType::BF16, &[3]),
        ("d", DType::F64, &[1]),
    ])
    .unwrap();
    Header::new(
        [1; 16],
        2,
        layout,
        0,
        "{}".into(),
        CodecSettings {
            chunk_len_elements: 4,
            keyframe_interval: 4,
            zstd_level: 1,
            delta_codec: CodecId::Pred2,
            split_streams: true,
        },
    )
    .unwrap()
}

fn opts() -> WriterOptions {
    WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 1,
        overlap_writes: false,
    }
}

fn step(w: &mut Writer, t: u64, state: &[f32]) {
    w.write_step(&StepInput {
        step: t,
        state,
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars::absent(),
    })
    .unwrap();
}

#[test]
fn dtype_word_counts_and_names() {
    assert_eq!(DType::I64.words(3), Some(6));
    assert_eq!(DType::U8.words(5), Some(2));
    assert_eq!(DType::Bool.words(0), Some(0));
    assert_eq!(DType::F16.words(3), Some(2));
    assert_eq!(DType::F32.words(7), Some(7));
    assert_eq!(DType::F64.words(u64::MAX), None);
    for d in DType::ALL {
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.name()));
        assert_eq!(serde_json::from_str::<DType>(&json).unwrap(), d);
    }
    assert!(serde_json::from_str::<DType>("\"c128\"").is_err());
    let h = typed_header();
    assert_eq!(h.state_len_elements, 14);
    let offsets: Vec<u64> = h.layout.iter().map(|t| t.offset_elements).collect();
    assert_eq!(offsets, [0, 6, 8, 10, 12]);
    // A hole in word terms (the u8 tensor given 5 words as if f32) is rejected.
    let mut bad = h.clone();
    bad.layout[3].offset_elements = 13;
    assert!(matches!(
        bad.validate(),
        Err(FormatError::InvalidLayout { .. })
    ));
}

#[test]
fn typed_layout_and_attachments_round_trip_through_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sgdw");
    let module: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let traj = sgd_trajectory(14, 10, 0.9, 0.01, 3);
    let mut w = Writer::create_with_attachments(
        &path,
        typed_header(),
        opts(),
        &[("model.pt", &module), ("empty", &[])],
    )
    .unwrap();
    for t in 0..5 {
        step(&mut w, t, &traj[t as usize]);
    }
    drop(w); // killed: no footer

    // Unfinished: the scan finds the attachments.
    let r = Reader::open(&path).unwrap();
    assert!(!r.is_finished());
    assert_eq!(r.prologue().minor, 3);
    assert_eq!(
        r.prologue().incompat_flags,
        INCOMPAT_TYPED_LAYOUT | INCOMPAT_ABSENT_MASK | INCOMPAT_SPLIT_STREAMS
    );
    let names: Vec<(&str, u64)> = r
        .attachments()
        .iter()
        .map(|a| (a.name.as_str(), a.len_bytes))
        .collect();
    assert_eq!(names, [("model.pt", 5000), ("empty", 0)]);
    assert_eq!(r.attachment("model.pt").unwrap(), Some(&module[..]));
    assert_eq!(r.attachment("empty").unwrap(), Some(&[][..]));
    assert_eq!(r.attachment("nope").unwrap(), None);
    drop(r);

    // Resume from step 3: attachments stay, steps continue, finish.
    let (mut w, report) = Writer::reopen(&path, opts(), Some(3)).unwrap();
    assert_eq!(report.last_step, Some(3));
    for t in 4..8 {
        step(&mut w, t, &traj[t as usize]);
    }
    w.finish().unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert!(r.is_finished());
    assert_eq!(r.attachments().len(), 2);
    assert_eq!(r.attachment("model.pt").unwrap(), Some(&module[..]));
    assert_eq!(r.steps(), (0..8).collect::<Vec<_>>());
    for t in 0..8 {
        let bits: Vec<u32> = r.state(t).unwrap().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = traj[t as usize].iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want, "step {t}");
    }
    // Attachment entries: kind 7, step = chain start = NO_STEP, first in the index.
    let e = &r.entries()[..2];
    assert!(
        e.iter()
            .all(|e| e.kind == 7 && e.step == NO_STEP && e.chain_start_step == NO_STEP)
    );
    let v = verify(&path).unwrap();
    assert_eq!(v.attachments.len(), 2);
    assert!(
        v.to_string()
            .contains("attachment \"model.pt\": 5000 bytes, sha256 ")
    );
    let i = inspect(&path).unwrap();
    assert_eq!(i.attachments, r.attachments());
    assert_eq!(i.format_version, "1.3");
}

#[test]
fn a_reader_following_a_growing_file_sees_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sgdw");
    let h = Header::new(
        [2; 16],
        2,
        Header::contiguous_layout(&[("w", &[8])]).unwrap(),
        0,
        "{}".into(),
        CodecSettings::default(),
    )
    .unwrap();
    let mut w = Writer::create_with_attachments(&path, h, opts(), &[("a", b"xyz")]).unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.attachment("a").unwrap(), Some(&b"xyz"[..]));
    // An all-f32 layout needs no TYPED_LAYOUT bit; a new file is 1.3 with ABSENT_MASK, and
    // without SPLIT_STREAMS under the default codec settings (codecs 0–4 only).
    assert_eq!(
        (r.prologue().minor, r.prologue().incompat_flags),
        (3, INCOMPAT_ABSENT_MASK)
    );
    step(&mut w, 0, &[0.5; 8]);
    w.finish().unwrap();
    assert!(r.refresh().unwrap());
    assert!(r.is_finished());
    assert_eq!(r.attachment("a").unwrap(), Some(&b"xyz"[..]));
}

#[test]
fn writer_rejects_bad_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(257);
    for (i, list) in [
        vec![("a", &b"1"[..]), ("a", &b"2"[..])],
        vec![("", &b"1"[..])],
        vec![(long.as_str(), &b"1"[..])],
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("{i}.sgdw"));
        let err =
            Writer::create_with_attachments(&path, typed_header(), opts(), &list).unwrap_err();
        assert!(matches!(err, FormatError::InvalidInput { .. }), "{err:?}");
        assert!(!path.exists(), "nothing written on a rejected call");
    }
}

#[test]
fn a_reopened_1_0_file_stays_1_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sgdw");
    let golden = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("fixtures/v1/delta_xor.sgdw");
    std::fs::copy(golden, &path).unwrap();
    let (mut w, _) = Writer::reopen(&path, opts(), None).unwrap();
    let traj = sgd_trajectory(144, 9, 0.9, 0.01, 1);
    step(&mut w, 8, &traj[8]);
    w.finish().unwrap();
    let r = Reader::open(&path).unwrap();
    assert_eq!((r.prologue().major, r.prologue().minor), (1, 0));
    assert!(r.is_finished());
    assert!(r.attachments().is_empty());
    verify(&path).unwrap();
}
