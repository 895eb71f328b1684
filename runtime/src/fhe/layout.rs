//! The checks a key file passes before tfhe-rs reads it.
//!
//! tfhe-rs's deserializers trust the dimensions in the bytes: a Fourier polynomial list
//! allocates as many polynomials as its header claims (a 40-byte header can ask for
//! terabytes) and plans an FFT of whatever size it reads (panicking on an odd one), and the
//! keys' accessors divide by dimensions read from the file. The full evaluation key
//! ([`super::ServerKey`], tfhe-rs's types in bincode) is therefore first read by a shadow of
//! the same layout that keeps the dimensions, counts the data without storing it, and is
//! compared with the parameters ([`check_server_key`]); only a key of exactly the
//! parameters' shape reaches tfhe-rs. [`check_params`] refuses parameters tfhe-rs would
//! panic on (the shared check of every key).
//!
//! The shadow must follow tfhe-rs's serialized layout (fixed-width bincode of its serde
//! derives): `LweKeyswitchKey { data, decomp_base_log, decomp_level_count, output_lwe_size,
//! ciphertext_modulus: (u128, usize) }`, `FourierLweBootstrapKey { fourier: [N, count,
//! count x [N/2 complex]], input_lwe_dimension, glwe_size, base_log, level }`. The runtime's
//! tests round-trip real keys through it, so a tfhe-rs release that changes the layout
//! fails them rather than refusing keys in the field.

use std::marker::PhantomData;

use bincode::Options;
use fhec_ir::params::TfheParams;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::FheError;

/// Refuses parameters that tfhe-rs cannot make keys of: [`TfheParams::shape_error`], the
/// one check of parameters' shapes that artifacts, client parts and key files share.
pub fn check_params(p: &TfheParams) -> Result<(), FheError> {
    match p.shape_error() {
        Some(why) => Err(FheError::InvalidParams(why)),
        None => Ok(()),
    }
}

/// A sequence of `T`, read and counted, not kept (memory O(1), time O(input)).
struct Count<T>(usize, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Count<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count<T>, A::Error> {
                let mut n = 0;
                while seq.next_element::<T>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n, PhantomData))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// tfhe-rs's serialized ciphertext modulus.
#[derive(Deserialize)]
struct Modulus {
    modulus: u128,
    scalar_bits: usize,
}

/// The layout of an `LweKeyswitchKey<Vec<u64>>`.
#[derive(Deserialize)]
struct Ksk {
    data: Count<u64>,
    decomp_base_log: usize,
    decomp_level_count: usize,
    output_lwe_size: usize,
    ciphertext_modulus: Modulus,
}

/// The layout of a `FourierPolynomialList`: its polynomial size, its polynomial count, and
/// whether every polynomial holds `N/2` complex numbers.
struct FourierList {
    polynomial_size: usize,
    count: usize,
    all_half: bool,
}

impl<'de> Deserialize<'de> for FourierList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FourierList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a polynomial size, a count and Fourier polynomials")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FourierList, A::Error> {
                let polynomial_size =
                    seq.next_element::<usize>()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let count = seq.next_element::<usize>()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let mut all_half = true;
                for i in 0..count {
                    // Each element consumes input, so a false count ends at the input's end.
                    let c = seq
                        .next_element::<Count<(f64, f64)>>()?
                        .ok_or_else(|| de::Error::invalid_length(2 + i, &self))?;
                    all_half &= c.0 == polynomial_size / 2;
                }
                Ok(FourierList { polynomial_size, count, all_half })
            }
        }
        d.deserialize_seq(V)
    }
}

/// The layout of a `FourierLweBootstrapKey`.
#[derive(Deserialize)]
struct Bsk {
    fourier: FourierList,
    input_lwe_dimension: usize,
    glwe_size: usize,
    decomposition_base_log: usize,
    decomposition_level_count: usize,
}

/// The layout of a [`super::ServerKey`] (its key pair is not serialized).
#[derive(Deserialize)]
struct ServerKeyLayout {
    params: TfheParams,
    ksk: Ksk,
    bsk: Bsk,
    round_bsk: Option<Bsk>,
    result_ksk: Option<Ksk>,
}

impl Ksk {
    fn fits(&self, input: usize, output: usize, base: u32, level: u32) -> bool {
        let words = input.checked_mul(level as usize).and_then(|w| w.checked_mul(output.checked_add(1)?));
        Some(self.data.0) == words
            && self.decomp_base_log == base as usize
            && self.decomp_level_count == level as usize
            && Some(self.output_lwe_size) == output.checked_add(1)
            && self.ciphertext_modulus.modulus == 0
            && self.ciphertext_modulus.scalar_bits == 64
    }
}

impl Bsk {
    fn fits(&self, q: &TfheParams) -> bool {
        let k1 = q.glwe_dimension.checked_add(1);
        let polys =
            k1.and_then(|k1| q.lwe_dimension.checked_mul(q.pbs_level as usize)?.checked_mul(k1.checked_mul(k1)?));
        self.fourier.polynomial_size == q.polynomial_size
            && self.fourier.all_half
            && Some(self.fourier.count) == polys
            && self.input_lwe_dimension == q.lwe_dimension
            && Some(self.glwe_size) == k1
            && self.decomposition_base_log == q.pbs_base_log as usize
            && self.decomposition_level_count == q.pbs_level as usize
    }
}

/// Checks that `value` (the bincode value of a full evaluation key file) is a key of
/// exactly `p`'s dimensions, before tfhe-rs deserializes it.
pub fn check_server_key(value: &[u8], p: &TfheParams, codec: impl Options) -> Result<(), FheError> {
    let l: ServerKeyLayout =
        codec.deserialize(value).map_err(|e| FheError::Decode { what: "server key", message: e.to_string() })?;
    if l.params != *p {
        return Err(FheError::ParamsMismatch("the evaluation key was made for other TFHE parameters".into()));
    }
    check_params(p)?;
    let (big, d) = (p.big_dimension(), p.input_dimension());
    let round_ok = match (&l.round_bsk, p.rounding_bsk()) {
        (None, None) => true,
        (Some(b), Some(r)) => b.fits(&r),
        _ => false,
    };
    let result_ok = match (&l.result_ksk, p.result_ks()) {
        (None, None) => true,
        (Some(k), Some((base, level))) => k.fits(big - d, d, base, level),
        _ => false,
    };
    if !(l.ksk.fits(big, p.lwe_dimension, p.ks_base_log, p.ks_level) && l.bsk.fits(p) && round_ok && result_ok) {
        return Err(FheError::ParamsMismatch("the evaluation key does not match the circuit's parameters".into()));
    }
    Ok(())
}
