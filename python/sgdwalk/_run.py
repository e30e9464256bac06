"""The run description a recording's header carries (metadata JSON), as ``sgdwalk-record``
writes it for a TorchScript model trained on a ``tensors:PATH`` dataset: the same fields, the
same layout rule, the same dataset identity, so that ``sgdwalk-analyze`` reads a Python-made
recording exactly like a ``sgdwalk-record`` one. The Rust definitions are
workload/src/run.rs (RunDescription), workload/src/state.rs (StateLayout), workload/src/data.rs
and workload/src/tensors.rs (DatasetSpec, DatasetIdentity); a test compares this module's output
with the recorder's.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RUN_DESCRIPTION_VERSION = 1
MODULE_ATTACHMENT = "model.pt"
_MASK64 = (1 << 64) - 1

# Layout dtype names (SPEC.md §4.2) and their sizes in bytes.
DTYPE_SIZES = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "bool": 1}


def derive_seed(seed: int, purpose: int) -> int:
    """The recorder's seed derivation (SplitMix64 finalizer, workload/src/run.rs)."""
    z = (seed ^ (purpose * 0x9E3779B97F4A7C15)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def seeds(seed: int) -> dict[str, int]:
    """The four seeds sgdwalk-record derives from ``--seed``."""
    return {
        "init": derive_seed(seed, 1),
        "data_order": derive_seed(seed, 2),
        "augmentation": derive_seed(seed, 3),
        "noise": derive_seed(seed, 4),
    }


# ---- the state layout --------------------------------------------------------------------------


def torch_dtype_name(dtype: Any) -> str:
    """The layout name of a torch dtype; ValueError for one a recording cannot hold."""
    import torch

    names = {
        torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
        torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
        torch.uint8: "u8", torch.bool: "bool",
    }
    try:
        return names[dtype]
    except KeyError:
        raise ValueError(f"{dtype} is not a dtype a recording can hold") from None


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the flat state: ``len_words`` 4-byte words from ``offset_words``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset_words: int
    len_words: int
    trainable: bool

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def layout_of(named: Sequence[tuple[str, Any, bool]], module_name: str) -> list[TensorEntry]:
    """The canonical layout (workload/src/state.rs): tensors sorted by name (byte order, as Rust
    sorts Strings), each taking ceil(numel × size / 4) words; trainable ones must be f32."""
    entries = []
    offset = 0
    for name, tensor, trainable in sorted(named, key=lambda x: x[0].encode()):
        dtype = torch_dtype_name(tensor.dtype)
        if trainable and dtype != "f32":
            raise ValueError(f"{module_name}: parameter {name} is {dtype}; trainable parameters must be f32 "
                             "(sgdwalk trains in f32)")
        shape = tuple(int(d) for d in tensor.shape)
        words = -(-math.prod(shape) * DTYPE_SIZES[dtype] // 4)
        entries.append(TensorEntry(name, dtype, shape, offset, words, bool(trainable)))
        offset += words
    return entries


def layout_json(entries: Sequence[TensorEntry]) -> dict[str, Any]:
    """StateLayout as serde writes it (``dtype`` omitted for f32)."""
    out = []
    for e in entries:
        d: dict[str, Any] = {
            "name": e.name,
            "shape": list(e.shape),
            "offset_elements": e.offset_words,
            "len_elements": e.len_words,
            "trainable": e.trainable,
        }
        if e.dtype != "f32":
            d["dtype"] = e.dtype
        out.append(d)
    return {"entries": out}


# ---- the tensors dataset -----------------------------------------------------------------------

_ST_DTYPES = {"U8": "<u1", "I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U16": "<u2",
              "U32": "<u4", "U64": "<u8", "F32": "<f4"}


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """The tensors (name → {dtype, shape, data_offsets}), the ``__metadata__`` and where the data
    starts, reading only the header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > 100 << 20:
            raise ValueError(f"{path}: not a safetensors file (header of {n} bytes)")
        header = json.loads(f.read(n))
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def _numbers(key: str, text: str) -> list[float]:
    try:
        return [float(v.strip()) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"metadata {key} = {text!r} is not a comma-separated list of numbers") from None


@dataclass
class TensorsDataset:
    """A ``tensors:PATH`` dataset as the recorder describes it."""

    spec: dict[str, Any]
    identity: dict[str, Any]
    train_samples: int
    classes: int


def tensors_dataset(path: str | os.PathLike[str], mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, classes: int | None = None) -> TensorsDataset:
    """DatasetSpec and DatasetIdentity of a safetensors dataset file (workload/src/tensors.rs):
    explicit values win over the file's metadata, which wins over mean 0, std 1 and
    classes = largest label + 1. ``path`` is stored as given, as ``--dataset tensors:PATH``."""
    p = Path(path)
    header, meta, data_start = read_safetensors_header(p)
    if "train_x" not in header or "train_y" not in header:
        raise ValueError(f"{p}: a tensors dataset needs train_x and train_y")
    counts = {part: int(header[f"{part}_x"]["shape"][0]) for part in ("train", "val", "test")
              if f"{part}_x" in header}
    train, val, test = counts["train"], counts.get("val", 0), counts.get("test", 0)
    if mean is None:
        mean = _numbers("sgdwalk.mean", meta["sgdwalk.mean"]) if "sgdwalk.mean" in meta else [0.0]
    if std is None:
        std = _numbers("sgdwalk.std", meta["sgdwalk.std"]) if "sgdwalk.std" in meta else [1.0]
    if classes is None and "sgdwalk.classes" in meta:
        classes = int(meta["sgdwalk.classes"])
    if classes is None:
        top = -1
        with open(p, "rb") as f:
            for part in counts:
                t = header[f"{part}_y"]
                start, end = t["data_offsets"]
                f.seek(data_start + start)
                labels = np.frombuffer(f.read(end - start), dtype=_ST_DTYPES[t["dtype"]])
                if labels.size:
                    top = max(top, int(labels.max()))
        classes = max(top + 1, 1)
    sha = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    spec = {
        "name": "tensors",
        "train_range": [0, train],
        "val_range": [train, train + val],
        "augment": False,
        "tensors": {"path": os.fspath(path), "mean": [float(m) for m in mean],
                    "std": [float(s) for s in std], "classes": int(classes)},
    }
    identity = {
        "name": "tensors",
        "files": [{"file": p.name, "sha256": sha.hexdigest(), "len_bytes": p.stat().st_size}],
        "train_samples": train + val,
        "test_samples": test,
    }
    return TensorsDataset(spec, identity, train, int(classes))


# ---- optimizer, schedule, provenance -----------------------------------------------------------


def optimizer_json(optimizer: Any) -> dict[str, Any]:
    """OptimizerSpec of a torch optimizer (SGD, Adam, AdamW; its first parameter group), or
    plain SGD for ``None``."""
    if optimizer is None:
        return {"kind": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                "decoupled_weight_decay": False}
    name = type(optimizer).__name__
    g = optimizer.param_groups[0]
    if name == "SGD":
        return {"kind": "sgd", "momentum": float(g.get("momentum", 0.0)), "nesterov": bool(g.get("nesterov", False)),
                "weight_decay": float(g.get("weight_decay", 0.0)), "decoupled_weight_decay": False}
    if name in ("Adam", "AdamW"):
        b1, b2 = g.get("betas", (0.9, 0.999))
        return {"kind": "adam", "beta1": float(b1), "beta2": float(b2), "eps": float(g.get("eps", 1e-8)),
                "weight_decay": float(g.get("weight_decay", 0.0)), "decoupled_weight_decay": name == "AdamW"}
    raise ValueError(f"optimizer {name}: a recording describes SGD, Adam or AdamW")


def schedule_json(base_lr: float) -> dict[str, Any]:
    """A constant schedule at ``base_lr`` (the recorded per-step learning rates are what the
    analysis uses; the schedule is descriptive)."""
    return {"base_lr": float(base_lr), "kind": {"kind": "constant"}, "warmup_steps": 0}


def provenance_json(tool_version: str, device: str, threads: int) -> dict[str, Any]:
    return {
        "tool": "sgdwalk-python",
        "tool_version": tool_version,
        "hostname": socket.gethostname(),
        "device": device,
        "threads": int(threads),
        "started_unix_secs": int(time.time()),
        "resumed_at_steps": [],
    }


# ---- record policies ---------------------------------------------------------------------------


class Policy:
    """Which steps a recording keeps (recorder/src/policy.rs): ``every``, ``every:K``,
    ``window:W,K``, ``epochs:1,10`` or ``none``; θ_0 and the final state are always kept
    (except under ``none``)."""

    def __init__(self, text: str = "every") -> None:
        self.text = text
        kind, _, arg = text.partition(":")

        def nums() -> list[int]:
            try:
                return [int(x.strip()) for x in arg.split(",")]
            except ValueError:
                raise ValueError(f"policy {text!r}: not a number (expected every, epochs:1,10, every:K or window:W,K)") from None

        if text in ("every", "none"):
            self.kind, self.args = text, []
        elif kind == "epochs" and arg:
            self.kind, self.args = "epochs", nums()
            if 0 in self.args or any(e < 0 for e in self.args):
                raise ValueError(f"policy {text!r}: epochs are numbered from 1")
        elif kind == "every" and arg:
            self.kind, self.args = "every-k", nums()
            if len(self.args) != 1 or self.args[0] <= 0:
                raise ValueError(f"policy {text!r}: K must be one positive number")
        elif kind == "window" and arg:
            self.kind, self.args = "window", nums()
            if len(self.args) != 2 or not 0 < self.args[0] < self.args[1]:
                raise ValueError(f"policy {text!r}: need 0 < W < K")
        else:
            raise ValueError(f"policy {text!r}: unknown (expected every, epochs:1,10, every:K or window:W,K)")

    def records(self, t: int, steps_per_epoch: int) -> bool:
        if self.kind == "none":
            return False
        if t == 0 or self.kind == "every":
            return True
        if self.kind == "epochs":
            return any((e - 1) * steps_per_epoch <= t <= e * steps_per_epoch for e in self.args)
        if self.kind == "every-k":
            return t % self.args[0] == 0
        pairs, every = self.args
        return t % every <= pairs

    def __str__(self) -> str:
        return self.text
