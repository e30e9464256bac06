//! Writer → reader round trips, recovery and error behaviour.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::path::Path;

use sgdwalk_format::testkit::synth::{SplitMix64, sgd_trajectory};
use sgdwalk_format::*;

fn header(n: u64, chunk: u32, k: u32, delta: CodecId) -> Header {
    header_split(n, chunk, k, delta, true)
}

fn header_split(n: u64, chunk: u32, k: u32, delta: CodecId, split_streams: bool) -> Header {
    let layout = Header::contiguous_layout(&[("a", &[n / 2]), ("b", &[n - n / 2])]).unwrap();
    Header::new(
        [7; 16],
        1,
        layout,
        1,
        r#"{"t":1}"#.into(),
        CodecSettings {
            chunk_len_elements: chunk,
            keyframe_interval: k,
            zstd_level: 1,
            delta_codec: delta,
            split_streams,
        },
    )
    .unwrap()
}

fn opts() -> WriterOptions {
    WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 0,
        overlap_writes: false,
    }
}

fn write_steps(w: &mut Writer, traj: &[Vec<f32>], steps: &[u64]) {
    for &s in steps {
        let ids: Vec<u32> = (0..(s % 5) as u32).map(|i| i * 3 + s as u32).collect();
        let aug: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
        w.write_step(&StepInput {
            step: s,
            state: &traj[s as usize],
            sample_ids: &ids,
            augmentation: &aug,
            scalars: StepScalars {
                learning_rate: Some(0.1),
                ..StepScalars::absent()
            },
        })
        .unwrap();
    }
}

fn assert_state(r: &mut Reader, traj: &[Vec<f32>], step: u64) {
    let s = r.state(step).unwrap();
    let want = &traj[step as usize];
    assert!(
        s.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
        "state {step} differs"
    );
}

#[test]
fn round_trip_every_delta_codec_with_gaps() {
    let codecs = [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2];
    for (delta, split) in codecs.iter().flat_map(|&c| [(c, false), (c, true)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sgdw");
        let traj = sgd_trajectory(1000, 60, 0.9, 0.01, 3);
        let steps: Vec<u64> = (0..20).chain(25..40).chain(41..60).collect();
        let header = header_split(1000, 300, 8, delta, split);
        let mut w = Writer::create(&path, header, opts()).unwrap();
        write_steps(&mut w, &traj, &steps);
        w.write_epoch(&EpochRecord {
            epoch: 0,
            step: 19,
            evals: vec![],
        })
        .unwrap();
        w.finish().unwrap();

        let mut r = Reader::open(&path).unwrap();
        assert!(r.is_finished());
        assert_eq!(r.steps(), &steps[..]);
        assert_eq!(r.consecutive_pairs().len(), steps.len() - 3);
        assert!(!r.has_step(20) && r.has_step(25));
        // Random access, then sequential.
        for &s in [57u64, 3, 26, 0].iter().chain(steps.iter()) {
            assert_state(&mut r, &traj, s);
        }
        // Backwards and forwards, holding every state: the reader decodes into buffers it
        // reuses, never into one a caller holds.
        let held: Vec<_> = (steps.iter().rev().chain(&steps))
            .map(|&s| (s, r.state(s).unwrap()))
            .collect();
        for (s, state) in held {
            let want = &traj[s as usize];
            assert!(
                state
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "held state {s} changed"
            );
        }
        let info = r.step_info(7).unwrap();
        assert_eq!(info.sample_ids, vec![7, 10]);
        assert!(
            r.step_info(25).unwrap().keyframe,
            "step after a gap is a keyframe"
        );
        assert!(
            r.step_info(16).unwrap().keyframe,
            "multiple of K is a keyframe"
        );
        let report = verify(&path).unwrap();
        assert_eq!(report.steps, steps.len() as u64);
        assert!(report.is_clean());
        let ins = inspect(&path).unwrap();
        assert_eq!(ins.step_ranges.len(), 3);
        assert!(
            ins.codecs
                .iter()
                .any(|c| c.codec == if split { delta.split() } else { delta }),
            "{delta}: {ins}"
        );
    }
}

#[test]
fn sequential_pairs_decode_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let traj = sgd_trajectory(500, 40, 0.9, 0.01, 4);
    let steps: Vec<u64> = (0..40).collect();
    let mut w = Writer::create(&path, header(500, 128, 32, CodecId::Pred2), opts()).unwrap();
    write_steps(&mut w, &traj, &steps);
    w.finish().unwrap();
    let mut r = Reader::open(&path).unwrap();
    for t in r.consecutive_pairs() {
        r.state(t).unwrap();
        r.state(t + 1).unwrap();
    }
    assert_eq!(r.decoded_steps(), 40);
}

#[test]
fn killed_writer_prefix_recovers_and_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.sgdw");
    let traj = sgd_trajectory(700, 30, 0.9, 0.01, 5);
    let steps: Vec<u64> = (0..30).collect();
    let mut w = Writer::create(&full, header(700, 256, 8, CodecId::Pred2), opts()).unwrap();
    write_steps(&mut w, &traj, &steps);
    w.finish().unwrap();
    let bytes = std::fs::read(&full).unwrap();

    // Find where step 13's record ends, then cut into step 14's record.
    let r = Reader::open(&full).unwrap();
    let e13 = r.entries().iter().find(|e| e.step == 13).unwrap();
    let cut = e13.record_offset + e13.record_len_bytes + 50;
    drop(r);
    let killed = dir.path().join("killed.sgdw");
    std::fs::write(&killed, &bytes[..cut as usize]).unwrap();

    let mut r = Reader::open(&killed).unwrap();
    assert!(!r.is_finished());
    assert_eq!(r.steps().last(), Some(&13));
    assert_eq!(r.torn_tail_bytes(), 50);
    assert_state(&mut r, &traj, 13);
    drop(r);

    let (mut w, rep) = Writer::reopen(&killed, opts(), None).unwrap();
    assert_eq!(rep.last_step, Some(13));
    assert_eq!(rep.truncated_bytes, 50);
    assert!(!rep.had_footer);
    write_steps(&mut w, &traj, &steps[14..]);
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&killed).unwrap(),
        bytes,
        "resumed file equals the uninterrupted one"
    );
    verify(&killed).unwrap();
}

#[test]
fn reopen_finished_file_with_keep_through_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let traj = sgd_trajectory(300, 20, 0.9, 0.01, 6);
    let steps: Vec<u64> = (0..20).collect();
    let mut w = Writer::create(&path, header(300, 100, 4, CodecId::Pred2), opts()).unwrap();
    write_steps(&mut w, &traj, &steps[..10]);
    w.write_resume_state(9, &[1.0, 2.0, 3.0], r#"{"m":1}"#)
        .unwrap();
    write_steps(&mut w, &traj, &steps[10..]);
    w.finish().unwrap();
    let reference = std::fs::read(&path).unwrap();

    let (mut w, rep) = Writer::reopen(&path, opts(), Some(9)).unwrap();
    assert!(rep.had_footer);
    assert_eq!(rep.complete_steps, 10);
    write_steps(&mut w, &traj, &steps[10..]);
    w.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), reference);
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.last_resume_step(), Some(9));
    let (buf, desc) = r.resume_state(9).unwrap().unwrap();
    assert_eq!(buf, vec![1.0, 2.0, 3.0]);
    assert_eq!(desc, r#"{"m":1}"#);
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let mut w = Writer::create(&path, header(10, 4, 4, CodecId::Pred2), opts()).unwrap();
    let state = [0f32; 10];
    let input = |step, state: &'static [f32]| StepInput {
        step,
        state,
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars::absent(),
    };
    w.write_step(&input(5, &[0.0; 10])).unwrap();
    assert!(matches!(
        w.write_step(&input(5, &[0.0; 10])),
        Err(FormatError::NotIncreasing {
            step: 5,
            last_step: 5
        })
    ));
    assert!(matches!(
        w.write_step(&input(6, &[0.0; 9])),
        Err(FormatError::InvalidInput { .. })
    ));
    let bad_aug = StepInput {
        step: 7,
        state: &state,
        sample_ids: &[1, 2],
        augmentation: &[1],
        scalars: StepScalars::absent(),
    };
    assert!(matches!(
        w.write_step(&bad_aug),
        Err(FormatError::InvalidInput { .. })
    ));
    assert!(matches!(
        w.write_resume_state(4, &[], "{}"),
        Err(FormatError::StepNotFound { step: 4 })
    ));
    assert!(
        Writer::create(&path, header(10, 4, 4, CodecId::Pred2), opts()).is_err(),
        "create fails if the file exists"
    );
    let _ = Path::new("");
    let _ = SplitMix64::new(1);
}

/// `overlap_writes` (each step record written while the next one encodes) writes the same bytes
/// as writing before `write_step` returns, under every fsync policy, finished or dropped; while
/// it runs the file lags by at most one step record, and `flush` writes that one.
#[test]
fn overlapped_writes_give_the_same_file_and_lag_one_step_at_most() {
    // 300k f32 per state: step records above the size the writer overlaps (256 KiB).
    let n = 300_000;
    let traj = sgd_trajectory(n, 40, 0.9, 0.01, 11);
    let steps: Vec<u64> = (0..40).filter(|s| s % 13 != 5).collect();
    let dir = tempfile::tempdir().unwrap();
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::EveryKeyframe,
        FsyncPolicy::EveryRecord,
    ] {
        for finish in [true, false] {
            let mut files = Vec::new();
            for overlap_writes in [false, true] {
                let path = dir
                    .path()
                    .join(format!("{fsync:?}-{finish}-{overlap_writes}.sgdw"));
                let options = WriterOptions {
                    fsync,
                    threads: 2,
                    overlap_writes,
                };
                let mut w =
                    Writer::create(&path, header(n as u64, 65_536, 8, CodecId::Pred2), options)
                        .unwrap();
                let mut lagged = 0;
                for (i, &s) in steps.iter().enumerate() {
                    w.write_step(&StepInput {
                        step: s,
                        state: &traj[s as usize],
                        sample_ids: &[s as u32],
                        augmentation: &[1],
                        scalars: StepScalars::absent(),
                    })
                    .unwrap();
                    let seen = Reader::open(&path).unwrap().steps().len();
                    let deferred = overlap_writes && fsync != FsyncPolicy::EveryRecord;
                    lagged += usize::from(seen == i);
                    assert!(
                        seen == i + 1 || (deferred && seen == i),
                        "{fsync:?} overlap {overlap_writes}: {seen} steps in the file after {}",
                        i + 1
                    );
                    if i == 10 {
                        w.flush().unwrap();
                        assert_eq!(Reader::open(&path).unwrap().steps().len(), i + 1);
                    }
                }
                // Deferred, the file lags after every step but keyframes (synced at once under
                // EveryKeyframe); else never.
                let deferred = overlap_writes && fsync != FsyncPolicy::EveryRecord;
                assert_eq!(
                    lagged > steps.len() / 2,
                    deferred,
                    "{fsync:?}: lagged {lagged}"
                );
                if finish {
                    w.finish().unwrap();
                } else {
                    drop(w);
                }
                files.push(std::fs::read(&path).unwrap());
            }
            assert_eq!(files[0], files[1], "{fsync:?} finish {finish}");
            let mut r =
                Reader::open(&dir.path().join(format!("{fsync:?}-{finish}-true.sgdw"))).unwrap();
            assert_eq!(r.steps(), steps.as_slice());
            assert_eq!(r.is_finished(), finish);
            for &s in &steps {
                assert_state(&mut r, &traj, s);
            }
        }
    }
}
