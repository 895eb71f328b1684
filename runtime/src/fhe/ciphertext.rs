//! Ciphertext tensors in their three forms (full, seeded upload, compact result), and
//! encryption, decryption and compaction.

use fhec_ir::artifact::ParametrizedCircuit;
use fhec_ir::client::ClientSide;
use fhec_ir::params::{ResultForm, ResultKey, TfheParams};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;

use super::schedule::{KS_BATCH, keyswitch_batch};
use super::{ClientKey, FheError, ServerKey, delta, gaussian, modulus, numel};

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

impl SeededCtTensor {
    /// Regenerates the masks and returns the full ciphertexts under the GLWE key of `p`.
    ///
    /// Checks the body count against the shape and the encoding bits, so that no input
    /// reaches a panic in tfhe-rs; the work and memory are proportional to the body count
    /// times `kN + 1` (check the shape against what you expect first, as
    /// [`SeededCtTensor::decompress_input`] does).
    pub fn decompress(&self, p: &TfheParams) -> Result<CtTensor, FheError> {
        let n = numel(&self.shape).filter(|&n| n == self.bodies.len()).ok_or_else(|| {
            FheError::Shape(format!(
                "the seeded ciphertext holds {} bodies, not one per element of its shape {:?}",
                self.bodies.len(),
                self.shape
            ))
        })?;
        if self.bits == 0 || self.bits > 62 {
            return Err(FheError::Shape(format!("the seeded ciphertext's encoding ({} bits) is invalid", self.bits)));
        }
        let (d, big) = (p.input_dimension(), p.big_dimension());
        if d == 0 || d > big {
            return Err(FheError::InvalidParams(format!("an input key of {d} of {big} coefficients")));
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

    /// [`SeededCtTensor::decompress`] of an encrypted input of the circuit `pc`: first checks
    /// that it holds the circuit's input (shape, value count and encoding bits of its plan).
    pub fn decompress_input(&self, pc: &ParametrizedCircuit<'_>) -> Result<CtTensor, FheError> {
        let want = pc.circuit().input_shape();
        let bits = pc.input_bits();
        if self.shape != want || self.bits != bits || self.bodies.len() != want.iter().product::<usize>() {
            return Err(FheError::Shape(format!(
                "holds {} values of shape {:?} on {} bits, but the circuit's input is {} values of shape {want:?} on {bits} bits",
                self.bodies.len(),
                self.shape,
                self.bits,
                want.iter().product::<usize>(),
            )));
        }
        self.decompress(pc.params())
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
            return Err(FheError::Shape(format!(
                "the result's encoding is invalid ({} bits per word, {} bits)",
                self.word_bits, self.bits
            )));
        }
        let Some(dim) = self.form().dimension(p) else {
            return Err(FheError::Unsupported(format!(
                "the result is under the input key, but these parameters have no result keyswitch ({})",
                p.summary()
            )));
        };
        let words = numel(&self.shape).and_then(|n| n.checked_mul(dim + 1));
        let bytes = words.and_then(|w| w.checked_mul(self.word_bits as usize)).map(|b| b.div_ceil(8));
        if bytes != Some(self.data.len()) {
            return Err(FheError::Shape(format!(
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

impl ClientKey {
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

    /// The input integers of an image (8-bit pixels) for a model (a client part or a
    /// circuit with its parameters), after checking that these keys are of its parameters.
    fn quantize_image(&self, model: &(impl ClientSide + ?Sized), pixels: &[u8]) -> Result<Vec<i64>, FheError> {
        if self.params != *model.params() {
            return Err(FheError::ParamsMismatch(
                "the client key was made for other TFHE parameters than this circuit's".into(),
            ));
        }
        let n: usize = model.input_shape().iter().product();
        if pixels.len() != n {
            return Err(FheError::Shape(format!("the image has {} pixels, the circuit takes {n}", pixels.len())));
        }
        let q = &model.input_quant().pixel_to_q;
        pixels
            .iter()
            .map(|&p| q.get(p as usize).copied())
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| FheError::Shape(format!("the input quantization maps {} pixel values, not 256", q.len())))
    }

    /// Encrypts an image (8-bit pixels) as the input of a model: a client part
    /// ([`fhec_ir::client::ClientSpec`]) or a circuit with its parameters.
    pub fn encrypt_image(&self, model: &(impl ClientSide + ?Sized), pixels: &[u8]) -> Result<CtTensor, FheError> {
        Ok(self.encrypt(&self.quantize_image(model, pixels)?, model.input_shape(), model.input_bits()))
    }

    /// Encrypts an image (8-bit pixels) as the input of a model, in seeded form (what
    /// [`crate::app::Client::encrypt`] sends).
    pub fn encrypt_image_seeded(
        &self,
        model: &(impl ClientSide + ?Sized),
        pixels: &[u8],
    ) -> Result<SeededCtTensor, FheError> {
        Ok(self.encrypt_seeded(&self.quantize_image(model, pixels)?, model.input_shape(), model.input_bits()))
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
                    return Err(FheError::Unsupported("these parameters have no result keyswitch key".into()));
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
}
