//! Pure byte codecs of every structure in SPEC.md (no I/O). Encoders write exactly the
//! documented bytes; decoders check lengths first and treat every value as untrusted.

use crate::consts::*;
use crate::error::{FormatError, no_path};
use crate::types::{
    CodecId, CodecSettings, DType, EpochRecord, EvalRecord, Header, ScalarPresence, StepScalars,
    TensorSpec,
};

/// Record kinds (the `kind` byte of a record header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RecordKind {
    /// The header record, once, right after the prologue.
    Header = 1,
    /// One step.
    Step = 2,
    /// Evaluation results of one epoch.
    Epoch = 3,
    /// Optimizer state for resuming at a step.
    Resume = 4,
    /// The index of all data records (written by `finish`).
    Index = 5,
    /// The footer (written by `finish`).
    Footer = 6,
    /// A named blob (format 1.1), e.g. the model's module file; written SKIPPABLE.
    Attachment = 7,
}

impl RecordKind {
    /// Parses a kind byte.
    pub fn from_u8(kind: u8) -> Option<RecordKind> {
        Some(match kind {
            1 => RecordKind::Header,
            2 => RecordKind::Step,
            3 => RecordKind::Epoch,
            4 => RecordKind::Resume,
            5 => RecordKind::Index,
            6 => RecordKind::Footer,
            7 => RecordKind::Attachment,
            _ => return None,
        })
    }

    /// Human name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Header => "header record",
            RecordKind::Step => "step record",
            RecordKind::Epoch => "epoch record",
            RecordKind::Resume => "resume record",
            RecordKind::Index => "index record",
            RecordKind::Footer => "footer record",
            RecordKind::Attachment => "attachment record",
        }
    }

    /// Whether records of this kind are listed in the index.
    pub fn is_data(self) -> bool {
        matches!(
            self,
            RecordKind::Step | RecordKind::Epoch | RecordKind::Resume | RecordKind::Attachment
        )
    }
}

/// Record flag: a reader that does not know the record kind MAY skip the record.
pub const RECORD_FLAG_SKIPPABLE: u8 = 0x01;
/// Step record flag: every chunk is standalone and the step starts a delta chain.
pub const STEP_FLAG_KEYFRAME: u32 = 0x01;
/// Index entry flag: the step is a keyframe.
pub const INDEX_FLAG_KEYFRAME: u8 = 0x01;
/// Blob codec of sample ids / augmentation: raw bytes.
pub const BLOB_RAW: u8 = 0;
/// Blob codec: byte-shuffle (4 planes) + zstd (sample ids only).
pub const BLOB_SHUFFLE4_ZSTD: u8 = 1;
/// Blob codec: zstd (augmentation only).
pub const BLOB_ZSTD: u8 = 2;

/// A little-endian reader over an untrusted slice; every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// For errors: offset of `bytes[0]` in the file and the structure's name.
    base_offset: u64,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], base_offset: u64, what: &'static str) -> Self {
        Cursor {
            bytes,
            pos: 0,
            base_offset,
            what,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                FormatError::corrupt(
                    self.base_offset,
                    self.what,
                    format!(
                        "needs {n} bytes at payload offset {}, has {}",
                        self.pos,
                        self.bytes.len()
                    ),
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, FormatError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// Reserved bytes MUST be zero.
    pub(crate) fn reserved(&mut self, n: usize) -> Result<(), FormatError> {
        let at = self.pos;
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err(self.err(format!(
                "reserved bytes at payload offset {at} are not zero"
            )));
        }
        Ok(())
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn err(&self, reason: impl Into<String>) -> FormatError {
        FormatError::corrupt(self.base_offset, self.what, reason)
    }

    /// All bytes must have been consumed (no trailing garbage, no polyglot files).
    pub(crate) fn finish(&self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

pub(crate) fn cap(what: &'static str, value: u64, cap: u64) -> Result<(), FormatError> {
    if value > cap {
        return Err(FormatError::SizeCap { what, value, cap });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Prologue

/// The fixed 64 bytes at offset 0.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Prologue {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Features a reader must understand to read the file.
    pub incompat_flags: u64,
    /// Features a reader may ignore but a writer must understand to append.
    pub ro_compat_flags: u64,
    /// Features anyone may ignore.
    pub compat_flags: u64,
    /// Writer version, ASCII, zero padded.
    pub writer_version: [u8; 16],
}

impl Prologue {
    /// The prologue this crate writes for `header`: [`Prologue::current`] with the incompat bit
    /// [`INCOMPAT_TYPED_LAYOUT`] set iff the layout holds a tensor that is not `f32`, and
    /// [`INCOMPAT_ABSENT_MASK`] always (format 1.2: absent step scalars are not NaN), and
    /// [`INCOMPAT_SPLIT_STREAMS`] iff the codec settings ask for split streams (format 1.3).
    pub fn for_header(header: &Header) -> Prologue {
        let typed = if header.has_typed_layout() {
            INCOMPAT_TYPED_LAYOUT
        } else {
            0
        };
        let split = if header.codec.split_streams {
            INCOMPAT_SPLIT_STREAMS
        } else {
            0
        };
        Prologue {
            incompat_flags: typed | INCOMPAT_ABSENT_MASK | split,
            ..Prologue::current()
        }
    }

    /// How this file's STEP records say that a scalar is absent.
    pub fn scalar_presence(&self) -> ScalarPresence {
        ScalarPresence::from_incompat_flags(self.incompat_flags)
    }

    /// The prologue this crate writes, without feature flags.
    pub fn current() -> Prologue {
        let mut writer_version = [0u8; 16];
        let v = WRITER_VERSION.as_bytes();
        let n = v.len().min(16);
        writer_version[..n].copy_from_slice(&v[..n]);
        Prologue {
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
            incompat_flags: 0,
            ro_compat_flags: 0,
            compat_flags: 0,
            writer_version,
        }
    }

    /// Writer version as text (up to the first zero byte).
    pub fn writer_version_str(&self) -> String {
        let end = self
            .writer_version
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(16);
        String::from_utf8_lossy(&self.writer_version[..end]).into_owned()
    }

    /// Encodes the 64 bytes, CRC included.
    pub fn encode(&self) -> [u8; PROLOGUE_ENCODED_SIZE_BYTES] {
        let Prologue {
            major,
            minor,
            incompat_flags,
            ro_compat_flags,
            compat_flags,
            writer_version,
        } = self;
        let mut b = [0u8; PROLOGUE_ENCODED_SIZE_BYTES];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..10].copy_from_slice(&major.to_le_bytes());
        b[10..12].copy_from_slice(&minor.to_le_bytes());
        // 12..16 reserved
        b[16..24].copy_from_slice(&incompat_flags.to_le_bytes());
        b[24..32].copy_from_slice(&ro_compat_flags.to_le_bytes());
        b[32..40].copy_from_slice(&compat_flags.to_le_bytes());
        b[40..56].copy_from_slice(writer_version);
        // 56..60 reserved
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates the prologue from the start of a file (`file_len_bytes` is the
    /// length of the whole file, for the truncation error). Check order: magic, version, CRC,
    /// reserved bytes, feature flags.
    pub fn decode(bytes: &[u8], file_len_bytes: u64) -> Result<Prologue, FormatError> {
        let mut found_magic = [0u8; 8];
        let n = bytes.len().min(8);
        found_magic[..n].copy_from_slice(&bytes[..n]);
        if found_magic[..n] != FILE_MAGIC[..n] {
            return Err(FormatError::NotARecording {
                path: no_path(),
                found_magic,
            });
        }
        // A prefix of the magic (an empty file included: a writer killed before its first
        // write) is a truncated recording.
        if bytes.len() < PROLOGUE_ENCODED_SIZE_BYTES {
            return Err(FormatError::Truncated {
                path: no_path(),
                offset_from_file_start: 0,
                needed_bytes: PROLOGUE_ENCODED_SIZE_BYTES as u64,
                file_len_bytes,
            });
        }
        let mut c = Cursor::new(&bytes[..PROLOGUE_ENCODED_SIZE_BYTES], 0, "prologue");
        c.take(8)?;
        let major = c.u16()?;
        let minor = c.u16()?;
        // The magic and the two version fields are the only bytes every future major keeps in
        // place, so the version is checked before the CRC whose position a new major may move.
        if major > FORMAT_MAJOR {
            return Err(FormatError::NewerVersion {
                path: no_path(),
                major,
                minor,
                supported_major: FORMAT_MAJOR,
            });
        }
        let stored_crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
        let crc = crc32c::crc32c(&bytes[0..60]);
        if crc != stored_crc {
            return Err(FormatError::ChecksumMismatch {
                path: no_path(),
                what: "prologue",
                offset_from_file_start: 0,
                expected: stored_crc,
                found: crc,
            });
        }
        if major == 0 {
            return Err(FormatError::UnsupportedVersion {
                path: no_path(),
                major,
                minor,
            });
        }
        c.reserved(4)?;
        let incompat_flags = c.u64()?;
        let ro_compat_flags = c.u64()?;
        let compat_flags = c.u64()?;
        let writer_version = c.array::<16>()?;
        c.reserved(4)?;
        let unknown = incompat_flags & !KNOWN_INCOMPAT_FLAGS;
        if unknown != 0 {
            return Err(FormatError::UnsupportedFeature {
                path: no_path(),
                which: "incompat",
                flags: unknown,
            });
        }
        Ok(Prologue {
            major,
            minor,
            incompat_flags,
            ro_compat_flags,
            compat_flags,
            writer_version,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Record header

/// The 32-byte header in front of every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Kind byte (may be unknown to this version).
    pub kind: u8,
    /// Flag bits.
    pub flags: u8,
    /// Payload length, without padding.
    pub payload_len_bytes: u64,
    /// Step the record belongs to, or [`NO_STEP`].
    pub step: u64,
    /// CRC32C of the payload bytes.
    pub payload_crc32c: u32,
}

/// Zero bytes after a payload of this length, up to the record alignment.
pub fn padding_len(payload_len_bytes: u64) -> usize {
    ((RECORD_ALIGNMENT_BYTES - payload_len_bytes % RECORD_ALIGNMENT_BYTES) % RECORD_ALIGNMENT_BYTES)
        as usize
}

/// Payload length rounded up to the record alignment.
pub fn padded_len(payload_len_bytes: u64) -> Option<u64> {
    payload_len_bytes
        .checked_add(RECORD_ALIGNMENT_BYTES - 1)
        .map(|v| v & !(RECORD_ALIGNMENT_BYTES - 1))
}

impl RecordHeader {
    /// Header for `payload`.
    pub fn for_payload(kind: RecordKind, flags: u8, step: u64, payload: &[u8]) -> RecordHeader {
        RecordHeader {
            kind: kind as u8,
            flags,
            payload_len_bytes: payload.len() as u64,
            step,
            payload_crc32c: crc32c::crc32c(payload),
        }
    }

    /// Whole record length: header + payload + zero padding to 8 bytes.
    pub fn total_len_bytes(&self) -> Option<u64> {
        padded_len(self.payload_len_bytes)?.checked_add(RECORD_HEADER_ENCODED_SIZE_BYTES as u64)
    }

    /// Encodes the 32 bytes, header CRC included.
    pub fn encode(&self) -> [u8; RECORD_HEADER_ENCODED_SIZE_BYTES] {
        let RecordHeader {
            kind,
            flags,
            payload_len_bytes,
            step,
            payload_crc32c,
        } = self;
        let mut b = [0u8; RECORD_HEADER_ENCODED_SIZE_BYTES];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4] = *kind;
        b[5] = *flags;
        // 6..8 reserved
        b[8..16].copy_from_slice(&payload_len_bytes.to_le_bytes());
        b[16..24].copy_from_slice(&step.to_le_bytes());
        b[24..28].copy_from_slice(&payload_crc32c.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a record header located at `offset_from_file_start`. Checks magic, header CRC,
    /// reserved bits and the payload size cap; the kind is returned raw.
    pub fn decode(bytes: &[u8], offset_from_file_start: u64) -> Result<RecordHeader, FormatError> {
        if bytes.len() < RECORD_HEADER_ENCODED_SIZE_BYTES {
            return Err(FormatError::corrupt(
                offset_from_file_start,
                "record header",
                format!("needs 32 bytes, has {}", bytes.len()),
            ));
        }
        let b = &bytes[..RECORD_HEADER_ENCODED_SIZE_BYTES];
        if b[0..4] != RECORD_MAGIC {
            return Err(FormatError::corrupt(
                offset_from_file_start,
                "record header",
                format!("bad record magic {:02x?}", &b[0..4]),
            ));
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let found = crc32c::crc32c(&b[0..28]);
        if stored != found {
            return Err(FormatError::ChecksumMismatch {
                path: no_path(),
                what: "record header",
                offset_from_file_start,
                expected: stored,
                found,
            });
        }
        let mut c = Cursor::new(b, offset_from_file_start, "record header");
        c.take(4)?;
        let kind = c.u8()?;
        let flags = c.u8()?;
        c.reserved(2)?;
        let payload_len_bytes = c.u64()?;
        let step = c.u64()?;
        let payload_crc32c = c.u32()?;
        if flags & !RECORD_FLAG_SKIPPABLE != 0 {
            return Err(c.err(format!("unknown record flag bits {flags:#04x}")));
        }
        cap(
            "record payload_len_bytes",
            payload_len_bytes,
            MAX_PAYLOAD_BYTES,
        )?;
        Ok(RecordHeader {
            kind,
            flags,
            payload_len_bytes,
            step,
            payload_crc32c,
        })
    }
}

/// Encodes a whole record (header, payload, zero padding) into `out`.
pub fn encode_record(kind: RecordKind, flags: u8, step: u64, payload: &[u8], out: &mut Vec<u8>) {
    let h = RecordHeader::for_payload(kind, flags, step, payload);
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, padding_len(payload.len() as u64)));
}

// ---------------------------------------------------------------------------------------------
// Header record

/// Encodes the header record payload. The header must be valid.
pub fn encode_header_payload(h: &Header) -> Result<Vec<u8>, FormatError> {
    let Header {
        run_id,
        created_unix_ms,
        layout,
        state_len_elements,
        augmentation_bytes_per_sample,
        metadata_json,
        codec,
    } = h;
    // split_streams lives in the prologue's incompat flags, not in the header record.
    let CodecSettings {
        chunk_len_elements,
        keyframe_interval,
        zstd_level,
        delta_codec,
        split_streams: _,
    } = codec;
    let layout_json = serde_json::to_vec(layout)
        .map_err(|e| FormatError::invalid_layout(format!("cannot serialize layout: {e}")))?;
    cap(
        "layout JSON bytes",
        layout_json.len() as u64,
        MAX_JSON_BYTES,
    )?;
    cap(
        "metadata JSON bytes",
        metadata_json.len() as u64,
        MAX_JSON_BYTES,
    )?;
    let mut b = Vec::with_capacity(
        HEADER_FIXED_ENCODED_SIZE_BYTES + layout_json.len() + metadata_json.len(),
    );
    b.extend_from_slice(run_id);
    b.extend_from_slice(&created_unix_ms.to_le_bytes());
    b.extend_from_slice(&state_len_elements.to_le_bytes());
    b.extend_from_slice(&chunk_len_elements.to_le_bytes());
    b.extend_from_slice(&keyframe_interval.to_le_bytes());
    b.extend_from_slice(&zstd_level.to_le_bytes());
    b.push(delta_codec.as_u8());
    b.extend_from_slice(&[0u8; 3]);
    b.extend_from_slice(&augmentation_bytes_per_sample.to_le_bytes());
    b.extend_from_slice(&(layout_json.len() as u32).to_le_bytes());
    b.extend_from_slice(&(metadata_json.len() as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    debug_assert_eq!(b.len(), HEADER_FIXED_ENCODED_SIZE_BYTES);
    b.extend_from_slice(&layout_json);
    b.extend_from_slice(metadata_json.as_bytes());
    Ok(b)
}

/// Checks the layout against the prologue's feature flags: a tensor that is not `f32` needs the
/// incompat bit [`INCOMPAT_TYPED_LAYOUT`] (SPEC.md §3, §4.2). The bit set on an all-`f32`
/// layout is accepted.
pub fn check_layout_flags(
    header: &Header,
    incompat_flags: u64,
    record_offset: u64,
) -> Result<(), FormatError> {
    if incompat_flags & INCOMPAT_TYPED_LAYOUT != 0 {
        return Ok(());
    }
    match header.layout.iter().find(|t| t.dtype != DType::F32) {
        Some(t) => Err(FormatError::corrupt(
            record_offset,
            "header record",
            format!(
                "tensor {:?} has dtype {} but the incompat flag TYPED_LAYOUT (bit 0) is not set",
                t.name, t.dtype
            ),
        )),
        None => Ok(()),
    }
}

/// Decodes and validates a header record payload (check the dtypes against the prologue with
/// [`check_layout_flags`]).
pub fn decode_header_payload(payload: &[u8], record_offset: u64) -> Result<Header, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "header record");
    let mut run_id = [0u8; 16];
    run_id.copy_from_slice(c.take(16)?);
    let created_unix_ms = c.u64()?;
    let state_len_elements = c.u64()?;
    let chunk_len_elements = c.u32()?;
    let keyframe_interval = c.u32()?;
    let zstd_level = c.i32()?;
    let codec_byte = c.u8()?;
    c.reserved(3)?;
    let augmentation_bytes_per_sample = c.u32()?;
    let layout_len = c.u32()?;
    let metadata_len = c.u32()?;
    c.reserved(4)?;
    cap("layout JSON bytes", u64::from(layout_len), MAX_JSON_BYTES)?;
    cap(
        "metadata JSON bytes",
        u64::from(metadata_len),
        MAX_JSON_BYTES,
    )?;
    let layout_bytes = c.take(layout_len as usize)?;
    let metadata_bytes = c.take(metadata_len as usize)?;
    c.finish()?;
    let delta_codec = CodecId::from_u8(codec_byte)
        .ok_or_else(|| c.err(format!("unknown delta codec id {codec_byte}")))?;
    let layout: Vec<TensorSpec> =
        serde_json::from_slice(layout_bytes).map_err(|e| c.err(format!("layout JSON: {e}")))?;
    let metadata_json = std::str::from_utf8(metadata_bytes)
        .map_err(|e| c.err(format!("metadata is not UTF-8: {e}")))?
        .to_owned();
    let header = Header {
        run_id,
        created_unix_ms,
        layout,
        state_len_elements,
        augmentation_bytes_per_sample,
        metadata_json,
        codec: CodecSettings {
            chunk_len_elements,
            keyframe_interval,
            zstd_level,
            delta_codec,
            // Not in the header record: the prologue's incompat bit SPLIT_STREAMS says it, and
            // the scan sets it from there.
            split_streams: false,
        },
    };
    header
        .validate()
        .map_err(|e| c.err(format!("invalid header: {e}")))?;
    Ok(header)
}

// ---------------------------------------------------------------------------------------------
// Chunk tables (step and resume records)

/// One entry of a chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Codec of the stored bytes.
    pub codec: CodecId,
    /// Stored bytes.
    pub stored_len_bytes: u32,
    /// CRC32C of the stored bytes.
    pub stored_crc32c: u32,
    /// xxh3-64 of the reconstructed chunk (its little-endian f32 bytes).
    pub reconstructed_xxh3: u64,
}

impl ChunkEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        let ChunkEntry {
            codec,
            stored_len_bytes,
            stored_crc32c,
            reconstructed_xxh3,
        } = self;
        out.push(codec.as_u8());
        out.extend_from_slice(&[0u8; 3]);
        out.extend_from_slice(&stored_len_bytes.to_le_bytes());
        out.extend_from_slice(&stored_crc32c.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&reconstructed_xxh3.to_le_bytes());
    }

    fn decode(c: &mut Cursor<'_>) -> Result<ChunkEntry, FormatError> {
        let id = c.u8()?;
        let codec = CodecId::from_u8(id).ok_or_else(|| c.err(format!("unknown codec id {id}")))?;
        c.reserved(3)?;
        let stored_len_bytes = c.u32()?;
        let stored_crc32c = c.u32()?;
        c.reserved(4)?;
        let reconstructed_xxh3 = c.u64()?;
        Ok(ChunkEntry {
            codec,
            stored_len_bytes,
            stored_crc32c,
            reconstructed_xxh3,
        })
    }
}

fn decode_chunk_table(c: &mut Cursor<'_>, count: usize) -> Result<Vec<ChunkEntry>, FormatError> {
    let table_bytes = count
        .checked_mul(CHUNK_ENTRY_ENCODED_SIZE_BYTES)
        .ok_or_else(|| c.err("chunk table size overflows"))?;
    if table_bytes > c.remaining() {
        return Err(c.err(format!(
            "chunk table of {count} entries exceeds the payload"
        )));
    }
    (0..count).map(|_| ChunkEntry::decode(c)).collect()
}

/// Byte ranges of each chunk's stored data within a payload.
fn chunk_ranges(
    c: &mut Cursor<'_>,
    chunks: &[ChunkEntry],
) -> Result<Vec<std::ops::Range<usize>>, FormatError> {
    let mut ranges = Vec::with_capacity(chunks.len());
    for e in chunks {
        let start = c.pos();
        c.take(e.stored_len_bytes as usize)?;
        ranges.push(start..c.pos());
    }
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------------
// Step record

/// Fixed part of a step record payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepFixed {
    /// [`STEP_FLAG_KEYFRAME`] or 0.
    pub flags: u32,
    /// Chunks in the table.
    pub chunk_count: u32,
    /// First step of the delta chain this step belongs to (the step itself for a keyframe).
    pub chain_start_step: u64,
    /// Scalars (`None` = absent, stored per [`ScalarPresence`]).
    pub scalars: StepScalars,
    /// Number of sample ids.
    pub sample_count: u32,
    /// Blob codec of the ids.
    pub ids_codec: u8,
    /// Blob codec of the augmentation bytes.
    pub aug_codec: u8,
    /// Stored bytes of the ids.
    pub ids_stored_len_bytes: u32,
    /// Stored bytes of the augmentation.
    pub aug_stored_len_bytes: u32,
}

impl StepFixed {
    /// Whether the keyframe flag is set.
    pub fn is_keyframe(&self) -> bool {
        self.flags & STEP_FLAG_KEYFRAME != 0
    }

    /// Appends the 72 bytes; `presence` is the file's (absent mask at byte 62 or NaN).
    pub(crate) fn encode(&self, out: &mut Vec<u8>, presence: ScalarPresence) {
        let StepFixed {
            flags,
            chunk_count,
            chain_start_step,
            scalars,
            sample_count,
            ids_codec,
            aug_codec,
            ids_stored_len_bytes,
            aug_stored_len_bytes,
        } = self;
        let start = out.len();
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&chunk_count.to_le_bytes());
        out.extend_from_slice(&chain_start_step.to_le_bytes());
        let (values, absent_mask) = scalars.to_stored(presence);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&sample_count.to_le_bytes());
        out.push(*ids_codec);
        out.push(*aug_codec);
        out.push(absent_mask);
        out.push(0);
        out.extend_from_slice(&ids_stored_len_bytes.to_le_bytes());
        out.extend_from_slice(&aug_stored_len_bytes.to_le_bytes());
        debug_assert_eq!(out.len() - start, STEP_FIXED_ENCODED_SIZE_BYTES);
    }
}

/// A parsed step record payload (borrowing the stored bytes).
#[derive(Debug)]
pub struct StepPayload<'a> {
    /// Fixed part.
    pub fixed: StepFixed,
    /// Chunk table.
    pub chunks: Vec<ChunkEntry>,
    /// Stored ids.
    pub ids: &'a [u8],
    /// Stored augmentation.
    pub aug: &'a [u8],
    /// Stored chunk bytes, one slice per chunk.
    pub chunk_data: Vec<&'a [u8]>,
}

/// Encodes a step payload from its parts, the scalars as `presence` says.
pub fn encode_step_payload(
    presence: ScalarPresence,
    fixed: &StepFixed,
    chunks: &[(ChunkEntry, Vec<u8>)],
    ids: &[u8],
    aug: &[u8],
) -> Vec<u8> {
    let data_len: usize = chunks.iter().map(|(_, d)| d.len()).sum();
    let mut b = Vec::with_capacity(
        STEP_FIXED_ENCODED_SIZE_BYTES
            + chunks.len() * CHUNK_ENTRY_ENCODED_SIZE_BYTES
            + ids.len()
            + aug.len()
            + data_len,
    );
    fixed.encode(&mut b, presence);
    for (e, _) in chunks {
        e.encode(&mut b);
    }
    b.extend_from_slice(ids);
    b.extend_from_slice(aug);
    for (_, d) in chunks {
        b.extend_from_slice(d);
    }
    b
}

/// Parses only the fixed part of a step payload (for scanning); `presence` is the file's.
pub fn decode_step_fixed(
    payload: &[u8],
    record_offset: u64,
    presence: ScalarPresence,
) -> Result<StepFixed, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "step record");
    decode_step_fixed_from(&mut c, presence)
}

fn decode_step_fixed_from(
    c: &mut Cursor<'_>,
    presence: ScalarPresence,
) -> Result<StepFixed, FormatError> {
    let flags = c.u32()?;
    if flags & !STEP_FLAG_KEYFRAME != 0 {
        return Err(c.err(format!("unknown step flag bits {flags:#x}")));
    }
    let chunk_count = c.u32()?;
    let chain_start_step = c.u64()?;
    let values = [c.f64()?, c.f64()?, c.f64()?, c.f64()?, c.f64()?];
    let sample_count = c.u32()?;
    let ids_codec = c.u8()?;
    let aug_codec = c.u8()?;
    let absent_mask = c.u8()?;
    c.reserved(1)?;
    let scalars =
        StepScalars::from_stored(values, absent_mask, presence).map_err(|reason| c.err(reason))?;
    let ids_stored_len_bytes = c.u32()?;
    let aug_stored_len_bytes = c.u32()?;
    cap(
        "sample ids per step",
        u64::from(sample_count),
        MAX_SAMPLE_IDS,
    )?;
    if !matches!(ids_codec, BLOB_RAW | BLOB_SHUFFLE4_ZSTD) {
        return Err(c.err(format!("unknown sample id codec {ids_codec}")));
    }
    if !matches!(aug_codec, BLOB_RAW | BLOB_ZSTD) {
        return Err(c.err(format!("unknown augmentation codec {aug_codec}")));
    }
    Ok(StepFixed {
        flags,
        chunk_count,
        chain_start_step,
        scalars,
        sample_count,
        ids_codec,
        aug_codec,
        ids_stored_len_bytes,
        aug_stored_len_bytes,
    })
}

/// Parses a whole step payload; `expected_chunks` comes from the header, `presence` from the
/// prologue.
pub fn decode_step_payload(
    payload: &[u8],
    record_offset: u64,
    expected_chunks: u64,
    presence: ScalarPresence,
) -> Result<StepPayload<'_>, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "step record");
    let fixed = decode_step_fixed_from(&mut c, presence)?;
    if u64::from(fixed.chunk_count) != expected_chunks {
        return Err(c.err(format!(
            "{} chunks, the header implies {expected_chunks}",
            fixed.chunk_count
        )));
    }
    let chunks = decode_chunk_table(&mut c, fixed.chunk_count as usize)?;
    let ids = c.take(fixed.ids_stored_len_bytes as usize)?;
    let aug = c.take(fixed.aug_stored_len_bytes as usize)?;
    let ranges = chunk_ranges(&mut c, &chunks)?;
    c.finish()?;
    let chunk_data = ranges.into_iter().map(|r| &payload[r]).collect();
    Ok(StepPayload {
        fixed,
        chunks,
        ids,
        aug,
        chunk_data,
    })
}

// ---------------------------------------------------------------------------------------------
// Epoch record

/// Encodes an epoch record payload.
pub fn encode_epoch_payload(r: &EpochRecord) -> Result<Vec<u8>, FormatError> {
    let EpochRecord {
        epoch,
        step: _,
        evals,
    } = r;
    cap("evals per epoch record", evals.len() as u64, MAX_EVALS)?;
    let mut b = Vec::new();
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&(evals.len() as u32).to_le_bytes());
    for EvalRecord {
        split,
        loss,
        accuracy,
        samples,
    } in evals
    {
        cap(
            "split name bytes",
            split.len() as u64,
            MAX_TENSOR_NAME_BYTES as u64,
        )?;
        b.extend_from_slice(&(split.len() as u32).to_le_bytes());
        b.extend_from_slice(split.as_bytes());
        b.extend_from_slice(&loss.to_le_bytes());
        b.extend_from_slice(&accuracy.to_le_bytes());
        b.extend_from_slice(&samples.to_le_bytes());
    }
    Ok(b)
}

/// Decodes an epoch record payload (`step` comes from the record header).
pub fn decode_epoch_payload(
    payload: &[u8],
    record_offset: u64,
    step: u64,
) -> Result<EpochRecord, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "epoch record");
    let epoch = c.u32()?;
    let count = c.u32()?;
    cap("evals per epoch record", u64::from(count), MAX_EVALS)?;
    let mut evals = Vec::new();
    for _ in 0..count {
        let len = c.u32()?;
        cap(
            "split name bytes",
            u64::from(len),
            MAX_TENSOR_NAME_BYTES as u64,
        )?;
        let split = std::str::from_utf8(c.take(len as usize)?)
            .map_err(|e| c.err(format!("split name is not UTF-8: {e}")))?
            .to_owned();
        evals.push(EvalRecord {
            split,
            loss: c.f64()?,
            accuracy: c.f64()?,
            samples: c.u64()?,
        });
    }
    c.finish()?;
    Ok(EpochRecord { epoch, step, evals })
}

// ---------------------------------------------------------------------------------------------
// Resume record

/// A parsed resume record payload.
#[derive(Debug)]
pub struct ResumePayload<'a> {
    /// Elements of the buffer vector.
    pub len_elements: u64,
    /// Chunk table (standalone codecs only).
    pub chunks: Vec<ChunkEntry>,
    /// JSON descriptor.
    pub descriptor_json: &'a str,
    /// Stored chunk bytes.
    pub chunk_data: Vec<&'a [u8]>,
}

/// Encodes a resume payload.
pub fn encode_resume_payload(
    len_elements: u64,
    chunks: &[(ChunkEntry, Vec<u8>)],
    descriptor_json: &str,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&len_elements.to_le_bytes());
    b.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    b.extend_from_slice(&(descriptor_json.len() as u32).to_le_bytes());
    for (e, _) in chunks {
        e.encode(&mut b);
    }
    b.extend_from_slice(descriptor_json.as_bytes());
    for (_, d) in chunks {
        b.extend_from_slice(d);
    }
    b
}

/// Decodes a resume payload; `chunk_len_elements` comes from the header.
pub fn decode_resume_payload(
    payload: &[u8],
    record_offset: u64,
    chunk_len_elements: u32,
) -> Result<ResumePayload<'_>, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "resume record");
    let len_elements = c.u64()?;
    cap(
        "resume buffer elements",
        len_elements,
        MAX_RESUME_LEN_ELEMENTS,
    )?;
    let count = c.u32()?;
    let desc_len = c.u32()?;
    cap(
        "resume descriptor bytes",
        u64::from(desc_len),
        MAX_JSON_BYTES,
    )?;
    let expected = len_elements.div_ceil(u64::from(chunk_len_elements.max(1)));
    if u64::from(count) != expected {
        return Err(c.err(format!(
            "{count} chunks for {len_elements} elements, expected {expected}"
        )));
    }
    let chunks = decode_chunk_table(&mut c, count as usize)?;
    if let Some(e) = chunks.iter().find(|e| !e.codec.is_standalone()) {
        return Err(c.err(format!(
            "resume chunks must be standalone, found {}",
            e.codec
        )));
    }
    let descriptor_json = std::str::from_utf8(c.take(desc_len as usize)?)
        .map_err(|e| c.err(format!("descriptor is not UTF-8: {e}")))?;
    let ranges = chunk_ranges(&mut c, &chunks)?;
    c.finish()?;
    let chunk_data = ranges.into_iter().map(|r| &payload[r]).collect();
    Ok(ResumePayload {
        len_elements,
        chunks,
        descriptor_json,
        chunk_data,
    })
}

// ---------------------------------------------------------------------------------------------
// Attachment record

/// A decoded attachment record payload (borrowing the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachmentPayload<'a> {
    /// Name (UTF-8, 1..=256 bytes).
    pub name: &'a str,
    /// Stored SHA-256 of `data` (not checked by the decoder).
    pub sha256: [u8; 32],
    /// Payload offset of the first data byte.
    pub data_payload_offset: usize,
    /// The data.
    pub data: &'a [u8],
}

fn check_attachment_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ATTACHMENT_NAME_BYTES as usize {
        return Err(format!(
            "attachment name must be 1..={MAX_ATTACHMENT_NAME_BYTES} bytes, has {}",
            name.len()
        ));
    }
    Ok(())
}

/// Encodes an attachment record payload: fixed part, name, data.
pub fn encode_attachment_payload(name: &str, data: &[u8]) -> Result<Vec<u8>, FormatError> {
    use sha2::Digest as _;
    check_attachment_name(name).map_err(FormatError::invalid_input)?;
    cap("attachment bytes", data.len() as u64, MAX_ATTACHMENT_BYTES)?;
    let mut b = Vec::with_capacity(ATTACHMENT_FIXED_ENCODED_SIZE_BYTES + name.len() + data.len());
    b.extend_from_slice(&(name.len() as u32).to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&(data.len() as u64).to_le_bytes());
    b.extend_from_slice(&sha2::Sha256::digest(data));
    debug_assert_eq!(b.len(), ATTACHMENT_FIXED_ENCODED_SIZE_BYTES);
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(data);
    Ok(b)
}

/// Decodes an attachment record payload: every length against its cap and the payload, the
/// name UTF-8 and 1..=256 bytes, nothing after the data. The SHA-256 is not checked here.
pub fn decode_attachment_payload(
    payload: &[u8],
    record_offset: u64,
) -> Result<AttachmentPayload<'_>, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "attachment record");
    let name_len = c.u32()?;
    c.reserved(4)?;
    let data_len = c.u64()?;
    let sha256 = c.array::<32>()?;
    if name_len == 0 || name_len > MAX_ATTACHMENT_NAME_BYTES {
        return Err(c.err(format!(
            "attachment name length {name_len} outside 1..={MAX_ATTACHMENT_NAME_BYTES}"
        )));
    }
    cap("attachment bytes", data_len, MAX_ATTACHMENT_BYTES)?;
    let expected = (ATTACHMENT_FIXED_ENCODED_SIZE_BYTES as u64)
        .checked_add(u64::from(name_len))
        .and_then(|v| v.checked_add(data_len));
    if expected != Some(payload.len() as u64) {
        return Err(c.err(format!(
            "name of {name_len} and data of {data_len} bytes do not add up to the payload of {} \
             bytes",
            payload.len()
        )));
    }
    let name = std::str::from_utf8(c.take(name_len as usize)?)
        .map_err(|e| c.err(format!("attachment name is not UTF-8: {e}")))?;
    let data_payload_offset = c.pos();
    let data = c.take(data_len as usize)?;
    c.finish()?;
    Ok(AttachmentPayload {
        name,
        sha256,
        data_payload_offset,
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// Index, footer, trailer

/// One index entry: where a data record is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    /// Offset of the record header.
    pub record_offset: u64,
    /// Whole record length (header, payload, padding).
    pub record_len_bytes: u64,
    /// Step (the record header's step field).
    pub step: u64,
    /// For step records, the first step of its delta chain; otherwise equal to `step`.
    pub chain_start_step: u64,
    /// Record kind byte.
    pub kind: u8,
    /// [`INDEX_FLAG_KEYFRAME`] or 0.
    pub flags: u8,
}

impl IndexEntry {
    /// Record kind, if known.
    pub fn record_kind(&self) -> Option<RecordKind> {
        RecordKind::from_u8(self.kind)
    }

    /// Whether this entry is a step record.
    pub fn is_step(&self) -> bool {
        self.kind == RecordKind::Step as u8
    }

    /// End offset of the record (checked when the entry was validated).
    pub fn end_offset(&self) -> u64 {
        self.record_offset.saturating_add(self.record_len_bytes)
    }
}

/// Encodes an index record payload.
pub fn encode_index_payload(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + entries.len() * INDEX_ENTRY_ENCODED_SIZE_BYTES);
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for IndexEntry {
        record_offset,
        record_len_bytes,
        step,
        chain_start_step,
        kind,
        flags,
    } in entries
    {
        b.extend_from_slice(&record_offset.to_le_bytes());
        b.extend_from_slice(&record_len_bytes.to_le_bytes());
        b.extend_from_slice(&step.to_le_bytes());
        b.extend_from_slice(&chain_start_step.to_le_bytes());
        b.push(*kind);
        b.push(*flags);
        b.extend_from_slice(&[0u8; 6]);
    }
    b
}

/// Decodes an index record payload (structure only; the caller validates the entries against
/// the file).
pub fn decode_index_payload(
    payload: &[u8],
    record_offset: u64,
) -> Result<Vec<IndexEntry>, FormatError> {
    let mut c = Cursor::new(payload, record_offset, "index record");
    let count = c.u64()?;
    let expected = (c.remaining() / INDEX_ENTRY_ENCODED_SIZE_BYTES) as u64;
    if count != expected || !c.remaining().is_multiple_of(INDEX_ENTRY_ENCODED_SIZE_BYTES) {
        return Err(c.err(format!("entry count {count} does not match payload length")));
    }
    let mut entries = Vec::with_capacity(expected as usize);
    for _ in 0..count {
        let record_offset = c.u64()?;
        let record_len_bytes = c.u64()?;
        let step = c.u64()?;
        let chain_start_step = c.u64()?;
        let kind = c.u8()?;
        let flags = c.u8()?;
        c.reserved(6)?;
        if flags & !INDEX_FLAG_KEYFRAME != 0 {
            return Err(c.err(format!("unknown index entry flag bits {flags:#04x}")));
        }
        entries.push(IndexEntry {
            record_offset,
            record_len_bytes,
            step,
            chain_start_step,
            kind,
            flags,
        });
    }
    c.finish()?;
    Ok(entries)
}

/// The footer record payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Footer {
    /// Offset of the index record.
    pub index_record_offset: u64,
    /// Whole length of the index record.
    pub index_record_len_bytes: u64,
    /// Data records (step, epoch, resume) in the file.
    pub data_record_count: u64,
    /// Step records in the file.
    pub step_count: u64,
    /// First step, or [`NO_STEP`].
    pub first_step: u64,
    /// Last step, or [`NO_STEP`].
    pub last_step: u64,
}

impl Footer {
    /// Encodes the 64-byte payload.
    pub fn encode(&self) -> Vec<u8> {
        let Footer {
            index_record_offset,
            index_record_len_bytes,
            data_record_count,
            step_count,
            first_step,
            last_step,
        } = self;
        let mut b = Vec::with_capacity(FOOTER_ENCODED_SIZE_BYTES);
        for v in [
            index_record_offset,
            index_record_len_bytes,
            data_record_count,
            step_count,
            first_step,
            last_step,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8], record_offset: u64) -> Result<Footer, FormatError> {
        let mut c = Cursor::new(payload, record_offset, "footer record");
        let f = Footer {
            index_record_offset: c.u64()?,
            index_record_len_bytes: c.u64()?,
            data_record_count: c.u64()?,
            step_count: c.u64()?,
            first_step: c.u64()?,
            last_step: c.u64()?,
        };
        c.reserved(16)?;
        c.finish()?;
        Ok(f)
    }
}

/// The fixed 32 bytes at the very end of a finished file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the footer record.
    pub footer_record_offset: u64,
    /// Whole length of the footer record.
    pub footer_record_len_bytes: u64,
    /// Format major version (same as the prologue).
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
}

impl Trailer {
    /// Encodes the 32 bytes.
    pub fn encode(&self) -> [u8; TRAILER_ENCODED_SIZE_BYTES] {
        let Trailer {
            footer_record_offset,
            footer_record_len_bytes,
            major,
            minor,
        } = self;
        let mut b = [0u8; TRAILER_ENCODED_SIZE_BYTES];
        b[0..8].copy_from_slice(&footer_record_offset.to_le_bytes());
        b[8..16].copy_from_slice(&footer_record_len_bytes.to_le_bytes());
        b[16..18].copy_from_slice(&major.to_le_bytes());
        b[18..20].copy_from_slice(&minor.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b[24..32].copy_from_slice(&FILE_MAGIC);
        b
    }

    /// Whether the last 8 bytes are the magic (the trailer is then expected to be valid).
    pub fn has_magic(last32: &[u8]) -> bool {
        last32.len() == TRAILER_ENCODED_SIZE_BYTES && last32[24..32] == FILE_MAGIC
    }

    /// Decodes the trailer; `offset` is where it starts.
    pub fn decode(b: &[u8], offset: u64) -> Result<Trailer, FormatError> {
        if !Self::has_magic(b) {
            return Err(FormatError::corrupt(offset, "trailer", "missing end magic"));
        }
        let stored = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        let found = crc32c::crc32c(&b[0..20]);
        if stored != found {
            return Err(FormatError::ChecksumMismatch {
                path: no_path(),
                what: "trailer",
                offset_from_file_start: offset,
                expected: stored,
                found,
            });
        }
        let mut c = Cursor::new(b, offset, "trailer");
        Ok(Trailer {
            footer_record_offset: c.u64()?,
            footer_record_len_bytes: c.u64()?,
            major: c.u16()?,
            minor: c.u16()?,
        })
    }
}
