//! Datasets: MNIST and Fashion-MNIST idx files (plain or .gz), CIFAR-10 binary batches (any
//! record count), a seeded synthetic set, and your own safetensors file (`tensors:PATH`, see
//! [`crate::tensors`]); index-based splits; normalization as the paper's code; a dataset
//! identity (file checksums) that recordings store and analyses check.

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::augment::AugChoice;
use crate::error::WorkloadError;
use crate::tensors::{FilePart, InputDtype, TensorsFile, TensorsSpec};

/// The datasets the workload knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    Cifar10,
    Synthetic,
    /// A safetensors file of your own (`tensors:PATH` on the command line).
    Tensors,
}

impl DatasetName {
    /// Parses a command-line name (`tensors` needs its file: see [`DatasetSpec::tensors`]).
    pub fn parse(name: &str) -> Result<Self, WorkloadError> {
        match name {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" => Ok(DatasetName::FashionMnist),
            "cifar10" => Ok(DatasetName::Cifar10),
            "synthetic" => Ok(DatasetName::Synthetic),
            other => Err(WorkloadError::UnknownDataset {
                name: other.to_string(),
            }),
        }
    }

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Synthetic => "synthetic",
            DatasetName::Tensors => "tensors",
        }
    }
}

impl std::fmt::Display for DatasetName {
    /// The dataset's usual written name (MNIST, Fashion-MNIST, CIFAR-10, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatasetName::Mnist => "MNIST",
            DatasetName::FashionMnist => "Fashion-MNIST",
            DatasetName::Cifar10 => "CIFAR-10",
            DatasetName::Synthetic => "synthetic",
            DatasetName::Tensors => "tensors",
        })
    }
}

/// SHA-256 of the uncompressed idx files of the published MNIST and Fashion-MNIST (the digests
/// a [`DatasetIdentity`] stores), so files of one given as the other are recognized.
const KNOWN_IDX_FILES: [(DatasetName, &str); 8] = [
    (
        DatasetName::Mnist,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        DatasetName::Mnist,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        DatasetName::Mnist,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        DatasetName::Mnist,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    (
        DatasetName::FashionMnist,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        DatasetName::FashionMnist,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        DatasetName::FashionMnist,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        DatasetName::FashionMnist,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// The known dataset whose published files include one of `files`, if any.
pub fn recognize_idx_files(files: &[FileDigest]) -> Option<DatasetName> {
    files.iter().find_map(|f| {
        KNOWN_IDX_FILES
            .iter()
            .find(|(_, sha)| *sha == f.sha256)
            .map(|(name, _)| *name)
    })
}

/// Where to get the files of `name`, for a "file not found" message.
fn missing_hint(name: DatasetName, dir: &Path) -> String {
    let at = dir.display();
    match name {
        DatasetName::FashionMnist => format!(
            "looked in {at} for train-images-idx3-ubyte or train-images.idx3-ubyte (plain or .gz) and the same for train-labels, t10k-images, t10k-labels; scripts/setup fetches Fashion-MNIST into data/fashion-mnist, or pass --data-dir"
        ),
        DatasetName::Mnist => format!(
            "looked in {at} for train-images-idx3-ubyte or train-images.idx3-ubyte (plain or .gz) and the same for train-labels, t10k-images, t10k-labels; scripts/setup does not fetch MNIST: put its four idx files in data/mnist or pass --data-dir"
        ),
        DatasetName::Cifar10 => format!(
            "looked in {at} for CIFAR-10's binary version (data_batch_1.bin ... data_batch_5.bin, test_batch.bin from cifar-10-batches-bin); scripts/setup does not fetch it: copy them to data/cifar10 or pass --data-dir"
        ),
        DatasetName::Synthetic | DatasetName::Tensors => format!("looked in {at}"),
    }
}

/// Shape and seed of a synthetic dataset (class prototypes plus seeded noise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub channels: i64,
    pub image_size: i64,
    pub classes: i64,
    pub train_samples: u32,
    pub test_samples: u32,
    pub seed: u64,
}

/// Which dataset, and which samples of its training file form the train and validation splits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub name: DatasetName,
    /// Training split: indices `[start, end)` of the training file.
    pub train_range: (u32, u32),
    /// Validation split: indices `[start, end)` of the training file.
    pub val_range: (u32, u32),
    /// Random crop (padding 4) and horizontal flip on training batches.
    pub augment: bool,
    /// Only for [`DatasetName::Synthetic`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticSpec>,
    /// Only for [`DatasetName::Tensors`]: the file, its preprocessing and classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<TensorsSpec>,
}

impl DatasetSpec {
    /// The paper's splits: MNIST-like train 0..45000, val 50000..60000, no augmentation;
    /// CIFAR-10 train 0..45000, val 45000..50000, crop + flip. A tensors dataset has no
    /// paper split and needs its file: this gives empty ranges and no file, which do not load;
    /// use [`DatasetSpec::tensors`].
    pub fn paper(name: DatasetName) -> Self {
        match name {
            DatasetName::Mnist | DatasetName::FashionMnist => DatasetSpec {
                name,
                train_range: (0, 45_000),
                val_range: (50_000, 60_000),
                augment: false,
                synthetic: None,
                tensors: None,
            },
            DatasetName::Cifar10 => DatasetSpec {
                name,
                train_range: (0, 45_000),
                val_range: (45_000, 50_000),
                augment: true,
                synthetic: None,
                tensors: None,
            },
            DatasetName::Tensors => DatasetSpec {
                name,
                train_range: (0, 0),
                val_range: (0, 0),
                augment: false,
                synthetic: None,
                tensors: None,
            },
            DatasetName::Synthetic => Self::synthetic(SyntheticSpec {
                channels: 1,
                image_size: 28,
                classes: 10,
                train_samples: 2_000,
                test_samples: 500,
                seed: 0,
            }),
        }
    }

    /// A synthetic set with 90% of its training file for training and 10% for validation.
    pub fn synthetic(s: SyntheticSpec) -> Self {
        let val = s.train_samples / 10;
        DatasetSpec {
            name: DatasetName::Synthetic,
            train_range: (0, s.train_samples - val),
            val_range: (s.train_samples - val, s.train_samples),
            augment: false,
            synthetic: Some(s),
            tensors: None,
        }
    }

    /// A tensors dataset: the training file is `train_x` followed by `val_x`, so the train
    /// split is `0..train_samples` and the validation split is `val_x` (empty without it).
    pub fn tensors(t: TensorsSpec, header: &crate::tensors::TensorsHeader) -> Self {
        let train = header.train_samples as u32;
        let pool = header.training_file_samples() as u32;
        DatasetSpec {
            name: DatasetName::Tensors,
            train_range: (0, train),
            val_range: (train, pool),
            augment: false,
            synthetic: None,
            tensors: Some(t),
        }
    }

    /// Where [`Dataset::load`] looks when no location is given: `data/<name>` for the built-in
    /// datasets, the file as named when recording for a tensors dataset.
    pub fn default_location(&self) -> PathBuf {
        match (&self.name, &self.tensors) {
            (DatasetName::Tensors, Some(t)) => t.path.clone(),
            _ => PathBuf::from("data").join(self.name.as_str()),
        }
    }

    /// Where to load the data from: `given` when the user named a location (`--data-dir`),
    /// else [`Self::default_location`].
    pub fn location(&self, given: Option<&Path>) -> PathBuf {
        given.map_or_else(|| self.default_location(), Path::to_path_buf)
    }
}

/// Which part of the data a sample id refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Ids are indices of the training file, inside `train_range`.
    Train,
    /// Ids are indices of the training file, inside `val_range`.
    Val,
    /// Ids are indices of the test file.
    Test,
}

impl Split {
    /// Name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Checksum of one file as loaded (of its uncompressed bytes, so `.gz` and plain files agree).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub file: String,
    pub sha256: String,
    pub len_bytes: u64,
}

/// What a recording stores so an analysis can check it has the same data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIdentity {
    pub name: DatasetName,
    pub files: Vec<FileDigest>,
    pub train_samples: u32,
    pub test_samples: u32,
}

/// Images as u8 `[N, C, H, W]` on the CPU and labels as i64 `[N]`. For a tensors dataset the
/// inputs stay in the mapped file and `images` is empty, `[0, ...sample shape]`, of the stored
/// kind (u8 or f32): only the labels are in memory, and [`Dataset::batch`] reads the inputs.
#[derive(Debug)]
pub struct ImageSet {
    pub images: Tensor,
    pub labels: Tensor,
}

impl ImageSet {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A loaded dataset.
#[derive(Debug)]
pub struct Dataset {
    pub spec: DatasetSpec,
    /// The training file (train and val splits index into it); for a tensors dataset
    /// `train_x` followed by `val_x`.
    pub pool: ImageSet,
    /// The test file (empty for a tensors dataset without `test_x`).
    pub test: ImageSet,
    pub identity: DatasetIdentity,
    /// Per-channel (dim 1) mean and std applied after scaling u8 inputs to [0, 1]; one value
    /// applies to every channel.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub classes: i64,
    /// The memory-mapped file of a tensors dataset, where batches read their inputs.
    mapped: Option<TensorsFile>,
}

impl Dataset {
    /// Loads `spec` from `dir` (ignored for synthetic data) and checks the splits. For a
    /// tensors dataset `dir` is the file itself or a folder holding a file of the recorded name
    /// (see [`DatasetSpec::default_location`]); its labels, f32 inputs and sha256 are checked
    /// by one pass over the file, which stays mapped.
    pub fn load(spec: &DatasetSpec, dir: &Path) -> Result<Self, WorkloadError> {
        let mut mapped = None;
        let (pool, test, files, mean, std, classes) = match spec.name {
            DatasetName::Mnist | DatasetName::FashionMnist => {
                let hinted = |e| match e {
                    WorkloadError::DatasetFileMissing { path, .. } => {
                        WorkloadError::DatasetFileMissing {
                            path,
                            hint: missing_hint(spec.name, dir),
                        }
                    }
                    other => other,
                };
                let (pool, f1) = load_idx_pair(dir, "train").map_err(hinted)?;
                let (test, f2) = load_idx_pair(dir, "t10k").map_err(hinted)?;
                if let Some(found) = recognize_idx_files(&[f1.clone(), f2.clone()].concat())
                    && found != spec.name
                {
                    return Err(WorkloadError::WrongDataset {
                        dir: dir.to_path_buf(),
                        asked: spec.name,
                        found,
                    });
                }
                // The paper's code: Normalize(0.5, 1.0), i.e. x - 0.5.
                (pool, test, [f1, f2].concat(), vec![0.5], vec![1.0], 10)
            }
            DatasetName::Cifar10 => {
                let hinted = |e| match e {
                    WorkloadError::DatasetFileMissing { path, .. } => {
                        WorkloadError::DatasetFileMissing {
                            path,
                            hint: missing_hint(DatasetName::Cifar10, dir),
                        }
                    }
                    other => other,
                };
                let (pool, f1) = load_cifar_train(dir).map_err(hinted)?;
                let (test, f2) = load_cifar_file(&dir.join("test_batch.bin")).map_err(hinted)?;
                (
                    pool,
                    test,
                    [f1, vec![f2]].concat(),
                    vec![0.4914, 0.4822, 0.4465],
                    vec![0.2023, 0.1994, 0.2010],
                    10,
                )
            }
            DatasetName::Synthetic => {
                let s =
                    spec.synthetic
                        .as_ref()
                        .ok_or_else(|| WorkloadError::DatasetInconsistent {
                            name: "synthetic".into(),
                            reason: "no synthetic settings in the dataset description".into(),
                        })?;
                let (pool, test) = synthetic(s)?;
                let files = vec![FileDigest {
                    file: format!("synthetic-seed-{}", s.seed),
                    sha256: digest_tensor(&pool.images)?,
                    len_bytes: 0,
                }];
                let c = s.channels as usize;
                (pool, test, files, vec![0.5; c], vec![0.25; c], s.classes)
            }
            DatasetName::Tensors => {
                let (parts, file) = load_tensors(spec, dir)?;
                mapped = Some(file);
                parts
            }
        };
        let pool_images = pool.images.size();
        let test_images = test.images.size();
        if pool_images[1..] != test_images[1..] {
            return Err(WorkloadError::DatasetInconsistent {
                name: spec.name.as_str().into(),
                reason: format!(
                    "train images are {:?}, test images are {:?}",
                    &pool_images[1..],
                    &test_images[1..]
                ),
            });
        }
        for (split, (start, end)) in [("train", spec.train_range), ("val", spec.val_range)] {
            if start > end || end as usize > pool.len() {
                return Err(WorkloadError::SampleOutOfRange {
                    split,
                    sample: u64::from(end.max(start)),
                    len: pool.len(),
                });
            }
        }
        let identity = DatasetIdentity {
            name: spec.name,
            files,
            train_samples: pool.len() as u32,
            test_samples: test.len() as u32,
        };
        Ok(Dataset {
            spec: spec.clone(),
            pool,
            test,
            identity,
            mean,
            std,
            classes,
            mapped,
        })
    }

    /// Shape of one input sample: `[C, H, W]` for images, `[D]` for a table, as stored.
    pub fn input_shape(&self) -> Vec<i64> {
        self.pool.images.size()[1..].to_vec()
    }

    /// Channels, height, width of one image; inputs that are not `[C, H, W]` per sample give
    /// `(1, 1, elements per sample)`.
    pub fn image_shape(&self) -> (i64, i64, i64) {
        match self.input_shape()[..] {
            [c, h, w] => (c, h, w),
            ref other => (1, 1, other.iter().product()),
        }
    }

    /// Whether the dataset has `split` (a tensors file may lack `test_x`; train and val
    /// always exist, val possibly empty).
    pub fn has_split(&self, split: Split) -> bool {
        match (&self.mapped, split) {
            (Some(f), Split::Test) => f.header().has(FilePart::Test),
            _ => true,
        }
    }

    /// [`Dataset::has_split`] as an error naming the missing tensor and the file.
    pub fn require_split(&self, split: Split) -> Result<(), WorkloadError> {
        match &self.mapped {
            Some(f) if !self.has_split(split) => Err(WorkloadError::SplitMissing {
                split: split.as_str(),
                tensor: FilePart::Test.x_name(),
                path: f.header().path.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Ids of a whole split, in order.
    pub fn split_ids(&self, split: Split) -> Vec<u32> {
        match split {
            Split::Train => (self.spec.train_range.0..self.spec.train_range.1).collect(),
            Split::Val => (self.spec.val_range.0..self.spec.val_range.1).collect(),
            Split::Test => (0..self.test.len() as u32).collect(),
        }
    }

    fn source(&self, split: Split) -> &ImageSet {
        match split {
            Split::Train | Split::Val => &self.pool,
            Split::Test => &self.test,
        }
    }

    /// Builds a normalized f32 batch `[B, C, H, W]` and its labels on `device`. With `aug`
    /// (one choice per id), each image is padded by 4, cropped at the recorded offset and
    /// optionally flipped, exactly as during training.
    pub fn batch(
        &self,
        split: Split,
        ids: &[u32],
        aug: Option<&[AugChoice]>,
        device: Device,
    ) -> Result<(Tensor, Tensor), WorkloadError> {
        self.require_split(split)?;
        let src = self.source(split);
        let len = src.len();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= len) {
            return Err(WorkloadError::SampleOutOfRange {
                split: split.as_str(),
                sample: u64::from(*bad),
                len,
            });
        }
        let index = Tensor::f_from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>())?;
        let stored = match &self.mapped {
            None => src.images.f_index_select(0, &index)?,
            Some(file) => {
                // Ids of the training file run through train_x, then val_x.
                let train_len = file.header().train_samples;
                let rows: Vec<(FilePart, usize)> = ids
                    .iter()
                    .map(|&i| match (split, i as usize) {
                        (Split::Test, i) => (FilePart::Test, i),
                        (_, i) if i < train_len => (FilePart::Train, i),
                        (_, i) => (FilePart::Val, i - train_len),
                    })
                    .collect();
                file.gather(&rows)?
            }
        };
        let mut images = if stored.kind() == Kind::Uint8 {
            stored.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?
        } else {
            stored
        };
        let labels = src.labels.f_index_select(0, &index)?;
        if let Some(choices) = aug {
            images = crate::augment::apply(&images, choices)?;
        }
        // [1, C, 1, ...]: one value per entry of dim 1, or one for all of them.
        let per_channel = |values: &[f64]| -> Result<Tensor, WorkloadError> {
            let mut shape = vec![1i64; images.dim()];
            shape[1] = values.len() as i64;
            Ok(Tensor::f_from_slice(values)?
                .f_to_kind(Kind::Float)?
                .f_view(shape.as_slice())?)
        };
        let mean = per_channel(&self.mean)?;
        let std = per_channel(&self.std)?;
        let images = images.f_sub(&mean)?.f_div(&std)?;
        Ok((images.f_to_device(device)?, labels.f_to_device(device)?))
    }
}

/// Opens and checks a tensors dataset at `location` (the file, or a folder holding the
/// recorded file name): header, normalization lengths, labels in `[0, classes)`, finite f32
/// inputs, and the sha256 of the whole file. Labels are decoded to i64; inputs stay mapped.
fn load_tensors(
    spec: &DatasetSpec,
    location: &Path,
) -> Result<(LoadedParts, TensorsFile), WorkloadError> {
    let t = spec
        .tensors
        .as_ref()
        .ok_or_else(|| WorkloadError::DatasetInconsistent {
            name: "tensors".into(),
            reason: "no file in the dataset description (use tensors:PATH)".into(),
        })?;
    let file = TensorsFile::open(&t.file_at(location))?;
    let h = file.header();
    crate::tensors::check_normalization(
        "mean of the dataset description",
        &t.mean,
        h.channels(),
        false,
    )?;
    crate::tensors::check_normalization(
        "std of the dataset description",
        &t.std,
        h.channels(),
        true,
    )?;
    if t.classes <= 0 {
        return Err(WorkloadError::DatasetInconsistent {
            name: "tensors".into(),
            reason: format!("{} classes in the dataset description", t.classes),
        });
    }
    if spec.augment && h.image_shape().is_none() {
        return Err(WorkloadError::BadAugmentation {
            reason: format!(
                "crop-flip needs images [N, C, H, W]; train_x is [N, {}] in {}",
                h.sample_shape
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                h.path.display()
            ),
        });
    }
    let labels_of = |parts: &[FilePart]| -> Result<Vec<i64>, WorkloadError> {
        let mut all = Vec::new();
        for &part in parts.iter().filter(|&&p| h.has(p)) {
            let labels = file.labels(part)?;
            file.check_labels(part, &labels, t.classes)?;
            file.check_finite(part)?;
            all.extend(labels);
        }
        Ok(all)
    };
    let pool_labels = labels_of(&[FilePart::Train, FilePart::Val])?;
    let test_labels = labels_of(&[FilePart::Test])?;
    let kind = match h.input_dtype {
        InputDtype::U8 => Kind::Uint8,
        InputDtype::F32 => Kind::Float,
    };
    let mut empty_shape = vec![0i64];
    empty_shape.extend_from_slice(&h.sample_shape);
    let set = |labels: Vec<i64>| -> Result<ImageSet, WorkloadError> {
        Ok(ImageSet {
            images: Tensor::f_zeros(empty_shape.as_slice(), (kind, Device::Cpu))?,
            labels: Tensor::f_from_slice(&labels)?,
        })
    };
    let (pool, test) = (set(pool_labels)?, set(test_labels)?);
    let (sha256, len_bytes) = file.sha256();
    // Named as recorded: the content is the identity, so a moved or renamed copy matches.
    let name = t
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let digest = FileDigest {
        file: name,
        sha256,
        len_bytes,
    };
    let parts = (
        pool,
        test,
        vec![digest],
        t.mean.clone(),
        t.std.clone(),
        t.classes,
    );
    Ok((parts, file))
}

/// Training file, test file, file digests, mean, std, classes.
type LoadedParts = (ImageSet, ImageSet, Vec<FileDigest>, Vec<f64>, Vec<f64>, i64);

/// Reads the first of `names` in `dir` that exists, plain or with `.gz` (decompressed).
fn read_file_maybe_gz(dir: &Path, names: &[String]) -> Result<(Vec<u8>, PathBuf), WorkloadError> {
    let found = names.iter().find_map(|name| {
        let plain = dir.join(name);
        let gz = dir.join(format!("{name}.gz"));
        if plain.exists() {
            Some((plain, false))
        } else if gz.exists() {
            Some((gz, true))
        } else {
            None
        }
    });
    let Some((chosen, compressed)) = found else {
        let tried: Vec<String> = names.iter().map(|n| format!("{n}[.gz]")).collect();
        return Err(WorkloadError::DatasetFileMissing {
            path: dir.join(names.first().map_or("", String::as_str)),
            hint: format!("looked in {} for {}", dir.display(), tried.join(" or ")),
        });
    };
    let io = |source| WorkloadError::DatasetIo {
        path: chosen.clone(),
        source,
    };
    let raw = std::fs::read(&chosen).map_err(io)?;
    let bytes = if compressed {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    Ok((bytes, chosen))
}

fn digest(file: &Path, bytes: &[u8]) -> FileDigest {
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // Identity does not depend on compression: name without .gz, hash of the content.
    let name = name.strip_suffix(".gz").unwrap_or(&name).to_string();
    named_digest(name, bytes)
}

fn named_digest(name: String, bytes: &[u8]) -> FileDigest {
    FileDigest {
        file: name,
        sha256: hex::encode(Sha256::digest(bytes)),
        len_bytes: bytes.len() as u64,
    }
}

fn digest_tensor(t: &Tensor) -> Result<String, WorkloadError> {
    let n = t.numel();
    let mut bytes = vec![0u8; n];
    t.f_copy_data(&mut bytes, n)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Parses an idx file: `magic` is 0x0803 for images (3 dims), 0x0801 for labels (1 dim).
fn parse_idx(bytes: &[u8], path: &Path, dims: usize) -> Result<(Vec<usize>, usize), WorkloadError> {
    let format_err =
        |field: &'static str, expected: String, found: String| WorkloadError::DatasetFormat {
            path: path.to_path_buf(),
            field,
            expected,
            found,
        };
    let header_len = 4 + 4 * dims;
    if bytes.len() < header_len {
        return Err(format_err(
            "header length",
            format!("{header_len} bytes"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    let expected_magic = 0x0800 | dims as u32;
    if magic != expected_magic {
        return Err(format_err(
            "magic",
            format!("{expected_magic:#010x}"),
            format!("{magic:#010x}"),
        ));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    let body = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err("shape", "a product that fits".into(), format!("{shape:?}")))?;
    let expected_len = header_len.saturating_add(body);
    if bytes.len() != expected_len {
        return Err(format_err(
            "file length",
            format!("{expected_len} bytes for shape {shape:?}"),
            format!("{} bytes", bytes.len()),
        ));
    }
    Ok((shape, header_len))
}

/// Loads `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` from `dir`, each plain
/// or `.gz`, also under the other common naming `<prefix>-images.idx3-ubyte`. The digests
/// name the files in the first naming, whichever was read, so both give the same identity.
pub fn load_idx_pair(
    dir: &Path,
    prefix: &str,
) -> Result<(ImageSet, Vec<FileDigest>), WorkloadError> {
    let names = |kind: &str, idx: &str| {
        [
            format!("{prefix}-{kind}-{idx}-ubyte"),
            format!("{prefix}-{kind}.{idx}-ubyte"),
        ]
    };
    let img_names = names("images", "idx3");
    let lbl_names = names("labels", "idx1");
    let (img_bytes, img_file) = read_file_maybe_gz(dir, &img_names)?;
    let (lbl_bytes, lbl_file) = read_file_maybe_gz(dir, &lbl_names)?;
    let (ishape, ioff) = parse_idx(&img_bytes, &img_file, 3)?;
    let (lshape, loff) = parse_idx(&lbl_bytes, &lbl_file, 1)?;
    if ishape[0] != lshape[0] {
        return Err(WorkloadError::DatasetFormat {
            path: lbl_file,
            field: "label count",
            expected: format!("{} (the image count of {})", ishape[0], img_file.display()),
            found: lshape[0].to_string(),
        });
    }
    let labels_u8 = &lbl_bytes[loff..];
    if let Some(bad) = labels_u8.iter().find(|&&l| l > 9) {
        return Err(WorkloadError::DatasetFormat {
            path: lbl_file,
            field: "label value",
            expected: "0..=9".into(),
            found: bad.to_string(),
        });
    }
    let n = ishape[0] as i64;
    let images = Tensor::f_from_slice(&img_bytes[ioff..])?.f_view([
        n,
        1,
        ishape[1] as i64,
        ishape[2] as i64,
    ])?;
    let labels = Tensor::f_from_slice(labels_u8)?.f_to_kind(Kind::Int64)?;
    let [img_name, _] = img_names;
    let [lbl_name, _] = lbl_names;
    let digests = vec![
        named_digest(img_name, &img_bytes),
        named_digest(lbl_name, &lbl_bytes),
    ];
    Ok((ImageSet { images, labels }, digests))
}

const CIFAR_RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// Loads one CIFAR-10 binary batch file with any number of records.
pub fn load_cifar_file(path: &Path) -> Result<(ImageSet, FileDigest), WorkloadError> {
    if !path.exists() {
        return Err(WorkloadError::DatasetFileMissing {
            path: path.to_path_buf(),
            hint: "a CIFAR-10 binary batch file".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| WorkloadError::DatasetIo {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR_RECORD_BYTES) {
        return Err(WorkloadError::DatasetFormat {
            path: path.to_path_buf(),
            field: "file length",
            expected: format!("a positive multiple of {CIFAR_RECORD_BYTES} bytes (records)"),
            found: format!("{} bytes", bytes.len()),
        });
    }
    let n = bytes.len() / CIFAR_RECORD_BYTES;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (CIFAR_RECORD_BYTES - 1));
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD_BYTES).enumerate() {
        if rec[0] > 9 {
            return Err(WorkloadError::DatasetFormat {
                path: path.to_path_buf(),
                field: "label value",
                expected: "0..=9".into(),
                found: format!("{} in record {i}", rec[0]),
            });
        }
        labels.push(i64::from(rec[0]));
        pixels.extend_from_slice(&rec[1..]);
    }
    let images = Tensor::f_from_slice(&pixels)?.f_view([n as i64, 3, 32, 32])?;
    let labels = Tensor::f_from_slice(&labels)?;
    Ok((ImageSet { images, labels }, digest(path, &bytes)))
}

/// Loads `data_batch_1.bin` ... `data_batch_5.bin` (at least the first must exist; the others
/// are taken in order while present).
fn load_cifar_train(dir: &Path) -> Result<(ImageSet, Vec<FileDigest>), WorkloadError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut digests = Vec::new();
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        if i > 1 && !path.exists() {
            break;
        }
        let (set, d) = load_cifar_file(&path)?;
        images.push(set.images);
        labels.push(set.labels);
        digests.push(d);
    }
    Ok((
        ImageSet {
            images: Tensor::f_cat(&images, 0)?,
            labels: Tensor::f_cat(&labels, 0)?,
        },
        digests,
    ))
}

/// Most bytes of synthetic images one split may take (they are made in memory).
pub const MAX_SYNTHETIC_BYTES: usize = 4 << 30;

/// Class prototypes plus seeded noise: learnable, deterministic, no files.
fn synthetic(s: &SyntheticSpec) -> Result<(ImageSet, ImageSet), WorkloadError> {
    if s.channels <= 0 || s.image_size <= 0 || s.classes <= 0 || s.train_samples == 0 {
        return Err(WorkloadError::DatasetInconsistent {
            name: "synthetic".into(),
            reason: format!("impossible settings {s:?}"),
        });
    }
    let too_big = || WorkloadError::DatasetInconsistent {
        name: "synthetic".into(),
        reason: format!(
            "{} x {}x{} images x {} samples do not fit in memory",
            s.channels,
            s.image_size,
            s.image_size,
            u64::from(s.train_samples) + u64::from(s.test_samples)
        ),
    };
    let pixels = s
        .channels
        .checked_mul(s.image_size)
        .and_then(|p| p.checked_mul(s.image_size))
        .and_then(|p| usize::try_from(p).ok())
        .ok_or_else(too_big)?;
    let samples = s.train_samples.max(s.test_samples) as usize;
    if pixels
        .checked_mul(samples)
        .is_none_or(|b| b > MAX_SYNTHETIC_BYTES)
    {
        return Err(too_big());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let prototypes: Vec<Vec<u8>> = (0..s.classes)
        .map(|_| (0..pixels).map(|_| rng.random::<u8>()).collect())
        .collect();
    let mut make = |n: u32| -> Result<ImageSet, WorkloadError> {
        let mut images = Vec::with_capacity(n as usize * pixels);
        let mut labels = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let class = rng.random_range(0..s.classes);
            labels.push(class);
            for &p in &prototypes[class as usize] {
                let noisy = i32::from(p) + rng.random_range(-96..=96);
                images.push(noisy.clamp(0, 255) as u8);
            }
        }
        Ok(ImageSet {
            images: Tensor::f_from_slice(&images)?.f_view([
                i64::from(n),
                s.channels,
                s.image_size,
                s.image_size,
            ])?,
            labels: Tensor::f_from_slice(&labels)?,
        })
    };
    let train = make(s.train_samples)?;
    let test = make(s.test_samples)?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-sample idx pair (images 2x2) under `names` ([images, labels]).
    fn write_pair(dir: &Path, names: [&str; 2]) {
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
        img.extend(0u8..12);
        let lbl = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3];
        std::fs::write(dir.join(names[0]), img).unwrap();
        std::fs::write(dir.join(names[1]), lbl).unwrap();
    }

    #[test]
    fn idx_files_load_under_both_namings_with_one_identity() {
        let dashed = tempfile::tempdir().unwrap();
        let dotted = tempfile::tempdir().unwrap();
        write_pair(
            dashed.path(),
            ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        );
        write_pair(
            dotted.path(),
            ["train-images.idx3-ubyte", "train-labels.idx1-ubyte"],
        );
        let (_, a) = load_idx_pair(dashed.path(), "train").unwrap();
        let (set, b) = load_idx_pair(dotted.path(), "train").unwrap();
        assert_eq!(a, b);
        assert_eq!(set.len(), 3);
        let empty = tempfile::tempdir().unwrap();
        let err = load_idx_pair(empty.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train-images-idx3-ubyte[.gz] or train-images.idx3-ubyte[.gz]"),
            "{err}"
        );
    }

    #[test]
    fn published_idx_files_are_recognized_by_checksum() {
        let file = |sha: &str| FileDigest {
            file: "x".into(),
            sha256: sha.into(),
            len_bytes: 0,
        };
        let fashion_labels = "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9";
        let mnist_images = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db";
        assert_eq!(
            recognize_idx_files(&[file("00"), file(fashion_labels)]),
            Some(DatasetName::FashionMnist)
        );
        assert_eq!(
            recognize_idx_files(&[file(mnist_images)]),
            Some(DatasetName::Mnist)
        );
        assert_eq!(recognize_idx_files(&[file("00")]), None);
    }

    #[test]
    fn synthetic_sizes_that_do_not_fit_are_errors_not_panics() {
        let spec = SyntheticSpec {
            channels: 1,
            image_size: 4_000_000_000,
            classes: 10,
            train_samples: 100,
            test_samples: 25,
            seed: 0,
        };
        let err = synthetic(&spec).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }
}
