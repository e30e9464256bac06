#!/usr/bin/env python3
"""Self-test of torch_crosscheck.py without the Rust binaries: fake recordings built here.

    "$SGDWALK_TORCH_PYTHON" tests/python/torch_crosscheck_selftest.py

For each valid fixture of tests/fixtures/torchscript/, a fake recording is trained by an
independent implementation (eager ``torch.optim.SGD`` with coupled weight decay, its own numpy
preprocessing, a varying learning rate, seeded random minibatches of a random u8 dataset) and
stored the way the recorder lays a state out (name-sorted tensors, f32 as words, int64 as two
little-endian words). The cross-check must then find:

- every replayed θ_{t+1} within 1e-5 (free run) and 1e-6 (one step) relative of the fake one, with
  integer buffers (``num_batches_tracked``) equal;
- the recorded minibatch loss and gradient norm (one step) within 1e-5 relative;
- the interpolation losses at α = 0 and α = 1 equal (1e-6) to losses the fake computed at θ_t and
  θ_{t+1} with its own evaluation loop, under both BatchNorm policies;

through both reader interfaces: ``state_dict(t)`` (the planned API) and the flat ``state(t)`` +
layout (the fallback). It also checks that runs it must refuse (momentum, a different module file)
are refused, and runs the command line once. Exit 0 when everything holds.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "torchscript"
sys.path.insert(0, str(HERE))
import torch_crosscheck as cc  # noqa: E402

MEAN, STD = 0.5, 1.0
TRAIN, VAL, BATCH, STEPS, WD = 256, 250, 32, 12, 5e-4
NAMES = {torch.float32: "f32", torch.int64: "i64"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "train_x": rng.integers(0, 256, (TRAIN, 1, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, TRAIN).astype(np.int64),
        "val_x": rng.integers(0, 256, (VAL, 1, 28, 28), dtype=np.uint8),
        "val_y": rng.integers(0, 10, VAL).astype(np.int32),  # any integer dtype is allowed
    }
    save_file(arrays, str(path), metadata={"sgdwalk.mean": str(MEAN), "sgdwalk.std": str(STD), "sgdwalk.classes": "10"})
    return arrays


def preprocess(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((x.astype(np.float32) / np.float32(255.0)) - np.float32(MEAN)) / np.float32(STD))


class FakeWalk:
    """A recording in memory: the read_walk interface the cross-check uses."""

    def __init__(self, module_path: Path, data_path: Path, arrays: dict[str, np.ndarray], planned_api: bool,
                 momentum: float = 0.0) -> None:
        self.path = f"fake:{module_path.name}"
        torch.manual_seed(0)
        net = torch.jit.load(str(module_path))
        tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        names = sorted(tensors)
        self.layout, entries, offset = [], [], 0
        for n in names:
            t = tensors[n]
            words = -(-t.numel() * t.element_size() // 4)
            self.layout.append({"name": n, "dtype": "f32", "shape": list(t.shape), "offset_elements": offset})
            entry = {"name": n, "shape": list(t.shape), "offset_elements": offset, "len_elements": words,
                     "trainable": bool(t.requires_grad)}
            if t.dtype != torch.float32:
                entry["dtype"] = NAMES[t.dtype]
            entries.append(entry)
            offset += words
        self.metadata = {
            "schema_version": 1,
            "model": {"name": "torchscript", "file_name": module_path.name, "sha256": sha256(module_path),
                      "len_bytes": module_path.stat().st_size, "classes": 10},
            "dataset": {"name": "tensors", "train_range": [0, TRAIN], "val_range": [TRAIN, TRAIN + VAL],
                        "augment": False,
                        "tensors": {"path": str(data_path), "mean": [MEAN], "std": [STD], "classes": 10}},
            "dataset_identity": {"name": "tensors", "files": [{"file": data_path.name, "sha256": sha256(data_path),
                                                               "len_bytes": data_path.stat().st_size}]},
            "layout": {"entries": entries},
            "optimizer": {"kind": "sgd", "momentum": momentum, "nesterov": False, "weight_decay": WD,
                          "decoupled_weight_decay": False},
            "noise_std": 0.0,
            "provenance": {"tool": "sgdwalk-record", "threads": 1},
        }
        if planned_api:
            self.state_dict = self._state_dict  # the planned read_walk API; absent: the fallback
        self._states: list[np.ndarray] = []
        self._info: list[dict[str, Any]] = []
        self.eval_losses: list[dict[str, float]] = []  # per state: {"train-mode": .., "eval-mode": ..}

        rng = np.random.default_rng(3)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.1, weight_decay=WD, momentum=momentum)
        for t in range(STEPS + 1):
            self._states.append(self._flatten(tensors, names))
            self.eval_losses.append({"train-mode": self._eval(net, arrays, True),
                                     "eval-mode": self._eval(net, arrays, False)})
            if t == STEPS:
                self._info.append({"sample_ids": np.zeros(0, np.uint32), "learning_rate": math.nan,
                                   "minibatch_loss": math.nan, "grad_norm": math.nan, "update_norm": math.nan})
                break
            ids = rng.choice(TRAIN, BATCH, replace=False).astype(np.uint32)
            lr = 0.1 * (1.0 - t / 40.0)
            for g in opt.param_groups:
                g["lr"] = lr
            net.train()
            loss = F.cross_entropy(net(preprocess(arrays["train_x"][ids])), torch.from_numpy(arrays["train_y"][ids]))
            opt.zero_grad()
            loss.backward()
            gnorm = math.sqrt(sum(float(p.grad.double().square().sum()) for p in params))
            opt.step()
            self._info.append({"sample_ids": ids, "learning_rate": lr, "minibatch_loss": float(loss.detach()),
                               "grad_norm": gnorm, "update_norm": math.nan})
        self.steps = list(range(STEPS + 1))

    @staticmethod
    def _flatten(tensors: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
        parts = []
        for n in names:
            arr = tensors[n].detach().numpy()
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            raw += b"\0" * (-len(raw) % 4)
            parts.append(np.frombuffer(raw, dtype="<u4"))
        return np.concatenate(parts)

    @staticmethod
    @torch.no_grad()
    def _eval(net: torch.jit.ScriptModule, arrays: dict[str, np.ndarray], train: bool) -> float:
        saved = {n: b.clone() for n, b in net.named_buffers()}
        net.train(train)
        total = 0.0
        for s in (0, 100):
            x = preprocess(arrays["val_x"][s : s + 100])
            y = torch.from_numpy(arrays["val_y"][s : s + 100].astype(np.int64))
            total += float(F.cross_entropy(net(x), y, reduction="sum").double())
        for n, b in net.named_buffers():
            b.copy_(saved[n])
        return total / 200

    def state(self, t: int) -> np.ndarray:
        return self._states[t].view(np.float32)

    def step_info(self, t: int) -> dict[str, Any]:
        return {"step": t, **self._info[t]}

    def _state_dict(self, t: int) -> dict[str, np.ndarray]:
        out = {}
        for e in self.metadata["layout"]["entries"]:
            dt = cc.LAYOUT_DTYPES[e.get("dtype", "f32")]
            raw = self._states[t][e["offset_elements"] : e["offset_elements"] + e["len_elements"]].tobytes()
            out[e["name"]] = np.frombuffer(raw[: math.prod(e["shape"]) * dt.itemsize], dt).reshape(e["shape"]).copy()
        return out


def check_fixture(name: str, data_path: Path, arrays: dict[str, np.ndarray], planned_api: bool) -> list[str]:
    module = FIXTURES / name
    walk = FakeWalk(module, data_path, arrays, planned_api)
    doc = cc.crosscheck(walk, module, data_path, steps=STEPS)
    json.dumps(cc.finite_json(doc), allow_nan=False)
    errors = []
    for row in doc["train"]:
        t = row["step"]
        for replay, tolerance in (("free_run", 1e-5), ("one_step", 1e-6)):
            r = row[replay]
            if not r["max_rel_diff"] <= tolerance:
                errors.append(f"step {t} {replay}: {r['max_rel_diff']:.3g} at {r['worst_tensor']}")
        for k, v in row["one_step"]["rel_diff"].items():
            if k.endswith("num_batches_tracked") and v != 0.0:
                errors.append(f"step {t}: {k} differs")
        for k in ("minibatch_loss", "grad_norm"):
            rec, ours = row["recorded"][k], row["one_step"][k]
            if not abs(rec - ours) <= 1e-5 * abs(rec):
                errors.append(f"step {t} {k}: recorded {rec}, PyTorch {ours}")
    seen = set()
    for r in doc["interp"]:
        seen.add((r["step"], r["alpha"], r["bn"]))
        if r["alpha"] in (0.0, 1.0):
            ref = walk.eval_losses[r["step"] + int(r["alpha"])][r["bn"]]
            if not abs(r["loss"] - ref) <= 1e-6 * abs(ref):
                errors.append(f"interp t={r['step']} α={r['alpha']} {r['bn']}: {r['loss']} vs {ref}")
        if not (math.isfinite(r["loss"]) and 0.0 <= r["accuracy"] <= 1.0):
            errors.append(f"interp {r}: not a loss and an accuracy")
    want = {(t, a, bn) for t in (0, 5, 10) for a in (0.0, 0.5, 1.0) for bn in ("train-mode", "eval-mode")}
    if seen != want:
        errors.append(f"interp rows {sorted(seen)} instead of {sorted(want)}")
    if doc["settings"]["eval_split"] != "val" or doc["settings"]["normalization_source"] != "run description":
        errors.append(f"settings {doc['settings']}")
    worst = max(r["free_run"]["max_rel_diff"] for r in doc["train"])
    print(f"  {name:18} {'state_dict' if planned_api else 'flat state':10}  worst free run {worst:.2e}, "
          f"one step {max(r['one_step']['max_rel_diff'] for r in doc['train']):.2e}, "
          f"{len(doc['interp'])} interp points, {len(errors)} problems")
    return errors


def check_refusals(data_path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    errors = []
    module = FIXTURES / "mlp_bn.pt"
    try:
        cc.crosscheck(FakeWalk(module, data_path, arrays, True, momentum=0.9), module, data_path, steps=2)
        errors.append("a momentum run was not refused")
    except cc.CrosscheckError as e:
        print(f"  refused as it should: {e}")
    try:
        other = FIXTURES / "cnn_residual.pt"
        cc.crosscheck(FakeWalk(module, data_path, arrays, True), other, data_path, steps=2)
        errors.append("another module file was not refused")
    except cc.CrosscheckError as e:
        print(f"  refused as it should: {e}")
    return errors


def main() -> int:
    torch.set_num_threads(1)
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.safetensors"
        arrays = make_dataset(data_path)
        for name in ("mlp_bn.pt", "cnn_residual.pt", "control_flow.pt", "traced_cnn.pt"):
            for planned in (True, False):
                errors += [f"{name}: {e}" for e in check_fixture(name, data_path, arrays, planned)]
        errors += check_refusals(data_path, arrays)
        # The command line on a module with a missing recording file: a clean error, exit 2.
        rc = cc.main([str(Path(tmp) / "missing.walk"), str(FIXTURES / "mlp_bn.pt"), str(data_path),
                      "--out", str(Path(tmp) / "x.json")])
        if rc != 2:
            errors.append(f"a missing recording gave exit {rc}, not 2")
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    print("ok" if not errors else f"{len(errors)} failures")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
