//! Augmentation driven by explicit per-sample choices, so a recorded minibatch can be rebuilt
//! exactly from (sample ids, choices): random crop with zero padding 4, then horizontal flip.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::error::WorkloadError;

/// Padding of the random crop, in pixels on each side.
pub const CROP_PADDING: i64 = 4;

/// Bytes one [`AugChoice`] takes in a recording.
pub const AUG_BYTES_PER_SAMPLE: usize = 2;

/// The augmentation of one sample: crop offsets into the padded image and a flip bit.
/// `dx == dy == CROP_PADDING` and no flip is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugChoice {
    /// Column offset of the crop in the padded image, `0..=2*CROP_PADDING`.
    pub dx: u8,
    /// Row offset of the crop in the padded image, `0..=2*CROP_PADDING`.
    pub dy: u8,
    /// Mirror left-right after cropping.
    pub flip: bool,
}

impl AugChoice {
    /// The choice that leaves the image unchanged.
    pub const IDENTITY: AugChoice = AugChoice {
        dx: CROP_PADDING as u8,
        dy: CROP_PADDING as u8,
        flip: false,
    };

    /// Draws a uniform crop offset and a fair flip.
    pub fn draw(rng: &mut impl Rng) -> Self {
        let max = 2 * CROP_PADDING as u8;
        AugChoice {
            dx: rng.random_range(0..=max),
            dy: rng.random_range(0..=max),
            flip: rng.random_bool(0.5),
        }
    }

    /// Two bytes: `dx | dy << 4`, then `flip` as 0 or 1.
    pub fn to_bytes(self) -> [u8; AUG_BYTES_PER_SAMPLE] {
        [self.dx | (self.dy << 4), u8::from(self.flip)]
    }

    /// Inverse of [`AugChoice::to_bytes`], validating the ranges.
    pub fn from_bytes(b: [u8; AUG_BYTES_PER_SAMPLE]) -> Result<Self, WorkloadError> {
        let c = AugChoice {
            dx: b[0] & 0x0f,
            dy: b[0] >> 4,
            flip: b[1] == 1,
        };
        let max = 2 * CROP_PADDING as u8;
        if c.dx > max || c.dy > max || b[1] > 1 {
            return Err(WorkloadError::BadAugmentation {
                reason: format!("bytes {b:02x?} are not a valid crop/flip choice"),
            });
        }
        Ok(c)
    }
}

/// Encodes choices as consecutive [`AUG_BYTES_PER_SAMPLE`]-byte groups.
pub fn encode_choices(choices: &[AugChoice]) -> Vec<u8> {
    choices.iter().flat_map(|c| c.to_bytes()).collect()
}

/// Decodes choices written by [`encode_choices`].
pub fn decode_choices(bytes: &[u8]) -> Result<Vec<AugChoice>, WorkloadError> {
    if !bytes.len().is_multiple_of(AUG_BYTES_PER_SAMPLE) {
        return Err(WorkloadError::BadAugmentation {
            reason: format!(
                "{} bytes is not a multiple of {AUG_BYTES_PER_SAMPLE}",
                bytes.len()
            ),
        });
    }
    bytes
        .chunks_exact(AUG_BYTES_PER_SAMPLE)
        .map(|c| AugChoice::from_bytes([c[0], c[1]]))
        .collect()
}

/// The choices of one training step, from the run's augmentation seed and the step number
/// (independent of everything else, so a resumed run draws the same ones).
pub fn choices_for_step(seed: u64, step: u64, batch_len: usize) -> Vec<AugChoice> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    (0..batch_len).map(|_| AugChoice::draw(&mut rng)).collect()
}

/// Applies one choice per image to a float batch `[B, C, H, W]` (values before normalization;
/// padding is zero, i.e. black, as torchvision pads the unnormalized image).
pub fn apply(images: &Tensor, choices: &[AugChoice]) -> Result<Tensor, WorkloadError> {
    let size = images.size();
    if size.len() != 4 || size[0] as usize != choices.len() {
        return Err(WorkloadError::BadAugmentation {
            reason: format!("{} choices for a batch of shape {size:?}", choices.len()),
        });
    }
    let (h, w) = (size[2], size[3]);
    let p = CROP_PADDING;
    let padded = images.f_constant_pad_nd([p, p, p, p])?;
    let mut out = Vec::with_capacity(choices.len());
    for (i, c) in choices.iter().enumerate() {
        let img = padded
            .f_get(i as i64)?
            .f_narrow(1, i64::from(c.dy), h)?
            .f_narrow(2, i64::from(c.dx), w)?;
        out.push(if c.flip { img.f_flip([2])? } else { img });
    }
    Ok(Tensor::f_stack(&out, 0)?)
}
