//! Leveled ops (no bootstrap): integer convolutions and dense layers, clear additions,
//! sums and differences, sum pooling, transposes, signed gathers. Each works on the ciphertexts' words
//! directly (`Σ w·ct` is an encryption of `Σ w·v`).

use fhec_ir::circuit::kernels;
use ndarray::{Array2, Array4, ArrayD, IxDyn};
use rayon::prelude::*;

use super::Ctx;
use crate::fhe::{CtTensor, FheError, delta};

/// A grouped, strided, padded, dilated 2-D convolution with integer weights.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    cx: &Ctx<'_>,
    x: &CtTensor,
    weight: &Array4<i64>,
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    groups: usize,
    out_shape: &[usize],
) -> CtTensor {
    let size = cx.size;
    let (n, _, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let cin = x.shape[1];
    let (cout, ipg, kh, kw) = weight.dim();
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let opg = cout / groups;
    let mut data = vec![0u64; n * cout * oh * ow * size];
    data.par_chunks_mut(size).enumerate().for_each(|(e, acc)| {
        let ox = e % ow;
        let oy = (e / ow) % oh;
        let oc = (e / (ow * oh)) % cout;
        let b = e / (ow * oh * cout);
        let g = oc / opg;
        for ci in 0..ipg {
            let ic = g * ipg + ci;
            for ky in 0..kh {
                let iy = (oy * strides[0] + ky * dilations[0]) as isize - pads[0] as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox * strides[1] + kx * dilations[1]) as isize - pads[1] as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let wv = weight[[oc, ci, ky, kx]] as u64;
                    if wv == 0 {
                        continue;
                    }
                    let src = ((b * cin + ic) * h + iy as usize) * w + ix as usize;
                    for (a, &s) in acc.iter_mut().zip(&x.data[src * size..(src + 1) * size]) {
                        *a = a.wrapping_add(s.wrapping_mul(wv));
                    }
                }
            }
        }
    });
    CtTensor { shape: out_shape.to_vec(), bits: x.bits, data }
}

/// Outputs of a dense layer accumulated together ([`dense`]).
const DENSE_TILE: usize = 8;

/// A dense layer: `out[row, o] = Σ_k weight[o, k]·x[row, k]`. The outputs go in tiles of
/// [`DENSE_TILE`], each tile's accumulators kept in cache while the inputs stream past once
/// (one output at a time, every output would read the whole input from memory).
pub(super) fn dense(cx: &Ctx<'_>, x: &CtTensor, weight: &Array2<i64>, out_shape: &[usize]) -> CtTensor {
    let (size, inner, outs) = (cx.size, weight.ncols(), weight.nrows());
    let numel: usize = out_shape.iter().product();
    let mut data = vec![0u64; numel * size];
    data.par_chunks_mut(DENSE_TILE * size).enumerate().for_each(|(t, accs)| {
        for k in 0..inner {
            for (j, acc) in accs.chunks_exact_mut(size).enumerate() {
                let e = t * DENSE_TILE + j;
                let (row, o) = (e / outs, e % outs);
                let w = weight[[o, k]] as u64;
                if w != 0 {
                    let src = &x.data[(row * inner + k) * size..(row * inner + k + 1) * size];
                    for (a, &s) in acc.iter_mut().zip(src) {
                        *a = a.wrapping_add(s.wrapping_mul(w));
                    }
                }
            }
        }
    });
    CtTensor { shape: out_shape.to_vec(), bits: x.bits, data }
}

/// Adds a clear constant (broadcast to the output shape) to the bodies.
pub(super) fn add_clear(
    cx: &Ctx<'_>,
    mut t: CtTensor,
    k: &ArrayD<i64>,
    out_shape: &[usize],
) -> Result<CtTensor, FheError> {
    let kb = k.broadcast(IxDyn(out_shape)).ok_or_else(|| {
        FheError::Shape(format!("a clear constant of shape {:?} does not broadcast to {out_shape:?}", k.shape()))
    })?;
    let d = delta(t.bits);
    for (chunk, &v) in t.data.chunks_exact_mut(cx.size).zip(kb.iter()) {
        let b = chunk.last_mut().expect("body");
        *b = b.wrapping_add((v as u64).wrapping_mul(d));
    }
    Ok(t)
}

/// The sum (or with `sub`, the difference) of two tensors of the same encoding.
pub(super) fn add(a: &CtTensor, b: &CtTensor, sub: bool, out_shape: &[usize]) -> CtTensor {
    let data =
        a.data.iter().zip(&b.data).map(|(&p, &q)| if sub { p.wrapping_sub(q) } else { p.wrapping_add(q) }).collect();
    CtTensor { shape: out_shape.to_vec(), bits: a.bits, data }
}

/// Sum pooling: the sum of every window.
pub(super) fn sum_pool(cx: &Ctx<'_>, x: &CtTensor, pool: &fhec_ir::nn::Pool, out_shape: &[usize]) -> CtTensor {
    let size = cx.size;
    let wins = kernels::window_indices(&x.shape, pool);
    let mut data = vec![0u64; wins.len() * size];
    data.par_chunks_mut(size).zip(wins.par_iter()).for_each(|(acc, win)| {
        for &i in win {
            for (a, &s) in acc.iter_mut().zip(&x.data[i * size..(i + 1) * size]) {
                *a = a.wrapping_add(s);
            }
        }
    });
    CtTensor { shape: out_shape.to_vec(), bits: x.bits, data }
}

/// Permutes the axes (the ciphertexts move, unchanged).
pub(super) fn transpose(cx: &Ctx<'_>, t: &CtTensor, perm: &[usize], out_shape: &[usize]) -> Result<CtTensor, FheError> {
    let size = cx.size;
    let idx = ArrayD::from_shape_vec(IxDyn(&t.shape), (0..t.shape.iter().product::<usize>()).collect::<Vec<usize>>())
        .map_err(|e| FheError::Shape(e.to_string()))?;
    let order: Vec<usize> = idx.permuted_axes(IxDyn(perm)).iter().copied().collect();
    let mut data = Vec::with_capacity(t.data.len());
    for e in order {
        data.extend_from_slice(&t.data[e * size..(e + 1) * size]);
    }
    Ok(CtTensor { shape: out_shape.to_vec(), bits: t.bits, data })
}

/// Moves the ciphertexts (`out[i]` is `t[src[i]]`), negating some: `max·Δ - ct` encrypts
/// `max - v` with the same noise.
pub(super) fn gather(
    cx: &Ctx<'_>,
    t: &CtTensor,
    src: &[u32],
    negate: &[bool],
    max: i64,
    out_shape: &[usize],
) -> CtTensor {
    let size = cx.size;
    let m = (max as u64).wrapping_mul(delta(t.bits));
    let mut data = Vec::with_capacity(t.data.len());
    for (&s, &n) in src.iter().zip(negate) {
        let ct = &t.data[s as usize * size..(s as usize + 1) * size];
        if n {
            data.extend(ct.iter().map(|w| w.wrapping_neg()));
            let body = data.last_mut().expect("body");
            *body = body.wrapping_add(m);
        } else {
            data.extend_from_slice(ct);
        }
    }
    CtTensor { shape: out_shape.to_vec(), bits: t.bits, data }
}
