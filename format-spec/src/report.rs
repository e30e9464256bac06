//! `verify` and `inspect`: whole-file checks and summaries, serde-serializable for `--json` and
//! `Display` for humans.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::FormatError;
use crate::reader::Reader;
use crate::records::RecordKind;
use crate::scan::{ChainState, scan_records};
use crate::types::{AttachmentInfo, CodecId, Header};

/// Result of [`verify`]: every check passed; these are the counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// File verified.
    pub path: PathBuf,
    /// Whether the file has a valid footer.
    pub finished: bool,
    /// File length.
    pub file_bytes: u64,
    /// Bytes after the last complete record (a killed writer's torn tail; 0 when finished).
    pub torn_tail_bytes: u64,
    /// Data records checked.
    pub records: u64,
    /// Steps decoded and hash-verified.
    pub steps: u64,
    /// Keyframe steps.
    pub keyframes: u64,
    /// Chunks whose reconstructed hash was verified (states and resume buffers).
    pub chunks_verified: u64,
    /// Epoch records decoded.
    pub epochs: u64,
    /// Resume records decoded.
    pub resume_states: u64,
    /// Attachments whose SHA-256 was verified (name, size, sha256 as hex in JSON).
    pub attachments: Vec<AttachmentInfo>,
}

impl VerifyReport {
    /// Whether the file is complete (finished, no torn tail). `verify` already returned an
    /// error for anything corrupt; an unfinished file is valid but was not closed.
    pub fn is_clean(&self) -> bool {
        self.finished && self.torn_tail_bytes == 0
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verified {}", self.path.display())?;
        writeln!(
            f,
            "  {} ({} bytes{})",
            if self.finished {
                "finished"
            } else {
                "NOT finished (no footer; writer killed or still running)"
            },
            self.file_bytes,
            if self.torn_tail_bytes > 0 {
                format!(", torn tail of {} bytes ignored", self.torn_tail_bytes)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  {} records, {} steps ({} keyframes), {} chunk hashes verified",
            self.records, self.steps, self.keyframes, self.chunks_verified
        )?;
        write!(
            f,
            "  {} epoch records, {} resume states, {} attachments; all checksums and the delta \
             chain OK",
            self.epochs,
            self.resume_states,
            self.attachments.len()
        )?;
        write_attachments(f, &self.attachments)
    }
}

fn write_attachments(f: &mut fmt::Formatter<'_>, attachments: &[AttachmentInfo]) -> fmt::Result {
    for a in attachments {
        write!(
            f,
            "\n  attachment {:?}: {} bytes, sha256 {}",
            a.name,
            a.len_bytes,
            a.sha256_hex()
        )?;
    }
    Ok(())
}

/// Checks every checksum (prologue, header, every record header and payload, chunk CRCs,
/// trailer), the record tiling of the whole file, the index against a fresh scan, and decodes
/// every step along its delta chain, verifying every reconstructed chunk hash.
pub fn verify(path: &Path) -> Result<VerifyReport, FormatError> {
    let mut reader = Reader::open(path)?;
    let header = reader.header().clone();
    // A full scan of the committed bytes, independent of the index: catches damage in records
    // the index path never read, and must find exactly the indexed records.
    let mut chain = ChainState::default();
    let mut attachments = Vec::new();
    let bytes = reader.bytes();
    let data = &bytes[..reader.data_end() as usize];
    let scan = scan_records(
        data,
        reader.header_end(),
        &header,
        reader.prologue().scalar_presence(),
        &mut chain,
        &mut attachments,
        true,
    )
    .map_err(|e| e.with_path(path))?;
    if scan.scan_end != reader.data_end()
        || scan.entries != reader.entries()
        || attachments != reader.attachments()
    {
        return Err(FormatError::corrupt(
            scan.scan_end,
            "index record",
            "index differs from the records in the file",
        )
        .with_path(path));
    }
    let mut report = VerifyReport {
        path: path.to_path_buf(),
        finished: reader.is_finished(),
        file_bytes: reader.committed_len_bytes() + reader.torn_tail_bytes(),
        torn_tail_bytes: reader.torn_tail_bytes(),
        records: reader.entries().len() as u64,
        steps: 0,
        keyframes: 0,
        chunks_verified: 0,
        epochs: 0,
        resume_states: 0,
        attachments: Vec::new(),
    };
    // Every attachment's data against its SHA-256.
    for a in reader.attachments().to_vec() {
        reader.attachment(&a.name)?;
        report.attachments.push(a);
    }
    let chunks_per_state = header.chunk_count();
    let steps = reader.steps().to_vec();
    for step in steps {
        let info = reader.step_info(step)?;
        reader.state(step)?;
        report.steps += 1;
        report.keyframes += u64::from(info.keyframe);
        report.chunks_verified += chunks_per_state;
    }
    report.epochs = reader.epochs()?.len() as u64;
    let resume: Vec<_> = reader
        .entries()
        .iter()
        .filter(|e| e.kind == RecordKind::Resume as u8)
        .copied()
        .collect();
    for e in resume {
        let (_, _, chunks) = reader.decode_resume_entry(&e)?;
        report.resume_states += 1;
        report.chunks_verified += chunks;
    }
    Ok(report)
}

/// A run of consecutive steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StepRange {
    /// First step.
    pub first: u64,
    /// Last step (inclusive).
    pub last: u64,
}

/// Stored sizes of the chunks of one codec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CodecUsage {
    /// Codec.
    pub codec: CodecId,
    /// Chunks stored with it.
    pub chunks: u64,
    /// Raw bytes of those chunks.
    pub raw_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// raw / stored.
    pub ratio: f64,
}

/// Result of [`inspect`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectReport {
    /// File inspected.
    pub path: PathBuf,
    /// Format version `major.minor`.
    pub format_version: String,
    /// Writer version from the prologue.
    pub writer_version: String,
    /// Feature flags (incompat, ro_compat, compat).
    pub feature_flags: [u64; 3],
    /// Whether the file has a valid footer.
    pub finished: bool,
    /// File length.
    pub file_bytes: u64,
    /// Ignored torn tail.
    pub torn_tail_bytes: u64,
    /// The header.
    pub header: Header,
    /// Number of steps.
    pub step_count: u64,
    /// Steps present, as runs of consecutive steps.
    pub step_ranges: Vec<StepRange>,
    /// Keyframe steps.
    pub keyframes: u64,
    /// Epoch records.
    pub epoch_records: u64,
    /// Steps with a resume record.
    pub resume_steps: Vec<u64>,
    /// Raw bytes of all states.
    pub state_raw_bytes: u64,
    /// Bytes of all step records.
    pub step_record_bytes: u64,
    /// state_raw_bytes / step_record_bytes.
    pub ratio: f64,
    /// Chunk sizes per codec (states only).
    pub codecs: Vec<CodecUsage>,
    /// Attachments (name, size, sha256 as stored; not checked, see [`verify`]).
    pub attachments: Vec<AttachmentInfo>,
}

/// Summarizes a recording without decoding states: header, steps present, sizes and ratio per
/// codec.
pub fn inspect(path: &Path) -> Result<InspectReport, FormatError> {
    let reader = Reader::open(path)?;
    let header = reader.header().clone();
    let steps = reader.steps().to_vec();
    let mut step_ranges: Vec<StepRange> = Vec::new();
    for &s in &steps {
        match step_ranges.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
            _ => step_ranges.push(StepRange { first: s, last: s }),
        }
    }
    let cl = u64::from(header.codec.chunk_len_elements);
    let mut usage: BTreeMap<CodecId, (u64, u64, u64)> = BTreeMap::new();
    let (mut keyframes, mut step_record_bytes) = (0u64, 0u64);
    for &s in &steps {
        let (entry, p) = reader.step_payload(s)?;
        keyframes += u64::from(p.fixed.is_keyframe());
        step_record_bytes += entry.record_len_bytes;
        for (i, c) in p.chunks.iter().enumerate() {
            let start = i as u64 * cl;
            let elems = cl.min(header.state_len_elements.saturating_sub(start));
            let u = usage.entry(c.codec).or_default();
            u.0 += 1;
            u.1 += elems * 4;
            u.2 += u64::from(c.stored_len_bytes);
        }
    }
    let codecs = usage
        .into_iter()
        .map(|(codec, (chunks, raw, stored))| CodecUsage {
            codec,
            chunks,
            raw_bytes: raw,
            stored_bytes: stored,
            ratio: raw as f64 / stored.max(1) as f64,
        })
        .collect();
    let state_raw_bytes = header
        .state_len_elements
        .saturating_mul(4)
        .saturating_mul(steps.len() as u64);
    let mut resume_steps: Vec<u64> = reader
        .entries()
        .iter()
        .filter(|e| e.kind == RecordKind::Resume as u8)
        .map(|e| e.step)
        .collect();
    resume_steps.dedup();
    let pro = reader.prologue();
    Ok(InspectReport {
        path: path.to_path_buf(),
        format_version: format!("{}.{}", pro.major, pro.minor),
        writer_version: pro.writer_version_str(),
        feature_flags: [pro.incompat_flags, pro.ro_compat_flags, pro.compat_flags],
        finished: reader.is_finished(),
        file_bytes: reader.committed_len_bytes() + reader.torn_tail_bytes(),
        torn_tail_bytes: reader.torn_tail_bytes(),
        step_count: steps.len() as u64,
        step_ranges,
        keyframes,
        epoch_records: reader
            .entries()
            .iter()
            .filter(|e| e.kind == RecordKind::Epoch as u8)
            .count() as u64,
        resume_steps,
        state_raw_bytes,
        step_record_bytes,
        ratio: state_raw_bytes as f64 / step_record_bytes.max(1) as f64,
        codecs,
        attachments: reader.attachments().to_vec(),
        header,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(f, "{}", self.path.display())?;
        writeln!(
            f,
            "  format {} (writer {}), {} bytes, {}",
            self.format_version,
            self.writer_version,
            self.file_bytes,
            if self.finished {
                "finished".to_owned()
            } else {
                format!("NOT finished, torn tail {} bytes", self.torn_tail_bytes)
            }
        )?;
        let run_id: String = h.run_id.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            f,
            "  run {run_id}, created {} ms since epoch",
            h.created_unix_ms
        )?;
        writeln!(
            f,
            "  state: {} elements in {} tensors; chunk {} elements, K = {}, zstd {}, delta codec {}",
            h.state_len_elements,
            h.layout.len(),
            h.codec.chunk_len_elements,
            h.codec.keyframe_interval,
            h.codec.zstd_level,
            h.codec.delta_codec
        )?;
        let ranges: Vec<String> = self
            .step_ranges
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}..={}", r.first, r.last)
                }
            })
            .collect();
        writeln!(
            f,
            "  steps: {} in {} range(s): {}",
            self.step_count,
            ranges.len(),
            ranges.join(", ")
        )?;
        writeln!(
            f,
            "  keyframes {}, epoch records {}, resume states at {:?}",
            self.keyframes, self.epoch_records, self.resume_steps
        )?;
        writeln!(
            f,
            "  states: {} raw bytes in {} stored, ratio {:.3}",
            self.state_raw_bytes, self.step_record_bytes, self.ratio
        )?;
        write!(
            f,
            "  {:<18} {:>10} {:>14} {:>14} {:>7}",
            "codec", "chunks", "raw bytes", "stored bytes", "ratio"
        )?;
        for c in &self.codecs {
            write!(
                f,
                "\n  {:<18} {:>10} {:>14} {:>14} {:>7.3}",
                c.codec.name(),
                c.chunks,
                c.raw_bytes,
                c.stored_bytes,
                c.ratio
            )?;
        }
        write_attachments(f, &self.attachments)
    }
}
