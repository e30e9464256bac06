//! Property test: random layouts, chunk sizes, K, delta codecs and step patterns (with gaps)
//! round-trip bit-exactly through the writer and reader, finished or not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on setup errors"
)]

use proptest::prelude::*;
use sgdwalk_format::testkit::synth::SplitMix64;
use sgdwalk_format::*;

fn arb_codec() -> impl Strategy<Value = CodecId> {
    prop_oneof![
        Just(CodecId::XorPrev),
        Just(CodecId::ZigzagDeltaPrev),
        Just(CodecId::Pred2)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn round_trip(
        shapes in prop::collection::vec(prop::collection::vec(0u64..9, 0..3), 1..4),
        chunk in 1u32..80,
        k in 1u32..7,
        delta in arb_codec(),
        step_mask in prop::collection::vec(any::<bool>(), 1..30),
        aug in 0u32..3,
        seed in any::<u64>(),
        finish in any::<bool>(),
        split_streams in any::<bool>(),
        overlap_writes in any::<bool>(),
    ) {
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("t{i}")).collect();
        let pairs: Vec<(&str, &[u64])> = names.iter().map(String::as_str).zip(shapes.iter().map(Vec::as_slice)).collect();
        let layout = Header::contiguous_layout(&pairs).unwrap();
        let codec = CodecSettings { chunk_len_elements: chunk, keyframe_interval: k, zstd_level: 1, delta_codec: delta, split_streams };
        let header = Header::new([3; 16], 9, layout, aug, "{}".into(), codec).unwrap();
        let n = header.state_len_elements as usize;
        let steps: Vec<u64> = step_mask.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i as u64 * 2 / 2 + (i as u64 / 10) * 5).collect();
        let mut rng = SplitMix64::new(seed);
        // A random walk with occasional special values and sign flips.
        let mut cur: Vec<f32> = (0..n).map(|_| (rng.gaussian() * 0.1) as f32).collect();
        let mut states = Vec::new();
        for _ in &steps {
            for v in cur.iter_mut() {
                let r = rng.next_u64();
                *v = match r % 97 {
                    0 => f32::NAN,
                    1 => -0.0,
                    2 => f32::from_bits(r as u32),
                    _ => *v + (rng.gaussian() * 1e-3) as f32,
                };
            }
            states.push(cur.clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sgdw");
        let mut w = Writer::create(&path, header.clone(), WriterOptions { fsync: FsyncPolicy::Never, threads: 0, overlap_writes }).unwrap();
        let mut ids_all = Vec::new();
        for (s, st) in steps.iter().zip(&states) {
            let ids: Vec<u32> = (0..(rng.next_u64() % 5)).map(|_| rng.next_u64() as u32).collect();
            let augb: Vec<u8> = (0..ids.len() * aug as usize).map(|_| rng.next_u64() as u8).collect();
            w.write_step(&StepInput { step: *s, state: st, sample_ids: &ids, augmentation: &augb, scalars: StepScalars::absent() }).unwrap();
            ids_all.push((ids, augb));
        }
        if finish { w.finish().unwrap(); } else { drop(w); }

        let mut r = Reader::open(&path).unwrap();
        prop_assert_eq!(r.is_finished(), finish);
        prop_assert_eq!(r.header(), &header);
        prop_assert_eq!(r.steps(), &steps[..]);
        // Reverse order first (random access), then forward (cached).
        for (i, s) in steps.iter().enumerate().rev().chain(steps.iter().enumerate()) {
            let got = r.state(*s).unwrap();
            prop_assert!(got.iter().zip(&states[i]).all(|(a, b)| a.to_bits() == b.to_bits()));
            let info = r.step_info(*s).unwrap();
            prop_assert_eq!(&info.sample_ids, &ids_all[i].0);
            prop_assert_eq!(&info.augmentation, &ids_all[i].1);
        }
        let rep = verify(&path).unwrap();
        prop_assert_eq!(rep.steps, steps.len() as u64);
    }
}
