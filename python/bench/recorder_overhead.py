#!/usr/bin/env python3
"""Overhead of ``sgdwalk.Recorder`` in a PyTorch training loop, CPU, small CNN (a benchmark that
prints figures, not a test):

    . scripts/env.sh
    "$SGDWALK_TORCH_PYTHON" python/bench/recorder_overhead.py [--steps 200] [--repeats 5]

Runs the same loop (same seed, same batches) alternately without and with a Recorder (every
step recorded), ``--repeats`` times each, and prints the median wall time of each, their ratio
(goal ≤ 1.10), the recorder's own counters and the machine's load (``uptime``). The Recorder's
time includes finishing the file (every queued step written).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

import sgdwalk


class SmallCnn(nn.Module):
    """Two conv-BN-ReLU-pool stages and a linear head (about 25k parameters)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, width, 3, padding=1)
        self.b1 = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.b2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


def loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, rec: object) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    for t in range(steps):
        ids = order[(t * batch) % len(x):][:batch]
        loss = F.cross_entropy(model(x[ids]), y[ids])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.step(ids, lr=0.05, loss=loss)  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="sgdwalk-bench-"))
    rng = np.random.default_rng(0)
    n = 4096
    data = tmp / "data.safetensors"
    save_file({"train_x": rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8),
               "train_y": rng.integers(0, 10, size=n).astype(np.int64)}, str(data))
    x = torch.from_numpy(rng.random((n, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, size=n).astype(np.int64))

    plain, recorded = [], []
    stats = {}
    for r in range(args.repeats):
        for with_rec in (False, True):
            torch.manual_seed(0)
            model = SmallCnn(args.width)
            path = tmp / f"run{r}.walk"
            start = time.perf_counter()
            if with_rec:
                rec = sgdwalk.Recorder(path, model, dataset=data, batch_size=args.batch, total_steps=args.steps)
                loop(model, x, y, args.steps, args.batch, rec)
                stats = rec.close()
                recorded.append(time.perf_counter() - start)
                path.unlink()
            else:
                loop(model, x, y, args.steps, args.batch, None)
                plain.append(time.perf_counter() - start)
    params = sum(p.numel() for p in SmallCnn(args.width).parameters())
    a, b = statistics.median(plain), statistics.median(recorded)
    print(f"small CNN ({params} parameters), batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} torch threads, "
          f"{args.repeats} repeats each")
    print(f"without Recorder: median {a:.3f} s  ({args.steps / a:.1f} steps/s)  runs {[round(v, 3) for v in plain]}")
    print(f"with Recorder:    median {b:.3f} s  ({args.steps / b:.1f} steps/s)  runs {[round(v, 3) for v in recorded]}")
    print(f"ratio (with / without): {b / a:.3f}  (goal <= 1.10)")
    print(f"last recording: {stats.get('steps')} steps, file {stats.get('file_bytes', 0) / 1e6:.2f} MB, "
          f"raw/stored {stats.get('raw_bytes', 0) / max(stats.get('stored_bytes', 1), 1):.2f}, "
          f"writer encode+write {stats.get('encode_write_secs', 0):.3f} s, loop blocked {stats.get('blocked_secs', 0):.3f} s")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
