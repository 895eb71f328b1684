//! The ciphertext files: `CtTensor`, `SeededCtTensor` (an encrypted image as a client
//! uploads it) and `CompactCtTensor` (a result as a server returns it) `from_bytes`, under
//! the INSECURE toy parameters of [`super::toy`].
//!
//! Properties beyond "no panic": an accepted tensor round-trips (`from_bytes(to_bytes(x))
//! == x`), and what consumes it takes it: a ciphertext decrypts and compacts, a seeded image
//! decompresses, a result decrypts.

use arbitrary::Arbitrary;
use fhec_ir::params::{ResultForm, ResultKey};
use fhec_runtime::fhe::files::{Kind, fingerprint};
use fhec_runtime::fhe::{CompactCtTensor, CtTensor, KeyPairId, SeededCtTensor};
use rand::RngExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::toy::{TOY, toy};
use super::{Outcome, Target, arb, rejected};
use crate::framed;
use crate::mutate::{Rng, interesting};

/// `CtTensor::from_bytes`.
pub struct CiphertextTarget;

/// `SeededCtTensor::from_bytes`.
pub struct SeededImageTarget;

/// `CompactCtTensor::from_bytes`.
pub struct CompactResultTarget;

fn pair() -> KeyPairId {
    toy().client.pair()
}

/// Encryptions of a few tensors (one value, a 2x2 image, an empty one) in every form.
fn tensors() -> (Vec<CtTensor>, Vec<SeededCtTensor>) {
    let k = &toy().client;
    let full = vec![k.encrypt(&[1], &[1], 3), k.encrypt(&[0, 1, 2, 3], &[1, 1, 2, 2], 4), k.encrypt(&[], &[0], 4)];
    let seeded = vec![k.encrypt_seeded(&[5], &[1], 3), k.encrypt_seeded(&[0, 1, 2, 3], &[1, 1, 2, 2], 4)];
    (full, seeded)
}

fn compact(t: &CtTensor, key: ResultKey, word_bits: u32) -> CompactCtTensor {
    toy().server.compact(t, ResultForm { key, word_bits }).expect("the toy parameters have every result key")
}

impl Target for CiphertextTarget {
    fn name(&self) -> &'static str {
        "ciphertext"
    }

    fn about(&self) -> &'static str {
        "CtTensor::from_bytes (toy parameters): round trip, decryption, compaction"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let (full, seeded) = tensors();
        let mut out: Vec<Vec<u8>> = full.iter().map(|t| t.to_bytes_bound(&TOY, pair())).collect();
        out.push(full[0].to_bytes(&TOY));
        out.push(seeded[0].to_bytes(&TOY));
        out
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        typed_or_framed::<CtTensor>(input, other, rng, Kind::Ciphertext)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let t = match CtTensor::from_bytes(input, &TOY) {
            Ok(t) => t,
            Err(e) => return rejected(e),
        };
        round_trip(&t, |t| t.to_bytes(&TOY), |b| CtTensor::from_bytes(b, &TOY))?;
        let k = &toy().client;
        let n = k.decrypt(&t).len();
        if Some(n) != t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
            return Err(format!("{n} values decrypted from a tensor of shape {:?}", t.shape));
        }
        for key in [ResultKey::Glwe, ResultKey::Input, ResultKey::Small] {
            let c = toy().server.compact(&t, ResultForm { key, word_bits: 17 }).map_err(|e| e.to_string())?;
            k.decrypt_compact(&c).map_err(|e| format!("a compacted ciphertext does not decrypt: {e}"))?;
        }
        Ok(Outcome::Accepted(format!("ciphertext of {} dimensions", t.shape.len())))
    }
}

impl Target for SeededImageTarget {
    fn name(&self) -> &'static str {
        "seeded-image"
    }

    fn about(&self) -> &'static str {
        "SeededCtTensor::from_bytes (toy parameters): round trip, decompression"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let (full, seeded) = tensors();
        let mut out: Vec<Vec<u8>> = seeded.iter().map(|t| t.to_bytes_bound(&TOY, pair())).collect();
        out.push(seeded[1].to_bytes(&TOY));
        out.push(full[1].to_bytes(&TOY));
        out
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        typed_or_framed::<SeededCtTensor>(input, other, rng, Kind::SeededImage)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let t = match SeededCtTensor::from_bytes(input, &TOY) {
            Ok(t) => t,
            Err(e) => return rejected(e),
        };
        round_trip(&t, |t| t.to_bytes(&TOY), |b| SeededCtTensor::from_bytes(b, &TOY))?;
        let full = t.decompress(&TOY).map_err(|e| format!("a loaded seeded image does not decompress: {e}"))?;
        if toy().client.decrypt(&full).len() != t.bodies.len() {
            return Err("the decompressed image decrypts to another number of values".into());
        }
        Ok(Outcome::Accepted(format!("seeded image of {} dimensions", t.shape.len())))
    }
}

impl Target for CompactResultTarget {
    fn name(&self) -> &'static str {
        "compact-result"
    }

    fn about(&self) -> &'static str {
        "CompactCtTensor::from_bytes (toy parameters): round trip, decryption"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let (full, _) = tensors();
        let mut out = vec![];
        for (key, wb) in [(ResultKey::Input, 20), (ResultKey::Small, 7), (ResultKey::Glwe, 64), (ResultKey::Input, 1)] {
            out.push(compact(&full[1], key, wb).to_bytes_bound(&TOY, pair()));
        }
        out.push(compact(&full[2], ResultKey::Small, 13).to_bytes(&TOY));
        out.push(full[0].to_bytes(&TOY));
        out
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        typed_or_framed::<CompactCtTensor>(input, other, rng, Kind::CompactResult)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let t = match CompactCtTensor::from_bytes(input, &TOY) {
            Ok(t) => t,
            Err(e) => return rejected(e),
        };
        round_trip(&t, |t| t.to_bytes(&TOY), |b| CompactCtTensor::from_bytes(b, &TOY))?;
        toy().client.decrypt_compact(&t).map_err(|e| format!("a loaded result does not decrypt: {e}"))?;
        Ok(Outcome::Accepted(format!("{:?} result, {} bits per word", t.key, t.word_bits)))
    }
}

/// `from_bytes(to_bytes(x)) == x`.
fn round_trip<T: PartialEq + std::fmt::Debug, E: std::fmt::Display>(
    x: &T,
    to: impl Fn(&T) -> Vec<u8>,
    from: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<(), String> {
    let y = from(&to(x)).map_err(|e| format!("round trip refused: {e}"))?;
    if &y != x {
        return Err("round trip changed the value".into());
    }
    Ok(())
}

/// One typed edit of a tensor file's fields.
#[derive(Arbitrary, Debug)]
enum TensorEdit {
    /// A dimension set to an interesting value.
    Dim(u8),
    /// A dimension added or removed.
    Rank(bool),
    /// The encoding bits (or word bits of a result).
    Bits(bool),
    /// The data one element longer or shorter, emptied, or doubled.
    Data(u8),
    /// The seed of a seeded image, or the key of a result.
    Other(u8),
}

/// The fields every tensor form has, for [`TensorEdit`].
trait Fields: Serialize + DeserializeOwned {
    fn shape(&mut self) -> &mut Vec<usize>;
    fn bits(&mut self, word: bool) -> &mut u32;
    fn resize(&mut self, how: u8, rng: &mut Rng);
    fn other(&mut self, what: u8, rng: &mut Rng);
}

fn resize<T: Clone + Default>(v: &mut Vec<T>, how: u8) {
    match how % 4 {
        0 => v.push(T::default()),
        1 => {
            v.pop();
        }
        2 => v.clear(),
        _ => v.extend_from_within(..),
    }
}

impl Fields for CtTensor {
    fn shape(&mut self) -> &mut Vec<usize> {
        &mut self.shape
    }
    fn bits(&mut self, _: bool) -> &mut u32 {
        &mut self.bits
    }
    fn resize(&mut self, how: u8, _: &mut Rng) {
        match how % 3 {
            // One ciphertext more or less.
            0 => self.data.extend_from_within(..(TOY.big_dimension() + 1).min(self.data.len())),
            1 => self.data.truncate(self.data.len().saturating_sub(TOY.big_dimension() + 1)),
            _ => resize(&mut self.data, how / 3),
        }
    }
    fn other(&mut self, _: u8, rng: &mut Rng) {
        if let Some(w) = self.data.first_mut() {
            *w = rng.random();
        }
    }
}

impl Fields for SeededCtTensor {
    fn shape(&mut self) -> &mut Vec<usize> {
        &mut self.shape
    }
    fn bits(&mut self, _: bool) -> &mut u32 {
        &mut self.bits
    }
    fn resize(&mut self, how: u8, _: &mut Rng) {
        resize(&mut self.bodies, how)
    }
    fn other(&mut self, _: u8, rng: &mut Rng) {
        self.seed = if rng.random_bool(0.5) { interesting(rng) as u128 } else { rng.random() };
    }
}

impl Fields for CompactCtTensor {
    fn shape(&mut self) -> &mut Vec<usize> {
        &mut self.shape
    }
    fn bits(&mut self, word: bool) -> &mut u32 {
        if word { &mut self.word_bits } else { &mut self.bits }
    }
    fn resize(&mut self, how: u8, _: &mut Rng) {
        resize(&mut self.data, how)
    }
    fn other(&mut self, what: u8, _: &mut Rng) {
        self.key = [ResultKey::Glwe, ResultKey::Input, ResultKey::Small][what as usize % 3];
    }
}

/// A typed edit of a tensor file of `kind` (keeping the toy fingerprint, so that the edit
/// reaches the checks after it), or a framing edit.
fn typed_or_framed<T: Fields>(input: &[u8], other: &[u8], rng: &mut Rng, kind: Kind) -> Option<Vec<u8>> {
    let decoded = if rng.random_bool(0.6) { framed::decode::<T>(input) } else { None };
    let Some((fp, pair, mut t)) = decoded else {
        return framed::mutate(input, other, rng);
    };
    match arb::<TensorEdit>(rng)? {
        TensorEdit::Dim(i) => {
            let v = interesting(rng) as usize;
            let s = t.shape();
            match s.len() {
                0 => s.push(v),
                n => s[i as usize % n] = if rng.random_bool(0.5) { v } else { rng.random_range(0..5) },
            }
        }
        TensorEdit::Rank(add) => {
            let s = t.shape();
            if add {
                s.insert(rng.random_range(0..=s.len()), rng.random_range(0..4));
            } else if !s.is_empty() {
                s.remove(rng.random_range(0..s.len()));
            }
        }
        TensorEdit::Bits(word) => {
            let b = t.bits(word);
            *b = match rng.random_range(0..3) {
                0 => b.wrapping_add(1),
                1 => b.wrapping_sub(1),
                _ => [0, 1, 62, 63, 64, 65, u32::MAX][rng.random_range(0..7)],
            };
        }
        TensorEdit::Data(how) => t.resize(how, rng),
        TensorEdit::Other(what) => t.other(what, rng),
    }
    let fp = if rng.random_bool(0.9) { fingerprint(&TOY) } else { fp };
    Some(framed::encode(kind.format().magic, fp, pair, &t))
}
