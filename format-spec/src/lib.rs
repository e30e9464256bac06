#![doc = include_str!("../SPEC.md")]
#![deny(missing_docs)]

pub mod codec;
mod consts;
mod error;
mod reader;
pub mod records;
mod report;
mod scan;
pub mod synth;
mod types;
mod writer;

pub use consts::*;
pub use error::FormatError;
pub use reader::Reader;
pub use report::{CodecUsage, InspectReport, StepRange, VerifyReport, inspect, verify};
pub use types::*;
pub use writer::Writer;
