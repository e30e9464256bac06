//! `Reader::raw_state_offset`: where a state stored raw lies in the file, so that a caller can
//! map it without decoding or copying.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use sgdwalk_format::{
    CodecSettings, FormatError, FsyncPolicy, Header, Reader, StepInput, StepScalars, Writer,
    WriterOptions,
};

/// Bit patterns from xorshift64: incompressible, so every chunk is stored raw.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f32::from_bits(x as u32)
        })
        .collect()
}

fn write(path: &std::path::Path, states: &[Vec<f32>], chunk_len_elements: u32) {
    let n = states[0].len() as u64;
    let layout = Header::contiguous_layout(&[("w", &[n])]).unwrap();
    let codec = CodecSettings {
        chunk_len_elements,
        ..CodecSettings::default()
    };
    let header = Header::new([1; 16], 0, layout, 0, "{}".into(), codec).unwrap();
    let options = WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 1,
        overlap_writes: false,
    };
    let mut w = Writer::create(path, header, options).unwrap();
    for (t, s) in states.iter().enumerate() {
        w.write_step(&StepInput {
            step: t as u64,
            state: s,
            sample_ids: &[],
            augmentation: &[],
            scalars: StepScalars::absent(),
        })
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn raw_states_are_found_in_the_file_and_encoded_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.walk");
    // Three chunks (the last one short); step 1 is smooth, so its chunks compress.
    let n = 2_500;
    let smooth: Vec<f32> = (0..n).map(|i| (i / 100) as f32).collect();
    let states = vec![noise(n, 7), smooth, noise(n, 9)];
    write(&path, &states, 1_000);
    let reader = Reader::open(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for t in [0u64, 2] {
        let offset = reader.raw_state_offset(t).unwrap().expect("raw state") as usize;
        // Bit patterns, NaNs included.
        let words: Vec<u32> = bytes[offset..offset + 4 * n]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let want: Vec<u32> = states[t as usize].iter().map(|v| v.to_bits()).collect();
        assert_eq!(words, want, "step {t}");
    }
    assert_eq!(reader.raw_state_offset(1).unwrap(), None);
    assert!(matches!(
        reader.raw_state_offset(3),
        Err(FormatError::StepNotFound { step: 3 })
    ));
}

#[test]
fn a_flipped_bit_in_a_raw_state_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.walk");
    let n = 1_000;
    write(&path, &[noise(n, 3)], 4_096);
    let offset = Reader::open(&path)
        .unwrap()
        .raw_state_offset(0)
        .unwrap()
        .unwrap() as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset + 10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    // The record's payload CRC catches it before the chunk checks.
    let err = Reader::open(&path)
        .and_then(|r| r.raw_state_offset(0))
        .unwrap_err();
    assert_eq!(err.kind_name(), "checksum_mismatch", "{err}");
}
