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

/// Result of [`inspect`]. As JSON (see [`InspectJson`]) the run id is a hex string, the
/// creation time also in UTC, and the metadata a JSON object.
#[derive(Clone, Debug, PartialEq)]
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
    /// The wall-time scalar of the last step that has one: seconds from the start of the run.
    pub wall_time_secs: Option<f64>,
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
    let mut wall_time_secs = None;
    for &s in &steps {
        let (entry, p) = reader.step_payload(s)?;
        keyframes += u64::from(p.fixed.is_keyframe());
        wall_time_secs = p.fixed.scalars.wall_time_secs.or(wall_time_secs);
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
        wall_time_secs,
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
        writeln!(
            f,
            "  run {}, created {}",
            hex_id(&h.run_id),
            utc_time(h.created_unix_ms)
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
        if let (Some(secs), Some(last)) = (self.wall_time_secs, self.step_ranges.last()) {
            writeln!(
                f,
                "  wall time at step {}: {} since the run started",
                last.last,
                human_duration(secs)
            )?;
        }
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

/// The JSON form of an [`InspectReport`]: the header's run id as 32 hex digits, its creation time
/// also as UTC text, and its metadata as the JSON object it is (SPEC.md requires an object;
/// anything else is kept as text under `metadata_raw`).
#[derive(Serialize)]
pub struct InspectJson<'a> {
    /// File inspected.
    pub path: &'a Path,
    /// Format version `major.minor`.
    pub format_version: &'a str,
    /// Writer version from the prologue.
    pub writer_version: &'a str,
    /// Feature flags (incompat, ro_compat, compat).
    pub feature_flags: [u64; 3],
    /// Whether the file has a valid footer.
    pub finished: bool,
    /// File length.
    pub file_bytes: u64,
    /// Ignored torn tail.
    pub torn_tail_bytes: u64,
    /// 32 lowercase hex digits.
    pub run_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub created_utc: String,
    /// The header's metadata as a JSON object (`null` when it is not JSON).
    pub metadata: serde_json::Value,
    /// The metadata text, only when it is not a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_raw: Option<&'a str>,
    /// The rest of the header: layout, state length, augmentation bytes, codec settings.
    pub header: HeaderJson<'a>,
    /// Number of steps.
    pub step_count: u64,
    /// Steps present, as runs of consecutive steps.
    pub step_ranges: &'a [StepRange],
    /// Keyframe steps.
    pub keyframes: u64,
    /// Epoch records.
    pub epoch_records: u64,
    /// Steps with a resume record.
    pub resume_steps: &'a [u64],
    /// Wall-time scalar of the last step that has one (seconds since the run started).
    pub wall_time_secs: Option<f64>,
    /// Raw bytes of all states.
    pub state_raw_bytes: u64,
    /// Bytes of all step records.
    pub step_record_bytes: u64,
    /// state_raw_bytes / step_record_bytes.
    pub ratio: f64,
    /// Chunk sizes per codec (states only).
    pub codecs: &'a [CodecUsage],
    /// Attachments (name, size, sha256 as hex).
    pub attachments: &'a [AttachmentInfo],
}

/// The header fields of [`InspectJson`] not lifted to its top level.
#[derive(Serialize)]
pub struct HeaderJson<'a> {
    /// Tensors of the canonical state.
    pub layout: &'a [crate::types::TensorSpec],
    /// Total 4-byte words of the state.
    pub state_len_elements: u64,
    /// Bytes of augmentation choice per sample id.
    pub augmentation_bytes_per_sample: u32,
    /// Chunking and codec settings.
    pub codec: &'a crate::types::CodecSettings,
}

impl InspectReport {
    /// The form `--json` prints.
    pub fn json(&self) -> InspectJson<'_> {
        let h = &self.header;
        let parsed = serde_json::from_str::<serde_json::Value>(&h.metadata_json)
            .ok()
            .filter(serde_json::Value::is_object);
        InspectJson {
            path: &self.path,
            format_version: &self.format_version,
            writer_version: &self.writer_version,
            feature_flags: self.feature_flags,
            finished: self.finished,
            file_bytes: self.file_bytes,
            torn_tail_bytes: self.torn_tail_bytes,
            run_id: hex_id(&h.run_id),
            created_unix_ms: h.created_unix_ms,
            created_utc: utc_time(h.created_unix_ms),
            metadata_raw: parsed.is_none().then_some(h.metadata_json.as_str()),
            metadata: parsed.unwrap_or(serde_json::Value::Null),
            header: HeaderJson {
                layout: &h.layout,
                state_len_elements: h.state_len_elements,
                augmentation_bytes_per_sample: h.augmentation_bytes_per_sample,
                codec: &h.codec,
            },
            step_count: self.step_count,
            step_ranges: &self.step_ranges,
            keyframes: self.keyframes,
            epoch_records: self.epoch_records,
            resume_steps: &self.resume_steps,
            wall_time_secs: self.wall_time_secs,
            state_raw_bytes: self.state_raw_bytes,
            step_record_bytes: self.step_record_bytes,
            ratio: self.ratio,
            codecs: &self.codecs,
            attachments: &self.attachments,
        }
    }
}

impl Serialize for InspectReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(s)
    }
}

/// A run id as 32 lowercase hex digits.
pub fn hex_id(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (H. Hinnant's algorithm), shifted so the era starts on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration for people: `0.85 s`, `3.4 s`, `2 min 05 s`, `1 h 02 min`, `3 d 04 h`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return format!("{secs} s");
    }
    if secs < 1.0 {
        return format!("{secs:.2} s");
    }
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let whole = secs.round() as u64;
    let (d, h, m, s) = (
        whole / 86_400,
        whole % 86_400 / 3600,
        whole % 3600 / 60,
        whole % 60,
    );
    if d > 0 {
        format!("{d} d {h:02} h")
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else {
        format!("{m} min {s:02} s")
    }
}

#[cfg(test)]
mod tests {
    use super::{human_duration, utc_time};

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 12:34:56.789 UTC, a leap day.
        assert_eq!(utc_time(1_709_210_096_789), "2024-02-29 12:34:56 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(human_duration(0.25), "0.25 s");
        assert_eq!(human_duration(3.44), "3.4 s");
        assert_eq!(human_duration(125.0), "2 min 05 s");
        assert_eq!(human_duration(3720.0), "1 h 02 min");
        assert_eq!(human_duration(2.0 * 86_400.0 + 4.0 * 3600.0), "2 d 04 h");
    }
}
