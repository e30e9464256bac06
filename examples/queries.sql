-- Questions answered on the Parquet tables of `sgdwalk-analyze analyze` (DuckDB).
-- Run:  duckdb -c "SET VARIABLE out = 'out/quickstart/analysis'" -f examples/queries.sql
-- or, with the Python package:  python3 examples/query.py out/quickstart/analysis --sql
-- Each statement reads every shard of a table through the Hive layout (OUT/<table>/shard=<i>/).
-- The definitions are the report's (summary.parquet) and examples/query.py's: a test checks
-- that the three give the same numbers: geometry on layer 'params' (the trainable parameters),
-- shares over the rows where the quantity exists (avg of a boolean skips nulls), the distance
-- from the initialization at an epoch's last step that has one, and a barrier when it exceeds
-- 0.1 % of the higher end's loss (the report's --barrier-threshold).

-- 1. How often does a step cross a valley (interior minimum along d_t), per epoch and setting?
SELECT s.epoch, f.eval_set, f.bn_policy,
       count(*) AS steps,
       avg((f.shape = 'interior_min')::DOUBLE) AS share_interior_min,
       median(f.alpha_star) AS median_alpha_star,
       median(f.height_start) AS median_height_above_floor
FROM read_parquet(getvariable('out') || '/floors/*/*.parquet', hive_partitioning = true) f
JOIN (SELECT DISTINCT step, epoch
      FROM read_parquet(getvariable('out') || '/steps/*/*.parquet', hive_partitioning = true)
      WHERE layer = 'params') s USING (step)
GROUP BY ALL ORDER BY ALL;

-- 2. cos(d_{t-1}, d_t): does SGD bounce between valley walls (cos < 0)? And how far from θ_0?
SELECT epoch,
       count(cos_prev_update) AS pairs,
       avg(cos_prev_update) AS mean_cos,
       avg((cos_prev_update < 0)::DOUBLE) AS share_negative_cos,
       arg_max(dist_from_init, step) FILTER (WHERE dist_from_init IS NOT NULL) AS dist_from_init_end,
       avg(update_norm) AS mean_update_norm
FROM read_parquet(getvariable('out') || '/steps/*/*.parquet', hive_partitioning = true)
WHERE layer = 'params'
GROUP BY epoch ORDER BY epoch;

-- 3. Barriers along the valley floor and between iterates: how frequent and how large?
SELECT eval_set, bn_policy, path, stride,
       count(*) AS segments,
       avg((barrier_max / greatest(loss_start, loss_end) > 1e-3)::DOUBLE) AS share_with_barrier,
       max(barrier_max / greatest(loss_start, loss_end)) AS largest_relative_barrier
FROM read_parquet(getvariable('out') || '/barriers/*/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL;

-- 4. Which layers move most, relative to their size? (Layers only: not 'all' or 'params'.)
SELECT layer, avg(update_norm / nullif(param_norm, 0)) AS mean_relative_update
FROM read_parquet(getvariable('out') || '/steps/*/*.parquet', hive_partitioning = true)
WHERE layer NOT IN ('all', 'params') AND update_norm IS NOT NULL
GROUP BY layer ORDER BY mean_relative_update DESC LIMIT 10;

-- 5. Sharpness over training next to generalization.
SELECT c.step, c.value AS lambda_max, e.split, e.accuracy
FROM read_parquet(getvariable('out') || '/curvature/*/*.parquet', hive_partitioning = true) c
ASOF JOIN (SELECT * FROM read_parquet(getvariable('out') || '/epochs/*/*.parquet', hive_partitioning = true)
           WHERE split = 'test') e ON c.step <= e.step
WHERE c.quantity = 'eigenvalue' AND c.rank = 0 AND c.point = 'iterate'
ORDER BY c.step;
