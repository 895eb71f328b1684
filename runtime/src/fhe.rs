//! Encrypted execution of a circuit on tfhe-rs (`core_crypto`).
//!
//! Every circuit value is a tensor of LWE ciphertexts under the flattened GLWE key
//! (dimension `kN`), encoded as `v·Δ + e` with `Δ = 2^(63 - bits)` from the circuit's
//! [`EncodingPlan`]. Linear ops (integer convolutions and dense layers, clear additions,
//! sums, reshapes) work on the ciphertexts directly; every bootstrap is a keyswitch to the
//! small key (dimension `n`) followed by a programmable bootstrap back to the GLWE key.
//! A worker keyswitches up to 16 independent ciphertexts in one pass over the
//! keyswitch key (the elements of a table layer, or one step of exact rounding for a batch
//! of elements), so each key row serves the whole batch from cache.
//!
//! Inputs: with a rounding key, the client encrypts under its `k_r·N_r` prefix of the
//! flattened GLWE key ([`TfheParams::input_dimension`], with that prefix's 128-bit noise),
//! zero-padded to `kN`. Rounding outputs are on the same prefix, so the conv layers before
//! the first table keyswitch only the prefix (a keyswitch stops at the last non-zero mask
//! coefficient).
//!
//! * Table: one PBS per element, its lookup table generated from the circuit's table.
//! * Exact rounding of `k` bits: for `j = 0..k`, the value times `2^(P-j)` puts bit `j` on
//!   the top of the torus; with a quarter-torus offset a constant lookup table returns `+C`
//!   or `-C` (negacyclic), from which `b_j·2^j·Δ` is subtracted. What is left is
//!   `2^k·floor(v/2^k)`: the same value read with `k` fewer bits.
//! * Max pooling: `m ← m + relu(x - m)` over each window, each relu one PBS.
//!
//! Keys: [`ClientKey`] holds the secrets and never leaves the client; [`ServerKey`] holds
//! only the keyswitch and bootstrap keys, and [`evaluate`] takes nothing else.
//!
//! The evaluation key travels in seeded form ([`ClientKey::seeded_server_key`], tfhe-rs's
//! seeded keyswitch and bootstrap keys): every mask of both keys is drawn from a CSPRNG
//! seeded by a public seed, so only the bodies and two seeds travel ([`SeededServerKey`]:
//! `8kN·ℓ_ks` bytes of keyswitch key instead of `8kN·ℓ_ks(n+1)`, `8n·ℓ_pbs(k+1)N` of
//! bootstrap key instead of `8n·ℓ_pbs(k+1)²N`). The server regenerates the masks in
//! parallel and converts the bootstrap key to the Fourier domain on load
//! ([`SeededServerKey::decompress`]): keys of the same secrets, decompositions, noise and
//! security as [`ClientKey::server_key`]'s.
//!
//! Uploads: the client encrypts its input in seeded form ([`ClientKey::encrypt_seeded`],
//! tfhe-rs's seeded LWE encryption): a fresh ciphertext's mask is drawn from a CSPRNG
//! seeded by a public compression seed, so only the seed and one body per value travel
//! ([`SeededCtTensor`], 8 bytes per value instead of `8(kN+1)`). The server regenerates
//! the masks from the seed ([`SeededCtTensor::decompress`]) and evaluates the same
//! [`CtTensor`] as before. Same key, same noise: only the transport changes.

use fhec_ir::circuit::{COp, Circuit, Rounding, TableIndex, kernels};
use fhec_ir::params::{EncodingPlan, ResultForm, ResultKey, TfheParams};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_sub_scalar_mul_assign;
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;

/// A failure of encrypted evaluation (mismatched keys, circuit or ciphertexts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FheError(pub String);

/// The client's secret keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientKey {
    params: TfheParams,
    small: LweSecretKeyOwned<u64>,
    glwe: GlweSecretKeyOwned<u64>,
}

/// The evaluation key: what the server needs, and nothing secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct ServerKey {
    params: TfheParams,
    ksk: LweKeyswitchKeyOwned<u64>,
    bsk: FourierLweBootstrapKeyOwned,
    /// The rounding bootstrap key (`params.round_key`), if any.
    round_bsk: Option<FourierLweBootstrapKeyOwned>,
    /// The result keyswitch key (`params.result_ks()`: from the big key's tail to the input
    /// key), if any.
    result_ksk: Option<LweKeyswitchKeyOwned<u64>>,
}

/// The evaluation key in seeded (compressed) form: what a client sends.
///
/// Holds the bodies of tfhe-rs's `SeededLweKeyswitchKey` (one per level per coefficient of
/// the GLWE key: `kN·ℓ_ks`) and `SeededLweBootstrapKey` (one polynomial per row of every
/// GGSW: `n·ℓ_pbs·(k+1)·N`), those of the rounding bootstrap key and of the result
/// keyswitch key when the parameters have them, and the compression seeds their masks are
/// regenerated from. As for [`SeededCtTensor`], the seeds are plain 128-bit numbers (any
/// value is valid) and the decomposition parameters are those of `params`, so that every
/// length can be checked before tfhe-rs sees the data ([`SeededServerKey::check`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededServerKey {
    /// The parameters the key was made for (dimensions and decompositions).
    pub params: TfheParams,
    /// Compression seed of the keyswitch key's masks (public).
    pub ksk_seed: u128,
    /// Keyswitch key bodies: for each coefficient of the GLWE key, one per level.
    pub ksk_bodies: Vec<u64>,
    /// Compression seed of the bootstrap key's masks (public).
    pub bsk_seed: u128,
    /// Bootstrap key bodies: for each coefficient of the small key, for each level, `k + 1`
    /// body polynomials of `N` coefficients.
    pub bsk_bodies: Vec<u64>,
    /// Compression seed of the rounding bootstrap key's masks (public; unused without one).
    pub round_bsk_seed: u128,
    /// Rounding bootstrap key bodies (`n·ℓ_r·(k_r+1)·N_r`; empty without a rounding key).
    pub round_bsk_bodies: Vec<u64>,
    /// Compression seed of the result keyswitch key's masks (public; unused without one).
    pub result_ksk_seed: u128,
    /// Result keyswitch key bodies: for each of the `kN - d` tail coefficients of the big
    /// key, one per level (`TfheParams::result_ks`; empty without one).
    pub result_ksk_bodies: Vec<u64>,
}

impl std::fmt::Debug for SeededServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededServerKey")
            .field("params", &self.params)
            .field("ksk_seed", &self.ksk_seed)
            .field("ksk_bodies", &format_args!("[{} words]", self.ksk_bodies.len()))
            .field("bsk_seed", &self.bsk_seed)
            .field("bsk_bodies", &format_args!("[{} words]", self.bsk_bodies.len()))
            .field("round_bsk_seed", &self.round_bsk_seed)
            .field("round_bsk_bodies", &format_args!("[{} words]", self.round_bsk_bodies.len()))
            .field("result_ksk_seed", &self.result_ksk_seed)
            .field("result_ksk_bodies", &format_args!("[{} words]", self.result_ksk_bodies.len()))
            .finish()
    }
}

/// A tensor of ciphertexts with its encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CtTensor {
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Encoding bits (`Δ = 2^(63 - bits)`).
    pub bits: u32,
    /// `lwe_size` words per element, row-major.
    pub data: Vec<u64>,
}

/// A tensor of fresh ciphertexts in seeded (compressed) form: what a client uploads.
///
/// The masks are not stored: tfhe-rs regenerates them from `seed` (the compression seed of a
/// `SeededLweCiphertextList`), so a value costs one `u64` body. The seed is kept as a plain
/// 128-bit number rather than tfhe-rs's serialized `CompressionSeed`, which can also name a
/// XOF seed or a starting counter that tfhe-rs's decompression assumes valid (it panics
/// when its generator cannot fork): any 128-bit seed is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededCtTensor {
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Encoding bits (`Δ = 2^(63 - bits)`).
    pub bits: u32,
    /// Compression seed of the masks (public).
    pub seed: u128,
    /// One LWE body per element, row-major.
    pub bodies: Vec<u64>,
}

/// Number of elements of `shape`, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl SeededCtTensor {
    /// Regenerates the masks and returns the full ciphertexts under the GLWE key of `p`.
    ///
    /// Checks the body count against the shape and the encoding bits, so that no input
    /// reaches a panic in tfhe-rs; the work and memory are proportional to the body count
    /// times `kN + 1` (check the shape against what you expect first, as
    /// [`SeededCtTensor::decompress_input`] does).
    pub fn decompress(&self, p: &TfheParams) -> Result<CtTensor, FheError> {
        let n = numel(&self.shape).filter(|&n| n == self.bodies.len()).ok_or_else(|| {
            FheError(format!(
                "the seeded ciphertext holds {} bodies, not one per element of its shape {:?}",
                self.bodies.len(),
                self.shape
            ))
        })?;
        if self.bits == 0 || self.bits > 62 {
            return Err(FheError(format!("the seeded ciphertext's encoding ({} bits) is invalid", self.bits)));
        }
        let (d, big) = (p.input_dimension(), p.big_dimension());
        if d == 0 || d > big {
            return Err(FheError(format!("the parameters' input key ({d} of {big} coefficients) is invalid")));
        }
        let data = if n == 0 {
            // tfhe-rs cannot fork a generator into zero children.
            vec![]
        } else {
            let seeded = SeededLweCiphertextList::from_container(
                self.bodies.as_slice(),
                LweSize(d + 1),
                Seed(self.seed).into(),
                modulus(),
            );
            let mut out = LweCiphertextList::new(0u64, LweSize(d + 1), LweCiphertextCount(n), modulus());
            par_decompress_seeded_lwe_ciphertext_list::<_, _, _, DefaultRandomGenerator>(&mut out, &seeded);
            // Pad each to the big key (the input key is its prefix).
            let mut data = vec![0u64; n * (big + 1)];
            data.par_chunks_exact_mut(big + 1).zip(out.as_ref().par_chunks_exact(d + 1)).for_each(|(o, x)| {
                o[..d].copy_from_slice(&x[..d]);
                o[big] = x[d];
            });
            data
        };
        Ok(CtTensor { shape: self.shape.clone(), bits: self.bits, data })
    }

    /// [`SeededCtTensor::decompress`] of an encrypted input of circuit `c`: first checks that
    /// it holds the circuit's input (shape, value count and encoding bits of `plan`).
    pub fn decompress_input(&self, c: &Circuit, plan: &EncodingPlan, p: &TfheParams) -> Result<CtTensor, FheError> {
        let want = c.input_shape();
        let bits = plan.bits.first().copied().unwrap_or(0);
        if self.shape != want || self.bits != bits || self.bodies.len() != want.iter().product::<usize>() {
            return Err(FheError(format!(
                "holds {} values of shape {:?} on {} bits, but the circuit's input is {} values of shape {want:?} on {bits} bits",
                self.bodies.len(),
                self.shape,
                self.bits,
                want.iter().product::<usize>(),
            )));
        }
        self.decompress(p)
    }
}

/// A tensor of result ciphertexts with every coefficient rounded to its top `word_bits`
/// bits: what a server returns ([`ServerKey::compact`]). Each ciphertext is
/// first keyswitched to a key with fewer coefficients ([`ResultKey`]): the input key (the
/// big key's `d`-coefficient prefix, by the result keyswitch key: 2049 instead of 4097
/// words at `d = 2048, N = 4096`) or the small key; the rounding is a modulus switch to
/// `2^word_bits`. Both are public operations that only add noise;
/// [`fhec_ir::params::result_form`] picks the smallest form that keeps every output's
/// decryption failure below 2^-64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactCtTensor {
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Encoding bits (`Δ = 2^(63 - bits)`).
    pub bits: u32,
    /// The key the ciphertexts are under.
    pub key: ResultKey,
    /// Bits kept per coefficient (1 to 64).
    pub word_bits: u32,
    /// The coefficients, `word_bits` bits each, ciphertext after ciphertext, packed least
    /// significant bit first (the last byte padded with zeros).
    pub data: Vec<u8>,
}

impl CompactCtTensor {
    /// The form of this result.
    pub fn form(&self) -> ResultForm {
        ResultForm { key: self.key, word_bits: self.word_bits }
    }

    /// The coefficients back on 64-bit words (the dropped bits are zero).
    fn words(&self) -> Vec<u64> {
        let wb = self.word_bits.clamp(1, 64) as usize;
        // Up to 7 padding bits may read as extra words, fewer than one ciphertext's worth:
        // decryption's whole-ciphertext chunks ignore them.
        let count = self.data.len() * 8 / wb;
        let bit = |i: usize| (self.data[i / 8] >> (i % 8)) & 1;
        (0..count)
            .map(|c| {
                let top = (0..wb).fold(0u64, |acc, j| acc | (bit(c * wb + j) as u64) << j);
                if wb == 64 { top } else { top << (64 - wb) }
            })
            .collect()
    }

    /// Checks the word size, the encoding and the byte count against the shape and the
    /// dimension of the form under `p`.
    pub fn check(&self, p: &TfheParams) -> Result<(), FheError> {
        if !(1..=64).contains(&self.word_bits) || self.bits == 0 || self.bits > 62 {
            return Err(FheError(format!(
                "the result's encoding is invalid ({} bits per word, {} bits)",
                self.word_bits, self.bits
            )));
        }
        let Some(dim) = self.form().dimension(p) else {
            return Err(FheError(format!(
                "the result is under the input key, but these parameters have no result keyswitch ({})",
                p.summary()
            )));
        };
        let words = numel(&self.shape).and_then(|n| n.checked_mul(dim + 1));
        let bytes = words.and_then(|w| w.checked_mul(self.word_bits as usize)).map(|b| b.div_ceil(8));
        if bytes != Some(self.data.len()) {
            return Err(FheError(format!(
                "the result holds {} bytes, not {} bits per coefficient of {:?} ciphertexts of dimension {}",
                self.data.len(),
                self.word_bits,
                self.shape,
                dim
            )));
        }
        Ok(())
    }
}

fn modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

fn gaussian(std: f64) -> Gaussian<f64> {
    Gaussian::from_dispersion_parameter(StandardDev(std), 0.0)
}

fn delta(bits: u32) -> u64 {
    1u64 << (63 - bits)
}

impl ClientKey {
    /// Generates fresh secret keys for `params`.
    pub fn generate(params: &TfheParams) -> ClientKey {
        let mut seeder = new_seeder();
        let mut rng = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.as_mut().seed());
        let small = LweSecretKey::generate_new_binary(LweDimension(params.lwe_dimension), &mut rng);
        let glwe = GlweSecretKey::generate_new_binary(
            GlweDimension(params.glwe_dimension),
            PolynomialSize(params.polynomial_size),
            &mut rng,
        );
        ClientKey { params: *params, small, glwe }
    }

    /// The parameters of these keys.
    pub fn params(&self) -> &TfheParams {
        &self.params
    }

    /// Derives the evaluation key (keyswitch and bootstrap keys) to send to the server.
    pub fn server_key(&self) -> ServerKey {
        let p = &self.params;
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut rng = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let big = self.glwe.clone().into_lwe_secret_key();
        let ksk = allocate_and_generate_new_lwe_keyswitch_key(
            &big,
            &self.small,
            DecompositionBaseLog(p.ks_base_log as usize),
            DecompositionLevelCount(p.ks_level as usize),
            gaussian(p.lwe_noise_std),
            modulus(),
            &mut rng,
        );
        let mut bsk = |q: &TfheParams, glwe: &GlweSecretKeyOwned<u64>| {
            let bsk = par_allocate_and_generate_new_lwe_bootstrap_key(
                &self.small,
                glwe,
                DecompositionBaseLog(q.pbs_base_log as usize),
                DecompositionLevelCount(q.pbs_level as usize),
                gaussian(q.glwe_noise_std),
                modulus(),
                &mut rng,
            );
            to_fourier(&bsk)
        };
        let main = bsk(p, &self.glwe);
        let round_bsk = self.round_glwe().filter(|_| p.has_rounding_bsk()).map(|g| bsk(&p.rounding_bootstrap(), &g));
        let result_ksk = p.result_ks().map(|(base, level)| {
            allocate_and_generate_new_lwe_keyswitch_key(
                &self.tail_key(),
                &self.input_key(),
                DecompositionBaseLog(base as usize),
                DecompositionLevelCount(level as usize),
                gaussian(p.input_noise_std()),
                modulus(),
                &mut rng,
            )
        });
        ServerKey { params: *p, ksk, bsk: main, round_bsk, result_ksk }
    }

    /// The big key's coefficients after the input key's prefix (what the result keyswitch
    /// key switches away).
    fn tail_key(&self) -> LweSecretKeyOwned<u64> {
        let key = self.big_key().into_container();
        LweSecretKey::from_container(key[self.params.input_dimension().min(key.len())..].to_vec())
    }

    /// The rounding bootstrap's GLWE key: `k_r` polynomials of `N_r` coefficients, the first
    /// `k_r·N_r` coefficients of the flattened main GLWE key (so that its LWE ciphertexts are
    /// main-key ciphertexts once padded with zeros), or `None` without a rounding key.
    fn round_glwe(&self) -> Option<GlweSecretKeyOwned<u64>> {
        let r = self.params.round_key?;
        let prefix = self.glwe.as_ref()[..r.glwe_dimension * r.polynomial_size].to_vec();
        Some(GlweSecretKey::from_container(prefix, PolynomialSize(r.polynomial_size)))
    }

    /// Derives the evaluation key in seeded form (what [`crate::app::Client::evaluation_key`]
    /// sends): once decompressed, keys like [`ClientKey::server_key`]'s (same secret keys,
    /// decompositions and noise distributions), but their masks come from public seeds drawn
    /// from the same seeder, and only the bodies are kept.
    pub fn seeded_server_key(&self) -> SeededServerKey {
        let p = &self.params;
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let big = self.big_key();
        let ksk_seed = seeder.seed();
        let mut ksk = SeededLweKeyswitchKey::new(
            0u64,
            DecompositionBaseLog(p.ks_base_log as usize),
            DecompositionLevelCount(p.ks_level as usize),
            big.lwe_dimension(),
            self.small.lwe_dimension(),
            ksk_seed.into(),
            modulus(),
        );
        // The masks come from the compression seed; the noise from a fresh secret seed drawn
        // from `seeder`.
        generate_seeded_lwe_keyswitch_key(&big, &self.small, &mut ksk, gaussian(p.lwe_noise_std), seeder);
        let mut seeded_bsk = |q: &TfheParams, glwe: &GlweSecretKeyOwned<u64>| {
            let seed = seeder.seed();
            let mut bsk = SeededLweBootstrapKey::new(
                0u64,
                glwe.glwe_dimension().to_glwe_size(),
                glwe.polynomial_size(),
                DecompositionBaseLog(q.pbs_base_log as usize),
                DecompositionLevelCount(q.pbs_level as usize),
                self.small.lwe_dimension(),
                seed.into(),
                modulus(),
            );
            par_generate_seeded_lwe_bootstrap_key(&self.small, glwe, &mut bsk, gaussian(q.glwe_noise_std), seeder);
            (seed.0, bsk.into_container())
        };
        let (bsk_seed, bsk_bodies) = seeded_bsk(p, &self.glwe);
        let (round_bsk_seed, round_bsk_bodies) = self
            .round_glwe()
            .filter(|_| p.has_rounding_bsk())
            .map_or((0, vec![]), |g| seeded_bsk(&p.rounding_bootstrap(), &g));
        let (result_ksk_seed, result_ksk_bodies) = p.result_ks().map_or((0, vec![]), |(base, level)| {
            let (tail, input) = (self.tail_key(), self.input_key());
            let seed = seeder.seed();
            let mut ksk = SeededLweKeyswitchKey::new(
                0u64,
                DecompositionBaseLog(base as usize),
                DecompositionLevelCount(level as usize),
                tail.lwe_dimension(),
                input.lwe_dimension(),
                seed.into(),
                modulus(),
            );
            generate_seeded_lwe_keyswitch_key(&tail, &input, &mut ksk, gaussian(p.input_noise_std()), seeder);
            (seed.0, ksk.into_container())
        });
        SeededServerKey {
            params: *p,
            ksk_seed: ksk_seed.0,
            ksk_bodies: ksk.into_container(),
            bsk_seed,
            bsk_bodies,
            round_bsk_seed,
            round_bsk_bodies,
            result_ksk_seed,
            result_ksk_bodies,
        }
    }

    fn big_key(&self) -> LweSecretKeyOwned<u64> {
        self.glwe.clone().into_lwe_secret_key()
    }

    /// The key inputs are encrypted under: the first [`TfheParams::input_dimension`]
    /// coefficients of the big key.
    fn input_key(&self) -> LweSecretKeyOwned<u64> {
        let mut key = self.big_key().into_container();
        key.truncate(self.params.input_dimension());
        LweSecretKey::from_container(key)
    }

    /// Encrypts integers (row-major, of `shape`) encoded on `bits`, under the input key
    /// ([`TfheParams::input_dimension`], with its noise), padded with zeros to big-key
    /// ciphertexts.
    pub fn encrypt(&self, values: &[i64], shape: &[usize], bits: u32) -> CtTensor {
        let key = self.input_key();
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut rng = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let (d, size) = (key.lwe_dimension().0, self.params.big_dimension() + 1);
        let mut data = vec![0u64; values.len() * size];
        let mut ct = LweCiphertext::new(0u64, LweSize(d + 1), modulus());
        for (chunk, &v) in data.chunks_exact_mut(size).zip(values) {
            encrypt_lwe_ciphertext(
                &key,
                &mut ct,
                Plaintext((v as u64).wrapping_mul(delta(bits))),
                gaussian(self.params.input_noise_std()),
                &mut rng,
            );
            chunk[..d].copy_from_slice(&ct.as_ref()[..d]);
            chunk[size - 1] = ct.as_ref()[d];
        }
        CtTensor { shape: shape.to_vec(), bits, data }
    }

    /// Encrypts integers (row-major, of `shape`) encoded on `bits`, in seeded form: the same
    /// ciphertexts as [`ClientKey::encrypt`] (same key and noise) once decompressed, but
    /// only the bodies and the public seed of the masks are kept.
    pub fn encrypt_seeded(&self, values: &[i64], shape: &[usize], bits: u32) -> SeededCtTensor {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let seed = seeder.seed();
        if values.is_empty() {
            // tfhe-rs cannot fork a generator into zero children.
            return SeededCtTensor { shape: shape.to_vec(), bits, seed: seed.0, bodies: vec![] };
        }
        let key = self.input_key();
        let mut list = SeededLweCiphertextList::new(
            0u64,
            key.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seed.into(),
            modulus(),
        );
        let plaintexts = PlaintextList::from_container(
            values.iter().map(|&v| (v as u64).wrapping_mul(delta(bits))).collect::<Vec<_>>(),
        );
        // The masks come from the compression seed; the noise from a fresh secret seed drawn
        // from `seeder`.
        par_encrypt_seeded_lwe_ciphertext_list(
            &key,
            &mut list,
            &plaintexts,
            gaussian(self.params.input_noise_std()),
            seeder,
        );
        SeededCtTensor { shape: shape.to_vec(), bits, seed: seed.0, bodies: list.into_container() }
    }

    /// The circuit's input integers of an image (8-bit pixels).
    fn quantize_image(c: &Circuit, pixels: &[u8]) -> Result<Vec<i64>, FheError> {
        let n: usize = c.input_shape().iter().product();
        if pixels.len() != n {
            return Err(FheError(format!("the image has {} pixels, the circuit takes {n}", pixels.len())));
        }
        Ok(pixels.iter().map(|&p| c.input_quant.pixel_to_q[p as usize]).collect())
    }

    /// Encrypts an image (8-bit pixels) as the circuit's input.
    pub fn encrypt_image(&self, c: &Circuit, plan: &EncodingPlan, pixels: &[u8]) -> Result<CtTensor, FheError> {
        Ok(self.encrypt(&Self::quantize_image(c, pixels)?, c.input_shape(), plan.bits[0]))
    }

    /// Encrypts an image (8-bit pixels) as the circuit's input, in seeded form (what
    /// [`crate::app::Client::encrypt`] sends).
    pub fn encrypt_image_seeded(
        &self,
        c: &Circuit,
        plan: &EncodingPlan,
        pixels: &[u8],
    ) -> Result<SeededCtTensor, FheError> {
        Ok(self.encrypt_seeded(&Self::quantize_image(c, pixels)?, c.input_shape(), plan.bits[0]))
    }

    /// The noisy phases of a ciphertext tensor, in units of its `Δ` (for noise measurements).
    pub fn phases(&self, t: &CtTensor) -> Vec<f64> {
        let big = self.big_key();
        let size = big.lwe_dimension().to_lwe_size().0;
        t.data
            .chunks_exact(size)
            .map(|c| {
                let ct = LweCiphertext::from_container(c, modulus());
                let p = decrypt_lwe_ciphertext(&big, &ct).0;
                p as i64 as f64 / delta(t.bits) as f64
            })
            .collect()
    }

    /// Decrypts a ciphertext tensor to signed integers.
    pub fn decrypt(&self, t: &CtTensor) -> Vec<i64> {
        decrypt_words(&self.big_key(), &t.data, t.bits)
    }

    /// Decrypts a server's result ([`ServerKey::compact`]) to signed integers (with the key
    /// it is under), after checking its size against the parameters.
    pub fn decrypt_compact(&self, t: &CompactCtTensor) -> Result<Vec<i64>, FheError> {
        t.check(&self.params)?;
        let key = match t.key {
            ResultKey::Glwe => self.big_key(),
            ResultKey::Input => self.input_key(),
            ResultKey::Small => self.small.clone(),
        };
        Ok(decrypt_words(&key, &t.words(), t.bits))
    }
}

/// Decrypts LWE ciphertexts (`key` dimension + 1 words each) encoded on `bits` bits.
fn decrypt_words(key: &LweSecretKeyOwned<u64>, data: &[u64], bits: u32) -> Vec<i64> {
    let size = key.lwe_dimension().to_lwe_size().0;
    let shift = 63 - bits;
    data.chunks_exact(size)
        .map(|c| {
            let ct = LweCiphertext::from_container(c, modulus());
            let p = decrypt_lwe_ciphertext(key, &ct).0;
            (p.wrapping_add(1u64 << (shift - 1)) as i64) >> shift
        })
        .collect()
}

impl ServerKey {
    /// The parameters of this key.
    pub fn params(&self) -> &TfheParams {
        &self.params
    }

    /// Result ciphertexts `t` (under the GLWE key) in `form`: each keyswitched to the form's
    /// key, then every coefficient rounded to its top `word_bits` bits (clamped to 1..=64)
    /// and packed. See [`CompactCtTensor`]. Fails if the form's key needs a result keyswitch
    /// key these parameters do not have.
    pub fn compact(&self, t: &CtTensor, form: ResultForm) -> Result<CompactCtTensor, FheError> {
        let wb = form.word_bits.clamp(1, 64);
        let drop = 64 - wb;
        let round = |w: u64| if drop == 0 { w } else { w.wrapping_add(1u64 << (drop - 1)) >> drop };
        let size = self.lwe_size();
        let (mut data, mut acc, mut filled) = (vec![], 0u128, 0u32);
        let mut push = |words: &[u64]| {
            for &w in words {
                acc |= (round(w) as u128) << filled;
                filled += wb;
                while filled >= 8 {
                    data.push(acc as u8);
                    acc >>= 8;
                    filled -= 8;
                }
            }
        };
        let mut digits = vec![];
        match form.key {
            ResultKey::Glwe => push(&t.data),
            ResultKey::Small => {
                let n1 = self.params.lwe_dimension + 1;
                let mut small = vec![0u64; KS_BATCH * n1];
                for batch in t.data.chunks(KS_BATCH * size) {
                    keyswitch_batch(&self.ksk, batch, size, &mut small, &mut digits);
                    push(&small[..batch.len() / size * n1]);
                }
            }
            ResultKey::Input => {
                let Some(ksk) = &self.result_ksk else {
                    return Err(FheError("these parameters have no result keyswitch key".into()));
                };
                // Switch the tail (the coefficients after the prefix, and the body), then
                // add the prefix's mask coefficients back.
                let d = self.params.input_dimension();
                let tail = size - d;
                let mut tails = Vec::with_capacity(KS_BATCH * tail);
                let mut out = vec![0u64; KS_BATCH * (d + 1)];
                for batch in t.data.chunks(KS_BATCH * size) {
                    tails.clear();
                    for ct in batch.chunks_exact(size) {
                        tails.extend_from_slice(&ct[d..]);
                    }
                    keyswitch_batch(ksk, &tails, tail, &mut out, &mut digits);
                    for (o, ct) in out.chunks_exact_mut(d + 1).zip(batch.chunks_exact(size)) {
                        for (a, &x) in o[..d].iter_mut().zip(&ct[..d]) {
                            *a = a.wrapping_add(x);
                        }
                        push(o);
                    }
                }
            }
        }
        if filled > 0 {
            data.push(acc as u8);
        }
        Ok(CompactCtTensor { shape: t.shape.clone(), bits: t.bits, key: form.key, word_bits: wb, data })
    }

    /// Checks that the key matches `params` (dimensions and decompositions).
    pub fn check(&self, params: &TfheParams) -> Result<(), FheError> {
        let p = params;
        let bsk_ok = |bsk: &FourierLweBootstrapKeyOwned, q: &TfheParams| {
            bsk.input_lwe_dimension().0 == q.lwe_dimension
                && bsk.glwe_size().0 == q.glwe_dimension + 1
                && bsk.polynomial_size().0 == q.polynomial_size
                && bsk.decomposition_level_count().0 == q.pbs_level as usize
                && bsk.decomposition_base_log().0 == q.pbs_base_log as usize
                && bsk.as_view().data().len()
                    == q.lwe_dimension
                        * q.pbs_level as usize
                        * (q.glwe_dimension + 1)
                        * (q.glwe_dimension + 1)
                        * q.polynomial_size
                        / 2
        };
        let round_ok = match (&self.round_bsk, p.has_rounding_bsk()) {
            (None, false) => true,
            (Some(b), true) => bsk_ok(b, &p.rounding_bootstrap()),
            _ => false,
        };
        let ksk_ok = |ksk: &LweKeyswitchKeyOwned<u64>, input: usize, output: usize, base: u32, level: u32| {
            ksk.input_key_lwe_dimension().0 == input
                && ksk.output_key_lwe_dimension().0 == output
                && ksk.decomposition_level_count().0 == level as usize
                && ksk.decomposition_base_log().0 == base as usize
                && ksk.as_ref().len() == input * level as usize * (output + 1)
        };
        let result_ok = match (&self.result_ksk, p.result_ks()) {
            (None, None) => true,
            (Some(k), Some((base, level))) => {
                let d = p.input_dimension();
                ksk_ok(k, p.big_dimension() - d, d, base, level)
            }
            _ => false,
        };
        let ok = self.params == *p
            && ksk_ok(&self.ksk, p.big_dimension(), p.lwe_dimension, p.ks_base_log, p.ks_level)
            && bsk_ok(&self.bsk, p)
            && round_ok
            && result_ok;
        if ok { Ok(()) } else { Err(FheError("the evaluation key does not match the circuit's parameters".into())) }
    }

    fn lwe_size(&self) -> usize {
        self.params.big_dimension() + 1
    }
}

impl SeededServerKey {
    /// Number of keyswitch key bodies for `p` (`kN·ℓ_ks`), `None` on overflow.
    fn ksk_len(p: &TfheParams) -> Option<usize> {
        p.glwe_dimension.checked_mul(p.polynomial_size)?.checked_mul(p.ks_level as usize)
    }

    /// Number of result keyswitch key bodies for `p` (`(kN - d)·ℓ`, 0 without one; call
    /// after the rounding key's dimensions are checked).
    fn result_ksk_len(p: &TfheParams) -> usize {
        p.result_ks().map_or(0, |(_, level)| (p.big_dimension() - p.input_dimension()) * level as usize)
    }

    /// Number of bootstrap key bodies for `p` (`n·ℓ_pbs·(k+1)·N`), `None` on overflow.
    fn bsk_len(p: &TfheParams) -> Option<usize> {
        p.lwe_dimension
            .checked_mul(p.pbs_level as usize)?
            .checked_mul(p.glwe_dimension.checked_add(1)?)?
            .checked_mul(p.polynomial_size)
    }

    /// Checks that the key was made for `p` and that its body counts are those of `p`'s
    /// dimensions and decompositions (and that `p` is a parameter set tfhe-rs accepts), so
    /// that no key reaches a panic in tfhe-rs.
    pub fn check(&self, p: &TfheParams) -> Result<(), FheError> {
        if self.params != *p {
            return Err(FheError(
                "the seeded evaluation key was made for other TFHE parameters than this circuit's".into(),
            ));
        }
        let decomp_ok = |base: u32, level: u32| base > 0 && level > 0 && base as u64 * level as u64 <= 64;
        if p.lwe_dimension == 0
            || p.glwe_dimension == 0
            || p.polynomial_size < 2
            || !p.polynomial_size.is_power_of_two()
            || !decomp_ok(p.ks_base_log, p.ks_level)
            || !decomp_ok(p.pbs_base_log, p.pbs_level)
        {
            return Err(FheError(format!("the TFHE parameters are invalid ({})", p.summary())));
        }
        let (Some(ksk), Some(bsk)) = (Self::ksk_len(p), Self::bsk_len(p)) else {
            return Err(FheError("the TFHE parameters are invalid (the keys' sizes overflow)".into()));
        };
        if ksk != self.ksk_bodies.len() {
            return Err(FheError(format!(
                "the seeded evaluation key holds {} keyswitch key bodies, not {ksk} (kN = {} coefficients x {} levels)",
                self.ksk_bodies.len(),
                p.big_dimension(),
                p.ks_level
            )));
        }
        if bsk != self.bsk_bodies.len() {
            return Err(FheError(format!(
                "the seeded evaluation key holds {} bootstrap key bodies, not {bsk} (n = {} x {} levels x {} polynomials of N = {})",
                self.bsk_bodies.len(),
                p.lwe_dimension,
                p.pbs_level,
                p.glwe_dimension + 1,
                p.polynomial_size
            )));
        }
        let round = match p.round_key {
            None => 0,
            Some(r) => {
                let dim = r.glwe_dimension.checked_mul(r.polynomial_size);
                if r.glwe_dimension == 0
                    || r.polynomial_size < 2
                    || !r.polynomial_size.is_power_of_two()
                    || dim.is_none_or(|d| d > p.big_dimension())
                    || (r.pbs_level > 0 && !decomp_ok(r.pbs_base_log, r.pbs_level))
                {
                    return Err(FheError(format!("the TFHE parameters are invalid ({})", p.summary())));
                }
                if r.pbs_level == 0 {
                    0
                } else {
                    Self::bsk_len(&p.rounding_bootstrap())
                        .ok_or_else(|| FheError("the TFHE parameters are invalid (the keys' sizes overflow)".into()))?
                }
            }
        };
        if round != self.round_bsk_bodies.len() {
            return Err(FheError(format!(
                "the seeded evaluation key holds {} rounding bootstrap key bodies, not {round}",
                self.round_bsk_bodies.len()
            )));
        }
        let result = Self::result_ksk_len(p);
        if result != self.result_ksk_bodies.len() {
            return Err(FheError(format!(
                "the seeded evaluation key holds {} result keyswitch key bodies, not {result}",
                self.result_ksk_bodies.len()
            )));
        }
        Ok(())
    }

    /// The parameters of this key.
    pub fn params(&self) -> &TfheParams {
        &self.params
    }

    /// Regenerates the masks of both keys (in parallel) and converts the bootstrap key to the
    /// Fourier domain: the [`ServerKey`] the server evaluates with. Checks the key first
    /// ([`SeededServerKey::check`] against its own parameters); the bodies are freed as soon
    /// as they are decompressed, to bound the memory peak.
    pub fn decompress(self) -> Result<ServerKey, FheError> {
        let p = self.params;
        self.check(&p)?;
        let SeededServerKey {
            ksk_seed,
            ksk_bodies,
            bsk_seed,
            bsk_bodies,
            round_bsk_seed,
            round_bsk_bodies,
            result_ksk_seed,
            result_ksk_bodies,
            ..
        } = self;
        let ksk = SeededLweKeyswitchKey::from_container(
            ksk_bodies,
            DecompositionBaseLog(p.ks_base_log as usize),
            DecompositionLevelCount(p.ks_level as usize),
            LweSize(p.lwe_dimension + 1),
            Seed(ksk_seed).into(),
            modulus(),
        )
        .par_decompress_into_lwe_keyswitch_key();
        let fourier = |bodies: Vec<u64>, seed: u128, q: &TfheParams| {
            let bsk = SeededLweBootstrapKey::from_container(
                bodies,
                GlweSize(q.glwe_dimension + 1),
                PolynomialSize(q.polynomial_size),
                DecompositionBaseLog(q.pbs_base_log as usize),
                DecompositionLevelCount(q.pbs_level as usize),
                Seed(seed).into(),
                modulus(),
            )
            .par_decompress_into_lwe_bootstrap_key();
            to_fourier(&bsk)
        };
        let bsk = fourier(bsk_bodies, bsk_seed, &p);
        let round_bsk =
            p.has_rounding_bsk().then(|| fourier(round_bsk_bodies, round_bsk_seed, &p.rounding_bootstrap()));
        let result_ksk = p.result_ks().map(|(base, level)| {
            SeededLweKeyswitchKey::from_container(
                result_ksk_bodies,
                DecompositionBaseLog(base as usize),
                DecompositionLevelCount(level as usize),
                LweSize(p.input_dimension() + 1),
                Seed(result_ksk_seed).into(),
                modulus(),
            )
            .par_decompress_into_lwe_keyswitch_key()
        });
        let sk = ServerKey { params: p, ksk, bsk, round_bsk, result_ksk };
        sk.check(&p)?;
        Ok(sk)
    }
}

/// A bootstrap key in the Fourier domain, as the bootstraps use it.
fn to_fourier(bsk: &LweBootstrapKeyOwned<u64>) -> FourierLweBootstrapKeyOwned {
    let mut f = FourierLweBootstrapKey::new(
        bsk.input_lwe_dimension(),
        bsk.glwe_size(),
        bsk.polynomial_size(),
        bsk.decomposition_base_log(),
        bsk.decomposition_level_count(),
    );
    par_convert_standard_lwe_bootstrap_key_to_fourier(bsk, &mut f);
    f
}

/// Multiplies every ciphertext by `2^j` to move from `from` encoding bits to `to`.
fn rescale(t: &CtTensor, to: u32) -> Result<CtTensor, FheError> {
    if to > t.bits {
        return Err(FheError(format!("cannot move a value from {} to {to} encoding bits", t.bits)));
    }
    let f = 1u64 << (t.bits - to);
    Ok(CtTensor { shape: t.shape.clone(), bits: to, data: t.data.iter().map(|&x| x.wrapping_mul(f)).collect() })
}

/// A bootstrap engine per worker thread.
/// Most ciphertexts one keyswitch pass handles (see [`keyswitch_batch`]).
const KS_BATCH: usize = 16;

/// Ciphertexts per keyswitch batch for a layer of `count` independent bootstraps: up to
/// [`KS_BATCH`], but small enough that every thread gets several batches.
fn ks_batch(count: usize) -> usize {
    (count / (4 * rayon::current_num_threads().max(1))).clamp(1, KS_BATCH)
}

/// Number of mask coefficients up to the last non-zero one. Ciphertexts under a prefix of
/// the big key (fresh inputs, rounding bootstrap outputs, and any linear combination of
/// them) end in zeros, which contribute nothing to a keyswitch.
fn live_mask(ct: &[u64]) -> usize {
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
fn keyswitch_batch(
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

/// Bootstraps the ciphertexts of `small` (`bsk`'s input dimension + 1 words each), the
/// `i`-th with `lut(i)`, into `out` (its output dimension + 1 words each) in one batched
/// blind rotation; `accs` holds the accumulators (at least one GLWE ciphertext per input).
fn batch_bootstrap<'l>(
    bsk: &FourierLweBootstrapKeyOwned,
    fft: &Fft,
    buffers: &mut ComputationBuffers,
    small: &[u64],
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
    let accs = GlweCiphertextList::from_container(&accs[..count * words], glwe, poly, modulus());
    let input = LweCiphertextList::from_container(small, LweSize(n1), modulus());
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

/// Writes a rounding bootstrap's output `src` (under the `k_r·N_r` prefix of the big key) to
/// `out` as a big-key ciphertext: the mask padded with zeros, then the body.
fn pad_to_big_key(src: &[u64], out: &mut [u64]) {
    let d = src.len() - 1;
    let (mask, body) = out.split_at_mut(out.len() - 1);
    mask[..d].copy_from_slice(&src[..d]);
    mask[d..].fill(0);
    body[0] = src[d];
}

struct Worker<'p> {
    fft: Fft,
    /// With a rounding key: its FFT and a bootstrap output of its dimension (`k_r·N_r`).
    round: Option<(Fft, LweCiphertextOwned<u64>)>,
    buffers: ComputationBuffers,
    /// Keyswitched ciphertexts (`n + 1` words each, up to [`KS_BATCH`]).
    small: Vec<u64>,
    digits: Vec<u64>,
    /// Accumulators of a batched bootstrap (one table per ciphertext, up to [`KS_BATCH`]).
    accs: Vec<u64>,
    /// Outputs of a batched rounding bootstrap (`k_r·N_r + 1` words each, up to [`KS_BATCH`]).
    round_outs: Vec<u64>,
    progress: &'p AtomicUsize,
}

impl<'p> Worker<'p> {
    fn new(sk: &ServerKey, progress: &'p AtomicUsize) -> Worker<'p> {
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
        Worker { fft, round, buffers, small, digits: vec![], accs, round_outs, progress }
    }

    /// PBS of the first `count` keyswitched ciphertexts, the `i`-th with `lut(i)`, written to
    /// `outs` (big key, `kN + 1` words each): one batched blind rotation, which streams each
    /// GGSW of the bootstrap key from memory once for the whole batch instead of once per
    /// ciphertext (about 1.2x faster per bootstrap here at batches of 8 to 16). Each output
    /// is exactly what [`Worker::pbs`] computes.
    fn pbs_batch<'l>(
        &mut self,
        sk: &ServerKey,
        count: usize,
        lut: impl Fn(usize) -> &'l GlweCiphertextOwned<u64>,
        outs: &mut [u64],
    ) {
        let Worker { fft, buffers, small, accs, progress, .. } = self;
        batch_bootstrap(&sk.bsk, fft, buffers, &small[..count * (sk.params.lwe_dimension + 1)], accs, lut, outs);
        progress.fetch_add(count, Ordering::Relaxed);
    }

    /// Rounding bootstraps of the first `count` keyswitched ciphertexts with `lut`, written to
    /// `outs` (big key, `kN + 1` words each), batched as in [`Worker::pbs_batch`]; with a
    /// rounding key each output is its bootstrap output padded with zeros, as in
    /// [`Worker::pbs_rounding`].
    fn pbs_rounding_batch(&mut self, sk: &ServerKey, count: usize, lut: &GlweCiphertextOwned<u64>, outs: &mut [u64]) {
        let (Some(bsk), Some((fft, _))) = (&sk.round_bsk, self.round.as_ref()) else {
            return self.pbs_batch(sk, count, |_| lut, outs);
        };
        let (n1, size) = (sk.params.lwe_dimension + 1, sk.lwe_size());
        let r1 = bsk.output_lwe_dimension().0 + 1;
        let Worker { buffers, small, accs, round_outs, progress, .. } = self;
        let round_outs = &mut round_outs[..count * r1];
        batch_bootstrap(bsk, fft, buffers, &small[..count * n1], accs, |_| lut, round_outs);
        for (o, src) in outs[..count * size].chunks_exact_mut(size).zip(round_outs.chunks_exact(r1)) {
            pad_to_big_key(src, o);
        }
        progress.fetch_add(count, Ordering::Relaxed);
    }

    /// Keyswitches the ciphertexts of `inputs` (`size` words each, at most [`KS_BATCH`]) to
    /// the small key; [`Worker::pbs`] and [`Worker::pbs_rounding`] then bootstrap them.
    fn keyswitch(&mut self, sk: &ServerKey, inputs: &[u64], size: usize) {
        debug_assert!(inputs.len() / size <= KS_BATCH);
        keyswitch_batch(&sk.ksk, inputs, size, &mut self.small, &mut self.digits);
    }

    /// PBS of the `i`-th keyswitched ciphertext with `lut`, written to `out` (big key).
    fn pbs(&mut self, sk: &ServerKey, i: usize, lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        let n1 = sk.params.lwe_dimension + 1;
        let Worker { fft, buffers, small, progress, .. } = self;
        let input = LweCiphertext::from_container(&small[i * n1..(i + 1) * n1], modulus());
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
    /// rounding key's shape, [`round_lut_shape`]), written to `out` (big key): with a
    /// rounding key, its output (dimension `k_r·N_r`, a prefix of the big key) padded with
    /// zeros; without one, [`Worker::pbs`].
    fn pbs_rounding(&mut self, sk: &ServerKey, i: usize, lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        let n1 = sk.params.lwe_dimension + 1;
        let Worker { round, buffers, small, progress, .. } = self;
        let (Some(bsk), Some((fft, r_out))) = (&sk.round_bsk, round.as_mut()) else {
            return self.pbs(sk, i, lut, out);
        };
        let input = LweCiphertext::from_container(&small[i * n1..(i + 1) * n1], modulus());
        programmable_bootstrap_lwe_ciphertext_mem_optimized(&input, r_out, lut, bsk, fft.as_view(), buffers.stack());
        pad_to_big_key(r_out.as_ref(), out);
        progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Keyswitch + PBS of `input` (big key) with `lut`, written to `out` (big key).
    fn bootstrap(&mut self, sk: &ServerKey, input: &[u64], lut: &GlweCiphertextOwned<u64>, out: &mut [u64]) {
        self.keyswitch(sk, input, input.len());
        self.pbs(sk, 0, lut, out);
    }
}

fn table_lut(sk: &ServerKey, in_width: u32, table: &[i64], out_bits: u32) -> GlweCiphertextOwned<u64> {
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

/// One chunk of exact rounding (see the `COp::Round` arm of [`evaluate_with_progress`]).
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
fn sign_lut(sk: &ServerKey, c: u64) -> GlweCiphertextOwned<u64> {
    let (n, size) = round_lut_shape(sk);
    let body = PlaintextList::new(c, PlaintextCount(n.0));
    allocate_and_trivially_encrypt_new_glwe_ciphertext(size, &body, modulus())
}

/// Polynomial size and GLWE size of the rounding bootstrap's tables (the main key's
/// without a rounding key).
fn round_lut_shape(sk: &ServerKey) -> (PolynomialSize, GlweSize) {
    let r = if sk.params.has_rounding_bsk() { sk.params.rounding_bootstrap() } else { sk.params };
    (PolynomialSize(r.polynomial_size), GlweSize(r.glwe_dimension + 1))
}

/// Evaluates the circuit on an encrypted input with the server key only.
pub fn evaluate(sk: &ServerKey, c: &Circuit, plan: &EncodingPlan, input: &CtTensor) -> Result<CtTensor, FheError> {
    evaluate_with_progress(sk, c, plan, input, &AtomicUsize::new(0))
}

/// [`evaluate`], adding one to `progress` after every bootstrap (for progress bars; the
/// total is [`Circuit::bootstrap_stats`]`.total()`).
pub fn evaluate_with_progress(
    sk: &ServerKey,
    c: &Circuit,
    plan: &EncodingPlan,
    input: &CtTensor,
    progress: &AtomicUsize,
) -> Result<CtTensor, FheError> {
    let size = sk.lwe_size();
    if input.shape != c.input_shape()
        || input.bits != plan.bits[0]
        || input.data.len() != input.shape.iter().product::<usize>() * size
    {
        return Err(FheError(format!(
            "the encrypted input ({:?}, {} bits, {} words) does not match the circuit's input ({:?}, {} bits, {} words per value)",
            input.shape,
            input.bits,
            input.data.len(),
            c.input_shape(),
            plan.bits[0],
            size
        )));
    }
    if plan.bits.len() != c.nodes.len() {
        return Err(FheError("the encoding plan does not match the circuit".into()));
    }
    // A bootstrap reads at most log2(N) bits (tables with N; the rest of a rounding chunk
    // with the rounding bootstrap's N_r).
    let rounds = c.has_exact_rounding();
    if rounds && sk.params.round_key.is_some() && !sk.params.has_rounding_bsk() {
        return Err(FheError(format!(
            "the circuit rounds exactly but the parameters have no rounding bootstrap key ({})",
            sk.params.summary()
        )));
    }
    let round_n = sk.params.rounding_bootstrap().polynomial_size;
    for (widest, n) in [
        (c.max_table_width(), sk.params.polynomial_size),
        (if rounds { c.round_chunk.saturating_sub(1) } else { 0 }, round_n),
    ] {
        if widest > n.trailing_zeros() {
            return Err(FheError(format!(
                "the circuit reads {widest} bits in one bootstrap, more than N = {n} allows"
            )));
        }
    }
    let mut vals: Vec<Option<CtTensor>> = vec![None; c.nodes.len()];
    vals[0] = Some(input.clone());
    // Free values no longer used, to bound memory.
    let mut last_use = vec![0usize; c.nodes.len()];
    for (id, n) in c.nodes.iter().enumerate() {
        for &i in &n.inputs {
            last_use[i] = id;
        }
    }
    last_use[c.output] = usize::MAX;
    for id in 1..c.nodes.len() {
        let node = &c.nodes[id];
        let x = |k: usize| vals[node.inputs[k]].as_ref().expect("inputs precede");
        let bits = plan.bits[id];
        let numel: usize = node.shape.iter().product();
        let out = match &node.op {
            COp::Input { .. } => unreachable!("node 0"),
            COp::Conv { weight, strides, pads, dilations, groups } => {
                let x = rescale(x(0), bits)?;
                conv(&x, weight, *strides, *pads, *dilations, *groups, &node.shape, size)
            }
            COp::Dense { weight } => {
                let x = rescale(x(0), bits)?;
                let inner = weight.ncols();
                let mut data = vec![0u64; numel * size];
                data.par_chunks_mut(size).enumerate().for_each(|(e, acc)| {
                    let (row, o) = (e / weight.nrows(), e % weight.nrows());
                    for k in 0..inner {
                        let w = weight[[o, k]] as u64;
                        if w != 0 {
                            let src = &x.data[(row * inner + k) * size..(row * inner + k + 1) * size];
                            for (a, &s) in acc.iter_mut().zip(src) {
                                *a = a.wrapping_add(s.wrapping_mul(w));
                            }
                        }
                    }
                });
                CtTensor { shape: node.shape.clone(), bits, data }
            }
            COp::AddClear(k) => {
                let mut t = rescale(x(0), bits)?;
                let kb =
                    k.broadcast(ndarray::IxDyn(&node.shape)).ok_or_else(|| FheError("bad clear constant".into()))?;
                let d = delta(bits);
                for (chunk, &v) in t.data.chunks_exact_mut(size).zip(kb.iter()) {
                    let b = chunk.last_mut().expect("body");
                    *b = b.wrapping_add((v as u64).wrapping_mul(d));
                }
                t
            }
            COp::Add | COp::Sub => {
                let (a, b) = (rescale(x(0), bits)?, rescale(x(1), bits)?);
                let sub = matches!(node.op, COp::Sub);
                let data = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .map(|(&p, &q)| if sub { p.wrapping_sub(q) } else { p.wrapping_add(q) })
                    .collect();
                CtTensor { shape: node.shape.clone(), bits, data }
            }
            COp::SumPool(pool) => {
                let x = rescale(x(0), bits)?;
                pool_sum(&x, pool, &node.shape, size)
            }
            COp::Reshape => {
                let t = rescale(x(0), bits)?;
                CtTensor { shape: node.shape.clone(), ..t }
            }
            COp::Transpose { perm } => {
                let t = rescale(x(0), bits)?;
                let idx = ndarray::ArrayD::from_shape_vec(
                    ndarray::IxDyn(&t.shape),
                    (0..t.shape.iter().product::<usize>()).collect::<Vec<usize>>(),
                )
                .map_err(|e| FheError(e.to_string()))?;
                let order: Vec<usize> = idx.permuted_axes(ndarray::IxDyn(perm)).iter().copied().collect();
                let mut data = Vec::with_capacity(t.data.len());
                for e in order {
                    data.extend_from_slice(&t.data[e * size..(e + 1) * size]);
                }
                CtTensor { shape: node.shape.clone(), bits, data }
            }
            COp::Table { in_width, index, tables } => {
                let xin = rescale(x(0), *in_width)?;
                let luts: Vec<GlweCiphertextOwned<u64>> =
                    tables.iter().map(|t| table_lut(sk, *in_width, t, bits)).collect();
                let shape = &node.shape;
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
                    },
                );
                CtTensor { shape: node.shape.clone(), bits, data }
            }
            COp::Round { shift, mode: Rounding::Approximate } => {
                // No bootstrap: the input, moved to `bits + shift` encoding bits, is viewed as
                // the rounded value on `bits` bits with the removed bits as a fraction. A table
                // reads the step its phase lies in (steps centred on integers), so subtracting
                // (2^(shift-1) - 1/2)·Δ puts the step boundaries half a unit below the
                // multiples of 2^shift: an exact read is floor(v / 2^shift), and noise moves it
                // one step only near a boundary.
                let mut t = rescale(x(0), bits + shift)?;
                let unit = delta(bits + shift);
                let c = (unit << (shift - 1)).wrapping_sub(unit >> 1);
                for chunk in t.data.chunks_exact_mut(size) {
                    let b = chunk.last_mut().expect("body");
                    *b = b.wrapping_sub(c);
                }
                CtTensor { shape: node.shape.clone(), bits, data: t.data }
            }
            COp::Round { shift, mode: Rounding::Exact } => {
                // Chunks from the bottom (Circuit::round_chunks): a k-bit chunk at bit j is
                // moved to the top k bits of the torus (times 2^(P-j-k+1)); a sign read
                // removes its top bit b (acc -= b·2^(j+k-1)·Δ), then for k > 1 a (k-1)-bit
                // table reads the rest r (top bit now zero) and acc -= r·2^j·Δ.
                let xin = x(0);
                let p_bits = xin.bits;
                let delta_p = delta(p_bits);
                let mut steps: Vec<RoundStep> = vec![];
                let mut j = 0u32;
                for k in c.round_chunks(*shift) {
                    let cst = 1u64 << (62 - p_bits + j + k - 1);
                    let rest = (k > 1).then(|| {
                        let (poly, glwe) = round_lut_shape(sk);
                        generate_programmable_bootstrap_glwe_lut(
                            poly,
                            glwe,
                            1usize << (k - 1),
                            modulus(),
                            1,
                            |r: u64| (r << j).wrapping_mul(delta_p),
                        )
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
                data.par_chunks_mut(batch * size).for_each_init(
                    || (Worker::new(sk, progress), vec![0u64; batch * size], vec![0u64; batch * size]),
                    |(w, tmp, outs), accs| {
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
                        for s in &steps {
                            scaled(tmp, accs, s.f, s.offset);
                            w.keyswitch(sk, tmp, size);
                            w.pbs_rounding_batch(sk, count, &s.sign, outs);
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
                                for (acc, out) in accs.chunks_exact_mut(size).zip(outs.chunks_exact(size)) {
                                    for (a, &o) in acc.iter_mut().zip(out) {
                                        *a = a.wrapping_sub(o);
                                    }
                                }
                            }
                        }
                    },
                );
                CtTensor { shape: node.shape.clone(), bits: p_bits - shift, data }
            }
            COp::MaxPool { pool, diff_offset, diff_width, shift } => {
                let xin = x(0);
                let a_bits = xin.bits;
                let relu: Vec<i64> =
                    (0..1i64 << diff_width).map(|q| kernels::approx_max_step(q, *diff_offset, *shift)).collect();
                let lut = table_lut(sk, *diff_width, &relu, a_bits);
                let cmp = Comparison { offset: *diff_offset, width: *diff_width, shift: *shift, lut: &lut };
                max_pool(sk, xin, pool, &node.shape, &cmp, size, progress)
            }
        };
        if out.bits != bits {
            return Err(FheError(format!("%{id}: produced {} encoding bits, the plan says {bits}", out.bits)));
        }
        vals[id] = Some(out);
        for &i in &node.inputs {
            if last_use[i] == id {
                vals[i] = None;
            }
        }
    }
    Ok(vals[c.output].take().expect("output computed"))
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &CtTensor,
    weight: &ndarray::Array4<i64>,
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    groups: usize,
    out_shape: &[usize],
    size: usize,
) -> CtTensor {
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

fn pool_sum(x: &CtTensor, pool: &fhec_ir::nn::Pool, out_shape: &[usize], size: usize) -> CtTensor {
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

/// The pairwise comparison of a max pooling (see `COp::MaxPool`).
struct Comparison<'a> {
    /// Offset that makes the differences non-negative.
    offset: i64,
    /// Bits the comparison's table reads.
    width: u32,
    /// Low bits of the difference it does not read (approximate comparison).
    shift: u32,
    /// The table: what to add to the running maximum for each step.
    lut: &'a GlweCiphertextOwned<u64>,
}

fn max_pool(
    sk: &ServerKey,
    x: &CtTensor,
    pool: &fhec_ir::nn::Pool,
    out_shape: &[usize],
    cmp: &Comparison,
    size: usize,
    progress: &AtomicUsize,
) -> CtTensor {
    let wins = kernels::window_indices(&x.shape, pool);
    let (width, shift, lut) = (cmp.width, cmp.shift, cmp.lut);
    // The difference moves to `width + shift` encoding bits; an approximate comparison then
    // reads its top `width` bits, with the step boundaries half a unit below the multiples
    // of 2^shift (as an approximate rounding's reads: see the `COp::Round` arm).
    let scale = 1u64 << (x.bits - width - shift);
    let off = (cmp.offset as u64).wrapping_mul(delta(x.bits));
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
    data.par_chunks_mut(batch * size).zip(wins.par_chunks(batch)).for_each_init(
        || (Worker::new(sk, progress), vec![0u64; batch * size], vec![0u64; batch * size], Vec::with_capacity(batch)),
        |(w, diffs, outs, live), (ms, wins)| {
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
    use super::*;

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

/// Framed, versioned, checksummed files for keys and ciphertexts.
///
/// Layout: magic `FHECKEY\0`, `u32` kind, `u32` version, `u64` fingerprint of the
/// parameters, `u64` payload length, the bincode payload, `u64` FNV-1a checksum. Loading
/// checks each field, so a key of other parameters, a ciphertext given as a key, or a
/// truncated or corrupt file is an error that says which.
///
/// A seeded encrypted image ([`Kind::SeededImage`](files::Kind::SeededImage)) is
/// [`SEEDED_OVERHEAD`](files::SEEDED_OVERHEAD) bytes plus 8
/// per dimension of its shape and 8 per value ([`crate::encrypted_image_bytes`]); a seeded
/// evaluation key ([`Kind::SeededServerKey`](files::Kind::SeededServerKey)) is
/// [`SEEDED_KEY_OVERHEAD`](files::SEEDED_KEY_OVERHEAD) bytes plus 8 per body
/// ([`crate::evaluation_key_bytes`]).
pub mod files {
    use bincode::Options;
    use fhec_ir::params::TfheParams;

    use super::{ClientKey, CompactCtTensor, CtTensor, FheError, SeededCtTensor, SeededServerKey, ServerKey, numel};

    const MAGIC: &[u8; 8] = b"FHECKEY\0";
    const VERSION: u32 = 4;
    /// Largest payload accepted (8 GiB).
    const MAX: u64 = 8 << 30;

    /// What a file holds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind {
        /// Secret client key.
        ClientKey = 1,
        /// Evaluation key (keyswitch key and Fourier bootstrap key, in full).
        ServerKey = 2,
        /// Encrypted tensor (full LWE ciphertexts).
        Ciphertext = 3,
        /// Encrypted tensor in seeded form (one body per value and the masks' seed): what a
        /// client uploads.
        SeededImage = 4,
        /// Encrypted result with truncated coefficients ([`CompactCtTensor`]): what a server
        /// returns.
        CompactResult = 5,
        /// Evaluation key in seeded form (the keys' bodies and their masks' seeds): what a
        /// client sends.
        SeededServerKey = 6,
    }

    const NAMES: [&str; 7] = [
        "?",
        "a client key",
        "a server key",
        "a ciphertext",
        "a seeded encrypted image",
        "an encrypted result",
        "a seeded server key",
    ];

    /// Bytes of a framed seeded tensor besides 8 per shape dimension and 8 per value: the
    /// 40-byte frame, and in the payload the shape's and the bodies' lengths (8 each), the
    /// encoding bits (4) and the seed (16).
    pub const SEEDED_OVERHEAD: usize = 40 + 8 + 4 + 16 + 8;

    /// Bytes of a framed seeded evaluation key besides 8 per body, for parameters without a
    /// rounding key: the 40-byte frame, and in the payload the parameters (56: three
    /// dimensions and two deviations of 8 bytes, four decomposition numbers of 4; then 1 for
    /// the absent rounding key), and for each of the four keys (keyswitch, bootstrap,
    /// rounding bootstrap, result keyswitch) its seed (16) and its bodies' length (8). A
    /// rounding key adds [`ROUND_KEY_PARAMS_BYTES`].
    pub const SEEDED_KEY_OVERHEAD: usize = 40 + 57 + 4 * (16 + 8);

    /// Bytes of a rounding key's parameters (two dimensions and a deviation of 8 bytes, two
    /// decomposition numbers of 4).
    pub const ROUND_KEY_PARAMS_BYTES: usize = 32;

    /// The kind of a framed file, if it is one (without checking anything else).
    pub fn kind_of(b: &[u8]) -> Option<Kind> {
        if !b.starts_with(MAGIC) || b.len() < 12 {
            return None;
        }
        match u32::from_le_bytes(b[8..12].try_into().expect("4")) {
            1 => Some(Kind::ClientKey),
            2 => Some(Kind::ServerKey),
            3 => Some(Kind::Ciphertext),
            4 => Some(Kind::SeededImage),
            5 => Some(Kind::CompactResult),
            6 => Some(Kind::SeededServerKey),
            _ => None,
        }
    }

    fn fnv(b: &[u8]) -> u64 {
        b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
    }

    /// Fingerprint of a parameter set.
    pub fn fingerprint(p: &TfheParams) -> u64 {
        fnv(&bincode::serialize(p).expect("params serialize"))
    }

    fn codec() -> impl Options {
        bincode::DefaultOptions::new().with_fixint_encoding().with_limit(MAX)
    }

    fn frame(kind: Kind, p: &TfheParams, payload: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 40);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(kind as u32).to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fingerprint(p).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&fnv(&payload).to_le_bytes());
        out
    }

    fn unframe<'a>(b: &'a [u8], kind: Kind, p: &TfheParams) -> Result<&'a [u8], FheError> {
        let e = |m: String| Err(FheError(m));
        if !b.starts_with(MAGIC) || b.len() < 32 {
            return e("not an fhec key or ciphertext file".into());
        }
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let long = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let k = word(8);
        let other_params = long(16) != fingerprint(p);
        if k != kind as u32 {
            return e(format!(
                "the file holds {} but {} is expected{}",
                NAMES.get(k as usize).unwrap_or(&"?"),
                NAMES[kind as usize],
                if other_params { " (and it was made for other TFHE parameters than this circuit's)" } else { "" }
            ));
        }
        if word(12) != VERSION {
            return e(format!("file format version {} is not supported (expected {VERSION})", word(12)));
        }
        if other_params {
            return e("the file was made for other TFHE parameters than this circuit's".into());
        }
        let len = long(24);
        if len > MAX || b.len() as u64 != 32 + len + 8 {
            return e(format!(
                "the file is truncated or has trailing data ({} bytes for a {len}-byte payload)",
                b.len()
            ));
        }
        let payload = &b[32..32 + len as usize];
        if fnv(payload).to_le_bytes() != b[32 + len as usize..] {
            return e("the file is corrupt (checksum mismatch)".into());
        }
        Ok(payload)
    }

    impl ClientKey {
        /// Serializes the secret key.
        pub fn to_bytes(&self) -> Vec<u8> {
            frame(Kind::ClientKey, &self.params, codec().serialize(self).expect("serialize"))
        }

        /// Loads a secret key made for `p`.
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<ClientKey, FheError> {
            let k: ClientKey = codec()
                .deserialize(unframe(b, Kind::ClientKey, p)?)
                .map_err(|e| FheError(format!("client key does not decode: {e}")))?;
            if k.params != *p
                || k.small.lwe_dimension().0 != p.lwe_dimension
                || k.glwe.glwe_dimension().0 != p.glwe_dimension
                || k.glwe.polynomial_size().0 != p.polynomial_size
                || k.glwe.as_ref().len() != p.big_dimension()
            {
                return Err(FheError("the client key does not match the circuit's parameters".into()));
            }
            Ok(k)
        }
    }

    impl ServerKey {
        /// Serializes the evaluation key.
        pub fn to_bytes(&self) -> Vec<u8> {
            frame(Kind::ServerKey, &self.params, codec().serialize(self).expect("serialize"))
        }

        /// Loads an evaluation key made for `p`, checking every dimension: the seeded form
        /// ([`Kind::SeededServerKey`], decompressed and converted to the Fourier domain, see
        /// [`SeededServerKey::decompress`]) or the full form ([`Kind::ServerKey`]). Any other
        /// file is refused as not being a server key.
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<ServerKey, FheError> {
            if kind_of(b) == Some(Kind::SeededServerKey) {
                return SeededServerKey::from_bytes(b, p)?.decompress();
            }
            let k: ServerKey = codec()
                .deserialize(unframe(b, Kind::ServerKey, p)?)
                .map_err(|e| FheError(format!("server key does not decode: {e}")))?;
            k.check(p)?;
            Ok(k)
        }
    }

    impl SeededServerKey {
        /// Serializes the seeded evaluation key (as a client sends it; exactly
        /// [`crate::evaluation_key_bytes`] bytes).
        pub fn to_bytes(&self) -> Vec<u8> {
            frame(Kind::SeededServerKey, &self.params, codec().serialize(self).expect("serialize"))
        }

        /// Loads a seeded evaluation key made for `p`, checking its body counts
        /// ([`SeededServerKey::check`]); decompress it with [`SeededServerKey::decompress`].
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<SeededServerKey, FheError> {
            let k: SeededServerKey = codec()
                .deserialize(unframe(b, Kind::SeededServerKey, p)?)
                .map_err(|e| FheError(format!("seeded server key does not decode: {e}")))?;
            k.check(p)?;
            Ok(k)
        }
    }

    impl CtTensor {
        /// Serializes the ciphertexts.
        pub fn to_bytes(&self, p: &TfheParams) -> Vec<u8> {
            frame(Kind::Ciphertext, p, codec().serialize(self).expect("serialize"))
        }

        /// Loads ciphertexts made under `p`, checking their size.
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<CtTensor, FheError> {
            let t: CtTensor = codec()
                .deserialize(unframe(b, Kind::Ciphertext, p)?)
                .map_err(|e| FheError(format!("ciphertext does not decode: {e}")))?;
            let words = numel(&t.shape).and_then(|n| n.checked_mul(p.big_dimension() + 1));
            if words != Some(t.data.len()) || t.bits == 0 || t.bits > 62 {
                return Err(FheError("the ciphertext's size does not match its shape and parameters".into()));
            }
            Ok(t)
        }
    }

    impl SeededCtTensor {
        /// Serializes the seeded ciphertexts (an encrypted image, as a client uploads it).
        pub fn to_bytes(&self, p: &TfheParams) -> Vec<u8> {
            frame(Kind::SeededImage, p, codec().serialize(self).expect("serialize"))
        }

        /// Loads seeded ciphertexts made under `p`, checking one body per element and the
        /// encoding (not yet against a circuit: see [`SeededCtTensor::decompress_input`]).
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<SeededCtTensor, FheError> {
            let t: SeededCtTensor = codec()
                .deserialize(unframe(b, Kind::SeededImage, p)?)
                .map_err(|e| FheError(format!("seeded ciphertext does not decode: {e}")))?;
            if numel(&t.shape) != Some(t.bodies.len()) || t.bits == 0 || t.bits > 62 {
                return Err(FheError(format!(
                    "the seeded ciphertext is inconsistent ({} bodies for shape {:?}, {} encoding bits)",
                    t.bodies.len(),
                    t.shape,
                    t.bits
                )));
            }
            Ok(t)
        }
    }

    impl CompactCtTensor {
        /// Serializes the result.
        pub fn to_bytes(&self, p: &TfheParams) -> Vec<u8> {
            frame(Kind::CompactResult, p, codec().serialize(self).expect("serialize"))
        }

        /// Loads a result made under `p`, checking its size against its shape and `p`.
        pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<CompactCtTensor, FheError> {
            let t: CompactCtTensor = codec()
                .deserialize(unframe(b, Kind::CompactResult, p)?)
                .map_err(|e| FheError(format!("encrypted result does not decode: {e}")))?;
            t.check(p)?;
            Ok(t)
        }
    }
}

#[cfg(test)]
mod tests {
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
