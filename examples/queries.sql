-- Questions answered on the Parquet tables of `sgdwalk-analyze analyze` (DuckDB).
-- Run:  duckdb -c "SET VARIABLE out = 'out/quickstart/analysis'" -f examples/queries.sql
-- or, with the Python package:  python3 examples/query.py out/quickstart/analysis --sql
-- Each statement reads every shard of a table through the Hive layout.

-- 1. How often does a step cross a valley (interior minimum along d_t), per epoch and setting?
SELECT s.epoch, f.eval_set, f.bn_policy,
       count(*) AS steps,
       avg(CASE WHEN f.shape = 'interior_min' THEN 1.0 ELSE 0.0 END) AS share_interior_min,
       median(f.alpha_star) AS median_alpha_star,
       median(f.height_start) AS median_height_above_floor
FROM read_parquet(getvariable('out') || '/table=floors/*/*.parquet', hive_partitioning = true) f
JOIN (SELECT DISTINCT step, epoch
      FROM read_parquet(getvariable('out') || '/table=steps/*/*.parquet', hive_partitioning = true)
      WHERE layer = 'all') s USING (step)
GROUP BY ALL ORDER BY ALL;

-- 2. Distribution of cos(d_{t-1}, d_t): does SGD bounce between valley walls (cos < 0)?
SELECT epoch,
       count(cos_prev_update) AS pairs,
       avg(cos_prev_update) AS mean_cos,
       avg(CASE WHEN cos_prev_update < 0 THEN 1.0 ELSE 0.0 END) AS share_negative
FROM read_parquet(getvariable('out') || '/table=steps/*/*.parquet', hive_partitioning = true)
WHERE layer = 'all'
GROUP BY epoch ORDER BY epoch;

-- 3. Barriers along the valley floor: how frequent and how large, per stride?
SELECT path, stride, eval_set,
       count(*) AS segments,
       avg(CASE WHEN barrier_linear > 1e-6 THEN 1.0 ELSE 0.0 END) AS share_with_barrier,
       max(barrier_linear) AS largest_barrier
FROM read_parquet(getvariable('out') || '/table=barriers/*/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL;

-- 4. Which layers move most, relative to their size?
SELECT layer, avg(update_norm / nullif(param_norm, 0)) AS mean_relative_update
FROM read_parquet(getvariable('out') || '/table=steps/*/*.parquet', hive_partitioning = true)
WHERE layer <> 'all' AND update_norm IS NOT NULL
GROUP BY layer ORDER BY mean_relative_update DESC LIMIT 10;

-- 5. Sharpness over training next to generalization.
SELECT c.step, c.value AS lambda_max, e.split, e.accuracy
FROM read_parquet(getvariable('out') || '/table=curvature/*/*.parquet', hive_partitioning = true) c
ASOF JOIN (SELECT * FROM read_parquet(getvariable('out') || '/table=epochs/*/*.parquet', hive_partitioning = true)
           WHERE split = 'test') e ON c.step <= e.step
WHERE c.quantity = 'eigenvalue' AND c.rank = 0 AND c.point = 'iterate'
ORDER BY c.step;
