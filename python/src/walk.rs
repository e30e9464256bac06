//! `Walk`: a recording opened for reading, over the format crate's memory-mapped [`Reader`].
//! Decoding runs with the GIL released.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sgdwalk_format::Reader;

use crate::errors::to_py;

/// The scalars of one step as the Python side receives them (`None` = absent).
type Scalars = [Option<f64>; 5];

/// A recording (finished or still being written), read through a memory map. Thread-safe: the
/// reader and its decode cache sit behind a lock.
#[pyclass(module = "sgdwalk._native")]
pub struct Walk {
    reader: Mutex<Reader>,
}

impl Walk {
    fn reader(&self) -> PyResult<MutexGuard<'_, Reader>> {
        // A panic while decoding poisons the lock; the reader itself is still consistent
        // (its cache is only ever replaced whole), but report it rather than guess.
        self.reader
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the reader failed in another thread"))
    }
}

/// Little-endian bytes of `values` as a Python `bytes` object (one copy).
fn f32_bytes<'py>(py: Python<'py>, values: &[f32]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * 4, |out| {
        for (dst, v) in out.chunks_exact_mut(4).zip(values) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    })
}

#[pymethods]
impl Walk {
    /// Opens `path` read-only (memory-mapped; nothing is read in whole).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let reader = py.detach(|| Reader::open(&path)).map_err(to_py)?;
        Ok(Walk {
            reader: Mutex::new(reader),
        })
    }

    /// The path the recording was opened with.
    fn path(&self) -> PyResult<PathBuf> {
        Ok(self.reader()?.path().to_path_buf())
    }

    /// Sorted step numbers present.
    fn steps(&self) -> PyResult<Vec<u64>> {
        Ok(self.reader()?.steps().to_vec())
    }

    /// Whether `step` is present.
    fn has_step(&self, step: u64) -> PyResult<bool> {
        Ok(self.reader()?.has_step(step))
    }

    /// The header as JSON (run id, creation time, layout, metadata JSON, codec settings).
    fn header_json(&self) -> PyResult<String> {
        let r = self.reader()?;
        serde_json::to_string(r.header())
            .map_err(|e| PyRuntimeError::new_err(format!("header as JSON: {e}")))
    }

    /// `(major, minor)` of the file's format version.
    fn format_version(&self) -> PyResult<(u16, u16)> {
        let r = self.reader()?;
        Ok((r.prologue().major, r.prologue().minor))
    }

    /// Whether the writer finished the file (it has a footer).
    fn is_finished(&self) -> PyResult<bool> {
        Ok(self.reader()?.is_finished())
    }

    /// Bytes after the last complete record that were ignored.
    fn torn_tail_bytes(&self) -> PyResult<u64> {
        Ok(self.reader()?.torn_tail_bytes())
    }

    /// Length of the committed prefix (the mapped bytes).
    fn committed_len_bytes(&self) -> PyResult<u64> {
        Ok(self.reader()?.committed_len_bytes())
    }

    /// State decodes performed so far (cache misses along delta chains).
    fn decoded_steps(&self) -> PyResult<u64> {
        Ok(self.reader()?.decoded_steps())
    }

    /// θ_step as little-endian f32 bytes, decoded (bit-exact, every chunk hash verified) with
    /// the GIL released; consecutive steps reuse the reader's cache.
    fn state_bytes<'py>(&self, py: Python<'py>, step: u64) -> PyResult<Bound<'py, PyBytes>> {
        let state = py
            .detach(|| self.reader().map(|mut r| r.state(step)))?
            .map_err(to_py)?;
        f32_bytes(py, &state)
    }

    /// File offset of θ_step stored raw (every chunk codec 0, back to back), after checking
    /// its checksums; `None` when the state is encoded and must be decoded.
    fn raw_state_offset(&self, py: Python<'_>, step: u64) -> PyResult<Option<u64>> {
        py.detach(|| self.reader().map(|r| r.raw_state_offset(step)))?
            .map_err(to_py)
    }

    /// Codec names of the chunks of `step` (no decode).
    fn chunk_codecs(&self, step: u64) -> PyResult<Vec<&'static str>> {
        let table = self.reader()?.chunk_table(step).map_err(to_py)?;
        Ok(table.iter().map(|c| c.codec.name()).collect())
    }

    /// `(sample_ids as little-endian u32 bytes, augmentation bytes, scalars, keyframe,
    /// stored_bytes)` of `step`; scalars in the order learning_rate, minibatch_loss,
    /// grad_norm, update_norm, wall_time_secs, `None` where absent.
    #[allow(clippy::type_complexity)]
    fn step_info<'py>(
        &self,
        py: Python<'py>,
        step: u64,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Scalars, bool, u64)> {
        let info = self.reader()?.step_info(step).map_err(to_py)?;
        let ids: Vec<u8> = info
            .sample_ids
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Ok((
            PyBytes::new(py, &ids),
            PyBytes::new(py, &info.augmentation),
            info.scalars.to_array(),
            info.keyframe,
            info.stored_bytes,
        ))
    }

    /// Scans records appended since the last call; returns whether new steps appeared.
    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.reader().map(|mut r| r.refresh()))?
            .map_err(to_py)
    }

    /// Names of the attachments, in file order.
    fn attachment_names(&self) -> PyResult<Vec<String>> {
        Ok(self
            .reader()?
            .attachments()
            .iter()
            .map(|a| a.name.clone())
            .collect())
    }

    /// The data of attachment `name` (SHA-256 checked), or `None`.
    fn attachment<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let r = self.reader()?;
        let data = r.attachment(name).map_err(to_py)?;
        Ok(data.map(|d| PyBytes::new(py, d)))
    }

    /// The epoch records as JSON (a list of `{epoch, step, evals}`).
    fn epochs_json(&self) -> PyResult<String> {
        let epochs = self.reader()?.epochs().map_err(to_py)?;
        serde_json::to_string(&epochs)
            .map_err(|e| PyRuntimeError::new_err(format!("epochs as JSON: {e}")))
    }

    fn __repr__(&self) -> PyResult<String> {
        let r = self.reader()?;
        Ok(format!(
            "Walk({:?}, steps={}, finished={})",
            r.path(),
            r.steps().len(),
            r.is_finished()
        ))
    }
}
