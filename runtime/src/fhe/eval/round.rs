//! Rounding: exact (chunks of bits removed by sign and table reads with the rounding
//! bootstrap) and approximate (no bootstrap: the next table reads the top bits).

use rayon::prelude::*;
use tfhe::core_crypto::prelude::*;

use super::{Ctx, rescale};
use crate::fhe::schedule::{Worker, ks_batch};
use crate::fhe::{CtTensor, FheError, ServerKey, delta, modulus};

/// One chunk of exact rounding (see [`exact`]).
struct RoundStep {
    /// Multiplier that moves the chunk to the top bits of the torus.
    f: u64,
    /// Half a chunk unit, added before the sign read.
    offset: u64,
    /// Half the weight of the chunk's top bit (the sign table's value).
    cst: u64,
    /// The sign table.
    sign: GlweCiphertextOwned<u64>,
    /// The table of the chunk's other bits (chunks of two bits or more).
    rest: Option<GlweCiphertextOwned<u64>>,
}

/// A lookup table that returns `c` on the first half of the torus and `-c` on the second,
/// for the rounding bootstrap.
pub(crate) fn sign_lut(sk: &ServerKey, c: u64) -> GlweCiphertextOwned<u64> {
    let (n, size) = round_lut_shape(sk);
    let body = PlaintextList::new(c, PlaintextCount(n.0));
    allocate_and_trivially_encrypt_new_glwe_ciphertext(size, &body, modulus())
}

/// Polynomial size and GLWE size of the rounding bootstrap's tables (the main key's
/// without a rounding key).
pub(crate) fn round_lut_shape(sk: &ServerKey) -> (PolynomialSize, GlweSize) {
    let r = sk.params.rounding_bsk().unwrap_or(sk.params);
    (PolynomialSize(r.polynomial_size), GlweSize(r.glwe_dimension + 1))
}

/// Approximate rounding of `shift` bits: the value read on `bits` bits by the next table.
pub(super) fn approximate(
    cx: &Ctx<'_>,
    x: &CtTensor,
    shift: u32,
    bits: u32,
    shape: &[usize],
) -> Result<CtTensor, FheError> {
    // No bootstrap: the input, moved to `bits + shift` encoding bits, is viewed as
    // the rounded value on `bits` bits with the removed bits as a fraction. A table
    // reads the step its phase lies in (steps centred on integers), so subtracting
    // (2^(shift-1) - 1/2)·Δ puts the step boundaries half a unit below the
    // multiples of 2^shift: an exact read is floor(v / 2^shift), and noise moves it
    // one step only near a boundary.
    let mut t = rescale(x, bits + shift)?;
    let unit = delta(bits + shift);
    let c = (unit << (shift - 1)).wrapping_sub(unit >> 1);
    for chunk in t.data.chunks_exact_mut(cx.size) {
        let b = chunk.last_mut().expect("body");
        *b = b.wrapping_sub(c);
    }
    Ok(CtTensor { shape: shape.to_vec(), bits, data: t.data })
}

/// Exact rounding of `shift` bits of `xin`, in `chunks` from the bottom
/// ([`fhec_ir::circuit::Circuit::round_chunks`]).
pub(super) fn exact(cx: &Ctx<'_>, xin: &CtTensor, chunks: &[u32], shift: u32, shape: &[usize]) -> CtTensor {
    let Ctx { sk, size, progress, .. } = *cx;
    let numel: usize = shape.iter().product();
    // Chunks from the bottom (Circuit::round_chunks): a k-bit chunk at bit j is
    // moved to the top k bits of the torus (times 2^(P-j-k+1)); a sign read
    // removes its top bit b (acc -= b·2^(j+k-1)·Δ), then for k > 1 a (k-1)-bit
    // table reads the rest r (top bit now zero) and acc -= r·2^j·Δ.
    let p_bits = xin.bits;
    let delta_p = delta(p_bits);
    let mut steps: Vec<RoundStep> = vec![];
    let mut j = 0u32;
    for &k in chunks {
        let cst = 1u64 << (62 - p_bits + j + k - 1);
        let rest = (k > 1).then(|| {
            let (poly, glwe) = round_lut_shape(sk);
            generate_programmable_bootstrap_glwe_lut(poly, glwe, 1usize << (k - 1), modulus(), 1, |r: u64| {
                (r << j).wrapping_mul(delta_p)
            })
        });
        steps.push(RoundStep {
            f: 1u64 << (p_bits - j - k + 1),
            offset: 1u64 << (63 - k),
            cst,
            sign: sign_lut(sk, cst),
            rest,
        });
        j += k;
    }
    // Every element's steps run in order; the elements of a batch go through each
    // step together, so that their keyswitches share one pass over the key.
    let batch = ks_batch(numel);
    let mut data = xin.data.clone();
    data.par_chunks_mut(batch * size).enumerate().for_each_init(
        || (Worker::new(sk, progress), vec![0u64; batch * size], vec![0u64; batch * size]),
        |(w, tmp, outs), (c, accs)| {
            let count = accs.len() / size;
            let tmp = &mut tmp[..accs.len()];
            let outs = &mut outs[..accs.len()];
            // tmp = acc·f (+ offset): the chunk at the top of the torus.
            let scaled = |tmp: &mut [u64], accs: &[u64], f: u64, offset: u64| {
                for (t, a) in tmp.chunks_exact_mut(size).zip(accs.chunks_exact(size)) {
                    for (t, &a) in t.iter_mut().zip(a) {
                        *t = a.wrapping_mul(f);
                    }
                    t[size - 1] = t[size - 1].wrapping_add(offset);
                }
            };
            let mut index = 0;
            for s in &steps {
                scaled(tmp, accs, s.f, s.offset);
                w.keyswitch(sk, tmp, size);
                w.pbs_rounding_batch(sk, count, &s.sign, outs);
                cx.observe(outs, index, |i| c * batch + i);
                index += 1;
                for (acc, out) in accs.chunks_exact_mut(size).zip(outs.chunks_exact(size)) {
                    // acc -= (cst - out) = b·2^(j+k-1)·Δ
                    for (a, &o) in acc.iter_mut().zip(out) {
                        *a = a.wrapping_add(o);
                    }
                    acc[size - 1] = acc[size - 1].wrapping_sub(s.cst);
                }
                if let Some(rest) = &s.rest {
                    scaled(tmp, accs, s.f, 0);
                    w.keyswitch(sk, tmp, size);
                    w.pbs_rounding_batch(sk, count, rest, outs);
                    cx.observe(outs, index, |i| c * batch + i);
                    index += 1;
                    for (acc, out) in accs.chunks_exact_mut(size).zip(outs.chunks_exact(size)) {
                        for (a, &o) in acc.iter_mut().zip(out) {
                            *a = a.wrapping_sub(o);
                        }
                    }
                }
            }
        },
    );
    CtTensor { shape: shape.to_vec(), bits: p_bits - shift, data }
}
