"""Recording an existing PyTorch training loop: ``sgdwalk.Recorder``.

Step t of a recording holds θ_t, the state *before* update t, with the minibatch and scalars of
update t. ``rec.step(ids, lr=..., loss=...)`` is called right after ``optimizer.step()``, so the
recorder keeps θ_t from the previous call (θ_0 from its constructor), writes it with the ids and
scalars of update t, and takes θ_{t+1} from the model for the next call. ``close()`` (or leaving
the ``with`` block) writes the final state, with no ids, and finishes the file.

The state is copied out of the model at each step (on CPU a plain copy into one reused buffer;
on CUDA a device-to-device copy on the training stream, then a copy into pinned host memory on a
side stream, waited for on a worker thread, so the training stream never waits), then handed to
the Rust writer thread, which encodes and writes it without the GIL. A bounded queue gives
back-pressure: the loop waits when the writer falls behind, and no step is ever dropped.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import queue as _queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import _native
from ._run import (
    DTYPE_SIZES,
    MODULE_ATTACHMENT,
    RUN_DESCRIPTION_VERSION,
    Policy,
    TensorEntry,
    layout_json,
    layout_of,
    optimizer_json,
    provenance_json,
    schedule_json,
    seeds,
    tensors_dataset,
)

if TYPE_CHECKING:
    import torch

_NO_IDS = np.zeros(0, dtype=np.uint32)


def _scalar(v: Any) -> float | None:
    """A scalar as a float: None stays None (absent), a tensor is read (``.item()``)."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    return float(v)


class _Snapshots:
    """Copies the model's state into flat buffers of 4-byte words in layout order."""

    def __init__(self, model: "torch.nn.Module", layout: Sequence[TensorEntry], ring: int) -> None:
        import torch

        self.model = model
        self.layout = list(layout)
        self.state_len = sum(e.len_words for e in layout)
        tensors = self._tensors()
        missing = [e.name for e in layout if e.name not in tensors]
        if missing:
            raise ValueError(f"the model has no tensors named {missing[:5]} (the module's state differs from the model's)")
        devices = {t.device for t in tensors.values()}
        if len(devices) != 1:
            raise ValueError(f"the model's tensors are on several devices: {sorted(map(str, devices))}")
        self.device = devices.pop()
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            # A ring of device buffers (snapshot on the training stream, D2D) and pinned host
            # buffers (filled on a side stream); a slot is reused once its host copy was taken.
            self.dev = [torch.zeros(self.state_len, dtype=torch.float32, device=self.device) for _ in range(ring)]
            self.host = [torch.zeros(self.state_len, dtype=torch.float32, pin_memory=True) for _ in range(ring)]
            self.side = torch.cuda.Stream(device=self.device)
            self.free: "_queue.Queue[int]" = _queue.Queue()
            for i in range(ring):
                self.free.put(i)
        else:
            self.dev = [torch.zeros(self.state_len, dtype=torch.float32)]
            self.host = self.dev

    def _tensors(self) -> "dict[str, torch.Tensor]":
        t = dict(self.model.named_parameters())
        t.update(self.model.named_buffers())
        return t

    def _fill(self, flat: "torch.Tensor") -> None:
        import torch

        tensors = self._tensors()
        raw = flat.view(torch.uint8)
        with torch.no_grad():
            for e in self.layout:
                src = tensors[e.name].detach().reshape(-1)
                if e.dtype == "f32":
                    flat[e.offset_words:e.offset_words + e.len_words].copy_(src)
                else:
                    start = e.offset_words * 4
                    raw[start:start + e.numel * DTYPE_SIZES[e.dtype]].copy_(src.view(torch.uint8))

    def take_cpu(self) -> np.ndarray:
        """The current state in the (one, reused) host buffer."""
        self._fill(self.host[0])
        return self.host[0].numpy()

    def take_cuda(self) -> "tuple[int, torch.cuda.Event]":
        """Starts copying the current state out; returns its slot and the event that marks
        the host copy complete. Waits for a free slot (back-pressure)."""
        import torch

        slot = self.free.get()
        self._fill(self.dev[slot])
        snapped = torch.cuda.Event()
        snapped.record()
        with torch.cuda.stream(self.side):
            self.side.wait_event(snapped)
            self.host[slot].copy_(self.dev[slot], non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.side)
        return slot, done


class Recorder:
    """Records a PyTorch training loop into an sgdwalk recording that ``sgdwalk-analyze``
    analyzes exactly like a ``sgdwalk-record`` one.

    ``model`` is the ``nn.Module`` being trained; it is embedded as TorchScript
    (``torch.jit.script(model)`` at construction, or ``module=`` a scripted or traced module
    whose state names match, or the path of a saved one, embedded byte for byte) in the
    ``model.pt`` attachment. ``dataset`` is the safetensors
    dataset file (``"tensors:PATH"`` or ``PATH``) whose training-file ids the loop passes to
    ``step`` (see examples/python/export.py). ``batch_size`` is the loop's minibatch size (the
    analysis replays BatchNorm with it), ``total_steps`` the updates the run is set to make.

    Usage::

        with sgdwalk.Recorder("run.walk", model, dataset="tensors:data.safetensors",
                              batch_size=128, total_steps=1000, optimizer=opt) as rec:
            for ids in batches:
                loss = F.cross_entropy(model(x[ids]), y[ids])
                opt.zero_grad(); loss.backward(); opt.step()
                rec.step(ids, lr=opt.param_groups[0]["lr"], loss=loss)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: "torch.nn.Module",
        *,
        dataset: str | os.PathLike[str],
        batch_size: int,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        policy: str = "every",
        optimizer: Any = None,
        lr: float | None = None,
        module: Any = None,
        module_name: str | None = None,
        seed: int = 0,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        classes: int | None = None,
        keyframe_interval: int = 32,
        zstd_level: int = 1,
        split_streams: bool = True,
        chunk_len_elements: int = 262_144,
        queue: int = 4,
        fsync: str = "every-keyframe",
        threads: int = 0,
        eval_batch_size: int = 1000,
        overwrite: bool = False,
    ) -> None:
        import torch

        from . import __version__

        self.path = Path(path)
        self.policy = Policy(policy)
        ds_path = os.fspath(dataset)
        if ds_path.startswith("tensors:"):
            ds_path = ds_path[len("tensors:"):]
        data = tensors_dataset(ds_path, input_mean, input_std, classes)
        if batch_size <= 0:
            raise ValueError(f"batch_size {batch_size}: must be positive")
        spe = steps_per_epoch or max(1, -(-data.train_samples // batch_size))
        if total_steps is None:
            if epochs is None:
                raise ValueError("give total_steps (the updates the run is set to make) or epochs")
            total_steps = spe * epochs
        if epochs is None:
            epochs = max(1, -(-total_steps // spe))
        self.steps_per_epoch = spe
        self.total_steps = int(total_steps)

        if isinstance(module, (str, os.PathLike)):
            # A saved TorchScript file, embedded byte for byte (as --model torchscript:PATH).
            module_bytes = Path(module).read_bytes()
            module_name = module_name or Path(module).name
            module = torch.jit.load(io.BytesIO(module_bytes), map_location="cpu")
        else:
            if module is None:
                module = torch.jit.script(model)
            if not isinstance(module, torch.jit.ScriptModule):
                raise TypeError("module= must be a TorchScript module (torch.jit.script or torch.jit.trace) "
                                "or the path of a saved one")
            buf = io.BytesIO()
            torch.jit.save(module, buf)
            module_bytes = buf.getvalue()
            module_name = module_name or f"{type(model).__name__}.pt"
        named = [(n, p, p.requires_grad) for n, p in module.named_parameters()]
        named += [(n, b, False) for n, b in module.named_buffers()]
        if not any(tr for _, _, tr in named):
            raise ValueError(f"{module_name}: no trainable parameters")
        self.layout = layout_of(named, module_name)

        device = next(iter(model.parameters())).device
        run = {
            "schema_version": RUN_DESCRIPTION_VERSION,
            "model": {"name": "torchscript", "file_name": module_name,
                      "sha256": hashlib.sha256(module_bytes).hexdigest(),
                      "len_bytes": len(module_bytes), "classes": data.classes},
            "dataset": data.spec,
            "dataset_identity": data.identity,
            "layout": layout_json(self.layout),
            "batch_size": int(batch_size),
            "steps_per_epoch": spe,
            "epochs": int(epochs),
            "total_steps": self.total_steps,
            "optimizer": optimizer_json(optimizer),
            "schedule": schedule_json(lr if lr is not None else
                                      (optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0)),
            "noise_std": 0.0,
            "seeds": seeds(seed),
            "record_policy": str(self.policy),
            "eval_batch_size": int(eval_batch_size),
            "eval_splits": [],
            "provenance": provenance_json(__version__, str(device) if device.type != "cuda" else
                                          f"cuda:{device.index or 0}", torch.get_num_threads()),
        }
        self.run = run
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it)")
            self.path.unlink()
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._snap = _Snapshots(model, self.layout, ring=max(2, queue))
        self._writer = _native.NativeWriter(
            os.fspath(self.path),
            [(e.name, e.dtype, list(e.shape)) for e in self.layout],
            json.dumps(run, separators=(",", ":")),
            os.urandom(16),
            int(time.time() * 1000),
            attachments=[(MODULE_ATTACHMENT, module_bytes)],
            keyframe_interval=keyframe_interval,
            zstd_level=zstd_level,
            split_streams=split_streams,
            chunk_len_elements=chunk_len_elements,
            queue=queue,
            fsync=fsync,
            threads=threads,
        )
        self.t = 0
        self._started = time.perf_counter()
        self._closed = False
        self._error: BaseException | None = None
        self._jobs: "_queue.Queue[Any] | None" = None
        if self._snap.cuda:
            self._jobs = _queue.Queue()
            self._worker = threading.Thread(target=self._drain, name="sgdwalk-snapshots", daemon=True)
            self._worker.start()
        # θ_0, unless the policy keeps nothing.
        self._pending = self._take() if self.policy.records(0, spe) else None

    # ---- snapshots ------------------------------------------------------------------------

    def _take(self) -> Any:
        if self._snap.cuda:
            return self._snap.take_cuda()
        return self._snap.take_cpu()

    def _send(self, step: int, pending: Any, ids: np.ndarray, scalars: list[Any]) -> None:
        if self._jobs is None:
            self._writer.submit(step, pending, ids, b"", [_scalar(s) for s in scalars])
        else:
            self._raise_worker_error()
            self._jobs.put((step, pending, ids, scalars))

    def _drain(self) -> None:
        """CUDA worker: waits for each host copy, hands it to the writer, frees its slot."""
        assert self._jobs is not None
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            step, (slot, done), ids, scalars = job
            try:
                if self._error is None:
                    done.synchronize()
                    self._writer.submit(step, self._snap.host[slot].numpy(), ids, b"",
                                        [_scalar(s) for s in scalars])
            except BaseException as e:  # reported on the training thread
                self._error = e
            finally:
                self._snap.free.put(slot)
                self._jobs.task_done()

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise RuntimeError("recording failed on the snapshot thread") from self._error

    # ---- the loop -------------------------------------------------------------------------

    def step(self, sample_ids: Any, *, lr: Any = None, loss: Any = None, grad_norm: Any = None,
             update_norm: Any = None) -> None:
        """Records update t (call it right after ``optimizer.step()``): θ_t, taken before
        this update, with the ids of its minibatch (training-file indices of the dataset) and
        its scalars (``lr``, ``loss`` = minibatch loss at θ_t, optional norms; tensors are
        read on the writer side where possible)."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        t = self.t
        if self._pending is not None:
            if hasattr(sample_ids, "detach"):
                sample_ids = sample_ids.detach().cpu().numpy()
            ids = np.ascontiguousarray(sample_ids, dtype=np.uint32).reshape(-1)
            wall = time.perf_counter() - self._started
            if hasattr(loss, "detach"):
                loss = loss.detach()  # read later; the graph is not kept
            self._send(t, self._pending, ids, [lr, loss, grad_norm, update_norm, wall])
        self.t = t + 1
        self._pending = self._take() if self.policy.records(self.t, self.steps_per_epoch) else None

    def flush(self) -> None:
        """Waits until every step so far is written and durable."""
        if self._jobs is not None:
            self._jobs.join()
            self._raise_worker_error()
        self._writer.flush()

    def close(self) -> dict[str, Any]:
        """Writes the final state θ_T (no ids) and finishes the file (index and footer).
        Returns the writer's summary. Idempotent."""
        if self._closed:
            return self._summary
        self._closed = True
        try:
            if self.policy.kind != "none":
                final = self._pending if self._pending is not None else self._take()
                wall = time.perf_counter() - self._started
                self._send(self.t, final, _NO_IDS, [None, None, None, None, wall])
            self._pending = None
        finally:
            if self._jobs is not None:
                self._jobs.put(None)
                self._worker.join()
        self._raise_worker_error()
        self._summary = dict(self._writer.finish())
        self._summary.update(self.stats())
        return self._summary

    def abandon(self) -> None:
        """Stops without the final state or footer (the file is left as a killed run leaves
        it: readable up to the last step written)."""
        if self._closed:
            return
        self._closed = True
        if self._jobs is not None:
            self._jobs.put(None)
            self._worker.join()
        self._writer.abandon()

    def stats(self) -> dict[str, Any]:
        """Steps written, bytes raw and stored, seconds the writer spent encoding and the loop
        spent waiting on a full queue."""
        return dict(self._writer.stats())

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        # Finished on an exception too: the file then ends at the state reached, complete.
        self.close()

    def __repr__(self) -> str:
        return f"Recorder({os.fspath(self.path)!r}, step={self.t}, policy={self.policy})"
