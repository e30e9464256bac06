#![doc = include_str!("../SPEC.md")]
#![deny(missing_docs)]

pub mod codec;
mod consts;
mod crc;
mod error;
mod lock;
mod reader;
pub mod records;
mod report;
mod scan;
// A feature rather than a crate: the fixture builders need the crate-private record scanner
// (`scan::open_bytes`), which should not become public API for their sake.
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;
mod writer;

pub use consts::*;
pub use error::FormatError;
pub use lock::{LockHolder, REOPEN_LOCK_WAIT};
pub use reader::Reader;
pub use report::{
    CodecUsage, HeaderJson, InspectJson, InspectReport, StepRange, VerifyReport, human_duration,
    inspect, utc_time, verify,
};
pub use types::*;
pub use writer::Writer;
