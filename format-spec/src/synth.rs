//! Deterministic synthetic data: a seeded PRNG, an SGD-with-momentum trajectory generator (for
//! benches and tests without libtorch), and the golden-fixture definitions of
//! `fixtures/v1/`. Everything here is a pure function of its seed and must never change for an
//! existing fixture version: the golden tests compare files against it.

use std::path::{Path, PathBuf};

use crate::consts::FILE_MAGIC;
use crate::error::FormatError;
use crate::types::*;
use crate::writer::Writer;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, stable forever.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A synthetic SGD-with-momentum trajectory (torch semantics, f32): a noisy quadratic per
/// parameter with log-normal curvature and gradient-noise scales, 10 % frozen parameters
/// (like MNIST's constant border pixels). Relative updates are about 1e-3, as in the
/// measurements of format-notes.md. Returns `steps` states θ_0..θ_{steps−1}.
pub fn sgd_trajectory(
    params: usize,
    steps: usize,
    momentum: f32,
    lr: f32,
    seed: u64,
) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    let mut w: Vec<f32> = (0..params)
        .map(|_| (rng.gaussian() * 0.05) as f32)
        .collect();
    let target: Vec<f32> = (0..params)
        .map(|_| (rng.gaussian() * 0.05) as f32)
        .collect();
    let curvature: Vec<f32> = (0..params)
        .map(|_| (0.1 * (rng.gaussian() * 0.5).exp()) as f32)
        .collect();
    let noise: Vec<f32> = (0..params)
        .map(|_| {
            if rng.next_f64() < 0.1 {
                0.0
            } else {
                (0.004 * (rng.gaussian() * 0.5).exp()) as f32
            }
        })
        .collect();
    let mut v = vec![0f32; params];
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        out.push(w.clone());
        for i in 0..params {
            if noise[i] == 0.0 {
                continue;
            }
            let g = curvature[i] * (w[i] - target[i]) + noise[i] * rng.gaussian() as f32;
            v[i] = momentum * v[i] + g;
            w[i] -= lr * v[i];
        }
    }
    out
}

/// One golden fixture of `fixtures/v1/`.
#[derive(Clone, Debug)]
pub struct FixtureSpec {
    /// File name.
    pub name: &'static str,
    /// What it exercises (for the README inventory).
    pub description: &'static str,
    /// The header written.
    pub header: Header,
    /// Steps written, in order.
    pub steps: Vec<u64>,
    /// Epoch records written after the step they name.
    pub epochs: Vec<EpochRecord>,
    /// Steps after which a resume record is written.
    pub resume_steps: Vec<u64>,
    /// Whether `finish` is called.
    pub finish: bool,
    /// Bytes cut from the end after writing (a torn tail).
    pub cut_tail_bytes: u64,
    /// Whether states are random bits (incompressible) instead of a trajectory.
    pub random_bits: bool,
    /// Sample ids per step (the last step gets none).
    pub ids_per_step: usize,
}

const FIXTURE_SEED: u64 = 0x5eed_2026;

fn fixture_header(
    layout: &[(&str, &[u64])],
    codec: CodecSettings,
    aug: u32,
    metadata: &str,
) -> Header {
    let layout = Header::contiguous_layout(layout).unwrap_or_default();
    let mut run_id = [0u8; 16];
    run_id
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 0xA0 + i as u8);
    let state_len_elements = layout.iter().map(|t| t.shape.iter().product::<u64>()).sum();
    Header {
        run_id,
        created_unix_ms: 1_767_225_600_000,
        layout,
        state_len_elements,
        augmentation_bytes_per_sample: aug,
        metadata_json: metadata.to_owned(),
        codec,
    }
}

/// The fixtures of format version 1.0. Never change an entry: add new ones.
pub fn fixture_specs_v1() -> Vec<FixtureSpec> {
    let mlp: &[(&str, &[u64])] = &[("b1", &[12]), ("w1", &[8, 12]), ("w2", &[12, 3])];
    let small = |delta| CodecSettings {
        chunk_len_elements: 64,
        keyframe_interval: 4,
        zstd_level: 1,
        delta_codec: delta,
    };
    let meta = r#"{"model":"mlp-8-12-3","dataset":"synthetic","optimizer":{"name":"sgd","lr":0.01,"momentum":0.9},"seed":7}"#;
    let base = FixtureSpec {
        name: "",
        description: "",
        header: fixture_header(mlp, small(CodecId::Pred2), 2, meta),
        steps: Vec::new(),
        epochs: Vec::new(),
        resume_steps: Vec::new(),
        finish: true,
        cut_tail_bytes: 0,
        random_bits: false,
        ids_per_step: 8,
    };
    let eval = |epoch: u32, step: u64| EpochRecord {
        epoch,
        step,
        evals: vec![
            EvalRecord {
                split: "train".into(),
                loss: 0.5 / f64::from(epoch + 1),
                accuracy: 0.8,
                samples: 1000,
            },
            EvalRecord {
                split: "test".into(),
                loss: f64::NAN,
                accuracy: 0.75,
                samples: 200,
            },
        ],
    };
    vec![
        FixtureSpec {
            name: "basic_pred2.sgdw",
            description: "3 tensors (144 f32), chunk 64 (3 chunks, last partial), K=4, pred2; steps 0..=9 and 20..=23 (gap forces a keyframe); 8 ids + 2 augmentation bytes per sample, none at the last step; epoch records at steps 5 and 23 (one NaN loss); resume state at step 8; finished",
            steps: (0..=9).chain(20..=23).collect(),
            epochs: vec![eval(0, 5), eval(1, 23)],
            resume_steps: vec![8],
            ..base.clone()
        },
        FixtureSpec {
            name: "delta_xor.sgdw",
            description: "as basic, delta codec xor_prev, steps 0..=6, finished",
            header: fixture_header(mlp, small(CodecId::XorPrev), 2, meta),
            steps: (0..=6).collect(),
            ..base.clone()
        },
        FixtureSpec {
            name: "delta_zigzag.sgdw",
            description: "as basic, delta codec zigzag_delta_prev, steps 0..=6, finished",
            header: fixture_header(mlp, small(CodecId::ZigzagDeltaPrev), 2, meta),
            steps: (0..=6).collect(),
            ..base.clone()
        },
        FixtureSpec {
            name: "raw_fallback.sgdw",
            description: "random bit patterns (incompressible, NaNs included): every chunk raw, every step promoted to keyframe; steps 3..=5, finished",
            steps: (3..=5).collect(),
            random_bits: true,
            ..base.clone()
        },
        FixtureSpec {
            name: "default_settings.sgdw",
            description: "one tensor of 600 f32 with CodecSettings::default() (one chunk, K=32, pred2), no augmentation, steps 0..=4, finished",
            header: fixture_header(&[("w", &[600])], CodecSettings::default(), 0, "{}"),
            steps: (0..=4).collect(),
            ..base.clone()
        },
        FixtureSpec {
            name: "empty.sgdw",
            description: "header only, no steps, finished",
            steps: Vec::new(),
            ..base.clone()
        },
        FixtureSpec {
            name: "killed_writer.sgdw",
            description: "as basic, steps 0..=6 written, no footer, and the last step record cut by 40 bytes (torn tail): readers see steps 0..=5",
            steps: (0..=6).collect(),
            finish: false,
            cut_tail_bytes: 40,
            ..base
        },
    ]
}

/// Everything the generator writes for `step` of `spec`.
pub struct FixtureStep {
    /// θ_step.
    pub state: Vec<f32>,
    /// Sample ids.
    pub sample_ids: Vec<u32>,
    /// Augmentation bytes.
    pub augmentation: Vec<u8>,
    /// Scalars.
    pub scalars: StepScalars,
}

/// The inputs of every step of `spec` (indexed like `spec.steps`).
pub fn fixture_inputs(spec: &FixtureSpec) -> Vec<FixtureStep> {
    let n = spec.header.state_len_elements as usize;
    let last = spec.steps.iter().copied().max().unwrap_or(0);
    let traj = sgd_trajectory(n, last as usize + 1, 0.9, 0.01, FIXTURE_SEED);
    let aug_per = spec.header.augmentation_bytes_per_sample as usize;
    spec.steps
        .iter()
        .map(|&step| {
            let mut rng = SplitMix64::new(FIXTURE_SEED ^ step.wrapping_mul(0x100_0000_01B3));
            let state = if spec.random_bits {
                (0..n)
                    .map(|_| f32::from_bits(rng.next_u64() as u32))
                    .collect()
            } else {
                traj[step as usize].clone()
            };
            let count = if Some(&step) == spec.steps.last() {
                0
            } else {
                spec.ids_per_step
            };
            let sample_ids: Vec<u32> = (0..count)
                .map(|_| (rng.next_u64() % 60_000) as u32)
                .collect();
            let augmentation: Vec<u8> =
                (0..count * aug_per).map(|_| rng.next_u64() as u8).collect();
            let scalars = StepScalars {
                learning_rate: 0.01,
                minibatch_loss: 2.3 / (1.0 + step as f64),
                grad_norm: 1.0 + step as f64 / 8.0,
                update_norm: if step % 3 == 0 { f64::NAN } else { 0.01 },
                wall_time_secs: step as f64 * 0.25,
            };
            FixtureStep {
                state,
                sample_ids,
                augmentation,
                scalars,
            }
        })
        .collect()
}

/// The resume buffers written at `step`.
pub fn fixture_resume(spec: &FixtureSpec, step: u64) -> (Vec<f32>, String) {
    let n = spec.header.state_len_elements as usize;
    let buffers = (0..n).map(|i| (i as f32 * 0.001) - step as f32).collect();
    (
        buffers,
        format!(r#"{{"optimizer":"sgd","momentum_buffers":["b1","w1","w2"],"step":{step}}}"#),
    )
}

/// Writes `spec` to `dir/spec.name` (the file must not exist) and returns its path.
pub fn write_fixture(spec: &FixtureSpec, dir: &Path) -> Result<PathBuf, FormatError> {
    let path = dir.join(spec.name);
    let options = WriterOptions {
        fsync: FsyncPolicy::Never,
        threads: 1,
    };
    let mut w = Writer::create(&path, spec.header.clone(), options)?;
    for (&step, input) in spec.steps.iter().zip(fixture_inputs(spec)) {
        w.write_step(&StepInput {
            step,
            state: &input.state,
            sample_ids: &input.sample_ids,
            augmentation: &input.augmentation,
            scalars: input.scalars,
        })?;
        for e in spec.epochs.iter().filter(|e| e.step == step) {
            w.write_epoch(e)?;
        }
        if spec.resume_steps.contains(&step) {
            let (buffers, desc) = fixture_resume(spec, step);
            w.write_resume_state(step, &buffers, &desc)?;
        }
    }
    if spec.finish {
        w.finish()?;
    } else {
        drop(w);
    }
    if spec.cut_tail_bytes > 0 {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| FormatError::io(&path, e))?;
        let len = f.metadata().map_err(|e| FormatError::io(&path, e))?.len();
        f.set_len(len.saturating_sub(spec.cut_tail_bytes))
            .map_err(|e| FormatError::io(&path, e))?;
    }
    Ok(path)
}

/// A deliberately broken file of `fixtures/bad/`, derived from a good one.
pub struct BadFixture {
    /// File name.
    pub name: &'static str,
    /// What is broken.
    pub description: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

fn fix_prologue_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites the record at `offset` after `edit` changed its payload (same length): recomputes
/// the payload CRC and the header CRC.
fn reseal_record(b: &mut [u8], offset: usize) {
    let len = u64::from_le_bytes(b[offset + 8..offset + 16].try_into().unwrap_or([0; 8])) as usize;
    let payload = &b[offset + 32..offset + 32 + len];
    let crc = crc32c::crc32c(payload);
    b[offset + 24..offset + 28].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&b[offset..offset + 28]);
    b[offset + 28..offset + 32].copy_from_slice(&hcrc.to_le_bytes());
}

/// The corrupt files of `fixtures/bad/`, derived from the bytes of `basic_pred2.sgdw`
/// (`basic`) and `killed_writer.sgdw` (`killed`). `delta_step_offset` is the offset of a
/// non-keyframe step record in `basic`.
pub fn bad_fixtures(basic: &[u8], killed: &[u8], delta_step_offset: usize) -> Vec<BadFixture> {
    let mut out = Vec::new();
    out.push(BadFixture {
        name: "not_a_recording.bin",
        description: "a ZIP-like file: wrong magic",
        bytes: b"PK\x03\x04this is not an sgdwalk recording, just some bytes".to_vec(),
    });
    let mut b = basic.to_vec();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    fix_prologue_crc(&mut b);
    out.push(BadFixture {
        name: "newer_major.sgdw",
        description: "prologue says format 2.0",
        bytes: b,
    });
    let mut b = basic.to_vec();
    b[16] = 0x01;
    fix_prologue_crc(&mut b);
    out.push(BadFixture {
        name: "unknown_incompat_flag.sgdw",
        description: "incompat flag bit 0 set",
        bytes: b,
    });
    let mut b = basic.to_vec();
    b[40] ^= 0x20;
    out.push(BadFixture {
        name: "prologue_crc.sgdw",
        description: "one writer-version byte flipped",
        bytes: b,
    });
    out.push(BadFixture {
        name: "truncated_header.sgdw",
        description: "the first 100 bytes: prologue complete, header record cut",
        bytes: basic[..100].to_vec(),
    });
    let mut b = basic.to_vec();
    let payload_mid = delta_step_offset + 32 + 100;
    b[payload_mid] ^= 0x01;
    out.push(BadFixture {
        name: "step_payload_bitflip.sgdw",
        description: "one bit flipped inside a step record's payload (opens via the index; verify fails)",
        bytes: b,
    });
    let mut b = basic.to_vec();
    let t = b.len() - 32;
    b[t] ^= 0x08;
    out.push(BadFixture {
        name: "trailer_crc.sgdw",
        description: "footer offset in the trailer altered",
        bytes: b,
    });
    let mut b = killed.to_vec();
    b.extend(std::iter::repeat_n(0xAB, 64));
    out.push(BadFixture {
        name: "garbage_tail.sgdw",
        description: "unfinished file followed by 64 bytes of 0xAB: not a torn write",
        bytes: b,
    });
    let mut b = basic.to_vec();
    // First chunk entry's hash: payload offset 72 (fixed part) + 16 within the entry.
    let h = delta_step_offset + 32 + 72 + 16;
    b[h] ^= 0xFF;
    reseal_record(&mut b, delta_step_offset);
    out.push(BadFixture {
        name: "chain_hash_mismatch.sgdw",
        description: "a delta step's first chunk hash altered and its CRCs recomputed: only the chain check can see it",
        bytes: b,
    });
    debug_assert!(basic.starts_with(&FILE_MAGIC));
    out
}
