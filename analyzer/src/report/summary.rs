//! `summary.parquet`: every aggregate of every run as one tidy table (run, epoch, metric,
//! value, count), for readers that want the numbers rather than the Markdown.

use std::path::Path;

use polars::prelude::*;

use super::ReportError;
use super::load::RunData;

/// Writes the runs' aggregates as one tidy table: one row per run, epoch (null = whole run)
/// and metric. Returns the number of rows.
pub fn write_summary(runs: &[RunData], path: &Path) -> Result<usize, ReportError> {
    let mut run = Vec::new();
    let mut kind = Vec::new();
    let mut model = Vec::new();
    let mut dataset = Vec::new();
    let mut lr = Vec::new();
    let mut batch: Vec<Option<u32>> = Vec::new();
    let mut noise = Vec::new();
    let mut eval_set = Vec::new();
    let mut bn = Vec::new();
    let mut epoch: Vec<Option<u32>> = Vec::new();
    let mut metric: Vec<&'static str> = Vec::new();
    let mut value: Vec<Option<f64>> = Vec::new();
    let mut count: Vec<Option<u64>> = Vec::new();
    for r in runs {
        let mut push = |e: Option<u32>, m: &'static str, v: Option<f64>, n: Option<u64>| {
            run.push(r.label.clone());
            kind.push(r.kind.as_str());
            model.push(r.model.clone());
            dataset.push(r.dataset.clone());
            lr.push(r.lr);
            batch.push(r.batch_size);
            noise.push(r.noise_std);
            eval_set.push(r.eval_set.clone());
            bn.push(r.bn_policy.clone());
            epoch.push(e);
            metric.push(m);
            value.push(v);
            count.push(n);
        };
        for s in r.per_epoch.iter().chain(std::iter::once(&r.whole)) {
            let f = Some(s.floors);
            let c = Some(s.cos_count);
            push(s.epoch, "interior_floor_share", s.interior_share, f);
            push(s.epoch, "height_start_mean", s.height_start_mean, f);
            push(s.epoch, "height_start_median", s.height_start_median, f);
            push(s.epoch, "height_end_mean", s.height_end_mean, f);
            push(s.epoch, "relative_height_mean", s.rel_height_mean, f);
            push(s.epoch, "alpha_star_median", s.alpha_star_median, f);
            push(
                s.epoch,
                "nonfinite_floors",
                Some(s.nonfinite_floors as f64),
                f,
            );
            push(s.epoch, "cos_mean", s.cos_mean, c);
            push(s.epoch, "cos_median", s.cos_median, c);
            push(s.epoch, "cos_std", s.cos_std, c);
            push(s.epoch, "cos_negative_share", s.cos_negative_share, c);
            push(s.epoch, "update_norm_mean", s.update_norm_mean, c);
            push(s.epoch, "dist_from_init_end", s.dist_end, s.dist_end_step);
        }
        for b in &r.barriers {
            let m: &'static str = match (b.path.as_str(), b.stride) {
                ("floor", 1) => "barrier_share_floor_stride1",
                ("floor", _) => "barrier_share_floor_strideK",
                (_, 1) => "barrier_share_iterate_stride1",
                _ => "barrier_share_iterate_strideK",
            };
            push(
                None,
                m,
                (b.segments > 0).then(|| b.with_barrier as f64 / b.segments as f64),
                Some(b.segments),
            );
        }
        for p in &r.curvature {
            push(p.epoch, "lambda_max", Some(p.lambda_max), Some(p.step));
            if let Some(t) = p.trace {
                push(p.epoch, "hessian_trace", Some(t), Some(p.step));
            }
        }
        for e in &r.evals {
            let m = match e.split.as_str() {
                "train" => ["train_loss", "train_accuracy"],
                "val" => ["val_loss", "val_accuracy"],
                "test" => ["test_loss", "test_accuracy"],
                _ => continue,
            };
            push(Some(e.epoch), m[0], Some(e.loss), None);
            push(Some(e.epoch), m[1], Some(e.accuracy), None);
        }
    }
    let rows = run.len();
    let columns = vec![
        Column::new("run".into(), run),
        Column::new("kind".into(), kind),
        Column::new("model".into(), model),
        Column::new("dataset".into(), dataset),
        Column::new("lr".into(), lr),
        Column::new("batch_size".into(), batch),
        Column::new("noise_std".into(), noise),
        Column::new("eval_set".into(), eval_set),
        Column::new("bn_policy".into(), bn),
        Column::new("epoch".into(), epoch),
        Column::new("metric".into(), metric),
        Column::new("value".into(), value),
        Column::new("count".into(), count),
    ];
    write_frame(path, rows, columns)?;
    Ok(rows)
}

/// Writes `columns` (of `rows` rows each) as one zstd Parquet file, atomically: the report's
/// tidy tables (summary.parquet, the figures' data).
pub fn write_frame(path: &Path, rows: usize, columns: Vec<Column>) -> Result<(), ReportError> {
    let bad = |e: PolarsError| ReportError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut df = DataFrame::new(rows, columns).map_err(bad)?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(bad)?;
    super::write_atomic(path, &bytes)
}
