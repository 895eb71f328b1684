//! Image quality of a reconstruction against the original: PSNR and SSIM of 8-bit images.

/// Peak value of 8-bit pixels.
const PEAK: f64 = 255.0;
/// Side of SSIM's uniform window (scikit-image's default).
pub const SSIM_WINDOW: usize = 7;

/// Mean squared error of two images of the same size.
pub fn mse(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    let s: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    s / a.len().max(1) as f64
}

/// PSNR in dB of a mean squared error of 8-bit pixels (peak 255): infinite for 0.
pub fn psnr_of_mse(mse: f64) -> f64 {
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (PEAK * PEAK / mse).log10() }
}

/// PSNR in dB of two 8-bit images (infinite when they are equal).
#[cfg_attr(not(test), allow(dead_code))]
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    psnr_of_mse(mse(a, b))
}

/// A PSNR for tables: one decimal, `inf` for equal images.
pub fn show_psnr(p: f64) -> String {
    if p.is_infinite() { "inf".into() } else { format!("{p:.1}") }
}

/// Sums of `v` over every `k x k` window of an `h x w` image, row-major over the
/// `(h - k + 1) x (w - k + 1)` windows (from an integral image).
fn window_sums(v: &[f64], h: usize, w: usize, k: usize) -> Vec<f64> {
    let mut integral = vec![0.0; (h + 1) * (w + 1)];
    for y in 0..h {
        let mut row = 0.0;
        for x in 0..w {
            row += v[y * w + x];
            integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
        }
    }
    let at = |y: usize, x: usize| integral[y * (w + 1) + x];
    let mut out = Vec::with_capacity((h + 1 - k) * (w + 1 - k));
    for y in 0..=h - k {
        for x in 0..=w - k {
            out.push(at(y + k, x + k) - at(y, x + k) - at(y + k, x) + at(y, x));
        }
    }
    out
}

/// SSIM of two `h x w` 8-bit images (Wang, Bovik, Sheikh and Simoncelli 2004): `K1 = 0.01`,
/// `K2 = 0.03`, `L = 255`, statistics over a `7 x 7` uniform window with the sample
/// (unbiased) covariance, averaged over every window that fits in the image: what
/// scikit-image's `structural_similarity(a, b, data_range=255)` computes. Images smaller
/// than the window get one window of their own size.
pub fn ssim(a: &[u8], b: &[u8], h: usize, w: usize) -> f64 {
    assert_eq!(a.len(), h * w, "first image of another size");
    assert_eq!(b.len(), h * w, "second image of another size");
    let k = SSIM_WINDOW.min(h).min(w);
    let (c1, c2) = ((0.01 * PEAK).powi(2), (0.03 * PEAK).powi(2));
    let x: Vec<f64> = a.iter().map(|&p| p as f64).collect();
    let y: Vec<f64> = b.iter().map(|&p| p as f64).collect();
    let prod = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let (sx, sy) = (window_sums(&x, h, w, k), window_sums(&y, h, w, k));
    let (sxx, syy, sxy) =
        (window_sums(&prod(&x, &x), h, w, k), window_sums(&prod(&y, &y), h, w, k), window_sums(&prod(&x, &y), h, w, k));
    let n = (k * k) as f64;
    // Sample covariance: the biased one times n / (n - 1).
    let cov_norm = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    let total: f64 = (0..sx.len())
        .map(|i| {
            let (ux, uy) = (sx[i] / n, sy[i] / n);
            let vx = cov_norm * (sxx[i] / n - ux * ux);
            let vy = cov_norm * (syy[i] / n - uy * uy);
            let vxy = cov_norm * (sxy[i] / n - ux * uy);
            ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        })
        .sum();
    total / sx.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn psnr_of_a_hand_example() {
        // Errors of 0, 10, 0, -20: MSE (100 + 400) / 4 = 125.
        let a = [10u8, 20, 30, 40];
        let b = [10u8, 30, 30, 20];
        assert_eq!(mse(&a, &b), 125.0);
        let want = 10.0 * (255.0f64 * 255.0 / 125.0).log10();
        assert!((psnr(&a, &b) - want).abs() < 1e-12);
        assert!((psnr(&a, &b) - 27.1617).abs() < 1e-3, "{}", psnr(&a, &b));
        assert!(psnr(&a, &a).is_infinite());
        assert_eq!(show_psnr(psnr(&a, &a)), "inf");
        assert_eq!(show_psnr(psnr(&a, &b)), "27.2");
    }

    #[test]
    fn ssim_of_an_image_with_itself_is_one() {
        let a = pseudo_random(28 * 28, 1);
        assert!((ssim(&a, &a, 28, 28) - 1.0).abs() < 1e-12);
        // A constant image too (both constants equal: the stabilising constants give 1).
        let c = vec![77u8; 64];
        assert!((ssim(&c, &c, 8, 8) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_of_an_image_and_its_negation_is_strongly_negative() {
        let a = pseudo_random(28 * 28, 2);
        let n: Vec<u8> = a.iter().map(|p| 255 - p).collect();
        let s = ssim(&a, &n, 28, 28);
        assert!(s < -0.9, "{s}");
        // Unrelated noise: near zero.
        let b = pseudo_random(28 * 28, 3);
        assert!(ssim(&a, &b, 28, 28).abs() < 0.1);
    }

    #[test]
    fn ssim_matches_a_direct_computation_of_one_window() {
        // A 7 x 7 image is one window: the formula by hand.
        let a = pseudo_random(49, 4);
        let b: Vec<u8> = a.iter().map(|&p| p / 2 + 10).collect();
        let f = |v: &[u8]| v.iter().map(|&p| p as f64).collect::<Vec<_>>();
        let (x, y) = (f(&a), f(&b));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / 49.0;
        let (ux, uy) = (mean(&x), mean(&y));
        let cov = |u: &[f64], mu: f64, v: &[f64], mv: f64| {
            u.iter().zip(v).map(|(p, q)| (p - mu) * (q - mv)).sum::<f64>() / 48.0
        };
        let (vx, vy, vxy) = (cov(&x, ux, &x, ux), cov(&y, uy, &y, uy), cov(&x, ux, &y, uy));
        let (c1, c2) = (6.5025, 58.5225);
        let want = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        assert!((ssim(&a, &b, 7, 7) - want).abs() < 1e-9);
    }
}
