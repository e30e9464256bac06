"""Questions answered on the Parquet tables of `sgdwalk-analyze analyze`, with polars (and,
with --sql, the same questions through DuckDB from examples/queries.sql).

    python3 examples/query.py OUT_DIR [--sql]

Prints one table per question; exits non-zero if a table is missing or empty.

The definitions are the report's (`sgdwalk-analyze report`, summary.parquet), and a test checks
that the answers here, in queries.sql and in summary.parquet are equal:
* update geometry uses layer `params` (the trainable parameters: the paper's θ); layer `all`
  also holds BatchNorm running statistics;
* a share counts only the rows where the quantity exists (a null cos, e.g. at the first step,
  is neither negative nor positive);
* the distance from the initialization of an epoch is the one at its last step that has it;
* a segment has a barrier when its barrier (max − higher end) exceeds 0.1 % of the higher end's
  loss (the report's --barrier-threshold).
"""
import sys
from pathlib import Path

import polars as pl

# The report's default --barrier-threshold: a fraction of the higher end's loss.
BARRIER_THRESHOLD = 1e-3


def scan(out: Path, table: str) -> pl.LazyFrame:
    return pl.scan_parquet(str(out / table / "**" / "*.parquet"), hive_partitioning=True)


def questions(out: Path) -> dict[str, pl.DataFrame]:
    """Every question's answer, by name."""
    params = scan(out, "steps").filter(pl.col("layer") == "params")
    epochs = params.select("step", "epoch").unique()

    # 1. Share of steps whose interpolation has an interior valley floor, per epoch and setting.
    valley = (
        scan(out, "floors")
        .join(epochs, on="step")
        .group_by("epoch", "eval_set", "bn_policy")
        .agg(
            pl.len().alias("steps"),
            (pl.col("shape") == "interior_min").mean().alias("share_interior_min"),
            pl.col("alpha_star").median().alias("median_alpha_star"),
            pl.col("height_start").median().alias("median_height_above_floor"),
        )
        .sort("epoch", "eval_set", "bn_policy")
        .collect()
    )

    # 2. cos between consecutive updates, and distance travelled from the initialization.
    geometry = (
        params.sort("step")
        .group_by("epoch")
        .agg(
            pl.col("cos_prev_update").count().alias("pairs"),
            pl.col("cos_prev_update").mean().alias("mean_cos"),
            (pl.col("cos_prev_update") < 0).mean().alias("share_negative_cos"),
            pl.col("dist_from_init").drop_nulls().last().alias("dist_from_init_end"),
            pl.col("update_norm").mean().alias("mean_update_norm"),
        )
        .sort("epoch")
        .collect()
    )

    # 3. Barriers along the valley floor and between iterates, per setting, path and stride.
    higher_end = pl.max_horizontal("loss_start", "loss_end")
    barriers = (
        scan(out, "barriers")
        .with_columns((pl.col("barrier_max") / higher_end).alias("relative_barrier"))
        .group_by("eval_set", "bn_policy", "path", "stride")
        .agg(
            pl.len().alias("segments"),
            (pl.col("relative_barrier") > BARRIER_THRESHOLD).mean().alias("share_with_barrier"),
            pl.col("relative_barrier").max().alias("largest_relative_barrier"),
        )
        .sort("eval_set", "bn_policy", "path", "stride")
        .collect()
    )

    # 4. Which layers move most, relative to their size (layers only: not `all` or `params`).
    layers = (
        scan(out, "steps")
        .filter(~pl.col("layer").is_in(["all", "params"]) & pl.col("update_norm").is_not_null())
        .group_by("layer")
        .agg((pl.col("update_norm") / pl.col("param_norm")).mean().alias("mean_relative_update"))
        .sort("mean_relative_update", descending=True)
        .head(10)
        .collect()
    )
    return {"valley": valley, "geometry": geometry, "barriers": barriers, "layers": layers}


def sql_answers(out: Path) -> list[tuple[list[str], list[tuple]]]:
    """The statements of queries.sql run by DuckDB: (column names, rows) each."""
    import duckdb

    con = duckdb.connect()
    quoted = str(out).replace("'", "''")
    con.execute(f"SET VARIABLE out = '{quoted}'")
    sql = (Path(__file__).parent / "queries.sql").read_text()
    answers = []
    for statement in sql.split(";"):
        if "SELECT" not in statement:
            continue
        relation = con.sql(statement)
        answers.append((relation.columns, relation.fetchall()))
    return answers


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    pl.Config.set_tbl_rows(20)
    answers = questions(out)
    for name, df in answers.items():
        print(name, "\n", df)
    for name in ["valley", "geometry", "barriers"]:
        if answers[name].height == 0:
            print(f"error: no rows for {name} in {out}", file=sys.stderr)
            return 1
    if "--sql" in sys.argv:
        for columns, rows in sql_answers(out):
            print(" | ".join(columns))
            for row in rows:
                print(" | ".join(str(v) for v in row))
            if not rows:
                print("error: a query of examples/queries.sql returned no rows", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
