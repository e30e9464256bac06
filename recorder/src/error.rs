//! Errors of the recorder library.

use std::path::PathBuf;

/// Everything that stops a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A setting that cannot work, found before any training.
    #[error("invalid setting --{flag}: {reason}")]
    InvalidSetting { flag: &'static str, reason: String },
    /// The output exists and neither --overwrite nor --resume was given.
    #[error("output exists (pass --overwrite to replace it or --resume to continue it): {}", path.display())]
    OutputExists { path: PathBuf },
    /// The output cannot be created.
    #[error("cannot write the output {}", path.display())]
    OutputUnwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// --resume on a recording that has no resume point, or whose settings differ.
    #[error("cannot resume {}: {reason}", path.display())]
    CannotResume { path: PathBuf, reason: String },
    /// --resume with a flag whose value differs from the recorded setting.
    #[error(
        "cannot resume {}: --{flag} {given} differs from the recording's {recorded}; a resumed run takes every setting from the recording: leave out --{flag} (only --data-dir, --device, --threads, --encode-threads, --fsync, --queue, --snapshot-path, --snapshot-ring, --device-residual, --quiet and --json may differ)",
        path.display()
    )]
    ResumeConflict {
        path: PathBuf,
        flag: &'static str,
        given: String,
        recorded: String,
    },
    /// A resume-state record that does not fit the optimizer.
    #[error("bad resume state: {reason}")]
    BadResumeState { reason: String },
    /// Model, data or evaluation failed.
    #[error(transparent)]
    Workload(#[from] sgdwalk_workload::WorkloadError),
    /// Writing the recording failed (disk full, I/O error); every complete step so far is
    /// readable.
    // The source is not repeated in the message: `{:#}` prints the chain once.
    #[error("writing the recording failed at step {step}")]
    Write {
        step: u64,
        #[source]
        source: sgdwalk_format::FormatError,
    },
    /// Writing the index, footer or trailer at the end failed (disk full, I/O error); every
    /// step is kept and the file reads as unfinished.
    #[error(
        "finishing the recording (index, footer) failed; every recorded step is kept and the file reads as unfinished"
    )]
    Finish {
        #[source]
        source: sgdwalk_format::FormatError,
    },
    /// The recording could not be opened (another writer holds it: `Locked`, naming the file
    /// and the process).
    #[error(transparent)]
    Format(#[from] sgdwalk_format::FormatError),
    /// The writer thread stopped unexpectedly.
    #[error("the writer thread stopped: {reason}")]
    WriterGone { reason: String },
    /// Snapshot tensors that do not fit together, or a device residual that cannot be used.
    #[error("snapshot: {reason}")]
    Snapshot { reason: String },
    /// An error reported by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
