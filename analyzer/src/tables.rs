//! The analyzer's output tables as Parquet files (overview §5): one row struct per table, the
//! Arrow schema derived from it, and an atomic writer.
//!
//! Layout ([`AnalysisDir`]): `<out>/<name>/shard=<i>/part-<work item>.parquet` (hive partitioning, so
//! polars `scan_parquet` and DuckDB `read_parquet(..., hive_partitioning = true)` read every
//! shard as one table; an unsharded run is shard 0 of 1).
//!
//! Every file: zstd; BYTE_STREAM_SPLIT without dictionary for float columns (it groups the
//! bytes of each significance, which zstd compresses far better than raw IEEE floats);
//! dictionary for the other columns (strings repeat: layer, eval set, BN policy); page-level
//! statistics with column and offset indexes (lets readers skip pages by step); and the
//! key-value metadata `sgdwalk.*` (see [`TableMeta`]) on both the Parquet footer and the Arrow
//! schema. Rows are written in the order given: callers sort them by their key columns.
//!
//! Column names are the row structs' field names; [`schema_string`] renders a table's schema
//! and the tests pin it, so any column change fails a test and must bump [`SCHEMA_VERSION`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::dir::{AnalysisDir, DurableWriteError, write_durably};

/// Version of the table schemas, written as `sgdwalk.schema_version`. Bump on any column change.
/// 2: `run_label` on every table, `epoch` on `interp`, `floors`, `barriers` and `curvature`, the
/// recorded scalars on every `steps` row (not only layer `all`).
pub const SCHEMA_VERSION: &str = "2";

/// zstd level: 3 is zstd's default, a good size/speed balance for small analysis tables.
const ZSTD_LEVEL: i32 = 3;

/// Metadata keys written into every file.
pub mod keys {
    pub const RECORDING_ID: &str = "sgdwalk.recording_id";
    pub const RECORDING_PATH: &str = "sgdwalk.recording_path";
    pub const RECORDING_CHECKSUM: &str = "sgdwalk.recording_checksum";
    pub const TOOL_VERSION: &str = "sgdwalk.tool_version";
    pub const CONFIG: &str = "sgdwalk.config";
    pub const SCHEMA_VERSION: &str = "sgdwalk.schema_version";
    pub const SHARD: &str = "sgdwalk.shard";
    /// Only on parts of work items whose steps were not all recorded yet (the recording was
    /// unfinished): the last step the recording held. Such a part is redone once more exists.
    pub const PARTIAL_THROUGH_STEP: &str = "sgdwalk.partial_through_step";
}

/// The output tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableName {
    Steps,
    Interp,
    Floors,
    Barriers,
    Curvature,
    Epochs,
    EvalSamples,
}

impl TableName {
    pub const ALL: [TableName; 7] = [
        TableName::Steps,
        TableName::Interp,
        TableName::Floors,
        TableName::Barriers,
        TableName::Curvature,
        TableName::Epochs,
        TableName::EvalSamples,
    ];

    /// The name used in paths (`<out>/<name>/`).
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Steps => "steps",
            TableName::Interp => "interp",
            TableName::Floors => "floors",
            TableName::Barriers => "barriers",
            TableName::Curvature => "curvature",
            TableName::Epochs => "epochs",
            TableName::EvalSamples => "eval_samples",
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provenance written into every file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableMeta {
    /// Hex of the recording's run id.
    pub recording_id: String,
    pub recording_path: String,
    pub recording_checksum: String,
    pub tool_version: String,
    /// The full analysis config, as JSON.
    pub config_json: String,
    /// (index, count); `None` = unsharded, written as shard 0 of 1.
    pub shard: Option<(u32, u32)>,
    /// Set on parts of partial work items: the recording's last step when they were computed.
    pub partial_through_step: Option<u64>,
}

impl TableMeta {
    fn shard_or_default(&self) -> (u32, u32) {
        self.shard.unwrap_or((0, 1))
    }

    /// The `sgdwalk.*` key-value pairs, sorted by key.
    pub fn key_values(&self) -> BTreeMap<String, String> {
        let (index, count) = self.shard_or_default();
        [
            (keys::RECORDING_ID, self.recording_id.clone()),
            (keys::RECORDING_PATH, self.recording_path.clone()),
            (keys::RECORDING_CHECKSUM, self.recording_checksum.clone()),
            (keys::TOOL_VERSION, self.tool_version.clone()),
            (keys::CONFIG, self.config_json.clone()),
            (keys::SCHEMA_VERSION, SCHEMA_VERSION.to_owned()),
            (keys::SHARD, format!("{index}/{count}")),
        ]
        .into_iter()
        .chain(
            self.partial_through_step
                .map(|t| (keys::PARTIAL_THROUGH_STEP, t.to_string())),
        )
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Errors of writing and reading tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error(
        "invalid part name {part_name:?}: use 1 to 200 ASCII letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    InvalidPartName { part_name: String },
    #[error("invalid shard {index}/{count}: need index < count")]
    InvalidShard { index: u32, count: u32 },
    #[error("cannot create the directory of table {table}: {}", path.display())]
    CreateDir {
        table: TableName,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the record batch of table {table}")]
    Arrow {
        table: TableName,
        #[source]
        source: Box<ArrowError>,
    },
    #[error("cannot create a temporary file for table {table} in {}", dir.display())]
    CreateTemp {
        table: TableName,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode table {table} as parquet for {}", path.display())]
    Encode {
        table: TableName,
        path: PathBuf,
        #[source]
        source: Box<ParquetError>,
    },
    #[error("cannot sync table {table} to disk: {}", path.display())]
    Sync {
        table: TableName,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move the finished file of table {table} into place: {}", path.display())]
    Persist {
        table: TableName,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read parquet file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: Box<ParquetError>,
    },
    #[error("column {column} of table {table} is missing or has the wrong type")]
    ColumnType {
        table: TableName,
        column: &'static str,
    },
}

/// Maps a Rust field type to an Arrow column.
pub trait ColumnValue: Sized {
    const DATA_TYPE: DataType;
    const NULLABLE: bool;
    /// Builds the column from the values in row order.
    fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
    /// Reads a column back; `None` if the array has another type or unexpected nulls.
    fn from_array(array: &dyn Array) -> Option<Vec<Self>>;
}

macro_rules! column_value {
    ($t:ty, $arr:ty, $dt:expr, |$v:ident| $to:expr) => {
        impl ColumnValue for $t {
            const DATA_TYPE: DataType = $dt;
            const NULLABLE: bool = false;
            fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(values.map(|$v| Some($to)).collect::<$arr>())
            }
            fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
                let a = array.as_any().downcast_ref::<$arr>()?;
                a.iter().map(|x| x.map(Into::into)).collect()
            }
        }
        impl ColumnValue for Option<$t> {
            const DATA_TYPE: DataType = $dt;
            const NULLABLE: bool = true;
            fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(values.map(|o| o.as_ref().map(|$v| $to)).collect::<$arr>())
            }
            fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
                let a = array.as_any().downcast_ref::<$arr>()?;
                Some(a.iter().map(|x| x.map(Into::into)).collect())
            }
        }
    };
}

column_value!(String, StringArray, DataType::Utf8, |v| v.as_str());
column_value!(u64, UInt64Array, DataType::UInt64, |v| *v);
column_value!(u32, UInt32Array, DataType::UInt32, |v| *v);
column_value!(f64, Float64Array, DataType::Float64, |v| *v);
column_value!(bool, BooleanArray, DataType::Boolean, |v| *v);

/// A row type of one output table.
pub trait TableRows: Sized {
    const TABLE: TableName;
    /// Column names in order (the struct's field names).
    const COLUMNS: &'static [&'static str];
    /// Fields without metadata, in column order.
    fn fields() -> Vec<Field>;
    /// The Arrow schema with the `sgdwalk.*` metadata.
    fn schema(meta: &TableMeta) -> SchemaRef {
        let metadata: std::collections::HashMap<String, String> =
            meta.key_values().into_iter().collect();
        Arc::new(Schema::new_with_metadata(Self::fields(), metadata))
    }
    fn to_batch(rows: &[Self], schema: SchemaRef) -> Result<RecordBatch, ArrowError>;
    /// Rows back from a batch of this table (looked up by column name).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, TableError>;
}

fn column<T: ColumnValue>(
    batch: &RecordBatch,
    table: TableName,
    name: &'static str,
) -> Result<Vec<T>, TableError> {
    batch
        .column_by_name(name)
        .and_then(|a| T::from_array(a.as_ref()))
        .ok_or(TableError::ColumnType {
            table,
            column: name,
        })
}

/// Defines a row struct and its [`TableRows`] impl from one field list, so the schema, the
/// writer and the reader cannot disagree.
macro_rules! table_rows {
    (
        $(#[$meta:meta])*
        pub struct $name:ident => $table:expr, columns $cols:ident;
        { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        /// Column names of the table, one constant per column (named as the column), for
        /// queries that must not spell them by hand.
        #[allow(non_upper_case_globals)]
        pub mod $cols {
            $( pub const $field: &str = stringify!($field); )*
        }

        impl TableRows for $name {
            const TABLE: TableName = $table;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn fields() -> Vec<Field> {
                vec![$(Field::new(
                    stringify!($field),
                    <$ty as ColumnValue>::DATA_TYPE,
                    <$ty as ColumnValue>::NULLABLE,
                )),*]
            }

            fn to_batch(rows: &[Self], schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
                let columns: Vec<ArrayRef> = vec![
                    $(<$ty as ColumnValue>::to_array(rows.iter().map(|r| &r.$field))),*
                ];
                RecordBatch::try_new(schema, columns)
            }

            fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, TableError> {
                $(let mut $field =
                    column::<$ty>(batch, Self::TABLE, stringify!($field))?.into_iter();)*
                let mut rows = Vec::with_capacity(batch.num_rows());
                for _ in 0..batch.num_rows() {
                    rows.push(Self {
                        $($field: $field
                            .next()
                            .ok_or(TableError::ColumnType {
                                table: Self::TABLE,
                                column: stringify!($field),
                            })?,)*
                    });
                }
                Ok(rows)
            }
        }
    };
}

table_rows! {
    /// `steps`: per-step geometry, one row per step and layer ("all" = whole state), each with
    /// the step's recorded scalars (lr, loss, norms, wall time).
    pub struct StepRow => TableName::Steps, columns steps_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        step: u64,
        epoch: u32,
        /// "all" or a layer name.
        layer: String,
        /// ‖θ_{t+1} − θ_t‖; null if step t+1 is absent.
        update_norm: Option<f64>,
        /// cos(d_{t−1}, d_t).
        cos_prev_update: Option<f64>,
        /// ‖θ_t − θ_0‖; null if θ_0 is absent.
        dist_from_init: Option<f64>,
        param_norm: f64,
        lr: Option<f64>,
        minibatch_loss: Option<f64>,
        grad_norm: Option<f64>,
        recorded_update_norm: Option<f64>,
        wall_time_secs: Option<f64>,
    }
}

table_rows! {
    /// `interp`: L and accuracy at θ_t + α·d_t, one row per step, setting and α.
    pub struct InterpRow => TableName::Interp, columns interp_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        step: u64,
        /// 1-based epoch of update t, as in `steps`.
        epoch: u32,
        /// "train", "val", "test", "batch" or "probe:N".
        eval_set: String,
        bn_policy: String,
        alpha: f64,
        /// NaN kept as NaN.
        loss: f64,
        loss_stderr: Option<f64>,
        accuracy: f64,
        samples: u64,
        /// Samples whose loss was NaN or infinite.
        nonfinite: u64,
        grid_points: u32,
        grid_lo: f64,
        grid_hi: f64,
    }
}

table_rows! {
    /// `floors`: the valley floor of each step's interpolation (see `floor.rs`).
    pub struct FloorRow => TableName::Floors, columns floors_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        step: u64,
        /// 1-based epoch of update t, as in `steps`.
        epoch: u32,
        eval_set: String,
        bn_policy: String,
        alpha_star: f64,
        loss_at_floor: f64,
        loss_start: f64,
        loss_end: f64,
        /// L(0) − L*.
        height_start: f64,
        /// L(1) − L*.
        height_end: f64,
        /// interior_min | monotone_down | monotone_up | multi_min | flat | nonfinite.
        shape: String,
        grid_argmin_alpha: f64,
        tolerance: f64,
        evaluations: u32,
        converged: bool,
    }
}

table_rows! {
    /// `barriers`: the loss along v_t → v_{t+k} ("floor") or θ_t → θ_{t+k} ("iterate").
    pub struct BarrierRow => TableName::Barriers, columns barriers_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        step_from: u64,
        /// 1-based epoch of update `step_from`, as in `steps`.
        epoch: u32,
        step_to: u64,
        stride: u32,
        /// "floor" or "iterate".
        path: String,
        eval_set: String,
        bn_policy: String,
        points: u32,
        loss_start: f64,
        loss_end: f64,
        loss_max: f64,
        /// max − max(endpoints).
        barrier_max: f64,
        /// max over α of L(α) − ((1−α)L0 + αL1).
        barrier_linear: f64,
        alpha_at_max: f64,
        alpha_at_max_linear: f64,
    }
}

table_rows! {
    /// `curvature`: eigenvalues, traces and ε-sharpness at chosen steps.
    pub struct CurvatureRow => TableName::Curvature, columns curvature_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        step: u64,
        /// 1-based epoch of update t, as in `steps` (the final state: the last epoch).
        epoch: u32,
        /// "iterate" or "floor".
        point: String,
        eval_set: String,
        bn_policy: String,
        /// "eigenvalue", "trace" or "eps_sharpness".
        quantity: String,
        /// 0 = largest; null for non-eigenvalue quantities.
        rank: Option<u32>,
        value: f64,
        stderr: Option<f64>,
        residual: Option<f64>,
        iterations: u32,
        converged: bool,
        method: String,
        samples: u64,
    }
}

table_rows! {
    /// `epochs`: per-epoch loss and accuracy recorded during training.
    pub struct EpochRow => TableName::Epochs, columns epochs_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        epoch: u32,
        step: u64,
        split: String,
        loss: f64,
        accuracy: f64,
        samples: u64,
    }
}

table_rows! {
    /// `eval_samples`: the sample ids of every evaluation set that is a drawn subset of a split
    /// (`probe:N`), in evaluation order, so that what each number was computed on can be rebuilt
    /// without this tool's random number generator.
    pub struct EvalSampleRow => TableName::EvalSamples, columns eval_samples_columns;
    {
        run_id: String,
        /// The run's label (`--label`, default the analysis folder's name; `runs/<name>/analysis`
        /// → `<name>`).
        run_label: String,
        /// The set's name as in the other tables' `eval_set`, e.g. `probe:1000`.
        eval_set: String,
        /// The split the ids belong to.
        split: String,
        /// 0-based place in evaluation order.
        position: u32,
        /// Index into the dataset's training file (the recording's sample-id space).
        sample_id: u32,
        /// The train-mode BatchNorm batch the sample is evaluated in: position / eval_batch_size.
        bn_batch: u32,
    }
}

/// Column-name constants of every table: `cols::floors::alpha_star == "alpha_star"`.
pub mod cols {
    pub use super::barriers_columns as barriers;
    pub use super::curvature_columns as curvature;
    pub use super::epochs_columns as epochs;
    pub use super::eval_samples_columns as eval_samples;
    pub use super::floors_columns as floors;
    pub use super::interp_columns as interp;
    pub use super::steps_columns as steps;
}

/// A recorded scalar that uses NaN for "not recorded" becomes a null (the `steps` contract).
pub fn nan_as_absent(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// A stable text rendering of a table's schema, one column per line:
/// `name: Type` or `name: Type (nullable)`. Pinned by tests.
pub fn schema_string<R: TableRows>() -> String {
    let mut out = format!("table {}\n", R::TABLE);
    for f in R::fields() {
        let null = if f.is_nullable() { " (nullable)" } else { "" };
        out.push_str(&format!("{}: {}{}\n", f.name(), f.data_type(), null));
    }
    out
}

fn check_part_name(part_name: &str) -> Result<(), TableError> {
    let ok = !part_name.is_empty()
        && part_name.len() <= 200
        && !part_name.starts_with('.')
        && part_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TableError::InvalidPartName {
            part_name: part_name.to_owned(),
        })
    }
}

/// Writer settings: zstd, BYTE_STREAM_SPLIT for floats, dictionaries elsewhere, page statistics.
fn writer_properties(fields: &[Field], meta: &TableMeta) -> Result<WriterProperties, ParquetError> {
    let kv = meta
        .key_values()
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(kv));
    for f in fields {
        if matches!(f.data_type(), DataType::Float64 | DataType::Float32) {
            let col = ColumnPath::from(f.name().as_str());
            b = b
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, Encoding::BYTE_STREAM_SPLIT);
        }
    }
    Ok(b.build())
}

/// Writes `rows` as one Parquet part of table `R::TABLE` and returns its path
/// (`<dir>/<name>/shard=<i>/part-<part_name>.parquet`), durably and atomically
/// ([`crate::dir::write_durably`]): a crash leaves the old complete file or the new one.
/// An empty `rows` writes a valid file with the schema and no rows (marks a finished work item).
pub fn write_rows<R: TableRows>(
    dir: &AnalysisDir,
    meta: &TableMeta,
    part_name: &str,
    rows: &[R],
) -> Result<PathBuf, TableError> {
    let table = R::TABLE;
    check_part_name(part_name)?;
    let (index, count) = meta.shard_or_default();
    if index >= count {
        return Err(TableError::InvalidShard { index, count });
    }
    let path = dir.part_path(table, index, part_name);
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&parent).map_err(|source| TableError::CreateDir {
        table,
        path: parent.clone(),
        source,
    })?;

    let schema = R::schema(meta);
    let batch = R::to_batch(rows, schema.clone()).map_err(|source| TableError::Arrow {
        table,
        source: Box::new(source),
    })?;
    let encode_err = |source: ParquetError| TableError::Encode {
        table,
        path: path.clone(),
        source: Box::new(source),
    };
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let props = writer_properties(&fields, meta).map_err(encode_err)?;
    let written = write_durably(&path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
        if batch.num_rows() > 0 {
            writer.write(&batch)?;
        }
        writer.close().map(|_| ())
    });
    written.map_err(|e| match e {
        DurableWriteError::CreateTemp { dir, source } => {
            TableError::CreateTemp { table, dir, source }
        }
        DurableWriteError::Fill(source) => encode_err(source),
        DurableWriteError::Sync { path, source } => TableError::Sync {
            table,
            path,
            source,
        },
        DurableWriteError::Persist { path, source } => TableError::Persist {
            table,
            path,
            source,
        },
    })?;
    Ok(path)
}

/// A Parquet file read back whole.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// The Arrow schema, with its metadata.
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The footer's key-value metadata (including Arrow's own `ARROW:schema`).
    pub key_value: BTreeMap<String, String>,
    pub num_rows: u64,
}

/// Reads a whole file (tests, the report stage, resume checks).
pub fn read_batches(path: &Path) -> Result<ReadBack, TableError> {
    let read_err = |source: ParquetError| TableError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let file = File::open(path).map_err(|source| TableError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err)?;
    let schema = builder.schema().clone();
    let file_meta = builder.metadata().file_metadata();
    let num_rows = u64::try_from(file_meta.num_rows()).unwrap_or(0);
    let key_value = file_meta
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder.build().map_err(read_err)?;
    let batches = reader
        .collect::<Result<Vec<_>, ArrowError>>()
        .map_err(|e| read_err(ParquetError::ArrowError(e.to_string())))?;
    Ok(ReadBack {
        schema,
        batches,
        key_value,
        num_rows,
    })
}

/// Rows of table `R` read back from a file.
pub fn read_rows<R: TableRows>(path: &Path) -> Result<Vec<R>, TableError> {
    let back = read_batches(path)?;
    let mut rows = Vec::with_capacity(usize::try_from(back.num_rows).unwrap_or(0));
    for b in &back.batches {
        rows.extend(R::from_batch(b)?);
    }
    Ok(rows)
}

/// Row count from the footer only.
pub fn read_rows_count(path: &Path) -> Result<u64, TableError> {
    let file = File::open(path).map_err(|source| TableError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| TableError::Read {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
}

/// The footer's `sgdwalk.partial_through_step`, read without the data: `None` for a part
/// of a complete work item.
pub fn read_partial_through_step(path: &Path) -> Result<Option<u64>, TableError> {
    let read_err = |source: ParquetError| TableError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let file = File::open(path).map_err(|source| TableError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err)?;
    let Some(kvs) = builder.metadata().file_metadata().key_value_metadata() else {
        return Ok(None);
    };
    let Some(value) = kvs
        .iter()
        .find(|kv| kv.key == keys::PARTIAL_THROUGH_STEP)
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        read_err(ParquetError::General(format!(
            "{} is not a step: {value:?}",
            keys::PARTIAL_THROUGH_STEP
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn meta(shard: Option<(u32, u32)>) -> TableMeta {
        TableMeta {
            recording_id: "00112233445566778899aabbccddeeff".into(),
            recording_path: "/data/run.sgdw".into(),
            recording_checksum: "xxh3:0123456789abcdef".into(),
            tool_version: "0.1.0".into(),
            config_json: r#"{"grid":{"lo":0,"hi":1,"points":11}}"#.into(),
            shard,
            partial_through_step: None,
        }
    }

    fn step_rows() -> Vec<StepRow> {
        let row = |step: u64, layer: &str| StepRow {
            run_id: "00112233445566778899aabbccddeeff".into(),
            run_label: "lr0.1".into(),
            step,
            epoch: 1,
            layer: layer.into(),
            update_norm: Some(0.5 + step as f64),
            cos_prev_update: if step == 0 { None } else { Some(-0.25) },
            dist_from_init: Some(1.0 / 3.0),
            param_norm: 12.0,
            lr: (layer == "all").then_some(0.1),
            minibatch_loss: (layer == "all").then_some(2.25),
            grad_norm: None,
            recorded_update_norm: Some(f64::INFINITY),
            wall_time_secs: Some(1.5e-3),
        };
        vec![
            row(0, "all"),
            row(0, "conv1.weight"),
            row(1, "all"),
            row(1, "conv1.weight"),
        ]
    }

    /// NaN-aware row comparison: Debug prints NaN as "NaN".
    fn same<R: fmt::Debug>(a: &[R], b: &[R]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    /// The column table of `## <name> —` in docs/tables.md: (columns in order, type per column
    /// where the row gives one).
    fn documented_columns(doc: &str, table: &str) -> Vec<(String, Option<String>)> {
        let heading = format!("## {table} —");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/tables.md has no section {heading:?}"));
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut cols = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (names, ty) = (cells[1], cells.get(2).copied().unwrap_or(""));
            if names == "column" || names.starts_with("---") {
                continue;
            }
            for name in names.split(',').map(str::trim) {
                let ty = (!ty.is_empty()).then(|| ty.to_string());
                cols.push((name.trim_matches('`').to_string(), ty));
            }
        }
        cols
    }

    fn doc_type(f: &Field) -> String {
        let base = match f.data_type() {
            DataType::Utf8 => "Utf8".to_string(),
            other => format!("{other:?}"),
        };
        if f.is_nullable() {
            format!("{base}?")
        } else {
            base
        }
    }

    fn check_documented<R: TableRows>(doc: &str) {
        let table = R::TABLE.as_str();
        let documented = documented_columns(doc, table);
        let names: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, R::COLUMNS, "docs/tables.md, table {table}: columns");
        for (field, (name, ty)) in R::fields().iter().zip(&documented) {
            if let Some(ty) = ty {
                assert_eq!(
                    *ty,
                    doc_type(field),
                    "docs/tables.md, table {table}: type of {name}"
                );
            }
        }
    }

    /// docs/tables.md lists every table's columns in order, with their real types.
    #[test]
    fn the_documented_columns_are_the_real_ones() {
        let doc = std::fs::read_to_string(
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
                .join("../docs/tables.md"),
        )
        .unwrap();
        check_documented::<StepRow>(&doc);
        check_documented::<InterpRow>(&doc);
        check_documented::<FloorRow>(&doc);
        check_documented::<BarrierRow>(&doc);
        check_documented::<CurvatureRow>(&doc);
        check_documented::<EpochRow>(&doc);
        check_documented::<EvalSampleRow>(&doc);
    }

    #[test]
    fn schemas_are_pinned() {
        insta::assert_snapshot!(schema_string::<StepRow>(), @r"
        table steps
        run_id: Utf8
        run_label: Utf8
        step: UInt64
        epoch: UInt32
        layer: Utf8
        update_norm: Float64 (nullable)
        cos_prev_update: Float64 (nullable)
        dist_from_init: Float64 (nullable)
        param_norm: Float64
        lr: Float64 (nullable)
        minibatch_loss: Float64 (nullable)
        grad_norm: Float64 (nullable)
        recorded_update_norm: Float64 (nullable)
        wall_time_secs: Float64 (nullable)
        ");
        insta::assert_snapshot!(schema_string::<InterpRow>(), @r"
        table interp
        run_id: Utf8
        run_label: Utf8
        step: UInt64
        epoch: UInt32
        eval_set: Utf8
        bn_policy: Utf8
        alpha: Float64
        loss: Float64
        loss_stderr: Float64 (nullable)
        accuracy: Float64
        samples: UInt64
        nonfinite: UInt64
        grid_points: UInt32
        grid_lo: Float64
        grid_hi: Float64
        ");
        insta::assert_snapshot!(schema_string::<FloorRow>(), @r"
        table floors
        run_id: Utf8
        run_label: Utf8
        step: UInt64
        epoch: UInt32
        eval_set: Utf8
        bn_policy: Utf8
        alpha_star: Float64
        loss_at_floor: Float64
        loss_start: Float64
        loss_end: Float64
        height_start: Float64
        height_end: Float64
        shape: Utf8
        grid_argmin_alpha: Float64
        tolerance: Float64
        evaluations: UInt32
        converged: Boolean
        ");
        insta::assert_snapshot!(schema_string::<BarrierRow>(), @r"
        table barriers
        run_id: Utf8
        run_label: Utf8
        step_from: UInt64
        epoch: UInt32
        step_to: UInt64
        stride: UInt32
        path: Utf8
        eval_set: Utf8
        bn_policy: Utf8
        points: UInt32
        loss_start: Float64
        loss_end: Float64
        loss_max: Float64
        barrier_max: Float64
        barrier_linear: Float64
        alpha_at_max: Float64
        alpha_at_max_linear: Float64
        ");
        insta::assert_snapshot!(schema_string::<CurvatureRow>(), @r"
        table curvature
        run_id: Utf8
        run_label: Utf8
        step: UInt64
        epoch: UInt32
        point: Utf8
        eval_set: Utf8
        bn_policy: Utf8
        quantity: Utf8
        rank: UInt32 (nullable)
        value: Float64
        stderr: Float64 (nullable)
        residual: Float64 (nullable)
        iterations: UInt32
        converged: Boolean
        method: Utf8
        samples: UInt64
        ");
        insta::assert_snapshot!(schema_string::<EpochRow>(), @r"
        table epochs
        run_id: Utf8
        run_label: Utf8
        epoch: UInt32
        step: UInt64
        split: Utf8
        loss: Float64
        accuracy: Float64
        samples: UInt64
        ");
        insta::assert_snapshot!(schema_string::<EvalSampleRow>(), @r"
        table eval_samples
        run_id: Utf8
        run_label: Utf8
        eval_set: Utf8
        split: Utf8
        position: UInt32
        sample_id: UInt32
        bn_batch: UInt32
        ");
        assert_eq!(
            SCHEMA_VERSION, "2",
            "bump together with the snapshots above"
        );
    }

    #[test]
    fn steps_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let rows = step_rows();
        let m = meta(None);
        let path = write_rows(&AnalysisDir::new(dir.path()), &m, "steps-0-99", &rows).unwrap();
        assert_eq!(
            path,
            dir.path().join("steps/shard=0/part-steps-0-99.parquet")
        );
        let back = read_batches(&path).unwrap();
        assert_eq!(back.num_rows, 4);
        assert_eq!(read_rows_count(&path).unwrap(), 4);
        for (k, v) in m.key_values() {
            assert_eq!(back.key_value.get(&k), Some(&v), "footer key {k}");
            assert_eq!(
                back.schema.metadata().get(&k),
                Some(&v),
                "arrow schema key {k}"
            );
        }
        assert_eq!(back.key_value[keys::SHARD], "0/1");
        assert_eq!(back.key_value[keys::SCHEMA_VERSION], SCHEMA_VERSION);
        let fields: Vec<Field> = back
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        assert_eq!(fields, StepRow::fields());
        assert_eq!(read_rows::<StepRow>(&path).unwrap(), rows);
    }

    #[test]
    fn nan_losses_survive() {
        let dir = tempfile::tempdir().unwrap();
        let row = |alpha: f64, loss: f64| InterpRow {
            run_id: "ab".into(),
            run_label: "lr0.1".into(),
            step: 7,
            epoch: 1,
            eval_set: "probe:512".into(),
            bn_policy: "train-mode".into(),
            alpha,
            loss,
            loss_stderr: None,
            accuracy: f64::NAN,
            samples: 512,
            nonfinite: 512,
            grid_points: 3,
            grid_lo: 0.0,
            grid_hi: 1.0,
        };
        let rows = vec![row(0.0, 2.3), row(0.5, f64::NAN), row(1.0, f64::INFINITY)];
        let path = write_rows(
            &AnalysisDir::new(dir.path()),
            &meta(None),
            "interp-7",
            &rows,
        )
        .unwrap();
        let back = read_rows::<InterpRow>(&path).unwrap();
        assert!(back[1].loss.is_nan() && back[1].accuracy.is_nan());
        assert_eq!(back[2].loss, f64::INFINITY);
        assert!(same(&back, &rows));
    }

    #[test]
    fn every_table_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(None);
        let floors = vec![FloorRow {
            run_id: "ab".into(),
            run_label: "lr0.1".into(),
            step: 3,
            epoch: 1,
            eval_set: "train".into(),
            bn_policy: "eval-mode".into(),
            alpha_star: 0.37,
            loss_at_floor: 1.0,
            loss_start: 1.1369,
            loss_end: 1.3969,
            height_start: 0.1369,
            height_end: 0.3969,
            shape: "interior_min".into(),
            grid_argmin_alpha: 0.4,
            tolerance: 1e-3,
            evaluations: 5,
            converged: true,
        }];
        let p = write_rows(&AnalysisDir::new(dir.path()), &m, "a", &floors).unwrap();
        assert_eq!(read_rows::<FloorRow>(&p).unwrap(), floors);
        let barriers = vec![BarrierRow {
            run_id: "ab".into(),
            run_label: "lr0.1".into(),
            step_from: 3,
            epoch: 1,
            step_to: 5,
            stride: 2,
            path: "floor".into(),
            eval_set: "train".into(),
            bn_policy: "train-mode".into(),
            points: 11,
            loss_start: 1.0,
            loss_end: 1.0,
            loss_max: 1.7,
            barrier_max: 0.7,
            barrier_linear: 0.7,
            alpha_at_max: 0.5,
            alpha_at_max_linear: 0.5,
        }];
        let p = write_rows(&AnalysisDir::new(dir.path()), &m, "a", &barriers).unwrap();
        assert_eq!(read_rows::<BarrierRow>(&p).unwrap(), barriers);
        let curv = vec![
            CurvatureRow {
                run_id: "ab".into(),
                run_label: "lr0.1".into(),
                step: 100,
                epoch: 1,
                point: "iterate".into(),
                eval_set: "probe:2048".into(),
                bn_policy: "train-mode".into(),
                quantity: "eigenvalue".into(),
                rank: Some(0),
                value: 42.5,
                stderr: None,
                residual: Some(1e-3),
                iterations: 17,
                converged: true,
                method: "lanczos(k=3,block=1,tol=1e-4)".into(),
                samples: 2048,
            },
            CurvatureRow {
                quantity: "trace".into(),
                rank: None,
                stderr: Some(3.5),
                residual: None,
                converged: false,
                method: "hutchinson(probes=100,seed=0)".into(),
                ..CurvatureRow::clone(&CurvatureRow {
                    run_id: "ab".into(),
                    run_label: "lr0.1".into(),
                    step: 100,
                    epoch: 1,
                    point: "floor".into(),
                    eval_set: "train".into(),
                    bn_policy: "eval-mode".into(),
                    quantity: String::new(),
                    rank: None,
                    value: 1234.0,
                    stderr: None,
                    residual: None,
                    iterations: 100,
                    converged: true,
                    method: String::new(),
                    samples: 45000,
                })
            },
        ];
        let p = write_rows(&AnalysisDir::new(dir.path()), &m, "a", &curv).unwrap();
        assert_eq!(read_rows::<CurvatureRow>(&p).unwrap(), curv);
        let epochs = vec![EpochRow {
            run_id: "ab".into(),
            run_label: "lr0.1".into(),
            epoch: 1,
            step: 450,
            split: "val".into(),
            loss: 1.2,
            accuracy: 0.55,
            samples: 5000,
        }];
        let p = write_rows(&AnalysisDir::new(dir.path()), &m, "a", &epochs).unwrap();
        assert_eq!(read_rows::<EpochRow>(&p).unwrap(), epochs);
        // Reading with the wrong row type names the missing column.
        let err = read_rows::<StepRow>(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column layer of table steps is missing or has the wrong type"
        );
    }

    #[test]
    fn shards_use_hive_layout() {
        let dir = tempfile::tempdir().unwrap();
        let rows = step_rows();
        let p0 = write_rows(
            &AnalysisDir::new(dir.path()),
            &meta(Some((0, 2))),
            "w0",
            &rows[..2],
        )
        .unwrap();
        let p1 = write_rows(
            &AnalysisDir::new(dir.path()),
            &meta(Some((1, 2))),
            "w1",
            &rows[2..],
        )
        .unwrap();
        assert_eq!(p0, dir.path().join("steps/shard=0/part-w0.parquet"));
        assert_eq!(p1, dir.path().join("steps/shard=1/part-w1.parquet"));
        assert!(p0.is_file() && p1.is_file());
        assert_eq!(read_batches(&p1).unwrap().key_value[keys::SHARD], "1/2");
        let mut all = read_rows::<StepRow>(&p0).unwrap();
        all.extend(read_rows::<StepRow>(&p1).unwrap());
        assert_eq!(all, rows);
        assert!(matches!(
            write_rows(
                &AnalysisDir::new(dir.path()),
                &meta(Some((2, 2))),
                "w2",
                &rows
            ),
            Err(TableError::InvalidShard { index: 2, count: 2 })
        ));
    }

    #[test]
    fn encodings_compression_and_page_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_rows(
            &AnalysisDir::new(dir.path()),
            &meta(None),
            "enc",
            &step_rows(),
        )
        .unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let md = reader.metadata();
        assert_eq!(md.num_row_groups(), 1);
        let rg = md.row_group(0);
        for (i, name) in StepRow::COLUMNS.iter().enumerate() {
            let col = rg.column(i);
            assert_eq!(col.column_path().string(), *name);
            assert!(matches!(col.compression(), Compression::ZSTD(_)), "{name}");
            let enc: Vec<Encoding> = col.encodings().collect();
            let is_float = StepRow::fields()[i].data_type() == &DataType::Float64;
            assert_eq!(
                enc.contains(&Encoding::BYTE_STREAM_SPLIT),
                is_float,
                "{name}: {enc:?}"
            );
            if !is_float {
                assert!(
                    enc.contains(&Encoding::RLE_DICTIONARY)
                        || enc.contains(&Encoding::PLAIN_DICTIONARY),
                    "{name}: {enc:?}"
                );
            }
            assert!(
                col.column_index_offset().is_some(),
                "{name}: no column index"
            );
            assert!(
                col.offset_index_offset().is_some(),
                "{name}: no offset index"
            );
            assert!(col.statistics().is_some(), "{name}: no statistics");
        }
    }

    #[test]
    fn writes_are_atomic_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let rows = step_rows();
        let p = write_rows(&AnalysisDir::new(dir.path()), &meta(None), "x", &rows).unwrap();
        let p2 = write_rows(&AnalysisDir::new(dir.path()), &meta(None), "x", &rows[..1]).unwrap();
        assert_eq!(p, p2);
        assert_eq!(read_rows_count(&p).unwrap(), 1);
        let names: Vec<String> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["part-x.parquet".to_string()],
            "no temporary file left"
        );
    }

    #[test]
    fn empty_part_is_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_rows::<EpochRow>(&AnalysisDir::new(dir.path()), &meta(None), "none", &[])
            .unwrap();
        let back = read_batches(&p).unwrap();
        assert_eq!(back.num_rows, 0);
        assert_eq!(back.key_value[keys::TOOL_VERSION], "0.1.0");
        assert!(read_rows::<EpochRow>(&p).unwrap().is_empty());
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", ".hidden", "a/b", "../up", "sp ace", &"x".repeat(201)] {
            assert!(
                matches!(
                    write_rows::<EpochRow>(&AnalysisDir::new(dir.path()), &meta(None), bad, &[]),
                    Err(TableError::InvalidPartName { .. })
                ),
                "{bad:?}"
            );
        }
        let missing = dir.path().join("nope.parquet");
        let err = read_batches(&missing).unwrap_err();
        assert!(matches!(err, TableError::Open { .. }));
        assert!(
            err.to_string().ends_with("nope.parquet"),
            "path last: {err}"
        );
        std::fs::write(&missing, b"not parquet").unwrap();
        assert!(matches!(
            read_batches(&missing),
            Err(TableError::Read { .. })
        ));
        // An out_dir that is a file cannot hold the table directory.
        let file_dir = dir.path().join("file");
        std::fs::write(&file_dir, b"").unwrap();
        assert!(matches!(
            write_rows::<EpochRow>(&AnalysisDir::new(&file_dir), &meta(None), "a", &[]),
            Err(TableError::CreateDir {
                table: TableName::Epochs,
                ..
            })
        ));
    }

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<TableError>() <= 64,
            "{}",
            std::mem::size_of::<TableError>()
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(nan_as_absent(f64::NAN), None);
        assert_eq!(nan_as_absent(1.5), Some(1.5));
        assert_eq!(nan_as_absent(f64::INFINITY), Some(f64::INFINITY));
        let names: Vec<&str> = TableName::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "steps",
                "interp",
                "floors",
                "barriers",
                "curvature",
                "epochs",
                "eval_samples"
            ]
        );
        assert_eq!(StepRow::COLUMNS.len(), StepRow::fields().len());
    }
}
