"""Questions answered on the Parquet tables of `sgdwalk-analyze analyze`, with polars (and,
with --sql, the same questions through DuckDB from examples/queries.sql).

    python3 examples/query.py OUT_DIR [--sql]

Prints one table per question; exits non-zero if a table is missing or empty.
"""
import sys
from pathlib import Path

import polars as pl


def scan(out: Path, table: str) -> pl.LazyFrame:
    return pl.scan_parquet(str(out / f"table={table}" / "**" / "*.parquet"), hive_partitioning=True)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    pl.Config.set_tbl_rows(20)
    steps = scan(out, "steps").filter(pl.col("layer") == "all")
    floors = scan(out, "floors")
    epochs = steps.select("step", "epoch").unique()

    # 1. Share of steps whose interpolation has an interior valley floor, per epoch.
    valley = (
        floors.join(epochs, on="step")
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
    print("valley floors per epoch\n", valley)

    # 2. cos between consecutive updates, and distance travelled from the initialization.
    geometry = (
        steps.group_by("epoch")
        .agg(
            pl.col("cos_prev_update").mean().alias("mean_cos"),
            (pl.col("cos_prev_update") < 0).mean().alias("share_negative_cos"),
            pl.col("dist_from_init").max().alias("max_dist_from_init"),
            pl.col("update_norm").mean().alias("mean_update_norm"),
        )
        .sort("epoch")
        .collect()
    )
    print("update geometry per epoch\n", geometry)

    # 3. Barriers along the valley floor.
    barriers = (
        scan(out, "barriers")
        .group_by("path", "stride")
        .agg(
            pl.len().alias("segments"),
            (pl.col("barrier_linear") > 1e-6).mean().alias("share_with_barrier"),
            pl.col("barrier_linear").max().alias("largest_barrier"),
        )
        .sort("path", "stride")
        .collect()
    )
    print("barriers\n", barriers)

    for name, df in [("valley", valley), ("geometry", geometry), ("barriers", barriers)]:
        if df.height == 0:
            print(f"error: no rows for {name} in {out}", file=sys.stderr)
            return 1

    if "--sql" in sys.argv:
        import duckdb

        con = duckdb.connect()
        quoted = str(out).replace("'", "''")
        con.execute(f"SET VARIABLE out = '{quoted}'")
        sql = (Path(__file__).parent / "queries.sql").read_text()
        for statement in sql.split(";"):
            if "SELECT" not in statement:
                continue
            relation = con.sql(statement)
            rows = relation.fetchall()
            print(relation)
            if not rows:
                print("error: a query of examples/queries.sql returned no rows", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
