//! `NativeWriter`: a recording being written by a Python training loop. Steps are copied out of
//! the caller's buffer, handed to a writer thread through a bounded queue (back-pressure: the
//! loop waits, with the GIL released, when the queue is full; no step is ever dropped), and
//! encoded there by the format crate's [`Writer`] (chunks in parallel) without the GIL.
//!
//! Crash safety is the writer's: every step record is complete on disk before the next
//! starts, so a killed process leaves a file that the reader (and `sgdwalk-analyze verify`)
//! reads up to the last complete step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sgdwalk_format::{
    CodecSettings, DType, FormatError, FsyncPolicy, Header, StepInput, StepScalars, TensorSpec,
    Writer, WriterOptions,
};

use crate::errors::to_py;

/// What the writer thread is asked to do.
enum Job {
    Step {
        step: u64,
        state: Vec<f32>,
        sample_ids: Vec<u32>,
        augmentation: Vec<u8>,
        scalars: StepScalars,
    },
    /// Make everything so far durable, then answer.
    Flush(SyncSender<Result<(), FormatError>>),
}

/// Totals the writer thread keeps (read by `stats`).
#[derive(Default)]
struct Counters {
    steps_written: AtomicU64,
    keyframes: AtomicU64,
    raw_bytes: AtomicU64,
    stored_bytes: AtomicU64,
    encode_write_nanos: AtomicU64,
    blocked_nanos: AtomicU64,
    last_step: AtomicU64,
}

/// The writer thread and the sending end of its queue.
struct Running {
    tx: SyncSender<Job>,
    thread: JoinHandle<Result<Writer, FormatError>>,
}

/// A recording being written from Python.
#[pyclass(module = "sgdwalk._native")]
pub struct NativeWriter {
    running: Mutex<Option<Running>>,
    counters: Arc<Counters>,
    /// State buffers the writer thread is done with, reused by `submit`.
    free: Arc<Mutex<Vec<Vec<f32>>>>,
    state_len_elements: usize,
    path: PathBuf,
}

fn dtype_named(name: &str) -> PyResult<DType> {
    DType::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown dtype {name:?}")))
}

fn fsync_policy(name: &str) -> PyResult<FsyncPolicy> {
    match name {
        "never" => Ok(FsyncPolicy::Never),
        "every-keyframe" => Ok(FsyncPolicy::EveryKeyframe),
        "every-record" => Ok(FsyncPolicy::EveryRecord),
        other => Err(PyValueError::new_err(format!(
            "fsync {other:?}: expected never, every-keyframe or every-record"
        ))),
    }
}

/// The writer thread: writes jobs in order until the queue closes, then hands the writer back
/// (to be finished, or dropped to leave an unfinished file). Stops at the first error.
fn write_jobs(
    mut writer: Writer,
    rx: Receiver<Job>,
    counters: Arc<Counters>,
    free: Arc<Mutex<Vec<Vec<f32>>>>,
) -> Result<Writer, FormatError> {
    for job in rx {
        match job {
            Job::Step {
                step,
                state,
                sample_ids,
                augmentation,
                scalars,
            } => {
                let started = Instant::now();
                let stats = writer.write_step(&StepInput {
                    step,
                    state: &state,
                    sample_ids: &sample_ids,
                    augmentation: &augmentation,
                    scalars,
                })?;
                let c = &counters;
                c.encode_write_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                c.steps_written.fetch_add(1, Ordering::Relaxed);
                c.keyframes
                    .fetch_add(u64::from(stats.keyframe), Ordering::Relaxed);
                c.raw_bytes.fetch_add(stats.raw_bytes, Ordering::Relaxed);
                c.stored_bytes
                    .fetch_add(stats.stored_bytes, Ordering::Relaxed);
                c.last_step.store(step, Ordering::Relaxed);
                if let Ok(mut f) = free.lock() {
                    f.push(state);
                }
            }
            Job::Flush(ack) => {
                // The asker may have given up waiting; nothing to do then.
                let _ = ack.send(writer.flush());
            }
        }
    }
    Ok(writer)
}

impl NativeWriter {
    /// Closes the queue and waits for the thread: the writer after every queued step, or the
    /// error that stopped it.
    fn stop(&self, py: Python<'_>) -> PyResult<Option<Writer>> {
        let running = self
            .running
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the writer failed in another thread"))?
            .take();
        let Some(Running { tx, thread }) = running else {
            return Ok(None);
        };
        drop(tx);
        let joined = py.detach(|| thread.join());
        match joined {
            Ok(Ok(writer)) => Ok(Some(writer)),
            Ok(Err(e)) => Err(to_py(e)),
            Err(_) => Err(PyRuntimeError::new_err("the writer thread panicked")),
        }
    }

    fn sender(&self) -> PyResult<SyncSender<Job>> {
        self.running
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the writer failed in another thread"))?
            .as_ref()
            .map(|r| r.tx.clone())
            .ok_or_else(|| PyRuntimeError::new_err("the recording is closed"))
    }

    /// Sends `job`, waiting without the GIL while the queue is full. A closed queue means the
    /// thread stopped on an error: that error is raised.
    fn send(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        let tx = self.sender()?;
        let started = Instant::now();
        // Only whether it was sent matters (a failed send hands the job back: dropped here).
        let sent = py.detach(|| tx.send(job).is_ok());
        self.counters
            .blocked_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        drop(tx);
        if sent {
            return Ok(());
        }
        match self.stop(py)? {
            Some(_) => Err(PyRuntimeError::new_err("the writer thread stopped")),
            None => Err(PyRuntimeError::new_err("the recording is closed")),
        }
    }
}

#[pymethods]
impl NativeWriter {
    /// Creates `path` (which must not exist) with its header and attachments, and starts the
    /// writer thread. `layout` is `[(name, dtype, shape)]` in state order.
    #[new]
    #[pyo3(signature = (
        path, layout, metadata_json, run_id, created_unix_ms, *, attachments = Vec::new(),
        keyframe_interval = 32, zstd_level = 1, chunk_len_elements = 262_144,
        augmentation_bytes_per_sample = 0, queue = 4, fsync = "every-keyframe", threads = 0,
        split_streams = true
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        layout: Vec<(String, String, Vec<u64>)>,
        metadata_json: String,
        run_id: [u8; 16],
        created_unix_ms: u64,
        attachments: Vec<(String, Vec<u8>)>,
        keyframe_interval: u32,
        zstd_level: i32,
        chunk_len_elements: u32,
        augmentation_bytes_per_sample: u32,
        queue: usize,
        fsync: &str,
        threads: usize,
        split_streams: bool,
    ) -> PyResult<Self> {
        let typed: Vec<(&str, DType, &[u64])> = layout
            .iter()
            .map(|(n, d, s)| Ok((n.as_str(), dtype_named(d)?, s.as_slice())))
            .collect::<PyResult<_>>()?;
        let tensors: Vec<TensorSpec> = Header::typed_layout(&typed).map_err(to_py)?;
        let codec = CodecSettings {
            chunk_len_elements,
            keyframe_interval,
            zstd_level,
            split_streams,
            ..CodecSettings::default()
        };
        let header = Header::new(
            run_id,
            created_unix_ms,
            tensors,
            augmentation_bytes_per_sample,
            metadata_json,
            codec,
        )
        .map_err(to_py)?;
        let state_len_elements = usize::try_from(header.state_len_elements)
            .map_err(|_| PyValueError::new_err("the state is too large for this machine"))?;
        let options = WriterOptions {
            fsync: fsync_policy(fsync)?,
            threads,
            // A step record is written while the next one encodes (as sgdwalk-record does).
            overlap_writes: true,
        };
        let atts: Vec<(&str, &[u8])> = attachments
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let writer = py
            .detach(|| Writer::create_with_attachments(&path, header, options, &atts))
            .map_err(to_py)?;
        let counters = Arc::new(Counters::default());
        let free = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = sync_channel(queue.max(1));
        let thread = {
            let (counters, free) = (Arc::clone(&counters), Arc::clone(&free));
            std::thread::Builder::new()
                .name("sgdwalk-writer".into())
                .spawn(move || write_jobs(writer, rx, counters, free))
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start the writer: {e}")))?
        };
        Ok(NativeWriter {
            running: Mutex::new(Some(Running { tx, thread })),
            counters,
            free,
            state_len_elements,
            path,
        })
    }

    /// Queues step `step`: θ_step from `state` (a C-contiguous float32 buffer of the state's
    /// length, copied before this returns, so the caller may reuse it), the sample ids
    /// (uint32 buffer), augmentation bytes and the five scalars (`None` = absent). Waits,
    /// without the GIL, while the queue is full.
    #[pyo3(signature = (step, state, sample_ids, augmentation, scalars))]
    fn submit(
        &self,
        py: Python<'_>,
        step: u64,
        state: PyBuffer<f32>,
        sample_ids: PyBuffer<u32>,
        augmentation: Vec<u8>,
        scalars: [Option<f64>; 5],
    ) -> PyResult<()> {
        if state.item_count() != self.state_len_elements {
            return Err(PyValueError::new_err(format!(
                "step {step}: state has {} elements, the layout {}",
                state.item_count(),
                self.state_len_elements
            )));
        }
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut buf = reused.unwrap_or_else(|| vec![0f32; self.state_len_elements]);
        buf.resize(self.state_len_elements, 0.0);
        state.copy_to_slice(py, &mut buf)?;
        let ids = sample_ids.to_vec(py)?;
        self.send(
            py,
            Job::Step {
                step,
                state: buf,
                sample_ids: ids,
                augmentation,
                scalars: StepScalars::from_array(scalars),
            },
        )
    }

    /// Waits until every queued step is written and makes the file durable (fsync, unless the
    /// policy is `never`).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let (ack_tx, ack_rx) = sync_channel(1);
        self.send(py, Job::Flush(ack_tx))?;
        match py.detach(move || ack_rx.recv()) {
            Ok(result) => result.map_err(to_py),
            Err(_) => match self.stop(py)? {
                Some(_) => Err(PyRuntimeError::new_err("the writer thread stopped")),
                None => Err(PyRuntimeError::new_err("the recording is closed")),
            },
        }
    }

    /// Writes every queued step, then the index and footer. Returns `{steps, raw_bytes,
    /// file_bytes}`. Raises the writer's error if one stopped it.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let writer = self
            .stop(py)?
            .ok_or_else(|| PyRuntimeError::new_err("the recording is closed"))?;
        let summary = py.detach(|| writer.finish()).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("steps", summary.steps)?;
        d.set_item("raw_bytes", summary.raw_bytes)?;
        d.set_item("file_bytes", summary.file_bytes)?;
        Ok(d)
    }

    /// Writes every queued step and stops without index or footer: the file is left as a
    /// killed writer leaves it (readable, recoverable, `sgdwalk-record --resume`-able).
    fn abandon(&self, py: Python<'_>) -> PyResult<()> {
        self.stop(py).map(drop)
    }

    /// Whether the writer thread is still accepting steps.
    fn is_open(&self) -> PyResult<bool> {
        Ok(self
            .running
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the writer failed in another thread"))?
            .is_some())
    }

    /// Counters so far: steps_written, keyframes, raw_bytes, stored_bytes,
    /// encode_write_secs (writer thread), blocked_secs (callers waiting on a full queue),
    /// last_step.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.counters;
        let d = PyDict::new(py);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        d.set_item("steps_written", get(&c.steps_written))?;
        d.set_item("keyframes", get(&c.keyframes))?;
        d.set_item("raw_bytes", get(&c.raw_bytes))?;
        d.set_item("stored_bytes", get(&c.stored_bytes))?;
        d.set_item(
            "encode_write_secs",
            get(&c.encode_write_nanos) as f64 * 1e-9,
        )?;
        d.set_item("blocked_secs", get(&c.blocked_nanos) as f64 * 1e-9)?;
        let steps = get(&c.steps_written);
        d.set_item("last_step", (steps > 0).then(|| get(&c.last_step)))?;
        Ok(d)
    }

    /// The file being written.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }
}

impl Drop for NativeWriter {
    /// Without `finish`: the queued steps are written and the file is left unfinished, as a
    /// killed writer leaves it.
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(Running { tx, thread }) = running.take()
        {
            drop(tx);
            // Its error, if any, has no one left to report to; the file holds every step
            // written before it.
            let _ = thread.join();
        }
    }
}
