//! The keys: the client's secret [`ClientKey`], the server's [`ServerKey`] (keyswitch and
//! Fourier bootstrap keys, nothing secret) and its seeded form [`SeededServerKey`] (what a
//! client sends); generation, dimension checks and decompression.

use fhec_ir::client::ClientSide;
use fhec_ir::params::TfheParams;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;

use super::{FheError, gaussian, modulus};

/// The identity of a key pair: a random number drawn when a client key is generated, carried
/// by its evaluation key and by every file made with either (in the frame of
/// [`super::files`]), so that a client key and an evaluation key of different pairs, or a
/// ciphertext of another pair, are errors rather than wrong classes. 0 marks a ciphertext
/// file not bound to a pair (the low-level `to_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPairId(pub u64);

impl std::fmt::Display for KeyPairId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The client's secret keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientKey {
    pub(crate) params: TfheParams,
    pub(crate) small: LweSecretKeyOwned<u64>,
    pub(crate) glwe: GlweSecretKeyOwned<u64>,
    /// The identity of the key pair (kept in the file's frame, not in the value).
    #[serde(skip)]
    pub(crate) pair: KeyPairId,
}

/// The evaluation key: what the server needs, and nothing secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct ServerKey {
    /// The identity of the key pair it was derived in (kept in the file's frame).
    #[serde(skip)]
    pub(crate) pair: KeyPairId,
    pub(crate) params: TfheParams,
    pub(crate) ksk: LweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: FourierLweBootstrapKeyOwned,
    /// The rounding bootstrap key (`params.rounding_bsk()`), if any.
    pub(crate) round_bsk: Option<FourierLweBootstrapKeyOwned>,
    /// The result keyswitch key (`params.result_ks()`: from the big key's tail to the input
    /// key), if any.
    pub(crate) result_ksk: Option<LweKeyswitchKeyOwned<u64>>,
}

/// The evaluation key in seeded (compressed) form: what a client sends.
///
/// Holds the bodies of tfhe-rs's `SeededLweKeyswitchKey` (one per level per coefficient of
/// the GLWE key: `kN·ℓ_ks`) and `SeededLweBootstrapKey` (one polynomial per row of every
/// GGSW: `n·ℓ_pbs·(k+1)·N`), those of the rounding bootstrap key and of the result
/// keyswitch key when the parameters have them, and the compression seeds their masks are
/// regenerated from. As for [`SeededCtTensor`](super::SeededCtTensor), the seeds are plain 128-bit numbers (any
/// value is valid) and the decomposition parameters are those of `params`, so that every
/// length can be checked before tfhe-rs sees the data ([`SeededServerKey::check`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededServerKey {
    /// The identity of the key pair it was derived in (kept in the file's frame, not in the
    /// value).
    #[serde(skip)]
    pub pair: KeyPairId,
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
        // Any nonzero number drawn from the seeder names the pair (0 marks files not bound to
        // a pair); 64 bits make two independent pairs' identities collide with probability
        // 2^-64.
        let pair = KeyPairId((seeder.as_mut().seed().0 as u64).max(1));
        ClientKey { params: *params, small, glwe, pair }
    }

    /// Generates fresh secret keys for the parameters of a model: a client part
    /// ([`fhec_ir::client::ClientSpec`]) or a circuit with its parameters
    /// ([`fhec_ir::artifact::ParametrizedCircuit`]); keys need nothing else.
    pub fn generate_for(model: &(impl ClientSide + ?Sized)) -> ClientKey {
        Self::generate(model.params())
    }

    /// The parameters of these keys.
    pub fn params(&self) -> &TfheParams {
        &self.params
    }

    /// The identity of this key pair, which its evaluation key, the images it encrypts and
    /// the results of that evaluation key carry.
    pub fn pair(&self) -> KeyPairId {
        self.pair
    }

    /// Whether the keys are of `p`'s dimensions (a check of loaded keys).
    pub(crate) fn matches(&self, p: &TfheParams) -> bool {
        // The polynomial size first: tfhe-rs's `glwe_dimension` divides by it.
        self.params == *p
            && super::layout::check_params(p).is_ok()
            && self.glwe.polynomial_size().0 == p.polynomial_size
            && self.small.lwe_dimension().0 == p.lwe_dimension
            && self.glwe.as_ref().len() == p.big_dimension()
            && self.glwe.glwe_dimension().0 == p.glwe_dimension
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
        let round_bsk = self.round_glwe().zip(p.rounding_bsk()).map(|(g, r)| bsk(&r, &g));
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
        ServerKey { pair: self.pair, params: *p, ksk, bsk: main, round_bsk, result_ksk }
    }

    /// The big key's coefficients after the input key's prefix (what the result keyswitch
    /// key switches away).
    pub(crate) fn tail_key(&self) -> LweSecretKeyOwned<u64> {
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
        let (round_bsk_seed, round_bsk_bodies) =
            self.round_glwe().zip(p.rounding_bsk()).map_or((0, vec![]), |(g, r)| seeded_bsk(&r, &g));
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
            pair: self.pair,
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

    pub(crate) fn big_key(&self) -> LweSecretKeyOwned<u64> {
        self.glwe.clone().into_lwe_secret_key()
    }

    /// The key inputs are encrypted under: the first [`TfheParams::input_dimension`]
    /// coefficients of the big key.
    pub(crate) fn input_key(&self) -> LweSecretKeyOwned<u64> {
        let mut key = self.big_key().into_container();
        key.truncate(self.params.input_dimension());
        LweSecretKey::from_container(key)
    }
}

impl ServerKey {
    /// The parameters of this key.
    pub fn params(&self) -> &TfheParams {
        &self.params
    }

    /// The identity of the key pair this evaluation key belongs to.
    pub fn pair(&self) -> KeyPairId {
        self.pair
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
        let round_ok = match (&self.round_bsk, p.rounding_bsk()) {
            (None, None) => true,
            (Some(b), Some(r)) => bsk_ok(b, &r),
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
        if ok {
            Ok(())
        } else {
            Err(FheError::ParamsMismatch("the evaluation key does not match the circuit's parameters".into()))
        }
    }

    pub(crate) fn lwe_size(&self) -> usize {
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
            return Err(FheError::ParamsMismatch(
                "the seeded evaluation key was made for other TFHE parameters than this circuit's".into(),
            ));
        }
        super::layout::check_params(p)?;
        let (Some(ksk), Some(bsk)) = (Self::ksk_len(p), Self::bsk_len(p)) else {
            return Err(FheError::InvalidParams("the keys' sizes overflow".into()));
        };
        if ksk != self.ksk_bodies.len() {
            return Err(FheError::Shape(format!(
                "the seeded evaluation key holds {} keyswitch key bodies, not {ksk} (kN = {} coefficients x {} levels)",
                self.ksk_bodies.len(),
                p.big_dimension(),
                p.ks_level
            )));
        }
        if bsk != self.bsk_bodies.len() {
            return Err(FheError::Shape(format!(
                "the seeded evaluation key holds {} bootstrap key bodies, not {bsk} (n = {} x {} levels x {} polynomials of N = {})",
                self.bsk_bodies.len(),
                p.lwe_dimension,
                p.pbs_level,
                p.glwe_dimension + 1,
                p.polynomial_size
            )));
        }
        // (The rounding key's GLWE key, a prefix of the main one, was checked with the
        // parameters.)
        let round = match p.rounding_bsk() {
            None => 0,
            Some(r) => Self::bsk_len(&r).ok_or_else(|| FheError::InvalidParams("the keys' sizes overflow".into()))?,
        };
        if round != self.round_bsk_bodies.len() {
            return Err(FheError::Shape(format!(
                "the seeded evaluation key holds {} rounding bootstrap key bodies, not {round}",
                self.round_bsk_bodies.len()
            )));
        }
        let result = Self::result_ksk_len(p);
        if result != self.result_ksk_bodies.len() {
            return Err(FheError::Shape(format!(
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
            pair,
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
        let round_bsk = p.rounding_bsk().map(|r| fourier(round_bsk_bodies, round_bsk_seed, &r));
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
        let sk = ServerKey { pair, params: p, ksk, bsk, round_bsk, result_ksk };
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
