"""A small reader of sgdwalk recordings (.walk) in Python + numpy, written from
format-spec/SPEC.md, so θ_t can be loaded without Rust.

    from read_walk import Walk
    w = Walk("run.walk")
    w.steps                 # step numbers present
    theta = w.state(10)     # np.ndarray float32, the full state before update 10
    w.tensors(10)           # {name: array shaped as in the layout}
    w.step_info(10)         # sample ids, augmentation bytes, scalars
    w.metadata              # the run description (model, dataset, seeds, ...)

Needs numpy, zstandard and xxhash (pip). Every reconstructed chunk is checked against its
stored xxh3-64, so the whole delta chain is verified; record CRC32Cs are not checked here (use
`sgdwalk-analyze verify`). Unfinished files (a killed writer) are read up to the last complete
record.

Command line:  python3 read_walk.py FILE [--digests]
"""
import hashlib
import json
import struct
import sys

import numpy as np
import xxhash
import zstandard

MAGIC = b"\x89SGDWLK\n"
RECORD_MAGIC = b"SWRC"
KIND_HEADER, KIND_STEP, KIND_EPOCH, KIND_RESUME, KIND_INDEX, KIND_FOOTER = 1, 2, 3, 4, 5, 6
SUPPORTED_MAJOR = 1


class WalkError(Exception):
    pass


def _unshuffle(planes: bytes, n: int) -> np.ndarray:
    p = np.frombuffer(planes, dtype=np.uint8).reshape(4, n).astype(np.uint32)
    return p[0] | (p[1] << 8) | (p[2] << 16) | (p[3] << 24)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint32(1)) ^ (np.uint32(0) - (z & np.uint32(1)))


def _pred2(p: np.ndarray, q: np.ndarray, mu: int) -> np.ndarray:
    d = (p - q).view(np.int32).astype(np.int64)
    step = (d * mu) >> 8  # arithmetic shift: floor division by 256
    return p + (step & 0xFFFFFFFF).astype(np.uint32)


class Walk:
    def __init__(self, path):
        self.path = str(path)
        with open(self.path, "rb") as f:
            self._bytes = f.read()
        b = self._bytes
        if len(b) < 64 or b[:8] != MAGIC:
            raise WalkError(f"not an sgdwalk recording: {self.path}")
        major, minor = struct.unpack_from("<HH", b, 8)
        if major != SUPPORTED_MAJOR:
            raise WalkError(f"format version {major}.{minor} is newer than this reader: {self.path}")
        self._records = {}  # step -> (payload offset, payload length, chain start, keyframe)
        self._resume = {}
        self.epochs = []
        self.finished = False
        off = 64
        header = self._record_at(off)
        if header is None or header[0] != KIND_HEADER:
            raise WalkError(f"truncated or missing HEADER record: {self.path}")
        self._parse_header(header[2], header[3])
        off = header[4]
        while True:
            rec = self._record_at(off)
            if rec is None:
                break  # end of file, or a torn tail
            kind, step, start, length, end = rec
            if kind == KIND_STEP:
                flags, _count, chain = struct.unpack_from("<IIQ", b, start)
                self._records[step] = (start, length, chain, bool(flags & 1))
            elif kind == KIND_EPOCH:
                self.epochs.append(self._parse_epoch(step, start))
            elif kind == KIND_RESUME:
                self._resume[step] = (start, length)
            elif kind in (KIND_INDEX, KIND_FOOTER):
                self.finished = True
                break
            off = end
        self.steps = sorted(self._records)
        self._cache = {}

    def _record_at(self, off):
        b = self._bytes
        if off + 32 > len(b) or b[off : off + 4] != RECORD_MAGIC:
            return None
        kind = b[off + 4]
        length, step = struct.unpack_from("<QQ", b, off + 8)
        start = off + 32
        end = start + length + (-length) % 8
        if end > len(b):
            return None
        return kind, step, start, length, end

    def _parse_header(self, start, length):
        b = self._bytes
        self.run_id = b[start : start + 16].hex()
        (self.created_unix_ms, self.state_len, self.chunk_len, self.keyframe_interval, _level, _codec) = struct.unpack_from(
            "<QQIIiB", b, start + 16
        )
        self.aug_bytes_per_sample, layout_len, meta_len = struct.unpack_from("<III", b, start + 48)
        self.layout = json.loads(b[start + 64 : start + 64 + layout_len])
        self.metadata = json.loads(b[start + 64 + layout_len : start + 64 + layout_len + meta_len])

    def _parse_epoch(self, step, start):
        b = self._bytes
        epoch, count = struct.unpack_from("<II", b, start)
        pos, evals = start + 8, []
        for _ in range(count):
            (n,) = struct.unpack_from("<I", b, pos)
            split = b[pos + 4 : pos + 4 + n].decode()
            loss, acc, samples = struct.unpack_from("<ddQ", b, pos + 4 + n)
            evals.append({"split": split, "loss": loss, "accuracy": acc, "samples": samples})
            pos += 4 + n + 24
        return {"epoch": epoch, "step": step, "evals": evals}

    def step_info(self, t):
        start, _length, chain, keyframe = self._records[t]
        b = self._bytes
        lr, loss, gnorm, unorm, wall = struct.unpack_from("<5d", b, start + 16)
        count, ids_codec, aug_codec = struct.unpack_from("<IBB", b, start + 56)
        ids_len, aug_len = struct.unpack_from("<II", b, start + 64)
        chunks = -(-self.state_len // self.chunk_len)
        pos = start + 72 + 24 * chunks
        ids_bytes = b[pos : pos + ids_len]
        if ids_codec == 1:
            ids = _unshuffle(zstandard.ZstdDecompressor().decompress(ids_bytes, max_output_size=4 * count), count)
        else:
            ids = np.frombuffer(ids_bytes, dtype="<u4").astype(np.uint32)
        aug = b[pos + ids_len : pos + ids_len + aug_len]
        if aug_codec == 2:
            aug = zstandard.ZstdDecompressor().decompress(aug, max_output_size=count * self.aug_bytes_per_sample)
        return {
            "step": t, "keyframe": keyframe, "chain_start_step": chain, "sample_ids": ids,
            "augmentation": bytes(aug), "learning_rate": lr, "minibatch_loss": loss,
            "grad_norm": gnorm, "update_norm": unorm, "wall_time_secs": wall,
        }

    def _decode(self, t, prev, prev2):
        start, _length, _chain, _key = self._records[t]
        b = self._bytes
        n_chunks = -(-self.state_len // self.chunk_len)
        ids_len, aug_len = struct.unpack_from("<II", b, start + 64)
        data = start + 72 + 24 * n_chunks + ids_len + aug_len
        out = np.empty(self.state_len, dtype=np.uint32)
        dctx = zstandard.ZstdDecompressor()
        for i in range(n_chunks):
            codec = b[start + 72 + 24 * i]
            stored_len, _crc, _rsv, xxh = struct.unpack_from("<IIIQ", b, start + 72 + 24 * i + 4)
            lo, hi = i * self.chunk_len, min((i + 1) * self.chunk_len, self.state_len)
            n = hi - lo
            raw = b[data : data + stored_len]
            data += stored_len
            if codec == 0:
                w = np.frombuffer(raw, dtype="<u4").astype(np.uint32)
            elif codec == 1:
                w = _unshuffle(dctx.decompress(raw, max_output_size=4 * n), n)
            elif codec == 2:
                w = _unshuffle(dctx.decompress(raw, max_output_size=4 * n), n) ^ prev[lo:hi]
            elif codec == 3:
                w = prev[lo:hi] + _unzigzag(_unshuffle(dctx.decompress(raw, max_output_size=4 * n), n))
            elif codec == 4:
                (mu,) = struct.unpack_from("<H", raw, 0)
                z = _unshuffle(dctx.decompress(raw[2:], max_output_size=4 * n), n)
                w = _pred2(prev[lo:hi], prev2[lo:hi], mu) + _unzigzag(z)
            else:
                raise WalkError(f"step {t} chunk {i}: unknown codec {codec}")
            if xxhash.xxh3_64_intdigest(w.astype("<u4").tobytes()) != xxh:
                raise WalkError(f"step {t} chunk {i}: reconstructed hash mismatch (delta chain broken)")
            out[lo:hi] = w
        return out

    def _bits(self, t):
        if t in self._cache:
            return self._cache[t]
        _s, _l, chain, _k = self._records[t]
        prev = prev2 = None
        for u in range(chain, t + 1):
            if u in self._cache:
                bits = self._cache[u]
            else:
                bits = self._decode(u, prev, prev2)
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

    def tensors(self, t) -> dict:
        flat = self.state(t)
        out = {}
        for spec in self.layout:
            n = int(np.prod(spec["shape"])) if spec["shape"] else 1
            o = spec["offset_elements"]
            out[spec["name"]] = flat[o : o + n].reshape(spec["shape"])
        return out


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    w = Walk(argv[1])
    if "--digests" in argv:
        # One line per step: sha256 of θ_t's little-endian bytes and the sample ids, for tests.
        for t in w.steps:
            info = w.step_info(t)
            state = hashlib.sha256(w.state(t).astype("<f4").tobytes()).hexdigest()
            ids = ",".join(str(int(i)) for i in info["sample_ids"])
            print(t, state, ids)
        return 0
    print(f"{w.path}: run {w.run_id}, {'finished' if w.finished else 'unfinished'}, {len(w.steps)} steps "
          f"({w.steps[0] if w.steps else '-'}..{w.steps[-1] if w.steps else '-'}), {w.state_len} f32 per state, "
          f"{len(w.layout)} tensors, {len(w.epochs)} epoch records")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
