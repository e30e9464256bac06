"""A small reader of sgdwalk recordings (.walk) in Python + numpy, written from
format-spec/SPEC.md, so θ_t can be loaded without Rust.

For your own code, use the ``sgdwalk`` package instead (``pip install ./python``; README,
"Python"): the Rust reader itself, memory-mapped, with torch state_dicts, a Recorder for PyTorch
loops and polars scans of the analysis tables. This file stays as the format's independent
second implementation: it checks that SPEC.md alone suffices, and the test suite compares it
with the Rust reader.

    import read_walk
    w = read_walk.open("run.walk")   # or read_walk.Walk("run.walk")
    w.steps                 # step numbers present
    theta = w.state(10)     # np.ndarray float32: the full state (4-byte words) before update 10
    w.state_dict(10)        # {name: array with the recorded dtype and shape} (SPEC §4.2)
    w.tensors(10)           # the same as state_dict(10)
    w.attachments()         # [{"name", "len_bytes", "sha256"}] (format 1.1, SPEC §4.9)
    w.attachment("model.pt")  # the attachment's bytes (SHA-256 checked), or None
    w.tensor_names          # tensor names, in state order
    w.trainable             # {name: bool} from the run description (SPEC Appendix A), or None
    w.parameters(10)        # {name: array} of the trainable tensors only
    w.step_info(10)         # sample ids, augmentation bytes, scalars (None = absent, NaN = recorded NaN)
    w.metadata              # the HEADER metadata (for sgdwalk-record: the run description)
    w.verify()              # decode and check everything, as `sgdwalk-analyze verify`

It checks what SPEC.md §8 asks a reader to check: CRC32C of the prologue, every record header
and payload it uses, every stored chunk and the trailer; reserved bytes; the HEADER (layout,
caps, codec settings); the chain rules (keyframe at every multiple of K included); the index of
a finished file (without falling back to scanning when it fails); exact sizes of ids and
augmentation; one zstd frame of exact size per blob and chunk; every reconstructed chunk's
xxh3-64, so the whole delta chain is verified; format 1.1's typed layouts (incompat bit 0) and
attachments (SHA-256 checked when read and by verify), 1.2's absent masks (incompat bit 1) and
1.3's split-stream codecs 5–8 (incompat bit 2). Unfinished files (a killed writer) are read up to
the last complete record. Errors are `WalkError`s whose `kind` names the error class as the Rust
reader does ("corrupt", "checksum_mismatch", ...).

Needs numpy, zstandard and xxhash (pip). bf16 tensors come back as numpy arrays of dtype
ml_dtypes.bfloat16 if the ml_dtypes package is installed, else as uint16 arrays of their bit
patterns (numpy has no bfloat16).

Command line:  python3 read_walk.py FILE [--digests | --verify | --tensors | --attachments]
"""
import builtins
import hashlib
import json
import math
import struct
import sys

import numpy as np
import xxhash
import zstandard

MAGIC = b"\x89SGDWLK\n"
RECORD_MAGIC = b"SWRC"
KIND_HEADER, KIND_STEP, KIND_EPOCH, KIND_RESUME, KIND_INDEX, KIND_FOOTER = 1, 2, 3, 4, 5, 6
KIND_ATTACHMENT = 7
KNOWN_KINDS = {KIND_HEADER, KIND_STEP, KIND_EPOCH, KIND_RESUME, KIND_INDEX, KIND_FOOTER, KIND_ATTACHMENT}
KIND_NAMES = {KIND_HEADER: "header record", KIND_STEP: "step record", KIND_EPOCH: "epoch record",
              KIND_RESUME: "resume record", KIND_INDEX: "index record", KIND_FOOTER: "footer record",
              KIND_ATTACHMENT: "attachment record"}
# SPEC §3: incompat bit 0, TYPED_LAYOUT (format 1.1); bit 1, ABSENT_MASK (format 1.2): STEP byte
# 62 marks absent scalars and NaN is a recorded value (without it NaN means absent); bit 2,
# SPLIT_STREAMS (format 1.3): chunks may use the split-stream codecs 5–8 (SPEC §5.2).
TYPED_LAYOUT = 0x01
ABSENT_MASK = 0x02
SPLIT_STREAMS = 0x04
KNOWN_INCOMPAT = TYPED_LAYOUT | ABSENT_MASK | SPLIT_STREAMS
ABSENT_BITS = 0x7FF8_0000_0000_0000
# SPEC §4.2: bytes per element and the numpy dtype of each layout dtype.
DTYPE_SIZES = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2,
               "i8": 1, "u8": 1, "bool": 1}
try:
    import ml_dtypes as _ml_dtypes
    _BF16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:
    _BF16 = np.dtype("<u2")  # bit patterns: numpy has no bfloat16
NUMPY_DTYPES = {"f32": np.dtype("<f4"), "f64": np.dtype("<f8"), "f16": np.dtype("<f2"), "bf16": _BF16,
                "i64": np.dtype("<i8"), "i32": np.dtype("<i4"), "i16": np.dtype("<i2"),
                "i8": np.dtype("i1"), "u8": np.dtype("u1"), "bool": np.dtype("?")}


def words(dtype, numel):
    """SPEC §4.2: 4-byte words a tensor of `numel` elements of `dtype` occupies."""
    return -(-numel * DTYPE_SIZES[dtype] // 4)
SUPPORTED_MAJOR = 1
NO_STEP = 2**64 - 1
SKIPPABLE = 0x01
BLOB_RAW, BLOB_SHUFFLE4_ZSTD, BLOB_ZSTD = 0, 1, 2

# Caps (SPEC §11); values beyond are "size_cap" errors.
MAX_PAYLOAD = 64 << 30
MAX_STATE = 1 << 33
MAX_CHUNK = 1 << 24
MAX_K = 1 << 16
MAX_TENSORS = 1 << 20
MAX_NAME = 4096
MAX_JSON = 64 << 20
MAX_IDS = 1 << 24
MAX_AUG = 4096
MAX_EVALS = 1 << 16
MAX_EXPANSION = 32768
MAX_ATTACHMENT = 4 << 30
MAX_ATTACHMENT_NAME = 256
MAX_ATTACHMENTS = 1024


class WalkError(Exception):
    """A recording that cannot be read; `kind` is the error class (as the Rust reader names it:
    not_a_recording, newer_version, unsupported_version, unsupported_feature, truncated,
    checksum_mismatch, chain_hash_mismatch, corrupt, size_cap), or "metadata" for a run
    description that does not fit the file."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _corrupt(offset, what, reason):
    return WalkError("corrupt", f"{what} at offset {offset}: {reason}")


def _cap(what, value, cap):
    if value > cap:
        raise WalkError("size_cap", f"{what} is {value}, above the cap of {cap}")


def _is_u64(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def _plausible(stored, raw):
    """SPEC §8.7: stored bytes expanded by zstd's maximum ratio (plus 4096) hold the raw bytes."""
    return stored * MAX_EXPANSION + 4096 >= raw


# --- CRC32C (Castagnoli, reflected 0x82F63B78, init and xor-out 0xFFFFFFFF) ----------------------

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC = _crc_table()
_CRC_NP = np.array(_CRC, dtype=np.uint32)
_ZERO_TABLES = {}


def _crc_update(reg, data):
    t = _CRC
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _zero_tables(nbytes):
    """The linear map "feed nbytes zero bytes" on the CRC register, as 4 byte tables."""
    if nbytes in _ZERO_TABLES:
        return _ZERO_TABLES[nbytes]

    def apply(mat, v):
        r, k = 0, 0
        while v:
            if v & 1:
                r ^= mat[k]
            v >>= 1
            k += 1
        return r

    one = [_crc_update(1 << k, b"\0") for k in range(32)]
    result = [1 << k for k in range(32)]
    n = nbytes
    while n:
        if n & 1:
            result = [apply(one, c) for c in result]
        one = [apply(one, c) for c in one]
        n >>= 1
    tables = [[apply(result, v << (8 * j)) for v in range(256)] for j in range(4)]
    _ZERO_TABLES[nbytes] = tables
    return tables


def crc32c(data) -> int:
    """CRC32C of `data`. Long inputs are cut into equal lanes processed side by side with
    numpy, then combined (the register update is affine in the register)."""
    data = bytes(data)
    n = len(data)
    if n < 1 << 14:
        return _crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    lanes = max(64, int(n**0.5))
    lane = n // lanes
    body = np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8, count=lanes * lane).reshape(lanes, lane).T)
    regs = np.zeros(lanes, dtype=np.uint32)
    for row in body:
        regs = _CRC_NP[(regs ^ row) & 0xFF] ^ (regs >> np.uint32(8))
    t0, t1, t2, t3 = _zero_tables(lane)
    reg = 0xFFFFFFFF
    for g in regs.tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ g
    return _crc_update(reg, data[lanes * lane:]) ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# --- codecs -------------------------------------------------------------------------------------

_DCTX = zstandard.ZstdDecompressor()


def _one_frame(frame, n):
    """SPEC §5.1: exactly one zstd frame (nothing after it) of exactly n bytes; ValueError if not."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise ValueError(f"not a zstd frame: {e}")
    if declared not in (-1, n):
        raise ValueError(f"zstd frame declares {declared} bytes, expected {n}")
    try:
        out = _DCTX.decompress(frame, max_output_size=max(n, 1), allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise ValueError(f"not exactly one zstd frame of {n} bytes: {e}")
    if len(out) != n:
        raise ValueError(f"zstd frame decodes to {len(out)} bytes, expected {n}")
    return out


def _unshuffle(planes: bytes, n: int) -> np.ndarray:
    p = np.frombuffer(planes, dtype=np.uint8).reshape(4, n).astype(np.uint32)
    return p[0] | (p[1] << 8) | (p[2] << 16) | (p[3] << 24)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint32(1)) ^ (np.uint32(0) - (z & np.uint32(1)))


def _pred2(p: np.ndarray, q: np.ndarray, mu: int) -> np.ndarray:
    d = (p - q).view(np.int32).astype(np.int64)
    step = (d * mu) >> 8  # arithmetic shift: floor division by 256
    return p + (step & 0xFFFFFFFF).astype(np.uint32)


def _split_words(stored: bytes, n: int) -> np.ndarray:
    """SPEC §5.2: the residual words of a split-stream chunk (the bytes after mu_q8).

    A table of 6 descriptors (mode u8, raw_len u32, stored_len u32), then the streams: the
    2-bit classes of the words, the leading bytes of the words of class 0, 1, 2 and 3, and the
    low bytes below each word's leading byte."""
    table_len = 6 * 9
    if len(stored) < table_len:
        raise ValueError("split chunk shorter than its stream table")
    pos, streams = table_len, []
    for k in range(6):
        mode, raw_len, stored_len = struct.unpack_from("<BII", stored, 9 * k)
        if raw_len > 3 * n:
            raise ValueError(f"split stream {k} declares {raw_len} bytes for {n} words")
        data = stored[pos : pos + stored_len]
        if len(data) != stored_len:
            raise ValueError(f"split stream {k} runs past the chunk")
        pos += stored_len
        if mode == 0 and stored_len == raw_len:
            streams.append(np.frombuffer(data, dtype=np.uint8))
        elif mode == 1:
            streams.append(np.frombuffer(_one_frame(data, raw_len), dtype=np.uint8))
        else:
            raise ValueError(f"split stream {k}: mode {mode}, {stored_len} bytes stored for {raw_len}")
    if pos != len(stored):
        raise ValueError(f"{len(stored) - pos} bytes after the last split stream")
    packed, leads, low = streams[0], streams[1:5], streams[5]
    if len(packed) != (n + 3) // 4:
        raise ValueError(f"class stream holds {len(packed)} bytes for {n} words")
    # Class of word i: bits 2(i mod 4) and 2(i mod 4)+1 of byte i // 4; the classes after the
    # last word (padding) must be zero.
    classes = ((packed[:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3).reshape(-1)
    if classes[n:].any():
        raise ValueError("nonzero padding in the class stream")
    classes = classes[:n]
    counts = np.bincount(classes, minlength=4)
    for k in range(4):
        if len(leads[k]) != counts[k]:
            raise ValueError(f"class-{k} leading-byte stream holds {len(leads[k])} bytes for {counts[k]} words")
    low_need = int(counts[1] + 2 * counts[2] + 3 * counts[3])
    if len(low) != low_need:
        raise ValueError(f"low-byte stream holds {len(low)} bytes, the classes need {low_need}")
    # Word i of class k: the next leading byte of class k at byte k, above the next k low bytes
    # (little-endian). The low bytes of word i start after those of the words before it.
    w = np.zeros(n, dtype=np.uint32)
    for k in range(4):
        w[classes == k] = leads[k].astype(np.uint32) << np.uint32(8 * k)
    low_start = np.cumsum(classes, dtype=np.int64) - classes
    for j in range(3):
        has = classes > j
        w[has] |= low[low_start[has] + j].astype(np.uint32) << np.uint32(8 * j)
    return w


def _decode_chunk(codec, stored, n, prev, prev2):
    """One chunk's words (SPEC §5); ValueError on anything malformed or a missing base."""
    if codec == 0:
        if len(stored) != 4 * n:
            raise ValueError(f"raw chunk has {len(stored)} bytes, expected {4 * n}")
        return np.frombuffer(stored, dtype="<u4").astype(np.uint32)
    if codec not in range(1, 9):
        raise ValueError(f"unknown codec {codec}")
    # Codecs 5–8 store the residual words of 1–4 as split streams (SPEC §5.2).
    split = codec >= 5
    codec = codec - 4 if split else codec
    if codec >= 2 and prev is None or codec == 4 and prev2 is None:
        raise ValueError(f"codec {codec} needs previous states the chain does not allow")
    mu, frame = 0, stored
    if codec == 4:
        if len(stored) < 2:
            raise ValueError("pred2 chunk shorter than its mu prefix")
        (mu,) = struct.unpack_from("<H", stored, 0)
        frame = stored[2:]
    w = _split_words(frame, n) if split else _unshuffle(_one_frame(frame, 4 * n), n)
    if codec == 1:
        return w
    if codec == 2:
        return w ^ prev
    if codec == 3:
        return prev + _unzigzag(w)
    return _pred2(prev, prev2, mu) + _unzigzag(w)


# --- the reader ---------------------------------------------------------------------------------

class _Entry:
    """A data record: where it is and what the index (or the scan) says about it."""

    __slots__ = ("offset", "length", "kind", "step", "chain", "keyframe")

    def __init__(self, offset, length, kind, step, chain, keyframe):
        self.offset, self.length, self.kind = offset, length, kind
        self.step, self.chain, self.keyframe = step, chain, keyframe

    def key(self):
        return (self.offset, self.length, self.kind, self.step, self.chain, self.keyframe)


class Walk:
    def __init__(self, path):
        self.path = str(path)
        with builtins.open(self.path, "rb") as f:  # `open` below is this module's
            self._bytes = f.read()
        self._prologue()
        self._header()
        b = self._bytes
        self.finished = len(b) >= self._header_end + 32 and b[-8:] == MAGIC
        if self.finished:
            # SPEC §9: a file that ends in the magic is finished; if its trailer, footer or
            # index fails, it is corrupt (no fallback to scanning).
            self._entries, self._data_end = self._open_finished(), self._index_offset
        else:
            self._entries, self._data_end = self._scan(self._header_end, len(b))
        self._attachments = self._parse_attachments()
        self._step_entry = {e.step: e for e in self._entries if e.kind == KIND_STEP}
        self.steps = sorted(self._step_entry)
        self.epochs = [self._parse_epoch(e) for e in self._entries if e.kind == KIND_EPOCH]
        self._cache = {}

    # --- prologue and header (SPEC §3, §4.2) -----------------------------------------------------

    def _prologue(self):
        b = self._bytes
        head = b[:8]
        if head != MAGIC[: len(head)]:
            raise WalkError("not_a_recording", f"not an sgdwalk recording: {self.path}")
        if len(b) < 64:
            raise WalkError("truncated", f"{len(b)} bytes, the prologue needs 64: {self.path}")
        major, minor = struct.unpack_from("<HH", b, 8)
        if major > SUPPORTED_MAJOR:
            raise WalkError("newer_version", f"format version {major}.{minor} is newer than this reader")
        stored, = struct.unpack_from("<I", b, 60)
        if crc32c(b[:60]) != stored:
            raise WalkError("checksum_mismatch", "prologue CRC")
        if major == 0:
            raise WalkError("unsupported_version", f"format version {major}.{minor}")
        if any(b[12:16]) or any(b[56:60]):
            raise _corrupt(0, "prologue", "reserved bytes are not zero")
        (incompat,) = struct.unpack_from("<Q", b, 16)
        if incompat & ~KNOWN_INCOMPAT:
            raise WalkError("unsupported_feature", f"incompat feature flags {incompat & ~KNOWN_INCOMPAT:#x}")
        self.major, self.minor, self.incompat = major, minor, incompat

    def _header(self):
        b = self._bytes
        probe = self._probe(64, len(b))
        if probe == "torn":
            raise WalkError("truncated", "the file ends inside the HEADER record")
        kind, _flags, _step, start, length, total = probe
        if kind != KIND_HEADER:
            raise _corrupt(64, "header record", "first record is not a header record")
        self._header_end = 64 + total
        p = b[start : start + length]

        def bad(reason):
            return _corrupt(64, "header record", reason)

        if len(p) < 64:
            raise bad("shorter than its fixed part")
        self.run_id = p[:16].hex()
        (self.created_unix_ms, self.state_len, self.chunk_len, self.keyframe_interval, level,
         self.delta_codec) = struct.unpack_from("<QQIIiB", p, 16)
        self.aug_bytes_per_sample, layout_len, meta_len = struct.unpack_from("<III", p, 48)
        if any(p[45:48]) or any(p[60:64]):
            raise bad("reserved bytes are not zero")
        _cap("layout JSON bytes", layout_len, MAX_JSON)
        _cap("metadata JSON bytes", meta_len, MAX_JSON)
        if 64 + layout_len + meta_len != len(p):
            raise bad("lengths do not add up to the payload")
        if self.delta_codec not in (2, 3, 4):
            raise bad(f"delta_codec {self.delta_codec} is not 2, 3 or 4")
        try:
            self.layout = json.loads(p[64 : 64 + layout_len].decode("utf-8"))
            self.metadata = json.loads(p[64 + layout_len :].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"layout or metadata is not UTF-8 JSON: {e}")
        if not 1 <= self.chunk_len <= MAX_CHUNK:
            raise bad(f"chunk_len_elements {self.chunk_len}")
        if not 1 <= self.keyframe_interval <= MAX_K:
            raise bad(f"keyframe_interval {self.keyframe_interval}")
        if not -131072 <= level <= 22:
            raise bad(f"zstd_level {level}")
        if self.aug_bytes_per_sample > MAX_AUG:
            raise bad(f"augmentation_bytes_per_sample {self.aug_bytes_per_sample}")
        if not isinstance(self.metadata, dict):
            raise bad("metadata is not a JSON object")
        if not isinstance(self.layout, list) or len(self.layout) > MAX_TENSORS:
            raise bad("layout is not an array of at most 2^20 tensors")
        names, offset = set(), 0
        for t in self.layout:
            if not isinstance(t, dict):
                raise bad("layout entry is not an object")
            name, shape, start_el = t.get("name"), t.get("shape"), t.get("offset_elements")
            if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME or name in names:
                raise bad(f"tensor name {name!r}")
            names.add(name)
            dtype = t.get("dtype")
            if dtype not in DTYPE_SIZES:
                raise bad(f"dtype {dtype!r} of {name} is not a format dtype")
            if dtype != "f32" and not self.incompat & TYPED_LAYOUT:
                raise bad(f"tensor {name!r} has dtype {dtype} but the incompat flag TYPED_LAYOUT is not set")
            if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
                raise bad(f"shape of {name}")
            if not _is_u64(start_el) or start_el != offset:
                raise bad(f"{name} starts at {start_el}, the previous tensor ends at {offset}")
            offset += words(dtype, int(np.prod(shape, dtype=object)) if shape else 1)
        if offset > MAX_STATE or offset != self.state_len:
            raise bad(f"the layout holds {offset} elements, state_len_elements is {self.state_len}")
        self.n_chunks = -(-self.state_len // self.chunk_len)

    # --- records (SPEC §4.1, §8.2) ---------------------------------------------------------------

    def _probe(self, off, end):
        """The record at `off` (within bytes [0, end)): (kind, flags, step, payload start, payload
        length, whole length), or "torn" if fewer than 32 bytes are left or the record runs past
        `end`; raises on anything else (payload CRC: checksum_mismatch)."""
        b = self._bytes
        if end - off < 32:
            return "torn"
        h = b[off : off + 32]
        if h[:4] != RECORD_MAGIC:
            raise _corrupt(off, "record header", f"bad record magic {h[:4].hex()}")
        stored_crc, = struct.unpack_from("<I", h, 28)
        if crc32c(h[:28]) != stored_crc:
            raise WalkError("checksum_mismatch", f"record header CRC at offset {off}")
        kind, flags = h[4], h[5]
        length, step, pcrc = struct.unpack_from("<QQI", h, 8)
        if any(h[6:8]):
            raise _corrupt(off, "record header", "reserved bytes are not zero")
        if flags & ~SKIPPABLE:
            raise _corrupt(off, "record header", f"unknown record flag bits {flags:#x}")
        _cap("record payload_len_bytes", length, MAX_PAYLOAD)
        total = 32 + length + (-length) % 8
        if total > end - off:
            return "torn"
        start = off + 32
        if crc32c(b[start : start + length]) != pcrc:
            raise WalkError("checksum_mismatch", f"record payload CRC at offset {off}")
        if any(b[start + length : off + total]):
            raise _corrupt(off, "record", "padding bytes are not zero")
        return kind, flags, step, start, length, total

    def _accept_step(self, chain_state, step, chain, keyframe, off):
        """SPEC §4.3 chain rules (§8.4), on the step sequence in file order."""
        last, last_chain = chain_state

        def bad(reason):
            return _corrupt(off, "step record", reason)

        if step == NO_STEP:
            raise bad("step number u64::MAX is reserved")
        if not keyframe and step % self.keyframe_interval == 0:
            raise bad(f"step {step} is a multiple of the keyframe interval but not a keyframe")
        if last is not None and step <= last:
            raise bad(f"step {step} follows step {last}; steps must strictly increase")
        if keyframe != (chain == step):
            raise bad(f"keyframe flag {keyframe} but chain start {chain} for step {step}")
        if not keyframe and (last != step - 1 or last_chain != chain):
            raise bad(f"delta step {step} does not continue the chain of the previous step")
        return (step, chain)

    def _scan(self, start, end):
        """SPEC §9: records from `start`, each validated; stops quietly at a torn tail."""
        b = self._bytes
        entries, off, data_end, chain_state = [], start, start, (None, None)
        while off < end:
            try:
                probe = self._probe(off, end)
            except WalkError as e:
                if self._torn_tail(off, end, e):
                    break
                raise
            if probe == "torn":
                break
            kind, flags, step, pstart, length, total = probe
            if kind == KIND_STEP:
                fx = self._step_fixed(b[pstart : pstart + length], off)
                if not _plausible(total, 4 * self.state_len):
                    raise _corrupt(off, "step record", "too small to hold the state")
                chain_state = self._accept_step(chain_state, step, fx["chain"], fx["keyframe"], off)
                entries.append(_Entry(off, total, kind, step, fx["chain"], fx["keyframe"]))
                data_end = off + total
            elif kind in (KIND_EPOCH, KIND_RESUME, KIND_ATTACHMENT) or (kind not in KNOWN_KINDS and flags & SKIPPABLE):
                entries.append(_Entry(off, total, kind, step, step, False))
                data_end = off + total
            elif kind == KIND_HEADER:
                raise _corrupt(off, "header record", "a second header record")
            elif kind not in KNOWN_KINDS:
                raise _corrupt(off, "record", f"unknown record kind {kind} without the SKIPPABLE flag")
            off += total  # INDEX and FOOTER are skipped
        return entries, data_end

    def _torn_tail(self, off, end, err):
        """What a crash can leave after the last complete record: zero bytes, or one record whose
        payload CRC fails followed only by zero bytes."""
        rest = self._bytes[off:end]
        if not any(rest):
            return True
        if err.kind != "checksum_mismatch" or "payload" not in str(err):
            return False
        (length,) = struct.unpack_from("<Q", rest, 8)
        return not any(rest[32 + length + (-length) % 8 :])

    def _open_finished(self):
        """SPEC §4.6–4.8, §8.5: trailer, FOOTER and INDEX; the entries tile the data region."""
        b = self._bytes
        n = len(b)
        t_off = n - 32
        t = b[t_off:]
        footer_off, footer_len, major, minor, crc = struct.unpack_from("<QQHHI", t, 0)
        if crc32c(t[:20]) != crc:
            raise WalkError("checksum_mismatch", f"trailer CRC at offset {t_off}")
        if (major, minor) != (self.major, self.minor):
            raise _corrupt(t_off, "trailer", "version differs from the prologue")
        if footer_off + footer_len != t_off or footer_off < self._header_end:
            raise _corrupt(t_off, "trailer", "footer location is outside the file body")
        footer = self._expect(footer_off, footer_len, KIND_FOOTER, "footer record")
        if len(footer) != 64 or any(footer[48:]):
            raise _corrupt(footer_off, "footer record", "bad length or reserved bytes")
        index_off, index_len, n_data, n_steps, first, last = struct.unpack_from("<6Q", footer, 0)
        if index_off + index_len != footer_off or index_off < self._header_end:
            raise _corrupt(footer_off, "footer record", "index location is outside the file body")
        index = self._expect(index_off, index_len, KIND_INDEX, "index record")
        count = struct.unpack_from("<Q", index, 0)[0] if len(index) >= 8 else -1
        if len(index) != 8 + 40 * count:
            raise _corrupt(index_off, "index record", f"entry count {count} does not match payload length")
        self._index_offset = self._data_end = index_off
        entries, expected, chain_state = [], self._header_end, (None, None)
        for i in range(count):
            off, length, step, chain, kind, flags = struct.unpack_from("<QQQQBB", index, 8 + 40 * i)
            if any(index[8 + 40 * i + 34 : 8 + 40 * (i + 1)]) or flags & ~1:
                raise _corrupt(index_off, "index record", "reserved bytes or flag bits")
            if off != expected or length < 32 or length % 8:
                raise _corrupt(index_off, "index record", "entries do not tile the data region")
            expected = off + length
            if expected > index_off:
                raise _corrupt(index_off, "index record", "entry extends beyond the data region")
            keyframe = bool(flags & 1)
            if kind == KIND_STEP:
                if not _plausible(length, 4 * self.state_len):
                    raise _corrupt(off, "step record", "too small to hold the state")
                chain_state = self._accept_step(chain_state, step, chain, keyframe, off)
            elif kind in (KIND_EPOCH, KIND_RESUME, KIND_ATTACHMENT) or kind not in KNOWN_KINDS:
                if flags or chain != step:
                    raise _corrupt(index_off, "index record", "non-step entry with step fields")
            else:
                raise _corrupt(index_off, "index record", "index lists a non-data record")
            e = _Entry(off, length, kind, step, chain, keyframe)
            if kind not in KNOWN_KINDS:
                # SPEC §4.1: an unknown kind is usable only if its record says SKIPPABLE.
                if not self._indexed(e)[0] & SKIPPABLE:
                    raise _corrupt(off, "record", f"unknown record kind {kind} without the SKIPPABLE flag")
            entries.append(e)
        if expected != index_off:
            raise _corrupt(index_off, "index record", "entries do not cover the data region")
        steps = [e.step for e in entries if e.kind == KIND_STEP]
        want = (len(entries), len(steps), steps[0] if steps else NO_STEP, steps[-1] if steps else NO_STEP)
        if (n_data, n_steps, first, last) != want:
            raise _corrupt(footer_off, "footer record", "counts do not match the index")
        return entries

    def _expect(self, off, length, kind, what):
        probe = self._probe(off, len(self._bytes))
        if probe == "torn" or probe[0] != kind or probe[5] != length:
            raise _corrupt(off, what, "not the record the file's end points at")
        return self._bytes[probe[3] : probe[3] + probe[4]]

    def _indexed(self, e):
        """(flags, payload) of the data record `e` names; any mismatch is corruption."""
        probe = self._probe(e.offset, self._data_end)
        if probe == "torn":
            raise _corrupt(e.offset, "record", "indexed record is incomplete")
        kind, flags, step, start, length, total = probe
        if (total, kind, step) != (e.length, e.kind, e.step):
            raise _corrupt(e.offset, "record", "record header does not match its index entry")
        return flags, self._bytes[start : start + length]

    # --- attachments (SPEC §4.9) -----------------------------------------------------------------

    def _parse_attachments(self):
        """Every ATTACHMENT record: step NO_STEP, before every STEP/EPOCH/RESUME record, lengths
        adding up, names unique. The SHA-256 is checked when the data is read."""
        out, data_seen = {}, False
        for e in self._entries:
            if e.kind in (KIND_STEP, KIND_EPOCH, KIND_RESUME):
                data_seen = True
            if e.kind != KIND_ATTACHMENT:
                continue

            def bad(reason):
                return _corrupt(e.offset, "attachment record", reason)

            if e.step != NO_STEP:
                raise bad(f"step field is {e.step}, not NO_STEP")
            if data_seen:
                raise bad("attachment after a step, epoch or resume record (attachments must come first)")
            _, p = self._indexed(e)
            if len(p) < 48:
                raise bad("shorter than its fixed part")
            name_len, reserved, data_len = struct.unpack_from("<IIQ", p, 0)
            if reserved:
                raise bad("reserved bytes are not zero")
            if not 1 <= name_len <= MAX_ATTACHMENT_NAME:
                raise bad(f"attachment name length {name_len}")
            _cap("attachment bytes", data_len, MAX_ATTACHMENT)
            if 48 + name_len + data_len != len(p):
                raise bad("name and data do not add up to the payload")
            try:
                name = p[48 : 48 + name_len].decode("utf-8")
            except UnicodeDecodeError:
                raise bad("attachment name is not UTF-8")
            if name in out:
                raise bad(f"attachment name {name!r} is used twice")
            if len(out) >= MAX_ATTACHMENTS:
                raise WalkError("size_cap", f"more than {MAX_ATTACHMENTS} attachments")
            start = e.offset + 32 + 48 + name_len
            out[name] = {"name": name, "len_bytes": data_len, "sha256": p[16:48].hex(),
                         "record_offset": e.offset, "data_offset": start}
        return out

    def attachments(self):
        """[{"name", "len_bytes", "sha256" (hex, as stored), "record_offset", "data_offset"}] in
        file order (empty for a format 1.0 file)."""
        return [dict(a) for a in self._attachments.values()]

    def attachment(self, name):
        """The bytes of attachment `name` after checking its SHA-256, or None if absent."""
        a = self._attachments.get(name)
        if a is None:
            return None
        data = self._bytes[a["data_offset"] : a["data_offset"] + a["len_bytes"]]
        found = hashlib.sha256(data).hexdigest()
        if found != a["sha256"]:
            raise WalkError("checksum_mismatch", f"attachment {name!r} has sha256 {found}, "
                            f"its record says {a['sha256']}")
        return data

    # --- payloads (SPEC §4.3–4.5) ----------------------------------------------------------------

    def _step_fixed(self, p, off):
        if len(p) < 72:
            raise _corrupt(off, "step record", "shorter than its fixed part")
        (flags, count, chain, s, ids_codec, aug_codec, mask, rsv, ids_len,
         aug_len) = struct.unpack_from("<IIQ40xIBBBBII", p, 0)
        bits = struct.unpack_from("<5Q", p, 16)
        if flags & ~1:
            raise _corrupt(off, "step record", f"unknown step flag bits {flags:#x}")
        if rsv or (mask and not self.incompat & ABSENT_MASK):
            raise _corrupt(off, "step record", "reserved bytes are not zero")
        values = struct.unpack_from("<5d", p, 16)
        if self.incompat & ABSENT_MASK:
            if mask & 0xE0:
                raise _corrupt(off, "step record", f"absent mask {mask:#x} has reserved bits set")
            if any(mask >> i & 1 and b != ABSENT_BITS for i, b in enumerate(bits)):
                raise _corrupt(off, "step record", "an absent scalar is not the absent NaN")
            scalars = tuple(None if mask >> i & 1 else v for i, v in enumerate(values))
        else:
            scalars = tuple(None if math.isnan(v) else v for v in values)
        _cap("sample ids per step", s, MAX_IDS)
        if ids_codec not in (BLOB_RAW, BLOB_SHUFFLE4_ZSTD):
            raise _corrupt(off, "step record", f"unknown sample id codec {ids_codec}")
        if aug_codec not in (BLOB_RAW, BLOB_ZSTD):
            raise _corrupt(off, "step record", f"unknown augmentation codec {aug_codec}")
        if count != self.n_chunks:
            raise _corrupt(off, "step record", f"{count} chunks, the header implies {self.n_chunks}")
        return {"keyframe": bool(flags & 1), "chain": chain, "scalars": scalars,
                "count": s, "ids_codec": ids_codec, "aug_codec": aug_codec, "ids_len": ids_len,
                "aug_len": aug_len}

    def _chunk_table(self, p, pos, count, off, what):
        if pos + 24 * count > len(p):
            raise _corrupt(off, what, f"chunk table of {count} entries exceeds the payload")
        table = []
        for i in range(count):
            codec, stored_len, crc, xxh = struct.unpack_from("<B3xII4xQ", p, pos + 24 * i)
            if any(p[pos + 24 * i + 1 : pos + 24 * i + 4]) or any(p[pos + 24 * i + 12 : pos + 24 * i + 16]):
                raise _corrupt(off, what, "reserved bytes are not zero")
            if codec > 8:
                raise _corrupt(off, what, f"unknown codec id {codec}")
            if codec >= 5 and not self.incompat & SPLIT_STREAMS:
                raise _corrupt(off, what, f"chunk codec {codec} without the SPLIT_STREAMS incompat bit")
            table.append((codec, stored_len, crc, xxh))
        return table, pos + 24 * count

    def _chunk_data(self, p, pos, table, off, what):
        """Slices of every chunk's stored bytes; the payload must end after the last."""
        data = []
        for _codec, stored_len, _crc, _xxh in table:
            if pos + stored_len > len(p):
                raise _corrupt(off, what, "chunk data exceeds the payload")
            data.append(p[pos : pos + stored_len])
            pos += stored_len
        if pos != len(p):
            raise _corrupt(off, what, f"{len(p) - pos} unexpected trailing bytes")
        return data

    def _step(self, t):
        """The parsed step record of step t, checked against its index entry."""
        e = self._step_entry.get(t)
        if e is None:
            raise KeyError(f"step {t} is not in the recording")
        _flags, p = self._indexed(e)
        fx = self._step_fixed(p, e.offset)
        if fx["chain"] != e.chain or fx["keyframe"] != e.keyframe:
            raise _corrupt(e.offset, "step record", "chain fields differ from the index")
        table, pos = self._chunk_table(p, 72, self.n_chunks, e.offset, "step record")
        if pos + fx["ids_len"] + fx["aug_len"] > len(p):
            raise _corrupt(e.offset, "step record", "ids and augmentation exceed the payload")
        fx["ids"] = p[pos : pos + fx["ids_len"]]
        pos += fx["ids_len"]
        fx["aug"] = p[pos : pos + fx["aug_len"]]
        pos += fx["aug_len"]
        fx["table"] = table
        fx["data"] = self._chunk_data(p, pos, table, e.offset, "step record")
        fx["offset"] = e.offset
        return fx

    def _blob(self, stored, codec, raw_codec, n, off, what):
        """SPEC §4.3: raw blobs of exactly n bytes, zstd blobs of one frame of exactly n bytes."""
        if codec == raw_codec:
            if len(stored) != n:
                raise _corrupt(off, "step record", f"{what}: wrong stored length for the raw codec")
            return bytes(stored)
        if not _plausible(len(stored), n):
            raise _corrupt(off, "step record", f"{what}: zstd blob too small for its declared length")
        try:
            return _one_frame(stored, n)
        except ValueError as err:
            raise _corrupt(off, "step record", f"{what}: {err}")

    def step_info(self, t):
        fx = self._step(t)
        s, off = fx["count"], fx["offset"]
        if fx["ids_codec"] == BLOB_RAW:
            ids = np.frombuffer(self._blob(fx["ids"], BLOB_RAW, BLOB_RAW, 4 * s, off, "sample ids"),
                                dtype="<u4").astype(np.uint32)
        else:
            ids = _unshuffle(self._blob(fx["ids"], BLOB_SHUFFLE4_ZSTD, BLOB_RAW, 4 * s, off, "sample ids"), s)
        aug = self._blob(fx["aug"], fx["aug_codec"], BLOB_RAW, s * self.aug_bytes_per_sample, off,
                         "augmentation")
        lr, loss, gnorm, unorm, wall = fx["scalars"]
        return {
            "step": t, "keyframe": fx["keyframe"], "chain_start_step": fx["chain"], "sample_ids": ids,
            "augmentation": aug, "learning_rate": lr, "minibatch_loss": loss,
            "grad_norm": gnorm, "update_norm": unorm, "wall_time_secs": wall,
        }

    def _decode_chunks(self, table, data, total, prev, prev2, off, step):
        out = np.empty(total, dtype=np.uint32)
        for i, ((codec, _len, crc, xxh), stored) in enumerate(zip(table, data)):
            if crc32c(stored) != crc:
                raise WalkError("checksum_mismatch", f"chunk {i} CRC in the record at offset {off}")
            lo, hi = i * self.chunk_len, min((i + 1) * self.chunk_len, total)
            try:
                w = _decode_chunk(codec, stored, hi - lo, None if prev is None else prev[lo:hi],
                                  None if prev2 is None else prev2[lo:hi])
            except ValueError as err:
                raise _corrupt(off, "chunk", f"chunk {i} of step {step} (codec {codec}): {err}")
            if xxhash.xxh3_64_intdigest(w.astype("<u4").tobytes()) != xxh:
                raise WalkError("chain_hash_mismatch", f"step {step} chunk {i}: reconstructed hash mismatch")
            out[lo:hi] = w
        return out

    def _decode(self, t, prev, prev2):
        fx = self._step(t)
        chain = fx["chain"]
        # The bases the chain rules allow: θ_{t−1} if t > chain start, θ_{t−2} if t−2 ≥ it.
        prev = prev if t > chain else None
        prev2 = prev2 if t >= chain + 2 else None
        return self._decode_chunks(fx["table"], fx["data"], self.state_len, prev, prev2, fx["offset"], t)

    def _bits(self, t):
        if t in self._cache:
            return self._cache[t]
        chain = self._step_entry[t].chain
        prev = prev2 = None
        for u in range(chain, t + 1):
            bits = self._cache[u] if u in self._cache else self._decode(u, prev, prev2)
            prev2, prev = prev, bits
        # Keep the two latest states: consecutive pairs decode each step once.
        self._cache = {k: v for k, v in self._cache.items() if k >= t - 1}
        self._cache[t] = prev
        if prev2 is not None:
            self._cache[t - 1] = prev2
        return prev

    def state(self, t) -> np.ndarray:
        """θ_t as float32, bit-exact."""
        return self._bits(t).view(np.float32)

    def _parse_epoch(self, e):
        _flags, p = self._indexed(e)
        off = e.offset
        if len(p) < 8:
            raise _corrupt(off, "epoch record", "shorter than its fixed part")
        epoch, count = struct.unpack_from("<II", p, 0)
        _cap("evals per epoch record", count, MAX_EVALS)
        pos, evals = 8, []
        for _ in range(count):
            if pos + 4 > len(p):
                raise _corrupt(off, "epoch record", "evals exceed the payload")
            (n,) = struct.unpack_from("<I", p, pos)
            _cap("split name bytes", n, MAX_NAME)
            if pos + 4 + n + 24 > len(p):
                raise _corrupt(off, "epoch record", "evals exceed the payload")
            try:
                split = p[pos + 4 : pos + 4 + n].decode("utf-8")
            except UnicodeDecodeError:
                raise _corrupt(off, "epoch record", "split name is not UTF-8")
            loss, acc, samples = struct.unpack_from("<ddQ", p, pos + 4 + n)
            evals.append({"split": split, "loss": loss, "accuracy": acc, "samples": samples})
            pos += 4 + n + 24
        if pos != len(p):
            raise _corrupt(off, "epoch record", f"{len(p) - pos} unexpected trailing bytes")
        return {"epoch": epoch, "step": e.step, "evals": evals}

    def resume_state(self, s):
        """(buffers as float32, descriptor JSON text) of the last RESUME record at step s, or None."""
        found = [e for e in self._entries if e.kind == KIND_RESUME and e.step == s]
        return self._resume(found[-1]) if found else None

    def _resume(self, e):
        _flags, p = self._indexed(e)
        off = e.offset
        if len(p) < 16:
            raise _corrupt(off, "resume record", "shorter than its fixed part")
        r, count, desc_len = struct.unpack_from("<QII", p, 0)
        _cap("resume buffer elements", r, MAX_STATE)
        _cap("resume descriptor bytes", desc_len, MAX_JSON)
        if count != -(-r // self.chunk_len):
            raise _corrupt(off, "resume record", f"{count} chunks for {r} elements")
        table, pos = self._chunk_table(p, 16, count, off, "resume record")
        if any(c[0] not in (0, 1, 5) for c in table):
            raise _corrupt(off, "resume record", "resume chunks must be standalone")
        if pos + desc_len > len(p):
            raise _corrupt(off, "resume record", "descriptor exceeds the payload")
        try:
            desc = p[pos : pos + desc_len].decode("utf-8")
        except UnicodeDecodeError:
            raise _corrupt(off, "resume record", "descriptor is not UTF-8")
        data = self._chunk_data(p, pos + desc_len, table, off, "resume record")
        if not _plausible(len(p), 4 * r):
            raise _corrupt(off, "resume record", "too small to hold its buffers")
        bits = self._decode_chunks(table, data, r, None, None, off, e.step)
        return bits.view(np.float32), desc

    def verify(self):
        """Everything `sgdwalk-analyze verify` checks: a fresh scan of the data region must find
        exactly the indexed records; every step's ids, augmentation and state (its whole chain),
        every epoch and resume record decode."""
        scanned, end = self._scan(self._header_end, self._data_end)
        if end != self._data_end or [e.key() for e in scanned] != [e.key() for e in self._entries]:
            raise _corrupt(end, "index record", "index differs from the records in the file")
        for t in self.steps:
            self.step_info(t)
            self.state(t)
        for e in self._entries:
            if e.kind == KIND_EPOCH:
                self._parse_epoch(e)
            elif e.kind == KIND_RESUME:
                self._resume(e)
        for name in self._attachments:
            self.attachment(name)
        return self

    # --- tensors and the run description (SPEC Appendix A) ---------------------------------------

    @property
    def tensor_names(self):
        """Names of the layout's tensors, in state order."""
        return [t["name"] for t in self.layout]

    @property
    def run_description(self):
        """The metadata if it is an sgdwalk-record run description (schema 1), else None."""
        m = self.metadata
        prov = m.get("provenance")
        if m.get("schema_version") == 1 and isinstance(prov, dict) and prov.get("tool") == "sgdwalk-record":
            return m
        return None

    @property
    def trainable(self):
        """{name: bool} in state order: which tensors the optimizer trains (False: BatchNorm
        running statistics), from the run description's `layout.entries`, checked against the
        HEADER layout; None if the metadata is not a run description."""
        desc = self.run_description
        if desc is None:
            return None
        entries = desc.get("layout", {}).get("entries")
        if not isinstance(entries, list) or len(entries) != len(self.layout):
            raise WalkError("metadata", "layout.entries does not match the HEADER layout")
        flags = {}
        for e, t in zip(entries, self.layout):
            # len_elements counts 4-byte words (SPEC Appendix A.2).
            count = words(t["dtype"], int(np.prod(t["shape"], dtype=object)) if t["shape"] else 1)
            if (e.get("name"), e.get("shape"), e.get("offset_elements"), e.get("len_elements")) != (
                    t["name"], t["shape"], t["offset_elements"], count) or not isinstance(e.get("trainable"), bool):
                raise WalkError("metadata", f"layout.entries disagrees with the HEADER layout at {t['name']}")
            flags[t["name"]] = e["trainable"]
        return flags

    def state_dict(self, t) -> dict:
        """{name: array} of θ_t with each tensor's recorded dtype and shape (SPEC §4.2): f32
        tensors are their words; other dtypes view the little-endian bytes of their
        ceil(numel × size / 4) words as numel elements (padding dropped). bf16 is
        ml_dtypes.bfloat16 if installed, else uint16 bit patterns."""
        flat = self._bits(t)
        out = {}
        for spec in self.layout:
            n = int(np.prod(spec["shape"], dtype=object)) if spec["shape"] else 1
            o, dtype = spec["offset_elements"], spec["dtype"]
            w = flat[o : o + words(dtype, n)]
            if dtype == "f32":
                arr = w.view(np.float32)
            else:
                raw = w.astype("<u4").tobytes()[: n * DTYPE_SIZES[dtype]]
                arr = np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype]).copy()
            out[spec["name"]] = arr.reshape(spec["shape"])
        return out

    def tensors(self, t) -> dict:
        """The same as state_dict(t)."""
        return self.state_dict(t)

    def parameters(self, t) -> dict:
        """The trainable tensors of θ_t (SPEC Appendix A.2)."""
        flags = self.trainable
        if flags is None:
            raise WalkError("metadata", "the metadata is not an sgdwalk-record run description")
        return {k: v for k, v in self.tensors(t).items() if flags[k]}


def open(path):
    """Opens a recording: a `Walk`."""
    return Walk(path)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        w = Walk(argv[1])
        if "--verify" in argv:
            w.verify()
            print(f"{w.path}: ok, {'finished' if w.finished else 'unfinished'}, {len(w.steps)} steps")
        elif "--digests" in argv:
            # One line per step: sha256 of θ_t's little-endian bytes and the sample ids, for tests.
            for t in w.steps:
                info = w.step_info(t)
                state = hashlib.sha256(w.state(t).astype("<f4").tobytes()).hexdigest()
                ids = ",".join(str(int(i)) for i in info["sample_ids"])
                print(t, state, ids)
        elif "--attachments" in argv:
            # One line per attachment: name, length, sha256 (checked).
            for a in w.attachments():
                w.attachment(a["name"])
                print(a["name"], a["len_bytes"], a["sha256"], sep="\t")
        elif "--tensors" in argv:
            # One line per tensor: name, shape, trainable (1/0, "-" without a run description).
            flags = w.trainable
            for spec in w.layout:
                mark = "-" if flags is None else str(int(flags[spec["name"]]))
                print(spec["name"], "x".join(str(d) for d in spec["shape"]) or "scalar", mark, sep="\t")
        else:
            print(f"{w.path}: run {w.run_id}, {'finished' if w.finished else 'unfinished'}, "
                  f"{len(w.steps)} steps ({w.steps[0] if w.steps else '-'}..{w.steps[-1] if w.steps else '-'}), "
                  f"{w.state_len} f32 per state, {len(w.layout)} tensors, {len(w.epochs)} epoch records")
    except WalkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
