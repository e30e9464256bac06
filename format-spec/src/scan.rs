//! Opening a recording from its bytes: prologue, header, the trailer fast path, and the forward
//! scan that recovers a file without footer (SPEC.md "Reading strategy"). Pure functions over a
//! byte slice; the reader and `Writer::reopen` run them on a memory map.

use crate::consts::*;
use crate::error::{FormatError, no_path};
use crate::records::*;
use crate::types::{AttachmentInfo, Header, ScalarPresence};

/// Outcome of looking at the bytes at one record offset.
pub(crate) enum Probe<'a> {
    /// A complete record with valid checksums (the payload's unless deferred) and zero padding.
    Complete {
        header: RecordHeader,
        payload: &'a [u8],
        total_len_bytes: u64,
    },
    /// A valid record header whose record extends beyond the end of the bytes, or fewer than 32
    /// bytes left: what a writer killed mid-record leaves.
    Torn,
    /// Anything else.
    Bad(FormatError),
}

/// Whether [`probe_record`] checks the payload CRC itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadCrc {
    Check,
    /// The caller checks it: the state decode derives it from the chunk CRCs it checks anyway
    /// (one pass over a step's bytes instead of two).
    Deferred,
}

/// Looks at the record starting at `offset`.
pub(crate) fn probe_record(bytes: &[u8], offset: u64) -> Probe<'_> {
    probe_record_with(bytes, offset, PayloadCrc::Check)
}

fn probe_record_with(bytes: &[u8], offset: u64, crc: PayloadCrc) -> Probe<'_> {
    let len = bytes.len() as u64;
    let Some(remaining) = len.checked_sub(offset) else {
        return Probe::Bad(FormatError::corrupt(
            offset,
            "record",
            "offset beyond end of file",
        ));
    };
    if remaining < RECORD_HEADER_ENCODED_SIZE_BYTES as u64 {
        return Probe::Torn;
    }
    let start = offset as usize;
    let header = match RecordHeader::decode(
        &bytes[start..start + RECORD_HEADER_ENCODED_SIZE_BYTES],
        offset,
    ) {
        Ok(h) => h,
        Err(e) => return Probe::Bad(e),
    };
    let Some(total) = header.total_len_bytes() else {
        return Probe::Bad(FormatError::corrupt(
            offset,
            "record header",
            "record length overflows",
        ));
    };
    if total > remaining {
        return Probe::Torn;
    }
    let payload_start = start + RECORD_HEADER_ENCODED_SIZE_BYTES;
    let payload_end = payload_start + header.payload_len_bytes as usize;
    let payload = &bytes[payload_start..payload_end];
    if crc == PayloadCrc::Check
        && let Err(e) = check_payload_crc(&header, payload, offset)
    {
        return Probe::Bad(e);
    }
    let record_end = start + total as usize;
    if bytes[payload_end..record_end].iter().any(|&b| b != 0) {
        // A damaged payload is reported before anything else, deferred check or not.
        if crc == PayloadCrc::Deferred
            && let Err(e) = check_payload_crc(&header, payload, offset)
        {
            return Probe::Bad(e);
        }
        return Probe::Bad(FormatError::corrupt(
            offset,
            "record",
            "padding bytes are not zero",
        ));
    }
    Probe::Complete {
        header,
        payload,
        total_len_bytes: total,
    }
}

/// The payload CRC of a record header against the payload's bytes.
pub(crate) fn check_payload_crc(
    header: &RecordHeader,
    payload: &[u8],
    record_offset: u64,
) -> Result<(), FormatError> {
    payload_crc_matches(header, crc32c::crc32c(payload), record_offset)
}

/// The payload CRC of a record header against `found`, however it was computed.
pub(crate) fn payload_crc_matches(
    header: &RecordHeader,
    found: u32,
    record_offset: u64,
) -> Result<(), FormatError> {
    if found == header.payload_crc32c {
        return Ok(());
    }
    Err(FormatError::ChecksumMismatch {
        path: no_path(),
        what: "record payload",
        offset_from_file_start: record_offset,
        expected: header.payload_crc32c,
        found,
    })
}

/// Reads a complete record that the index says is at `entry`; any mismatch is corruption.
pub(crate) fn read_indexed_record<'a>(
    bytes: &'a [u8],
    entry: &IndexEntry,
) -> Result<(RecordHeader, &'a [u8]), FormatError> {
    read_indexed_record_with(bytes, entry, PayloadCrc::Check)
}

/// [`read_indexed_record`], with the payload CRC checked or left to the caller.
pub(crate) fn read_indexed_record_with<'a>(
    bytes: &'a [u8],
    entry: &IndexEntry,
    crc: PayloadCrc,
) -> Result<(RecordHeader, &'a [u8]), FormatError> {
    match probe_record_with(bytes, entry.record_offset, crc) {
        Probe::Complete {
            header,
            payload,
            total_len_bytes,
        } => {
            if total_len_bytes != entry.record_len_bytes
                || header.kind != entry.kind
                || header.step != entry.step
            {
                // As in `probe_record_with`: a damaged payload is reported first.
                if crc == PayloadCrc::Deferred {
                    check_payload_crc(&header, payload, entry.record_offset)?;
                }
                return Err(FormatError::corrupt(
                    entry.record_offset,
                    "record",
                    "record header does not match its index entry",
                ));
            }
            Ok((header, payload))
        }
        Probe::Torn => Err(FormatError::corrupt(
            entry.record_offset,
            "record",
            "indexed record is incomplete",
        )),
        Probe::Bad(e) => Err(e),
    }
}

/// Whether the unreadable bytes from `pos` on can be what a crash leaves: all zero (blocks
/// allocated but never written), or the last record with a bad payload followed only by zeros
/// (its tail was never written).
fn is_torn_tail(bytes: &[u8], pos: u64, err: &FormatError) -> bool {
    let rest = &bytes[pos as usize..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    if !matches!(
        err,
        FormatError::ChecksumMismatch {
            what: "record payload",
            ..
        }
    ) {
        return false;
    }
    let Ok(h) = RecordHeader::decode(rest, pos) else {
        return false;
    };
    let Some(end) = h.total_len_bytes().and_then(|t| usize::try_from(t).ok()) else {
        return false;
    };
    rest.get(end..)
        .is_some_and(|after| after.iter().all(|&b| b == 0))
}

/// A record of a kind this reader does not know, without the SKIPPABLE flag.
fn unknown_kind(offset: u64, kind: u8) -> FormatError {
    FormatError::corrupt(
        offset,
        "record",
        format!("unknown record kind {kind} without the SKIPPABLE flag"),
    )
}

/// Chain bookkeeping carried across scans (and across `refresh` calls).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChainState {
    pub last_step: Option<u64>,
    pub last_chain_start: u64,
    /// Whether a STEP, EPOCH or RESUME record was seen (ATTACHMENT records must precede them).
    pub data_seen: bool,
}

impl ChainState {
    /// Applies SPEC.md's step ordering and chain rules to one step record; `keyframe_interval`
    /// is the header's K (every multiple of K must be a keyframe).
    pub(crate) fn accept(
        &mut self,
        step: u64,
        chain_start_step: u64,
        keyframe: bool,
        keyframe_interval: u32,
        offset: u64,
    ) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::corrupt(offset, "step record", reason);
        if step == NO_STEP {
            return Err(bad("step number u64::MAX is reserved".into()));
        }
        if !keyframe && step.is_multiple_of(u64::from(keyframe_interval.max(1))) {
            return Err(bad(format!(
                "step {step} is a multiple of the keyframe interval {keyframe_interval} but is \
                 not a keyframe"
            )));
        }
        if let Some(last) = self.last_step
            && step <= last
        {
            return Err(bad(format!(
                "step {step} follows step {last}; steps must strictly increase"
            )));
        }
        if keyframe != (chain_start_step == step) {
            return Err(bad(format!(
                "keyframe flag {keyframe} but chain start {chain_start_step} for step {step}"
            )));
        }
        if !keyframe {
            let consecutive = self.last_step == step.checked_sub(1);
            if !consecutive || self.last_chain_start != chain_start_step {
                return Err(bad(format!(
                    "delta step {step} does not continue the chain of the previous step"
                )));
            }
        }
        self.last_step = Some(step);
        self.last_chain_start = chain_start_step;
        Ok(())
    }
}

/// Validates the ATTACHMENT record at `record_offset` (SPEC.md §4.9): step NO_STEP, before
/// every STEP, EPOCH and RESUME record, a well-formed payload, a name not used before, at most
/// [`MAX_ATTACHMENTS`]; appends it to `attachments`.
pub(crate) fn accept_attachment(
    step: u64,
    payload: &[u8],
    record_offset: u64,
    chain: &ChainState,
    attachments: &mut Vec<AttachmentInfo>,
) -> Result<(), FormatError> {
    let bad = |reason: String| FormatError::corrupt(record_offset, "attachment record", reason);
    if step != NO_STEP {
        return Err(bad(format!("step field is {step}, not NO_STEP")));
    }
    if chain.data_seen {
        return Err(bad(
            "attachment after a step, epoch or resume record (attachments must come first)".into(),
        ));
    }
    let p = decode_attachment_payload(payload, record_offset)?;
    if attachments.iter().any(|a| a.name == p.name) {
        return Err(bad(format!("attachment name {:?} is used twice", p.name)));
    }
    if attachments.len() >= MAX_ATTACHMENTS {
        return Err(FormatError::SizeCap {
            what: "attachments",
            value: attachments.len() as u64 + 1,
            cap: MAX_ATTACHMENTS as u64,
        });
    }
    let data_offset = record_offset
        .checked_add((RECORD_HEADER_ENCODED_SIZE_BYTES + p.data_payload_offset) as u64)
        .ok_or_else(|| bad("data offset overflows".into()))?;
    attachments.push(AttachmentInfo {
        name: p.name.to_owned(),
        len_bytes: p.data.len() as u64,
        sha256: p.sha256,
        record_offset,
        data_offset,
    });
    Ok(())
}

/// What the scan found from some start offset.
#[derive(Debug, Default)]
pub(crate) struct ScanResult {
    pub entries: Vec<IndexEntry>,
    /// End of the last data record seen (unchanged if none).
    pub data_end: u64,
    /// End of the last valid record.
    pub scan_end: u64,
    /// Bytes after `scan_end`.
    pub torn_tail_bytes: u64,
    /// Whether a footer record was seen.
    pub saw_footer: bool,
}

/// Scans records forward from `start`. In strict mode an unreadable tail that a killed writer
/// cannot have produced (a full-size record header with a bad checksum and non-zero bytes, a
/// complete record with a bad payload) is an error; otherwise the scan stops there. Attachments
/// found are appended to `attachments` (which holds those of the bytes before `start`).
pub(crate) fn scan_records(
    bytes: &[u8],
    start: u64,
    header: &Header,
    presence: ScalarPresence,
    chain: &mut ChainState,
    attachments: &mut Vec<AttachmentInfo>,
    strict: bool,
) -> Result<ScanResult, FormatError> {
    let len = bytes.len() as u64;
    let mut res = ScanResult {
        data_end: start,
        scan_end: start,
        ..ScanResult::default()
    };
    let mut pos = start;
    let chunk_count = header.chunk_count();
    while pos < len {
        match probe_record(bytes, pos) {
            Probe::Torn => break,
            Probe::Bad(e) => {
                if strict && !is_torn_tail(bytes, pos, &e) {
                    return Err(e);
                }
                break;
            }
            Probe::Complete {
                header: rh,
                payload,
                total_len_bytes,
            } => {
                let kind = RecordKind::from_u8(rh.kind);
                let mut entry = IndexEntry {
                    record_offset: pos,
                    record_len_bytes: total_len_bytes,
                    step: rh.step,
                    chain_start_step: rh.step,
                    kind: rh.kind,
                    flags: 0,
                };
                match kind {
                    Some(RecordKind::Step) => {
                        let fixed = decode_step_fixed(payload, pos, presence)?;
                        if u64::from(fixed.chunk_count) != chunk_count {
                            return Err(FormatError::corrupt(
                                pos,
                                "step record",
                                "chunk count does not match the header",
                            ));
                        }
                        if !plausible_expansion(
                            total_len_bytes,
                            header.state_len_elements.saturating_mul(4),
                        ) {
                            return Err(FormatError::corrupt(
                                pos,
                                "step record",
                                "too small to hold the state",
                            ));
                        }
                        chain.accept(
                            rh.step,
                            fixed.chain_start_step,
                            fixed.is_keyframe(),
                            header.codec.keyframe_interval,
                            pos,
                        )?;
                        chain.data_seen = true;
                        entry.chain_start_step = fixed.chain_start_step;
                        entry.flags = if fixed.is_keyframe() {
                            INDEX_FLAG_KEYFRAME
                        } else {
                            0
                        };
                        res.entries.push(entry);
                        res.data_end = pos + total_len_bytes;
                    }
                    Some(RecordKind::Epoch | RecordKind::Resume) => {
                        chain.data_seen = true;
                        res.entries.push(entry);
                        res.data_end = pos + total_len_bytes;
                    }
                    Some(RecordKind::Attachment) => {
                        accept_attachment(rh.step, payload, pos, chain, attachments)?;
                        res.entries.push(entry);
                        res.data_end = pos + total_len_bytes;
                    }
                    Some(RecordKind::Index) => {}
                    Some(RecordKind::Footer) => res.saw_footer = true,
                    Some(RecordKind::Header) => {
                        return Err(FormatError::corrupt(
                            pos,
                            "header record",
                            "a second header record",
                        ));
                    }
                    None if rh.flags & RECORD_FLAG_SKIPPABLE != 0 => {
                        res.entries.push(entry);
                        res.data_end = pos + total_len_bytes;
                    }
                    None => return Err(unknown_kind(pos, rh.kind)),
                }
                pos += total_len_bytes;
                res.scan_end = pos;
            }
        }
    }
    res.torn_tail_bytes = len - res.scan_end;
    Ok(res)
}

/// Everything known after opening.
#[derive(Debug)]
pub(crate) struct Opened {
    pub prologue: Prologue,
    pub header: Header,
    pub header_end: u64,
    pub footer: Option<Footer>,
    pub entries: Vec<IndexEntry>,
    pub data_end: u64,
    pub scan_end: u64,
    pub torn_tail_bytes: u64,
    pub chain: ChainState,
    /// ATTACHMENT records, in file order.
    pub attachments: Vec<AttachmentInfo>,
}

/// Opens a recording held in `bytes` (the whole file as observed).
pub(crate) fn open_bytes(bytes: &[u8]) -> Result<Opened, FormatError> {
    let len = bytes.len() as u64;
    let prologue = Prologue::decode(bytes, len)?;
    let header_offset = PROLOGUE_ENCODED_SIZE_BYTES as u64;
    let (header, header_end) = match probe_record(bytes, header_offset) {
        Probe::Complete {
            header: rh,
            payload,
            total_len_bytes,
        } => {
            if rh.kind != RecordKind::Header as u8 {
                return Err(FormatError::corrupt(
                    header_offset,
                    "header record",
                    "first record is not a header record",
                ));
            }
            let mut header = decode_header_payload(payload, header_offset)?;
            check_layout_flags(&header, prologue.incompat_flags, header_offset)?;
            header.codec.split_streams =
                prologue.incompat_flags & crate::consts::INCOMPAT_SPLIT_STREAMS != 0;
            (header, header_offset + total_len_bytes)
        }
        Probe::Torn => {
            let needed = match RecordHeader::decode(&bytes[header_offset as usize..], header_offset)
            {
                Ok(h) => h.total_len_bytes().unwrap_or(u64::MAX),
                Err(_) => RECORD_HEADER_ENCODED_SIZE_BYTES as u64,
            };
            return Err(FormatError::Truncated {
                path: no_path(),
                offset_from_file_start: header_offset,
                needed_bytes: needed,
                file_len_bytes: len,
            });
        }
        Probe::Bad(e) => return Err(e),
    };
    let trailer_len = TRAILER_ENCODED_SIZE_BYTES as u64;
    if len >= header_end + trailer_len && Trailer::has_magic(&bytes[(len - trailer_len) as usize..])
    {
        return open_finished(bytes, prologue, header, header_end);
    }
    let mut chain = ChainState::default();
    let mut attachments = Vec::new();
    let scan = scan_records(
        bytes,
        header_end,
        &header,
        prologue.scalar_presence(),
        &mut chain,
        &mut attachments,
        true,
    )?;
    Ok(Opened {
        prologue,
        header,
        header_end,
        footer: None,
        entries: scan.entries,
        data_end: scan.data_end,
        scan_end: scan.scan_end,
        torn_tail_bytes: scan.torn_tail_bytes,
        chain,
        attachments,
    })
}

/// The payload of the record at `offset` if it is complete, of `kind` and exactly `len_bytes`
/// long with padding; a damaged record's own error; otherwise "corrupt" naming `what`.
fn expect_record<'a>(
    bytes: &'a [u8],
    offset: u64,
    kind: RecordKind,
    len_bytes: u64,
    what: &'static str,
    reason: &str,
) -> Result<&'a [u8], FormatError> {
    match probe_record(bytes, offset) {
        Probe::Complete {
            header,
            payload,
            total_len_bytes,
        } if header.kind == kind as u8 && total_len_bytes == len_bytes => Ok(payload),
        Probe::Bad(e) => Err(e),
        _ => Err(FormatError::corrupt(offset, what, reason)),
    }
}

/// Opens a finished file through its trailer, FOOTER and INDEX (SPEC.md §4.6–4.8, §8.5).
fn open_finished(
    bytes: &[u8],
    prologue: Prologue,
    header: Header,
    header_end: u64,
) -> Result<Opened, FormatError> {
    let len = bytes.len() as u64;
    let located = locate_index(bytes, &prologue, header_end)?;
    let (footer, footer_offset, index_offset) =
        (located.footer, located.footer_offset, located.index_offset);
    let entries = located.entries;
    let data = check_index_entries(bytes, &header, header_end, index_offset, &entries)?;
    let mut step_list = entries.iter().filter(|e| e.is_step()).map(|e| e.step);
    let first = step_list.clone().next().unwrap_or(NO_STEP);
    let last = step_list.next_back().unwrap_or(NO_STEP);
    if footer.data_record_count != entries.len() as u64
        || footer.step_count != data.steps
        || footer.first_step != first
        || footer.last_step != last
    {
        return Err(FormatError::corrupt(
            footer_offset,
            "footer record",
            "counts do not match the index",
        ));
    }
    Ok(Opened {
        prologue,
        header,
        header_end,
        footer: Some(footer),
        entries,
        data_end: index_offset,
        scan_end: len,
        torn_tail_bytes: 0,
        chain: data.chain,
        attachments: data.attachments,
    })
}

/// The FOOTER and INDEX records of a finished file, found from its trailer.
struct LocatedIndex {
    footer: Footer,
    footer_offset: u64,
    index_offset: u64,
    entries: Vec<IndexEntry>,
}

/// Follows the trailer to the FOOTER and the FOOTER to the INDEX, checking that each lies
/// inside the file body where the one before says.
fn locate_index(
    bytes: &[u8],
    prologue: &Prologue,
    header_end: u64,
) -> Result<LocatedIndex, FormatError> {
    let len = bytes.len() as u64;
    let trailer_offset = len - TRAILER_ENCODED_SIZE_BYTES as u64;
    let trailer = Trailer::decode(&bytes[trailer_offset as usize..], trailer_offset)?;
    let bad =
        |offset: u64, kind: &'static str, reason: &str| FormatError::corrupt(offset, kind, reason);
    if trailer.major != prologue.major || trailer.minor != prologue.minor {
        return Err(bad(
            trailer_offset,
            "trailer",
            "version differs from the prologue",
        ));
    }
    let footer_end = trailer
        .footer_record_offset
        .checked_add(trailer.footer_record_len_bytes);
    if footer_end != Some(trailer_offset) || trailer.footer_record_offset < header_end {
        return Err(bad(
            trailer_offset,
            "trailer",
            "footer location is outside the file body",
        ));
    }
    let footer_offset = trailer.footer_record_offset;
    let footer = Footer::decode(
        expect_record(
            bytes,
            footer_offset,
            RecordKind::Footer,
            trailer.footer_record_len_bytes,
            "footer record",
            "trailer does not point at a footer record",
        )?,
        footer_offset,
    )?;
    let index_offset = footer.index_record_offset;
    if footer
        .index_record_offset
        .checked_add(footer.index_record_len_bytes)
        != Some(footer_offset)
        || index_offset < header_end
    {
        return Err(bad(
            footer_offset,
            "footer record",
            "index location is outside the file body",
        ));
    }
    let entries = decode_index_payload(
        expect_record(
            bytes,
            index_offset,
            RecordKind::Index,
            footer.index_record_len_bytes,
            "index record",
            "footer does not point at an index record",
        )?,
        index_offset,
    )?;
    Ok(LocatedIndex {
        footer,
        footer_offset,
        index_offset,
        entries,
    })
}

/// What the index entries of a finished file say about its data region.
struct IndexedData {
    chain: ChainState,
    attachments: Vec<AttachmentInfo>,
    steps: u64,
}

/// Checks that the index entries tile `[header_end, index_offset)` exactly, in file order, and
/// that each fits its record kind; follows the keyframe chain and reads the attachments.
fn check_index_entries(
    bytes: &[u8],
    header: &Header,
    header_end: u64,
    index_offset: u64,
    entries: &[IndexEntry],
) -> Result<IndexedData, FormatError> {
    let bad =
        |offset: u64, kind: &'static str, reason: &str| FormatError::corrupt(offset, kind, reason);
    // The data records must tile [header_end, index_offset) exactly, in file order.
    let mut chain = ChainState::default();
    let mut attachments = Vec::new();
    let mut expected_offset = header_end;
    let mut steps = 0u64;
    for e in entries {
        if e.record_offset != expected_offset
            || e.record_len_bytes < RECORD_HEADER_ENCODED_SIZE_BYTES as u64
            || !e.record_len_bytes.is_multiple_of(RECORD_ALIGNMENT_BYTES)
        {
            return Err(bad(
                index_offset,
                "index record",
                "entries do not tile the data region",
            ));
        }
        expected_offset = e
            .record_offset
            .checked_add(e.record_len_bytes)
            .filter(|&end| end <= index_offset)
            .ok_or_else(|| {
                bad(
                    index_offset,
                    "index record",
                    "entry extends beyond the data region",
                )
            })?;
        match e.record_kind() {
            Some(RecordKind::Step) => {
                let keyframe = e.flags & INDEX_FLAG_KEYFRAME != 0;
                if !plausible_expansion(
                    e.record_len_bytes,
                    header.state_len_elements.saturating_mul(4),
                ) {
                    return Err(bad(
                        e.record_offset,
                        "step record",
                        "too small to hold the state",
                    ));
                }
                chain.accept(
                    e.step,
                    e.chain_start_step,
                    keyframe,
                    header.codec.keyframe_interval,
                    e.record_offset,
                )?;
                chain.data_seen = true;
                steps += 1;
            }
            Some(RecordKind::Attachment) => {
                if e.flags != 0 || e.chain_start_step != e.step {
                    return Err(bad(
                        index_offset,
                        "index record",
                        "non-step entry with step fields",
                    ));
                }
                let (rh, payload) = read_indexed_record(bytes, e)?;
                accept_attachment(rh.step, payload, e.record_offset, &chain, &mut attachments)?;
            }
            Some(RecordKind::Epoch | RecordKind::Resume) | None => {
                if e.record_kind().is_some() {
                    chain.data_seen = true;
                }
                if e.flags != 0 || e.chain_start_step != e.step {
                    return Err(bad(
                        index_offset,
                        "index record",
                        "non-step entry with step fields",
                    ));
                }
                if e.record_kind().is_none() {
                    // A kind this reader does not know: usable only if the record itself says
                    // it may be skipped (SPEC.md §4.1), as when scanning.
                    let (rh, _) = read_indexed_record(bytes, e)?;
                    if rh.flags & RECORD_FLAG_SKIPPABLE == 0 {
                        return Err(unknown_kind(e.record_offset, e.kind));
                    }
                }
            }
            Some(_) => {
                return Err(bad(
                    index_offset,
                    "index record",
                    "index lists a non-data record",
                ));
            }
        }
    }
    if expected_offset != index_offset {
        return Err(bad(
            index_offset,
            "index record",
            "entries do not cover the data region",
        ));
    }
    Ok(IndexedData {
        chain,
        attachments,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steps: &[(u64, u64)], k: u32) -> Result<(), FormatError> {
        let mut chain = ChainState::default();
        for &(step, chain_start) in steps {
            chain.accept(step, chain_start, step == chain_start, k, 0)?;
        }
        Ok(())
    }

    #[test]
    fn chain_rules_demand_a_keyframe_at_every_multiple_of_k() {
        // K = 4: 0 and 4 are keyframes, 5..7 continue the chain of 4; 9 after a gap starts one.
        assert!(run(&[(0, 0), (1, 0), (2, 0), (3, 0), (4, 4), (5, 4), (9, 9)], 4).is_ok());
        // A keyframe may also start anywhere else (a promoted step).
        assert!(run(&[(0, 0), (1, 0), (2, 2), (3, 2)], 4).is_ok());
        for (steps, reason) in [
            (
                &[(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)][..],
                "multiple of the keyframe",
            ),
            (
                &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)][..],
                "multiple of the keyframe",
            ),
            (&[(0, 0), (1, 0), (3, 0)][..], "does not continue"),
            (&[(2, 2), (2, 2)][..], "strictly increase"),
        ] {
            match run(steps, 4) {
                Err(FormatError::Corrupt { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{steps:?}: {other:?}"),
            }
        }
        // K = 1: every step is a keyframe.
        assert!(run(&[(0, 0), (1, 0)], 1).is_err());
        assert!(run(&[(0, 0), (1, 1), (2, 2)], 1).is_ok());
    }
}
