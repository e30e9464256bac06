"""Shared set-up of the package's tests: where the repository, its fixtures and the Rust
binaries are. scripts/test builds the binaries and sets SGDWALK_BIN to the cargo target folder
holding them (sgdwalk-analyze, sgdwalk-record, examples/walk_digests); without it the tests
that need them fail, naming what to set."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "format-spec" / "fixtures"


def binary(name: str) -> Path:
    """A binary of the cargo target folder named by SGDWALK_BIN."""
    folder = os.environ.get("SGDWALK_BIN")
    if not folder:
        pytest.fail("SGDWALK_BIN is not set: point it at the cargo target folder with the built binaries "
                    "(scripts/test does: cargo build -p sgdwalk-analyzer -p sgdwalk-recorder "
                    "&& cargo build -p sgdwalk-format --example walk_digests)")
    path = Path(folder) / name
    if not path.is_file():
        pytest.fail(f"{path} does not exist: build it (scripts/test builds every binary these tests use)")
    return path


def run(args: list[object], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def rust_digests(paths: list[Path]) -> dict[str, dict]:
    """What the Rust reader reads from each file (format-spec/examples/walk_digests.rs)."""
    out = run([binary("examples/walk_digests"), *paths])
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return {line["path"]: line for line in lines}


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    d = REPO / "data" / "fashion-mnist"
    if not d.is_dir():
        pytest.fail(f"{d} is missing: scripts/setup fetches Fashion-MNIST")
    return d
