//! The independent reader of `spec_reader/reader.rs` (written from SPEC.md alone) against the
//! crate: both must read every golden and edge file alike, and the reader must reject every
//! corrupt file for its documented reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

mod reader;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reader::*;

fn fixtures() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("fixtures")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    v.sort();
    v
}

/// Asserts that the independent reader and `sgdwalk_format::Reader` read the same file alike.
pub fn assert_agrees_with_the_crate(path: &Path) -> SpecFile {
    let bytes = std::fs::read(path).unwrap();
    let spec = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = sgdwalk_format::Reader::open(path).unwrap();
    assert_eq!(r.is_finished(), spec.finished, "{}", path.display());
    let steps: Vec<u64> = spec.steps.iter().map(|s| s.step).collect();
    assert_eq!(r.steps(), &steps[..], "{}", path.display());
    let records: Vec<(u64, u64, u8, u64)> = r
        .entries()
        .iter()
        .map(|e| (e.record_offset, e.record_len_bytes, e.kind, e.step))
        .collect();
    assert_eq!(records, spec.data_records, "{}", path.display());
    let h = r.header();
    assert_eq!(h.state_len_elements, spec.n);
    assert_eq!(u64::from(h.codec.chunk_len_elements), spec.chunk_len);
    assert_eq!(h.codec.keyframe_interval, spec.k);
    assert_eq!(h.codec.delta_codec.as_u8(), spec.delta_codec);
    assert_eq!(h.metadata_json, spec.metadata_json);
    let layout: Vec<SpecTensor> = h
        .layout
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.offset_elements))
        .collect();
    assert_eq!(layout, spec.layout);
    let dtypes: Vec<&str> = h.layout.iter().map(|t| t.dtype.name()).collect();
    assert_eq!(dtypes, spec.dtypes, "{}", path.display());
    assert_eq!(r.prologue().incompat_flags, spec.incompat);
    let names: Vec<&str> = r.attachments().iter().map(|a| a.name.as_str()).collect();
    let spec_names: Vec<&str> = spec.attachments.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names, spec_names, "{}", path.display());
    for (name, data) in &spec.attachments {
        assert_eq!(r.attachment(name).unwrap(), Some(data.as_slice()));
    }
    for s in &spec.steps {
        let state = r.state(s.step).unwrap();
        let bits: Vec<u32> = state.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, s.state, "{} step {}", path.display(), s.step);
        let info = r.step_info(s.step).unwrap();
        assert_eq!(info.sample_ids, s.ids);
        assert_eq!(info.augmentation, s.aug);
        assert_eq!(info.keyframe, s.keyframe);
        let sc = info.scalars;
        let got = [
            sc.learning_rate,
            sc.minibatch_loss,
            sc.grad_norm,
            sc.update_norm,
            sc.wall_time_secs,
        ]
        .map(|v| v.map(f64::to_bits));
        assert_eq!(got, s.scalars, "{} step {}", path.display(), s.step);
    }
    let epochs = r.epochs().unwrap();
    assert_eq!(epochs.len(), spec.epochs.len());
    for (e, (epoch, step, evals)) in epochs.iter().zip(&spec.epochs) {
        assert_eq!(
            (e.epoch, e.step, e.evals.len()),
            (*epoch, *step, evals.len())
        );
        for (a, b) in e.evals.iter().zip(evals) {
            assert_eq!(
                (
                    a.split.as_str(),
                    a.loss.to_bits(),
                    a.accuracy.to_bits(),
                    a.samples
                ),
                (b.0.as_str(), b.1, b.2, b.3)
            );
        }
    }
    for (step, buf, desc) in &spec.resume {
        let (got, got_desc) = r.resume_state(*step).unwrap().unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), *buf);
        assert_eq!(&got_desc, desc);
    }
    spec
}

#[test]
fn spec_reader_agrees_with_the_crate_on_every_golden_and_edge_file() {
    let v1 = files_in(&fixtures().join("v1"));
    assert!(v1.len() >= 5, "golden files missing");
    let edge = files_in(&fixtures().join("edge"));
    assert!(edge.len() >= 3, "edge files missing");
    for path in v1.iter().chain(&edge) {
        let spec = assert_agrees_with_the_crate(path);
        // The fixtures' metadata is not a run description.
        assert_eq!(trainable_flags(&spec), Ok(None), "{}", path.display());
    }
}

#[test]
fn spec_reader_rejects_every_bad_file_for_its_reason() {
    let bad = files_in(&fixtures().join("bad"));
    assert!(bad.len() >= 23, "bad files missing");
    for path in bad {
        let name = path.file_name().unwrap().to_str().unwrap();
        let want = match name {
            "not_a_recording.bin" => "no prologue",
            "newer_major.sgdw" => "major 2",
            "unknown_incompat_flag.sgdw" => "incompat flags",
            "prologue_crc.sgdw" => "prologue crc",
            "truncated_header.sgdw" => "truncated header",
            "trailer_crc.sgdw" | "unfinished_ends_in_magic.sgdw" => "trailer crc",
            "garbage_tail.sgdw" | "step_payload_bitflip.sgdw" => "payload crc",
            "chain_hash_mismatch.sgdw" => "reconstructed hash",
            "header_delta_codec.sgdw" => "delta_codec 1",
            "missing_keyframe.sgdw" => "step 2 is a multiple of K",
            "unknown_kind.sgdw" => "unknown record kind 200",
            "ids_raw_length.sgdw" => "sample ids codec or length",
            "aug_raw_length.sgdw" => "augmentation codec or length",
            "empty_ids_zstd_no_frame.sgdw" => "not exactly one zstd frame",
            "typed_layout_without_flag.sgdw" => "dtype i64 of count without the TYPED_LAYOUT",
            "unknown_dtype.sgdw" => "dtype \"c128\" of flags",
            "attachment_sha256.sgdw" => "attachment sha256 of \"model.pt\"",
            "attachment_duplicate_name.sgdw" => "attachment name \"model.pt\" twice",
            "attachment_after_step.sgdw" => "attachment at",
            "split_codec_without_flag.sgdw" => "codec 5 without SPLIT_STREAMS",
            "split_stream_mode.sgdw" => "split stream mode 7",
            other => panic!("untested bad fixture {other}"),
        };
        let bytes = std::fs::read(&path).unwrap();
        match parse(&bytes) {
            Err(e) => assert!(e.contains(want), "{name}: {e}"),
            Ok(_) => panic!("{name} accepted"),
        }
    }
}

#[test]
fn spec_reader_reads_an_unfinished_prefix_and_rejects_garbage() {
    // Every cut of a finished file before its index is a valid unfinished file or (inside the
    // prologue or header) an error; bytes that no crash leaves are rejected.
    let bytes = std::fs::read(fixtures().join("v1/basic_pred2.sgdw")).unwrap();
    let full = parse(&bytes).unwrap();
    let mut seen = BTreeSet::new();
    for cut in (64..bytes.len() - 32).step_by(37) {
        if let Ok(f) = parse(&bytes[..cut]) {
            assert!(!f.finished);
            assert!(full.steps.starts_with(&f.steps), "cut {cut}");
            seen.insert(f.steps.len());
        }
    }
    assert!(seen.len() > 5, "{seen:?}");
    // After a complete record: zeros are preallocated blocks, anything else is corrupt.
    let boundary = full.data_records[full.data_records.len() / 2].0 as usize;
    let mut zeros = bytes[..boundary].to_vec();
    zeros.extend([0u8; 40]);
    assert_eq!(
        parse(&zeros).unwrap().data_records,
        full.data_records[..full.data_records.len() / 2]
    );
    let mut garbage = bytes[..boundary].to_vec();
    garbage.extend([0xAB; 40]);
    assert!(parse(&garbage).is_err());
}

#[test]
fn spec_reader_reads_typed_tensors_from_their_words() {
    // §4.2: a non-f32 tensor is its little-endian bytes in ceil(numel × size / 4) words.
    let f = parse(&std::fs::read(fixtures().join("v1/typed_attachment.sgdw")).unwrap()).unwrap();
    assert_eq!(f.minor, 1);
    assert_eq!(f.incompat, TYPED_LAYOUT);
    assert_eq!(f.dtypes, ["f32", "i64", "u8", "bool", "f16"]);
    let offsets: Vec<u64> = f.layout.iter().map(|t| t.2).collect();
    assert_eq!(offsets, [0, 20, 22, 24, 25]);
    assert_eq!(f.n, 27);
    let names: Vec<&str> = f.attachments.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names, ["model.pt", "notes.txt"]);
    for s in &f.steps {
        let bytes: Vec<u8> = s.state.iter().flat_map(|w| w.to_le_bytes()).collect();
        let count = i64::from_le_bytes(bytes[80..88].try_into().unwrap());
        assert_eq!(count, s.step as i64 * 1000 - 7, "step {}", s.step);
        // u8 mask[7]: 7 bytes, then one zero padding byte.
        let mask: Vec<u8> = (0..7u64).map(|i| (s.step * 37 + i * 11) as u8).collect();
        assert_eq!(&bytes[88..95], &mask[..]);
        assert_eq!(bytes[95], 0);
        // bool flags[3] and its padding byte.
        let flags: Vec<u8> = (0..3u64).map(|i| ((s.step + i) % 2) as u8).collect();
        assert_eq!(&bytes[96..99], &flags[..]);
        assert_eq!(bytes[99], 0);
    }
}

#[test]
fn spec_reader_tells_recorded_nan_from_absent_scalars() {
    // §4.3: with ABSENT_MASK (format 1.2) NaN is a value and the mask marks absent scalars;
    // without it (1.0) NaN means absent.
    let f = parse(&std::fs::read(fixtures().join("v1/absent_scalars.sgdw")).unwrap()).unwrap();
    assert_eq!((f.minor, f.incompat), (2, ABSENT_MASK));
    let scalars = |t: usize| f.steps[t].scalars;
    let nan = f64::NAN.to_bits();
    assert_eq!(scalars(1)[1..4], [Some(nan); 3]);
    assert_eq!(scalars(2)[1], Some(0xFFF8_0000_0000_0000));
    assert_eq!(scalars(3)[1], Some(0x7FF0_0000_0000_0001));
    assert_eq!(scalars(4)[0], None);
    assert_eq!(scalars(5)[2..4], [None, None]);
    assert_eq!(scalars(6), [None; 5]);
    assert_eq!(scalars(7)[..4], [None; 4]);
    assert_eq!(scalars(7)[4], Some(1.75f64.to_bits()));
    let old = parse(&std::fs::read(fixtures().join("v1/basic_pred2.sgdw")).unwrap()).unwrap();
    assert_eq!((old.minor, old.incompat), (0, 0));
    assert_eq!(
        old.steps[3].scalars[3], None,
        "NaN update_norm of a 1.0 file is absent"
    );
    assert_eq!(old.steps[1].scalars[3], Some(0.01f64.to_bits()));
}

#[test]
fn spec_reader_reads_split_stream_files() {
    // §5.2: format 1.3 files with incompat bit SPLIT_STREAMS and codecs 5–8 decode to the
    // generator's states (assert_agrees_with_the_crate compares every word with the crate).
    let mut codecs = Vec::new();
    for name in ["split_streams.sgdw", "split_xor.sgdw"] {
        let path = fixtures().join("v1").join(name);
        let f = assert_agrees_with_the_crate(&path);
        assert_eq!(
            (f.minor, f.incompat),
            (3, ABSENT_MASK | SPLIT_STREAMS),
            "{name}"
        );
        assert!(f.steps.len() >= 6, "{name}");
        codecs.extend(
            sgdwalk_format::inspect(&path)
                .unwrap()
                .codecs
                .iter()
                .map(|c| c.codec),
        );
    }
    // Between them the two files use every split codec.
    use sgdwalk_format::CodecId::*;
    for c in [KeySplit, XorPrevSplit, ZigzagDeltaPrevSplit, Pred2Split] {
        assert!(codecs.contains(&c), "{c} in no split fixture");
    }
    // Without the bit the same chunks are corrupt (§3).
    let mut b = std::fs::read(fixtures().join("v1/split_streams.sgdw")).unwrap();
    b[16] &= !(SPLIT_STREAMS as u8);
    let crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let e = parse(&b).unwrap_err();
    assert!(e.contains("without SPLIT_STREAMS"), "{e}");
}

#[test]
fn spec_reader_and_crate_decode_the_split_example_of_the_spec_alike() {
    use sgdwalk_format::CodecId;
    use sgdwalk_format::codec::{decode_chunk, encode_chunk};
    // §5.2's example: 5 words of classes 0, 1, 3, 2, 1, as an all-raw key_split chunk.
    let words = [
        0x0000_0005u32,
        0x0000_1234,
        0x3F80_0000,
        0x00AB_CDEF,
        0x0000_0100,
    ];
    let chunk = |streams: [&[u8]; 6]| {
        let mut b = Vec::new();
        for s in streams {
            b.push(0);
            b.extend((s.len() as u32).to_le_bytes());
            b.extend((s.len() as u32).to_le_bytes());
        }
        for s in streams {
            b.extend_from_slice(s);
        }
        b
    };
    let low: &[u8] = &[0x34, 0x00, 0x00, 0x80, 0xEF, 0xCD, 0x00];
    let good = chunk([&[0xB4, 0x01], &[0x05], &[0x12, 0x01], &[0xAB], &[0x3F], low]);
    assert_eq!(split_words(&good, 5).unwrap(), words);
    let crate_words = |b: &[u8]| {
        let mut out = [0f32; 5];
        decode_chunk(CodecId::KeySplit, b, None, None, &mut out).map(|()| out.map(f32::to_bits))
    };
    assert_eq!(crate_words(&good).unwrap(), words);
    // What the crate's encoder stores, the independent reader decodes.
    let values = words.map(f32::from_bits);
    let mut enc = Vec::new();
    encode_chunk(CodecId::KeySplit, &values, None, None, 1, &mut enc).unwrap();
    assert_eq!(split_words(&enc, 5).unwrap(), words);
    // Both refuse what §5.2 calls corrupt: a nonzero padding class, leading-byte streams whose
    // lengths add up but do not match the classes, a low stream one byte short, bytes after the
    // last stream.
    let bad = [
        chunk([&[0xB4, 0x05], &[0x05], &[0x12, 0x01], &[0xAB], &[0x3F], low]),
        chunk([&[0xB4, 0x01], &[0x05, 0x12], &[0x01], &[0xAB], &[0x3F], low]),
        chunk([
            &[0xB4, 0x01],
            &[0x05],
            &[0x12, 0x01],
            &[0xAB],
            &[0x3F],
            &low[..6],
        ]),
        [&good[..], &[0]].concat(),
    ];
    for (i, b) in bad.iter().enumerate() {
        assert!(split_words(b, 5).is_err(), "bad chunk {i}");
        assert!(crate_words(b).is_err(), "bad chunk {i}");
    }
}
