//! Steps written from residuals computed elsewhere (`Writer::write_step_with_residual`, what a
//! device hands the writer): the same file as the host path where the residual fits, the host
//! path where it does not, and a refusal, with nothing written, where it is wrong.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use sgdwalk_format::codec::{
    SPLIT_STREAMS, encode_chunk, encode_split_streams, estimate_mu_q8, residual_streams,
};
use sgdwalk_format::testkit::synth::sgd_trajectory;
use sgdwalk_format::*;

fn header(n: u64, chunk: u32, k: u32, delta: CodecId) -> Header {
    let layout = Header::contiguous_layout(&[("w", &[n])]).unwrap();
    Header::new(
        [3; 16],
        1,
        layout,
        1,
        r#"{"t":1}"#.into(),
        CodecSettings {
            chunk_len_elements: chunk,
            keyframe_interval: k,
            zstd_level: 1,
            delta_codec: delta,
            split_streams: true,
        },
    )
    .unwrap()
}

fn opts(threads: usize) -> WriterOptions {
    WriterOptions {
        fsync: FsyncPolicy::Never,
        threads,
        overlap_writes: false,
    }
}

fn input(step: u64, state: &[f32]) -> StepInput<'_> {
    StepInput {
        step,
        state,
        sample_ids: &[],
        augmentation: &[],
        scalars: StepScalars::absent(),
    }
}

type Streams = [Vec<u8>; SPLIT_STREAMS];
type Edit = fn(&mut Streams);

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The streams the host computes for each chunk of step `t` with `codec` (μ from the host's
/// own estimate, so the stored bytes can be compared with the host path's).
fn host_residual(traj: &[Vec<f32>], t: usize, chunk: usize, codec: CodecId) -> Vec<(u16, Streams)> {
    let (cur, prev) = (&traj[t], &traj[t - 1]);
    (0..cur.len().div_ceil(chunk))
        .map(|c| {
            let r = c * chunk..(c * chunk + chunk).min(cur.len());
            let prev2 = (codec.residual() == CodecId::Pred2).then(|| &traj[t - 2][r.clone()]);
            let mu = prev2.map_or(0, |p2| {
                estimate_mu_q8(&cur[r.clone()], &prev[r.clone()], p2)
            });
            let mut streams: Streams = Default::default();
            residual_streams(
                codec,
                &cur[r.clone()],
                Some(&prev[r.clone()]),
                prev2,
                mu,
                &mut streams,
            )
            .unwrap();
            (mu, streams)
        })
        .collect()
}

fn precomputed<'a>(
    codec: CodecId,
    t: u64,
    chunks: &'a [(u16, Streams)],
) -> PrecomputedResidual<'a> {
    PrecomputedResidual {
        codec,
        base_step: t - 1,
        base2_step: (codec.residual() == CodecId::Pred2).then(|| t - 2),
        chunks: chunks
            .iter()
            .map(|(mu, s)| PrecomputedChunk {
                mu_q8: *mu,
                streams: std::array::from_fn(|k| s[k].as_slice()),
            })
            .collect(),
    }
}

/// The split codec a step after `t − 1` is written with when the writer has a base chain.
fn codec_for(delta: CodecId, t: u64, k: u64) -> CodecId {
    delta.effective(!(t - 1).is_multiple_of(k)).split()
}

#[test]
fn split_streams_from_elsewhere_store_the_host_paths_bytes() {
    let traj = sgd_trajectory(3001, 4, 0.9, 0.01, 11);
    for codec in [
        CodecId::XorPrevSplit,
        CodecId::ZigzagDeltaPrevSplit,
        CodecId::Pred2Split,
    ] {
        // Whole chunks, a last chunk of 1, 2 and 3 words past a multiple of 4, and one word.
        for r in [0..3001, 0..1024, 1024..2049, 7..9, 100..103, 5..6] {
            let (cur, prev, prev2) = (&traj[3][r.clone()], &traj[2][r.clone()], &traj[1][r]);
            let mu = estimate_mu_q8(cur, prev, prev2);
            let mut want = Vec::new();
            encode_chunk(codec, cur, Some(prev), Some(prev2), 1, &mut want).unwrap();
            let mut streams: Streams = Default::default();
            residual_streams(codec, cur, Some(prev), Some(prev2), mu, &mut streams).unwrap();
            let mut got = vec![9u8; 3];
            let n = encode_split_streams(
                codec,
                mu,
                std::array::from_fn(|k| streams[k].as_slice()),
                cur.len(),
                &mut got,
            )
            .unwrap();
            assert_eq!(n, got.len() - 3, "{codec:?} returns what it appended");
            assert_eq!(&got[3..], &want[..], "{codec:?} n {}", cur.len());
        }
    }
}

#[test]
fn malformed_split_streams_are_refused() {
    let traj = sgd_trajectory(1001, 2, 0.0, 0.01, 5);
    let codec = CodecId::XorPrevSplit;
    let mut streams: Streams = Default::default();
    residual_streams(codec, &traj[1], Some(&traj[0]), None, 0, &mut streams).unwrap();
    let n = traj[1].len();
    let encode = |s: &Streams, n: usize| {
        encode_split_streams(
            codec,
            0,
            std::array::from_fn(|k| s[k].as_slice()),
            n,
            &mut Vec::new(),
        )
    };
    encode(&streams, n).unwrap();
    // The counts of this residual: every class present, so each edit below breaks one length.
    assert!(streams[1..5].iter().all(|s| !s.is_empty()), "{streams:?}");
    let edits: [(&str, Edit); 5] = [
        ("a class byte short", |s| {
            s[0].pop();
        }),
        // Class 1 for the first padding word, and lengths that count it as a word: only the
        // padding check sees it.
        ("nonzero padding bits", |s| {
            *s[0].last_mut().unwrap() |= 0x04;
            s[1].pop();
            s[2].push(0);
            s[5].push(0);
        }),
        ("lead2 one byte long", |s| s[3].push(0)),
        ("lead0 one byte short", |s| {
            s[1].pop();
        }),
        ("low one byte short", |s| {
            s[5].pop();
        }),
    ];
    for (what, edit) in edits {
        let mut bad = streams.clone();
        edit(&mut bad);
        let err = encode(&bad, n).expect_err(what);
        assert_eq!(err.kind_name(), "invalid_input", "{what}: {err}");
    }
    // 1001 words leave 3 padding words in the last class byte: bits 2..8 must be zero.
    assert_eq!(n % 4, 1);
    let err = encode_split_streams(
        CodecId::XorPrev,
        0,
        std::array::from_fn(|k| streams[k].as_slice()),
        n,
        &mut Vec::new(),
    )
    .expect_err("a byte-plane codec stores no split streams");
    assert_eq!(err.kind_name(), "invalid_input");
}

/// Writes `traj` twice, once from the state alone and once with each delta step's residual
/// computed elsewhere; returns both files' bytes and how many steps took the residual.
fn write_both(delta: CodecId, threads: usize) -> (Vec<u8>, Vec<u8>, usize, usize) {
    let (n, chunk, k) = (2500u64, 1024u32, 8u64);
    let traj = sgd_trajectory(n as usize, 21, 0.9, 0.01, 17);
    let dir = tempfile::tempdir().unwrap();
    let (host_path, pre_path) = (dir.path().join("host.sgdw"), dir.path().join("pre.sgdw"));
    let mut host =
        Writer::create(&host_path, header(n, chunk, k as u32, delta), opts(threads)).unwrap();
    let mut pre =
        Writer::create(&pre_path, header(n, chunk, k as u32, delta), opts(threads)).unwrap();
    let (mut taken, mut delta_steps) = (0, 0);
    for t in 0..traj.len() as u64 {
        host.write_step(&input(t, &traj[t as usize])).unwrap();
        if t == 0 {
            pre.write_step(&input(t, &traj[0])).unwrap();
            continue;
        }
        let codec = codec_for(delta, t, k);
        let chunks = host_residual(&traj, t as usize, chunk as usize, codec);
        let stats = pre
            .write_step_with_residual(
                &input(t, &traj[t as usize]),
                Some(&precomputed(codec, t, &chunks)),
            )
            .unwrap();
        let keyframe = t % k == 0;
        assert_eq!(stats.keyframe, keyframe, "step {t}");
        assert_eq!(stats.precomputed, !keyframe, "step {t}");
        taken += usize::from(stats.precomputed);
        delta_steps += usize::from(!keyframe);
    }
    host.finish().unwrap();
    pre.finish().unwrap();
    assert_eq!(taken, delta_steps);
    (
        std::fs::read(host_path).unwrap(),
        std::fs::read(pre_path).unwrap(),
        taken,
        traj.len(),
    )
}

#[test]
fn a_fitting_residual_gives_the_host_paths_file() {
    for delta in [CodecId::XorPrev, CodecId::ZigzagDeltaPrev, CodecId::Pred2] {
        for threads in [1, 2] {
            let (host, pre, taken, steps) = write_both(delta, threads);
            assert!(taken >= steps - 4, "{delta:?}: {taken} of {steps}");
            assert_eq!(host.len(), pre.len(), "{delta:?} threads {threads}");
            let first_diff = host.iter().zip(&pre).position(|(a, b)| a != b);
            assert_eq!(first_diff, None, "{delta:?} threads {threads}");
        }
    }
}

#[test]
fn a_residual_that_does_not_fit_the_step_is_ignored() {
    let (n, chunk, k) = (2000u64, 512u32, 4u64);
    let traj = sgd_trajectory(n as usize, 8, 0.9, 0.01, 23);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let mut w = Writer::create(&path, header(n, chunk, k as u32, CodecId::Pred2), opts(1)).unwrap();
    w.write_step(&input(0, &traj[0])).unwrap();
    w.write_step(&input(1, &traj[1])).unwrap();
    let pred2 = host_residual(&traj, 2, chunk as usize, CodecId::Pred2Split);
    let zigzag = host_residual(&traj, 2, chunk as usize, CodecId::ZigzagDeltaPrevSplit);
    let mut cases: Vec<(&str, PrecomputedResidual<'_>)> = Vec::new();
    let mut other_base = precomputed(CodecId::Pred2Split, 2, &pred2);
    other_base.base_step = 0;
    cases.push(("another base step", other_base));
    let mut other_base2 = precomputed(CodecId::Pred2Split, 2, &pred2);
    other_base2.base2_step = None;
    cases.push(("no second base", other_base2));
    cases.push((
        "another codec",
        precomputed(CodecId::ZigzagDeltaPrevSplit, 2, &zigzag),
    ));
    let mut short = precomputed(CodecId::Pred2Split, 2, &pred2);
    short.chunks.pop();
    cases.push(("a chunk missing", short));
    for (what, r) in &cases {
        // Each is ignored and the step goes the host path (a fresh file per case).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sgdw");
        let mut c =
            Writer::create(&p, header(n, chunk, k as u32, CodecId::Pred2), opts(1)).unwrap();
        c.write_step(&input(0, &traj[0])).unwrap();
        c.write_step(&input(1, &traj[1])).unwrap();
        let stats = c
            .write_step_with_residual(&input(2, &traj[2]), Some(r))
            .unwrap();
        assert!(!stats.precomputed, "{what}");
        c.finish().unwrap();
        let got = Reader::open(&p).unwrap().state(2).unwrap();
        assert!(same_bits(&got, &traj[2]), "{what}");
    }
    // The fitting one is taken; at a keyframe (step 4) none is.
    let stats = w
        .write_step_with_residual(
            &input(2, &traj[2]),
            Some(&precomputed(CodecId::Pred2Split, 2, &pred2)),
        )
        .unwrap();
    assert!(stats.precomputed);
    w.write_step(&input(3, &traj[3])).unwrap();
    let at_key = host_residual(&traj, 4, chunk as usize, CodecId::Pred2Split);
    let stats = w
        .write_step_with_residual(
            &input(4, &traj[4]),
            Some(&precomputed(CodecId::Pred2Split, 4, &at_key)),
        )
        .unwrap();
    assert!(stats.keyframe && !stats.precomputed);
    w.finish().unwrap();
    let mut r = Reader::open(&path).unwrap();
    for t in 0..5 {
        assert!(
            same_bits(&r.state(t).unwrap(), &traj[t as usize]),
            "step {t}"
        );
    }
}

#[test]
fn a_wrong_residual_is_refused_at_the_sampled_chunk_or_caught_by_the_reader() {
    let (n, chunk, k) = (4096u64, 1024u32, 32u64);
    let traj = sgd_trajectory(n as usize, 4, 0.0, 0.01, 29);
    let codec = CodecId::ZigzagDeltaPrevSplit;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let mut w = Writer::create(
        &path,
        header(n, chunk, k as u32, CodecId::ZigzagDeltaPrev),
        opts(2),
    )
    .unwrap();
    w.write_step(&input(0, &traj[0])).unwrap();
    w.write_step(&input(1, &traj[1])).unwrap();
    let len_before = std::fs::metadata(&path).unwrap().len();

    // The first step coded from a residual checks the last chunk (3 of 4): a flipped low
    // byte there is refused, naming it.
    let mut chunks = host_residual(&traj, 2, chunk as usize, codec);
    chunks[3].1[5][7] ^= 0x10;
    let err = w
        .write_step_with_residual(&input(2, &traj[2]), Some(&precomputed(codec, 2, &chunks)))
        .expect_err("the sampled chunk does not decode to the state");
    assert!(
        matches!(
            err,
            FormatError::PrecomputedResidual {
                step: 2,
                chunk: 3,
                ..
            }
        ),
        "{err}"
    );
    // Malformed streams in any chunk are refused too.
    let mut chunks = host_residual(&traj, 2, chunk as usize, codec);
    chunks[0].1[5].pop();
    let err = w
        .write_step_with_residual(&input(2, &traj[2]), Some(&precomputed(codec, 2, &chunks)))
        .expect_err("malformed streams");
    assert!(
        matches!(
            err,
            FormatError::PrecomputedResidual {
                step: 2,
                chunk: 0,
                ..
            }
        ),
        "{err}"
    );
    // Nothing was written, and the host path writes the step.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len_before);
    w.write_step(&input(2, &traj[2])).unwrap();

    // Refused steps do not count: step 3 checks chunk 3 again. A flipped byte in chunk 1 passes
    // the writer (its hash is the state's), and the reader reports it instead of returning a
    // wrong state.
    let mut chunks = host_residual(&traj, 3, chunk as usize, codec);
    chunks[1].1[5][7] ^= 0x10;
    let stats = w
        .write_step_with_residual(&input(3, &traj[3]), Some(&precomputed(codec, 3, &chunks)))
        .unwrap();
    assert!(stats.precomputed);
    w.finish().unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert!(same_bits(&r.state(2).unwrap(), &traj[2]));
    let err = r
        .state(3)
        .expect_err("chunk 1 of step 3 holds another state");
    assert_eq!(err.kind_name(), "chain_hash_mismatch", "{err}");
}

/// The writer checks every chunk in turn, counting the steps it codes from residuals: with the
/// keyframe interval equal to the chunk count (so a step-number rule would only ever pick
/// chunk 0 at a keyframe) a chunk 0 that is always wrong is refused on the second such step.
#[test]
fn every_chunk_is_checked_in_turn_whatever_the_keyframe_interval() {
    let (n, chunk, k) = (4096u64, 1024u32, 4u64);
    let traj = sgd_trajectory(n as usize, 4, 0.0, 0.01, 31);
    let codec = CodecId::ZigzagDeltaPrevSplit;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sgdw");
    let header = header(n, chunk, k as u32, CodecId::ZigzagDeltaPrev);
    let mut w = Writer::create(&path, header, opts(1)).unwrap();
    w.write_step(&input(0, &traj[0])).unwrap();
    let mut outcomes = Vec::new();
    for t in 1..4u64 {
        let mut chunks = host_residual(&traj, t as usize, chunk as usize, codec);
        chunks[0].1[5][3] ^= 0x01;
        let r = precomputed(codec, t, &chunks);
        match w.write_step_with_residual(&input(t, &traj[t as usize]), Some(&r)) {
            Ok(stats) => outcomes.push(format!("{t}: taken {}", stats.precomputed)),
            Err(FormatError::PrecomputedResidual { step, chunk, .. }) => {
                outcomes.push(format!("{t}: refused step {step} chunk {chunk}"));
                w.write_step(&input(t, &traj[t as usize])).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        outcomes,
        [
            "1: taken true",
            "2: refused step 2 chunk 0",
            "3: refused step 3 chunk 0"
        ],
        "step 1 checks chunk 3, step 2 chunk 0, and step 3 chunk 0 again (a refused step does not count)"
    );
}
