//! The one error type of the crate.

use std::path::Path;

use crate::lock::LockHolder;

/// Everything that can go wrong while writing, reading or verifying a recording.
///
/// Each "cannot read this" case has its own variant so callers (and the CLI exit codes) can tell
/// a foreign file from a newer one, a torn tail from a flipped bit. Paths are boxed and reasons
/// are `Box<str>` so the enum stays at most 64 bytes (asserted in the tests).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the recording magic.
    #[error("not an sgdwalk recording (found magic {found_magic:02x?}): {}", path.display())]
    NotARecording {
        /// File that was opened.
        path: Box<Path>,
        /// The first 8 bytes found (zero-padded if the file is shorter).
        found_magic: [u8; 8],
    },
    /// A folder (or another non-file) where a recording file was expected.
    #[error("{} is a folder, not a recording file", path.display())]
    NotAFile {
        /// Path that was given.
        path: Box<Path>,
    },
    /// The file was written by a newer, incompatible format major version.
    #[error(
        "recording has format version {major}.{minor}, this reader supports major \
         {supported_major}: {}",
        path.display()
    )]
    NewerVersion {
        /// File that was opened.
        path: Box<Path>,
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
        /// The major version this crate implements.
        supported_major: u16,
    },
    /// The file claims a major version this crate never wrote (0).
    #[error("recording has unsupported format version {major}.{minor}: {}", path.display())]
    UnsupportedVersion {
        /// File that was opened.
        path: Box<Path>,
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// The file uses a feature this reader does not understand (unknown incompat flag bits), or
    /// a writer was asked to append to a file with unknown ro_compat flag bits.
    #[error("recording uses unsupported {which} feature flags {flags:#018x}: {}", path.display())]
    UnsupportedFeature {
        /// File that was opened.
        path: Box<Path>,
        /// "incompat" or "ro_compat".
        which: &'static str,
        /// The unknown bits.
        flags: u64,
    },
    /// The file ends before a structure that must be complete (prologue, header record).
    #[error(
        "recording is truncated: {needed_bytes} bytes needed at offset {offset_from_file_start}, \
         file has {file_len_bytes}: {}",
        path.display()
    )]
    Truncated {
        /// File that was opened.
        path: Box<Path>,
        /// Where the incomplete structure starts.
        offset_from_file_start: u64,
        /// How many bytes the structure needs from that offset.
        needed_bytes: u64,
        /// Length of the file.
        file_len_bytes: u64,
    },
    /// A CRC32C over stored bytes did not match.
    #[error(
        "checksum mismatch in {what} at offset {offset_from_file_start}: expected \
         {expected:08x}, found {found:08x}: {}",
        path.display()
    )]
    ChecksumMismatch {
        /// File that was opened.
        path: Box<Path>,
        /// Which checksum ("prologue", "record header", "record payload", "trailer", "chunk").
        what: &'static str,
        /// Offset of the structure the checksum covers.
        offset_from_file_start: u64,
        /// Stored checksum.
        expected: u32,
        /// Checksum of the bytes as read.
        found: u32,
    },
    /// The SHA-256 of an attachment's data differs from the one its record stores.
    #[error(
        "checksum mismatch in attachment {name:?} (record at offset {offset_from_file_start}): \
         expected sha256 {}, found {}: {}",
        crate::types::hex_string(&sha256[0]),
        crate::types::hex_string(&sha256[1]),
        path.display()
    )]
    AttachmentChecksumMismatch {
        /// File that was opened.
        path: Box<Path>,
        /// Name of the attachment.
        name: Box<str>,
        /// Offset of its ATTACHMENT record.
        offset_from_file_start: u64,
        /// The stored SHA-256 (`[0]`) and the SHA-256 of the data as read (`[1]`).
        sha256: Box<[[u8; 32]; 2]>,
    },
    /// The xxh3-64 of a reconstructed chunk differs from the stored one: the delta chain or a
    /// codec is broken.
    #[error(
        "reconstructed chunk {chunk} of step {step} has hash {found:016x}, expected \
         {expected:016x}: {}",
        path.display()
    )]
    ChainHashMismatch {
        /// File that was opened.
        path: Box<Path>,
        /// Step whose state was reconstructed.
        step: u64,
        /// Chunk index within the state.
        chunk: u32,
        /// Hash stored in the file.
        expected: u64,
        /// Hash of the reconstructed chunk.
        found: u64,
    },
    /// Structurally invalid bytes (checksums fine or not applicable).
    #[error("corrupt {record_kind} at offset {offset_from_file_start}: {reason}: {}", path.display())]
    Corrupt {
        /// File that was opened.
        path: Box<Path>,
        /// Offset of the record or structure.
        offset_from_file_start: u64,
        /// Kind of record or structure ("step record", "trailer", "chunk", ...).
        record_kind: &'static str,
        /// What is wrong.
        reason: Box<str>,
    },
    /// The requested step is not in the recording.
    #[error("step {step} is not in the recording")]
    StepNotFound {
        /// Requested step.
        step: u64,
    },
    /// Steps must be written in strictly increasing order.
    #[error("step {step} written after step {last_step}; steps must strictly increase")]
    NotIncreasing {
        /// Step passed to the writer.
        step: u64,
        /// Last step written.
        last_step: u64,
    },
    /// An I/O operation failed.
    #[error("i/o error: {}", path.display())]
    Io {
        /// File involved.
        path: Box<Path>,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another writer (or, for a writer truncating, any reader) holds a conflicting advisory
    /// lock on the file (SPEC.md §9).
    #[error("recording is in use by {}: {}", holders_text(holders), path.display())]
    Locked {
        /// File involved.
        path: Box<Path>,
        /// The processes holding it, as far as the OS tells (Linux: `/proc/locks`); may be
        /// empty.
        holders: Box<[LockHolder]>,
    },
    /// A value exceeds a size cap of this implementation.
    #[error("{what} is {value}, above the cap of {cap}")]
    SizeCap {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The cap.
        cap: u64,
    },
    /// The tensor layout is invalid (holes, overlaps, overflow, bad names).
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: Box<str>,
    },
    /// An argument passed to the writer or a codec function is invalid.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: Box<str>,
    },
    /// A residual computed elsewhere ([`crate::PrecomputedResidual`]) was refused: malformed
    /// streams, or a sampled chunk that does not decode to the state given with it. Nothing of
    /// the step was written; writing it again without the residual encodes it on the host.
    #[error("step {step} chunk {chunk}: the precomputed residual was refused: {reason}")]
    PrecomputedResidual {
        /// Step being written.
        step: u64,
        /// Chunk index within the state.
        chunk: u32,
        /// What is wrong.
        reason: Box<str>,
    },
    /// A delta codec was asked to encode or decode without the base state(s) it needs.
    #[error("codec {codec} needs {needed} previous state(s)")]
    MissingBase {
        /// Codec name.
        codec: &'static str,
        /// Number of previous states needed.
        needed: u8,
    },
    /// The writer failed earlier (I/O error mid-record); reopen the file to continue.
    #[error("writer is unusable after an earlier error; reopen the file: {}", path.display())]
    WriterPoisoned {
        /// File involved.
        path: Box<Path>,
    },
}

impl FormatError {
    /// Fills in `path` in variants that carry one and where it is still empty (pure decoders
    /// don't know the path).
    pub(crate) fn with_path(mut self, file: &Path) -> Self {
        use FormatError as E;
        let slot = match &mut self {
            E::NotARecording { path, .. }
            | E::NotAFile { path }
            | E::NewerVersion { path, .. }
            | E::UnsupportedVersion { path, .. }
            | E::UnsupportedFeature { path, .. }
            | E::Truncated { path, .. }
            | E::ChecksumMismatch { path, .. }
            | E::AttachmentChecksumMismatch { path, .. }
            | E::ChainHashMismatch { path, .. }
            | E::Corrupt { path, .. }
            | E::Io { path, .. }
            | E::Locked { path, .. }
            | E::WriterPoisoned { path } => Some(path),
            _ => None,
        };
        if let Some(path) = slot
            && path.as_os_str().is_empty()
        {
            *path = file.into();
        }
        self
    }

    pub(crate) fn corrupt(
        offset: u64,
        record_kind: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        FormatError::Corrupt {
            path: no_path(),
            offset_from_file_start: offset,
            record_kind,
            reason: reason.into().into_boxed_str(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_input(reason: impl Into<String>) -> Self {
        FormatError::InvalidInput {
            reason: reason.into().into_boxed_str(),
        }
    }

    pub(crate) fn invalid_layout(reason: impl Into<String>) -> Self {
        FormatError::InvalidLayout {
            reason: reason.into().into_boxed_str(),
        }
    }

    /// A short stable name of the variant, for reports and tests.
    pub fn kind_name(&self) -> &'static str {
        use FormatError as E;
        match self {
            E::NotARecording { .. } => "not_a_recording",
            E::NotAFile { .. } => "not_a_file",
            E::NewerVersion { .. } => "newer_version",
            E::UnsupportedVersion { .. } => "unsupported_version",
            E::UnsupportedFeature { .. } => "unsupported_feature",
            E::Truncated { .. } => "truncated",
            // The same failure kind as a CRC mismatch (CLI exit codes, the Python reader).
            E::ChecksumMismatch { .. } | E::AttachmentChecksumMismatch { .. } => {
                "checksum_mismatch"
            }
            E::ChainHashMismatch { .. } => "chain_hash_mismatch",
            E::Corrupt { .. } => "corrupt",
            E::StepNotFound { .. } => "step_not_found",
            E::NotIncreasing { .. } => "not_increasing",
            E::Io { .. } => "io",
            E::Locked { .. } => "locked",
            E::SizeCap { .. } => "size_cap",
            E::InvalidLayout { .. } => "invalid_layout",
            E::InvalidInput { .. } => "invalid_input",
            E::PrecomputedResidual { .. } => "precomputed_residual",
            E::MissingBase { .. } => "missing_base",
            E::WriterPoisoned { .. } => "writer_poisoned",
        }
    }
}

fn holders_text(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return "another process (a writer, or a reader while a writer truncates)".to_owned();
    }
    let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
    format!("another writer or reader: {}", list.join(", "))
}

/// Placeholder path for errors raised by pure decoders; replaced by `with_path`.
pub(crate) fn no_path() -> Box<Path> {
    Path::new("").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<FormatError>() <= 64,
            "{}",
            std::mem::size_of::<FormatError>()
        );
    }

    #[test]
    fn with_path_fills_only_empty_paths() {
        let e = FormatError::corrupt(8, "step record", "bad").with_path(Path::new("/a"));
        assert!(e.to_string().ends_with("/a"), "{e}");
        let e = e.with_path(Path::new("/b"));
        assert!(e.to_string().ends_with("/a"), "{e}");
    }
}
