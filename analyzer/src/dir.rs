//! The analysis folder: the one contract between `analyze` (which writes it) and `report` (which
//! reads it).
//!
//! ```text
//! <out>/_sgdwalk_analysis.json            Manifest: recording id, shard count, revision, settings
//! <out>/_sgdwalk_run.json                 RunInfo: the recording's run description
//! <out>/<table>/shard=<i>/part-<item>.parquet   e.g. <out>/floors/shard=0/part-item-000000.parquet
//! ```
//!
//! Folders of sgdwalk 0.1 before this layout named the table folders `table=<name>` (a reserved
//! word in SQL once read as a hive column): `report` still reads them; `analyze` refuses to add
//! to them and says how to rename the folders.
//!
//! Every file is written durably and atomically ([`write_durably`]): a temporary file in the
//! same folder (hidden, so readers skip it), fsynced, renamed over the final name, then the
//! folder fsynced. A crash leaves the old complete file or the new one, never half of one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{AnalyzeConfig, Phase};
use crate::tables::TableName;

/// Revision of how the numbers are computed and stored; folders without one are revision 1.
/// Revision 2: `eval-mode` curvature rows are computed with running statistics (revision 1
/// computed them with batch statistics, equal to the `train-mode` rows).
/// Revision 3: table schema 2 (`run_label`, `epoch` on every per-step table, the recorded scalars
/// on every `steps` row); `analyze` does not add revision-3 parts to an older folder.
pub const ANALYSIS_REVISION: u32 = 3;

/// Written once per analysis folder so shards and reruns cannot mix different analyses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub recording_id: String,
    pub shard_count: u32,
    #[serde(default = "first_revision")]
    pub revision: u32,
    pub config: AnalyzeConfig,
    /// The run's label in the tables' `run_label` and the report; folders of revision < 3
    /// have none (the report then labels them by [`AnalysisDir::default_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn first_revision() -> u32 {
    1
}

impl Manifest {
    /// Eval-mode curvature of revision 1 was computed with batch statistics: wrong numbers.
    pub fn has_stale_eval_mode_curvature(&self) -> bool {
        self.revision < 2
            && self.config.has(Phase::Curvature)
            && self
                .config
                .bn
                .contains(&sgdwalk_workload::BnPolicy::EvalMode)
    }
}

/// The recording's run description (model, data, optimizer, seeds, …), copied next to the
/// tables so `report` can label and compare runs without the recording at hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub recording_id: String,
    pub recording_path: String,
    pub run: sgdwalk_workload::run::RunDescription,
}

/// Errors of reading or writing the folder's own files (tables have [`crate::tables::TableError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    #[error("{} is not an sgdwalk analysis folder: it has no {missing}", dir.display())]
    NotAnAnalysis { dir: PathBuf, missing: &'static str },
    /// A file (a recording, most likely) where an analysis folder was expected.
    #[error(
        "{} is a file, not an analysis folder; analyze a recording first \
         (sgdwalk-analyze analyze {} -o OUT), then pass OUT",
        path.display(),
        path.display()
    )]
    FileNotFolder { path: PathBuf },
    #[error("{} is not a valid {what}: {reason}", path.display())]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("i/o error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One analysis folder.
#[derive(Debug, Clone)]
pub struct AnalysisDir {
    root: PathBuf,
}

impl AnalysisDir {
    pub const MANIFEST_FILE: &'static str = "_sgdwalk_analysis.json";
    pub const RUN_INFO_FILE: &'static str = "_sgdwalk_run.json";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        AnalysisDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(Self::MANIFEST_FILE)
    }

    pub fn run_info_path(&self) -> PathBuf {
        self.root.join(Self::RUN_INFO_FILE)
    }

    /// Creates the folder (and its parents).
    pub fn create(&self) -> Result<(), DirError> {
        std::fs::create_dir_all(&self.root).map_err(|source| DirError::Io {
            path: self.root.clone(),
            source,
        })
    }

    /// The manifest, or `None` when the folder holds none yet.
    pub fn read_manifest(&self) -> Result<Option<Manifest>, DirError> {
        read_json(&self.manifest_path(), "sgdwalk analysis manifest")
    }

    /// The manifest; an error naming the folder when it has none.
    pub fn require_manifest(&self) -> Result<Manifest, DirError> {
        if self.root.is_file() {
            return Err(DirError::FileNotFolder {
                path: self.root.clone(),
            });
        }
        self.read_manifest()?
            .ok_or_else(|| DirError::NotAnAnalysis {
                dir: self.root.clone(),
                missing: Self::MANIFEST_FILE,
            })
    }

    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), DirError> {
        write_json(&self.manifest_path(), manifest)
    }

    /// The run description, or `None` (folders of sgdwalk-analyze before 0.1 have none).
    pub fn read_run_info(&self) -> Result<Option<RunInfo>, DirError> {
        read_json(&self.run_info_path(), "sgdwalk run description")
    }

    pub fn write_run_info(&self, info: &RunInfo) -> Result<(), DirError> {
        write_json(&self.run_info_path(), info)
    }

    /// The label of a folder analyzed without `--label`: its name, or for `runs/<name>/analysis`
    /// the run's folder name.
    pub fn default_label(&self) -> String {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        };
        let canonical = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let own = name(&canonical);
        if own == "analysis"
            && let Some(parent) = canonical.parent()
        {
            return name(parent);
        }
        own
    }

    /// `<root>/<name>`: one table, its shards partitioned hive style below.
    pub fn table_dir(&self, table: TableName) -> PathBuf {
        self.root.join(table.as_str())
    }

    /// Where the earlier layout kept the table: `<root>/table=<name>`.
    pub fn legacy_table_dir(&self, table: TableName) -> PathBuf {
        self.root.join(format!("table={table}"))
    }

    /// The table folders in the earlier layout (`table=<name>`) this folder holds.
    pub fn legacy_table_dirs(&self) -> Vec<PathBuf> {
        TableName::ALL
            .into_iter()
            .map(|t| self.legacy_table_dir(t))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Where the part of a work item goes.
    pub fn part_path(&self, table: TableName, shard_index: u32, part_name: &str) -> PathBuf {
        self.table_dir(table)
            .join(format!("shard={shard_index}"))
            .join(format!("part-{part_name}.parquet"))
    }

    /// The Parquet parts of one table across shards, sorted; `None` when the table has none
    /// (its phase did not run). Hidden files are a writer's temporaries and are skipped.
    pub fn table_files(&self, table: TableName) -> Result<Option<Vec<PathBuf>>, DirError> {
        let mut table_dir = self.table_dir(table);
        if !table_dir.is_dir() {
            table_dir = self.legacy_table_dir(table);
        }
        if !table_dir.is_dir() {
            return Ok(None);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DirError::Io { path, source }
        };
        let mut files = Vec::new();
        for shard in std::fs::read_dir(&table_dir).map_err(io(&table_dir))? {
            let shard = shard.map_err(io(&table_dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let f = f.map_err(io(&shard))?.path();
                let hidden = f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden && f.extension().is_some_and(|e| e == "parquet") {
                    files.push(f);
                }
            }
        }
        files.sort();
        Ok((!files.is_empty()).then_some(files))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<Option<T>, DirError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DirError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DirError::BadFile {
            path: path.to_path_buf(),
            what,
            reason: e.to_string(),
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DirError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| DirError::BadFile {
        path: path.to_path_buf(),
        what: "JSON value",
        reason: e.to_string(),
    })?;
    write_durably(path, |f| f.write_all(text.as_bytes())).map_err(|e| DirError::Io {
        path: path.to_path_buf(),
        source: e.into_io(),
    })
}

/// What failed in [`write_durably`]; `E` is the error of the caller's fill function.
#[derive(Debug)]
pub enum DurableWriteError<E> {
    /// The temporary file could not be created in the target's folder.
    CreateTemp { dir: PathBuf, source: io::Error },
    /// The caller's fill function failed.
    Fill(E),
    /// fsync of the file or its folder failed.
    Sync { path: PathBuf, source: io::Error },
    /// The rename into place failed.
    Persist { path: PathBuf, source: io::Error },
}

impl DurableWriteError<io::Error> {
    /// Collapses to the underlying I/O error (for writers whose fill is plain I/O).
    pub fn into_io(self) -> io::Error {
        match self {
            DurableWriteError::CreateTemp { source, .. }
            | DurableWriteError::Fill(source)
            | DurableWriteError::Sync { source, .. }
            | DurableWriteError::Persist { source, .. } => source,
        }
    }
}

/// Writes `path` atomically and durably: `fill` writes a hidden temporary file in the same
/// folder, which is fsynced, renamed over `path`, and the folder fsynced. The folder must exist.
pub fn write_durably<E>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), DurableWriteError<E>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|source| DurableWriteError::CreateTemp {
            dir: dir.clone(),
            source,
        })?;
    fill(tmp.as_file_mut()).map_err(DurableWriteError::Fill)?;
    tmp.as_file()
        .sync_all()
        .map_err(|source| DurableWriteError::Sync {
            path: tmp.path().to_path_buf(),
            source,
        })?;
    tmp.persist(path).map_err(|e| DurableWriteError::Persist {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(&dir).map_err(|source| DurableWriteError::Sync { path: dir, source })
}

/// Makes a rename durable. Only Unix can open and fsync a directory.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_given_as_an_analysis_folder_says_to_analyze_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("run.walk");
        std::fs::write(&rec, b"SGDWALK").unwrap();
        let err = AnalysisDir::new(&rec).require_manifest().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DirError::FileNotFolder { .. }), "{msg}");
        assert!(
            msg.contains("sgdwalk-analyze analyze") && msg.contains("run.walk"),
            "{msg}"
        );
    }

    #[test]
    fn durable_write_replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_durably(&path, |f| f.write_all(b"first")).unwrap();
        write_durably(&path, |f| f.write_all(b"second")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let failed = write_durably(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("fill failed"))
        });
        assert!(matches!(failed, Err(DurableWriteError::Fill(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"second", "old file kept");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn missing_manifest_is_none_and_a_broken_one_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = AnalysisDir::new(dir.path());
        assert!(a.read_manifest().unwrap().is_none());
        assert!(matches!(
            a.require_manifest(),
            Err(DirError::NotAnAnalysis { .. })
        ));
        std::fs::write(a.manifest_path(), "{not json").unwrap();
        let e = a.read_manifest().unwrap_err().to_string();
        assert!(e.contains(AnalysisDir::MANIFEST_FILE), "{e}");
    }

    #[test]
    fn table_files_skip_temporaries_and_sort_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        let a = AnalysisDir::new(dir.path());
        assert!(a.table_files(TableName::Floors).unwrap().is_none());
        for (shard, part) in [(1, "item-000001"), (0, "item-000000")] {
            let p = a.part_path(TableName::Floors, shard, part);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        let tmp = a
            .table_dir(TableName::Floors)
            .join("shard=0/.part-x.parquet");
        std::fs::write(tmp, b"").unwrap();
        let files = a.table_files(TableName::Floors).unwrap().unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("shard=0/part-item-000000.parquet"));
    }
}
