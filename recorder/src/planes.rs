//! The codec's residuals and byte-plane shuffle as integer tensor ops, so that a device can
//! compute what the host encoder compresses before the bytes cross PCIe: plane k of the result
//! is byte k of every little-endian residual word, as `sgdwalk_format::codec::residual_planes`
//! lays it out (`[4 · n]` u8, planes one after the other).
//!
//! The writer does not take planes yet (that needs a writer API of the format crate); these
//! functions are the device half of that boundary, checked bit for bit against the host
//! reference on CPU tensors. Little-endian devices only (x86, ARM, CUDA).

use tch::{Kind, Tensor};

use crate::error::RecordError;

/// The 4 byte planes of flat 4-byte words (`[n]` f32 or i32) as `[4 · n]` u8 on their device.
pub fn byte_planes(words: &Tensor) -> Result<Tensor, RecordError> {
    let n = words.numel() as i64;
    let bytes = words
        .f_contiguous()?
        .f_view_dtype(Kind::Uint8)?
        .f_view([n, 4])?;
    Ok(bytes.f_transpose(0, 1)?.f_contiguous()?.f_view([4 * n])?)
}

/// The XOR residual of `cur` against `prev` (flat f32 states of one length, bit patterns
/// XORed), as byte planes: the host's `residual_planes(CodecId::XorPrev, ..)`.
pub fn xor_residual_planes(cur: &Tensor, prev: &Tensor) -> Result<Tensor, RecordError> {
    same_shape(cur, prev)?;
    let c = cur.f_contiguous()?.f_view_dtype(Kind::Int)?;
    let p = prev.f_contiguous()?.f_view_dtype(Kind::Int)?;
    byte_planes(&c.f_bitwise_xor_tensor(&p)?)
}

/// The zigzag of the wrapping 32-bit difference of the bit patterns of `cur` and `prev`, as
/// byte planes: the host's `residual_planes(CodecId::ZigzagDeltaPrev, ..)`. Computed in i64,
/// so no i32 arithmetic overflows.
pub fn zigzag_delta_planes(cur: &Tensor, prev: &Tensor) -> Result<Tensor, RecordError> {
    same_shape(cur, prev)?;
    let n = cur.numel() as i64;
    let low32 = 0xFFFF_FFFF_i64;
    let unsigned = |t: &Tensor| -> Result<Tensor, RecordError> {
        Ok(t.f_contiguous()?
            .f_view_dtype(Kind::Int)?
            .f_to_kind(Kind::Int64)?
            .f_bitwise_and(low32)?)
    };
    // (c − p) mod 2^32, then as a signed 32-bit value d.
    let wrapped = unsigned(cur)?
        .f_sub(&unsigned(prev)?)?
        .f_bitwise_and(low32)?;
    let high = wrapped.f_ge(1_i64 << 31)?.f_to_kind(Kind::Int64)?;
    let d = wrapped.f_sub(&high.f_mul_scalar(1_i64 << 32)?)?;
    // zigzag(d) = (d << 1) ^ (d >> 31), in [0, 2^32).
    let zz = d
        .f_mul_scalar(2)?
        .f_bitwise_xor_tensor(&high.f_neg()?)?
        .f_bitwise_and(low32)?;
    // The low 4 bytes of each little-endian i64 are the u32 word.
    let words = zz
        .f_view_dtype(Kind::Uint8)?
        .f_view([n, 8])?
        .f_narrow(1, 0, 4)?
        .f_contiguous()?
        .f_view_dtype(Kind::Int)?
        .f_view([n])?;
    byte_planes(&words)
}

fn same_shape(cur: &Tensor, prev: &Tensor) -> Result<(), RecordError> {
    let ok = cur.size() == prev.size()
        && cur.f_kind()? == Kind::Float
        && prev.f_kind()? == Kind::Float
        && cur.device() == prev.device();
    if ok {
        Ok(())
    } else {
        Err(RecordError::Snapshot {
            reason: format!(
                "residual of {:?} {:?} on {:?} against {:?} {:?} on {:?}: both must be f32 of one shape on one device",
                cur.f_kind()?,
                cur.size(),
                cur.device(),
                prev.f_kind()?,
                prev.size(),
                prev.device()
            ),
        })
    }
}

/// The planes of a `[4 · n]` u8 tensor as host bytes.
pub fn planes_to_host(planes: &Tensor) -> Result<Vec<u8>, RecordError> {
    let host = planes.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    let n = host.numel();
    let mut out = vec![0u8; n];
    host.f_copy_data(&mut out, n)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sgdwalk_format::CodecId;
    use sgdwalk_format::codec::residual_planes;

    /// Bit patterns that a residual must carry unchanged: NaN payloads (quiet and signalling,
    /// both signs), ±0, ±inf, subnormals, the extremes, and ordinary values.
    fn edge_bits() -> Vec<u32> {
        vec![
            0x7fc0_0000,
            0x7fc0_0001,
            0xffc1_2345,
            0x7f80_0001,
            0xff80_0f00,
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x0000_0001,
            0x8000_0001,
            0x007f_ffff,
            0x807f_ffff,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x3f80_0000,
            0xbf80_0000,
        ]
    }

    /// Two states: every edge pattern against every other (so XOR and the wrapping
    /// difference see each pair), then a smooth SGD-like stretch.
    fn states() -> (Vec<f32>, Vec<f32>) {
        let e = edge_bits();
        let (mut cur, mut prev) = (Vec::new(), Vec::new());
        for &a in &e {
            for &b in &e {
                cur.push(f32::from_bits(a));
                prev.push(f32::from_bits(b));
            }
        }
        for i in 0..1000 {
            let p = (i as f32 * 0.37).sin() * 0.05;
            prev.push(p);
            cur.push(p - 1e-4 * (i as f32 * 1.3).cos());
        }
        (cur, prev)
    }

    fn host_planes(codec: CodecId, cur: &[f32], prev: Option<&[f32]>) -> Vec<u8> {
        let mut planes = vec![0u8; cur.len() * 4];
        residual_planes(codec, cur, prev, None, 0, &mut planes).unwrap();
        planes
    }

    #[test]
    fn tensor_residual_planes_equal_the_host_reference_bit_for_bit() {
        let (cur, prev) = states();
        let (c, p) = (Tensor::from_slice(&cur), Tensor::from_slice(&prev));
        assert_eq!(
            planes_to_host(&xor_residual_planes(&c, &p).unwrap()).unwrap(),
            host_planes(CodecId::XorPrev, &cur, Some(&prev))
        );
        assert_eq!(
            planes_to_host(&zigzag_delta_planes(&c, &p).unwrap()).unwrap(),
            host_planes(CodecId::ZigzagDeltaPrev, &cur, Some(&prev))
        );
        assert_eq!(
            planes_to_host(&byte_planes(&c).unwrap()).unwrap(),
            host_planes(CodecId::Key, &cur, None)
        );
        // The NaN payloads survived the f32 tensors untouched.
        let back: Vec<u32> = Vec::<f32>::try_from(&c)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(back, cur.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn residuals_of_mismatched_states_are_refused() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        assert!(xor_residual_planes(&a, &b).is_err());
        assert!(zigzag_delta_planes(&a, &b.f_to_kind(Kind::Double).unwrap()).is_err());
    }
}
