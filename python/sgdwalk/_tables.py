"""Analysis tables as polars LazyFrames: ``sgdwalk.scan(analysis_dir, "floors")``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    import polars as pl

PathLike = Union[str, "os.PathLike[str]"]


def table_files(analysis_dir: PathLike, table: str) -> list[Path]:
    """The Parquet parts of ``table`` in an analysis folder (``OUT/<table>/shard=<i>/*.parquet``,
    or the older ``OUT/table=<table>/...``), sorted, without writers' hidden temporaries; the same
    rule as the analyzer's ``AnalysisDir::table_files``."""
    root = Path(analysis_dir)
    table_dir = root / table
    if not table_dir.is_dir():
        table_dir = root / f"table={table}"
    if not table_dir.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        raise FileNotFoundError(f"{root}: no table {table!r} (tables here: {', '.join(known) or 'none'}; "
                                "is this an `sgdwalk-analyze analyze -o` folder, and did the table's phase run?)")
    files = [f for shard in table_dir.iterdir() if shard.is_dir()
             for f in shard.iterdir() if f.suffix == ".parquet" and not f.name.startswith(".")]
    return sorted(files)


def _label(root: Path) -> str:
    """The label of an analysis folder (the manifest's ``label``), else the analyzer's default:
    the folder's name, or for ``runs/<name>/analysis`` the run's folder name."""
    try:
        label = json.loads((root / "_sgdwalk_analysis.json").read_text()).get("label")
        if label:
            return str(label)
    except (OSError, ValueError, AttributeError):
        pass
    canonical = root.resolve()
    if canonical.name == "analysis" and canonical.parent != canonical:
        return canonical.parent.name
    return canonical.name


def scan(analysis_dir: PathLike | Sequence[PathLike], table: str) -> "pl.LazyFrame":
    """A LazyFrame over one table of one or several analysis folders, with the ``shard``
    partition column and ``run_label`` on every row (tables written before ``run_label``
    existed get the folder's label). polars is imported here, only when used."""
    import polars as pl

    dirs = [analysis_dir] if isinstance(analysis_dir, (str, os.PathLike)) else list(analysis_dir)
    frames = []
    for d in dirs:
        root = Path(d)
        files = table_files(root, table)
        if not files:
            raise FileNotFoundError(f"{root / table}: the table has no Parquet parts")
        lf = pl.scan_parquet([str(f) for f in files], hive_partitioning=True)
        if "run_label" not in lf.collect_schema().names():
            lf = lf.with_columns(pl.lit(_label(root)).alias("run_label"))
        frames.append(lf)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
