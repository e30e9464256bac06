//! The recording pipeline off the training thread: snapshots go through a bounded channel to a
//! copy thread (device to host) and a second bounded channel to the writer thread (encode, with
//! chunks in parallel, and append), so the copy of step t+1 overlaps the encoding of step t. A
//! full queue blocks training (back-pressure): a step is never dropped and memory stays bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sgdwalk_format::{EpochRecord, StepInput, StepScalars, WriteSummary, Writer};
use tch::Tensor;

use crate::error::RecordError;

/// A state snapshot: on the host already, or a device tensor (flat f32) the writer thread
/// copies to the host, so the training thread does not wait for the copy.
pub enum Snapshot {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Snapshot {
    fn into_host(self) -> Result<Vec<f32>, RecordError> {
        match self {
            Snapshot::Host(v) => Ok(v),
            Snapshot::Device(t) => Ok(sgdwalk_workload::state::to_host(&t)?),
        }
    }
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
    /// Writer thread: nanoseconds copying snapshots to the host.
    pub copy_nanos: AtomicU64,
    /// Writer thread: nanoseconds encoding and writing records.
    pub write_nanos: AtomicU64,
    /// Training thread: nanoseconds blocked on a full queue (back-pressure).
    pub blocked_nanos: AtomicU64,
}

/// The sending half of the pipeline. Dropping it closes the queue, lets the writer drain it and
/// write the footer, and joins the thread.
pub struct Sink {
    tx: Option<Sender<Record>>,
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
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let counters = Arc::new(SinkCounters::default());
        let spawn_err = |e: std::io::Error| RecordError::WriterGone {
            reason: format!("cannot start the writer threads: {e}"),
        };
        let (copier, writer_rx) = if copy_stage {
            let (host_tx, host_rx) = crossbeam_channel::bounded(capacity.max(1));
            let c = Arc::clone(&counters);
            let copier = std::thread::Builder::new()
                .name("sgdwalk-copy".into())
                .spawn(move || copy_loop(rx, host_tx, &c))
                .map_err(spawn_err)?;
            (Some(copier), host_rx)
        } else {
            (None, rx)
        };
        let c = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("sgdwalk-writer".into())
            .spawn(move || writer_loop(writer, writer_rx, &c))
            .map_err(spawn_err)?;
        Ok(Sink {
            tx: Some(tx),
            copier,
            handle: Some(handle),
            counters,
            path,
        })
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

/// First stage: device snapshots to host vectors, in order.
fn copy_loop(
    rx: Receiver<Record>,
    tx: Sender<Record>,
    counters: &SinkCounters,
) -> Result<(), RecordError> {
    for mut record in rx {
        if let Record::Step { state, .. } = &mut record {
            let started = std::time::Instant::now();
            let snapshot = std::mem::replace(state, Snapshot::Host(Vec::new()));
            *state = Snapshot::Host(snapshot.into_host()?);
            counters
                .copy_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
                let state = state.into_host()?;
                let write_started = std::time::Instant::now();
                let stats = writer
                    .write_step(&StepInput {
                        step,
                        state: &state,
                        sample_ids: &sample_ids,
                        augmentation: &augmentation,
                        scalars,
                    })
                    .map_err(|source| RecordError::Write { step, source })?;
                counters
                    .write_nanos
                    .fetch_add(write_started.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
