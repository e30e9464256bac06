//! `sgdwalk-record`: trains a workload model with tch on CUDA or CPU and streams every step —
//! full state, minibatch ids, augmentation choices, scalars — into one recording
//! (`sgdwalk-format`), off the training thread.
//!
//! Step `t` of a recording holds θ_t (the state *before* update t: parameters and BatchNorm
//! running statistics), the samples and augmentation of update t, and its scalars (learning
//! rate, minibatch loss at θ_t, gradient norm, update norm, wall time). The last state of a run
//! has no samples. So d_t = θ_{t+1} − θ_t is exactly the update applied, by construction.

pub mod config;
pub mod device_residual;
pub mod error;
pub mod optim;
pub mod policy;
pub mod resume;
pub mod sink;
pub mod train;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use serde::Serialize;
use sgdwalk_format::{
    CodecSettings, DType, EpochRecord, EvalRecord, Header, Reader, StepScalars, TensorSpec, Writer,
    WriterOptions,
};
use sgdwalk_workload::models::MODULE_ATTACHMENT;
use sgdwalk_workload::progress::progress_bar;
use sgdwalk_workload::run::{
    AugmentationSpec, Provenance, RUN_DESCRIPTION_VERSION, RunDescription, derive_seed,
};
use sgdwalk_workload::{AUG_BYTES_PER_SAMPLE, BnPolicy, Dataset, ModelSpec, evaluate};

pub use config::{RecordArgs, RecordConfig, default_encode_threads, default_threads};
pub use error::RecordError;
use optim::Optimizer;
use sink::{Record, Sink};
use train::Trainer;

/// Asks a run to stop at the next step boundary, with a complete recording.
#[derive(Debug, Default, Clone)]
pub struct StopFlag {
    /// Set by a caller (a test, an embedding program).
    pub requested: Arc<AtomicBool>,
    sigint: Arc<AtomicBool>,
    sigterm: Arc<AtomicBool>,
}

impl StopFlag {
    /// Makes SIGINT and SIGTERM stop the run at the next step boundary; a second signal of the
    /// same kind ends the process at once (exit 130 / 143).
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for (sig, flag, code) in [(SIGINT, &self.sigint, 130), (SIGTERM, &self.sigterm, 143)] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(sig, code, Arc::clone(flag))?;
            signal_hook::flag::register(sig, Arc::clone(flag))?;
        }
        Ok(())
    }

    /// Has anyone asked to stop?
    pub fn is_set(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
            || self.sigint.load(Ordering::SeqCst)
            || self.sigterm.load(Ordering::SeqCst)
    }

    /// The signal that asked to stop, if one did (0 when a caller asked).
    pub fn signal(&self) -> Option<i32> {
        if self.sigint.load(Ordering::SeqCst) {
            Some(signal_hook::consts::SIGINT)
        } else if self.sigterm.load(Ordering::SeqCst) {
            Some(signal_hook::consts::SIGTERM)
        } else if self.requested.load(Ordering::SeqCst) {
            Some(0)
        } else {
            None
        }
    }
}

/// One per-epoch evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EpochSummary {
    pub epoch: u32,
    pub step: u64,
    pub split: String,
    pub loss: f64,
    pub accuracy: f64,
}

/// What a run did, for people (Display) and machines (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct RecordSummary {
    pub out: String,
    pub device: String,
    /// Updates applied by this process.
    pub updates: u64,
    /// First and last step this process recorded.
    pub first_step: Option<u64>,
    pub last_step: u64,
    pub steps_recorded: u64,
    pub keyframes: u64,
    /// Set when a signal (0: a caller) stopped the run early; the recording is complete up
    /// to `last_step`.
    pub interrupted_by_signal: Option<i32>,
    /// Step this process resumed from, if --resume.
    pub resumed_from_step: Option<u64>,
    /// Set when --resume found no resume point in the file and started over from step 0 with
    /// the recorded settings.
    pub started_over: bool,
    pub raw_state_bytes: u64,
    pub stored_state_bytes: u64,
    pub file_bytes: u64,
    /// raw state bytes / stored state bytes.
    pub compression_ratio: f64,
    pub wall_secs: f64,
    pub updates_per_sec: f64,
    /// How snapshots left the training thread: `ring` (device-side copy into the snapshot
    /// ring, copied to pinned host memory off the training stream) or `host`.
    pub snapshot_path: String,
    /// Buffers of the snapshot ring (0 without it) and the device memory they hold (as much
    /// again in host memory).
    pub snapshot_ring_buffers: usize,
    pub snapshot_ring_device_bytes: u64,
    /// Steps coded from residuals computed on the device (`--device-residual`), and whether
    /// one was refused (which turned the device pass off for the rest of the run).
    pub device_residual_steps: u64,
    pub device_residual_refused: bool,
    /// Threads encoding chunks (`--encode-threads`; 0 = one per core).
    pub encode_threads: u32,
    /// Where recording time went: the training thread taking snapshots (on CUDA: queueing the
    /// device-side copy), the copy thread copying them to the host, the writer thread encoding
    /// plus writing them, and the training thread blocked on a full queue or a full ring.
    pub training_snapshot_secs: f64,
    pub writer_copy_secs: f64,
    pub writer_encode_write_secs: f64,
    /// The part of `writer_encode_write_secs` spent encoding chunks in parallel (and waiting for
    /// an overlapped write); the rest is serial: writes, syncs, advancing the delta bases.
    pub writer_encode_secs: f64,
    pub training_blocked_secs: f64,
    /// The training loop alone (first to last update, with the snapshots, back-pressure and
    /// evaluations inside it), and what followed it: the closing snapshot, draining the queue
    /// and ring, the footer. The setup before the loop is `wall_secs` less both.
    pub training_loop_secs: f64,
    pub finish_secs: f64,
    pub epochs: Vec<EpochSummary>,
}

impl RecordSummary {
    /// How many steps were coded from device residuals, and whether one was refused; `None`
    /// when the run computed none.
    pub fn device_residual_line(&self) -> Option<String> {
        (self.device_residual_steps > 0 || self.device_residual_refused).then(|| {
            format!(
                "device residuals: {} of {} steps coded from them{}",
                self.device_residual_steps,
                self.steps_recorded,
                if self.device_residual_refused {
                    "; one was refused and turned them off (see the warning above)"
                } else {
                    ""
                }
            )
        })
    }
}

impl std::fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "recording: {}", self.out)?;
        if self.started_over {
            writeln!(
                f,
                "resumed from step 0: the file held no resume point, so the run started over with the recorded settings"
            )?;
        } else if let Some(r) = self.resumed_from_step {
            writeln!(f, "resumed from step {r}")?;
        }
        writeln!(
            f,
            "{} updates on {} in {:.1} s ({:.1} updates/s); {} steps recorded ({} keyframes), last step {}",
            self.updates,
            self.device,
            self.wall_secs,
            self.updates_per_sec,
            self.steps_recorded,
            self.keyframes,
            self.last_step
        )?;
        writeln!(
            f,
            "state bytes {:.1} MB raw, {:.1} MB stored (ratio {:.2}x); file {:.1} MB",
            self.raw_state_bytes as f64 / 1e6,
            self.stored_state_bytes as f64 / 1e6,
            self.compression_ratio,
            self.file_bytes as f64 / 1e6
        )?;
        let encoders = match self.encode_threads {
            0 => "one encode thread per core".to_string(),
            1 => "1 encode thread".to_string(),
            n => format!("{n} encode threads"),
        };
        if self.snapshot_ring_buffers > 0 {
            writeln!(
                f,
                "snapshots via the ring ({} buffers): training {:.2} s taking snapshots, {:.2} s blocked on a full queue or ring; copy thread {:.2} s copying to the host; writer {:.2} s encoding and writing ({:.2} s of it encoding, {encoders})",
                self.snapshot_ring_buffers,
                self.training_snapshot_secs,
                self.training_blocked_secs,
                self.writer_copy_secs,
                self.writer_encode_write_secs,
                self.writer_encode_secs,
            )?;
            if let Some(line) = self.device_residual_line() {
                writeln!(f, "{line}")?;
            }
        } else {
            writeln!(
                f,
                "snapshots via host memory: training {:.2} s taking snapshots, {:.2} s blocked on a full queue; writer {:.2} s encoding and writing ({:.2} s of it encoding, {encoders})",
                self.training_snapshot_secs,
                self.training_blocked_secs,
                self.writer_encode_write_secs,
                self.writer_encode_secs,
            )?;
        }
        for e in &self.epochs {
            writeln!(
                f,
                "epoch {:3} (step {}): {:5} loss {:.4} accuracy {:.2}%",
                e.epoch,
                e.step,
                e.split,
                e.loss,
                100.0 * e.accuracy
            )?;
        }
        if let Some(sig) = self.interrupted_by_signal {
            if self.last_step == 0 {
                // --resume on a file without a resume point starts over from step 0.
                writeln!(
                    f,
                    "interrupted by signal {sig} before the first update: the recording holds step 0 only (continue with --resume: it starts over from step 0 with the recorded settings)"
                )?;
            } else {
                writeln!(
                    f,
                    "interrupted by signal {sig}: the recording is complete up to step {} (continue with --resume)",
                    self.last_step
                )?;
            }
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn now_unix() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The recording format's name for a state tensor's element type.
fn format_dtype(d: sgdwalk_workload::StateDType) -> DType {
    use sgdwalk_workload::StateDType as S;
    match d {
        S::F32 => DType::F32,
        S::F64 => DType::F64,
        S::F16 => DType::F16,
        S::Bf16 => DType::BF16,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I16 => DType::I16,
        S::I8 => DType::I8,
        S::U8 => DType::U8,
        S::Bool => DType::Bool,
    }
}

/// The header of a new recording for `desc`.
fn header_for(desc: &RunDescription, cfg: &RecordConfig) -> Result<Header, RecordError> {
    let layout = desc
        .layout
        .entries
        .iter()
        .map(|e| TensorSpec {
            name: e.name.clone(),
            dtype: format_dtype(e.dtype),
            shape: e.shape.iter().map(|&d| d as u64).collect(),
            offset_elements: e.offset_elements as u64,
        })
        .collect();
    let metadata_json = desc
        .to_metadata_json()
        .map_err(|e| RecordError::InvalidSetting {
            flag: "model",
            reason: format!("cannot describe the run as JSON: {e}"),
        })?;
    let now = now_unix();
    // The run id only has to be unique: time, process and run description mixed.
    let mix = derive_seed(
        now.as_nanos() as u64 ^ u64::from(std::process::id()),
        desc.seeds.init,
    );
    let mix2 = derive_seed(mix, 7);
    let mut run_id = [0u8; 16];
    run_id[..8].copy_from_slice(&mix.to_le_bytes());
    run_id[8..].copy_from_slice(&mix2.to_le_bytes());
    Ok(Header {
        run_id,
        created_unix_ms: now.as_millis() as u64,
        layout,
        state_len_elements: desc.layout.len_elements() as u64,
        augmentation_bytes_per_sample: desc.augmentation.as_ref().map_or(0, |a| a.bytes_per_sample),
        metadata_json,
        codec: CodecSettings {
            keyframe_interval: cfg.keyframe_interval,
            zstd_level: cfg.zstd_level,
            split_streams: cfg.split_streams,
            ..CodecSettings::default()
        },
    })
}

/// Reads the run description a recording stores.
pub fn run_description(header: &Header, path: &Path) -> Result<RunDescription, RecordError> {
    RunDescription::from_metadata_json(&header.metadata_json).map_err(|e| {
        RecordError::CannotResume {
            path: path.to_path_buf(),
            reason: format!("its metadata is not an sgdwalk-record run description: {e}"),
        }
    })
}

/// Trains and records as `cfg` says. Stops early, with a complete recording, when `stop` is
/// set. Every setting is checked and the output created before the first update.
pub fn record(cfg: &RecordConfig, stop: &StopFlag) -> Result<RecordSummary, RecordError> {
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    let started = Instant::now();

    // Settings, data and output, all before training.
    let (desc, data, resume) = if cfg.resume {
        prepare_resume(cfg)?
    } else {
        prepare_new(cfg)?
    };
    let module = match &resume {
        Some(r) => r.module.as_deref(),
        None => cfg.module.as_deref(),
    };
    let started_over = resume.as_ref().is_some_and(|r| r.start_over.is_some());
    let mut trainer = Trainer::new(desc.clone(), data, cfg.device, module)?;
    let start = open_output(cfg, &desc, resume.as_ref(), &mut trainer)?;
    let ring = ring_options(cfg, &desc, start.writer.header())?;
    if let Some(r) = &ring
        && cfg.progress
    {
        eprintln!(
            "snapshot ring: {} buffers of {:.1} MB{}: {:.1} MB on {} and {:.1} MB of {} host memory",
            r.slots,
            r.slot_len()? as f64 * 4e-6,
            if r.residual.is_some() {
                " (state and device residual)"
            } else {
                ""
            },
            r.device_bytes()? as f64 * 1e-6,
            device_name(cfg.device),
            r.host_bytes()? as f64 * 1e-6,
            if cfg.device == tch::Device::Cpu {
                "(CPU stand-in)"
            } else {
                "pinned"
            }
        );
    }
    let mut sink = Sink::start_with_ring(start.writer, cfg.queue, cfg.out.clone(), false, ring)?;

    let total = desc.total_steps;
    let bar = progress_bar(cfg.progress, total, "steps");
    bar.set_position(start.step);
    let ctx = LoopContext {
        cfg,
        desc: &desc,
        resumed_at: resume
            .as_ref()
            .filter(|r| r.start_over.is_none())
            .map(|r| r.step),
        wall_offset_secs: start.wall_offset_secs,
        loop_started: Instant::now(),
    };
    let walked = train_loop(&ctx, stop, &mut trainer, &mut sink, &bar, start.step)?;
    // The loop ends when the device has applied the last update, not when the host queued it
    // (without recording, the host runs ahead of the device by several steps).
    if let tch::Device::Cuda(index) = cfg.device {
        tch::Cuda::synchronize(index as i64);
    }
    let loop_ended = Instant::now();
    let t = walked.step;
    let mut first_step = walked.first_step;
    // The state after the last update: it closes the last pair, and like θ_0 it is always kept
    // (distance travelled and flatness at the end of training need it under sparse policies).
    let interrupted = t < total;
    // A resumed run stopped before its first update: its resume point is that state, already
    // in the file.
    let closing_in_file = ctx.resumed_at == Some(t);
    if !matches!(cfg.policy, policy::RecordPolicy::Nothing) && !closing_in_file {
        first_step.get_or_insert(t);
        let state = trainer.snapshot(&mut sink, t)?;
        sink.send(Record::Step {
            step: t,
            state,
            sample_ids: Vec::new(),
            augmentation: Vec::new(),
            // No update follows the last state: its update scalars are absent (not NaN).
            scalars: StepScalars {
                wall_time_secs: Some(ctx.wall_time_secs()),
                ..StepScalars::absent()
            },
        })?;
    }
    let counters = Arc::clone(&sink.counters);
    let written = sink.finish()?;
    bar.finish_and_clear();
    let raw = counters.raw_bytes.load(Ordering::Relaxed);
    let stored = counters.stored_bytes.load(Ordering::Relaxed);
    let wall = started.elapsed().as_secs_f64();
    let updates = t - start.step;
    Ok(RecordSummary {
        out: cfg.out.display().to_string(),
        device: device_name(cfg.device),
        updates,
        first_step,
        last_step: t,
        steps_recorded: counters.steps_written.load(Ordering::Relaxed),
        keyframes: counters.keyframes.load(Ordering::Relaxed),
        interrupted_by_signal: if interrupted { stop.signal() } else { None },
        resumed_from_step: resume.as_ref().map(|r| r.step),
        started_over,
        raw_state_bytes: raw,
        stored_state_bytes: stored,
        file_bytes: written.file_bytes,
        compression_ratio: if stored > 0 {
            raw as f64 / stored as f64
        } else {
            f64::NAN
        },
        wall_secs: wall,
        updates_per_sec: updates as f64 / ctx.loop_started.elapsed().as_secs_f64().max(1e-9),
        snapshot_path: if ring.is_some() { "ring" } else { "host" }.into(),
        snapshot_ring_buffers: ring.map_or(0, |r| r.slots),
        snapshot_ring_device_bytes: ring.map_or(Ok(0), |r| r.device_bytes())?,
        device_residual_steps: counters.device_residual_steps.load(Ordering::Relaxed),
        device_residual_refused: counters.device_residual_refused.load(Ordering::Relaxed) > 0,
        encode_threads: cfg.encode_threads,
        training_snapshot_secs: counters.snapshot_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        writer_copy_secs: counters.copy_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        writer_encode_write_secs: counters.write_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        writer_encode_secs: counters.encode_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        training_blocked_secs: counters.blocked_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        training_loop_secs: loop_ended
            .saturating_duration_since(ctx.loop_started)
            .as_secs_f64(),
        finish_secs: loop_ended.elapsed().as_secs_f64(),
        epochs: walked.epochs,
    })
}

/// The snapshot ring, if snapshots take it, and with `--device-residual` what the device
/// computes: the recording's codec settings (a resumed run keeps the recorded ones).
fn ring_options(
    cfg: &RecordConfig,
    desc: &RunDescription,
    header: &Header,
) -> Result<Option<sink::RingOptions>, RecordError> {
    let uses_ring = cfg.snapshot_path.uses_ring(cfg.device);
    let residual = if cfg.device_residual {
        config::check_device_residual(uses_ring, header.codec.split_streams)?;
        Some(sink::ResidualOptions::for_codec(&header.codec))
    } else {
        None
    };
    Ok(uses_ring.then_some(sink::RingOptions {
        slots: cfg.snapshot_ring,
        state_len: desc.layout.len_elements(),
        device: cfg.device,
        residual,
    }))
}

/// A new run: refuses an existing output unless `--overwrite`, loads the data and describes
/// the run.
fn prepare_new(
    cfg: &RecordConfig,
) -> Result<(RunDescription, Dataset, Option<ResumePoint>), RecordError> {
    if cfg.out.exists() && !cfg.overwrite {
        return Err(RecordError::OutputExists {
            path: cfg.out.clone(),
        });
    }
    let data = Dataset::load(&cfg.dataset, &cfg.data_dir)?;
    let desc = describe(cfg, &data)?;
    Ok((desc, data, None))
}

/// Where this process starts writing.
struct Start {
    writer: Writer,
    /// The first step this process trains (0, or the resume point).
    step: u64,
    /// Wall-clock seconds the recording had reached at `step`.
    wall_offset_secs: f64,
}

/// Opens the recording: reopened at the resume point (the trainer gets the recorded state and
/// optimizer), or created afresh with its header and attachments.
fn open_output(
    cfg: &RecordConfig,
    desc: &RunDescription,
    resume: Option<&ResumePoint>,
    trainer: &mut Trainer,
) -> Result<Start, RecordError> {
    let writer_options = WriterOptions {
        fsync: cfg.fsync,
        threads: cfg.encode_threads as usize,
        overlap_writes: true,
    };
    if let Some(StartOver {
        header,
        attachments,
    }) = resume.and_then(|r| r.start_over.as_ref())
    {
        let writer = start_over(&cfg.out, header.clone(), attachments, writer_options)?;
        return Ok(Start {
            writer,
            step: 0,
            wall_offset_secs: 0.0,
        });
    }
    if let Some(r) = resume {
        trainer.model.load_flat(&r.state)?;
        trainer.set_optimizer(Optimizer::import(
            desc.optimizer.clone(),
            trainer.params(),
            &r.buffers,
            &r.descriptor,
        )?);
        let (writer, _report) = Writer::reopen(&cfg.out, writer_options, Some(r.step))?;
        return Ok(Start {
            writer,
            step: r.step,
            wall_offset_secs: r.wall_secs,
        });
    }
    let header = header_for(desc, cfg)?;
    if cfg.overwrite && cfg.out.exists() {
        std::fs::remove_file(&cfg.out).map_err(|source| RecordError::OutputUnwritable {
            path: cfg.out.clone(),
            source,
        })?;
    }
    // `-o runs/lr0.1/run.walk` makes its folder, as `analyze -o` does.
    if let Some(parent) = cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| RecordError::OutputUnwritable {
            path: cfg.out.clone(),
            source,
        })?;
    }
    // A TorchScript run carries its module, so the recording alone rebuilds the model.
    let attachments: Vec<(&str, &[u8])> = cfg
        .module
        .as_deref()
        .map(|m| (MODULE_ATTACHMENT, m))
        .into_iter()
        .collect();
    let writer = Writer::create_with_attachments(&cfg.out, header, writer_options, &attachments)
        .map_err(|e| match e {
            sgdwalk_format::FormatError::Io { source, .. } => RecordError::OutputUnwritable {
                path: cfg.out.clone(),
                source,
            },
            other => RecordError::Format(other),
        })?;
    Ok(Start {
        writer,
        step: 0,
        wall_offset_secs: 0.0,
    })
}

/// Rewrites the recording at `out` as a new one with the recorded `header` and attachments and
/// no steps, then reopens it for writing. The new file is made beside it and renamed over it,
/// so a kill at any moment leaves either the old file or the new one.
fn start_over(
    out: &Path,
    header: Header,
    attachments: &[(String, Vec<u8>)],
    options: WriterOptions,
) -> Result<Writer, RecordError> {
    let unwritable = |path: &Path, source| RecordError::OutputUnwritable {
        path: path.to_path_buf(),
        source,
    };
    let name = out
        .file_name()
        .map_or_else(|| "run.walk".into(), |n| n.to_string_lossy().into_owned());
    let fresh = out.with_file_name(format!(".{name}.start-over"));
    if fresh.exists() {
        std::fs::remove_file(&fresh).map_err(|e| unwritable(&fresh, e))?;
    }
    let atts: Vec<(&str, &[u8])> = attachments
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let writer = Writer::create_with_attachments(&fresh, header, options.clone(), &atts)?;
    // The header and attachments are complete: what a writer killed before its first step
    // leaves, which `Writer::reopen` continues.
    drop(writer);
    std::fs::rename(&fresh, out).map_err(|e| unwritable(out, e))?;
    let (writer, _report) = Writer::reopen(out, options, None)?;
    Ok(writer)
}

/// What the training loop needs besides the trainer and the sink; fixed for the whole run.
struct LoopContext<'a> {
    cfg: &'a RecordConfig,
    desc: &'a RunDescription,
    /// The resume point: its state and optimizer state are already in the file.
    resumed_at: Option<u64>,
    /// Wall-clock seconds the recording had reached when this process started training.
    wall_offset_secs: f64,
    loop_started: Instant,
}

impl LoopContext<'_> {
    /// The `wall_time_secs` scalar of a step recorded now.
    fn wall_time_secs(&self) -> f64 {
        self.wall_offset_secs + self.loop_started.elapsed().as_secs_f64()
    }
}

/// Where the training loop stopped.
struct LoopEnd {
    /// The step reached: `total_steps`, or earlier when asked to stop.
    step: u64,
    /// The first step this process recorded.
    first_step: Option<u64>,
    epochs: Vec<EpochSummary>,
}

/// Applies updates from `start_step` on, recording as the policy says and evaluating at every
/// epoch end, until the run's last update or until `stop` is set.
fn train_loop(
    ctx: &LoopContext<'_>,
    stop: &StopFlag,
    trainer: &mut Trainer,
    sink: &mut Sink,
    bar: &ProgressBar,
    start_step: u64,
) -> Result<LoopEnd, RecordError> {
    let total = ctx.desc.total_steps;
    let spe = ctx.desc.steps_per_epoch.max(1);
    let mut epochs = Vec::new();
    let mut first_step = None;
    let mut t = start_step;
    while t < total {
        if stop.is_set() {
            break;
        }
        if apply_and_record(ctx, trainer, sink, t)? {
            first_step.get_or_insert(t);
        }
        t += 1;
        if t.is_multiple_of(spe) && !ctx.cfg.eval_splits.is_empty() {
            let epoch = (t / spe) as u32;
            let evals = evaluate_epoch(trainer, ctx.cfg)?;
            for e in &evals {
                epochs.push(EpochSummary {
                    epoch,
                    step: t,
                    split: e.split.clone(),
                    loss: e.loss,
                    accuracy: e.accuracy,
                });
            }
            sink.send(Record::Epoch(EpochRecord {
                epoch,
                step: t,
                evals,
            }))?;
        }
        update_bar(bar, sink, t);
    }
    Ok(LoopEnd {
        step: t,
        first_step,
        epochs,
    })
}

/// Update `t`: θ_t and, at a resume point, the optimizer state are taken before the update
/// when the policy records step `t` (and the file does not hold them already), then sent with
/// the update's samples and scalars. Returns whether θ_t was sent.
fn apply_and_record(
    ctx: &LoopContext<'_>,
    trainer: &mut Trainer,
    sink: &mut Sink,
    t: u64,
) -> Result<bool, RecordError> {
    let policy = &ctx.cfg.policy;
    let spe = ctx.desc.steps_per_epoch.max(1);
    let k = u64::from(ctx.cfg.keyframe_interval.max(1));
    let plan = trainer.plan(t);
    let recorded = policy.records(t, spe);
    let already_in_file = ctx.resumed_at == Some(t);
    let snapshot = if recorded && !already_in_file {
        Some(trainer.snapshot(sink, t)?)
    } else {
        None
    };
    let resume_point =
        recorded && (t.is_multiple_of(k) || !policy.records(t.wrapping_sub(1), spe) || t == 0);
    let optimizer_state = if resume_point && !already_in_file {
        Some(trainer.export_optimizer()?)
    } else {
        None
    };
    let outcome = trainer.apply(&plan)?;
    let sent = snapshot.is_some();
    if let Some(state) = snapshot {
        sink.send(Record::Step {
            step: t,
            state,
            augmentation: plan.augmentation_bytes(),
            sample_ids: plan.sample_ids,
            scalars: StepScalars {
                learning_rate: Some(plan.lr),
                minibatch_loss: Some(outcome.minibatch_loss),
                grad_norm: Some(outcome.grad_norm),
                update_norm: Some(outcome.update_norm),
                wall_time_secs: Some(ctx.wall_time_secs()),
            },
        })?;
    }
    if let Some((buffers, descriptor)) = optimizer_state {
        sink.send(Record::Resume {
            step: t,
            buffers,
            descriptor,
        })?;
    }
    Ok(sent)
}

fn describe(cfg: &RecordConfig, data: &Dataset) -> Result<RunDescription, RecordError> {
    let spec = match &cfg.model {
        ModelSpec::TorchScript {
            file_name,
            sha256,
            len_bytes,
            ..
        } => ModelSpec::TorchScript {
            file_name: file_name.clone(),
            sha256: sha256.clone(),
            len_bytes: *len_bytes,
            classes: data.classes,
        },
        other => other.clone(),
    };
    let model = sgdwalk_workload::Model::load(&spec, tch::Device::Cpu, 0, cfg.module.as_deref())?;
    check_output_shape(&model, data)?;
    let train_len = u64::from(cfg.dataset.train_range.1 - cfg.dataset.train_range.0);
    let steps_per_epoch = if cfg.full_batch.is_some() {
        1
    } else {
        train_len.div_ceil(u64::from(cfg.batch_size))
    };
    let all = steps_per_epoch * u64::from(cfg.epochs);
    let total_steps = cfg.max_steps.map_or(all, |m| m.min(all));
    Ok(RunDescription {
        schema_version: RUN_DESCRIPTION_VERSION,
        model: spec,
        dataset: cfg.dataset.clone(),
        dataset_identity: data.identity.clone(),
        layout: model.layout().clone(),
        batch_size: cfg.batch_size,
        steps_per_epoch,
        epochs: cfg.epochs,
        total_steps,
        optimizer: cfg.optimizer.clone(),
        schedule: cfg.schedule.clone(),
        full_batch: cfg.full_batch.clone(),
        noise_std: cfg.noise_std,
        seeds: cfg.seeds.clone(),
        augmentation: cfg.dataset.augment.then(|| AugmentationSpec {
            kind: "crop-pad4-flip".into(),
            bytes_per_sample: AUG_BYTES_PER_SAMPLE as u32,
        }),
        record_policy: cfg.policy.to_string(),
        eval_batch_size: cfg.eval_batch_size,
        eval_splits: Some(cfg.eval_splits.clone()),
        provenance: Provenance {
            tool: "sgdwalk-record".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            hostname: hostname(),
            device: device_name(cfg.device),
            threads: if cfg.threads > 0 {
                cfg.threads
            } else {
                tch::get_num_threads() as u32
            },
            started_unix_secs: now_unix().as_secs(),
            resumed_at_steps: Vec::new(),
        },
    })
}

/// The model must map a batch of the dataset's inputs to `[batch, classes]` logits; checked on
/// two training samples in eval mode (no state changes) before anything is trained.
fn check_output_shape(model: &sgdwalk_workload::Model, data: &Dataset) -> Result<(), RecordError> {
    let ids: Vec<u32> = data
        .split_ids(sgdwalk_workload::Split::Train)
        .into_iter()
        .take(2)
        .collect();
    if ids.is_empty() {
        return Err(sgdwalk_workload::WorkloadError::EmptyEvaluation.into());
    }
    let (x, _) = data.batch(sgdwalk_workload::Split::Train, &ids, None, model.device())?;
    let logits = tch::no_grad(|| model.forward_t(&x, false))?;
    let batch = ids.len() as i64;
    if logits.size() != [batch, data.classes] {
        return Err(sgdwalk_workload::WorkloadError::ModelOutput {
            module: model.spec().short_name(),
            input: x.size(),
            found: logits.size(),
            batch,
            classes: data.classes,
        }
        .into());
    }
    Ok(())
}

/// A recording without a resume point, rewritten without steps to start over.
struct StartOver {
    header: Header,
    attachments: Vec<(String, Vec<u8>)>,
}

struct ResumePoint {
    step: u64,
    /// Set when the file holds no resume point: the run starts over from step 0.
    start_over: Option<StartOver>,
    /// The recording's TorchScript module, for a TorchScript run.
    module: Option<Vec<u8>>,
    state: Vec<f32>,
    buffers: Vec<f32>,
    descriptor: String,
    wall_secs: f64,
}

fn prepare_resume(
    cfg: &RecordConfig,
) -> Result<(RunDescription, Dataset, Option<ResumePoint>), RecordError> {
    let cannot = |reason: String| RecordError::CannotResume {
        path: cfg.out.clone(),
        reason,
    };
    if !cfg.out.exists() {
        return Err(cannot("the file does not exist".into()));
    }
    let mut reader = Reader::open(&cfg.out).map_err(|e| {
        cannot(format!(
            "{e} (without a readable header its settings are unknown: record it again with --overwrite)"
        ))
    })?;
    let desc = run_description(reader.header(), &cfg.out)?;
    let (step, state, buffers, descriptor, wall_secs, start_over) =
        if let Some(step) = reader.last_resume_step() {
            let state = reader.state(step)?.as_ref().clone();
            let (buffers, descriptor) = reader
                .resume_state(step)?
                .ok_or_else(|| cannot(format!("the resume state of step {step} is missing")))?;
            // Always recorded by sgdwalk-record; a file without it restarts the clock.
            let wall_secs = reader
                .step_info(step)?
                .scalars
                .wall_time_secs
                .unwrap_or(0.0);
            (step, state, buffers, descriptor, wall_secs, None)
        } else {
            // Killed or stopped before its first resume point: every setting is recorded, so
            // the run starts over from step 0.
            let mut attachments = Vec::new();
            for a in reader.attachments().to_vec() {
                if let Some(data) = reader.attachment(&a.name)? {
                    attachments.push((a.name.clone(), data.to_vec()));
                }
            }
            let start_over = StartOver {
                header: reader.header().clone(),
                attachments,
            };
            (
                0,
                Vec::new(),
                Vec::new(),
                String::new(),
                0.0,
                Some(start_over),
            )
        };
    let module = match &desc.model {
        ModelSpec::TorchScript { .. } => Some(
            reader
                .attachment(MODULE_ATTACHMENT)?
                .ok_or_else(|| {
                    cannot(format!(
                        "it describes a TorchScript model but holds no {MODULE_ATTACHMENT} attachment (killed before it was written: record again)"
                    ))
                })?
                .to_vec(),
        ),
        _ => None,
    };
    drop(reader);
    // The recorded dataset, where it was recorded unless --data-dir says otherwise.
    let data_dir = desc
        .dataset
        .location(cfg.data_dir_given.then_some(cfg.data_dir.as_path()));
    let data = Dataset::load(&desc.dataset, &data_dir)?;
    if data.identity != desc.dataset_identity {
        return Err(cannot(format!(
            "the dataset in {} is not the one the run was recorded with",
            data_dir.display()
        )));
    }
    Ok((
        desc,
        data,
        Some(ResumePoint {
            step,
            start_over,
            module,
            state,
            buffers,
            descriptor,
            wall_secs: if wall_secs.is_finite() {
                wall_secs
            } else {
                0.0
            },
        }),
    ))
}

fn evaluate_epoch(trainer: &Trainer, cfg: &RecordConfig) -> Result<Vec<EvalRecord>, RecordError> {
    let mut out = Vec::new();
    for &split in &cfg.eval_splits {
        let ids = trainer.data.split_ids(split);
        if ids.is_empty() {
            continue;
        }
        let s = evaluate(
            &trainer.model,
            &trainer.data,
            split,
            &ids,
            None,
            cfg.eval_batch_size as usize,
            BnPolicy::EvalMode,
        )?;
        out.push(EvalRecord {
            split: split.as_str().into(),
            loss: s.mean_loss(),
            accuracy: s.accuracy(),
            samples: s.samples,
        });
    }
    Ok(out)
}

fn update_bar(bar: &ProgressBar, sink: &Sink, t: u64) {
    bar.set_position(t);
    if t.is_multiple_of(16) {
        let raw = sink.counters.raw_bytes.load(Ordering::Relaxed);
        let stored = sink.counters.stored_bytes.load(Ordering::Relaxed);
        let secs = bar.elapsed().as_secs_f64().max(1e-9);
        if stored > 0 {
            bar.set_message(format!(
                "{:.1} MB/s recorded, ratio {:.2}x",
                stored as f64 / 1e6 / secs,
                raw as f64 / stored as f64
            ));
        }
    }
}
