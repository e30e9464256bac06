//! Deterministic synthetic data: a seeded PRNG, an SGD-with-momentum trajectory generator (for
//! benches and tests without libtorch), the golden-fixture definitions of `fixtures/v1/`, and
//! the files of `fixtures/bad/` and `fixtures/edge/` derived from them (with [`split_records`]
//! and [`assemble`], which take a recording apart and put records back together). Everything
//! here is a pure function of its seed and must never change for an existing fixture version:
//! the golden tests compare files against it.

use std::path::{Path, PathBuf};

use crate::consts::*;
use crate::error::FormatError;
use crate::records::{
    BLOB_RAW, BLOB_SHUFFLE4_ZSTD, BLOB_ZSTD, Footer, INDEX_FLAG_KEYFRAME, IndexEntry,
    RECORD_FLAG_SKIPPABLE, RecordHeader, RecordKind, StepFixed, Trailer, decode_step_fixed,
    decode_step_payload, encode_attachment_payload, encode_epoch_payload, encode_index_payload,
    encode_step_payload, padding_len,
};
use crate::scan::open_bytes;
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
    /// Attachments written with the header (`Writer::create_with_attachments`), format 1.1.
    pub attachments: Vec<(&'static str, Vec<u8>)>,
    /// The format minor version the stored file has (the writer of its time).
    pub format_minor: u16,
    /// Step scalars from [`nan_and_absent_scalars`] (format 1.2) instead of the default
    /// pattern.
    pub nan_and_absent_scalars: bool,
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
        split_streams: false,
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
        attachments: Vec::new(),
        format_minor: 0,
        nan_and_absent_scalars: false,
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
            ..base.clone()
        },
        // Format 1.1: typed layout (incompat bit 0) and attachments.
        FixtureSpec {
            name: "typed_attachment.sgdw",
            description: "format 1.1: typed layout f32 w[5,4] (20 words), i64 count[] (2 words), u8 mask[7] (2 words, 1 padding byte), bool flags[3] (1 word, 1 padding byte), f16 half[3] (2 words, 2 padding bytes) = 27 words, incompat bit 0 set; attachments \"model.pt\" (300 bytes) and \"notes.txt\"; chunk 16, K=4, pred2; steps 0..=5; finished",
            header: typed_fixture_header(),
            steps: (0..=5).collect(),
            attachments: typed_fixture_attachments(),
            format_minor: 1,
            ..base.clone()
        },
        FixtureSpec {
            name: "typed_attachment_killed.sgdw",
            description: "format 1.1: as typed_attachment, steps 0..=4 written, no footer, the last step record cut by 40 bytes: readers see the attachments and steps 0..=3",
            header: typed_fixture_header(),
            steps: (0..=4).collect(),
            attachments: typed_fixture_attachments(),
            finish: false,
            cut_tail_bytes: 40,
            format_minor: 1,
            ..base.clone()
        },
        // Format 1.2: absent step scalars (incompat bit 1) apart from recorded NaNs.
        FixtureSpec {
            name: "absent_scalars.sgdw",
            description: "format 1.2: incompat bit 1 ABSENT_MASK; as basic, steps 0..=7, finished; step scalars recorded as NaN (quiet, negative, signalling payload), ±inf and −0.0, and absent in every combination the absent mask holds (one scalar, several, all, all but wall_time_secs at the last step)",
            steps: (0..=7).collect(),
            format_minor: 2,
            nan_and_absent_scalars: true,
            ..base.clone()
        },
        // Format 1.3: split byte streams (incompat bit 2), codecs 5–8.
        FixtureSpec {
            name: "split_streams.sgdw",
            description: "format 1.3: incompat bit 2 SPLIT_STREAMS; an MLP of 3060 f32 (b1 [60], w1 [40, 60], w2 [60, 10]) in chunks of 1024, K=4, split streams (key_split at keyframes, zigzag_delta_prev_split for the first delta of a chain, pred2_split after), 2 augmentation bytes per sample, steps 0..=9, finished",
            header: split_fixture_header(
                &[("b1", &[60]), ("w1", &[40, 60]), ("w2", &[60, 10])],
                1024,
                CodecId::Pred2,
                2,
                meta,
            ),
            steps: (0..=9).collect(),
            format_minor: 3,
            ..base.clone()
        },
        FixtureSpec {
            name: "split_xor.sgdw",
            description: "format 1.3: incompat bit 2 SPLIT_STREAMS; one tensor of 4999 f32 in chunks of 2048 (the last of 903 words, so its class stream ends in padding), K=4, delta codec xor_prev with split streams (key_split at keyframes, xor_prev_split deltas), no augmentation, steps 0..=5, finished: every chunk stores streams both ways (zstd classes, raw low bytes), keyframe chunks also empty streams (all their words are class 3)",
            header: split_fixture_header(&[("w", &[4999])], 2048, CodecId::XorPrev, 0, "{}"),
            steps: (0..=5).collect(),
            format_minor: 3,
            ..base
        },
    ]
}

/// The header of a format 1.3 fixture: split streams turned on explicitly (the writer's default
/// leaves them off), chunks of `chunk_len` elements, K=4, zstd level 1 and `delta`.
fn split_fixture_header(
    layout: &[(&str, &[u64])],
    chunk_len: u32,
    delta: CodecId,
    aug: u32,
    metadata: &str,
) -> Header {
    let codec = CodecSettings {
        chunk_len_elements: chunk_len,
        keyframe_interval: 4,
        zstd_level: 1,
        delta_codec: delta,
        split_streams: true,
    };
    fixture_header(layout, codec, aug, metadata)
}

/// The step scalars of the format 1.2 fixture: recorded NaNs of several payloads, infinities
/// and −0.0 next to absent scalars (`None`), so a reader that confuses the two fails.
pub fn nan_and_absent_scalars(step: u64) -> StepScalars {
    let nan = f64::NAN;
    let neg_nan = f64::from_bits(0xFFF8_0000_0000_0000);
    let signalling = f64::from_bits(0x7FF0_0000_0000_0001);
    let wall = Some(step as f64 * 0.25);
    let s = |lr, loss, grad, upd| StepScalars {
        learning_rate: lr,
        minibatch_loss: loss,
        grad_norm: grad,
        update_norm: upd,
        wall_time_secs: wall,
    };
    match step {
        0 => s(Some(0.01), Some(2.3), Some(1.0), Some(0.01)),
        1 => s(Some(1e30), Some(nan), Some(nan), Some(nan)),
        2 => s(Some(1e30), Some(neg_nan), Some(f64::INFINITY), Some(-0.0)),
        3 => s(
            Some(1e30),
            Some(signalling),
            Some(f64::NEG_INFINITY),
            Some(0.0),
        ),
        4 => s(None, Some(nan), Some(1.5), Some(0.25)),
        5 => s(Some(0.01), Some(nan), None, None),
        6 => StepScalars::absent(),
        _ => StepScalars {
            wall_time_secs: wall,
            ..StepScalars::absent()
        },
    }
}

/// The typed layout of the format 1.1 fixtures.
fn typed_fixture_header() -> Header {
    let layout = Header::typed_layout(&[
        ("w", DType::F32, &[5, 4]),
        ("count", DType::I64, &[]),
        ("mask", DType::U8, &[7]),
        ("flags", DType::Bool, &[3]),
        ("half", DType::F16, &[3]),
    ])
    .unwrap_or_default();
    let mut h = fixture_header(
        &[],
        CodecSettings {
            chunk_len_elements: 16,
            keyframe_interval: 4,
            zstd_level: 1,
            delta_codec: CodecId::Pred2,
            split_streams: false,
        },
        2,
        r#"{"model":"typed-fixture"}"#,
    );
    h.state_len_elements = layout.iter().filter_map(TensorSpec::len_words).sum();
    h.layout = layout;
    h
}

/// The attachments of the format 1.1 fixtures.
fn typed_fixture_attachments() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = SplitMix64::new(FIXTURE_SEED ^ 0xA77A);
    let module: Vec<u8> = (0..300).map(|_| rng.next_u64() as u8).collect();
    vec![
        ("model.pt", module),
        ("notes.txt", b"an attachment of format 1.1\n".to_vec()),
    ]
}

/// Deterministic values of a non-f32 tensor at `step`, as the words the state holds: the
/// elements' little-endian bytes, zero-padded to a whole word.
pub fn typed_tensor_words(dtype: DType, numel: usize, step: u64) -> Vec<u32> {
    let mut bytes = Vec::new();
    for i in 0..numel as u64 {
        let v = step.wrapping_mul(1000).wrapping_add(i);
        match dtype {
            DType::F64 => bytes.extend_from_slice(&(v as f64 * 0.5).to_le_bytes()),
            DType::F16 => bytes.extend_from_slice(&(0x3C00u16 + (v % 1024) as u16).to_le_bytes()),
            DType::BF16 => {
                bytes.extend_from_slice(&(((v as f32 * 0.25).to_bits() >> 16) as u16).to_le_bytes())
            }
            DType::I64 => bytes.extend_from_slice(&(v as i64 - 7).to_le_bytes()),
            DType::I32 => bytes.extend_from_slice(&(v as i32 - 7).to_le_bytes()),
            DType::I16 => bytes.extend_from_slice(&(v as i16 - 7).to_le_bytes()),
            DType::I8 => bytes.push((v as i8).wrapping_sub(7) as u8),
            DType::U8 => bytes.push((step.wrapping_mul(37).wrapping_add(i * 11)) as u8),
            DType::Bool => bytes.push(((step + i) % 2) as u8),
            // f32 tensors are not typed words (and not produced here).
            _ => bytes.extend_from_slice(&(v as f32).to_le_bytes()),
        }
    }
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
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
                let mut state = traj[step as usize].clone();
                // Non-f32 tensors hold real packed values, padding bytes zero.
                for t in spec.header.layout.iter().filter(|t| t.dtype != DType::F32) {
                    let numel = t.numel().unwrap_or(0) as usize;
                    let at = t.offset_elements as usize;
                    for (j, w) in typed_tensor_words(t.dtype, numel, step)
                        .into_iter()
                        .enumerate()
                    {
                        state[at + j] = f32::from_bits(w);
                    }
                }
                state
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
            // The 1.0/1.1 fixtures were written with NaN for "not available", which readers
            // return as absent.
            let scalars = if spec.nan_and_absent_scalars {
                nan_and_absent_scalars(step)
            } else {
                StepScalars {
                    learning_rate: Some(0.01),
                    minibatch_loss: Some(2.3 / (1.0 + step as f64)),
                    grad_norm: Some(1.0 + step as f64 / 8.0),
                    update_norm: (step % 3 != 0).then_some(0.01),
                    wall_time_secs: Some(step as f64 * 0.25),
                }
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
        overlap_writes: false,
    };
    let attachments: Vec<(&str, &[u8])> = spec
        .attachments
        .iter()
        .map(|(n, d)| (*n, d.as_slice()))
        .collect();
    let mut w = Writer::create_with_attachments(&path, spec.header.clone(), options, &attachments)?;
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
pub fn bad_fixtures(
    basic: &[u8],
    killed: &[u8],
    delta_step_offset: usize,
) -> Result<Vec<BadFixture>, FormatError> {
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
    // Bit 63: bits 0 and 1 became known features (1.1, 1.2); the highest bit stays unknown.
    b[23] = 0x80;
    fix_prologue_crc(&mut b);
    out.push(BadFixture {
        name: "unknown_incompat_flag.sgdw",
        description: "incompat flag bit 63 set (bit 0 TYPED_LAYOUT is known since 1.1, bit 1 ABSENT_MASK since 1.2)",
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
    out.extend(crafted_bad_fixtures(basic)?);
    Ok(out)
}

/// The corrupt files of `fixtures/bad/` about format 1.3, derived from the bytes of
/// `v1/split_streams.sgdw` (`split`): split codecs without the SPLIT_STREAMS bit, and a split
/// chunk whose stream table names an unknown stream mode (chunk and record CRCs recomputed).
pub fn bad_fixtures_v1_3(split: &[u8]) -> Result<Vec<BadFixture>, FormatError> {
    let mut out = Vec::new();
    let mut b = split.to_vec();
    b[16] &= !(INCOMPAT_SPLIT_STREAMS as u8);
    fix_prologue_crc(&mut b);
    out.push(BadFixture {
        name: "split_codec_without_flag.sgdw",
        description: "split_streams with incompat bit 2 (SPLIT_STREAMS) cleared, prologue CRC recomputed: opens, but decoding a step with codecs 5–8 is corrupt",
        bytes: b,
    });

    let (prefix, mut records) = split_records(split)?;
    let presence = prefix_presence(&prefix)?;
    let chunk_count = open_bytes(split)?.header.chunk_count();
    // The first pred2_split chunk of the file: (record, chunk, data offset, stored length).
    let mut found = None;
    for (i, r) in records.iter().enumerate() {
        if r.kind != RecordKind::Step as u8 {
            continue;
        }
        let p = decode_step_payload(&r.payload, 0, chunk_count, presence)?;
        if let Some(c) = p.chunks.iter().position(|e| e.codec == CodecId::Pred2Split) {
            let data = p.chunk_data[c];
            let at = data.as_ptr() as usize - r.payload.as_ptr() as usize;
            found = Some((i, c, at, data.len()));
            break;
        }
    }
    let (i, c, data_at, stored_len) =
        found.ok_or_else(|| FormatError::invalid_input("no pred2_split chunk in split_streams"))?;
    let step = &mut records[i];
    // pred2_split: mu_q8, then the stream table (SPEC.md §5.2); the mode byte of stream 1,
    // the leading bytes of class 0.
    step.payload[data_at + 2 + crate::codec::SPLIT_DESCRIPTOR_BYTES] = 7;
    let crc = crc32c::crc32c(&step.payload[data_at..data_at + stored_len]);
    // Chunk table entries start at payload offset 72 (SPEC.md §4.3): codec, 3 reserved,
    // stored_len, stored_crc.
    let entry_at = 72 + 24 * c;
    step.payload[entry_at + 8..entry_at + 12].copy_from_slice(&crc.to_le_bytes());
    out.push(BadFixture {
        name: "split_stream_mode.sgdw",
        description: "split_streams with the mode of stream 1 (the leading bytes of class 0) of the first pred2_split chunk (step 2, chunk 0) set to 7 (reserved), chunk and record CRCs recomputed: reading step 2 is corrupt",
        bytes: assemble(&prefix, &records, Ending::Finished { record_flags: 0 })?,
    });
    Ok(out)
}

/// The corrupt files of `fixtures/bad/` about format 1.1, derived from the bytes of
/// `v1/typed_attachment.sgdw` (`typed`): typed layout without its incompat bit, an unknown
/// dtype, and attachments with a wrong SHA-256, a duplicated name, or after a step record.
pub fn bad_fixtures_v1_1(typed: &[u8]) -> Result<Vec<BadFixture>, FormatError> {
    let mut out = Vec::new();
    let mut b = typed.to_vec();
    b[16] &= !(INCOMPAT_TYPED_LAYOUT as u8);
    fix_prologue_crc(&mut b);
    out.push(BadFixture {
        name: "typed_layout_without_flag.sgdw",
        description: "typed_attachment with incompat bit 0 (TYPED_LAYOUT) cleared, prologue CRC recomputed: an i64 tensor without the bit",
        bytes: b,
    });

    let mut b = typed.to_vec();
    let needle = br#""dtype":"bool""#;
    let at = b
        .windows(needle.len())
        .position(|w| w == needle)
        .ok_or_else(|| FormatError::invalid_input("no bool tensor in typed_attachment"))?;
    b[at + 9..at + 13].copy_from_slice(b"c128");
    reseal_record(&mut b, PROLOGUE_ENCODED_SIZE_BYTES);
    out.push(BadFixture {
        name: "unknown_dtype.sgdw",
        description: "typed_attachment with the dtype of `flags` renamed \"c128\" (not a format dtype), header CRCs recomputed",
        bytes: b,
    });

    let (prefix, records) = split_records(typed)?;
    let finished = Ending::Finished { record_flags: 0 };
    let is_att = |r: &RawRecord| r.kind == RecordKind::Attachment as u8;
    let first = records
        .iter()
        .position(is_att)
        .ok_or_else(|| FormatError::invalid_input("no attachment in typed_attachment"))?;
    let mut recs = records.clone();
    // The last data byte of the first attachment.
    let last = recs[first].payload.len() - 1;
    recs[first].payload[last] ^= 0x01;
    out.push(BadFixture {
        name: "attachment_sha256.sgdw",
        description: "typed_attachment with the last byte of model.pt flipped, record CRCs recomputed: only the attachment's SHA-256 can see it (opens; reading model.pt or verify fails)",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    let mut recs = records.clone();
    let second = first + 1;
    recs[second].payload = encode_attachment_payload("model.pt", b"a second model.pt")?;
    out.push(BadFixture {
        name: "attachment_duplicate_name.sgdw",
        description: "typed_attachment whose second attachment is also named model.pt",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    let mut recs = records.clone();
    let moved = recs.remove(second);
    let step0 = recs
        .iter()
        .position(|r| r.kind == RecordKind::Step as u8)
        .ok_or(FormatError::StepNotFound { step: 0 })?;
    recs.insert(step0 + 1, moved);
    out.push(BadFixture {
        name: "attachment_after_step.sgdw",
        description: "typed_attachment with the notes.txt attachment moved after step 0's record (attachments must precede every step, epoch and resume record)",
        bytes: assemble(&prefix, &recs, finished)?,
    });
    Ok(out)
}

/// One record of a recording taken apart by [`split_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Kind byte (any value, known or not).
    pub kind: u8,
    /// Record flags.
    pub flags: u8,
    /// The record header's step field.
    pub step: u64,
    /// The payload (without padding).
    pub payload: Vec<u8>,
}

/// Takes a valid recording apart: the bytes of its prologue and HEADER record, and its data
/// records in file order (INDEX, FOOTER, trailer and a torn tail are dropped).
pub fn split_records(bytes: &[u8]) -> Result<(Vec<u8>, Vec<RawRecord>), FormatError> {
    let opened = open_bytes(bytes)?;
    let prefix = bytes[..opened.header_end as usize].to_vec();
    let records = opened
        .entries
        .iter()
        .map(|e| {
            let at = e.record_offset as usize;
            let h = RecordHeader::decode(&bytes[at..], e.record_offset)?;
            let start = at + RECORD_HEADER_ENCODED_SIZE_BYTES;
            Ok(RawRecord {
                kind: h.kind,
                flags: h.flags,
                step: h.step,
                payload: bytes[start..start + h.payload_len_bytes as usize].to_vec(),
            })
        })
        .collect::<Result<_, FormatError>>()?;
    Ok((prefix, records))
}

/// How [`assemble`] ends a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// After the last data record (an unfinished file).
    Unfinished,
    /// With INDEX, FOOTER (both with these record flags) and trailer, as `Writer::finish`.
    Finished {
        /// Flags of the INDEX and FOOTER record headers.
        record_flags: u8,
    },
}

fn push_record(out: &mut Vec<u8>, kind: u8, flags: u8, step: u64, payload: &[u8]) -> (u64, u64) {
    let h = RecordHeader {
        kind,
        flags,
        payload_len_bytes: payload.len() as u64,
        step,
        payload_crc32c: crc32c::crc32c(payload),
    };
    let offset = out.len() as u64;
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, padding_len(payload.len() as u64)));
    (offset, out.len() as u64 - offset)
}

/// Writes `records` after `prefix` (a prologue and HEADER record) and ends the file as `ending`
/// says, building the index a writer would (chain fields from the step payloads).
pub fn assemble(
    prefix: &[u8],
    records: &[RawRecord],
    ending: Ending,
) -> Result<Vec<u8>, FormatError> {
    let presence = prefix_presence(prefix)?;
    let mut out = prefix.to_vec();
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        let (record_offset, record_len_bytes) =
            push_record(&mut out, r.kind, r.flags, r.step, &r.payload);
        let (chain_start_step, flags) = if r.kind == RecordKind::Step as u8 {
            let fixed = decode_step_fixed(&r.payload, record_offset, presence)?;
            let flags = if fixed.is_keyframe() {
                INDEX_FLAG_KEYFRAME
            } else {
                0
            };
            (fixed.chain_start_step, flags)
        } else {
            (r.step, 0)
        };
        entries.push(IndexEntry {
            record_offset,
            record_len_bytes,
            step: r.step,
            chain_start_step,
            kind: r.kind,
            flags,
        });
    }
    let Ending::Finished { record_flags } = ending else {
        return Ok(out);
    };
    let index = encode_index_payload(&entries);
    let (index_record_offset, index_record_len_bytes) = push_record(
        &mut out,
        RecordKind::Index as u8,
        record_flags,
        NO_STEP,
        &index,
    );
    let steps: Vec<u64> = entries
        .iter()
        .filter(|e| e.is_step())
        .map(|e| e.step)
        .collect();
    let footer = Footer {
        index_record_offset,
        index_record_len_bytes,
        data_record_count: entries.len() as u64,
        step_count: steps.len() as u64,
        first_step: steps.first().copied().unwrap_or(NO_STEP),
        last_step: steps.last().copied().unwrap_or(NO_STEP),
    };
    let (footer_record_offset, footer_record_len_bytes) = push_record(
        &mut out,
        RecordKind::Footer as u8,
        record_flags,
        NO_STEP,
        &footer.encode(),
    );
    // The trailer repeats the prologue's version (a 1.0 prefix stays 1.0).
    let version_at = |at: usize| {
        prefix
            .get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let trailer = Trailer {
        footer_record_offset,
        footer_record_len_bytes,
        major: version_at(8),
        minor: version_at(10),
    };
    out.extend_from_slice(&trailer.encode());
    Ok(out)
}

fn spec_named(name: &str) -> Result<FixtureSpec, FormatError> {
    fixture_specs_v1()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| FormatError::invalid_input(format!("no fixture spec {name}")))
}

/// How the STEP records after `prefix` (a prologue and HEADER record) store absent scalars.
/// Read from the incompat flags without validating the prologue (bad fixtures break it).
fn prefix_presence(prefix: &[u8]) -> Result<ScalarPresence, FormatError> {
    let flags = prefix
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| FormatError::invalid_input("prefix shorter than a prologue"))?;
    Ok(ScalarPresence::from_incompat_flags(flags))
}

/// Re-encodes the step record of `step` among `records` with new ids and augmentation blobs
/// (chunk table and chunk data unchanged).
fn replace_blobs(
    records: &mut [RawRecord],
    header: &Header,
    presence: ScalarPresence,
    step: u64,
    (ids_codec, ids): (u8, &[u8]),
    (aug_codec, aug): (u8, &[u8]),
) -> Result<(), FormatError> {
    let r = records
        .iter_mut()
        .find(|r| r.kind == RecordKind::Step as u8 && r.step == step)
        .ok_or(FormatError::StepNotFound { step })?;
    let p = decode_step_payload(&r.payload, 0, header.chunk_count(), presence)?;
    let fixed = StepFixed {
        ids_codec,
        aug_codec,
        ids_stored_len_bytes: ids.len() as u32,
        aug_stored_len_bytes: aug.len() as u32,
        ..p.fixed
    };
    let chunks: Vec<_> = p
        .chunks
        .iter()
        .zip(&p.chunk_data)
        .map(|(e, d)| (*e, d.to_vec()))
        .collect();
    r.payload = encode_step_payload(presence, &fixed, &chunks, ids, aug);
    Ok(())
}

/// Rewrites one little-endian u32 of the HEADER payload (at `payload_offset`) and reseals the
/// header record.
fn patch_header_u32(b: &mut [u8], payload_offset: usize, value: u32) {
    let at = PROLOGUE_ENCODED_SIZE_BYTES + RECORD_HEADER_ENCODED_SIZE_BYTES + payload_offset;
    b[at..at + 4].copy_from_slice(&value.to_le_bytes());
    reseal_record(b, PROLOGUE_ENCODED_SIZE_BYTES);
}

fn le_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Corrupt files that need records rebuilt (not just bytes flipped): the rules SPEC.md states
/// for ids and augmentation sizes, the header's `delta_codec`, keyframes at multiples of K,
/// unknown kinds, and the no-fallback rule for a file that ends in the magic.
fn crafted_bad_fixtures(basic: &[u8]) -> Result<Vec<BadFixture>, FormatError> {
    let mut out = Vec::new();
    let mut b = basic.to_vec();
    // delta_codec is the byte at HEADER payload offset 44.
    let delta_at = PROLOGUE_ENCODED_SIZE_BYTES + RECORD_HEADER_ENCODED_SIZE_BYTES + 44;
    b[delta_at] = CodecId::Key as u8;
    reseal_record(&mut b, PROLOGUE_ENCODED_SIZE_BYTES);
    out.push(BadFixture {
        name: "header_delta_codec.sgdw",
        description: "HEADER delta_codec 1 (a standalone codec; only 2, 3, 4 are valid), CRCs recomputed",
        bytes: b,
    });
    let mut b = basic.to_vec();
    patch_header_u32(&mut b, 36, 2);
    out.push(BadFixture {
        name: "missing_keyframe.sgdw",
        description: "HEADER K changed from 4 to 2, CRCs recomputed: step 2 is a delta step at a multiple of K",
        bytes: b,
    });

    let spec = spec_named("basic_pred2.sgdw")?;
    let inputs = fixture_inputs(&spec);
    let (prefix, records) = split_records(basic)?;
    let finished = Ending::Finished { record_flags: 0 };

    let mut recs = records.clone();
    recs.insert(
        1,
        RawRecord {
            kind: 200,
            flags: 0,
            step: NO_STEP,
            payload: b"a record kind from the future".to_vec(),
        },
    );
    out.push(BadFixture {
        name: "unknown_kind.sgdw",
        description: "finished, with a record of unknown kind 200 without SKIPPABLE (listed in the index) after step 0",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    let step1 = &inputs[1];
    let mut ids = le_ids(&step1.sample_ids);
    ids.extend_from_slice(&[0, 0]);
    let mut recs = records.clone();
    replace_blobs(
        &mut recs,
        &spec.header,
        prefix_presence(&prefix)?,
        1,
        (BLOB_RAW, &ids),
        (BLOB_RAW, &step1.augmentation),
    )?;
    out.push(BadFixture {
        name: "ids_raw_length.sgdw",
        description: "step 1 stores its 8 ids raw in 34 bytes (4·S + 2); raw ids must be exactly 4·S bytes",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    let aug = &step1.augmentation[..step1.augmentation.len() - 1];
    let mut recs = records.clone();
    replace_blobs(
        &mut recs,
        &spec.header,
        prefix_presence(&prefix)?,
        1,
        (BLOB_RAW, &le_ids(&step1.sample_ids)),
        (BLOB_RAW, aug),
    )?;
    out.push(BadFixture {
        name: "aug_raw_length.sgdw",
        description: "step 1 stores its augmentation raw in 15 bytes (S·A − 1); raw augmentation must be exactly S·A bytes",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    let mut recs = records.clone();
    replace_blobs(
        &mut recs,
        &spec.header,
        prefix_presence(&prefix)?,
        23,
        (BLOB_SHUFFLE4_ZSTD, &[]),
        (BLOB_RAW, &[]),
    )?;
    out.push(BadFixture {
        name: "empty_ids_zstd_no_frame.sgdw",
        description: "the last step (S = 0) says ids codec 1 (zstd) with 0 stored bytes: a zstd blob is one frame even when empty",
        bytes: assemble(&prefix, &recs, finished)?,
    });

    // Records up to step 6, then an EPOCH record of 40 payload bytes (no padding) whose last
    // field, `samples`, is the magic read as a u64: a writer killed right after it leaves a
    // file whose last 8 bytes are the magic.
    let last = records
        .iter()
        .position(|r| r.kind == RecordKind::Step as u8 && r.step == 6)
        .ok_or(FormatError::StepNotFound { step: 6 })?;
    let mut recs = records[..=last].to_vec();
    let epoch = EpochRecord {
        epoch: 1,
        step: 7,
        evals: vec![EvalRecord {
            split: "test".into(),
            loss: 0.5,
            accuracy: 0.5,
            samples: u64::from_le_bytes(FILE_MAGIC),
        }],
    };
    recs.push(RawRecord {
        kind: RecordKind::Epoch as u8,
        flags: 0,
        step: epoch.step,
        payload: encode_epoch_payload(&epoch)?,
    });
    out.push(BadFixture {
        name: "unfinished_ends_in_magic.sgdw",
        description: "unfinished (steps 0..=6, then an EPOCH record whose `samples` bytes equal the magic): it ends in the magic, so it reads as finished and its trailer fails; readers must not fall back to scanning",
        bytes: assemble(&prefix, &recs, Ending::Unfinished)?,
    });
    Ok(out)
}

/// A valid file of `fixtures/edge/`: bytes the reference writer never produces but every
/// reader must accept, holding exactly the data of `v1/basic_pred2.sgdw`.
pub struct EdgeFixture {
    /// File name.
    pub name: &'static str,
    /// What is unusual.
    pub description: &'static str,
    /// Whether the file is finished.
    pub finished: bool,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The valid-but-unusual files of `fixtures/edge/`, derived from the bytes of
/// `basic_pred2.sgdw`; each holds the same steps, states, ids, augmentation, scalars, epoch and
/// resume records as it (the generator inputs of that fixture spec).
pub fn edge_fixtures(basic: &[u8]) -> Result<Vec<EdgeFixture>, FormatError> {
    let spec = spec_named("basic_pred2.sgdw")?;
    let (prefix, records) = split_records(basic)?;
    let mut out = Vec::new();

    // SKIPPABLE on every record of a known kind, and two records of unknown kinds that may be
    // skipped (one without a step, one with an empty payload).
    let mut skippable: Vec<RawRecord> = records
        .iter()
        .map(|r| RawRecord {
            flags: RECORD_FLAG_SKIPPABLE,
            ..r.clone()
        })
        .collect();
    skippable.insert(
        1,
        RawRecord {
            kind: 200,
            flags: RECORD_FLAG_SKIPPABLE,
            step: NO_STEP,
            payload: b"a record kind from the future".to_vec(),
        },
    );
    let after5 = skippable
        .iter()
        .rposition(|r| r.step == 5)
        .ok_or(FormatError::StepNotFound { step: 5 })?;
    skippable.insert(
        after5 + 1,
        RawRecord {
            kind: 255,
            flags: RECORD_FLAG_SKIPPABLE,
            step: 5,
            payload: Vec::new(),
        },
    );
    let mut skippable_prefix = prefix.clone();
    skippable_prefix[PROLOGUE_ENCODED_SIZE_BYTES + 5] = RECORD_FLAG_SKIPPABLE;
    reseal_record(&mut skippable_prefix, PROLOGUE_ENCODED_SIZE_BYTES);
    out.push(EdgeFixture {
        name: "skippable_flags.sgdw",
        description: "every record (HEADER, data, INDEX, FOOTER) has SKIPPABLE set, plus unknown SKIPPABLE kinds 200 (after step 0, step NO_STEP) and 255 (after step 5's records, step 5, empty payload), both in the index; finished",
        finished: true,
        bytes: assemble(
            &skippable_prefix,
            &skippable,
            Ending::Finished {
                record_flags: RECORD_FLAG_SKIPPABLE,
            },
        )?,
    });
    out.push(EdgeFixture {
        name: "skippable_flags_unfinished.sgdw",
        description: "the records of skippable_flags.sgdw without INDEX, FOOTER and trailer (read by scanning)",
        finished: false,
        bytes: assemble(&skippable_prefix, &skippable, Ending::Unfinished)?,
    });

    // The last step (S = 0) with both blobs as one zstd frame of empty content.
    let empty_frame = crate::codec::zstd_bytes(&[], 1)?;
    let mut recs = records.clone();
    replace_blobs(
        &mut recs,
        &spec.header,
        prefix_presence(&prefix)?,
        23,
        (BLOB_SHUFFLE4_ZSTD, &empty_frame),
        (BLOB_ZSTD, &empty_frame),
    )?;
    out.push(EdgeFixture {
        name: "empty_zstd_blobs.sgdw",
        description: "the last step (S = 0) stores ids (codec 1) and augmentation (codec 2) as one zstd frame of empty content each, instead of raw with length 0; finished",
        finished: true,
        bytes: assemble(&prefix, &recs, Ending::Finished { record_flags: 0 })?,
    });
    Ok(out)
}
