#!/usr/bin/env python3
"""Bring your own model and data: export a PyTorch network as TorchScript and Fashion-MNIST as a
safetensors file, ready for ``sgdwalk-record --model torchscript:... --dataset tensors:...``.

Run with the PyTorch venv that scripts/setup makes:

    . scripts/env.sh
    "$SGDWALK_TORCH_PYTHON" examples/python/export.py out/byo --train-samples 5000

writes ``out/byo/tiny_resnet.pt`` (a small ResNet, ``torch.jit.script``, seeded initialization)
and ``out/byo/fashion_mnist.safetensors`` (from the idx files in data/fashion-mnist, plain or
.gz), then prints the commands that record and analyze a run with them. Nothing is downloaded.

The safetensors file holds ``train_x`` ``[N, 1, 28, 28]`` u8 and ``train_y`` ``[N]`` int64 (from
the training file), ``test_x`` / ``test_y`` (from t10k), optionally ``val_x`` / ``val_y`` (the
training-file samples right after the training ones, ``--val-samples``), and the metadata
``sgdwalk.mean = "0.5"``, ``sgdwalk.std = "1.0"`` (comma-separated per channel; the model sees
``(x / 255 - mean) / std``, the built-in Fashion-MNIST normalization) and ``sgdwalk.classes = "10"``.

Any ``nn.Module`` works the same way, as long as it scripts (``torch.jit.script``) or traces
(``torch.jit.trace``; then without BatchNorm, whose train/eval switch a trace freezes), maps
``[N, C, H, W]`` float inputs to ``[N, classes]`` logits, and has at least one parameter.

Loading θ_t of a recording back into the PyTorch module with the ``sgdwalk`` package
(``pip install ./python``; names are PyTorch's ``state_dict`` keys, each tensor with its recorded
dtype and shape, so BatchNorm's int64 ``num_batches_tracked`` comes back as int64)::

    import sys, sgdwalk
    sys.path.insert(0, "examples/python")
    from export import TinyResNet

    net = TinyResNet()                          # or torch.jit.load("out/byo/tiny_resnet.pt")
    walk = sgdwalk.open("run.walk")
    t = walk.steps[-1]                          # the final state
    net.load_state_dict(walk.state_dict(t))     # strict: every name must match
    net.eval()                                  # BatchNorm with the recorded running statistics

(``read_walk.py`` beside this file does the same without the package: ``read_walk.open(path)
.state_dict(t)`` gives numpy arrays.) To record your own training loop with this dataset instead
of ``sgdwalk-record``, see ``sgdwalk.Recorder``.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
# The built-in Fashion-MNIST normalization (the paper's Normalize(0.5, 1.0)): (x / 255 - 0.5) / 1.0.
MEAN, STD, CLASSES = (0.5,), (1.0,), 10


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip connection (1x1 conv-BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class TinyResNet(nn.Module):
    """A ResNet for 28x28 images: conv-BN-ReLU stem, three basic blocks (widths w, 2w, 4w; the
    last two halve the resolution), global average pooling, a linear classifier."""

    def __init__(self, in_channels: int = 1, classes: int = CLASSES, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(
            BasicBlock(width, width, 1),
            BasicBlock(width, 2 * width, 2),
            BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (as Fashion-MNIST ships them), plain or gzip-compressed (`path` or `path.gz`)."""
    if not path.exists() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data, the header says {dims}")
    return data.reshape(dims)


def load_split(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as u8 [N, 1, 28, 28] and labels as int64 [N] of `prefix` ("train" or "t10k")."""
    x = read_idx(data_dir / f"{prefix}-images-idx3-ubyte")
    y = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte")
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{data_dir}/{prefix}: images {x.shape} and labels {y.shape} do not match")
    return np.ascontiguousarray(x[:, None, :, :]), y.astype(np.int64)


def export_dataset(data_dir: Path, out: Path, train_samples: int | None, val_samples: int,
                   test_samples: int | None) -> dict[str, tuple[int, ...]]:
    """Writes the safetensors dataset; returns the shape of each tensor written."""
    train_x, train_y = load_split(data_dir, "train")
    test_x, test_y = load_split(data_dir, "t10k")
    n_train = len(train_x) - val_samples if train_samples is None else train_samples
    if n_train <= 0 or n_train + val_samples > len(train_x):
        raise ValueError(f"{n_train} training + {val_samples} validation samples do not fit in "
                         f"the {len(train_x)} of the training file")
    tensors = {"train_x": train_x[:n_train], "train_y": train_y[:n_train]}
    if val_samples > 0:
        tensors["val_x"] = train_x[n_train : n_train + val_samples]
        tensors["val_y"] = train_y[n_train : n_train + val_samples]
    n_test = len(test_x) if test_samples is None else min(test_samples, len(test_x))
    tensors["test_x"], tensors["test_y"] = test_x[:n_test], test_y[:n_test]
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {
        "sgdwalk.mean": ",".join(str(m) for m in MEAN),
        "sgdwalk.std": ",".join(str(s) for s in STD),
        "sgdwalk.classes": str(CLASSES),
    }
    save_file(tensors, str(out), metadata=metadata)
    # safetensors writes through a private temporary file (mode 0600): give it the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    out.chmod(0o666 & ~umask)
    return {k: v.shape for k, v in tensors.items()}


def export_model(out: Path, seed: int, width: int) -> int:
    """Scripts a seeded TinyResNet into `out`; returns its parameter count."""
    torch.manual_seed(seed)
    net = TinyResNet(width=width)
    scripted = torch.jit.script(net)
    scripted.save(str(out))
    # Check that what was written loads and maps a batch to [N, classes].
    loaded = torch.jit.load(str(out), map_location="cpu")
    with torch.no_grad():
        shape = tuple(loaded.eval()(torch.zeros(2, 1, 28, 28)).shape)
    if shape != (2, CLASSES):
        raise RuntimeError(f"{out}: output shape {shape}, expected (2, {CLASSES})")
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write tiny_resnet.pt and fashion_mnist.safetensors into")
    ap.add_argument("--data-dir", type=Path, default=REPO / "data" / "fashion-mnist",
                    help="Fashion-MNIST idx files (default: data/fashion-mnist)")
    ap.add_argument("--train-samples", type=int, default=None,
                    help="keep the first N samples of the training file (default: all)")
    ap.add_argument("--val-samples", type=int, default=0,
                    help="also write val_x/val_y: the K training-file samples after the training ones")
    ap.add_argument("--test-samples", type=int, default=None, help="keep the first N test samples (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
    ap.add_argument("--width", type=int, default=8, help="channels of the first stage (default 8)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "tiny_resnet.pt"
    data = args.out / "fashion_mnist.safetensors"
    try:
        shapes = export_dataset(args.data_dir, data, args.train_samples, args.val_samples, args.test_samples)
    except (OSError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    params = export_model(model, args.seed, args.width)
    print(f"wrote {model} ({params:,} parameters, torch.jit.script, seed {args.seed})")
    print(f"wrote {data} ({', '.join(f'{k} {list(v)}' for k, v in shapes.items())})")
    run = args.out / "run.walk"
    q = shlex.quote
    print("\nrecord and analyze:")
    print(f"  sgdwalk-record --model torchscript:{q(str(model))} --dataset tensors:{q(str(data))} "
          f"--epochs 1 --batch-size 128 --lr 0.05 -o {q(str(run))}")
    print(f"  sgdwalk-analyze analyze {q(str(run))} --out {q(str(args.out / 'analysis'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
