//! An analysis folder's rows as text, for comparing analyses written into different folders.
//!
//! Included with `#[path]` by the workspace tests (tests/main.rs) and the analyzer's CLI tests.

use std::path::Path;

use sgdwalk_analyzer::dir::AnalysisDir;
use sgdwalk_analyzer::tables::{TableRows, read_rows};

/// Every row of table `R` under `out`, across shards and parts (not a writer's temporaries).
pub fn rows<R: TableRows>(out: &Path) -> Vec<R> {
    AnalysisDir::new(out)
        .table_files(R::TABLE)
        .unwrap()
        .unwrap_or_default()
        .iter()
        .flat_map(|p| read_rows::<R>(p).unwrap())
        .collect()
}

/// A row's debug string with its `run_label` value blanked (by default the folder's name).
pub fn without_label(debug: &str) -> String {
    match debug.find("run_label: \"") {
        Some(i) => {
            let start = i + "run_label: \"".len();
            let end = debug[start..].find('"').map_or(debug.len(), |j| start + j);
            format!("{}_{}", &debug[..start], &debug[end..])
        }
        None => debug.to_string(),
    }
}

/// Rows as sorted debug strings without the run label.
pub fn sorted_debug<R: std::fmt::Debug>(rows: &[R]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| without_label(&format!("{r:?}")))
        .collect();
    v.sort();
    v
}
