//! `--resume` takes every setting from the recording: the run description in its metadata and
//! the codec settings of its header. A flag given on the command line must agree with the
//! recorded value (an equal one is accepted, a different one is an error naming both); only
//! the flags of [`MAY_DIFFER`], which change where the data is read from and how the run is
//! executed but not what it records, may differ.

use sgdwalk_format::{CodecSettings, Reader};
use sgdwalk_workload::ModelSpec;
use sgdwalk_workload::run::{OptimizerSpec, RunDescription, ScheduleKind};

use crate::config::{RecordArgs, RecordConfig};
use crate::error::RecordError;
use crate::policy::RecordPolicy;

/// Argument ids (clap's, the field names of [`RecordArgs`]) that may differ from the
/// recording on `--resume`: the output and mode, the data's location, the device and threads,
/// durability, the queue and the snapshot path, and what is printed. The device and libtorch threads default to the
/// recorded ones, since both change the rounding of the computed steps: given, they may
/// differ, and the resumed steps then equal an uninterrupted run's only up to rounding.
pub const MAY_DIFFER: &[&str] = &[
    "out",
    "resume",
    "overwrite",
    "data_dir",
    "device",
    "threads",
    "encode_threads",
    "fsync",
    "queue",
    "snapshot_path",
    "snapshot_ring",
    "device_residual",
    "quiet",
    "json",
];

/// Argument ids compared with the recording on `--resume`.
pub const COMPARED: &[&str] = &[
    "model",
    "dataset",
    "train_samples",
    "val_samples",
    "augment",
    "input_mean",
    "input_std",
    "classes",
    "synthetic_samples",
    "synthetic_size",
    "synthetic_channels",
    "epochs",
    "max_steps",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "decoupled_wd",
    "beta1",
    "beta2",
    "adam_eps",
    "schedule",
    "warmup_steps",
    "full_batch",
    "sum_of_chunk_means",
    "noise_std",
    "seed",
    "record",
    "keyframe_interval",
    "zstd_level",
    "split_streams",
    "eval_splits",
    "eval_batch_size",
];

/// Checks the flags given against the recording at `cfg.out` and replaces every setting of
/// `cfg` by the recorded one. A file that is missing or whose header cannot be read is left to
/// [`crate::record`], which says why it cannot be resumed.
pub(crate) fn adopt_recording(
    args: &RecordArgs,
    cfg: &mut RecordConfig,
) -> Result<(), RecordError> {
    let Ok(reader) = Reader::open(&cfg.out) else {
        return Ok(());
    };
    let Ok(desc) = RunDescription::from_metadata_json(&reader.header().metadata_json) else {
        return Ok(());
    };
    let codec = reader.header().codec.clone();
    drop(reader);
    for id in &args.given {
        if MAY_DIFFER.contains(&id.as_str()) {
            continue;
        }
        let Some((flag, given, recorded)) = compare(id, args, cfg, &desc, &codec) else {
            return Err(RecordError::CannotResume {
                path: cfg.out.clone(),
                reason: format!("the flag {id} cannot be checked against the recording"),
            });
        };
        if given != recorded {
            return Err(RecordError::ResumeConflict {
                path: cfg.out.clone(),
                flag,
                given,
                recorded,
            });
        }
    }
    let policy: RecordPolicy =
        desc.record_policy
            .parse()
            .map_err(|e: RecordError| RecordError::CannotResume {
                path: cfg.out.clone(),
                reason: format!("its record policy cannot be read: {e}"),
            })?;
    cfg.model = desc.model.clone();
    // The recording carries its TorchScript module (read when resuming).
    cfg.module = None;
    cfg.data_dir = desc.dataset.location(args.data_dir.as_deref());
    cfg.dataset = desc.dataset.clone();
    cfg.epochs = desc.epochs;
    cfg.max_steps = Some(desc.total_steps);
    cfg.batch_size = desc.batch_size;
    cfg.optimizer = desc.optimizer.clone();
    cfg.schedule = desc.schedule.clone();
    cfg.full_batch = desc.full_batch.clone();
    cfg.noise_std = desc.noise_std;
    cfg.seeds = desc.seeds.clone();
    cfg.policy = policy;
    cfg.keyframe_interval = codec.keyframe_interval;
    cfg.zstd_level = codec.zstd_level;
    cfg.split_streams = codec.split_streams;
    // Recordings made before the splits were stored evaluate the splits given (or the default).
    if let Some(splits) = &desc.eval_splits {
        cfg.eval_splits = splits.clone();
    }
    cfg.eval_batch_size = desc.eval_batch_size;
    if !args.given.contains("threads") {
        cfg.threads = desc.provenance.threads;
    }
    if !args.given.contains("device") {
        cfg.device = sgdwalk_workload::parse_device(&desc.provenance.device).map_err(|reason| {
            RecordError::InvalidSetting {
                flag: "device",
                reason: format!(
                    "the run was recorded on {}, {reason}: pass --device to continue it on another device (its steps then equal an uninterrupted run's only up to rounding)",
                    desc.provenance.device
                ),
            }
        })?;
    }
    Ok(())
}

/// The flag name, the value given and the recorded value of the setting `id`, both written as
/// on the command line (equal strings mean equal settings); `None` for an unknown id.
fn compare(
    id: &str,
    args: &RecordArgs,
    cfg: &RecordConfig,
    desc: &RunDescription,
    codec: &CodecSettings,
) -> Option<(&'static str, String, String)> {
    compare_data(id, args, cfg, desc).or_else(|| compare_training(id, args, cfg, desc, codec))
}

fn num(x: f64) -> String {
    x.to_string()
}

fn onoff(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

/// [`compare`] for the model and data flags.
fn compare_data(
    id: &str,
    args: &RecordArgs,
    cfg: &RecordConfig,
    desc: &RunDescription,
) -> Option<(&'static str, String, String)> {
    let range = |(a, b): (u32, u32)| format!("{a}..{b}");
    let synthetic = |f: fn(&sgdwalk_workload::SyntheticSpec) -> String| {
        desc.dataset.synthetic.as_ref().map_or_else(
            || format!("no synthetic data (dataset {})", desc.dataset.name.as_str()),
            f,
        )
    };
    let tensors = |spec: &RecordConfig| spec.dataset.tensors.clone();
    let recorded_tensors = desc.dataset.tensors.clone();
    let list = |v: Option<Vec<f64>>| {
        v.map_or_else(
            || "none (not a tensors dataset)".into(),
            |v| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            },
        )
    };
    Some(match id {
        "model" => ("model", model_name(&cfg.model), model_name(&desc.model)),
        "dataset" => (
            "dataset",
            dataset_name(&cfg.dataset),
            dataset_name(&desc.dataset),
        ),
        "train_samples" => (
            "train-samples",
            range(cfg.dataset.train_range),
            range(desc.dataset.train_range),
        ),
        "val_samples" => (
            "val-samples",
            range(cfg.dataset.val_range),
            range(desc.dataset.val_range),
        ),
        "augment" => (
            "augment",
            onoff(cfg.dataset.augment),
            onoff(desc.dataset.augment),
        ),
        "input_mean" => (
            "input-mean",
            list(tensors(cfg).map(|t| t.mean)),
            list(recorded_tensors.map(|t| t.mean)),
        ),
        "input_std" => (
            "input-std",
            list(tensors(cfg).map(|t| t.std)),
            list(recorded_tensors.map(|t| t.std)),
        ),
        "classes" => (
            "classes",
            args.classes.map_or_else(String::new, |c| c.to_string()),
            recorded_tensors.map_or_else(
                || "none (not a tensors dataset)".into(),
                |t| t.classes.to_string(),
            ),
        ),
        "synthetic_samples" => (
            "synthetic-samples",
            args.synthetic_samples.to_string(),
            synthetic(|s| s.train_samples.to_string()),
        ),
        "synthetic_size" => (
            "synthetic-size",
            args.synthetic_size.to_string(),
            synthetic(|s| s.image_size.to_string()),
        ),
        "synthetic_channels" => (
            "synthetic-channels",
            args.synthetic_channels.to_string(),
            synthetic(|s| s.channels.to_string()),
        ),
        _ => return None,
    })
}

/// [`compare`] for the training and recording flags.
fn compare_training(
    id: &str,
    args: &RecordArgs,
    cfg: &RecordConfig,
    desc: &RunDescription,
    codec: &CodecSettings,
) -> Option<(&'static str, String, String)> {
    let adam = |f: fn(f64, f64, f64) -> f64| match desc.optimizer {
        OptimizerSpec::Adam {
            beta1, beta2, eps, ..
        } => num(f(beta1, beta2, eps)),
        OptimizerSpec::Sgd { .. } => {
            format!("none (optimizer {})", optimizer_name(&desc.optimizer))
        }
    };
    let (wd, decoupled) = match desc.optimizer {
        OptimizerSpec::Sgd {
            weight_decay,
            decoupled_weight_decay,
            ..
        }
        | OptimizerSpec::Adam {
            weight_decay,
            decoupled_weight_decay,
            ..
        } => (weight_decay, decoupled_weight_decay),
    };
    Some(match id {
        "epochs" => ("epochs", args.epochs.to_string(), desc.epochs.to_string()),
        // The run's length: --max-steps beyond the epochs' updates changes nothing.
        "max_steps" => (
            "max-steps",
            args.max_steps
                .map_or(u64::MAX, |m| {
                    m.min(desc.steps_per_epoch * u64::from(desc.epochs))
                })
                .to_string(),
            desc.total_steps.to_string(),
        ),
        "batch_size" => (
            "batch-size",
            args.batch_size.to_string(),
            desc.batch_size.to_string(),
        ),
        "optimizer" => (
            "optimizer",
            optimizer_name(&cfg.optimizer).into(),
            optimizer_name(&desc.optimizer).into(),
        ),
        "momentum" => (
            "momentum",
            num(args.momentum),
            match desc.optimizer {
                OptimizerSpec::Sgd {
                    momentum, nesterov, ..
                } if momentum > 0.0 || nesterov => num(momentum),
                _ => format!("none (optimizer {})", optimizer_name(&desc.optimizer)),
            },
        ),
        "weight_decay" => ("weight-decay", num(args.weight_decay), num(wd)),
        "decoupled_wd" => ("decoupled-wd", onoff(args.decoupled_wd), onoff(decoupled)),
        "beta1" => ("beta1", num(args.beta1), adam(|b1, _, _| b1)),
        "beta2" => ("beta2", num(args.beta2), adam(|_, b2, _| b2)),
        "adam_eps" => ("adam-eps", num(args.adam_eps), adam(|_, _, e| e)),
        "lr" => ("lr", num(args.lr), num(desc.schedule.base_lr)),
        "schedule" => (
            "schedule",
            schedule_flag(&cfg.schedule.kind),
            schedule_flag(&desc.schedule.kind),
        ),
        "warmup_steps" => (
            "warmup-steps",
            args.warmup_steps.to_string(),
            desc.schedule.warmup_steps.to_string(),
        ),
        "full_batch" => (
            "full-batch",
            onoff(args.full_batch),
            onoff(desc.full_batch.is_some()),
        ),
        "sum_of_chunk_means" => (
            "sum-of-chunk-means",
            onoff(args.sum_of_chunk_means),
            onoff(
                desc.full_batch
                    .as_ref()
                    .is_some_and(|f| f.sum_of_chunk_means),
            ),
        ),
        "noise_std" => ("noise-std", num(args.noise_std), num(desc.noise_std)),
        // The recording stores the seeds derived from --seed, not --seed itself.
        "seed" => (
            "seed",
            args.seed.to_string(),
            if cfg.seeds == desc.seeds {
                args.seed.to_string()
            } else {
                format!("another seed (init seed {:#x})", desc.seeds.init)
            },
        ),
        "record" => ("record", cfg.policy.to_string(), desc.record_policy.clone()),
        "keyframe_interval" => (
            "keyframe-interval",
            args.keyframe_interval.to_string(),
            codec.keyframe_interval.to_string(),
        ),
        "zstd_level" => (
            "zstd-level",
            args.zstd_level.to_string(),
            codec.zstd_level.to_string(),
        ),
        "split_streams" => (
            "split-streams",
            args.split_streams.to_string(),
            codec.split_streams.to_string(),
        ),
        "eval_splits" => {
            let names = |s: &[sgdwalk_workload::Split]| {
                s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(",")
            };
            let given = names(&cfg.eval_splits);
            // Older recordings did not store them: the flag decides.
            let recorded = desc
                .eval_splits
                .as_deref()
                .map_or_else(|| given.clone(), names);
            ("eval-splits", given, recorded)
        }
        "eval_batch_size" => (
            "eval-batch-size",
            cfg.eval_batch_size.to_string(),
            desc.eval_batch_size.to_string(),
        ),
        _ => return None,
    })
}

/// A model as --model names it; a TorchScript module by its content.
fn model_name(m: &ModelSpec) -> String {
    match m {
        ModelSpec::TorchScript { sha256, .. } => {
            format!("a TorchScript module with sha256 {sha256}")
        }
        other => other.short_name(),
    }
}

fn dataset_name(d: &sgdwalk_workload::DatasetSpec) -> String {
    match &d.tensors {
        Some(t) => format!("tensors:{}", t.path.display()),
        None => d.name.as_str().to_string(),
    }
}

/// The --optimizer name of an optimizer description.
fn optimizer_name(o: &OptimizerSpec) -> &'static str {
    match *o {
        OptimizerSpec::Sgd { nesterov: true, .. } => "nesterov",
        OptimizerSpec::Sgd { momentum, .. } if momentum > 0.0 => "momentum",
        OptimizerSpec::Sgd { .. } => "sgd",
        OptimizerSpec::Adam {
            decoupled_weight_decay: true,
            ..
        } => "adamw",
        OptimizerSpec::Adam { .. } => "adam",
    }
}

/// The --schedule value of a schedule.
fn schedule_flag(k: &ScheduleKind) -> String {
    match k {
        ScheduleKind::Constant => "constant".into(),
        ScheduleKind::Cosine => "cosine".into(),
        ScheduleKind::Step {
            every_epochs,
            gamma,
        } => format!("step:{every_epochs},{gamma}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of `sgdwalk-record` is either compared with the recording or allowed to
    /// differ: a new flag must be classified here before --resume accepts it.
    #[test]
    fn every_flag_is_classified_for_resume() {
        use clap::Args;
        let cmd = RecordArgs::augment_args(clap::Command::new("t"));
        let mut ids: Vec<&str> = cmd
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| *id != "given")
            .collect();
        ids.sort_unstable();
        let mut known: Vec<&str> = MAY_DIFFER.iter().chain(COMPARED).copied().collect();
        known.sort_unstable();
        assert_eq!(ids, known);
    }
}
