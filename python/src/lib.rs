//! `sgdwalk._native`: the Python extension over `sgdwalk-format`. It exposes the one reader and
//! writer of the format (no second decoder): [`Walk`] reads a recording through the
//! memory-mapped [`Reader`], [`NativeWriter`] encodes and appends steps on its own thread. The
//! Python package (`python/sgdwalk/`) builds the user-facing API on top (numpy arrays, torch
//! state_dicts, the `Recorder`).
//!
//! Every format error becomes an exception of a small hierarchy under `FormatError`, one class
//! per [`FormatError::kind_name`], carrying `kind`, `offset` (file offset, where the error has
//! one), `step` and `path`.

// pyo3's macros expand to `unsafe` blocks (FFI glue), which the workspace's `unsafe_code = deny`
// would refuse; this crate's own code has no unsafe block.
#![allow(unsafe_code)]

mod errors;
mod walk;
mod writer;

use pyo3::prelude::*;

/// The extension module `sgdwalk._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<walk::Walk>()?;
    m.add_class::<writer::NativeWriter>()?;
    m.add(
        "FORMAT_VERSION",
        (sgdwalk_format::FORMAT_MAJOR, sgdwalk_format::FORMAT_MINOR),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
