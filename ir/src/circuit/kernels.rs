//! Tensor kernels of the circuit ops, generic over the element type: `i64` for the exact
//! simulator, `f64` for the compiler's range and noise analyses.

use ndarray::{Array2, Array4, ArrayD, ArrayView4, ArrayViewD, Ix4, IxDyn, LinalgScalar, s};

use crate::nn::Pool;

/// Convolution with zero padding (im2col + one matrix product per image and group).
pub fn conv2d<T: LinalgScalar>(
    x: ArrayViewD<T>,
    weight: &Array4<T>,
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    groups: usize,
) -> ArrayD<T> {
    let x: ArrayView4<T> = x.into_dimensionality::<Ix4>().expect("NCHW input");
    let (n, _, h, w) = x.dim();
    let (cout, ipg, kh, kw) = weight.dim();
    let opg = cout / groups;
    let geom = Pool { kernel: [kh, kw], strides, pads, dilations, ceil_mode: false };
    let [oh, ow] = geom.output_hw([h, w]).expect("verified shape");
    let mut out = Array4::<T>::zeros((n, cout, oh, ow));
    let mut cols = Array2::<T>::zeros((ipg * kh * kw, oh * ow));
    for b in 0..n {
        for g in 0..groups {
            cols.fill(T::zero());
            for ci in 0..ipg {
                let plane = x.slice(s![b, g * ipg + ci, .., ..]);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let mut r = cols.row_mut((ci * kh + ky) * kw + kx);
                        for oy in 0..oh {
                            let iy = (oy * strides[0] + ky * dilations[0]) as isize - pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = (ox * strides[1] + kx * dilations[1]) as isize - pads[1] as isize;
                                if ix >= 0 && ix < w as isize {
                                    r[oy * ow + ox] = plane[[iy as usize, ix as usize]];
                                }
                            }
                        }
                    }
                }
            }
            let wg = weight.slice(s![g * opg..(g + 1) * opg, .., .., ..]);
            let wm = wg.to_shape((opg, ipg * kh * kw)).expect("contiguous");
            let y = wm.dot(&cols);
            for o in 0..opg {
                let mut dst = out.slice_mut(s![b, g * opg + o, .., ..]);
                for (d, &v) in dst.iter_mut().zip(y.row(o).iter()) {
                    *d = v;
                }
            }
        }
    }
    out.into_dyn()
}

/// `y = x · Wᵀ` over the last axis.
pub fn dense<T: LinalgScalar>(x: ArrayViewD<T>, weight: &Array2<T>) -> ArrayD<T> {
    let shape = x.shape().to_vec();
    let inner = *shape.last().expect("rank >= 1");
    let rows = x.len() / inner;
    let flat = x.to_shape((rows, inner)).expect("reshape").to_owned();
    let y = flat.dot(&weight.t());
    let mut out = shape;
    *out.last_mut().expect("rank >= 1") = weight.nrows();
    y.into_shape_with_order(IxDyn(&out)).expect("size")
}

/// Visits every pooling window: `f(out_index, valid_input_positions)`.
fn windows(shape: &[usize], p: &Pool, mut f: impl FnMut([usize; 4], &[(usize, usize)])) {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let [oh, ow] = p.output_hw([h, w]).expect("verified shape");
    let mut pos = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    pos.clear();
                    for ky in 0..p.kernel[0] {
                        let iy = (oy * p.strides[0] + ky * p.dilations[0]) as isize - p.pads[0] as isize;
                        for kx in 0..p.kernel[1] {
                            let ix = (ox * p.strides[1] + kx * p.dilations[1]) as isize - p.pads[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                pos.push((iy as usize, ix as usize));
                            }
                        }
                    }
                    f([b, ch, oy, ox], &pos);
                }
            }
        }
    }
}

/// Output shape of a pooling op.
pub fn pool_shape(shape: &[usize], p: &Pool) -> Vec<usize> {
    let [oh, ow] = p.output_hw([shape[2], shape[3]]).expect("verified shape");
    vec![shape[0], shape[1], oh, ow]
}

/// Sum over windows (padding contributes zero).
pub fn sum_pool<T: LinalgScalar>(x: ArrayViewD<T>, p: &Pool) -> ArrayD<T> {
    let mut out = ArrayD::<T>::zeros(IxDyn(&pool_shape(x.shape(), p)));
    windows(x.shape(), p, |[b, c, oy, ox], pos| {
        let mut acc = T::zero();
        for &(iy, ix) in pos {
            acc = acc + x[[b, c, iy, ix]];
        }
        out[[b, c, oy, ox]] = acc;
    });
    out
}

/// Fold over windows with `f(acc, v)` starting from the first valid element (padding
/// ignored); a window without valid elements yields `empty`.
pub fn fold_pool<T: Copy>(x: ArrayViewD<T>, p: &Pool, empty: T, f: impl Fn(T, T) -> T) -> ArrayD<T> {
    let mut out = ArrayD::from_elem(IxDyn(&pool_shape(x.shape(), p)), empty);
    windows(x.shape(), p, |[b, c, oy, ox], pos| {
        let mut it = pos.iter();
        if let Some(&(iy, ix)) = it.next() {
            let mut acc = x[[b, c, iy, ix]];
            for &(iy, ix) in it {
                acc = f(acc, x[[b, c, iy, ix]]);
            }
            out[[b, c, oy, ox]] = acc;
        }
    });
    out
}

/// One approximate pairwise maximum ([`crate::circuit::COp::MaxPool`] with `shift > 0`, or
/// exact with `shift == 0`): the amount added to the running maximum for the step `q` that
/// the comparison reads.
pub fn approx_max_step(q: i64, offset: i64, shift: u32) -> i64 {
    let half = if shift > 0 { 1i64 << (shift - 1) } else { 0 };
    ((q << shift) + half - offset).max(0)
}

/// A max-pooling comparison read outside its table (a value outside its calibrated range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a max-pooling comparison reads step {step} of the difference {difference}, outside its table's steps 0 to {last}"
)]
pub struct ComparisonOutOfRange {
    /// The step read.
    pub step: i64,
    /// The difference compared.
    pub difference: i64,
    /// The table's last step.
    pub last: i64,
}

/// Max pooling as the chain of (approximate) pairwise maxima TFHE computes: per window, in
/// [`window_indices`] order, `m += approx_max_step(read(x_i - m + offset), ..)`, where
/// `read` returns the step a comparison reads (`v >> shift` without noise), or an error for
/// a step outside `[0, 2^width)` (which would wrap around the torus).
pub fn approx_max_pool(
    x: ArrayViewD<i64>,
    p: &Pool,
    offset: i64,
    width: u32,
    shift: u32,
    mut read: impl FnMut(i64) -> i64,
) -> Result<ArrayD<i64>, ComparisonOutOfRange> {
    let flat: Vec<i64> = x.iter().copied().collect();
    let shape = pool_shape(x.shape(), p);
    let mut out = Vec::with_capacity(shape.iter().product());
    for win in window_indices(x.shape(), p) {
        let mut it = win.iter();
        let Some(&first) = it.next() else {
            out.push(0);
            continue;
        };
        let mut m = flat[first];
        for &i in it {
            let v = flat[i] - m + offset;
            let q = read(v);
            if v < 0 || !(0..1i64 << width).contains(&q) {
                return Err(ComparisonOutOfRange { step: q, difference: v, last: (1i64 << width) - 1 });
            }
            m += approx_max_step(q, offset, shift);
        }
        out.push(m);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("pool shape"))
}

/// Number of valid elements in each window.
pub fn window_counts(shape: &[usize], p: &Pool) -> ArrayD<usize> {
    let mut out = ArrayD::zeros(IxDyn(&pool_shape(shape, p)));
    windows(shape, p, |[b, c, oy, ox], pos| out[[b, c, oy, ox]] = pos.len());
    out
}

/// Pairwise comparisons (bootstraps) of a max pooling: valid elements minus one, per window.
pub fn max_pool_comparisons(shape: &[usize], p: &Pool) -> usize {
    window_counts(shape, p).iter().map(|&c| c.saturating_sub(1)).sum()
}

/// Flat (row-major) input indices of the valid elements of every window, in output order.
pub fn window_indices(shape: &[usize], p: &Pool) -> Vec<Vec<usize>> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let mut out = vec![];
    windows(shape, p, |[b, ch, _, _], pos| {
        out.push(pos.iter().map(|&(iy, ix)| ((b * c + ch) * h + iy) * w + ix).collect());
    });
    out
}

/// [`COp::Gather`](crate::circuit::COp::Gather) on row-major elements: `out[i] = x[src[i]]`,
/// or `neg(x[src[i]])` where `negate[i]` (callers checked the lengths and indices).
pub fn signed_gather<T: Copy>(x: &[T], src: &[u32], negate: &[bool], neg: impl Fn(T) -> T) -> Vec<T> {
    src.iter().zip(negate).map(|(&s, &n)| if n { neg(x[s as usize]) } else { x[s as usize] }).collect()
}
