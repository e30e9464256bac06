#!/usr/bin/env python3
"""PyTorch's side of the cross-check of a ``--model torchscript:`` recording.

Replays the first steps of a recording in PyTorch itself and writes what PyTorch computes, so a
test can hold it against the recording and the analyzer's ``interp`` table:

    . scripts/env.sh
    "$SGDWALK_TORCH_PYTHON" tests/python/torch_crosscheck.py run.walk model.pt data.safetensors \\
        --steps 20 --out crosscheck.json

**Training.** θ_0 is read from the recording (``read_walk``, names = PyTorch's dotted
``state_dict`` keys) into the TorchScript module (``torch.jit.load``). Each update t uses the
recorded sample ids of step t (rows of ``train_x``) and the recorded learning rate, in train mode
(BatchNorm batch statistics, running statistics advanced by the forward pass), the mean
cross-entropy, and plain SGD with coupled weight decay (``optimizer.weight_decay`` of the run
description), computed as the recorder does::

    g = d loss / d θ            (trainable parameters only)
    d = g + wd · θ              (f32; skipped when wd = 0)
    θ ← θ + (−lr) · d           (f32; the update added in place)

Two replays are reported per step t: ``free_run`` (PyTorch's own trajectory from θ_0, so
differences can accumulate) and ``one_step`` (one update from the *recorded* θ_t). Each compares
PyTorch's θ_{t+1} with the recorded θ_{t+1} tensor by tensor as ‖Δ‖ / ‖θ_rec‖ (‖Δ‖ where θ_rec is
zero), and gives PyTorch's minibatch loss, gradient norm (before weight decay) and update norm
(squares summed in f64) next to the recorded scalars.

**Interpolation.** For the steps ``--interp-steps`` (default 0, 5, 10) and α in ``--alphas``
(default 0, 0.5, 1): the loss and accuracy at θ_t + α(θ_{t+1} − θ_t), with the *recorded* θ_t and
θ_{t+1}, on the first ``--eval-samples`` (200) samples of the validation split (``val_x``) or,
without one, the test split (``test_x``), in batches of ``--eval-batch-size`` (100), under both
BatchNorm policies:

- ``train-mode``: every batch normalized with its own statistics; the running statistics the
  forward passes change are restored afterwards;
- ``eval-mode``: the running statistics, interpolated like the weights.

Floating-point tensors are interpolated as the analyzer does: ``f32((1 − α)·a + α·b)`` computed
in f64, the ends copied exactly (α = 0 gives θ_t, α = 1 gives θ_{t+1}); integer and bool tensors
(BatchNorm's ``num_batches_tracked``) are taken from θ_t for α < 0.5, else from θ_{t+1}. The loss
is the mean per-sample cross-entropy (f32 per sample, summed in f64), the accuracy the fraction of
samples whose largest logit is the label.

**Preprocessing** as the recorder's ``tensors:`` datasets: u8 inputs ``x / 255``, f32 inputs as
stored; then ``(x − mean) / std`` per entry of dim 1 (one value: all entries), with mean and std
from the run description (``dataset.tensors``), else the file's ``sgdwalk.mean`` /
``sgdwalk.std`` metadata, else 0 and 1. Labels as int64.

The run must be one this replay can reproduce: SGD without momentum, no gradient noise, no
augmentation, no full-batch accumulation, coupled weight decay; and the module and dataset files
must be the recorded ones (sha256 against the run description). Anything else exits with 2 and
says why. The JSON holds only finite numbers (NaN and infinities become null).

tests/python/torch_crosscheck_selftest.py checks this script against fake recordings.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "python"))
import read_walk  # noqa: E402  (examples/python/read_walk.py)

# Element types of the recording layout (workload/src/state.rs StateDType) as numpy dtypes.
LAYOUT_DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype("<f4"), "f64": np.dtype("<f8"), "f16": np.dtype("<f2"),
    "i64": np.dtype("<i8"), "i32": np.dtype("<i4"), "i16": np.dtype("<i2"), "i8": np.dtype("i1"),
    "u8": np.dtype("u1"), "bool": np.dtype("?"),
}


class CrosscheckError(Exception):
    """A recording, module or dataset this cross-check cannot (or must not) replay."""


# --------------------------------------------------------------------------------------------
# The recording


def open_walk(path: Path) -> Any:
    """The recording, through ``read_walk.open`` (or the ``Walk`` class of older readers)."""
    opener = getattr(read_walk, "open", None) or read_walk.Walk
    return opener(str(path))


def _layout_dtypes(walk: Any) -> dict[str, str]:
    """Each tensor's layout dtype name: the HEADER layout's ``dtype`` where it is not ``f32``,
    else the run description's ``layout.entries[].dtype``, else ``f32`` (the only dtype of
    recordings from before integer buffers were stored)."""
    described = {}
    desc = walk.metadata if isinstance(walk.metadata, dict) else {}
    for e in (desc.get("layout") or {}).get("entries") or []:
        if isinstance(e, dict) and "name" in e:
            described[e["name"]] = e.get("dtype", "f32")
    out = {}
    for t in walk.layout:
        header = t.get("dtype", "f32")
        out[t["name"]] = header if header != "f32" else described.get(t["name"], "f32")
    return out


def _state_dict_from_layout(walk: Any, t: int) -> dict[str, np.ndarray]:
    """θ_t by name from the flat state, for readers without ``state_dict``: an ``f32`` tensor is
    its words; any other dtype is its little-endian bytes packed into 4-byte words (zero-padded
    to a whole word), as workload/src/state.rs stores it. Each tensor's word count must fill the
    gap to the next tensor's offset (a check of the dtypes)."""
    words = np.ascontiguousarray(walk.state(t)).view("<u4")
    dtypes = _layout_dtypes(walk)
    specs = sorted(walk.layout, key=lambda spec: int(spec["offset_elements"]))
    ends = [int(spec["offset_elements"]) for spec in specs[1:]] + [len(words)]
    out = {}
    for spec, end in zip(specs, ends, strict=True):
        name, shape = spec["name"], [int(d) for d in spec["shape"]]
        dt = LAYOUT_DTYPES.get(dtypes[name])
        if dt is None:
            raise CrosscheckError(f"tensor {name}: layout dtype {dtypes[name]!r} is not supported here")
        numel = math.prod(shape)
        n_words = -(-numel * dt.itemsize // 4)
        o = int(spec["offset_elements"])
        if o + n_words != end:
            raise CrosscheckError(f"tensor {name}: {dtypes[name]} {shape} takes {n_words} words, the layout "
                                  f"leaves {end - o}")
        raw = words[o : o + n_words].tobytes()[: numel * dt.itemsize]
        out[name] = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    return out


def recorded_state(walk: Any, t: int) -> dict[str, torch.Tensor]:
    """θ_t as {name: tensor} with the recorded dtypes and shapes."""
    if t not in set(walk.steps):
        raise CrosscheckError(f"step {t} is not in the recording (record with --record every)")
    sd = walk.state_dict(t) if hasattr(walk, "state_dict") else _state_dict_from_layout(walk, t)
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in sd.items()}


@dataclass
class Run:
    """What the replay needs from the run description."""

    weight_decay: float
    mean: list[float] | None
    std: list[float] | None
    threads: int | None
    module_sha256: str | None
    dataset_sha256s: list[str]


def read_run(walk: Any) -> Run:
    """Reads and checks the run description: only plain SGD runs can be replayed here."""
    m = walk.metadata
    if not isinstance(m, dict) or "optimizer" not in m:
        raise CrosscheckError("the recording's metadata is not an sgdwalk-record run description")
    opt = m["optimizer"]
    problems = []
    if opt.get("kind") != "sgd":
        problems.append(f"optimizer {opt.get('kind')!r} (only sgd)")
    if float(opt.get("momentum", 0.0)) != 0.0 or opt.get("nesterov"):
        problems.append("momentum")
    wd = float(opt.get("weight_decay", 0.0))
    if wd != 0.0 and opt.get("decoupled_weight_decay"):
        problems.append("decoupled weight decay")
    if float(m.get("noise_std", 0.0)) != 0.0:
        problems.append("gradient noise")
    if m.get("augmentation") or (m.get("dataset") or {}).get("augment"):
        problems.append("augmentation")
    if m.get("full_batch"):
        problems.append("full-batch gradient descent")
    model = m.get("model") or {}
    if model.get("name") not in (None, "torchscript"):
        problems.append(f"built-in model {model.get('name')!r} (not a TorchScript module)")
    if problems:
        raise CrosscheckError("this replay covers plain SGD on a TorchScript module only; the run has "
                              + ", ".join(problems))
    tensors = (m.get("dataset") or {}).get("tensors") or {}
    identity = m.get("dataset_identity") or {}
    return Run(
        weight_decay=wd,
        mean=[float(v) for v in tensors["mean"]] if "mean" in tensors else None,
        std=[float(v) for v in tensors["std"]] if "std" in tensors else None,
        threads=(m.get("provenance") or {}).get("threads"),
        module_sha256=model.get("sha256"),
        dataset_sha256s=[f["sha256"] for f in identity.get("files", []) if isinstance(f, dict) and "sha256" in f],
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The dataset


@dataclass
class Dataset:
    """The safetensors dataset, normalized on demand."""

    parts: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "train" | "val" | "test" -> (x, y)
    mean: torch.Tensor
    std: torch.Tensor
    normalization_source: str

    def batch(self, part: str, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (f32, normalized) and int64 labels of rows `ids` of `part`."""
        x, y = self.parts[part]
        xb = x.index_select(0, ids)
        xb = xb.to(torch.float32).div(255.0) if xb.dtype == torch.uint8 else xb.to(torch.float32)
        xb = xb.sub(_along_dim1(self.mean, xb)).div(_along_dim1(self.std, xb))
        return xb.to(device), y.index_select(0, ids).to(device)


def _along_dim1(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`v` (one value, or one per entry of dim 1 of `x`) shaped to broadcast against `x`."""
    return v.view([1, -1] + [1] * (x.dim() - 2)) if v.numel() > 1 else v.view([1] * x.dim())


def _per_channel(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def load_dataset(path: Path, run: Run) -> Dataset:
    """Reads `path` (train_x/train_y, optional val_*/test_*) and resolves the normalization."""
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with safe_open(str(path), framework="np") as f:
        keys = set(f.keys())
        meta = f.metadata() or {}
        for part in ("train", "val", "test"):
            if f"{part}_x" in keys and f"{part}_y" in keys:
                x = np.ascontiguousarray(f.get_tensor(f"{part}_x"))
                y = f.get_tensor(f"{part}_y")
                if x.dtype not in (np.uint8, np.float32):
                    raise CrosscheckError(f"{path}: {part}_x is {x.dtype}, expected u8 or f32")
                if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
                    raise CrosscheckError(f"{path}: {part}_y must be [N] integers matching {part}_x")
                parts[part] = (torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
    if "train" not in parts:
        raise CrosscheckError(f"{path}: no train_x/train_y")
    if run.mean is not None and run.std is not None:
        mean, std, source = run.mean, run.std, "run description"
    elif "sgdwalk.mean" in meta or "sgdwalk.std" in meta:
        mean = _per_channel(meta.get("sgdwalk.mean", "0"))
        std = _per_channel(meta.get("sgdwalk.std", "1"))
        source = "file metadata"
    else:
        mean, std, source = [0.0], [1.0], "defaults"
    channels = parts["train"][0].shape[1] if parts["train"][0].dim() > 1 else 1
    for what, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise CrosscheckError(f"{what} has {len(v)} values for {channels} entries of dim 1")
    return Dataset(parts, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32), source)


# --------------------------------------------------------------------------------------------
# The module


class Net:
    """A TorchScript module with its tensors by name (parameters first, then buffers)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.module = torch.jit.load(str(path), map_location=device)
        self.params = dict(self.module.named_parameters())
        self.buffers = dict(self.module.named_buffers())
        self.tensors = {**self.params, **self.buffers}
        self.trainable = [n for n, p in self.params.items() if p.requires_grad]
        if not self.trainable:
            raise CrosscheckError(f"{path}: the module has no trainable parameters")

    def check_names(self, recorded: Mapping[str, torch.Tensor]) -> None:
        """The recording must hold exactly the module's tensors, with their shapes."""
        missing = sorted(set(self.tensors) - set(recorded))
        extra = sorted(set(recorded) - set(self.tensors))
        if missing or extra:
            raise CrosscheckError(f"module and recording disagree: missing in the recording {missing}, "
                                  f"not in the module {extra}")
        for n, t in self.tensors.items():
            if tuple(recorded[n].shape) != tuple(t.shape):
                raise CrosscheckError(f"tensor {n}: recorded shape {list(recorded[n].shape)}, module {list(t.shape)}")

    @torch.no_grad()
    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copies `state` into the module's own tensors, converting to their dtypes (a recorded
        value that the module's dtype cannot hold exactly is an error)."""
        for n, dst in self.tensors.items():
            src = state[n].to(dst.device)
            if src.dtype != dst.dtype:
                converted = src.to(dst.dtype)
                if not torch.equal(converted.to(src.dtype), src):
                    raise CrosscheckError(
                        f"tensor {n}: recorded {src.dtype} values do not fit the module's {dst.dtype}")
                src = converted
            dst.copy_(src)

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of every tensor, on the CPU."""
        return {n: t.detach().to("cpu", copy=True) for n, t in self.tensors.items()}

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, weight_decay: float) -> dict[str, float]:
        """One update as the recorder applies it; returns PyTorch's scalars of the update."""
        self.module.train()
        params = [self.params[n] for n in self.trainable]
        loss = F.cross_entropy(self.module(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        grad_sq = sum(float(g.double().square().sum()) for g in grads)
        update_sq = 0.0
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                d = g.add(p.mul(weight_decay)) if weight_decay != 0.0 else g
                delta = d.mul(-lr)
                update_sq += float(delta.double().square().sum())
                p.add_(delta)
        return {"minibatch_loss": float(loss.detach()), "grad_norm": math.sqrt(grad_sq),
                "update_norm": math.sqrt(update_sq)}

    @contextlib.contextmanager
    def buffers_restored(self) -> Iterator[None]:
        """Restores every buffer (BatchNorm running statistics, counters) on exit."""
        saved = {n: b.detach().clone() for n, b in self.buffers.items()}
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in self.buffers.items():
                    b.copy_(saved[n])


# --------------------------------------------------------------------------------------------
# The measurements


def relative_differences(ours: Mapping[str, torch.Tensor], recorded: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """‖ours − recorded‖ / ‖recorded‖ per tensor (‖ours − recorded‖ where recorded is zero), in f64."""
    out = {}
    for n, r in recorded.items():
        a, b = ours[n].double(), r.double()
        diff = float((a - b).norm())
        ref = float(b.norm())
        out[n] = diff / ref if ref > 0 else diff
    return out


def summarize(diffs: Mapping[str, float]) -> dict[str, Any]:
    worst = max(diffs, key=lambda n: (not math.isfinite(diffs[n]), diffs[n]))
    return {"max_rel_diff": diffs[worst], "worst_tensor": worst, "rel_diff": dict(diffs)}


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θ_t + α(θ_{t+1} − θ_t) as the analyzer computes it (see the module docstring)."""
    out = {}
    for n, x in a.items():
        y = b[n]
        if not x.is_floating_point():
            out[n] = (x if alpha < 0.5 else y).clone()
        elif alpha == 0.0:
            out[n] = x.clone()
        elif alpha == 1.0:
            out[n] = y.clone()
        else:
            out[n] = ((1.0 - alpha) * x.double() + alpha * y.double()).to(x.dtype)
    return out


@torch.no_grad()
def evaluate(net: Net, data: Dataset, part: str, n: int, batch_size: int, train_mode: bool,
             device: torch.device) -> dict[str, float]:
    """Mean per-sample cross-entropy and accuracy over the first `n` samples of `part`."""
    loss_sum, correct = 0.0, 0
    with net.buffers_restored():
        net.module.train(train_mode)
        for start in range(0, n, batch_size):
            ids = torch.arange(start, min(start + batch_size, n))
            x, y = data.batch(part, ids, device)
            logits = net.module(x)
            losses = F.cross_entropy(logits, y, reduction="none")
            loss_sum += float(losses.double().sum())
            correct += int((logits.argmax(dim=1) == y).sum())
    return {"loss": loss_sum / n, "accuracy": correct / n}


def crosscheck(walk: Any, module_path: Path, dataset_path: Path, steps: int = 20,
               interp_steps: Sequence[int] = (0, 5, 10), alphas: Sequence[float] = (0.0, 0.5, 1.0),
               eval_split: str = "auto", eval_samples: int = 200, eval_batch_size: int = 100,
               threads: int | None = None, device: str = "cpu", check_identity: bool = True) -> dict[str, Any]:
    """Runs the whole cross-check on an opened recording; returns the JSON document."""
    run = read_run(walk)
    if check_identity:
        if run.module_sha256 and sha256_file(module_path) != run.module_sha256:
            raise CrosscheckError(f"{module_path} is not the recorded module (sha256 differs)")
        if run.dataset_sha256s and sha256_file(dataset_path) not in run.dataset_sha256s:
            raise CrosscheckError(f"{dataset_path} is not the recorded dataset (sha256 differs)")
    threads = threads or run.threads
    if threads:
        torch.set_num_threads(int(threads))
    dev = torch.device(device)
    data = load_dataset(dataset_path, run)

    recorded_steps = set(walk.steps)
    missing = [t for t in range(steps + 1) if t not in recorded_steps]
    if missing:
        raise CrosscheckError(f"steps {missing[:5]}{'...' if len(missing) > 5 else ''} are not recorded; "
                              f"{steps} updates need steps 0..={steps} (record with --record every)")

    warnings: list[str] = []
    free, single = Net(module_path, dev), Net(module_path, dev)
    theta = recorded_state(walk, 0)
    free.check_names(theta)
    try:
        flags = getattr(walk, "trainable", None)
    except read_walk.WalkError as e:
        flags = None
        warnings.append(f"trainable flags not checked: {e}")
    if flags is not None:
        flagged = sorted(n for n, v in flags.items() if v)
        if flagged != sorted(free.trainable):
            raise CrosscheckError(f"trainable tensors differ: recording {flagged}, module {sorted(free.trainable)}")
    free.load(theta)

    train_rows = []
    for t in range(steps):
        info = walk.step_info(t)
        lr = float(info["learning_rate"])
        if not math.isfinite(lr):
            raise CrosscheckError(f"step {t} has no learning rate (is it the last state of the run?)")
        ids = torch.from_numpy(np.asarray(info["sample_ids"]).astype(np.int64))
        if len(ids) == 0 or int(ids.max()) >= len(data.parts["train"][1]):
            raise CrosscheckError(f"step {t}: sample ids do not index train_x ({len(data.parts['train'][1])} rows)")
        x, y = data.batch("train", ids, dev)
        nxt = recorded_state(walk, t + 1)

        scalars = free.sgd_step(x, y, lr, run.weight_decay)
        row = {"step": t, "learning_rate": lr, "samples": len(ids),
               "recorded": {k: float(info[k]) for k in ("minibatch_loss", "grad_norm", "update_norm")},
               "free_run": {**summarize(relative_differences(free.state(), nxt)), **scalars}}

        single.load(theta)
        scalars = single.sgd_step(x, y, lr, run.weight_decay)
        row["one_step"] = {**summarize(relative_differences(single.state(), nxt)), **scalars}
        train_rows.append(row)
        theta = nxt

    part = eval_split
    if part == "auto":
        part = "val" if "val" in data.parts else "test"
    if part not in data.parts:
        raise CrosscheckError(f"{dataset_path} has no {part}_x/{part}_y to evaluate on")
    n_eval = min(eval_samples, len(data.parts[part][1]))
    interp_rows = []
    for t in interp_steps:
        if t not in recorded_steps or t + 1 not in recorded_steps:
            warnings.append(f"interpolation at step {t} skipped: steps {t} and {t + 1} are not both recorded")
            continue
        a, b = recorded_state(walk, t), recorded_state(walk, t + 1)
        for alpha in alphas:
            point = interpolate(a, b, alpha)
            for bn, train_mode in (("train-mode", True), ("eval-mode", False)):
                single.load(point)
                res = evaluate(single, data, part, n_eval, eval_batch_size, train_mode, dev)
                interp_rows.append({"step": t, "alpha": alpha, "bn": bn, **res})

    return {
        "recording": str(getattr(walk, "path", "")),
        "module": str(module_path),
        "dataset": str(dataset_path),
        "torch_version": torch.__version__,
        "settings": {
            "steps": steps, "weight_decay": run.weight_decay,
            "mean": data.mean.tolist(), "std": data.std.tolist(), "normalization_source": data.normalization_source,
            "eval_split": part, "eval_samples": n_eval, "eval_batch_size": eval_batch_size,
            "interp_steps": [r for r in dict.fromkeys(r["step"] for r in interp_rows)], "alphas": list(alphas),
            "threads": torch.get_num_threads(), "device": str(dev),
        },
        "warnings": warnings,
        "train": train_rows,
        "interp": interp_rows,
    }


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def _numbers(text: str, kind: type) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("recording", type=Path, help="the .walk file")
    ap.add_argument("module", type=Path, help="the TorchScript module it was recorded with")
    ap.add_argument("dataset", type=Path, help="the safetensors dataset it was recorded with")
    ap.add_argument("--steps", type=int, default=20, help="updates to replay (default 20)")
    ap.add_argument("--out", type=Path, required=True, help="output JSON file ('-': stdout)")
    ap.add_argument("--interp-steps", default="0,5,10", help="steps t of the interpolation (default 0,5,10)")
    ap.add_argument("--alphas", default="0,0.5,1", help="α values (default 0,0.5,1)")
    ap.add_argument("--eval-split", choices=("auto", "val", "test"), default="auto",
                    help="val if the file has val_x, else test (default auto)")
    ap.add_argument("--eval-samples", type=int, default=200, help="first N samples of the split (default 200)")
    ap.add_argument("--eval-batch-size", type=int, default=100, help="default 100")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the recording's)")
    ap.add_argument("--device", default="cpu", help="default cpu")
    ap.add_argument("--no-identity-check", action="store_true",
                    help="do not compare the files' sha256 with the run description")
    args = ap.parse_args(argv)
    steps, out = args.steps, args.out
    if steps < 1 or args.eval_samples < 1 or args.eval_batch_size < 1:
        ap.error("steps, --eval-samples and --eval-batch-size must be at least 1")
    try:
        walk = open_walk(args.recording)
        doc = crosscheck(walk, args.module, args.dataset, steps=steps,
                         interp_steps=_numbers(args.interp_steps, int), alphas=_numbers(args.alphas, float),
                         eval_split=args.eval_split, eval_samples=args.eval_samples,
                         eval_batch_size=args.eval_batch_size, threads=args.threads, device=args.device,
                         check_identity=not args.no_identity_check)
    except (CrosscheckError, read_walk.WalkError, OSError) as e:
        print(f"torch_crosscheck: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(finite_json(doc), indent=1, allow_nan=False) + "\n"
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        out.write_text(text)
        worst = max((r["free_run"]["max_rel_diff"] for r in doc["train"]), default=float("nan"))
        print(f"torch_crosscheck: {len(doc['train'])} steps replayed, worst free-run relative difference "
              f"{worst:.3g}; {len(doc['interp'])} interpolation points; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
