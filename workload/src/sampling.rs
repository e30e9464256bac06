//! Seeded sample orders: each epoch's permutation and probe subsets are functions of a seed
//! and an index alone, so a resumed run or a later analysis draws exactly the same ones.

use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

/// The order in which `ids` are visited in `epoch` (a fresh permutation every epoch, sampling
/// without replacement, as the paper's `SubsetRandomSampler`).
pub fn epoch_permutation(seed: u64, epoch: u64, ids: &[u32]) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order = ids.to_vec();
    order.shuffle(&mut rng);
    order
}

/// A fixed subset of `n` ids (sorted), drawn without replacement.
pub fn probe_subset(seed: u64, ids: &[u32], n: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<u32> = ids
        .choose_multiple(&mut rng, n.min(ids.len()))
        .copied()
        .collect();
    chosen.sort_unstable();
    chosen
}
