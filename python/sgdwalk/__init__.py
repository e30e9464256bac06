"""sgdwalk for Python: read recordings (``open``), record a PyTorch training loop
(``Recorder``), and scan analysis tables (``scan``). Decoding and encoding are the Rust format
crate's (``sgdwalk._native``); torch and polars are imported only by what needs them."""
from __future__ import annotations

from ._native import (
    ChainHashMismatchError,
    ChecksumMismatchError,
    CorruptError,
    FormatError,
    FormatIOError,
    InvalidInputError,
    LockedError,
    NotAFileError,
    NotARecordingError,
    StepNotFoundError,
    TruncatedError,
    UnsupportedFormatError,
    WriterPoisonedError,
)
from ._native import FORMAT_VERSION
from ._native import __version__ as __version__
from ._record import Recorder
from ._run import Policy
from ._tables import scan, table_files
from ._walk import StepInfo, Walk, open

__all__ = [
    "FORMAT_VERSION",
    "ChainHashMismatchError",
    "ChecksumMismatchError",
    "CorruptError",
    "FormatError",
    "FormatIOError",
    "InvalidInputError",
    "LockedError",
    "NotAFileError",
    "NotARecordingError",
    "Policy",
    "Recorder",
    "StepInfo",
    "StepNotFoundError",
    "TruncatedError",
    "UnsupportedFormatError",
    "Walk",
    "WriterPoisonedError",
    "open",
    "scan",
    "table_files",
]
