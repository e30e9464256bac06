//! The recording pipeline off the training thread: snapshots go through a bounded channel to a
//! copy thread (device to host) and a second bounded channel to the writer thread (encode, with
//! chunks in parallel, and append), so the copy of step t+1 overlaps the encoding of step t. A
//! full queue blocks training (back-pressure): a step is never dropped and memory stays bounded.
//!
//! With a snapshot ring ([`RingOptions`]) a snapshot is a device-to-device copy of the state into
//! one of a few preallocated device buffers, marked on the training stream; the copy thread
//! copies it into one of as many pinned host buffers on a side stream once the training stream
//! has passed the mark (the training stream never waits for it), waits for that copy, hands the
//! device buffer back to training and the host buffer to the writer, which encodes straight from
//! it and hands it back. Training waits only when every ring buffer is in flight.
//!
//! With device residuals ([`ResidualOptions`]), each ring buffer also holds, after the state,
//! the split streams of its residual against the previous snapshot, computed on the training
//! stream ([`crate::device_residual`]); they cross to the host in the same copy and the writer
//! codes them instead of computing them. A residual the writer refuses turns the device pass off
//! for the rest of the run, and that step and the later ones are encoded on the host.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use sgdwalk_format::{
    CodecId, CodecSettings, EpochRecord, FormatError, StepInput, StepScalars, WriteSummary, Writer,
};
use sgdwalk_workload::copy::{Copier, HostBuffer, Marker};
use tch::{Device, Tensor};

use crate::device_residual::{DeviceResidual, ResidualTag, TailLayout};
use crate::error::RecordError;

/// A state snapshot: on the host already, a device tensor (flat f32) the copy thread copies to
/// the host, or a buffer of the snapshot ring.
pub enum Snapshot {
    Host(Vec<f32>),
    Device(Tensor),
    /// A ring buffer holding the state, filled on the training stream up to its mark.
    Ring(RingSlot),
    /// A pinned host buffer the copy thread filled from a ring buffer (copy stage to writer),
    /// and what its device residual is, if it holds one after the state.
    Pinned {
        host: HostBuffer,
        residual: Option<ResidualTag>,
    },
}

/// A device buffer of the snapshot ring and the mark of its fill on the training stream.
pub struct RingSlot {
    buffer: Tensor,
    filled: Marker,
    residual: Option<ResidualTag>,
}

/// The snapshot ring: `slots` device buffers of `state_len` f32 on `device`, and as many
/// host buffers (pinned on CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOptions {
    pub slots: usize,
    pub state_len: usize,
    pub device: Device,
    /// Compute each snapshot's residual on the device ([`crate::device_residual`]).
    pub residual: Option<ResidualOptions>,
}

/// How the device computes residuals: the recording's codec settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualOptions {
    /// The recording's delta codec (pred2, xor or zigzag; written as its split variant).
    pub delta_codec: CodecId,
    pub keyframe_interval: u32,
    pub chunk_len: usize,
}

impl ResidualOptions {
    /// What the device computes for a recording coded with `codec`.
    pub fn for_codec(codec: &CodecSettings) -> Self {
        ResidualOptions {
            delta_codec: codec.delta_codec,
            keyframe_interval: codec.keyframe_interval,
            chunk_len: codec.chunk_len_elements as usize,
        }
    }
}

impl RingOptions {
    /// The layout of the residual streams after each buffer's state, with device residuals.
    pub fn tail_layout(&self) -> Result<Option<TailLayout>, RecordError> {
        self.residual
            .map(|r| TailLayout::new(self.state_len, r.chunk_len))
            .transpose()
    }

    /// f32 words of each ring buffer: the state, and the residual streams after it.
    pub fn slot_len(&self) -> Result<usize, RecordError> {
        Ok(self.state_len + self.tail_layout()?.map_or(0, |l| l.len_f32()))
    }

    /// Bytes of device memory the ring holds (the same again in host buffers), and with device
    /// residuals the bases they are taken against (one state, two for pred2).
    pub fn device_bytes(&self) -> Result<u64, RecordError> {
        let bases = match self.residual {
            Some(r) if r.delta_codec.residual() == CodecId::Pred2 => 2,
            Some(_) => 1,
            None => 0,
        };
        Ok(self.host_bytes()? + bases * self.state_len as u64 * 4)
    }

    /// Bytes of host memory the ring holds (pinned on CUDA).
    pub fn host_bytes(&self) -> Result<u64, RecordError> {
        Ok(self.slots as u64 * self.slot_len()? as u64 * 4)
    }
}

/// The training thread's end of the ring: free device buffers come back through `free`.
struct TrainingRing {
    copier: Arc<Copier>,
    free: Receiver<RingSlot>,
    state_len: usize,
    /// The device's bases, with device residuals.
    residual: Option<DeviceResidual>,
}

/// One message to the writer thread.
pub enum Record {
    Step {
        step: u64,
        state: Snapshot,
        sample_ids: Vec<u32>,
        augmentation: Vec<u8>,
        scalars: StepScalars,
    },
    Epoch(EpochRecord),
    Resume {
        step: u64,
        buffers: Vec<f32>,
        descriptor: String,
    },
}

/// Counters the progress display reads while the writer runs.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub steps_written: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub keyframes: AtomicU64,
    /// Training thread: nanoseconds taking snapshots (filling a ring buffer and marking it, or
    /// copying the state to a host vector), not counting waits for a free ring buffer.
    pub snapshot_nanos: AtomicU64,
    /// Copy thread: nanoseconds copying snapshots to the host (queueing the copy and waiting
    /// for it to complete).
    pub copy_nanos: AtomicU64,
    /// Writer thread: nanoseconds encoding and writing records.
    pub write_nanos: AtomicU64,
    /// Writer thread: the part of `write_nanos` encoding chunks in parallel.
    pub encode_nanos: AtomicU64,
    /// Training thread: nanoseconds blocked on a full queue or waiting for a free ring buffer
    /// (back-pressure).
    pub blocked_nanos: AtomicU64,
    /// Writer thread: steps coded from device residuals.
    pub device_residual_steps: AtomicU64,
    /// Device residuals refused by the writer or failed on the device (at most 1: the first
    /// turns the pass off).
    pub device_residual_refused: AtomicU64,
    /// Set when a device residual is refused or its pass fails: the training thread computes
    /// none after it, and the writer uses none still in flight.
    pub device_residual_off: AtomicBool,
}

fn add_nanos(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// The sending half of the pipeline. Dropping it closes the queue, lets the writer drain it and
/// write the footer, and joins the thread.
pub struct Sink {
    tx: Option<Sender<Record>>,
    ring: Option<TrainingRing>,
    copier: Option<JoinHandle<Result<(), RecordError>>>,
    handle: Option<JoinHandle<Result<WriteSummary, RecordError>>>,
    pub counters: Arc<SinkCounters>,
    path: PathBuf,
}

impl Sink {
    /// Starts the writer thread with a queue of `capacity` records.
    /// With `copy_stage`, snapshots pass a copy thread (device to host) before the writer, so
    /// the copy of step t+1 overlaps the encoding of step t; without it (CPU training, where the
    /// snapshot is already a host vector) they go straight to the writer.
    pub fn start(
        writer: Writer,
        capacity: usize,
        path: PathBuf,
        copy_stage: bool,
    ) -> Result<Self, RecordError> {
        Self::start_with_ring(writer, capacity, path, copy_stage, None)
    }

    /// As [`Sink::start`], with a snapshot ring when `ring` is given (which implies the copy
    /// stage): its device and host buffers are allocated here, before the first step.
    pub fn start_with_ring(
        writer: Writer,
        capacity: usize,
        path: PathBuf,
        copy_stage: bool,
        ring: Option<RingOptions>,
    ) -> Result<Self, RecordError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let counters = Arc::new(SinkCounters::default());
        let spawn_err = |e: std::io::Error| RecordError::WriterGone {
            reason: format!("cannot start the writer threads: {e}"),
        };
        let mut training_ring = None;
        let mut copy_ring = None;
        let mut host_return = None;
        let mut tail_layout = None;
        if let Some(opts) = ring {
            let copier = Arc::new(Copier::new(opts.device)?);
            let slots = opts.slots.max(1);
            let slot_len = opts.slot_len()?;
            tail_layout = opts.tail_layout()?;
            let residual = match (opts.residual, tail_layout) {
                (Some(r), Some(layout)) => Some(DeviceResidual::new(
                    layout,
                    r.delta_codec,
                    r.keyframe_interval,
                    opts.device,
                )?),
                _ => None,
            };
            let (free_tx, free_rx) = crossbeam_channel::bounded(slots);
            let (host_free_tx, host_free_rx) = crossbeam_channel::bounded(slots);
            for _ in 0..slots {
                let slot = RingSlot {
                    buffer: copier.device_buffer(slot_len)?,
                    filled: Marker::new(),
                    residual: None,
                };
                let host = copier.host_buffer(slot_len)?;
                // Cannot block: the channels hold `slots` each.
                let _ = free_tx.send(slot);
                let _ = host_free_tx.send(host);
            }
            training_ring = Some(TrainingRing {
                copier: Arc::clone(&copier),
                free: free_rx,
                state_len: opts.state_len,
                residual,
            });
            copy_ring = Some(CopyRing {
                copier,
                free: free_tx,
                hosts: host_free_rx,
            });
            host_return = Some(host_free_tx);
        }
        let (copier, writer_rx) = if copy_stage || copy_ring.is_some() {
            let (host_tx, host_rx) = crossbeam_channel::bounded(capacity.max(1));
            let c = Arc::clone(&counters);
            let copier = std::thread::Builder::new()
                .name("sgdwalk-copy".into())
                .spawn(move || copy_loop(rx, host_tx, copy_ring, &c))
                .map_err(spawn_err)?;
            (Some(copier), host_rx)
        } else {
            (None, rx)
        };
        let c = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("sgdwalk-writer".into())
            .spawn(move || writer_loop(writer, writer_rx, host_return, tail_layout, &c))
            .map_err(spawn_err)?;
        Ok(Sink {
            tx: Some(tx),
            ring: training_ring,
            copier,
            handle: Some(handle),
            counters,
            path,
        })
    }

    /// Whether snapshots go through the ring ([`Sink::snapshot_into_ring`]).
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Takes a free ring buffer (waiting while every one is in flight), lets `fill` write the
    /// flat state of step `step` into it on the training stream, computes the state's residual
    /// there with device residuals, and marks the buffer. Without a ring, or when the pipeline
    /// has stopped, returns the pipeline's error.
    pub fn snapshot_into_ring(
        &mut self,
        step: u64,
        fill: impl FnOnce(&Tensor) -> Result<(), RecordError>,
    ) -> Result<Snapshot, RecordError> {
        let waited = Instant::now();
        let slot = match &self.ring {
            Some(ring) => ring.free.recv().ok(),
            None => {
                return Err(RecordError::WriterGone {
                    reason: "the recording pipeline has no snapshot ring".into(),
                });
            }
        };
        add_nanos(&self.counters.blocked_nanos, waited);
        let Some(mut slot) = slot else {
            // The copy thread stopped (its error, or the writer's, is reported by the join).
            return Err(self.join_error());
        };
        let started = Instant::now();
        slot.residual = None;
        if let Some(ring) = &mut self.ring {
            let n = ring.state_len as i64;
            let state = slot.buffer.f_narrow(0, 0, n)?;
            fill(&state)?;
            if self.counters.device_residual_off.load(Ordering::Relaxed) {
                // Turned off: the bases go back to the device's allocator.
                ring.residual = None;
            }
            if let Some(residual) = ring.residual.as_mut() {
                let tail = slot.buffer.f_narrow(0, n, slot.buffer.numel() as i64 - n)?;
                match residual.compute(step, &state, &tail) {
                    Ok(tag) => slot.residual = tag,
                    Err(e) => {
                        // Out of device memory, say: the state is in the buffer, and the run
                        // goes on with the host encoding it.
                        ring.residual = None;
                        turn_device_residuals_off(
                            &self.counters,
                            &format!("step {step}: the device residual pass failed: {e}"),
                        );
                    }
                }
            }
            ring.copier.mark(&mut slot.filled)?;
        }
        add_nanos(&self.counters.snapshot_nanos, started);
        Ok(Snapshot::Ring(slot))
    }

    /// Adds the time of a snapshot taken outside the ring (a host vector) to the counters.
    pub fn note_snapshot_time(&self, since: Instant) {
        add_nanos(&self.counters.snapshot_nanos, since);
    }

    /// Queues a record, blocking while the queue is full. If the writer has failed, returns
    /// its error.
    pub fn send(&mut self, record: Record) -> Result<(), RecordError> {
        let started = std::time::Instant::now();
        let sent = match &self.tx {
            Some(tx) => tx.send(record).is_ok(),
            None => false,
        };
        self.counters
            .blocked_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if sent { Ok(()) } else { Err(self.join_error()) }
    }

    /// Closes the queue and joins both stages: the first error wins (the copier's, since the
    /// writer only stops early when the copier did, or on its own write error).
    fn join(&mut self) -> Result<WriteSummary, RecordError> {
        self.tx = None;
        self.ring = None;
        let panicked = || RecordError::WriterGone {
            reason: "a recording thread panicked".into(),
        };
        let copied = match self.copier.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(panicked()),
            None => Ok(()),
        };
        let written = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(panicked()),
            None => Err(RecordError::WriterGone {
                reason: format!("the writer of {} is already closed", self.path.display()),
            }),
        };
        match (copied, written) {
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(summary)) => Ok(summary),
        }
    }

    fn join_error(&mut self) -> RecordError {
        match self.join() {
            Err(e) => e,
            Ok(_) => RecordError::WriterGone {
                reason: "the writer finished early".into(),
            },
        }
    }

    /// Closes the queue, waits for every queued record and the footer.
    pub fn finish(mut self) -> Result<WriteSummary, RecordError> {
        self.join()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.copier.is_some() || self.handle.is_some() {
            // The error, if any, was already reported through send() or finish().
            let _ = self.join();
        }
    }
}

/// The copy thread's end of the ring: it hands device buffers back to training through `free`
/// and takes host buffers the writer has finished with from `hosts`.
struct CopyRing {
    copier: Arc<Copier>,
    free: Sender<RingSlot>,
    hosts: Receiver<HostBuffer>,
}

/// First stage: device snapshots to host vectors or pinned host buffers, in order.
fn copy_loop(
    rx: Receiver<Record>,
    tx: Sender<Record>,
    ring: Option<CopyRing>,
    counters: &SinkCounters,
) -> Result<(), RecordError> {
    for mut record in rx {
        if let Record::Step { state, .. } = &mut record {
            let snapshot = std::mem::replace(state, Snapshot::Host(Vec::new()));
            *state = match (snapshot, &ring) {
                (Snapshot::Ring(slot), Some(ring)) => {
                    // A host buffer the writer has finished with (back-pressure from encoding).
                    let Ok(mut host) = ring.hosts.recv() else {
                        // The writer stopped; its error is reported when it is joined.
                        break;
                    };
                    let started = Instant::now();
                    ring.copier
                        .copy_to_host(&slot.filled, &slot.buffer, &mut host)?;
                    // Waits here, not on the training stream; then the device buffer is free.
                    host.wait()?;
                    add_nanos(&counters.copy_nanos, started);
                    let residual = slot.residual;
                    // Training may have stopped waiting (it then reports the pipeline's error).
                    let _ = ring.free.send(slot);
                    Snapshot::Pinned { host, residual }
                }
                (Snapshot::Device(t), _) => {
                    let started = Instant::now();
                    let host = sgdwalk_workload::state::to_host(&t)?;
                    add_nanos(&counters.copy_nanos, started);
                    Snapshot::Host(host)
                }
                (other, _) => other,
            };
        }
        if tx.send(record).is_err() {
            // The writer stopped; its error is reported when it is joined.
            break;
        }
    }
    Ok(())
}

fn writer_loop(
    mut writer: Writer,
    rx: Receiver<Record>,
    host_return: Option<Sender<HostBuffer>>,
    tail_layout: Option<TailLayout>,
    counters: &SinkCounters,
) -> Result<WriteSummary, RecordError> {
    let state_len = writer.header().state_len_elements as usize;
    for record in rx {
        match record {
            Record::Step {
                step,
                state,
                sample_ids,
                augmentation,
                scalars,
            } => {
                // On the host already (CPU training, or the copy stage moved it).
                let mut pinned = None;
                let mut tag = None;
                let owned;
                let values: &[f32] = match state {
                    Snapshot::Host(v) => {
                        owned = v;
                        &owned
                    }
                    Snapshot::Pinned { host, residual } => {
                        tag = residual;
                        pinned.insert(host).wait()?
                    }
                    Snapshot::Device(t) => {
                        owned = sgdwalk_workload::state::to_host(&t)?;
                        &owned
                    }
                    Snapshot::Ring(_) => {
                        return Err(RecordError::WriterGone {
                            reason: "a ring snapshot reached the writer without a copy stage"
                                .into(),
                        });
                    }
                };
                // A ring buffer holds the state, then its residual's streams.
                let (values, tail) = values.split_at(state_len.min(values.len()));
                let input = StepInput {
                    step,
                    state: values,
                    sample_ids: &sample_ids,
                    augmentation: &augmentation,
                    scalars,
                };
                let write_started = Instant::now();
                // Residuals still in flight when the pass was turned off are not used either.
                let tag = tag.filter(|_| !counters.device_residual_off.load(Ordering::Relaxed));
                let stats = match (tag, tail_layout) {
                    (Some(tag), Some(layout)) => write_with_device_residual(
                        &mut writer,
                        &input,
                        tag,
                        &layout,
                        tail,
                        counters,
                    ),
                    _ => writer.write_step(&input),
                }
                .map_err(|source| RecordError::Write { step, source })?;
                add_nanos(&counters.write_nanos, write_started);
                if stats.precomputed {
                    counters
                        .device_residual_steps
                        .fetch_add(1, Ordering::Relaxed);
                }
                counters
                    .encode_nanos
                    .fetch_add(stats.encode_time.as_nanos() as u64, Ordering::Relaxed);
                if let (Some(host), Some(back)) = (pinned, &host_return) {
                    // The copy thread may have stopped; the buffer is then dropped.
                    let _ = back.send(host);
                }
                counters.steps_written.fetch_add(1, Ordering::Relaxed);
                counters
                    .raw_bytes
                    .fetch_add(stats.raw_bytes, Ordering::Relaxed);
                counters
                    .stored_bytes
                    .fetch_add(stats.stored_bytes, Ordering::Relaxed);
                counters
                    .keyframes
                    .fetch_add(u64::from(stats.keyframe), Ordering::Relaxed);
            }
            Record::Epoch(e) => {
                let step = e.step;
                writer
                    .write_epoch(&e)
                    .map_err(|source| RecordError::Write { step, source })?;
            }
            Record::Resume {
                step,
                buffers,
                descriptor,
            } => writer
                .write_resume_state(step, &buffers, &descriptor)
                .map_err(|source| RecordError::Write { step, source })?,
        }
    }
    writer
        .finish()
        .map_err(|source| RecordError::Finish { source })
}

/// Writes a step from its device residual; a residual the writer refuses (or whose counts do
/// not fit the layout) turns the device pass off, and the step is encoded on the host.
fn write_with_device_residual(
    writer: &mut Writer,
    input: &StepInput<'_>,
    tag: ResidualTag,
    layout: &TailLayout,
    tail: &[f32],
    counters: &SinkCounters,
) -> Result<sgdwalk_format::StepWriteStats, FormatError> {
    let refused = match tag.precomputed(layout, bytemuck::cast_slice(tail)) {
        Ok(residual) => match writer.write_step_with_residual(input, Some(&residual)) {
            Err(e @ FormatError::PrecomputedResidual { .. }) => e.to_string(),
            written => return written,
        },
        Err(e) => format!("step {}: {e}", input.step),
    };
    turn_device_residuals_off(counters, &refused);
    writer.write_step(input)
}

/// Turns device residuals off for the rest of the run (the first time, with a warning).
fn turn_device_residuals_off(counters: &SinkCounters, why: &str) {
    if !counters.device_residual_off.swap(true, Ordering::Relaxed) {
        counters
            .device_residual_refused
            .fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "sgdwalk-record: warning: {why}; device residuals are off for the rest of the run, steps are encoded on the host"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sgdwalk_format::testkit::synth::sgd_trajectory;
    use sgdwalk_format::{CodecSettings, FsyncPolicy, Header, Reader, WriterOptions};

    use super::*;

    /// A device residual that does not decode to its state (a flipped low byte in the chunk
    /// the writer samples) is refused: the step is encoded on the host instead, the pass is
    /// turned off, and the recording reads back exactly.
    #[test]
    fn a_refused_device_residual_falls_back_to_the_host_and_turns_the_pass_off() {
        let (n, chunk) = (3000usize, 1024usize);
        let traj = sgd_trajectory(n, 4, 0.9, 0.01, 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.walk");
        let layout = Header::contiguous_layout(&[("w", &[n as u64])]).unwrap();
        let codec = CodecSettings {
            chunk_len_elements: chunk as u32,
            split_streams: true,
            ..CodecSettings::default()
        };
        let header = Header::new([1; 16], 0, layout, 0, "{}".into(), codec).unwrap();
        let options = WriterOptions {
            fsync: FsyncPolicy::Never,
            threads: 1,
            overlap_writes: false,
        };
        let mut writer = Writer::create(&path, header, options).unwrap();
        let tail_layout = TailLayout::new(n, chunk).unwrap();
        let mut device = DeviceResidual::new(tail_layout, CodecId::Pred2, 32, Device::Cpu).unwrap();
        let counters = SinkCounters::default();
        let tail = Tensor::f_zeros(
            [tail_layout.len_f32() as i64],
            (tch::Kind::Float, Device::Cpu),
        )
        .unwrap();
        let mut written = Vec::new();
        for (t, state) in traj.iter().enumerate() {
            let step = t as u64;
            // As the training thread does: no device pass once the writer turned it off.
            let tag = if counters.device_residual_off.load(Ordering::Relaxed) {
                None
            } else {
                device
                    .compute(step, &Tensor::from_slice(state), &tail)
                    .unwrap()
            };
            let mut tail_words = Vec::<f32>::try_from(&tail).unwrap();
            if step == 2 {
                // Step 1 checked the last chunk, step 2 checks chunk 0: flip one of its low
                // bytes.
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut tail_words);
                bytes[tail_layout.low_at() + 5] ^= 0x40;
            }
            let input = StepInput {
                step,
                state,
                sample_ids: &[],
                augmentation: &[],
                scalars: StepScalars::absent(),
            };
            let stats = match tag {
                Some(tag) => write_with_device_residual(
                    &mut writer,
                    &input,
                    tag,
                    &tail_layout,
                    &tail_words,
                    &counters,
                )
                .unwrap(),
                None => writer.write_step(&input).unwrap(),
            };
            written.push((tag.is_some(), stats.precomputed));
        }
        writer.finish().unwrap();
        assert_eq!(
            written,
            [(false, false), (true, true), (true, false), (false, false)],
            "step 1 from the device, step 2 refused, step 3 after the pass was turned off"
        );
        assert!(counters.device_residual_off.load(Ordering::Relaxed));
        assert_eq!(counters.device_residual_refused.load(Ordering::Relaxed), 1);
        let mut r = Reader::open(&path).unwrap();
        for (t, want) in traj.iter().enumerate() {
            let got = r.state(t as u64).unwrap();
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "step {t}"
            );
        }
    }
}
