//! The exception hierarchy: `FormatError` (an `Exception`) and a subclass per kind of
//! [`sgdwalk_format::FormatError`], so Python code catches `sgdwalk.ChecksumMismatchError`, or
//! all of them as `sgdwalk.FormatError`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use sgdwalk_format::FormatError as Rust;

create_exception!(
    _native,
    FormatError,
    PyException,
    "A recording cannot be read or written; `kind`, `offset`, `step` and `path` say where."
);
create_exception!(
    _native,
    NotARecordingError,
    FormatError,
    "Not an sgdwalk recording."
);
create_exception!(
    _native,
    NotAFileError,
    FormatError,
    "A folder where a recording was expected."
);
create_exception!(
    _native,
    UnsupportedFormatError,
    FormatError,
    "A newer or unsupported format version, or unknown feature flags."
);
create_exception!(
    _native,
    TruncatedError,
    FormatError,
    "The file ends inside a structure that must be complete."
);
create_exception!(
    _native,
    ChecksumMismatchError,
    FormatError,
    "A stored checksum (CRC32C, or an attachment's SHA-256) does not match."
);
create_exception!(
    _native,
    ChainHashMismatchError,
    FormatError,
    "A reconstructed chunk's hash differs from the stored one."
);
create_exception!(
    _native,
    CorruptError,
    FormatError,
    "Structurally invalid bytes."
);
create_exception!(
    _native,
    StepNotFoundError,
    FormatError,
    "The requested step is not in the recording."
);
create_exception!(
    _native,
    LockedError,
    FormatError,
    "Another process holds a conflicting lock on the recording."
);
create_exception!(
    _native,
    InvalidInputError,
    FormatError,
    "An argument (state length, step order, layout, size cap) is invalid."
);
create_exception!(
    _native,
    FormatIOError,
    FormatError,
    "An I/O operation on the recording failed."
);
create_exception!(
    _native,
    WriterPoisonedError,
    FormatError,
    "The writer failed earlier; the file holds every step before the failure."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("NotARecordingError", py.get_type::<NotARecordingError>())?;
    m.add("NotAFileError", py.get_type::<NotAFileError>())?;
    m.add(
        "UnsupportedFormatError",
        py.get_type::<UnsupportedFormatError>(),
    )?;
    m.add("TruncatedError", py.get_type::<TruncatedError>())?;
    m.add(
        "ChecksumMismatchError",
        py.get_type::<ChecksumMismatchError>(),
    )?;
    m.add(
        "ChainHashMismatchError",
        py.get_type::<ChainHashMismatchError>(),
    )?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("StepNotFoundError", py.get_type::<StepNotFoundError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("FormatIOError", py.get_type::<FormatIOError>())?;
    m.add("WriterPoisonedError", py.get_type::<WriterPoisonedError>())?;
    Ok(())
}

/// File offset, step and path an error carries, where it has them.
fn location(e: &Rust) -> (Option<u64>, Option<u64>, Option<String>) {
    let path = |p: &std::path::Path| (!p.as_os_str().is_empty()).then(|| p.display().to_string());
    match e {
        Rust::Truncated {
            path: p,
            offset_from_file_start,
            ..
        }
        | Rust::ChecksumMismatch {
            path: p,
            offset_from_file_start,
            ..
        }
        | Rust::AttachmentChecksumMismatch {
            path: p,
            offset_from_file_start,
            ..
        }
        | Rust::Corrupt {
            path: p,
            offset_from_file_start,
            ..
        } => (Some(*offset_from_file_start), None, path(p)),
        Rust::ChainHashMismatch { path: p, step, .. } => (None, Some(*step), path(p)),
        Rust::StepNotFound { step } => (None, Some(*step), None),
        Rust::NotIncreasing { step, .. } => (None, Some(*step), None),
        Rust::PrecomputedResidual { step, .. } => (None, Some(*step), None),
        Rust::NotARecording { path: p, .. }
        | Rust::NotAFile { path: p }
        | Rust::NewerVersion { path: p, .. }
        | Rust::UnsupportedVersion { path: p, .. }
        | Rust::UnsupportedFeature { path: p, .. }
        | Rust::Io { path: p, .. }
        | Rust::Locked { path: p, .. }
        | Rust::WriterPoisoned { path: p } => (None, None, path(p)),
        _ => (None, None, None),
    }
}

/// The Python exception for a format error.
pub fn to_py(e: Rust) -> PyErr {
    let kind = e.kind_name();
    let msg = e.to_string();
    let err = match kind {
        "not_a_recording" => NotARecordingError::new_err(msg),
        "not_a_file" => NotAFileError::new_err(msg),
        "newer_version" | "unsupported_version" | "unsupported_feature" => {
            UnsupportedFormatError::new_err(msg)
        }
        "truncated" => TruncatedError::new_err(msg),
        "checksum_mismatch" => ChecksumMismatchError::new_err(msg),
        "chain_hash_mismatch" => ChainHashMismatchError::new_err(msg),
        "corrupt" => CorruptError::new_err(msg),
        "step_not_found" => StepNotFoundError::new_err(msg),
        "locked" => LockedError::new_err(msg),
        "io" => FormatIOError::new_err(msg),
        "writer_poisoned" => WriterPoisonedError::new_err(msg),
        // not_increasing, size_cap, invalid_layout, invalid_input, missing_base,
        // precomputed_residual, and kinds a later format crate adds.
        _ => InvalidInputError::new_err(msg),
    };
    let (offset, step, path) = location(&e);
    Python::attach(|py| {
        let value = err.value(py);
        // Setting attributes on a fresh exception instance cannot fail in practice; if it did,
        // the exception still carries its message.
        let _ = value.setattr("kind", kind);
        let _ = value.setattr("offset", offset);
        let _ = value.setattr("step", step);
        let _ = value.setattr("path", path);
    });
    err
}
