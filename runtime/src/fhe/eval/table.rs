//! Table lookups: one programmable bootstrap per element, batched by the schedule.

use fhec_ir::circuit::TableIndex;
use rayon::prelude::*;
use tfhe::core_crypto::prelude::*;

use super::Ctx;
use crate::fhe::schedule::{Worker, ks_batch};
use crate::fhe::{CtTensor, ServerKey, delta, modulus};

/// The lookup table of `table` (read on `in_width` bits), its outputs encoded on
/// `out_bits`, for the main bootstrap.
pub(crate) fn table_lut(sk: &ServerKey, in_width: u32, table: &[i64], out_bits: u32) -> GlweCiphertextOwned<u64> {
    let p = &sk.params;
    generate_programmable_bootstrap_glwe_lut(
        PolynomialSize(p.polynomial_size),
        GlweSize(p.glwe_dimension + 1),
        1usize << in_width,
        modulus(),
        // Δ is applied here, wrapping: negative entries are two's complement on the torus
        // (tfhe-rs's own `f(i) * Δ` would trip overflow checks in this crate's builds).
        1,
        |i: u64| (table[i as usize] as u64).wrapping_mul(delta(out_bits)),
    )
}

/// Every element of `xin` (already at `in_width` encoding bits) through its table of
/// `tables` (chosen by `index`); outputs encoded on `bits`.
pub(super) fn table(
    cx: &Ctx<'_>,
    xin: &CtTensor,
    in_width: u32,
    index: &TableIndex,
    tables: &[Vec<i64>],
    bits: u32,
    shape: &[usize],
) -> CtTensor {
    let Ctx { sk, size, progress, .. } = *cx;
    let numel: usize = shape.iter().product();
    let luts: Vec<GlweCiphertextOwned<u64>> = tables.iter().map(|t| table_lut(sk, in_width, t, bits)).collect();
    let table_of = |e: usize| match index {
        TableIndex::Shared => 0,
        TableIndex::PerAxis(a) => {
            let inner: usize = shape[a + 1..].iter().product();
            (e / inner) % shape[*a]
        }
        TableIndex::PerElement => e,
    };
    let batch = ks_batch(numel);
    let mut data = vec![0u64; numel * size];
    data.par_chunks_mut(batch * size).enumerate().for_each_init(
        || Worker::new(sk, progress),
        |w, (c, outs)| {
            let first = c * batch;
            w.keyswitch(sk, &xin.data[first * size..first * size + outs.len()], size);
            w.pbs_batch(sk, outs.len() / size, |i| &luts[table_of(first + i)], outs);
            cx.observe(outs, 0, |i| first + i);
        },
    );
    CtTensor { shape: shape.to_vec(), bits, data }
}
