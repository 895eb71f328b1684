//! Max pooling: a chain of pairwise maxima over each window, each a comparison table.

use fhec_ir::circuit::kernels;
use rayon::prelude::*;

use super::Ctx;
use super::table::table_lut;
use crate::fhe::schedule::{Worker, ks_batch};
use crate::fhe::{CtTensor, delta};

/// Max pooling: over each window, `m ← m + step(x_i - m + offset)` with one comparison
/// table per pair (exact, or reading the top bits of the wide difference when `shift > 0`).
pub(super) fn max_pool(
    cx: &Ctx<'_>,
    x: &CtTensor,
    pool: &fhec_ir::nn::Pool,
    diff_offset: i64,
    diff_width: u32,
    shift: u32,
    out_shape: &[usize],
) -> CtTensor {
    let Ctx { sk, size, progress, .. } = *cx;
    let step: Vec<i64> = (0..1i64 << diff_width).map(|q| kernels::approx_max_step(q, diff_offset, shift)).collect();
    let lut = table_lut(sk, diff_width, &step, x.bits);
    let wins = kernels::window_indices(&x.shape, pool);
    let (width, lut) = (diff_width, &lut);
    // The difference moves to `width + shift` encoding bits; an approximate comparison then
    // reads its top `width` bits, with the step boundaries half a unit below the multiples
    // of 2^shift (as an approximate rounding's reads: see `round::approximate`).
    let scale = 1u64 << (x.bits - width - shift);
    let off = (diff_offset as u64).wrapping_mul(delta(x.bits));
    let centre = if shift > 0 {
        let unit = delta(width + shift);
        (unit << (shift - 1)).wrapping_sub(unit >> 1)
    } else {
        0
    };
    // Windows in batches: the running maxima of a batch take their i-th comparison together
    // (one keyswitch pass and one batched bootstrap).
    let batch = ks_batch(wins.len());
    let mut data = vec![0u64; wins.len() * size];
    data.par_chunks_mut(batch * size).zip(wins.par_chunks(batch)).enumerate().for_each_init(
        || (Worker::new(sk, progress), vec![0u64; batch * size], vec![0u64; batch * size], Vec::with_capacity(batch)),
        |(w, diffs, outs, live), (c, (ms, wins))| {
            for (m, win) in ms.chunks_exact_mut(size).zip(wins) {
                if let Some(&first) = win.first() {
                    m.copy_from_slice(&x.data[first * size..(first + 1) * size]);
                }
            }
            let longest = wins.iter().map(Vec::len).max().unwrap_or(0);
            for step in 1..longest {
                // diff = (x_i - m + offset) at the table's encoding, for the windows that
                // have an i-th element.
                live.clear();
                live.extend((0..wins.len()).filter(|&k| wins[k].len() > step));
                for (diff, &k) in diffs.chunks_exact_mut(size).zip(live.iter()) {
                    let (m, i) = (&ms[k * size..(k + 1) * size], wins[k][step]);
                    for ((d, &a), &b) in diff.iter_mut().zip(&x.data[i * size..(i + 1) * size]).zip(m) {
                        *d = a.wrapping_sub(b);
                    }
                    diff[size - 1] = diff[size - 1].wrapping_add(off);
                    for d in diff.iter_mut() {
                        *d = d.wrapping_mul(scale);
                    }
                    diff[size - 1] = diff[size - 1].wrapping_sub(centre);
                }
                let count = live.len();
                w.keyswitch(sk, &diffs[..count * size], size);
                w.pbs_batch(sk, count, |_| lut, outs);
                cx.observe(&outs[..count * size], step, |i| c * batch + live[i]);
                for (out, &k) in outs.chunks_exact(size).zip(live.iter()) {
                    for (a, &o) in ms[k * size..(k + 1) * size].iter_mut().zip(out) {
                        *a = a.wrapping_add(o);
                    }
                }
            }
        },
    );
    CtTensor { shape: out_shape.to_vec(), bits: x.bits, data }
}
