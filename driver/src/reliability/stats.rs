//! Binomial confidence intervals (Clopper-Pearson), for comparing an observed failure count
//! with a predicted rate.

/// `P(X <= k)` for `X ~ Binomial(n, p)`, summed in log space (exact for any `n`).
pub fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    // log C(n, i) + i log p + (n - i) log q, for i = 0..=k.
    let mut log_c = 0.0f64;
    let terms: Vec<f64> = (0..=k)
        .map(|i| {
            if i > 0 {
                log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            log_c + i as f64 * lp + (n - i) as f64 * lq
        })
        .collect();
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()).exp().min(1.0)
}

/// The Clopper-Pearson interval of confidence `confidence` (e.g. 0.999) for the rate of an
/// event seen `k` times in `n` independent trials: the rates `p` for which seeing `k` or
/// fewer (for the upper end), or `k` or more (for the lower end), has probability at least
/// `(1 - confidence) / 2`. Conservative: it covers the true rate with at least that
/// confidence, also for trials of unequal rates averaging it (their count varies less).
pub fn clopper_pearson(k: usize, n: usize, confidence: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let tail = (1.0 - confidence) / 2.0;
    // Bisection on a monotone function of p (150 halvings: below f64 resolution).
    let solve = |f: &dyn Fn(f64) -> bool| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..150 {
            let mid = 0.5 * (lo + hi);
            if f(mid) { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    // P(X >= k) = 1 - P(X <= k - 1) grows with p; the lower end is where it reaches `tail`.
    let lower = if k == 0 { 0.0 } else { solve(&|p| 1.0 - binomial_cdf(k - 1, n, p) < tail) };
    // P(X <= k) falls with p; the upper end is where it falls to `tail`.
    let upper = if k >= n { 1.0 } else { solve(&|p| binomial_cdf(k, n, p) > tail) };
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_reference_values() {
        // k = 0 and k = n have closed forms (1 - (α/2)^(1/n) and (α/2)^(1/n)); 30 of 2000
        // was computed independently (Python, sums of lgamma terms and bisection).
        let (lo, hi) = clopper_pearson(0, 1000, 0.999);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.0075721).abs() < 1e-6, "{hi}");
        let (lo, hi) = clopper_pearson(30, 2000, 0.999);
        assert!((lo - 0.0076115).abs() < 1e-6 && (hi - 0.0261734).abs() < 1e-6, "{lo} {hi}");
        let (lo, hi) = clopper_pearson(1000, 1000, 0.999);
        assert!((lo - 0.9924279).abs() < 1e-6 && hi == 1.0, "{lo}");
        assert!((binomial_cdf(3, 10, 0.5) - 176.0 / 1024.0).abs() < 1e-12);
    }
}
