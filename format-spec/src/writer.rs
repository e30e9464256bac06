//! The append-only writer: one record per `write_*` call, index + footer on `finish`, and
//! recovery of a file whose writer died (`reopen`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::codec::{
    chunk_hash, decode_chunk, encode_chunk, encode_split_streams, shuffle_u32, zstd_bytes,
};
use crate::consts::*;
use crate::error::FormatError;
use crate::reader::Reader;
use crate::records::*;
use crate::types::*;

/// Appends records to a recording. Not finishing (drop, crash) leaves a valid file without
/// footer that [`Reader::open`] reads and [`Writer::reopen`] continues.
///
/// A writer holds a shared advisory lock (`flock`) on the file for its whole life, taken
/// exclusively while [`Writer::reopen`] truncates: readers open the file while it writes, and a
/// second [`Writer::reopen`] of the file fails with [`FormatError::Locked`] naming the holders.
pub struct Writer {
    path: PathBuf,
    /// Holds the writer's lock until the writer is dropped.
    file: File,
    header: Header,
    options: WriterOptions,
    pool: Option<rayon::ThreadPool>,
    /// Length of the file as written so far (every byte before it is a complete record).
    end_offset: u64,
    entries: Vec<IndexEntry>,
    last_step: Option<u64>,
    chain_start: u64,
    /// State of `last_step`, and of `last_step − 1` when that is in the same chain.
    prev: Option<Vec<f32>>,
    prev2: Option<Vec<f32>>,
    /// The base buffer a keyframe set aside (t−1 left the chain), for the next step's base: a
    /// fresh state-sized buffer costs a page fault per 4 KiB.
    spare_base: Option<Vec<f32>>,
    /// Per chunk, the stored size of its latest standalone encoding in the current chain.
    standalone_len: Vec<u64>,
    raw_bytes_total: u64,
    poisoned: bool,
    /// Format version of the file's prologue, repeated in the trailer (a reopened 1.0 file
    /// stays 1.0).
    version: (u16, u16),
    /// How the file stores absent step scalars (a reopened 1.0/1.1 file keeps NaN).
    presence: ScalarPresence,
    /// A step record counted in `end_offset` and `entries` but not yet in the file
    /// ([`WriterOptions::overlap_writes`]): written while the next step encodes.
    pending: Option<PendingRecord>,
    /// The byte buffers of written step records, for the next steps' chunks.
    spare: SpareBuffers,
    /// Counts the steps coded from precomputed residuals: each decodes chunk
    /// `verify_next mod chunk_count` to check it, so every chunk is checked in turn (the short
    /// last chunk first), whatever the keyframe interval.
    verify_next: u64,
}

/// Byte buffers of written step records, reused for the chunks the next steps encode: a fresh
/// buffer per chunk costs a page fault and the zeroing of every page it fills, and giving its
/// pages back to the kernel interrupts every core the encode threads run on, at every step
/// (2,800–3,500 page faults per VGG-11-sized step before).
struct SpareBuffers {
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Two steps' worth of chunks (and their tables).
    max_kept: usize,
}

impl SpareBuffers {
    fn for_chunks(chunk_count: usize) -> Self {
        SpareBuffers {
            buffers: std::sync::Mutex::new(Vec::new()),
            max_kept: 2 * chunk_count + 2,
        }
    }

    /// The pool; a panic elsewhere cannot leave a list of buffers inconsistent, so a poisoned
    /// lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty buffer, with the capacity of a recycled one when there is one.
    fn take(&self) -> Vec<u8> {
        let mut buf = self.lock().pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Keeps `bufs` for reuse, up to `max_kept` in all.
    fn give(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        let mut spare = self.lock();
        for b in bufs {
            if spare.len() >= self.max_kept {
                break;
            }
            spare.push(b);
        }
    }
}

/// The header of a record holding `payload`, and the record's whole length (header, payload,
/// padding), within the format's payload cap.
fn record_header(
    kind: RecordKind,
    flags: u8,
    step: u64,
    payload: &[u8],
) -> Result<(RecordHeader, u64), FormatError> {
    sized_header(RecordHeader::for_payload(kind, flags, step, payload))
}

/// `h` with its record's whole length, within the format's payload cap.
fn sized_header(h: RecordHeader) -> Result<(RecordHeader, u64), FormatError> {
    let total = h.total_len_bytes().ok_or(FormatError::SizeCap {
        what: "record payload_len_bytes",
        value: h.payload_len_bytes,
        cap: MAX_PAYLOAD_BYTES,
    })?;
    cap(
        "record payload_len_bytes",
        h.payload_len_bytes,
        MAX_PAYLOAD_BYTES,
    )?;
    Ok((h, total))
}

/// Pending step records smaller than this are written on the calling thread before the next
/// step encodes (still deferred, but not overlapped).
const OVERLAP_MIN_PAYLOAD_BYTES: usize = 256 << 10;

/// One record's bytes, ready to write: its payload in pieces written back to back (a step's
/// table, then its chunks as encoded, so the chunk bytes are never copied into one buffer).
struct PendingRecord {
    header: [u8; RECORD_HEADER_ENCODED_SIZE_BYTES],
    pieces: Vec<Vec<u8>>,
    pad: usize,
    /// The record's range in the file (offset, length in bytes), for [`start_writeback`] once it
    /// is written; `None` when the writer never syncs (the kernel then writes back as it likes).
    writeback: Option<(u64, u64)>,
}

/// Asks the kernel to start writing `len_bytes` from `offset_from_file_start` to the disk now,
/// without waiting for it (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`). The next
/// `fdatasync` then finds little left to write: a sync at a keyframe waits for the last few
/// records instead of every record since the previous sync, and the disk works while the
/// writer encodes. A hint only: an error here (a file system without it) changes nothing, the
/// sync that follows reports real failures.
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset_from_file_start: u64, len_bytes: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset_from_file_start),
            libc::off64_t::try_from(len_bytes),
        ) else {
            return;
        };
        // SAFETY: a plain syscall on a file descriptor `file` keeps open for the call; it reads
        // no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset_from_file_start, len_bytes);
}

impl PendingRecord {
    fn payload_len_bytes(&self) -> usize {
        self.pieces.iter().map(Vec::len).sum()
    }

    fn write_to(&self, mut file: &File) -> std::io::Result<()> {
        file.write_all(&self.header)?;
        for p in &self.pieces {
            file.write_all(p)?;
        }
        file.write_all(&[0u8; 8][..self.pad])?;
        if let Some((offset, len_bytes)) = self.writeback {
            start_writeback(file, offset, len_bytes);
        }
        Ok(())
    }
}

impl Drop for Writer {
    /// A writer dropped without `finish` leaves its records in the file as a killed one would,
    /// the pending step record too (best effort: an error here has no caller to go to).
    fn drop(&mut self) {
        if let Some(p) = self.pending.take()
            && !self.poisoned
        {
            let _ = p.write_to(&self.file);
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// What one step's encode takes: θ_t, whether it is a forced keyframe, and the residual
/// computed elsewhere with the index of the chunk to check, if any.
#[derive(Clone, Copy)]
struct StepEncode<'a> {
    state: &'a [f32],
    forced: bool,
    step: u64,
    residual: Option<(&'a PrecomputedResidual<'a>, usize)>,
}

/// A chunk decision made by the encoder.
struct EncodedChunk {
    entry: ChunkEntry,
    bytes: Vec<u8>,
    /// Fresh standalone size, if a standalone encoding was computed.
    standalone_len: Option<u64>,
}

fn encode_standalone(
    cur: &[f32],
    level: i32,
    split: bool,
    spare: &SpareBuffers,
) -> Result<(CodecId, Vec<u8>), FormatError> {
    let key_codec = if split {
        CodecId::KeySplit
    } else {
        CodecId::Key
    };
    let mut key = spare.take();
    encode_chunk(key_codec, cur, None, None, level, &mut key)?;
    // Raw fallback when compression saves less than 5 %.
    if (key.len() as u64) * 20 >= (cur.len() as u64 * 4) * 19 {
        // The key attempt's buffer already holds at least 95 % of the raw size.
        key.clear();
        encode_chunk(CodecId::Raw, cur, None, None, level, &mut key)?;
        return Ok((CodecId::Raw, key));
    }
    Ok((key_codec, key))
}

fn finish_chunk(
    codec: CodecId,
    bytes: Vec<u8>,
    cur: &[f32],
    standalone_len: Option<u64>,
) -> EncodedChunk {
    EncodedChunk {
        entry: ChunkEntry {
            codec,
            stored_len_bytes: bytes.len() as u32,
            stored_crc32c: crc32c::crc32c(&bytes),
            reconstructed_xxh3: chunk_hash(cur),
        },
        bytes,
        standalone_len,
    }
}

/// Decodes one chunk coded from a precomputed residual and compares it with the state it
/// stands for, bit for bit: a device that computed another residual than the host would is
/// caught at the first step that samples a wrong chunk, not when the recording is read.
fn verify_chunk(
    codec: CodecId,
    stored: &[u8],
    cur: &[f32],
    prev: &[f32],
    prev2: Option<&[f32]>,
) -> Result<(), String> {
    let mut decoded = vec![0f32; cur.len()];
    decode_chunk(codec, stored, Some(prev), prev2, &mut decoded)
        .map_err(|e| format!("its stored bytes do not decode: {e}"))?;
    let got = bytemuck::cast_slice::<f32, u32>(&decoded);
    let want = bytemuck::cast_slice::<f32, u32>(cur);
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!(
            "element {at} decodes to bits {:#010x}, the state holds {:#010x}",
            got[at], want[at]
        )),
    }
}

fn check_chunk_len(len: usize) -> Result<(), FormatError> {
    // A chunk is at most 2^24 elements, so its stored bytes fit u32 even uncompressed.
    if len as u64 > u64::from(u32::MAX) {
        return Err(FormatError::SizeCap {
            what: "stored chunk bytes",
            value: len as u64,
            cap: u64::from(u32::MAX),
        });
    }
    Ok(())
}

impl Writer {
    /// Creates a new recording; fails if `path` exists.
    pub fn create(
        path: &Path,
        header: Header,
        options: WriterOptions,
    ) -> Result<Writer, FormatError> {
        Writer::create_with_attachments(path, header, options, &[])
    }

    /// Creates a new recording whose first data records are `attachments` (`(name, data)`,
    /// in this order: ATTACHMENT records, SPEC.md §4.9), written and (unless
    /// [`FsyncPolicy::Never`]) synced with the HEADER record before this returns. Names must be
    /// unique, 1..=256 bytes; data at most 4 GiB each. [`Writer::reopen`] keeps them.
    pub fn create_with_attachments(
        path: &Path,
        header: Header,
        options: WriterOptions,
        attachments: &[(&str, &[u8])],
    ) -> Result<Writer, FormatError> {
        header.validate()?;
        cap(
            "attachments",
            attachments.len() as u64,
            MAX_ATTACHMENTS as u64,
        )?;
        for (i, (name, _)) in attachments.iter().enumerate() {
            if attachments[..i].iter().any(|(n, _)| n == name) {
                return Err(FormatError::invalid_input(format!(
                    "attachment name {name:?} given twice"
                )));
            }
        }
        let header_payload = encode_header_payload(&header)?;
        let attachment_payloads = attachments
            .iter()
            .map(|(name, data)| encode_attachment_payload(name, data))
            .collect::<Result<Vec<_>, _>>()?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        // Nothing to truncate in a new file: shared from the start, so a `reopen` elsewhere
        // fails while this writer lives.
        crate::lock::try_shared(&file, path)?;
        let prologue = Prologue::for_header(&header);
        let mut bytes = prologue.encode().to_vec();
        encode_record(RecordKind::Header, 0, NO_STEP, &header_payload, &mut bytes);
        file.write_all(&bytes)
            .map_err(|e| FormatError::io(path, e))?;
        let mut end_offset = bytes.len() as u64;
        let mut entries = Vec::with_capacity(attachments.len());
        for payload in &attachment_payloads {
            let h = RecordHeader::for_payload(
                RecordKind::Attachment,
                RECORD_FLAG_SKIPPABLE,
                NO_STEP,
                payload,
            );
            let total = h.total_len_bytes().ok_or(FormatError::SizeCap {
                what: "record payload_len_bytes",
                value: payload.len() as u64,
                cap: MAX_PAYLOAD_BYTES,
            })?;
            file.write_all(&h.encode())
                .and_then(|()| file.write_all(payload))
                .and_then(|()| file.write_all(&[0u8; 8][..padding_len(payload.len() as u64)]))
                .map_err(|e| FormatError::io(path, e))?;
            entries.push(IndexEntry {
                record_offset: end_offset,
                record_len_bytes: total,
                step: NO_STEP,
                chain_start_step: NO_STEP,
                kind: RecordKind::Attachment as u8,
                flags: 0,
            });
            end_offset += total;
        }
        if options.fsync != FsyncPolicy::Never {
            file.sync_all().map_err(|e| FormatError::io(path, e))?;
        }
        let chunk_count = header.chunk_count() as usize;
        let pool = Self::make_pool(&options)?;
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            header,
            options,
            pool,
            end_offset,
            entries,
            last_step: None,
            chain_start: 0,
            prev: None,
            prev2: None,
            spare_base: None,
            standalone_len: vec![0; chunk_count],
            raw_bytes_total: 0,
            poisoned: false,
            version: (prologue.major, prologue.minor),
            presence: prologue.scalar_presence(),
            pending: None,
            spare: SpareBuffers::for_chunks(chunk_count),
            verify_next: chunk_count.saturating_sub(1) as u64,
        })
    }

    fn make_pool(options: &WriterOptions) -> Result<Option<rayon::ThreadPool>, FormatError> {
        // 0: rayon's global pool; 1: no pool, encoding runs on the writer's own thread.
        if options.threads <= 1 {
            return Ok(None);
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("sgdwalk-enc-{i}"))
            .build()
            .map(Some)
            .map_err(|e| FormatError::invalid_input(format!("cannot build encoder pool: {e}")))
    }

    /// Reopens a file whose writer died or finished: validates it, truncates the torn tail (and
    /// index, footer, trailer), keeps its attachments (they precede every step), and with `keep_through_step = Some(t)` also drops every record
    /// after the last record that belongs to step t, so a resumed run appends exactly what an
    /// uninterrupted run would have. Rebuilds the index and the delta bases from the file.
    pub fn reopen(
        path: &Path,
        options: WriterOptions,
        keep_through_step: Option<u64>,
    ) -> Result<(Writer, RecoveryReport), FormatError> {
        let reader = Reader::open(path)?;
        let unknown_ro = reader.prologue().ro_compat_flags & !KNOWN_RO_COMPAT_FLAGS;
        if unknown_ro != 0 {
            return Err(FormatError::UnsupportedFeature {
                path: path.into(),
                which: "ro_compat",
                flags: unknown_ro,
            });
        }
        let had_footer = reader.is_finished();
        let mut entries = reader.entries().to_vec();
        let mut cut = reader.data_end();
        if let Some(t) = keep_through_step {
            if !reader.has_step(t) {
                return Err(FormatError::StepNotFound { step: t });
            }
            // The last record belonging to t (step, resume or epoch record).
            let last = entries
                .iter()
                .rposition(|e| e.step == t)
                .ok_or(FormatError::StepNotFound { step: t })?;
            entries.truncate(last + 1);
            cut = entries[last].end_offset();
        }
        let header = reader.header().clone();
        let version = (reader.prologue().major, reader.prologue().minor);
        let presence = reader.prologue().scalar_presence();
        let chunk_count = header.chunk_count() as usize;
        let last_step = entries.iter().rev().find(|e| e.is_step()).map(|e| e.step);
        let mut state = Writer::rebuild_bases(&reader, last_step, chunk_count)?;
        let observed_len = reader.committed_len_bytes() + reader.torn_tail_bytes();
        drop(reader);

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        // Exclusive while truncating (no reader may have the cut bytes mapped, no other writer
        // may run), then shared for the writer's life: readers keep opening the file, another
        // writer's exclusive attempt keeps failing. Waits a little for readers that only poll.
        crate::lock::exclusive_within(&file, path, crate::lock::REOPEN_LOCK_WAIT)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len != observed_len {
            // Another writer appended between our read and our lock (and has stopped since).
            return Err(FormatError::Locked {
                path: path.into(),
                holders: Box::new([]),
            });
        }
        file.set_len(cut).map_err(|e| FormatError::io(path, e))?;
        file.sync_all().map_err(|e| FormatError::io(path, e))?;
        crate::lock::downgrade(&file, path)?;
        let mut file = file;
        file.seek(SeekFrom::Start(cut))
            .map_err(|e| FormatError::io(path, e))?;

        let raw_per_state = header.state_len_elements.saturating_mul(4);
        let complete_steps = entries.iter().filter(|e| e.is_step()).count() as u64;
        let report = RecoveryReport {
            complete_steps,
            truncated_bytes: len - cut,
            had_footer,
            last_step,
        };
        let pool = Self::make_pool(&options)?;
        let header_chunk_count = header.chunk_count();
        let spare = SpareBuffers::for_chunks(header_chunk_count as usize);
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            header,
            options,
            pool,
            end_offset: cut,
            entries,
            last_step,
            chain_start: state.chain_start,
            prev: state.prev.take(),
            prev2: state.prev2.take(),
            spare_base: None,
            standalone_len: std::mem::take(&mut state.standalone_len),
            raw_bytes_total: complete_steps.saturating_mul(raw_per_state),
            poisoned: false,
            version,
            presence,
            pending: None,
            spare,
            verify_next: header_chunk_count.saturating_sub(1),
        };
        Ok((writer, report))
    }

    /// Decodes the bases the encoder needs to continue after `last_step`.
    fn rebuild_bases(
        reader: &Reader,
        last_step: Option<u64>,
        chunk_count: usize,
    ) -> Result<Bases, FormatError> {
        let mut bases = Bases {
            chain_start: 0,
            prev: None,
            prev2: None,
            standalone_len: vec![0; chunk_count],
        };
        let Some(last) = last_step else {
            return Ok(bases);
        };
        let chain_start = reader.step_index_entry(last)?.chain_start_step;
        bases.chain_start = chain_start;
        let n = usize::try_from(reader.header().state_len_elements)
            .map_err(|_| FormatError::invalid_input("state too large for this platform"))?;
        let mut prev: Option<Vec<f32>> = None;
        let mut prev2: Option<Vec<f32>> = None;
        // Walk the chain forward, as the reader does, tracking the standalone sizes the
        // uninterrupted writer would have tracked.
        for u in chain_start..=last {
            let mut out = vec![0f32; n];
            let chunks = reader.decode_step_into(u, prev.as_deref(), prev2.as_deref(), &mut out)?;
            for (slot, e) in bases.standalone_len.iter_mut().zip(chunks) {
                if e.codec.is_standalone() {
                    *slot = u64::from(e.stored_len_bytes);
                }
            }
            prev2 = prev;
            prev = Some(out);
        }
        bases.prev = prev;
        bases.prev2 = if last > chain_start { prev2 } else { None };
        Ok(bases)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Last step written.
    pub fn last_step(&self) -> Option<u64> {
        self.last_step
    }

    /// Whether `write_step(step)` would be forced to store a keyframe (first step, after a gap,
    /// or step a multiple of K). The encoder may also promote other steps to keyframes when no
    /// delta pays.
    pub fn is_keyframe_next(&self, step: u64) -> bool {
        match self.last_step {
            None => true,
            Some(last) => {
                last.checked_add(1) != Some(step)
                    || step.is_multiple_of(u64::from(self.header.codec.keyframe_interval))
                    || self.prev.is_none()
            }
        }
    }

    /// An I/O error while writing: a partial record may be on disk, so the writer takes no
    /// more records (`reopen` cuts it).
    fn poison(&mut self, e: std::io::Error) -> FormatError {
        self.poisoned = true;
        FormatError::io(&self.path, e)
    }

    fn check_usable(&self) -> Result<(), FormatError> {
        if self.poisoned {
            return Err(FormatError::WriterPoisoned {
                path: self.path.as_path().into(),
            });
        }
        Ok(())
    }

    /// Writes one record; on an I/O error the writer is poisoned (a partial record may be on
    /// disk; `reopen` cuts it).
    fn write_record(
        &mut self,
        kind: RecordKind,
        flags: u8,
        step: u64,
        payload: &[u8],
    ) -> Result<(u64, u64), FormatError> {
        self.check_usable()?;
        self.write_pending()?;
        let (h, total) = record_header(kind, flags, step, payload)?;
        let pad = padding_len(payload.len() as u64);
        let offset = self.end_offset;
        let res = self
            .file
            .write_all(&h.encode())
            .and_then(|()| self.file.write_all(payload))
            .and_then(|()| self.file.write_all(&[0u8; 8][..pad]));
        res.map_err(|e| self.poison(e))?;
        self.end_offset += total;
        Ok((offset, total))
    }

    /// Writes the pending step record, if any (poisoning the writer on an I/O error).
    fn write_pending(&mut self) -> Result<(), FormatError> {
        if let Some(p) = self.pending.take() {
            if let Err(e) = p.write_to(&self.file) {
                return Err(self.poison(e));
            }
            self.recycle(p);
        }
        Ok(())
    }

    /// Keeps a written record's buffers for the next steps' chunks.
    fn recycle(&self, record: PendingRecord) {
        self.spare.give(record.pieces);
    }

    /// Appends a step record whose payload is `head` followed by the encoded chunks (its CRC
    /// combined from the chunks' own), now or, when `defer`, as the pending record (counted in
    /// the file's length, written while the next step encodes).
    fn put_step_record(
        &mut self,
        step: u64,
        head: Vec<u8>,
        chunks: Vec<EncodedChunk>,
        defer: bool,
    ) -> Result<(u64, u64), FormatError> {
        self.write_pending()?;
        let mut crc = crc32c::crc32c(&head);
        let mut pieces = Vec::with_capacity(chunks.len() + 1);
        pieces.push(head);
        for c in chunks {
            crc = crate::crc::crc32c_combine(crc, c.entry.stored_crc32c, c.bytes.len() as u64);
            pieces.push(c.bytes);
        }
        let mut record = PendingRecord {
            header: [0; RECORD_HEADER_ENCODED_SIZE_BYTES],
            pieces,
            pad: 0,
            writeback: None,
        };
        let payload_len = record.payload_len_bytes() as u64;
        let (h, total) = sized_header(RecordHeader {
            kind: RecordKind::Step as u8,
            flags: 0,
            payload_len_bytes: payload_len,
            step,
            payload_crc32c: crc,
        })?;
        record.header = h.encode();
        record.pad = padding_len(payload_len);
        let offset = self.end_offset;
        record.writeback = (self.options.fsync != FsyncPolicy::Never).then_some((offset, total));
        if defer {
            self.pending = Some(record);
        } else {
            if let Err(e) = record.write_to(&self.file) {
                return Err(self.poison(e));
            }
            self.recycle(record);
        }
        self.end_offset += total;
        Ok((offset, total))
    }

    fn sync(&mut self) -> Result<(), FormatError> {
        self.write_pending()?;
        self.file.sync_data().map_err(|e| self.poison(e))
    }

    /// Encodes and appends step `input.step`. Steps must strictly increase; gaps are allowed
    /// (the step after a gap is a keyframe).
    pub fn write_step(&mut self, input: &StepInput<'_>) -> Result<StepWriteStats, FormatError> {
        self.write_step_with_residual(input, None)
    }

    /// [`Self::write_step`], with the step's residual computed elsewhere (on the training
    /// device): where it fits the step (a delta step whose bases are `residual.base_step` and
    /// `base2_step`, coded with `residual.codec`), the chunks are coded from its streams and
    /// the residual and split passes are skipped; otherwise it is ignored and the step is
    /// encoded from `input.state` ([`StepWriteStats::precomputed`] says which). The stored
    /// bytes decode to `input.state` either way: each chunk's hash is taken from the state (a
    /// reader detects any chunk that decodes to something else), and one chunk per such step,
    /// every chunk in turn, is decoded and compared with it here. A residual that fails that
    /// check, or whose streams are malformed, is refused with
    /// [`FormatError::PrecomputedResidual`] before anything is written.
    pub fn write_step_with_residual(
        &mut self,
        input: &StepInput<'_>,
        residual: Option<&PrecomputedResidual<'_>>,
    ) -> Result<StepWriteStats, FormatError> {
        self.check_usable()?;
        let step = input.step;
        if step == NO_STEP {
            return Err(FormatError::invalid_input("step u64::MAX is reserved"));
        }
        if let Some(last) = self.last_step
            && step <= last
        {
            return Err(FormatError::NotIncreasing {
                step,
                last_step: last,
            });
        }
        if input.state.len() as u64 != self.header.state_len_elements {
            return Err(FormatError::invalid_input(format!(
                "step {step}: state has {} elements, the layout {}",
                input.state.len(),
                self.header.state_len_elements
            )));
        }
        cap(
            "sample ids per step",
            input.sample_ids.len() as u64,
            MAX_SAMPLE_IDS,
        )?;
        let aug_len = (input.sample_ids.len() as u64)
            .checked_mul(u64::from(self.header.augmentation_bytes_per_sample))
            .ok_or_else(|| FormatError::invalid_input("augmentation length overflows"))?;
        if input.augmentation.len() as u64 != aug_len {
            return Err(FormatError::invalid_input(format!(
                "step {step}: {} augmentation bytes, expected {aug_len} ({} ids × {})",
                input.augmentation.len(),
                input.sample_ids.len(),
                self.header.augmentation_bytes_per_sample
            )));
        }
        let forced = self.is_keyframe_next(step);
        let residual = residual.filter(|r| !forced && self.residual_fits(r));
        let encode_started = std::time::Instant::now();
        let check = (self.verify_next % self.header.chunk_count().max(1)) as usize;
        let chunks = self.encode_state_writing_pending(StepEncode {
            state: input.state,
            forced,
            step,
            residual: residual.map(|r| (r, check)),
        })?;
        if residual.is_some() {
            self.verify_next = self.verify_next.wrapping_add(1);
        }
        let encode_time = encode_started.elapsed();
        let keyframe = forced || chunks.iter().all(|c| c.entry.codec.is_standalone());
        let chain_start = if keyframe { step } else { self.chain_start };

        let level = self.header.codec.zstd_level;
        let (ids_codec, ids) = if input.sample_ids.is_empty() {
            (BLOB_RAW, Vec::new())
        } else {
            let z = zstd_bytes(&shuffle_u32(input.sample_ids), level)?;
            if z.len() < input.sample_ids.len() * 4 {
                (BLOB_SHUFFLE4_ZSTD, z)
            } else {
                (
                    BLOB_RAW,
                    input
                        .sample_ids
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                )
            }
        };
        let (aug_codec, aug) = if input.augmentation.is_empty() {
            (BLOB_RAW, Vec::new())
        } else {
            let z = zstd_bytes(input.augmentation, level)?;
            if z.len() < input.augmentation.len() {
                (BLOB_ZSTD, z)
            } else {
                (BLOB_RAW, input.augmentation.to_vec())
            }
        };
        let fixed = StepFixed {
            flags: if keyframe { STEP_FLAG_KEYFRAME } else { 0 },
            chunk_count: chunks.len() as u32,
            chain_start_step: chain_start,
            scalars: input.scalars,
            sample_count: input.sample_ids.len() as u32,
            ids_codec,
            aug_codec,
            ids_stored_len_bytes: ids.len() as u32,
            aug_stored_len_bytes: aug.len() as u32,
        };
        let parts: Vec<(ChunkEntry, Vec<u8>)> =
            chunks.iter().map(|c| (c.entry, Vec::new())).collect();
        // The table, ids and augmentation; the chunk bytes follow as they are.
        let head = encode_step_payload(self.presence, &fixed, &parts, &ids, &aug);
        let standalone: Vec<Option<u64>> = chunks.iter().map(|c| c.standalone_len).collect();
        let defer = self.options.overlap_writes
            && match self.options.fsync {
                FsyncPolicy::Never => true,
                FsyncPolicy::EveryKeyframe => !keyframe,
                FsyncPolicy::EveryRecord => false,
            };
        let (offset, total) = self.put_step_record(step, head, chunks, defer)?;
        self.entries.push(IndexEntry {
            record_offset: offset,
            record_len_bytes: total,
            step,
            chain_start_step: chain_start,
            kind: RecordKind::Step as u8,
            flags: if keyframe { INDEX_FLAG_KEYFRAME } else { 0 },
        });
        match self.options.fsync {
            FsyncPolicy::EveryRecord => self.sync()?,
            FsyncPolicy::EveryKeyframe if keyframe => self.sync()?,
            _ => {}
        }

        // Advance the bases (reusing the oldest buffer).
        for (slot, len) in self.standalone_len.iter_mut().zip(standalone) {
            if let Some(len) = len {
                *slot = len;
            }
        }
        let mut buf = self
            .prev2
            .take()
            .or_else(|| self.spare_base.take())
            .unwrap_or_default();
        if keyframe {
            // t−1 is outside the new chain: pred2 must not reach back across a keyframe.
            self.spare_base = self.prev.take();
        } else {
            self.prev2 = self.prev.take();
        }
        self.copy_into_base(&mut buf, input.state);
        self.prev = Some(buf);
        self.last_step = Some(step);
        self.chain_start = chain_start;
        let raw_bytes = self.header.state_len_elements.saturating_mul(4);
        self.raw_bytes_total = self.raw_bytes_total.saturating_add(raw_bytes);
        Ok(StepWriteStats {
            raw_bytes,
            stored_bytes: total,
            keyframe,
            encode_time,
            precomputed: residual.is_some(),
        })
    }

    /// Whether a precomputed residual is the one this delta step (not a keyframe, so it follows
    /// `last_step`) would compute: the same codec against the same bases, one entry per chunk.
    fn residual_fits(&self, r: &PrecomputedResidual<'_>) -> bool {
        let codec = &self.header.codec;
        // prev2, when present, is θ_{last−1}: a gap starts a new chain.
        let prev2_step = self
            .prev2
            .as_ref()
            .and_then(|_| self.last_step?.checked_sub(1));
        let expected = codec.delta_codec.effective(prev2_step.is_some()).split();
        codec.split_streams
            && self.prev.is_some()
            && self.last_step == Some(r.base_step)
            && r.codec == expected
            && (r.codec.residual() != CodecId::Pred2 || r.base2_step == prev2_step)
            && r.chunks.len() as u64 == self.header.chunk_count()
    }

    /// Copies `state` into `base` (a state-sized buffer once the first step is past), in
    /// parallel over chunks: a serial copy of a large state costs as much as a fifth of its
    /// parallel encode.
    fn copy_into_base(&self, base: &mut Vec<f32>, state: &[f32]) {
        if base.len() != state.len() {
            base.clear();
            base.resize(state.len(), 0.0);
        }
        if self.options.threads == 1 {
            base.copy_from_slice(state);
            return;
        }
        let cl = self.header.codec.chunk_len_elements as usize;
        self.on_pool(|| {
            base.par_chunks_mut(cl)
                .zip(state.par_chunks(cl))
                .for_each(|(dst, src)| dst.copy_from_slice(src));
        });
    }

    /// Runs `work` (rayon work) on the writer's pool, or on rayon's global pool without one.
    fn on_pool<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }

    /// [`Self::encode_state`], with the pending step record (if any) written to the file
    /// meanwhile on a second thread.
    fn encode_state_writing_pending(
        &mut self,
        job: StepEncode<'_>,
    ) -> Result<Vec<EncodedChunk>, FormatError> {
        // Small records (or none): starting a thread costs more than the write it would hide.
        let Some(previous) = self
            .pending
            .take_if(|p| p.payload_len_bytes() >= OVERLAP_MIN_PAYLOAD_BYTES)
        else {
            self.write_pending()?;
            return self.encode_state(job);
        };
        let (chunks, written) = std::thread::scope(|s| {
            let file = &self.file;
            let writing = s.spawn(move || previous.write_to(file).map(|()| previous));
            let chunks = self.encode_state(job);
            (chunks, writing.join())
        });
        let written = written
            .unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the thread writing the previous step record panicked",
                ))
            })
            .map_err(|e| self.poison(e))?;
        self.recycle(written);
        chunks
    }

    /// Encodes all chunks of a state in parallel, delta chunks from `residual`'s streams when
    /// given (it fits the step: [`Self::residual_fits`]), decoding the chunk given with it to
    /// check it.
    fn encode_state(&self, job: StepEncode<'_>) -> Result<Vec<EncodedChunk>, FormatError> {
        let StepEncode {
            state,
            forced,
            step,
            residual,
        } = job;
        let cl = self.header.codec.chunk_len_elements as usize;
        let level = self.header.codec.zstd_level;
        let delta_codec = self.header.codec.delta_codec;
        let split = self.header.codec.split_streams;
        let prev = if forced { None } else { self.prev.as_deref() };
        let prev2 = if forced { None } else { self.prev2.as_deref() };
        let standalone_len = &self.standalone_len;
        let spare = &self.spare;
        let encode_one = |(i, cur): (usize, &[f32])| -> Result<EncodedChunk, FormatError> {
            let range = i * cl..i * cl + cur.len();
            let Some(p) = prev.map(|p| &p[range.clone()]) else {
                let (codec, bytes) = encode_standalone(cur, level, split, spare)?;
                let len = bytes.len() as u64;
                return Ok(finish_chunk(codec, bytes, cur, Some(len)));
            };
            let p2 = prev2.map(|p| &p[range]);
            let codec = delta_codec.effective(p2.is_some());
            let codec = if split { codec.split() } else { codec };
            let mut delta = spare.take();
            match residual.map(|(r, check)| (&r.chunks[i], check == i)) {
                Some((pre, check)) => {
                    let refused = |reason: String| FormatError::PrecomputedResidual {
                        step,
                        chunk: i as u32,
                        reason: reason.into(),
                    };
                    encode_split_streams(codec, pre.mu_q8, pre.streams, cur.len(), &mut delta)
                        .map_err(|e| refused(e.to_string()))?;
                    if check {
                        verify_chunk(codec, &delta, cur, p, p2).map_err(refused)?;
                    }
                }
                None => {
                    encode_chunk(codec, cur, Some(p), p2, level, &mut delta)?;
                }
            }
            check_chunk_len(delta.len())?;
            // A delta that is not clearly smaller than the chunk's last standalone size
            // may not pay: encode standalone too and keep it if the delta exceeds 0.9 × it.
            let last_key = standalone_len.get(i).copied().unwrap_or(0);
            if (delta.len() as u64) * 10 > last_key * 9 {
                let (scodec, sbytes) = encode_standalone(cur, level, split, spare)?;
                let slen = sbytes.len() as u64;
                if (delta.len() as u64) * 10 > slen * 9 {
                    spare.give([delta]);
                    return Ok(finish_chunk(scodec, sbytes, cur, Some(slen)));
                }
                spare.give([sbytes]);
                return Ok(finish_chunk(codec, delta, cur, Some(slen)));
            }
            Ok(finish_chunk(codec, delta, cur, None))
        };
        // One thread: encode inline on the caller's thread, with no hand-off to a pool thread
        // (on a busy machine each hand-off can wait a scheduler time slice).
        if self.options.threads == 1 {
            return state.chunks(cl).enumerate().map(encode_one).collect();
        }
        self.on_pool(|| {
            state
                .par_chunks(cl)
                .enumerate()
                .map(encode_one)
                .collect::<Result<Vec<_>, _>>()
        })
    }

    /// Appends an epoch record.
    pub fn write_epoch(&mut self, record: &EpochRecord) -> Result<(), FormatError> {
        self.check_usable()?;
        if record.step == NO_STEP {
            return Err(FormatError::invalid_input("step u64::MAX is reserved"));
        }
        let payload = encode_epoch_payload(record)?;
        let (offset, total) = self.write_record(RecordKind::Epoch, 0, record.step, &payload)?;
        self.push_plain_entry(RecordKind::Epoch, offset, total, record.step);
        if self.options.fsync == FsyncPolicy::EveryRecord {
            self.sync()?;
        }
        Ok(())
    }

    fn push_plain_entry(&mut self, kind: RecordKind, offset: u64, total: u64, step: u64) {
        self.entries.push(IndexEntry {
            record_offset: offset,
            record_len_bytes: total,
            step,
            chain_start_step: step,
            kind: kind as u8,
            flags: 0,
        });
    }

    /// Appends optimizer state for resuming at `step` (a step already written): buffers as f32
    /// (chunked like states, standalone codecs) plus a JSON descriptor.
    pub fn write_resume_state(
        &mut self,
        step: u64,
        buffers: &[f32],
        descriptor_json: &str,
    ) -> Result<(), FormatError> {
        self.check_usable()?;
        if !self.entries.iter().any(|e| e.is_step() && e.step == step) {
            return Err(FormatError::StepNotFound { step });
        }
        cap(
            "resume buffer elements",
            buffers.len() as u64,
            MAX_RESUME_LEN_ELEMENTS,
        )?;
        cap(
            "resume descriptor bytes",
            descriptor_json.len() as u64,
            MAX_JSON_BYTES,
        )?;
        let cl = self.header.codec.chunk_len_elements as usize;
        let level = self.header.codec.zstd_level;
        let split = self.header.codec.split_streams;
        let chunks = self.on_pool(|| {
            buffers
                .par_chunks(cl)
                .map(|cur| {
                    let (codec, bytes) = encode_standalone(cur, level, split, &self.spare)?;
                    Ok(finish_chunk(codec, bytes, cur, None))
                })
                .collect::<Result<Vec<_>, FormatError>>()
        })?;
        let parts: Vec<(ChunkEntry, Vec<u8>)> =
            chunks.into_iter().map(|c| (c.entry, c.bytes)).collect();
        let payload = encode_resume_payload(buffers.len() as u64, &parts, descriptor_json);
        // The payload holds a copy: the chunk buffers go back to the steps' pool.
        self.spare.give(parts.into_iter().map(|(_, bytes)| bytes));
        let (offset, total) = self.write_record(RecordKind::Resume, 0, step, &payload)?;
        self.push_plain_entry(RecordKind::Resume, offset, total, step);
        if self.options.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (a no-op under [`FsyncPolicy::Never`]).
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.check_usable()?;
        self.write_pending()?;
        self.file
            .flush()
            .map_err(|e| FormatError::io(&self.path, e))?;
        if self.options.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes the index record, then (after the index is durable) the footer and trailer.
    pub fn finish(mut self) -> Result<WriteSummary, FormatError> {
        self.check_usable()?;
        let index_payload = encode_index_payload(&self.entries);
        let (index_offset, index_len) =
            self.write_record(RecordKind::Index, 0, NO_STEP, &index_payload)?;
        if self.options.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        let steps: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.is_step())
            .map(|e| e.step)
            .collect();
        let footer = Footer {
            index_record_offset: index_offset,
            index_record_len_bytes: index_len,
            data_record_count: self.entries.len() as u64,
            step_count: steps.len() as u64,
            first_step: steps.first().copied().unwrap_or(NO_STEP),
            last_step: steps.last().copied().unwrap_or(NO_STEP),
        };
        let (footer_offset, footer_len) =
            self.write_record(RecordKind::Footer, 0, NO_STEP, &footer.encode())?;
        let trailer = Trailer {
            footer_record_offset: footer_offset,
            footer_record_len_bytes: footer_len,
            major: self.version.0,
            minor: self.version.1,
        };
        self.file
            .write_all(&trailer.encode())
            .map_err(|e| FormatError::io(&self.path, e))?;
        self.end_offset += TRAILER_ENCODED_SIZE_BYTES as u64;
        if self.options.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(WriteSummary {
            steps: footer.step_count,
            raw_bytes: self.raw_bytes_total,
            file_bytes: self.end_offset,
        })
    }
}

struct Bases {
    chain_start: u64,
    prev: Option<Vec<f32>>,
    prev2: Option<Vec<f32>>,
    standalone_len: Vec<u64>,
}
