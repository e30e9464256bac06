"""Reading: the package against the Rust reader on every fixture, typed state_dicts, zero-copy
raw states, errors, pairs and following a growing file."""
from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sgdwalk
from conftest import FIXTURES, rust_digests

ALL_FIXTURES = sorted(p for d in ("v1", "edge", "bad") for p in (FIXTURES / d).iterdir()
                      if p.suffix in (".sgdw", ".bin"))


def python_digests(path: Path) -> dict:
    """The same description as walk_digests.rs, read through the package; the first format
    error's kind ends it, as there."""
    try:
        w = sgdwalk.open(path)
        steps = []
        for t in w.steps:
            state = w.state(t)
            info = w.step_info(t)
            steps.append({
                "step": t,
                "state_sha256": hashlib.sha256(np.ascontiguousarray(state).tobytes()).hexdigest(),
                "sample_ids": [int(i) for i in info.sample_ids],
                "augmentation": info.augmentation.hex(),
                "scalars": [None if v is None else struct.pack(">d", v).hex() for v in info.scalars.values()],
                "keyframe": info.keyframe,
            })
        attachments = {}
        for name in w.attachments:
            attachments[name] = hashlib.sha256(w.attachment(name) or b"").hexdigest()
        return {
            "path": str(path),
            "finished": w.is_finished,
            "torn_tail_bytes": w.torn_tail_bytes,
            "metadata_json": w.header["metadata_json"],
            "attachments": attachments,
            "epochs": w.epochs(),
            "steps": steps,
        }
    except sgdwalk.FormatError as e:
        return {"path": str(path), "error": e.kind}


def test_every_fixture_reads_as_the_rust_reader_reads_it() -> None:
    assert len(ALL_FIXTURES) > 30
    rust = rust_digests(ALL_FIXTURES)
    errors = 0
    for path in ALL_FIXTURES:
        want = rust[str(path)]
        got = python_digests(path)
        if "error" in want:
            errors += 1
            assert got == {"path": str(path), "error": want["error"]}, path.name
        else:
            assert got == want, path.name
    # The bad fixtures are refused (some only when a step is decoded).
    assert errors >= 15, errors


def test_killed_writer_fixture_reads_up_to_the_last_complete_step() -> None:
    w = sgdwalk.open(FIXTURES / "v1" / "killed_writer.sgdw")
    assert not w.is_finished
    assert w.steps == [0, 1, 2, 3, 4, 5]
    assert w.torn_tail_bytes > 0


def test_typed_state_dict_has_the_recorded_names_dtypes_and_bytes() -> None:
    import torch

    w = sgdwalk.open(FIXTURES / "v1" / "typed_attachment.sgdw")
    sd = w.state_dict(3)
    assert {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()} == {
        "w": (torch.float32, (5, 4)),
        "count": (torch.int64, ()),
        "mask": (torch.uint8, (7,)),
        "flags": (torch.bool, (3,)),
        "half": (torch.float16, (3,)),
    }
    raw = np.ascontiguousarray(w.state(3)).view(np.uint8)
    for e in w.layout:
        t = sd[e.name]
        nbytes = t.numel() * t.element_size()
        start = e.offset_words * 4
        assert t.reshape(-1).view(torch.uint8).numpy().tobytes() == raw[start:start + nbytes].tobytes(), e.name
        # Padding to a whole word is zero.
        assert not raw[start + nbytes:start + e.len_words * 4].any(), e.name
    # Tensors are fresh (writable, not views of the file).
    sd["w"].add_(1.0)
    assert not np.array_equal(sd["w"].numpy().reshape(-1), w.state(3)[:20])


def test_a_raw_state_is_a_view_of_the_file() -> None:
    path = FIXTURES / "v1" / "raw_fallback.sgdw"
    w = sgdwalk.open(path)
    for t in w.steps:
        assert w._w.chunk_codecs(t) and set(w._w.chunk_codecs(t)) == {"raw"}
        s = w.state(t)
        assert isinstance(s, np.memmap), type(s)
        assert Path(s.filename) == path.resolve()
        decoded = np.frombuffer(w._w.state_bytes(t), dtype="<f4")
        assert s.tobytes() == decoded.tobytes()
    # An encoded state is decoded.
    w2 = sgdwalk.open(FIXTURES / "v1" / "basic_pred2.sgdw")
    assert not isinstance(w2.state(1), np.memmap)


def test_errors_are_exceptions_with_kind_and_offset() -> None:
    with pytest.raises(sgdwalk.NotARecordingError) as e:
        sgdwalk.open(FIXTURES / "bad" / "not_a_recording.bin")
    assert e.value.kind == "not_a_recording" and e.value.path and e.value.path.endswith("not_a_recording.bin")
    with pytest.raises(sgdwalk.ChecksumMismatchError) as c:
        w = sgdwalk.open(FIXTURES / "bad" / "step_payload_bitflip.sgdw")
        for t in w.steps:
            w.state(t)
    assert c.value.kind == "checksum_mismatch"
    assert isinstance(c.value.offset, int) and c.value.offset > 0
    assert isinstance(c.value, sgdwalk.FormatError)
    w = sgdwalk.open(FIXTURES / "v1" / "basic_pred2.sgdw")
    with pytest.raises(sgdwalk.StepNotFoundError) as s:
        w.state(15)
    assert s.value.kind == "step_not_found" and s.value.step == 15
    with pytest.raises(sgdwalk.UnsupportedFormatError):
        sgdwalk.open(FIXTURES / "bad" / "newer_major.sgdw")


def test_pairs_decode_each_state_once() -> None:
    w = sgdwalk.open(FIXTURES / "v1" / "basic_pred2.sgdw")
    pairs = [(t, a.copy(), b.copy()) for t, a, b in w.pairs()]
    # Steps 0..=9 and 20..=23: each decoded once along the way (the cache keeps the last ones).
    assert w._w.decoded_steps() == len(w.steps)
    assert [t for t, _, _ in pairs] == [t for t in w.steps if t + 1 in w.steps]
    for t, a, b in pairs:
        assert a.tobytes() == w.state(t).tobytes() and b.tobytes() == w.state(t + 1).tobytes()
    assert [t for t, _, _ in w.pairs([3, 9, 21, 40])] == [3, 21]


def test_step_info_and_run() -> None:
    w = sgdwalk.open(FIXTURES / "v1" / "basic_pred2.sgdw")
    info = w.step_info(2)
    assert info.sample_ids.dtype == np.uint32 and len(info.sample_ids) == 8
    assert len(info.augmentation) == 16
    assert set(info.scalars) == {"learning_rate", "minibatch_loss", "grad_norm", "update_norm", "wall_time_secs"}
    assert isinstance(w.run, dict)
    assert w.format_version == (1, 0)
    assert len(w.steps) == 14 and 2 in w and 15 not in w


def _write_noise_file(path: Path, n: int, steps: int, seed: int) -> None:
    """A recording of incompressible states (stored raw) but for step 11, smooth (encoded),
    through the package's writer."""
    rng = np.random.default_rng(seed)
    wr = sgdwalk._native.NativeWriter(str(path), [("w", "f32", [n])], "{}", bytes(16), 0, fsync="never", queue=2)
    ids = np.zeros(0, dtype=np.uint32)
    smooth = np.repeat(np.arange(n // 4096 + 1, dtype=np.float32), 4096)[:n]
    for t in range(steps):
        state = rng.integers(0, 1 << 32, size=n, dtype=np.uint32).view(np.float32) if t != 11 else smooth + t
        wr.submit(t, state, ids, b"", [None] * 5)
    wr.finish()


def test_reading_one_state_of_a_large_file_maps_only_that_state(tmp_path: Path) -> None:
    """Zero-copy and no whole-file read: the peak RSS of a process that opens a 1 GB recording
    and reads one raw and one encoded state stays far below the file's size."""
    n = 8 << 20  # 32 MiB per state
    path = tmp_path / "large.walk"
    _write_noise_file(path, n, 33, seed=5)
    size = path.stat().st_size
    assert size > 1_000_000_000, size
    probe = textwrap.dedent(f"""
        import numpy as np, sgdwalk
        w = sgdwalk.open({str(path)!r})
        raw = w.state(10)
        assert isinstance(raw, np.memmap)
        enc = w.state(11)
        assert not isinstance(enc, np.memmap)
        print(float(raw[:1000].astype(np.float64).sum()), float(enc[-1]))
        # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec).
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        print(int(hwm.split()[1]) * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    peak_bytes = int(out.stdout.split()[-1])
    print(f"file {size / 1e9:.2f} GB, peak RSS {peak_bytes / 1e6:.0f} MB")
    # One raw state mapped (32 MiB) plus one decoded state and its copy (64 MiB) plus the
    # interpreter and numpy: well under a quarter of the file.
    assert peak_bytes < size / 4, (peak_bytes, size)
    path.unlink()


def test_refresh_follows_a_file_being_written(tmp_path: Path) -> None:
    path = tmp_path / "growing.walk"
    n = 1000
    wr = sgdwalk._native.NativeWriter(str(path), [("w", "f32", [n])], "{}", bytes(16), 0, fsync="never")
    ids = np.arange(4, dtype=np.uint32)
    for t in range(3):
        wr.submit(t, np.full(n, t, dtype=np.float32), ids, b"", [0.1, 1.0, None, None, None])
    wr.flush()
    w = sgdwalk.open(path)
    assert w.steps == [0, 1, 2] and not w.is_finished
    assert not w.refresh()
    for t in range(3, 6):
        wr.submit(t, np.full(n, t, dtype=np.float32), ids, b"", [0.1, 1.0, None, None, None])
    wr.flush()
    assert w.refresh()
    assert w.steps == list(range(6))
    assert float(w.state(5)[0]) == 5.0
    wr.finish()
    w.refresh()
    assert w.is_finished
    assert w.step_info(4).lr == 0.1 and w.step_info(4).scalars["grad_norm"] is None
