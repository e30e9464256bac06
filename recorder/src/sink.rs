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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use sgdwalk_format::{EpochRecord, StepInput, StepScalars, WriteSummary, Writer};
use sgdwalk_workload::copy::{Copier, HostBuffer, Marker};
use tch::{Device, Tensor};

use crate::error::RecordError;

/// A state snapshot: on the host already, a device tensor (flat f32) the copy thread copies to
/// the host, or a buffer of the snapshot ring.
pub enum Snapshot {
    Host(Vec<f32>),
    Device(Tensor),
    /// A ring buffer holding the state, filled on the training stream up to its mark.
    Ring(RingSlot),
    /// A pinned host buffer the copy thread filled from a ring buffer (copy stage to writer).
    Pinned(HostBuffer),
}

/// A device buffer of the snapshot ring and the mark of its fill on the training stream.
pub struct RingSlot {
    buffer: Tensor,
    filled: Marker,
}

/// The snapshot ring: `slots` device buffers of `state_len` f32 on `device`, and as many
/// host buffers (pinned on CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOptions {
    pub slots: usize,
    pub state_len: usize,
    pub device: Device,
}

impl RingOptions {
    /// Bytes of device memory the ring holds (the same again in host buffers).
    pub fn device_bytes(&self) -> u64 {
        self.slots as u64 * self.state_len as u64 * 4
    }
}

/// The training thread's end of the ring: free device buffers come back through `free`.
struct TrainingRing {
    copier: Arc<Copier>,
    free: Receiver<RingSlot>,
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
        if let Some(opts) = ring {
            let copier = Arc::new(Copier::new(opts.device)?);
            let slots = opts.slots.max(1);
            let (free_tx, free_rx) = crossbeam_channel::bounded(slots);
            let (host_free_tx, host_free_rx) = crossbeam_channel::bounded(slots);
            for _ in 0..slots {
                let slot = RingSlot {
                    buffer: copier.device_buffer(opts.state_len)?,
                    filled: Marker::new(),
                };
                let host = copier.host_buffer(opts.state_len)?;
                // Cannot block: the channels hold `slots` each.
                let _ = free_tx.send(slot);
                let _ = host_free_tx.send(host);
            }
            training_ring = Some(TrainingRing {
                copier: Arc::clone(&copier),
                free: free_rx,
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
            .spawn(move || writer_loop(writer, writer_rx, host_return, &c))
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
    /// flat state into it on the training stream, and marks the fill there. Without a ring, or
    /// when the pipeline has stopped, returns the pipeline's error.
    pub fn snapshot_into_ring(
        &mut self,
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
        fill(&slot.buffer)?;
        if let Some(ring) = &self.ring {
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
                    // Training may have stopped waiting (it then reports the pipeline's error).
                    let _ = ring.free.send(slot);
                    Snapshot::Pinned(host)
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
    counters: &SinkCounters,
) -> Result<WriteSummary, RecordError> {
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
                let owned;
                let values: &[f32] = match state {
                    Snapshot::Host(v) => {
                        owned = v;
                        &owned
                    }
                    Snapshot::Pinned(host) => pinned.insert(host).wait()?,
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
                let write_started = Instant::now();
                let stats = writer
                    .write_step(&StepInput {
                        step,
                        state: values,
                        sample_ids: &sample_ids,
                        augmentation: &augmentation,
                        scalars,
                    })
                    .map_err(|source| RecordError::Write { step, source })?;
                add_nanos(&counters.write_nanos, write_started);
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
