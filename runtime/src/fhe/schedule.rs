//! The schedule of bootstraps: a [`Worker`] per thread keyswitches up to [`KS_BATCH`]
//! independent ciphertexts in one pass over the keyswitch key ([`keyswitch_batch`]) and
//! bootstraps them in one batched blind rotation ([`batch_bootstrap`]), with the main or the
//! rounding bootstrap key, each after a centered modulus switch ([`center_modulus_switch`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_sub_scalar_mul_assign;
use tfhe::core_crypto::prelude::*;

use super::{ServerKey, modulus};
use fhec_ir::params::TfheParams;

/// Most ciphertexts one keyswitch pass handles (see [`keyswitch_batch`]).
pub(crate) const KS_BATCH: usize = 16;

/// Ciphertexts per keyswitch batch for a layer of `count` independent bootstraps: up to
/// [`KS_BATCH`], but small enough that every thread gets several batches.
pub(crate) fn ks_batch(count: usize) -> usize {
    (count / (4 * rayon::current_num_threads().max(1))).clamp(1, KS_BATCH)
}

/// Number of mask coefficients up to the last non-zero one. Ciphertexts under a prefix of
/// the big key (fresh inputs, rounding bootstrap outputs, and any linear combination of
/// them) end in zeros, which contribute nothing to a keyswitch.
pub(crate) fn live_mask(ct: &[u64]) -> usize {
    let mask = &ct[..ct.len() - 1];
    mask.iter().rposition(|&a| a != 0).map_or(0, |i| i + 1)
}

/// Keyswitches the `inputs.len() / size` ciphertexts of `inputs` (each `size` words, under
/// the big key) to the small key, into `out` (`n + 1` words each), in one pass over the
/// keyswitch key: each key row is used for every ciphertext of the batch while it is in
/// cache, so the pass costs arithmetic rather than memory traffic (one ciphertext at a
/// time, the keyswitch streams the whole key, `kN·ℓ_ks·(n+1)` words, from memory). The
/// pass stops at the last mask coefficient any input uses ([`live_mask`]). Each output is
/// exactly what tfhe-rs's `keyswitch_lwe_ciphertext` computes: the same signed
/// decomposition of each mask coefficient, each term times its level's key row.
pub(crate) fn keyswitch_batch(
    ksk: &LweKeyswitchKeyOwned<u64>,
    inputs: &[u64],
    size: usize,
    out: &mut [u64],
    digits: &mut Vec<u64>,
) {
    let n1 = ksk.output_lwe_size().0;
    let levels = ksk.decomposition_level_count().0;
    let count = inputs.len() / size;
    let out = &mut out[..count * n1];
    out.fill(0);
    for (o, x) in out.chunks_exact_mut(n1).zip(inputs.chunks_exact(size)) {
        o[n1 - 1] = x[size - 1];
    }
    let live = inputs.chunks_exact(size).map(live_mask).max().unwrap_or(0);
    let decomposer = SignedDecomposer::<u64>::new(ksk.decomposition_base_log(), ksk.decomposition_level_count());
    digits.clear();
    digits.resize(count * levels, 0);
    let key = ksk.as_ref();
    for i in 0..live {
        for (d, x) in digits.chunks_exact_mut(levels).zip(inputs.chunks_exact(size)) {
            for (slot, term) in d.iter_mut().zip(decomposer.decompose(x[i])) {
                *slot = term.value();
            }
        }
        for j in 0..levels {
            let row = &key[(i * levels + j) * n1..(i * levels + j + 1) * n1];
            for (o, d) in out.chunks_exact_mut(n1).zip(digits.chunks_exact(levels)) {
                if d[j] != 0 {
                    slice_wrapping_sub_scalar_mul_assign(o, row, d[j]);
                }
            }
        }
    }
}

/// Centers the modulus switch of the blind rotation that reads `ct` (under the small binary
/// key; `n + 1` words) with a modulus of `2^log_modulus` (`2N`): adds to its body half the
/// sum of its mask's rounding errors, as tfhe-rs's centered (mean-reduced) modulus switch
/// does. The switch rounds each mask coefficient `a_i` to `a_i + e_i`, which adds
/// `-Σ s_i·e_i` to the phase; the server knows every `e_i`, and for a uniform binary key
/// that sum has mean `Σ e_i / 2`, which the body absorbs. What remains,
/// `-Σ (s_i - 1/2)·e_i`, has half the variance: `n/48` instead of `n/24` steps² of `1/2N`
/// (plus the body's own rounding), the model's `TfheParams::var_ms`.
pub(crate) fn center_modulus_switch(ct: &mut [u64], log_modulus: usize) {
    let shift = 64 - log_modulus as u32;
    let half = 1u64 << (shift - 1);
    let (mask, body) = ct.split_at_mut(ct.len() - 1);
    // Each error is at most 2^63 / 2N in magnitude: the sum of n of them fits an i128.
    let sum: i128 = mask
        .iter()
        .map(|&a| {
            let rounded = (a.wrapping_add(half) >> shift) << shift;
            rounded.wrapping_sub(a) as i64 as i128
        })
        .sum();
    body[0] = body[0].wrapping_add((sum / 2) as i64 as u64);
}

/// Bootstraps the ciphertexts of `small` (`bsk`'s input dimension + 1 words each), the
/// `i`-th with `lut(i)`, into `out` (its output dimension + 1 words each) in one batched
/// blind rotation, each after a centered modulus switch ([`center_modulus_switch`], on a copy
/// in `centered`); `accs` holds the accumulators (at least one GLWE ciphertext per input).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_bootstrap<'l>(
    bsk: &FourierLweBootstrapKeyOwned,
    fft: &Fft,
    buffers: &mut ComputationBuffers,
    small: &[u64],
    centered: &mut Vec<u64>,
    accs: &mut [u64],
    lut: impl Fn(usize) -> &'l GlweCiphertextOwned<u64>,
    out: &mut [u64],
) {
    let (glwe, poly) = (bsk.glwe_size(), bsk.polynomial_size());
    let (n1, size) = (bsk.input_lwe_dimension().0 + 1, bsk.output_lwe_dimension().0 + 1);
    let (count, words) = (small.len() / n1, glwe.0 * poly.0);
    for (i, a) in accs[..count * words].chunks_exact_mut(words).enumerate() {
        a.copy_from_slice(lut(i).as_ref());
    }
    let log_modulus = poly.to_blind_rotation_input_modulus_log().0;
    centered.clear();
    centered.extend_from_slice(small);
    for ct in centered.chunks_exact_mut(n1) {
        center_modulus_switch(ct, log_modulus);
    }
    let accs = GlweCiphertextList::from_container(&accs[..count * words], glwe, poly, modulus());
    let input = LweCiphertextList::from_container(&centered[..], LweSize(n1), modulus());
    let mut out = LweCiphertextList::from_container(&mut out[..count * size], LweSize(size), modulus());
    batch_programmable_bootstrap_lwe_ciphertext_mem_optimized(
        &input,
        &mut out,
        &accs,
        bsk,
        fft.as_view(),
        buffers.stack(),
    );
}

/// `ct` copied into `buf` with the centered modulus switch of a blind rotation with
/// polynomials of `poly` coefficients ([`center_modulus_switch`]).
fn centered_copy<'b>(ct: &[u64], poly: PolynomialSize, buf: &'b mut Vec<u64>) -> LweCiphertext<&'b [u64]> {
    buf.clear();
    buf.extend_from_slice(ct);
    center_modulus_switch(buf, poly.to_blind_rotation_input_modulus_log().0);
    LweCiphertext::from_container(&buf[..], modulus())
}

/// Writes a rounding bootstrap's output `src` (under the `k_r·N_r` prefix of the big key) to
/// `out` as a big-key ciphertext: the mask padded with zeros, then the body.
pub(crate) fn pad_to_big_key(src: &[u64], out: &mut [u64]) {
    let d = src.len() - 1;
    let (mask, body) = out.split_at_mut(out.len() - 1);
    mask[..d].copy_from_slice(&src[..d]);
    mask[d..].fill(0);
    body[0] = src[d];
}

/// A bootstrap engine per worker thread: FFT plans, scratch buffers and the batch of
/// keyswitched ciphertexts it bootstraps next.
pub(crate) struct Worker<'p> {
    fft: Fft,
    /// With a rounding key: its FFT and a bootstrap output of its dimension (`k_r·N_r`).
    round: Option<(Fft, LweCiphertextOwned<u64>)>,
    buffers: ComputationBuffers,
    /// Keyswitched ciphertexts (`n + 1` words each, up to [`KS_BATCH`]).
    small: Vec<u64>,
    /// Their copies with a centered modulus switch ([`center_modulus_switch`]).
    centered: Vec<u64>,
    digits: Vec<u64>,
    /// Accumulators of a batched bootstrap (one table per ciphertext, up to [`KS_BATCH`]).
    accs: Vec<u64>,
    /// Outputs of a batched rounding bootstrap (`k_r·N_r + 1` words each, up to [`KS_BATCH`]).
    round_outs: Vec<u64>,
    progress: &'p AtomicUsize,
}

impl<'p> Worker<'p> {
    pub(crate) fn new(sk: &ServerKey, progress: &'p AtomicUsize) -> Worker<'p> {
        let need = |q: &TfheParams, fft: &Fft| {
            let (glwe, poly) = (GlweSize(q.glwe_dimension + 1), PolynomialSize(q.polynomial_size));
            let one = programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement::<u64>(glwe, poly, fft.as_view());
            let batch = batch_programmable_bootstrap_lwe_ciphertext_mem_optimized_requirement::<u64>(
                glwe,
                poly,
                CiphertextCount(KS_BATCH),
                fft.as_view(),
            );
            one.unaligned_bytes_required().max(batch.unaligned_bytes_required())
        };
        let fft = Fft::new(PolynomialSize(sk.params.polynomial_size));
        let mut bytes = need(&sk.params, &fft);
        let round = sk.round_bsk.as_ref().map(|_| {
            let r = sk.params.rounding_bootstrap();
            let fft = Fft::new(PolynomialSize(r.polynomial_size));
            bytes = bytes.max(need(&r, &fft));
            (fft, LweCiphertext::new(0u64, LweSize(r.big_dimension() + 1), modulus()))
        });
        let mut buffers = ComputationBuffers::new();
        buffers.resize(bytes);
        let small = vec![0u64; KS_BATCH * (sk.params.lwe_dimension + 1)];
        let glwe_words = |q: &TfheParams| (q.glwe_dimension + 1) * q.polynomial_size;
        let r = sk.params.rounding_bootstrap();
        let accs = vec![0u64; KS_BATCH * glwe_words(&sk.params).max(glwe_words(&r))];
        let round_outs = vec![0u64; if sk.round_bsk.is_some() { KS_BATCH * (r.big_dimension() + 1) } else { 0 }];
        let centered = Vec::with_capacity(small.len());
        Worker { fft, round, buffers, small, centered, digits: vec![], accs, round_outs, progress }
    }

    /// PBS of the first `count` keyswitched ciphertexts, the `i`-th with `lut(i)`, written to
    /// `outs` (big key, `kN + 1` words each): one batched blind rotation, which streams each
    /// GGSW of the bootstrap key from memory once for the whole batch instead of once per
    /// ciphertext (about 1.2x faster per bootstrap here at batches of 8 to 16). Each output
    /// is exactly what [`Worker::pbs`] computes.
    pub(crate) fn pbs_batch<'l>(
        &mut self,
        sk: &ServerKey,
        count: usize,
        lut: impl Fn(usize) -> &'l GlweCiphertextOwned<u64>,
        outs: &mut [u64],
    ) {
        let Worker { fft, buffers, small, centered, accs, progress, .. } = self;
        let small = &small[..count * (sk.params.lwe_dimension + 1)];
        batch_bootstrap(&sk.bsk, fft, buffers, small, centered, accs, lut, outs);
        progress.fetch_add(count, Ordering::Relaxed);
    }

    /// Rounding bootstraps of the first `count` keyswitched ciphertexts with `lut`, written to
    /// `outs` (big key, `kN + 1` words each), batched as in [`Worker::pbs_batch`]; with a
    /// rounding key each output is its bootstrap output padded with zeros, as in
    /// [`Worker::pbs_rounding`].
    pub(crate) fn pbs_rounding_batch(
        &mut self,
        sk: &ServerKey,
        count: usize,
        lut: &GlweCiphertextOwned<u64>,
        outs: &mut [u64],
    ) {
        let (Some(bsk), Some((fft, _))) = (&sk.round_bsk, self.round.as_ref()) else {
            return self.pbs_batch(sk, count, |_| lut, outs);
        };
        let (n1, size) = (sk.params.lwe_dimension + 1, sk.lwe_size());
        let r1 = bsk.output_lwe_dimension().0 + 1;
        let Worker { buffers, small, centered, accs, round_outs, progress, .. } = self;
        let round_outs = &mut round_outs[..count * r1];
        batch_bootstrap(bsk, fft, buffers, &small[..count * n1], centered, accs, |_| lut, round_outs);
        for (o, src) in outs[..count * size].chunks_exact_mut(size).zip(round_outs.chunks_exact(r1)) {
            pad_to_big_key(src, o);
        }
        progress.fetch_add(count, Ordering::Relaxed);
    }

    /// Keyswitches the ciphertexts of `inputs` (`size` words each, at most [`KS_BATCH`]) to
    /// the small key; [`Worker::pbs`] and [`Worker::pbs_rounding`] then bootstrap them.
    pub(crate) fn keyswitch(&mut self, sk: &ServerKey, inputs: &[u64], size: usize) {
        debug_assert!(inputs.len() / size <= KS_BATCH);
        keyswitch_batch(&sk.ksk, inputs, size, &mut self.small, &mut self.digits);
    }

    /// The first `count` keyswitched ciphertexts (`n + 1` words each).
    #[cfg_attr(not(feature = "probes"), allow(dead_code))]
    pub(crate) fn keyswitched(&self, count: usize) -> &[u64] {
        &self.small[..count * (self.small.len() / KS_BATCH)]
    }

    /// PBS of the `i`-th keyswitched ciphertext with `lut`, written to `out` (big key).
    #[cfg_attr(not(feature = "probes"), allow(dead_code))]
    pub(crate) fn pbs(&mut self, sk: &ServerKey, i: usize, lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        let n1 = sk.params.lwe_dimension + 1;
        let Worker { fft, buffers, small, centered, progress, .. } = self;
        let input = centered_copy(&small[i * n1..(i + 1) * n1], sk.bsk.polynomial_size(), centered);
        let mut o = LweCiphertext::from_container(out, modulus());
        programmable_bootstrap_lwe_ciphertext_mem_optimized(
            &input,
            &mut o,
            lut,
            &sk.bsk,
            fft.as_view(),
            buffers.stack(),
        );
        progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Rounding bootstrap of the `i`-th keyswitched ciphertext with `lut` (a table of the
    /// rounding key's shape, `round_lut_shape`), written to `out` (big key): with a
    /// rounding key, its output (dimension `k_r·N_r`, a prefix of the big key) padded with
    /// zeros; without one, [`Worker::pbs`].
    #[cfg_attr(not(feature = "probes"), allow(dead_code))]
    pub(crate) fn pbs_rounding(&mut self, sk: &ServerKey, i: usize, lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        let n1 = sk.params.lwe_dimension + 1;
        let Worker { round, buffers, small, centered, progress, .. } = self;
        let (Some(bsk), Some((fft, r_out))) = (&sk.round_bsk, round.as_mut()) else {
            return self.pbs(sk, i, lut, out);
        };
        let input = centered_copy(&small[i * n1..(i + 1) * n1], bsk.polynomial_size(), centered);
        programmable_bootstrap_lwe_ciphertext_mem_optimized(&input, r_out, lut, bsk, fft.as_view(), buffers.stack());
        pad_to_big_key(r_out.as_ref(), out);
        progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Keyswitch + PBS of `input` (big key) with `lut`, written to `out` (big key).
    #[cfg_attr(not(feature = "probes"), allow(dead_code))]
    pub(crate) fn bootstrap(&mut self, sk: &ServerKey, input: &[u64], lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        self.keyswitch(sk, input, input.len());
        self.pbs(sk, 0, lut, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::gaussian;
    use super::*;

    /// The batched keyswitch is tfhe-rs's keyswitch, word for word, on full ciphertexts and
    /// on ciphertexts under a prefix of the key (zero tail), mixed in one batch. Toy
    /// dimensions: this checks arithmetic, not security.
    #[test]
    fn batched_keyswitch_equals_tfhe_rs_keyswitch() {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut secret = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let mut rng = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let big = LweSecretKey::generate_new_binary(LweDimension(1024), &mut secret);
        let small = LweSecretKey::generate_new_binary(LweDimension(300), &mut secret);
        let ksk = allocate_and_generate_new_lwe_keyswitch_key(
            &big,
            &small,
            DecompositionBaseLog(5),
            DecompositionLevelCount(3),
            gaussian(1e-9),
            modulus(),
            &mut rng,
        );
        let prefix = LweSecretKey::from_container(big.as_ref()[..256].to_vec());
        let size = 1025;
        let mut inputs = vec![];
        for i in 0..7u64 {
            let mut ct = LweCiphertext::new(0u64, LweSize(size), modulus());
            let pt = Plaintext(i.wrapping_mul(0x1357_9bdf_0246_8ace));
            if i % 3 == 1 {
                let mut p = LweCiphertext::new(0u64, LweSize(257), modulus());
                encrypt_lwe_ciphertext(&prefix, &mut p, pt, gaussian(1e-9), &mut rng);
                ct.as_mut()[..256].copy_from_slice(&p.as_ref()[..256]);
                ct.as_mut()[size - 1] = p.as_ref()[256];
            } else {
                encrypt_lwe_ciphertext(&big, &mut ct, pt, gaussian(1e-9), &mut rng);
            }
            inputs.extend_from_slice(ct.as_ref());
        }
        for batch in [&inputs[..], &inputs[size..2 * size], &inputs[4 * size..5 * size]] {
            let count = batch.len() / size;
            let mut out = vec![0u64; count * 301];
            keyswitch_batch(&ksk, batch, size, &mut out, &mut vec![]);
            for (x, o) in batch.chunks_exact(size).zip(out.chunks_exact(301)) {
                let mut want = LweCiphertext::new(0u64, LweSize(301), modulus());
                keyswitch_lwe_ciphertext(&ksk, &LweCiphertext::from_container(x, modulus()), &mut want);
                assert_eq!(o, want.as_ref());
            }
        }
        assert!(live_mask(&inputs[size..2 * size]) <= 256);
        assert!(live_mask(&inputs[..size]) > 256);
    }
}
