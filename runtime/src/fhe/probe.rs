//! Timing probes of one bootstrap at given parameters (what the CLI's benchmarks and
//! scheduling-efficiency figures divide by), and helpers for the noise tests and benches.
//! Behind the `probes` feature.

use super::schedule::KS_BATCH;
use super::{CtTensor, ServerKey};

/// Median seconds of one keyswitch + programmable bootstrap on the calling thread, as
/// [`evaluate`] does them: the keyswitch's share is that of a full batch (16
/// ciphertexts keyswitched in one pass over the key), the bootstrap's is one bootstrap;
/// medians over `samples` runs of each (after five warm-up runs: the first bootstraps after
/// key generation or a large evaluation run measurably slower). This is the unit of the
/// scheduling-efficiency ratio `evaluation time / (bootstraps × this / cores)`. The inputs
/// are pseudo-random LWE vectors: the cost of a bootstrap does not depend on what it
/// decrypts to, but it does on the mask (tfhe-rs skips zero rotations, so an all-zero
/// trivial ciphertext would be misleadingly fast).
pub fn one_bootstrap_seconds(sk: &ServerKey, samples: usize) -> f64 {
    time_one(test_support::OneBootstrap::new(sk, 1), sk, samples)
}

/// [`one_bootstrap_seconds`] for the rounding bootstrap (the keyswitch and the rounding key's
/// bootstrap of a sign read; the main bootstrap without a rounding key).
pub fn one_rounding_bootstrap_seconds(sk: &ServerKey, samples: usize) -> f64 {
    time_one(test_support::OneBootstrap::rounding(sk), sk, samples)
}

fn time_one(mut b: test_support::OneBootstrap<'_>, sk: &ServerKey, samples: usize) -> f64 {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data = (0..sk.lwe_size() * KS_BATCH)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        })
        .collect();
    let input = CtTensor { shape: vec![KS_BATCH], bits: 1, data };
    for _ in 0..5 {
        std::hint::black_box(b.run(&input));
    }
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let time = |f: &mut dyn FnMut()| {
        let t0 = std::time::Instant::now();
        f();
        t0.elapsed().as_secs_f64()
    };
    let (mut ks, mut pbs) = (vec![], vec![]);
    for _ in 0..samples.max(1) {
        ks.push(time(&mut || b.keyswitch(&input)) / KS_BATCH as f64);
        pbs.push(time(&mut || {
            std::hint::black_box(b.bootstrap_first());
        }));
    }
    median(ks) + median(pbs)
}

/// Helpers for the noise-validation tests and the benches (not part of the stable API).
#[doc(hidden)]
pub mod test_support {
    use std::sync::atomic::AtomicUsize;

    use rayon::prelude::*;
    use tfhe::core_crypto::prelude::*;

    use fhec_ir::artifact::ParametrizedCircuit;

    use crate::fhe::eval::{evaluate_observed as run_observed, sign_lut, table_lut};
    use crate::fhe::schedule::{KS_BATCH, Worker};
    use crate::fhe::{ClientKey, CtTensor, FheError, ServerKey, modulus};

    pub use crate::fhe::eval::{BootstrapSite, Observer};

    /// [`crate::fhe::evaluate`], calling `observer` with the output of every bootstrap as it
    /// is computed (on the worker threads, under the big key): what the failure-rate
    /// measurements decrypt. The evaluation itself is the runtime's, with the server key only.
    pub fn evaluate_observed(
        sk: &ServerKey,
        pc: &ParametrizedCircuit<'_>,
        input: &CtTensor,
        observer: Observer<'_>,
    ) -> Result<CtTensor, FheError> {
        run_observed(sk, pc, input, &AtomicUsize::new(0), Some(observer))
    }

    /// Decrypts single ciphertexts under the big key to their raw phase (a torus element,
    /// `2^64` = 1), for the failure-rate measurements.
    pub struct PhaseDecryptor {
        key: LweSecretKeyOwned<u64>,
    }

    impl PhaseDecryptor {
        /// The decryptor of `ck`'s big key.
        pub fn new(ck: &ClientKey) -> PhaseDecryptor {
            PhaseDecryptor { key: ck.big_key() }
        }

        /// The phase `<a, s> + b` of the ciphertext `ct` (`kN + 1` words).
        pub fn phase(&self, ct: &[u64]) -> u64 {
            decrypt_lwe_ciphertext(&self.key, &LweCiphertext::from_container(ct, modulus())).0
        }
    }

    static BENCH_COUNT: AtomicUsize = AtomicUsize::new(0);

    /// One keyswitch + programmable bootstrap through an identity table, as the runtime
    /// does it for every table element (for benchmarks).
    pub struct OneBootstrap<'a> {
        sk: &'a ServerKey,
        worker: Worker<'static>,
        lut: GlweCiphertextOwned<u64>,
        out: Vec<u64>,
        rounding: bool,
        /// Ciphertexts of the last [`OneBootstrap::keyswitch`].
        count: usize,
    }

    impl<'a> OneBootstrap<'a> {
        /// Prepares a bootstrap engine and an identity table reading `width` bits.
        pub fn new(sk: &'a ServerKey, width: u32) -> OneBootstrap<'a> {
            let table: Vec<i64> = (0..1i64 << width).collect();
            let lut = table_lut(sk, width, &table, width);
            OneBootstrap {
                sk,
                worker: Worker::new(sk, &BENCH_COUNT),
                lut,
                out: vec![0; KS_BATCH * sk.lwe_size()],
                rounding: false,
                count: 0,
            }
        }

        /// Prepares a sign read of exact rounding, with the rounding bootstrap (the main one
        /// without a rounding key).
        pub fn rounding(sk: &'a ServerKey) -> OneBootstrap<'a> {
            let lut = sign_lut(sk, 1 << 60);
            let out = vec![0; KS_BATCH * sk.lwe_size()];
            OneBootstrap { sk, worker: Worker::new(sk, &BENCH_COUNT), lut, out, rounding: true, count: 0 }
        }

        /// Bootstraps the first ciphertext of `input`.
        pub fn run(&mut self, input: &CtTensor) -> &[u64] {
            let size = self.sk.lwe_size();
            self.worker.keyswitch(self.sk, &input.data[..size], size);
            self.bootstrap_first()
        }

        /// Keyswitches the first 16 ciphertexts of `input` in one pass, as the
        /// runtime does a layer's.
        pub fn keyswitch(&mut self, input: &CtTensor) {
            let size = self.sk.lwe_size();
            let count = (input.data.len() / size).min(KS_BATCH);
            self.worker.keyswitch(self.sk, &input.data[..count * size], size);
            self.count = count;
        }

        /// Bootstraps every ciphertext of the last [`OneBootstrap::keyswitch`] in one batched
        /// blind rotation, as the runtime does a layer's; returns the outputs.
        pub fn bootstrap_batch(&mut self) -> &[u64] {
            let (count, size) = (self.count, self.sk.lwe_size());
            let out = &mut self.out[..count * size];
            if self.rounding {
                self.worker.pbs_rounding_batch(self.sk, count, &self.lut, out);
            } else {
                self.worker.pbs_batch(self.sk, count, |_| &self.lut, out);
            }
            out
        }

        /// The modulus switch alone of every ciphertext of the last
        /// [`OneBootstrap::keyswitch`], as the batched bootstrap does it before its blind
        /// rotation: centered ([`crate::fhe::schedule::center_modulus_switch`]), then each
        /// coefficient rounded to `2N`; returns the sum of the switched words (so that none
        /// of the work is optimised away).
        pub fn modulus_switch_batch(&mut self) -> usize {
            let n1 = self.sk.params.lwe_dimension + 1;
            let log = PolynomialSize(self.sk.params.polynomial_size).to_blind_rotation_input_modulus_log();
            let mut buf = self.worker.keyswitched(self.count).to_vec();
            let mut sum = 0usize;
            for ct in buf.chunks_exact_mut(n1) {
                crate::fhe::schedule::center_modulus_switch(ct, log.0);
                let msed =
                    lwe_ciphertext_modulus_switch::<u64, usize, _>(LweCiphertext::from_container(&*ct, modulus()), log);
                sum = msed.mask().fold(sum.wrapping_add(msed.body()), usize::wrapping_add);
            }
            sum
        }

        /// Bootstraps the first ciphertext of the last [`OneBootstrap::keyswitch`].
        pub fn bootstrap_first(&mut self) -> &[u64] {
            let out = &mut self.out[..self.sk.lwe_size()];
            if self.rounding {
                self.worker.pbs_rounding(self.sk, 0, &self.lut, out);
            } else {
                self.worker.pbs(self.sk, 0, &self.lut, out);
            }
            out
        }
    }

    /// Keyswitches `count` encryptions of 0 under the big key (with negligible noise of
    /// their own, uniform masks) to the small key as the runtime does ([`Worker::keyswitch`]'s
    /// batched keyswitch), and returns the decrypted errors (torus, `2^64` = 1): samples of
    /// the keyswitch's noise, which the model's `TfheParams::var_ks` predicts.
    pub fn keyswitch_noise(ck: &ClientKey, sk: &ServerKey, count: usize) -> Vec<f64> {
        let size = sk.lwe_size();
        let big = ck.big_key();
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut rng = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let mut data = vec![0u64; count * size];
        for c in data.chunks_exact_mut(size) {
            let mut ct = LweCiphertext::from_container(c, modulus());
            encrypt_lwe_ciphertext(&big, &mut ct, Plaintext(0), crate::fhe::gaussian(2f64.powi(-50)), &mut rng);
        }
        let n1 = sk.params.lwe_dimension + 1;
        let mut out = vec![0u64; count * n1];
        let mut digits = vec![];
        for (i, o) in data.chunks(KS_BATCH * size).zip(out.chunks_mut(KS_BATCH * n1)) {
            crate::fhe::schedule::keyswitch_batch(&sk.ksk, i, size, o, &mut digits);
        }
        out.chunks_exact(n1)
            .map(|c| {
                let phase = decrypt_lwe_ciphertext(&ck.small, &LweCiphertext::from_container(c, modulus())).0;
                phase as i64 as f64 * 2f64.powi(-64)
            })
            .collect()
    }

    /// Encrypts `count` zeros under the small key (negligible noise of their own, uniform
    /// masks) and returns their errors (torus) after the modulus switch to `2N` of the main
    /// blind rotation: first the plain switch, then the runtime's centered one
    /// ([`crate::fhe::schedule::center_modulus_switch`]). The model's `TfheParams::var_ms`
    /// predicts the centered one's variance, half the plain one's.
    pub fn modulus_switch_noise(ck: &ClientKey, sk: &ServerKey, count: usize) -> (Vec<f64>, Vec<f64>) {
        let n1 = sk.params.lwe_dimension + 1;
        let poly = PolynomialSize(sk.params.polynomial_size);
        let log = poly.to_blind_rotation_input_modulus_log();
        let two_n = 2 * sk.params.polynomial_size as u64;
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut rng = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let key = ck.small.as_ref();
        let error = |ct: &[u64]| {
            let msed = lwe_ciphertext_modulus_switch::<u64, u64, _>(LweCiphertext::from_container(ct, modulus()), log);
            let dot = msed.mask().zip(key).fold(0u64, |acc, (a, &s)| acc.wrapping_add(a.wrapping_mul(s)));
            let phase = msed.body().wrapping_sub(dot) % two_n;
            let signed = if phase >= two_n / 2 { phase as f64 - two_n as f64 } else { phase as f64 };
            signed / two_n as f64
        };
        let (mut plain, mut centered) = (vec![], vec![]);
        let mut ct = LweCiphertext::new(0u64, LweSize(n1), modulus());
        for _ in 0..count {
            encrypt_lwe_ciphertext(&ck.small, &mut ct, Plaintext(0), crate::fhe::gaussian(2f64.powi(-50)), &mut rng);
            plain.push(error(ct.as_ref()));
            let mut c = ct.as_ref().to_vec();
            crate::fhe::schedule::center_modulus_switch(&mut c, log.0);
            centered.push(error(&c));
        }
        (plain, centered)
    }

    /// Encrypts random `in_width`-bit values, bootstraps them through the identity table
    /// (output encoded on `out_bits`), and returns the decrypted errors (in units of Δ) of
    /// the bootstrap outputs, and of dot products with `weights` over consecutive outputs.
    pub fn noise_samples(
        ck: &ClientKey,
        sk: &ServerKey,
        in_width: u32,
        out_bits: u32,
        weights: &[i64],
        count: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let size = sk.lwe_size();
        let vals: Vec<i64> = (0..count).map(|i| ((i * 7 + 3) % (1 << in_width)) as i64).collect();
        let input = ck.encrypt(&vals, &[count], in_width);
        let table: Vec<i64> = (0..1i64 << in_width).collect();
        let lut = table_lut(sk, in_width, &table, out_bits);
        let mut out = vec![0u64; count * size];
        let progress = AtomicUsize::new(0);
        out.par_chunks_mut(size).enumerate().for_each_init(
            || Worker::new(sk, &progress),
            |w, (e, o)| w.bootstrap(sk, &input.data[e * size..(e + 1) * size], &lut, o),
        );
        let t = CtTensor { shape: vec![count], bits: out_bits, data: out };
        let errs = |t: &CtTensor, want: &[i64]| -> Vec<f64> {
            ck.phases(t)
                .iter()
                .zip(want)
                .map(|(ph, &v)| {
                    let d = ph - v as f64;
                    // centre modulo 2^(bits+1)
                    let m = (1u64 << (t.bits + 1)) as f64;
                    d - m * (d / m).round()
                })
                .collect()
        };
        let pbs = errs(&t, &vals);
        let k = weights.len();
        let groups = count / k;
        let mut dot = vec![0u64; groups * size];
        let mut want = vec![0i64; groups];
        for g in 0..groups {
            for (j, &w) in weights.iter().enumerate() {
                let e = g * k + j;
                want[g] += w * vals[e];
                for (a, &s) in dot[g * size..(g + 1) * size].iter_mut().zip(&t.data[e * size..(e + 1) * size]) {
                    *a = a.wrapping_add(s.wrapping_mul(w as u64));
                }
            }
        }
        let d = CtTensor { shape: vec![groups], bits: out_bits, data: dot };
        (pbs, errs(&d, &want))
    }
}
