"""Reading a recording: ``sgdwalk.open(path)`` → :class:`Walk`."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from . import _native
from ._run import DTYPE_SIZES, TensorEntry

if TYPE_CHECKING:
    import torch

SCALAR_NAMES = ("learning_rate", "minibatch_loss", "grad_norm", "update_norm", "wall_time_secs")

# numpy views of the layout dtypes; bf16 has no numpy type and travels as its 16 bits (int16).
_NP_DTYPES = {"f32": "<f4", "f64": "<f8", "f16": "<f2", "bf16": "<i2", "i64": "<i8", "i32": "<i4",
              "i16": "<i2", "i8": "i1", "u8": "u1", "bool": "?"}


@dataclass(frozen=True)
class StepInfo:
    """Everything of step t except its state: the minibatch B_t (sample ids into the training
    file), its augmentation bytes, and the scalars of update t (``None`` where not recorded; the
    final state has no update)."""

    step: int
    sample_ids: np.ndarray
    augmentation: bytes
    scalars: dict[str, float | None]
    keyframe: bool
    stored_bytes: int

    @property
    def lr(self) -> float | None:
        return self.scalars["learning_rate"]

    @property
    def loss(self) -> float | None:
        return self.scalars["minibatch_loss"]


class Walk:
    """A recording, memory-mapped (nothing is read in whole). ``steps`` lists the recorded
    steps; θ_t comes as a flat float32 array (``state``) or as torch tensors under the recorded
    names and dtypes (``state_dict``). A file still being written is read up to its last
    complete step; ``refresh()`` picks up what was appended since."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # Raw states are mapped by path: resolved now, so a later chdir does not matter.
        self._resolved = self.path.resolve()
        self._w = _native.Walk(os.fspath(path))
        self.header: dict[str, Any] = json.loads(self._w.header_json())
        self.layout: list[TensorEntry] = self._layout(self.header)
        self.state_len: int = int(self.header["state_len_elements"])
        self._steps = self._w.steps()

    @staticmethod
    def _layout(header: dict[str, Any]) -> list[TensorEntry]:
        trainable: dict[str, bool] = {}
        try:
            run = json.loads(header["metadata_json"])
            trainable = {e["name"]: bool(e["trainable"]) for e in run["layout"]["entries"]}
        except (ValueError, KeyError, TypeError):
            pass  # not an sgdwalk-record run description: trainable flags unknown
        out = []
        for t in header["layout"]:
            shape = tuple(int(d) for d in t["shape"])
            words = -(-int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZES[t["dtype"]] // 4)
            out.append(TensorEntry(t["name"], t["dtype"], shape, int(t["offset_elements"]), words,
                                   trainable.get(t["name"], t["dtype"] == "f32")))
        return out

    # ---- the file -------------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """Recorded step numbers, sorted (as of the last ``refresh``)."""
        return list(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and self._w.has_step(step)

    @property
    def run(self) -> dict[str, Any]:
        """The run description of the header (the metadata JSON as a dict)."""
        return json.loads(self.header["metadata_json"])

    @property
    def run_id(self) -> str:
        return bytes(self.header["run_id"]).hex()

    @property
    def is_finished(self) -> bool:
        """Whether the writer finished the file (else it is being written, or was killed)."""
        return self._w.is_finished()

    @property
    def format_version(self) -> tuple[int, int]:
        return self._w.format_version()

    @property
    def torn_tail_bytes(self) -> int:
        return self._w.torn_tail_bytes()

    def refresh(self) -> bool:
        """Reads records appended since the last call; True if new steps appeared."""
        grew = self._w.refresh()
        self._steps = self._w.steps()
        return grew

    @property
    def attachments(self) -> list[str]:
        return self._w.attachment_names()

    def attachment(self, name: str) -> bytes | None:
        """An attachment's bytes (SHA-256 checked), e.g. ``"model.pt"``; None if absent."""
        return self._w.attachment(name)

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch evaluation records."""
        return json.loads(self._w.epochs_json())

    # ---- states ---------------------------------------------------------------------------

    def state(self, step: int) -> np.ndarray:
        """θ_step as a read-only flat float32 array of ``state_len`` words (tensors that are not
        f32 appear as their packed bytes). A state stored raw is a view of the file (no copy,
        no decode; its checksums are verified); an encoded one is decoded by the Rust reader
        (bit-exact, hashes verified), reusing its cache for consecutive steps."""
        offset = self._w.raw_state_offset(step)
        if offset is not None:
            return np.memmap(self._resolved, dtype="<f4", mode="r", offset=offset, shape=(self.state_len,))
        return np.frombuffer(self._w.state_bytes(step), dtype="<f4")

    def tensors(self, step: int) -> dict[str, np.ndarray]:
        """θ_step as numpy arrays under the recorded names, shapes and dtypes (views of
        ``state(step)``; bf16 as its bits, int16)."""
        flat = self.state(step)
        raw = flat.view(np.uint8)
        out = {}
        for e in self.layout:
            if e.dtype == "f32":
                arr = flat[e.offset_words:e.offset_words + e.numel]
            else:
                start = e.offset_words * 4
                arr = raw[start:start + e.numel * DTYPE_SIZES[e.dtype]].view(_NP_DTYPES[e.dtype])
            out[e.name] = arr.reshape(e.shape)
        return out

    def state_dict(self, step: int, device: "str | torch.device | None" = None) -> "dict[str, torch.Tensor]":
        """θ_step as torch tensors (fresh, writable) under the recorded names and dtypes, on
        ``device`` (default CPU): ``model.load_state_dict(walk.state_dict(t))`` restores the
        recorded parameters and buffers (BatchNorm statistics, int64 ``num_batches_tracked``)."""
        import torch

        out = {}
        for e, (name, arr) in zip(self.layout, self.tensors(step).items()):
            t = torch.from_numpy(np.array(arr, copy=True))
            if e.dtype == "bf16":
                t = t.view(torch.int16).view(torch.bfloat16)
            out[name] = t if device is None else t.to(device)
        return out

    def step_info(self, step: int) -> StepInfo:
        """Sample ids, augmentation, scalars of step ``step`` (no state decode)."""
        ids, aug, scalars, keyframe, stored = self._w.step_info(step)
        return StepInfo(step, np.frombuffer(ids, dtype="<u4"), aug, dict(zip(SCALAR_NAMES, scalars)),
                        keyframe, stored)

    def pairs(self, steps: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(t, θ_t, θ_{t+1}) for every t (of ``steps``, if given) whose successor is recorded, in
        order; each state is decoded once (the reader keeps the last ones)."""
        present = set(self._steps)
        wanted = sorted(set(steps) if steps is not None else present)
        for t in wanted:
            if t in present and t + 1 in present:
                yield t, self.state(t), self.state(t + 1)

    def close(self) -> None:
        """Releases the file (its map and shared lock)."""
        self._w = None  # type: ignore[assignment]

    def __enter__(self) -> "Walk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Walk({os.fspath(self.path)!r}, steps={len(self._steps)}, finished={self.is_finished})"


def open(path: str | os.PathLike[str]) -> Walk:  # noqa: A001 - the package's entry point
    """Opens a recording for reading (memory-mapped)."""
    return Walk(path)
