//! The memory-mapped reader: random access to any step, sequential pair access through a small
//! LRU cache, and following a file that is still being written.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use crate::codec::{chunk_hash, decode_chunk, unshuffle_u32, unzstd_bytes};
use crate::consts::*;
use crate::error::FormatError;
use crate::records::*;
use crate::scan::{
    Opened, PayloadCrc, check_payload_crc, open_bytes, payload_crc_matches, read_indexed_record,
    read_indexed_record_with, scan_records,
};
use crate::types::{AttachmentInfo, CodecId, EpochRecord, Header, StepInfo};

/// Maps the first `len_bytes` of `file` read-only.
#[allow(unsafe_code)]
fn map_prefix(file: &File, len_bytes: u64, path: &Path) -> Result<Mmap, FormatError> {
    let len = usize::try_from(len_bytes).map_err(|_| FormatError::SizeCap {
        what: "file length",
        value: len_bytes,
        cap: usize::MAX as u64,
    })?;
    // SAFETY: the map is only sound while nobody shrinks the mapped range. Recordings are
    // append-only; the one operation that truncates (`Writer::reopen`) first takes an exclusive
    // advisory lock, which fails while this process holds the shared lock taken in
    // `Reader::open` (and holds it only until it has truncated). Only bytes that existed when the length was observed are mapped.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }.map_err(|e| FormatError::io(path, e))
}

/// Decoded states kept for sequential access; capacity 4 covers pair access with pred2
/// (t−1, t, t+1 plus the one being built).
struct StateCache {
    capacity: usize,
    /// Most recently used last.
    items: Vec<(u64, Arc<Vec<f32>>)>,
}

impl StateCache {
    fn get(&mut self, step: u64) -> Option<Arc<Vec<f32>>> {
        let i = self.items.iter().position(|(s, _)| *s == step)?;
        let item = self.items.remove(i);
        let state = Arc::clone(&item.1);
        self.items.push(item);
        Some(state)
    }

    fn peek(&self, step: u64) -> Option<&Arc<Vec<f32>>> {
        self.items.iter().find(|(s, _)| *s == step).map(|(_, v)| v)
    }

    /// Caches `state`; returns the state it evicts, if any.
    fn insert(&mut self, step: u64, state: Arc<Vec<f32>>) -> Option<Arc<Vec<f32>>> {
        self.items.retain(|(s, _)| *s != step);
        let evicted = (self.items.len() >= self.capacity).then(|| self.items.remove(0).1);
        self.items.push((step, state));
        evicted
    }
}

/// Read access to a recording (finished or not). `Send`; not `Sync` (the cache is mutable).
pub struct Reader {
    path: PathBuf,
    file: File,
    map: Mmap,
    opened: Opened,
    /// Sorted step numbers and, in parallel, their index into `opened.entries`.
    steps: Vec<u64>,
    step_entry: Vec<usize>,
    /// O(1) lookup when steps are dense enough: `dense[step - steps[0]]` = position in `steps`.
    dense: Vec<u32>,
    cache: StateCache,
    /// A state buffer nobody else holds any more, decoded into next: a fresh zeroed
    /// allocation of a large state costs a pass over it on every step of a sequential read.
    spare: Option<Vec<f32>>,
    /// Decodes done by `state` (for tests of the cache policy).
    decoded_steps: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("steps", &self.steps.len())
            .field("finished", &self.opened.footer.is_some())
            .finish()
    }
}

impl Reader {
    /// Opens a recording read-only. Works on a file whose writer was killed: every complete
    /// record is used and a torn tail is ignored (see [`Reader::torn_tail_bytes`]).
    pub fn open(path: &Path) -> Result<Reader, FormatError> {
        // Opening a folder works on Unix; mapping it then fails with an obscure "no such device".
        if path.is_dir() {
            return Err(FormatError::NotAFile { path: path.into() });
        }
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        crate::lock::try_shared(&file, path)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len < PROLOGUE_ENCODED_SIZE_BYTES as u64 {
            let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
            // Always an error: too short for a prologue.
            Prologue::decode(&bytes, len).map_err(|e| e.with_path(path))?;
            return Err(FormatError::Truncated {
                path: path.into(),
                offset_from_file_start: 0,
                needed_bytes: PROLOGUE_ENCODED_SIZE_BYTES as u64,
                file_len_bytes: len,
            });
        }
        let map = map_prefix(&file, len, path)?;
        let opened = open_bytes(&map).map_err(|e| e.with_path(path))?;
        let mut reader = Reader {
            path: path.to_path_buf(),
            file,
            map,
            opened,
            steps: Vec::new(),
            step_entry: Vec::new(),
            dense: Vec::new(),
            cache: StateCache {
                capacity: 4,
                items: Vec::new(),
            },
            spare: None,
            decoded_steps: 0,
        };
        reader.remap_committed()?;
        reader.rebuild_step_lookup();
        Ok(reader)
    }

    /// Maps only the committed prefix (drops a torn tail from the map).
    fn remap_committed(&mut self) -> Result<(), FormatError> {
        if (self.map.len() as u64) != self.opened.scan_end {
            self.map = map_prefix(&self.file, self.opened.scan_end, &self.path)?;
        }
        Ok(())
    }

    fn rebuild_step_lookup(&mut self) {
        self.steps.clear();
        self.step_entry.clear();
        for (i, e) in self.opened.entries.iter().enumerate() {
            if e.is_step() {
                self.steps.push(e.step);
                self.step_entry.push(i);
            }
        }
        self.dense.clear();
        if let (Some(&first), Some(&last)) = (self.steps.first(), self.steps.last()) {
            let span = last - first + 1;
            // Dense table only when it costs at most ~4 slots per step.
            if span
                <= (self.steps.len() as u64)
                    .saturating_mul(4)
                    .saturating_add(1024)
            {
                self.dense = vec![u32::MAX; span as usize];
                for (pos, s) in self.steps.iter().enumerate() {
                    self.dense[(s - first) as usize] = pos as u32;
                }
            }
        }
    }

    /// Follows a growing file: scans records appended since the last call. Returns whether new
    /// steps appeared. A partially written record at the end is left for the next call.
    pub fn refresh(&mut self) -> Result<bool, FormatError> {
        if self.opened.footer.is_some() {
            return Ok(false);
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| FormatError::io(&self.path, e))?
            .len();
        if len < self.opened.scan_end {
            return Err(
                FormatError::corrupt(len, "file", "file shrank while being read")
                    .with_path(&self.path),
            );
        }
        if len == self.opened.scan_end {
            return Ok(false);
        }
        let map = map_prefix(&self.file, len, &self.path)?;
        let before = self.steps.len();
        let mut chain = self.opened.chain;
        let mut attachments = self.opened.attachments.clone();
        let scan = scan_records(
            &map,
            self.opened.scan_end,
            &self.opened.header,
            self.opened.prologue.scalar_presence(),
            &mut chain,
            &mut attachments,
            false,
        )
        .map_err(|e| e.with_path(&self.path))?;
        self.map = map;
        self.opened.chain = chain;
        self.opened.attachments = attachments;
        self.opened.entries.extend(scan.entries);
        if scan.data_end > self.opened.scan_end {
            self.opened.data_end = scan.data_end;
        }
        self.opened.scan_end = scan.scan_end;
        self.opened.torn_tail_bytes = scan.torn_tail_bytes;
        if scan.saw_footer && scan.torn_tail_bytes == TRAILER_ENCODED_SIZE_BYTES as u64 {
            // The writer finished: reopen through the trailer to validate footer and index.
            let opened = open_bytes(&self.map).map_err(|e| e.with_path(&self.path))?;
            self.opened = opened;
        }
        self.remap_committed()?;
        self.rebuild_step_lookup();
        Ok(self.steps.len() > before)
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.opened.header
    }

    /// The prologue (version, feature flags, writer version).
    pub fn prologue(&self) -> &Prologue {
        &self.opened.prologue
    }

    /// Path the reader was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has a valid footer (the writer called `finish`).
    pub fn is_finished(&self) -> bool {
        self.opened.footer.is_some()
    }

    /// Bytes after the last complete record that were ignored (0 for a finished file).
    pub fn torn_tail_bytes(&self) -> u64 {
        self.opened.torn_tail_bytes
    }

    /// Length of the committed prefix (the mapped bytes).
    pub fn committed_len_bytes(&self) -> u64 {
        self.opened.scan_end
    }

    /// End of the last data record (where a writer would continue).
    pub(crate) fn data_end(&self) -> u64 {
        self.opened.data_end
    }

    pub(crate) fn header_end(&self) -> u64 {
        self.opened.header_end
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The attachments (ATTACHMENT records, format 1.1) in file order; empty for a 1.0 file.
    pub fn attachments(&self) -> &[AttachmentInfo] {
        &self.opened.attachments
    }

    /// The data of the attachment `name` (borrowed from the memory map), after checking its
    /// SHA-256 against the one stored in its record ([`FormatError::AttachmentChecksumMismatch`]
    /// if they differ); `None` if the file has no attachment of that name.
    pub fn attachment(&self, name: &str) -> Result<Option<&[u8]>, FormatError> {
        use sha2::Digest as _;
        let Some(a) = self.opened.attachments.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        // The record was validated when the file was opened: its data lies in the map.
        let data = usize::try_from(a.data_offset)
            .ok()
            .zip(usize::try_from(a.len_bytes).ok())
            .and_then(|(start, len)| self.map.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                FormatError::corrupt(
                    a.record_offset,
                    "attachment record",
                    "data lies outside the file",
                )
                .with_path(&self.path)
            })?;
        let found: [u8; 32] = sha2::Sha256::digest(data).into();
        if found != a.sha256 {
            return Err(FormatError::AttachmentChecksumMismatch {
                path: self.path.as_path().into(),
                name: a.name.as_str().into(),
                offset_from_file_start: a.record_offset,
                sha256: Box::new([a.sha256, found]),
            });
        }
        Ok(Some(data))
    }

    /// Every data record (step, epoch, resume, attachment) in file order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.opened.entries
    }

    /// Sorted step numbers present.
    pub fn steps(&self) -> &[u64] {
        &self.steps
    }

    /// Number of state decodes `state`/`state_into` performed (cache misses along the chain).
    pub fn decoded_steps(&self) -> u64 {
        self.decoded_steps
    }

    fn step_pos(&self, step: u64) -> Option<usize> {
        let first = *self.steps.first()?;
        if !self.dense.is_empty() {
            let i = step.checked_sub(first)?;
            let pos = *self.dense.get(usize::try_from(i).ok()?)?;
            return (pos != u32::MAX).then_some(pos as usize);
        }
        self.steps.binary_search(&step).ok()
    }

    /// Whether `step` is present.
    pub fn has_step(&self, step: u64) -> bool {
        self.step_pos(step).is_some()
    }

    /// Every t such that t and t+1 are both present.
    pub fn consecutive_pairs(&self) -> Vec<u64> {
        self.steps
            .windows(2)
            .filter(|w| w[1] == w[0] + 1)
            .map(|w| w[0])
            .collect()
    }

    pub(crate) fn step_index_entry(&self, step: u64) -> Result<&IndexEntry, FormatError> {
        let pos = self
            .step_pos(step)
            .ok_or(FormatError::StepNotFound { step })?;
        Ok(&self.opened.entries[self.step_entry[pos]])
    }

    /// Reads and validates the step record of `step`.
    pub(crate) fn step_payload(
        &self,
        step: u64,
    ) -> Result<(IndexEntry, StepPayload<'_>), FormatError> {
        let entry = *self.step_index_entry(step)?;
        let (_, payload) =
            read_indexed_record(&self.map, &entry).map_err(|e| e.with_path(&self.path))?;
        let p = self
            .parse_step_payload(&entry, payload)
            .map_err(|e| e.with_path(&self.path))?;
        Ok((entry, p))
    }

    /// Parses a step payload and checks its chain fields against the index.
    fn parse_step_payload<'a>(
        &self,
        entry: &IndexEntry,
        payload: &'a [u8],
    ) -> Result<StepPayload<'a>, FormatError> {
        let p = decode_step_payload(
            payload,
            entry.record_offset,
            self.opened.header.chunk_count(),
            self.opened.prologue.scalar_presence(),
        )?;
        if p.fixed.chain_start_step != entry.chain_start_step
            || p.fixed.is_keyframe() != (entry.flags & INDEX_FLAG_KEYFRAME != 0)
        {
            return Err(FormatError::corrupt(
                entry.record_offset,
                "step record",
                "chain fields differ from the index",
            ));
        }
        Ok(p)
    }

    /// Ids, augmentation, scalars and sizes of one step (no state decode).
    pub fn step_info(&self, step: u64) -> Result<StepInfo, FormatError> {
        let (entry, p) = self.step_payload(step)?;
        let corrupt = |reason: String| {
            FormatError::corrupt(entry.record_offset, "step record", reason).with_path(&self.path)
        };
        let n = p.fixed.sample_count as usize;
        let ids_raw_len = n * 4;
        let sample_ids = match p.fixed.ids_codec {
            BLOB_RAW if p.ids.len() == ids_raw_len => unshuffle_raw_u32(p.ids),
            BLOB_SHUFFLE4_ZSTD => {
                let planes = unzstd_bytes(p.ids, ids_raw_len)
                    .map_err(|e| corrupt(format!("sample ids: {e}")))?;
                unshuffle_u32(&planes, n)
            }
            _ => return Err(corrupt("sample ids have the wrong stored length".into())),
        };
        let aug_len = u64::from(p.fixed.sample_count)
            .checked_mul(u64::from(self.opened.header.augmentation_bytes_per_sample))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| corrupt("augmentation length overflows".into()))?;
        let augmentation = match p.fixed.aug_codec {
            BLOB_RAW if p.aug.len() == aug_len => p.aug.to_vec(),
            BLOB_ZSTD => {
                unzstd_bytes(p.aug, aug_len).map_err(|e| corrupt(format!("augmentation: {e}")))?
            }
            _ => return Err(corrupt("augmentation has the wrong stored length".into())),
        };
        Ok(StepInfo {
            step,
            sample_ids,
            augmentation,
            scalars: p.fixed.scalars,
            keyframe: p.fixed.is_keyframe(),
            stored_bytes: entry.record_len_bytes,
        })
    }

    /// The chunk table of a step (codecs and sizes), without decoding.
    pub fn chunk_table(&self, step: u64) -> Result<Vec<ChunkEntry>, FormatError> {
        Ok(self.step_payload(step)?.1.chunks)
    }

    /// Keeps `state`'s buffer for the next decode if no one else holds it.
    fn keep_spare(&mut self, state: Option<Arc<Vec<f32>>>) {
        if let Some(v) = state.and_then(|a| Arc::try_unwrap(a).ok()) {
            self.spare = Some(v);
        }
    }

    /// The state θ_step, bit-exact; every chunk hash along the chain is verified. Decodes from
    /// the step's keyframe, or from the latest cached state of the same chain.
    pub fn state(&mut self, step: u64) -> Result<Arc<Vec<f32>>, FormatError> {
        if let Some(s) = self.cache.get(step) {
            return Ok(s);
        }
        let chain_start = self.step_index_entry(step)?.chain_start_step;
        // Best start: the latest cached s in [chain_start, step) whose predecessor (needed by
        // pred2 for s+1) is cached too, or which is the chain start itself.
        let start = self
            .cache
            .items
            .iter()
            .map(|(s, _)| *s)
            .filter(|&s| s >= chain_start && s < step)
            .filter(|&s| s == chain_start || self.cache.peek(s - 1).is_some())
            .max();
        let (mut prev2, mut prev, from) = match start {
            Some(s) => {
                let p = self.cache.peek(s).cloned();
                let p2 = if s > chain_start {
                    self.cache.peek(s - 1).cloned()
                } else {
                    None
                };
                (p2, p, s + 1)
            }
            None => (None, None, chain_start),
        };
        let n = usize::try_from(self.opened.header.state_len_elements).map_err(|_| {
            FormatError::SizeCap {
                what: "state length",
                value: self.opened.header.state_len_elements,
                cap: usize::MAX as u64,
            }
        })?;
        for u in from..=step {
            // Every element is overwritten: decoding fills each chunk's whole range (its hash is
            // checked over it) or fails.
            let mut out = match self.spare.take() {
                Some(v) if v.len() == n => v,
                _ => vec![0f32; n],
            };
            self.decode_step_into(
                u,
                prev.as_deref().map(|v| v.as_slice()),
                prev2.as_deref().map(|v| v.as_slice()),
                &mut out,
            )?;
            self.decoded_steps += 1;
            let out = Arc::new(out);
            if u + 2 > step {
                // Keep the last two: the pair (t, t+1) and the base pred2 needs for t+2.
                let evicted = self.cache.insert(u, Arc::clone(&out));
                self.keep_spare(evicted);
            }
            let dropped = std::mem::replace(&mut prev2, prev.replace(out));
            self.keep_spare(dropped);
        }
        prev.ok_or(FormatError::StepNotFound { step })
    }

    /// The file offset of θ_`step` stored as plain little-endian `f32` words, when every chunk
    /// of the step is stored raw (codec 0) and the chunks lie back to back: then the state can
    /// be mapped from the file without decoding or copying it. Every chunk's CRC and
    /// reconstructed hash are checked first (reading the bytes, allocating nothing). `None` when
    /// some chunk is encoded: use [`Reader::state`].
    pub fn raw_state_offset(&self, step: u64) -> Result<Option<u64>, FormatError> {
        let (entry, p) = self.step_payload(step)?;
        if p.chunks.is_empty() || p.chunks.iter().any(|c| c.codec != CodecId::Raw) {
            return Ok(None);
        }
        let cl = u64::from(self.opened.header.codec.chunk_len_elements.max(1));
        let n = self.opened.header.state_len_elements;
        let base = self.map.as_ptr() as usize;
        let mut first = None;
        let mut next = None;
        for (i, (c, data)) in p.chunks.iter().zip(&p.chunk_data).enumerate() {
            let start = (data.as_ptr() as usize).checked_sub(base);
            if next.is_some() && start != next {
                return Ok(None);
            }
            let elements = cl.min(n.saturating_sub(i as u64 * cl));
            if data.len() as u64 != elements * 4 {
                return Err(FormatError::corrupt(
                    entry.record_offset,
                    "chunk",
                    format!("raw chunk {i} of step {step} has {} bytes", data.len()),
                )
                .with_path(&self.path));
            }
            let found = crc32c::crc32c(data);
            if found != c.stored_crc32c {
                return Err(FormatError::ChecksumMismatch {
                    path: self.path.as_path().into(),
                    what: "chunk",
                    offset_from_file_start: entry.record_offset,
                    expected: c.stored_crc32c,
                    found,
                });
            }
            // A raw chunk's stored bytes are the little-endian words the hash is taken over.
            let h = xxhash_rust::xxh3::xxh3_64(data);
            if h != c.reconstructed_xxh3 {
                return Err(FormatError::ChainHashMismatch {
                    path: self.path.as_path().into(),
                    step,
                    chunk: i as u32,
                    expected: c.reconstructed_xxh3,
                    found: h,
                });
            }
            first = first.or(start);
            next = start.map(|s| s + data.len());
        }
        Ok(first.map(|f| f as u64))
    }

    /// Like [`Reader::state`], copying into `out` (which must be `state_len_elements` long).
    pub fn state_into(&mut self, step: u64, out: &mut [f32]) -> Result<(), FormatError> {
        if out.len() as u64 != self.opened.header.state_len_elements {
            return Err(FormatError::invalid_input(format!(
                "output has {} elements, the state has {}",
                out.len(),
                self.opened.header.state_len_elements
            )));
        }
        let s = self.state(step)?;
        out.copy_from_slice(&s);
        Ok(())
    }

    /// Decodes one step record given the states of step−1 and step−2 (as far as its chunks need
    /// them), verifying chunk CRCs and reconstructed hashes. Returns the record's chunk table,
    /// so callers that also need it do not parse the record a second time.
    pub(crate) fn decode_step_into(
        &self,
        step: u64,
        prev: Option<&[f32]>,
        prev2: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<Vec<ChunkEntry>, FormatError> {
        let entry = *self.step_index_entry(step)?;
        let (header, payload) = read_indexed_record_with(&self.map, &entry, PayloadCrc::Deferred)
            .map_err(|e| e.with_path(&self.path))?;
        self.decode_step_payload_into(step, &entry, &header, payload, prev, prev2, out)
            .map_err(|e| {
                // A damaged record reports its payload checksum first, as when it is checked
                // before parsing; the other errors stand where the payload is intact.
                check_payload_crc(&header, payload, entry.record_offset)
                    .err()
                    .unwrap_or(e)
                    .with_path(&self.path)
            })
    }

    /// [`Self::decode_step_into`] on a payload whose CRC is not checked yet: the chunks' CRCs are
    /// checked as they are decoded (SPEC.md §8), and the payload's is then combined from them and
    /// the CRC of the bytes before the chunk data, so the chunk bytes are read once.
    #[allow(clippy::too_many_arguments)]
    fn decode_step_payload_into(
        &self,
        step: u64,
        entry: &IndexEntry,
        header: &RecordHeader,
        payload: &[u8],
        prev: Option<&[f32]>,
        prev2: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<Vec<ChunkEntry>, FormatError> {
        let p = self.parse_step_payload(entry, payload)?;
        let chain_start = p.fixed.chain_start_step;
        // Which bases the chain rules allow: prev if step > chain start, prev2 if step−2 ≥ it.
        let prev = if step > chain_start { prev } else { None };
        let prev2 = if step >= chain_start.saturating_add(2) {
            prev2
        } else {
            None
        };
        decode_chunks(
            &p.chunks,
            &p.chunk_data,
            self.opened.header.codec.chunk_len_elements,
            prev,
            prev2,
            out,
            entry.record_offset,
            step,
            self.opened.header.codec.split_streams,
        )?;
        // The chunk data lies back to back at the end of the payload (the parser checks it),
        // and every chunk's bytes matched its stored CRC.
        let chunk_bytes: usize = p.chunk_data.iter().map(|d| d.len()).sum();
        let head = payload
            .get(..payload.len().saturating_sub(chunk_bytes))
            .unwrap_or_default();
        let found = p
            .chunks
            .iter()
            .zip(&p.chunk_data)
            .fold(crc32c::crc32c(head), |crc, (c, d)| {
                crate::crc::crc32c_combine(crc, c.stored_crc32c, d.len() as u64)
            });
        payload_crc_matches(header, found, entry.record_offset)?;
        Ok(p.chunks)
    }

    /// All epoch records, in file order.
    pub fn epochs(&self) -> Result<Vec<EpochRecord>, FormatError> {
        self.opened
            .entries
            .iter()
            .filter(|e| e.kind == RecordKind::Epoch as u8)
            .map(|e| {
                let (_, payload) = read_indexed_record(&self.map, e)?;
                decode_epoch_payload(payload, e.record_offset, e.step)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.with_path(&self.path))
    }

    /// The resume state stored at `step` (the last one if several), if any.
    pub fn resume_state(&self, step: u64) -> Result<Option<(Vec<f32>, String)>, FormatError> {
        let Some(entry) = self
            .opened
            .entries
            .iter()
            .rev()
            .find(|e| e.kind == RecordKind::Resume as u8 && e.step == step)
        else {
            return Ok(None);
        };
        let (buffers, descriptor, _) = self.decode_resume_entry(entry)?;
        Ok(Some((buffers, descriptor)))
    }

    /// Decodes one resume record (buffers, descriptor, chunk count), verifying its chunks.
    pub(crate) fn decode_resume_entry(
        &self,
        entry: &IndexEntry,
    ) -> Result<(Vec<f32>, String, u64), FormatError> {
        let (_, payload) =
            read_indexed_record(&self.map, entry).map_err(|e| e.with_path(&self.path))?;
        let chunk_len = self.opened.header.codec.chunk_len_elements;
        let p = decode_resume_payload(payload, entry.record_offset, chunk_len)
            .map_err(|e| e.with_path(&self.path))?;
        // Bound the allocation by what the stored bytes can expand to.
        if !plausible_expansion(payload.len() as u64, p.len_elements.saturating_mul(4)) {
            return Err(FormatError::corrupt(
                entry.record_offset,
                "resume record",
                "too small to hold its buffers",
            )
            .with_path(&self.path));
        }
        let n = usize::try_from(p.len_elements).map_err(|_| FormatError::SizeCap {
            what: "resume length",
            value: p.len_elements,
            cap: usize::MAX as u64,
        })?;
        let mut out = vec![0f32; n];
        decode_chunks(
            &p.chunks,
            &p.chunk_data,
            chunk_len,
            None,
            None,
            &mut out,
            entry.record_offset,
            entry.step,
            self.opened.header.codec.split_streams,
        )
        .map_err(|e| e.with_path(&self.path))?;
        Ok((out, p.descriptor_json.to_owned(), p.chunks.len() as u64))
    }

    /// Latest step with a resume record.
    pub fn last_resume_step(&self) -> Option<u64> {
        self.opened
            .entries
            .iter()
            .filter(|e| e.kind == RecordKind::Resume as u8)
            .map(|e| e.step)
            .max()
    }
}

fn unshuffle_raw_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Decodes all chunks of a record in parallel into `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_chunks(
    chunks: &[ChunkEntry],
    data: &[&[u8]],
    chunk_len_elements: u32,
    prev: Option<&[f32]>,
    prev2: Option<&[f32]>,
    out: &mut [f32],
    record_offset: u64,
    step: u64,
    split_streams: bool,
) -> Result<(), FormatError> {
    let cl = chunk_len_elements.max(1) as usize;
    // Codecs 5–8 exist only under the prologue's SPLIT_STREAMS bit (SPEC.md §3, §8.4).
    if !split_streams && let Some(e) = chunks.iter().find(|e| e.codec.is_split()) {
        return Err(FormatError::corrupt(
            record_offset,
            "record",
            format!(
                "chunk codec {} without the prologue's SPLIT_STREAMS bit",
                e.codec
            ),
        ));
    }
    if out.len().div_ceil(cl) != chunks.len() || data.len() != chunks.len() {
        return Err(FormatError::corrupt(
            record_offset,
            "record",
            "chunk count does not match the state length",
        ));
    }
    let check = |what: &str, base: Option<&[f32]>| -> Result<(), FormatError> {
        match base {
            Some(b) if b.len() != out.len() => Err(FormatError::invalid_input(format!(
                "{what} has the wrong length"
            ))),
            _ => Ok(()),
        }
    };
    check("previous state", prev)?;
    check("state before the previous", prev2)?;
    out.par_chunks_mut(cl).enumerate().try_for_each(|(i, o)| {
        let e = &chunks[i];
        let stored = data[i];
        let found = crc32c::crc32c(stored);
        if found != e.stored_crc32c {
            return Err(FormatError::ChecksumMismatch {
                path: crate::error::no_path(),
                what: "chunk",
                offset_from_file_start: record_offset,
                expected: e.stored_crc32c,
                found,
            });
        }
        let range = i * cl..i * cl + o.len();
        let p = prev.map(|p| &p[range.clone()]);
        let p2 = prev2.map(|p| &p[range]);
        decode_chunk(e.codec, stored, p, p2, o).map_err(|err| {
            FormatError::corrupt(
                record_offset,
                "chunk",
                format!("chunk {i} of step {step} ({}): {err}", e.codec),
            )
        })?;
        let h = chunk_hash(o);
        if h != e.reconstructed_xxh3 {
            return Err(FormatError::ChainHashMismatch {
                path: crate::error::no_path(),
                step,
                chunk: i as u32,
                expected: e.reconstructed_xxh3,
                found: h,
            });
        }
        Ok(())
    })
}
