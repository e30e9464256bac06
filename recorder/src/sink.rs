//! The recording pipeline off the training thread: snapshots go through a bounded channel to a
//! named writer thread that copies them to the host, encodes them (the format crate encodes
//! chunks in parallel) and appends them. A full queue blocks training (back-pressure): a step
//! is never dropped and memory stays bounded.

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
            Snapshot::Device(t) => {
                let t = t.f_to_device(tch::Device::Cpu)?;
                let n = t.numel();
                let mut v = vec![0f32; n];
                t.f_copy_data(&mut v, n)?;
                Ok(v)
            }
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
}

/// The sending half of the pipeline. Dropping it closes the queue, lets the writer drain it and
/// write the footer, and joins the thread.
pub struct Sink {
    tx: Option<Sender<Record>>,
    handle: Option<JoinHandle<Result<WriteSummary, RecordError>>>,
    pub counters: Arc<SinkCounters>,
    path: PathBuf,
}

impl Sink {
    /// Starts the writer thread with a queue of `capacity` records.
    pub fn start(writer: Writer, capacity: usize, path: PathBuf) -> Result<Self, RecordError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let counters = Arc::new(SinkCounters::default());
        let c = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("sgdwalk-writer".into())
            .spawn(move || writer_loop(writer, rx, &c))
            .map_err(|e| RecordError::WriterGone {
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Sink {
            tx: Some(tx),
            handle: Some(handle),
            counters,
            path,
        })
    }

    /// Queues a record, blocking while the queue is full. If the writer has failed, returns
    /// its error.
    pub fn send(&mut self, record: Record) -> Result<(), RecordError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(record).is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.join_error()) }
    }

    fn join_error(&mut self) -> RecordError {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Ok(Ok(_))) => RecordError::WriterGone {
                reason: "the writer finished early".into(),
            },
            Some(Err(_)) => RecordError::WriterGone {
                reason: "the writer thread panicked".into(),
            },
            None => RecordError::WriterGone {
                reason: format!("the writer of {} is already closed", self.path.display()),
            },
        }
    }

    /// Closes the queue, waits for every queued record and the footer.
    pub fn finish(mut self) -> Result<WriteSummary, RecordError> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(RecordError::WriterGone {
                reason: "the writer thread panicked".into(),
            }),
            None => Err(RecordError::WriterGone {
                reason: "finished twice".into(),
            }),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            // The error, if any, was already reported through send() or finish().
            let _ = h.join();
        }
    }
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
                let state = state.into_host()?;
                let stats = writer
                    .write_step(&StepInput {
                        step,
                        state: &state,
                        sample_ids: &sample_ids,
                        augmentation: &augmentation,
                        scalars,
                    })
                    .map_err(|source| RecordError::Write { step, source })?;
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
    writer.finish().map_err(RecordError::Format)
}
