//! Trains the small CNN on Fashion-MNIST for one epoch on the CPU with plain SGD and prints the
//! test accuracy. A smoke test of the workload crate: models, loaders, evaluation.
//!
//! Example: `cargo run --release -p sgdwalk-examples --example train_small_cnn -- data/fashion-mnist`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use sgdwalk_workload::eval::{mean_loss, trainable_tensors};
use sgdwalk_workload::sampling::epoch_permutation;
use sgdwalk_workload::{
    BnPolicy, Dataset, DatasetName, DatasetSpec, Model, ModelSpec, Split, evaluate,
};
use tch::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("data/fashion-mnist"), PathBuf::from);
    let started = Instant::now();
    let data = Dataset::load(&DatasetSpec::paper(DatasetName::FashionMnist), &dir)
        .with_context(|| format!("loading Fashion-MNIST from {}", dir.display()))?;
    let model = Model::new(&ModelSpec::small_cnn(), Device::Cpu, 1)?;
    let params = trainable_tensors(&model)?;
    let (lr, batch) = (0.1, 128);
    let order = epoch_permutation(1, 0, &data.split_ids(Split::Train));
    for (step, ids) in order.chunks(batch).enumerate() {
        let (x, y) = data.batch(Split::Train, ids, None, Device::Cpu)?;
        let loss = mean_loss(&model.forward_t(&x, true)?, &y)?;
        let grads = Tensor::f_run_backward(&[&loss], &params, false, false)?;
        tch::no_grad(|| -> anyhow::Result<()> {
            for (p, g) in params.iter().zip(&grads) {
                let mut p = p.shallow_clone();
                let _updated = p.f_sub_(&g.f_mul_scalar(lr)?)?;
            }
            Ok(())
        })?;
        if step % 100 == 0 {
            println!(
                "step {step:4}  minibatch loss {:.4}",
                loss.double_value(&[])
            );
        }
    }
    let test = evaluate(
        &model,
        &data,
        Split::Test,
        &data.split_ids(Split::Test),
        None,
        1000,
        BnPolicy::EvalMode,
    )?;
    println!(
        "after 1 epoch ({} steps, {:.1} s): test loss {:.4}, test accuracy {:.2}% (chance: 10%)",
        order.len().div_ceil(batch),
        started.elapsed().as_secs_f64(),
        test.mean_loss(),
        100.0 * test.accuracy()
    );
    Ok(())
}
