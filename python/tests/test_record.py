"""Recording a PyTorch loop with ``sgdwalk.Recorder``: the file verifies, holds the loop's exact
states, analyzes like a ``sgdwalk-record`` recording (interpolation ends equal PyTorch's losses),
describes the run as ``sgdwalk-record`` does, survives a kill, and keeps what the policy says."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgdwalk
from conftest import REPO, binary, run, rust_digests

sys.path.insert(0, str(REPO / "examples" / "python"))
import export  # noqa: E402  (examples/python/export.py: the safetensors dataset)

BATCH, STEPS, LR = 32, 50, 0.05


class SmallNet(nn.Module):
    """conv-BN-ReLU-pool and a linear head: parameters, BatchNorm buffers (f32) and the int64
    num_batches_tracked."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 4)
        return self.fc(x.flatten(1))


def make_dataset(out: Path, fashion_dir: Path) -> Path:
    path = out / "fashion.safetensors"
    export.export_dataset(fashion_dir, path, train_samples=512, val_samples=0, test_samples=100)
    return path


def inputs(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training inputs as the analyzer prepares them: u8 / 255, minus mean, over std."""
    from safetensors.numpy import load_file

    t = load_file(str(path))
    x = torch.from_numpy(t["train_x"]).to(torch.float32).div(255.0)
    x = x.sub(torch.tensor([0.5]).view(1, 1, 1, 1)).div(torch.tensor([1.0]).view(1, 1, 1, 1))
    return x, torch.from_numpy(t["train_y"])


def train(rec: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 1,
          log: list | None = None) -> None:
    """A plain PyTorch loop; ``log`` gets (state_dict copy θ_t, ids, loss) of every update."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    for t in range(steps):
        ids = order[(t * BATCH) % len(x):][:BATCH]
        if log is not None:
            log.append(({k: v.clone() for k, v in model.state_dict().items()}, ids.clone()))
        model.train()
        loss = F.cross_entropy(model(x[ids]), y[ids])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None:
            log[-1] += (loss.item(),)
        if rec is not None:
            rec.step(ids, lr=LR, loss=loss)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> dict[str, Any]:
    """A 50-step loop recorded with Recorder, and the loop's own states."""
    out = tmp_path_factory.mktemp("rec")
    data = make_dataset(out, fashion_dir)
    torch.manual_seed(0)
    model = SmallNet()
    x, y = inputs(data)
    log: list = []
    rec_path = out / "run.walk"
    with sgdwalk.Recorder(rec_path, model, dataset=f"tensors:{data}", batch_size=BATCH, total_steps=STEPS,
                          optimizer=None, lr=LR, keyframe_interval=8) as rec:
        train(rec, model, x, y, STEPS, log=log)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    return {"out": out, "data": data, "path": rec_path, "log": log, "final": final, "x": x, "y": y,
            "summary": rec.close()}


def test_the_recording_verifies_and_holds_the_loops_exact_states(recorded: dict[str, Any]) -> None:
    path = recorded["path"]
    v = run([binary("sgdwalk-analyze"), "verify", path])
    assert v.returncode == 0, v.stdout + v.stderr
    w = sgdwalk.open(path)
    assert w.is_finished and w.steps == list(range(STEPS + 1))
    assert w.attachments == ["model.pt"]
    assert recorded["summary"]["steps"] == STEPS + 1
    for t, (state, ids, loss) in enumerate(recorded["log"]):
        sd = w.state_dict(t)
        assert sd.keys() == state.keys()
        for k in state:
            assert sd[k].dtype == state[k].dtype and torch.equal(sd[k], state[k]), (t, k)
        info = w.step_info(t)
        assert info.sample_ids.tolist() == ids.tolist()
        assert info.lr == LR and info.loss == loss
        assert info.scalars["wall_time_secs"] is not None and info.scalars["grad_norm"] is None
    final = w.state_dict(STEPS)
    assert all(torch.equal(final[k], recorded["final"][k]) for k in final)
    last = w.step_info(STEPS)
    assert len(last.sample_ids) == 0 and last.lr is None and last.loss is None
    # Loadable strictly into the model, on a device.
    model = SmallNet()
    model.load_state_dict(w.state_dict(17, device="cpu"), strict=True)
    assert model.bn.num_batches_tracked.item() == 17


def test_analyzing_it_gives_pytorchs_losses_at_both_ends(recorded: dict[str, Any]) -> None:
    """interp at α = 0 and 1 on B_t (train-mode BatchNorm, one batch of the recorded size)
    equals PyTorch's mean loss at θ_t and θ_{t+1} on the same samples, to 1e-5 relative."""
    out = recorded["out"] / "analysis"
    a = run([binary("sgdwalk-analyze"), "analyze", recorded["path"], "-o", out, "--phases", "interp",
             "--eval", "batch", "--bn", "train-mode", "--threads", "1"])
    assert a.returncode == 0, a.stdout + a.stderr
    rows = (sgdwalk.scan(out, "interp").filter(sgdwalk_pl().col("alpha").is_in([0.0, 1.0]))
            .select("step", "alpha", "loss", "samples", "run_label").collect())
    assert rows.height == 2 * STEPS, rows
    w = sgdwalk.open(recorded["path"])
    model = SmallNet()
    x, y = recorded["x"], recorded["y"]
    worst = 0.0
    for step, alpha, loss, samples, _ in rows.iter_rows():
        ids = torch.from_numpy(w.step_info(step).sample_ids.astype(np.int64))
        model.load_state_dict(w.state_dict(step + int(alpha)), strict=True)
        model.train()
        with torch.no_grad():
            want = F.cross_entropy(model(x[ids]), y[ids]).item()
        assert samples == BATCH
        rel = abs(loss - want) / abs(want)
        worst = max(worst, rel)
        assert rel <= 1e-5, (step, alpha, loss, want)
    print(f"analyzer vs PyTorch at alpha 0/1 over {rows.height} points: max relative difference {worst:.2e}")


def sgdwalk_pl() -> Any:
    import polars as pl

    return pl


def test_scan_reads_a_table_with_its_run_label(recorded: dict[str, Any]) -> None:
    out = recorded["out"] / "analysis"
    if not out.is_dir():
        pytest.fail("run test_analyzing_it_gives_pytorchs_losses_at_both_ends first (it writes the analysis)")
    lf = sgdwalk.scan(out, "interp")
    df = lf.collect()
    assert {"run_label", "step", "alpha", "loss", "shard"} <= set(df.columns)
    # Analyzed without --label: the analyzer labels `<run>/analysis` by the run's folder.
    assert df["run_label"].unique().to_list() == [out.parent.name]
    files = sgdwalk.table_files(out, "interp")
    assert files and all(f.suffix == ".parquet" for f in files)
    both = sgdwalk.scan([out, out], "interp").collect()
    assert both.height == 2 * df.height
    with pytest.raises(FileNotFoundError, match="no table 'nope'"):
        sgdwalk.scan(out, "nope")


def test_the_header_is_the_one_sgdwalk_record_writes(tmp_path: Path, fashion_dir: Path) -> None:
    """The same TorchScript file and dataset recorded by sgdwalk-record and by Recorder: the
    run descriptions agree in every field but provenance, and so do layout and codec."""
    data = make_dataset(tmp_path, fashion_dir)
    torch.manual_seed(0)
    model = SmallNet()
    module = tmp_path / "small.pt"
    torch.jit.script(model).save(str(module))
    ref = tmp_path / "ref.walk"
    r = run([binary("sgdwalk-record"), "--model", f"torchscript:{module}", "--dataset", f"tensors:{data}",
             "--batch-size", BATCH, "--max-steps", 3, "--epochs", 1, "--lr", LR, "--momentum", 0.9,
             "--optimizer", "momentum", "--weight-decay", 0, "--seed", 7, "--eval-splits", "", "--device", "cpu", "-o", ref, "--quiet"])
    assert r.returncode == 0, r.stdout + r.stderr
    mine = tmp_path / "mine.walk"
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    with sgdwalk.Recorder(mine, model, dataset=f"tensors:{data}", batch_size=BATCH, total_steps=3, epochs=1,
                          optimizer=opt, seed=7, module=module) as rec:
        train(rec, model, *inputs(data), steps=3)
    a, b = sgdwalk.open(ref), sgdwalk.open(mine)
    ra, rb = a.run, b.run
    assert ra.pop("provenance")["tool"] == "sgdwalk-record"
    assert rb.pop("provenance")["tool"] == "sgdwalk-python"
    assert ra == rb
    for key in ("layout", "state_len_elements", "augmentation_bytes_per_sample", "codec"):
        assert a.header[key] == b.header[key], key
    assert a.attachment("model.pt") == b.attachment("model.pt") == module.read_bytes()
    assert a.steps == b.steps == [0, 1, 2, 3]


KILLED = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    import sgdwalk
    from test_record import SmallNet, inputs, BATCH
    torch.manual_seed(0)
    model = SmallNet()
    x, y = inputs({data!r})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = sgdwalk.Recorder({path!r}, model, dataset={data!r}, batch_size=BATCH, total_steps=1000, keyframe_interval=4)
    for t in range(1000):
        ids = torch.arange(t * BATCH, (t + 1) * BATCH) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[ids]), y[ids])
        opt.zero_grad(); loss.backward(); opt.step()
        rec.step(ids, lr=0.05, loss=loss)
        if t == 9:
            rec.flush()
            print("flushed", flush=True)
        if t == 25:
            os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_recording_reads_up_to_its_last_complete_step(tmp_path: Path, fashion_dir: Path) -> None:
    data = make_dataset(tmp_path, fashion_dir)
    path = tmp_path / "killed.walk"
    script = KILLED.format(tests=str(Path(__file__).parent), data=str(data), path=str(path))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "flushed" in p.stdout
    w = sgdwalk.open(path)
    assert not w.is_finished
    assert w.steps == list(range(len(w.steps))) and len(w.steps) >= 10, w.steps
    # verify checks every checksum and the delta chain, and exits 1 only because the file was
    # not finished (a corrupt file is an error, exit 2).
    v = run([binary("sgdwalk-analyze"), "verify", "--json", path])
    assert v.returncode == 1, v.stdout + v.stderr
    report = json.loads(v.stdout)
    assert not report["finished"] and report["steps"] == len(w.steps), report
    assert report["chunks_verified"] >= len(w.steps)
    # The package reads it as the Rust reader does.
    from test_read import python_digests

    assert python_digests(path) == rust_digests([path])[str(path)]


def test_policies_and_the_context_manager(tmp_path: Path, fashion_dir: Path) -> None:
    data = make_dataset(tmp_path, fashion_dir)
    x, y = inputs(data)
    for policy, steps, want in [("every:5", 12, [0, 5, 10, 12]), ("window:2,10", 23, [0, 1, 2, 10, 11, 12, 20, 21, 22, 23]),
                                ("epochs:2", 40, list(range(16, 33)) + [40])]:
        torch.manual_seed(0)
        model = SmallNet()
        path = tmp_path / f"{policy.replace(':', '_')}.walk"
        with sgdwalk.Recorder(path, model, dataset=data, batch_size=BATCH, total_steps=steps, policy=policy) as rec:
            train(rec, model, x, y, steps)
        w = sgdwalk.open(path)
        expected = sorted(set([0] + want))
        assert w.steps == expected, (policy, w.steps)
        assert w.run["record_policy"] == policy
        final = w.state_dict(steps)
        assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    # An exception inside the block still leaves a finished file ending at the state reached.
    torch.manual_seed(0)
    model = SmallNet()
    path = tmp_path / "raised.walk"
    with pytest.raises(ZeroDivisionError):
        with sgdwalk.Recorder(path, model, dataset=data, batch_size=BATCH, total_steps=100) as rec:
            train(rec, model, x, y, 3)
            1 / 0
    w = sgdwalk.open(path)
    assert w.is_finished and w.steps == [0, 1, 2, 3]
    with pytest.raises(FileExistsError):
        sgdwalk.Recorder(path, model, dataset=data, batch_size=BATCH, total_steps=100)
    with pytest.raises(ValueError, match="policy"):
        sgdwalk.Recorder(tmp_path / "x.walk", model, dataset=data, batch_size=BATCH, total_steps=5, policy="sometimes")
    assert json.loads(json.dumps(w.run))["dataset"]["tensors"]["path"] == os.fspath(data)
