//! `tensors:PATH` datasets: one safetensors file, as `safetensors.torch.save_file` writes it,
//! holding `train_x` `[N, ...]` (u8 or f32) and `train_y` `[N]` (any integer dtype), and
//! optionally `val_x`/`val_y` and `test_x`/`test_y`. `__metadata__` may carry `sgdwalk.mean`,
//! `sgdwalk.std` (comma-separated, one value per channel of dim 1, or one for all) and
//! `sgdwalk.classes`.
//!
//! The file stays memory-mapped: [`TensorsFile::gather`] copies the rows of one batch out of the
//! map, so a dataset larger than memory trains as well as a small one. Only the labels are
//! decoded up front (to i64; they are small).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::error::WorkloadError;

/// Metadata key of the per-channel mean (comma-separated numbers).
pub const META_MEAN: &str = "sgdwalk.mean";
/// Metadata key of the per-channel standard deviation (comma-separated numbers).
pub const META_STD: &str = "sgdwalk.std";
/// Metadata key of the number of classes.
pub const META_CLASSES: &str = "sgdwalk.classes";

const INPUT_DTYPES: &str = "U8, F32";
const LABEL_DTYPES: &str = "U8, I8, I16, I32, I64, U16, U32, U64";

/// A pair of tensors of the file: the inputs `<part>_x` and labels `<part>_y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilePart {
    Train,
    Val,
    Test,
}

impl FilePart {
    /// Every part, in file-id order (train before val: ids of the training file run through
    /// `train_x`, then `val_x`).
    pub const ALL: [FilePart; 3] = [FilePart::Train, FilePart::Val, FilePart::Test];

    /// Name of the inputs tensor.
    pub fn x_name(self) -> &'static str {
        match self {
            FilePart::Train => "train_x",
            FilePart::Val => "val_x",
            FilePart::Test => "test_x",
        }
    }

    /// Name of the labels tensor.
    pub fn y_name(self) -> &'static str {
        match self {
            FilePart::Train => "train_y",
            FilePart::Val => "val_y",
            FilePart::Test => "test_y",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Element type of the inputs: u8 is scaled by 1/255 (as the idx and CIFAR loaders), f32 is
/// used as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputDtype {
    U8,
    F32,
}

impl InputDtype {
    fn bytes_per_element(self) -> usize {
        match self {
            InputDtype::U8 => 1,
            InputDtype::F32 => 4,
        }
    }
}

/// Where one tensor's bytes lie in the file.
#[derive(Clone, Debug)]
struct Slot {
    dtype: Dtype,
    shape: Vec<usize>,
    byte_range_in_file: Range<usize>,
}

#[derive(Clone, Debug)]
struct PartSlots {
    x: Slot,
    y: Slot,
}

/// The checked header of a tensors dataset file: which splits exist, their sizes, the
/// per-sample shape and the metadata. Reading it touches only the header bytes.
#[derive(Clone, Debug)]
pub struct TensorsHeader {
    pub path: PathBuf,
    pub input_dtype: InputDtype,
    /// Shape of one sample (`train_x`'s shape without N); every split has the same.
    pub sample_shape: Vec<i64>,
    /// Samples in `train_x`.
    pub train_samples: usize,
    /// Samples in `val_x`, if the file has it.
    pub val_samples: Option<usize>,
    /// Samples in `test_x`, if the file has it.
    pub test_samples: Option<usize>,
    /// `sgdwalk.mean` of the metadata.
    pub metadata_mean: Option<Vec<f64>>,
    /// `sgdwalk.std` of the metadata.
    pub metadata_std: Option<Vec<f64>>,
    /// `sgdwalk.classes` of the metadata.
    pub metadata_classes: Option<i64>,
    parts: [Option<PartSlots>; 3],
}

impl TensorsHeader {
    /// Reads and checks the header of `path` without reading the tensor data: tensors present
    /// in pairs, dtypes, ranks, sample counts and per-sample shapes, metadata values.
    pub fn read(path: &Path) -> Result<Self, WorkloadError> {
        let map = map_file(path)?;
        Self::parse(path, &map)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, WorkloadError> {
        let (header_len_bytes, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| WorkloadError::NotSafetensors {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        // data_offsets count from the start of the byte buffer, after the 8-byte length and
        // the JSON header.
        let buffer_start = 8 + header_len_bytes;
        let slot = |name: &str| {
            metadata.info(name).map(|info: &TensorInfo| Slot {
                dtype: info.dtype,
                shape: info.shape.clone(),
                byte_range_in_file: buffer_start + info.data_offsets.0
                    ..buffer_start + info.data_offsets.1,
            })
        };
        let missing = |tensor, required_by| WorkloadError::TensorMissing {
            path: path.to_path_buf(),
            tensor,
            required_by,
        };
        let mut parts: [Option<PartSlots>; 3] = [None, None, None];
        for part in FilePart::ALL {
            let (xn, yn) = (part.x_name(), part.y_name());
            // train_x and train_y are required; the other pairs are optional, but whole.
            let optional = part != FilePart::Train;
            parts[part.index()] = match (slot(xn), slot(yn)) {
                (Some(x), Some(y)) => Some(PartSlots { x, y }),
                (None, None) if optional => None,
                (None, y) => return Err(missing(xn, (optional && y.is_some()).then_some(yn))),
                (Some(_), None) => return Err(missing(yn, optional.then_some(xn))),
            };
        }
        let Some(train) = &parts[FilePart::Train.index()] else {
            return Err(missing("train_x", None));
        };
        let input_dtype = match train.x.dtype {
            Dtype::U8 => InputDtype::U8,
            Dtype::F32 => InputDtype::F32,
            other => {
                return Err(WorkloadError::TensorDtype {
                    path: path.to_path_buf(),
                    tensor: "train_x",
                    found: other.to_string(),
                    allowed: INPUT_DTYPES.into(),
                });
            }
        };
        let train_sample_shape = train.x.shape.get(1..).unwrap_or_default().to_vec();
        let mut samples = [None; 3];
        for part in FilePart::ALL {
            let Some(p) = &parts[part.index()] else {
                continue;
            };
            samples[part.index()] = Some(check_part(path, part, p, &train.x, &train_sample_shape)?);
        }
        let train_samples = samples[0].unwrap_or(0);
        let val_samples = samples[1];
        let test_samples = samples[2];
        // Sample ids are u32: the training file (train_x then val_x) and test_x must fit.
        let pool = train_samples + val_samples.unwrap_or(0);
        for (tensor, n) in [("train_x", pool), ("test_x", test_samples.unwrap_or(0))] {
            if u32::try_from(n).is_err() {
                return Err(WorkloadError::TensorShape {
                    path: path.to_path_buf(),
                    tensor,
                    found: vec![n],
                    expected: format!("at most {} samples (sample ids are u32)", u32::MAX),
                });
            }
        }
        let empty = HashMap::new();
        let meta = metadata.metadata().as_ref().unwrap_or(&empty);
        let numbers = |key: &'static str| -> Result<Option<Vec<f64>>, WorkloadError> {
            meta.get(key)
                .map(|v| {
                    parse_numbers(v).map_err(|reason| WorkloadError::BadTensorsMetadata {
                        path: path.to_path_buf(),
                        key,
                        value: v.clone(),
                        reason,
                    })
                })
                .transpose()
        };
        let metadata_mean = numbers(META_MEAN)?;
        let metadata_std = numbers(META_STD)?;
        let metadata_classes = meta
            .get(META_CLASSES)
            .map(|v| match v.trim().parse::<i64>() {
                Ok(c) if c > 0 => Ok(c),
                _ => Err(WorkloadError::BadTensorsMetadata {
                    path: path.to_path_buf(),
                    key: META_CLASSES,
                    value: v.clone(),
                    reason: "not a positive integer".into(),
                }),
            })
            .transpose()?;
        let sample_shape: Vec<i64> = train_sample_shape.iter().map(|&d| d as i64).collect();
        let header = TensorsHeader {
            path: path.to_path_buf(),
            input_dtype,
            sample_shape,
            train_samples,
            val_samples,
            test_samples,
            metadata_mean,
            metadata_std,
            metadata_classes,
            parts,
        };
        if let Some(m) = &header.metadata_mean {
            check_normalization(META_MEAN, m, header.channels(), false)?;
        }
        if let Some(s) = &header.metadata_std {
            check_normalization(META_STD, s, header.channels(), true)?;
        }
        Ok(header)
    }

    /// Size of dim 1 of the inputs: the channels of `[N, C, H, W]` images, the features of
    /// `[N, D]` tables. Normalization is per entry of this dim.
    pub fn channels(&self) -> i64 {
        self.sample_shape.first().copied().unwrap_or(1)
    }

    /// `(channels, height, width)` for `[N, C, H, W]` inputs; `None` for any other rank.
    pub fn image_shape(&self) -> Option<(i64, i64, i64)> {
        match self.sample_shape[..] {
            [c, h, w] => Some((c, h, w)),
            _ => None,
        }
    }

    /// Elements of one sample (the input features of an MLP).
    pub fn sample_elements(&self) -> i64 {
        self.sample_shape.iter().product()
    }

    /// Samples of the training file: `train_x` followed by `val_x`.
    pub fn training_file_samples(&self) -> usize {
        self.train_samples + self.val_samples.unwrap_or(0)
    }

    /// Whether the file has `part`.
    pub fn has(&self, part: FilePart) -> bool {
        self.parts[part.index()].is_some()
    }

    /// Bytes of one sample in the file.
    fn sample_bytes(&self) -> usize {
        self.sample_elements() as usize * self.input_dtype.bytes_per_element()
    }
}

/// The settings of a tensors dataset that a recording stores: the file as named when recording
/// and the preprocessing and classes it was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorsSpec {
    /// The file as given when recording (where an analysis looks by default).
    pub path: PathBuf,
    /// Subtracted per entry of dim 1 after u8 scaling (one value: all entries).
    pub mean: Vec<f64>,
    /// Divided by, per entry of dim 1 after the mean (one value: all entries).
    pub std: Vec<f64>,
    /// Number of classes; every label is in `[0, classes)`.
    pub classes: i64,
}

impl TensorsSpec {
    /// Resolves the settings of `header`'s file: explicit values (flags) win over the file's
    /// metadata, which wins over the defaults (mean 0, std 1, classes = largest label + 1 over
    /// every split, which reads the labels).
    pub fn resolve(
        header: &TensorsHeader,
        mean: Option<Vec<f64>>,
        std: Option<Vec<f64>>,
        classes: Option<i64>,
    ) -> Result<Self, WorkloadError> {
        if let Some(m) = &mean {
            check_normalization("--input-mean", m, header.channels(), false)?;
        }
        if let Some(s) = &std {
            check_normalization("--input-std", s, header.channels(), true)?;
        }
        let classes = match classes.or(header.metadata_classes) {
            Some(c) => c,
            None => {
                let file = TensorsFile::map(header.clone())?;
                let mut max = i64::MIN;
                for part in FilePart::ALL {
                    if header.has(part) {
                        max = max.max(file.labels(part)?.into_iter().max().unwrap_or(i64::MIN));
                    }
                }
                // Negative labels are reported by name when the data is loaded.
                max.saturating_add(1).max(1)
            }
        };
        Ok(TensorsSpec {
            path: header.path.clone(),
            mean: mean
                .or_else(|| header.metadata_mean.clone())
                .unwrap_or_else(|| vec![0.0]),
            std: std
                .or_else(|| header.metadata_std.clone())
                .unwrap_or_else(|| vec![1.0]),
            classes,
        })
    }

    /// The file to open for `location`: `location` itself when it is not a folder, else the
    /// recorded file's name inside it.
    pub fn file_at(&self, location: &Path) -> PathBuf {
        match self.path.file_name() {
            Some(name) if location.is_dir() => location.join(name),
            _ => location.to_path_buf(),
        }
    }
}

/// Checks normalization values for inputs with `channels` entries in dim 1: one value or one
/// per entry, finite, and for a std positive. `source_name` is the flag or metadata key.
pub fn check_normalization(
    source_name: &'static str,
    values: &[f64],
    channels: i64,
    positive: bool,
) -> Result<(), WorkloadError> {
    let bad = |reason: String| WorkloadError::BadNormalization {
        source_name,
        reason,
    };
    if values.len() != 1 && values.len() as i64 != channels {
        return Err(bad(format!(
            "{} values for {channels} entries of dim 1 (give 1 or {channels})",
            values.len()
        )));
    }
    if let Some(v) = values
        .iter()
        .find(|v| !v.is_finite() || (positive && **v <= 0.0))
    {
        return Err(bad(format!(
            "{v} is not a {}number",
            if positive { "positive " } else { "finite " }
        )));
    }
    Ok(())
}

/// Parses comma-separated numbers (`0.5` or `0.49, 0.48, 0.45`).
pub fn parse_numbers(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("{:?} is not a number", v.trim()))
        })
        .collect()
}

/// Checks one split's `x`/`y` pair against `train_x` (dtype, per-sample shape) and against each
/// other (label dtype, ranks, sample counts); returns its sample count.
fn check_part(
    path: &Path,
    part: FilePart,
    p: &PartSlots,
    train_x: &Slot,
    train_sample_shape: &[usize],
) -> Result<usize, WorkloadError> {
    let (xn, yn) = (part.x_name(), part.y_name());
    if p.x.dtype != train_x.dtype {
        return Err(WorkloadError::TensorDtype {
            path: path.to_path_buf(),
            tensor: xn,
            found: p.x.dtype.to_string(),
            allowed: format!("{} (the dtype of train_x)", train_x.dtype),
        });
    }
    if !is_label_dtype(p.y.dtype) {
        return Err(WorkloadError::TensorDtype {
            path: path.to_path_buf(),
            tensor: yn,
            found: p.y.dtype.to_string(),
            allowed: LABEL_DTYPES.into(),
        });
    }
    let shape_err = |tensor, found: &[usize], expected: String| WorkloadError::TensorShape {
        path: path.to_path_buf(),
        tensor,
        found: found.to_vec(),
        expected,
    };
    if p.x.shape.len() < 2 {
        return Err(shape_err(
            xn,
            &p.x.shape,
            "[N, ...] (at least 2 dims)".into(),
        ));
    }
    if p.y.shape.len() != 1 {
        return Err(shape_err(yn, &p.y.shape, "[N] (1 dim)".into()));
    }
    let (nx, ny) = (p.x.shape[0], p.y.shape[0]);
    if nx != ny {
        return Err(WorkloadError::SampleCountMismatch {
            path: path.to_path_buf(),
            x_tensor: xn,
            x_samples: nx,
            y_tensor: yn,
            y_samples: ny,
        });
    }
    if nx == 0 {
        return Err(WorkloadError::NoSamples {
            path: path.to_path_buf(),
            tensor: xn,
        });
    }
    if p.x.shape[1..] != train_sample_shape[..] {
        return Err(shape_err(
            xn,
            &p.x.shape,
            format!(
                "[N, {}] (the sample shape of train_x)",
                dims(train_sample_shape)
            ),
        ));
    }
    if train_sample_shape.contains(&0) {
        return Err(shape_err(
            xn,
            &p.x.shape,
            "samples of at least one element".into(),
        ));
    }
    Ok(nx)
}

fn is_label_dtype(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::I32
            | Dtype::I64
            | Dtype::U16
            | Dtype::U32
            | Dtype::U64
    )
}

fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps `path` read-only.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap, WorkloadError> {
    if !path.exists() {
        return Err(WorkloadError::TensorsFileMissing {
            path: path.to_path_buf(),
        });
    }
    let io = |source| WorkloadError::DatasetIo {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len_bytes = file.metadata().map_err(io)?.len();
    if len_bytes < 8 {
        // Not even the header length; mapping an empty file is an error on some systems.
        return Err(WorkloadError::NotSafetensors {
            path: path.to_path_buf(),
            reason: format!("{len_bytes} bytes, shorter than the 8-byte header length"),
        });
    }
    // SAFETY: the map is sound while no process truncates or rewrites the file. A dataset is
    // an input that nothing in sgdwalk writes; a file changed during a run would break the
    // recording's data identity (checked by sha256 at load) just as a copy in memory would,
    // and a truncation ends the process with SIGBUS rather than corrupting memory silently.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// A tensors dataset file, checked and memory-mapped.
#[derive(Debug)]
pub struct TensorsFile {
    header: TensorsHeader,
    map: Mmap,
}

impl TensorsFile {
    /// Maps `path` and checks its header (no data is read yet).
    pub fn open(path: &Path) -> Result<Self, WorkloadError> {
        let map = map_file(path)?;
        let header = TensorsHeader::parse(path, &map)?;
        Ok(TensorsFile { header, map })
    }

    fn map(header: TensorsHeader) -> Result<Self, WorkloadError> {
        let map = map_file(&header.path)?;
        Ok(TensorsFile { header, map })
    }

    /// The checked header.
    pub fn header(&self) -> &TensorsHeader {
        &self.header
    }

    /// sha256 (hex) of the whole file and its length in bytes.
    pub fn sha256(&self) -> (String, u64) {
        (
            hex::encode(Sha256::digest(&self.map[..])),
            self.map.len() as u64,
        )
    }

    fn slots(&self, part: FilePart) -> Result<&PartSlots, WorkloadError> {
        self.header.parts[part.index()]
            .as_ref()
            .ok_or_else(|| WorkloadError::TensorMissing {
                path: self.header.path.clone(),
                tensor: part.x_name(),
                required_by: None,
            })
    }

    /// The labels of `part` as i64 (the only data decoded up front).
    pub fn labels(&self, part: FilePart) -> Result<Vec<i64>, WorkloadError> {
        let y = &self.slots(part)?.y;
        let bytes = &self.map[y.byte_range_in_file.clone()];
        // Every label dtype is whole bytes.
        let size = y.dtype.bitsize() / 8;
        let mut out = Vec::with_capacity(y.shape[0]);
        for (index, b) in bytes.chunks_exact(size).enumerate() {
            let value: i128 = match y.dtype {
                Dtype::U8 => i128::from(b[0]),
                Dtype::I8 => i128::from(i8::from_le_bytes([b[0]])),
                Dtype::I16 => i128::from(i16::from_le_bytes([b[0], b[1]])),
                Dtype::U16 => i128::from(u16::from_le_bytes([b[0], b[1]])),
                Dtype::I32 => i128::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Dtype::U32 => i128::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Dtype::I64 => i128::from(i64::from_le_bytes(le8(b))),
                Dtype::U64 => i128::from(u64::from_le_bytes(le8(b))),
                other => {
                    return Err(WorkloadError::TensorDtype {
                        path: self.header.path.clone(),
                        tensor: part.y_name(),
                        found: other.to_string(),
                        allowed: LABEL_DTYPES.into(),
                    });
                }
            };
            let label = i64::try_from(value).map_err(|_| WorkloadError::LabelOutOfRange {
                path: self.header.path.clone(),
                tensor: part.y_name(),
                index,
                value,
                classes: i64::MAX,
            })?;
            out.push(label);
        }
        Ok(out)
    }

    /// Checks that every label of `part` is in `[0, classes)`.
    pub fn check_labels(
        &self,
        part: FilePart,
        labels: &[i64],
        classes: i64,
    ) -> Result<(), WorkloadError> {
        match labels.iter().position(|l| !(0..classes).contains(l)) {
            None => Ok(()),
            Some(index) => Err(WorkloadError::LabelOutOfRange {
                path: self.header.path.clone(),
                tensor: part.y_name(),
                index,
                value: i128::from(labels[index]),
                classes,
            }),
        }
    }

    /// Checks that the f32 inputs of `part` hold no NaN or infinity (u8 inputs always pass).
    pub fn check_finite(&self, part: FilePart) -> Result<(), WorkloadError> {
        if self.header.input_dtype != InputDtype::F32 {
            return Ok(());
        }
        let x = &self.slots(part)?.x;
        let bytes = &self.map[x.byte_range_in_file.clone()];
        let found = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .enumerate()
            .find(|(_, v)| !v.is_finite());
        match found {
            None => Ok(()),
            Some((flat, value)) => Err(WorkloadError::NonFiniteInput {
                path: self.header.path.clone(),
                tensor: part.x_name(),
                index: unravel(flat, &x.shape),
                value,
            }),
        }
    }

    /// The inputs of `rows` (part and row index in that part's `_x`) as one CPU tensor
    /// `[rows, ...sample shape]`, u8 or f32 as stored. Rows must be in range.
    pub fn gather(&self, rows: &[(FilePart, usize)]) -> Result<Tensor, WorkloadError> {
        let sample_bytes = self.header.sample_bytes();
        let mut bytes = Vec::with_capacity(rows.len() * sample_bytes);
        for &(part, row) in rows {
            let x = &self.slots(part)?.x;
            if row >= x.shape[0] {
                return Err(WorkloadError::SampleOutOfRange {
                    split: part.x_name(),
                    sample: row as u64,
                    len: x.shape[0],
                });
            }
            let start = x.byte_range_in_file.start + row * sample_bytes;
            bytes.extend_from_slice(&self.map[start..start + sample_bytes]);
        }
        let mut shape = vec![rows.len() as i64];
        shape.extend_from_slice(&self.header.sample_shape);
        let flat = match self.header.input_dtype {
            InputDtype::U8 => Tensor::f_from_slice(&bytes)?,
            InputDtype::F32 => {
                // Decoded explicitly as little-endian: the stored order, on any host.
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Tensor::f_from_slice(&values)?
            }
        };
        Ok(flat.f_view(shape.as_slice())?)
    }
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Multi-index of flat element `flat` in a row-major tensor of `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[i] = flat % d;
            flat /= d;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use safetensors::tensor::TensorView;

    use super::*;

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        safetensors::serialize_to_file(views, Some(meta), path).unwrap();
    }

    #[test]
    fn header_probe_reads_shapes_splits_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        write(
            &path,
            &[
                ("train_x", Dtype::U8, vec![6, 3, 4, 4], vec![7; 6 * 48]),
                ("train_y", Dtype::I64, vec![6], vec![0; 48]),
                ("test_x", Dtype::U8, vec![2, 3, 4, 4], vec![9; 2 * 48]),
                ("test_y", Dtype::U8, vec![2], vec![1, 2]),
            ],
            &[(META_MEAN, "0.5, 0.25,0.125"), (META_CLASSES, "4")],
        );
        let h = TensorsHeader::read(&path).unwrap();
        assert_eq!(h.input_dtype, InputDtype::U8);
        assert_eq!(h.sample_shape, vec![3, 4, 4]);
        assert_eq!(h.image_shape(), Some((3, 4, 4)));
        assert_eq!(h.sample_elements(), 48);
        assert_eq!(
            (h.train_samples, h.val_samples, h.test_samples),
            (6, None, Some(2))
        );
        assert_eq!(h.training_file_samples(), 6);
        assert!(h.has(FilePart::Test) && !h.has(FilePart::Val));
        assert_eq!(h.metadata_mean, Some(vec![0.5, 0.25, 0.125]));
        assert_eq!(
            (h.metadata_std.clone(), h.metadata_classes),
            (None, Some(4))
        );
        // Tabular f32 inputs: no image shape; the MLP takes the product.
        let tab = dir.path().join("t.safetensors");
        write(
            &tab,
            &[
                ("train_x", Dtype::F32, vec![5, 2, 3], vec![0; 5 * 6 * 4]),
                ("train_y", Dtype::U16, vec![5], vec![0; 10]),
            ],
            &[],
        );
        let h = TensorsHeader::read(&tab).unwrap();
        assert_eq!(
            (h.image_shape(), h.sample_elements(), h.channels()),
            (None, 6, 2)
        );
        // The probe reads only the header: a wrong label value is found when the data is read.
        let bad = dir.path().join("b.safetensors");
        write(
            &bad,
            &[
                ("train_x", Dtype::U8, vec![2, 4], vec![0; 8]),
                ("train_y", Dtype::U8, vec![2], vec![0, 200]),
            ],
            &[(META_CLASSES, "3")],
        );
        let h = TensorsHeader::read(&bad).unwrap();
        let file = TensorsFile::open(&bad).unwrap();
        let labels = file.labels(FilePart::Train).unwrap();
        let err = file.check_labels(FilePart::Train, &labels, h.metadata_classes.unwrap());
        assert!(
            matches!(
                err,
                Err(WorkloadError::LabelOutOfRange {
                    tensor: "train_y",
                    index: 1,
                    value: 200,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn gather_copies_rows_from_the_map_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        write(
            &path,
            &[
                ("train_x", Dtype::F32, vec![4, 3], bytes),
                ("train_y", Dtype::I8, vec![4], vec![0, 1, 0, 1]),
                (
                    "val_x",
                    Dtype::F32,
                    vec![1, 3],
                    [9f32, 9.5, 10.0]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
                ("val_y", Dtype::I8, vec![1], vec![1]),
            ],
            &[],
        );
        let f = TensorsFile::open(&path).unwrap();
        let t = f
            .gather(&[
                (FilePart::Train, 2),
                (FilePart::Val, 0),
                (FilePart::Train, 0),
            ])
            .unwrap();
        assert_eq!(t.size(), vec![3, 3]);
        let got = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![3.0, 3.5, 4.0, 9.0, 9.5, 10.0, 0.0, 0.5, 1.0]);
        assert!(f.gather(&[(FilePart::Val, 1)]).is_err());
        assert!(f.gather(&[(FilePart::Test, 0)]).is_err());
        assert_eq!(unravel(7, &[2, 2, 3]), vec![1, 0, 1]);
    }
}
