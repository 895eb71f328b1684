//! The key files: `ClientKey`, `ServerKey` (full and seeded forms) and `SeededServerKey`
//! `from_bytes`, under the INSECURE toy parameters of [`super::toy`].
//!
//! Properties beyond "no panic": an accepted key round-trips (`to_bytes` of what
//! `from_bytes` gives reads back to the same bytes), an accepted client key decrypts its own
//! encryptions and derives a valid evaluation key, an accepted seeded key decompresses, and
//! an accepted evaluation key evaluates a circuit (or refuses it with an error).

use arbitrary::Arbitrary;
use fhec_ir::artifact::ParametrizedCircuit;
use fhec_ir::params::{Decomposition, ResultForm, ResultKey, RoundKeyParams, TfheParams};
use fhec_runtime::fhe::files::{Kind, fingerprint};
use fhec_runtime::fhe::{ClientKey, SeededServerKey, ServerKey, evaluate};
use rand::RngExt;

use super::toy::{TOY, toy};
use super::{Outcome, Target, arb, edit_param, rejected};
use crate::framed;
use crate::mutate::{Rng, interesting};

/// `ClientKey::from_bytes`.
pub struct ClientKeyTarget;

impl Target for ClientKeyTarget {
    fn name(&self) -> &'static str {
        "client-key"
    }

    fn about(&self) -> &'static str {
        "ClientKey::from_bytes (toy parameters): round trip, encrypt/decrypt, derived evaluation key"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let t = toy();
        let key = t.client.to_bytes();
        vec![key.clone(), key[..key.len() / 2].to_vec(), t.seeded.to_bytes()]
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        framed::mutate(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let k = match ClientKey::from_bytes(input, &TOY) {
            Ok(k) => k,
            Err(e) => return rejected(e),
        };
        let bytes = k.to_bytes();
        let again = ClientKey::from_bytes(&bytes, &TOY).map_err(|e| format!("round trip refused: {e}"))?;
        if again.to_bytes() != bytes {
            return Err("round trip changed the client key".into());
        }
        let values = [0i64, 1, 2, 3, -1, 7];
        let got = k.decrypt(&k.encrypt(&values, &[values.len()], 4));
        if got != values {
            return Err(format!("the loaded client key decrypts {values:?} to {got:?}"));
        }
        k.seeded_server_key().check(&TOY).map_err(|e| format!("its derived evaluation key is refused: {e}"))?;
        Ok(Outcome::Accepted("client key".into()))
    }
}

/// `ServerKey::from_bytes` (the full form, or the seeded form it decompresses).
pub struct ServerKeyTarget;

impl Target for ServerKeyTarget {
    fn name(&self) -> &'static str {
        "server-key"
    }

    fn about(&self) -> &'static str {
        "ServerKey::from_bytes, full and seeded forms (toy parameters): round trip, one evaluation, compaction"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let t = toy();
        vec![t.server.to_bytes(), t.seeded.to_bytes(), t.client.to_bytes()]
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        if rng.random_bool(0.3) {
            return seeded_edit(input, rng);
        }
        framed::mutate(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let k = match ServerKey::from_bytes(input, &TOY) {
            Ok(k) => k,
            Err(e) => return rejected(e),
        };
        let bytes = k.to_bytes();
        let again = ServerKey::from_bytes(&bytes, &TOY).map_err(|e| format!("round trip refused: {e}"))?;
        if again.to_bytes() != bytes {
            return Err("round trip changed the server key".into());
        }
        // The key may be of another pair or hold garbage: evaluation may compute garbage but
        // must not fail on a key that loaded.
        let t = toy();
        let pc = ParametrizedCircuit::with_params(&t.circuit, &TOY, &t.plan).map_err(|e| e.to_string())?;
        let ct = t.client.encrypt_image(&pc, &[0, 200]).map_err(|e| e.to_string())?;
        let out = evaluate(&k, &pc, &ct).map_err(|e| format!("a loaded evaluation key does not evaluate: {e}"))?;
        for key in [ResultKey::Glwe, ResultKey::Input, ResultKey::Small] {
            let c = k.compact(&out, ResultForm { key, word_bits: 20 }).map_err(|e| format!("compact: {e}"))?;
            t.client.decrypt_compact(&c).map_err(|e| format!("a compacted result does not decrypt: {e}"))?;
        }
        Ok(Outcome::Accepted(format!("{} server key", if input.starts_with(b"FHECSSKY") { "seeded" } else { "full" })))
    }
}

/// `SeededServerKey::from_bytes`, and `check` / `decompress` of a seeded key of any
/// parameters (a server checks a client's key against an artifact's parameters).
pub struct SeededServerKeyTarget;

impl Target for SeededServerKeyTarget {
    fn name(&self) -> &'static str {
        "seeded-server-key"
    }

    fn about(&self) -> &'static str {
        "SeededServerKey::from_bytes (toy parameters) and check/decompress under any parameters: round trip"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let t = toy();
        let mut no_round = t.seeded.clone();
        no_round.params.round_key = None;
        no_round.round_bsk_bodies.clear();
        no_round.result_ksk_bodies.clear();
        vec![t.seeded.to_bytes(), no_round.to_bytes(), t.client.to_bytes()]
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        if rng.random_bool(0.6) {
            return seeded_edit(input, rng);
        }
        framed::mutate(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        // A seeded key of whatever parameters it names, checked against those (what a
        // server does with an artifact's parameters).
        if let Some((_, _, k)) = framed::decode::<SeededServerKey>(input)
            && input.starts_with(b"FHECSSKY")
            && k.check(&k.params).is_ok()
            && small_enough(&k.params)
        {
            k.decompress().map_err(|e| format!("a checked seeded key does not decompress: {e}"))?;
        }
        let k = match SeededServerKey::from_bytes(input, &TOY) {
            Ok(k) => k,
            Err(e) => return rejected(e),
        };
        let again = SeededServerKey::from_bytes(&k.to_bytes(), &TOY).map_err(|e| format!("round trip refused: {e}"))?;
        if again != k {
            return Err("round trip changed the seeded key".into());
        }
        k.decompress().map_err(|e| format!("a loaded seeded key does not decompress: {e}"))?;
        Ok(Outcome::Accepted("seeded server key".into()))
    }
}

/// Whether decompressing a key of `p` takes at most a few MB (the bodies are checked
/// against `p`, but the full keys are `n + 1` times the keyswitch bodies).
fn small_enough(p: &TfheParams) -> bool {
    let words = p.lwe_dimension.saturating_add(1).saturating_mul(p.big_dimension().saturating_mul(p.ks_level as usize));
    words < 1 << 20
}

/// One typed edit of a seeded evaluation key.
#[derive(Arbitrary, Debug)]
enum SeededEdit {
    /// One body vector one longer or shorter, emptied, or doubled.
    Bodies { which: u8, how: u8 },
    /// A compression seed.
    Seed { which: u8, value: u128 },
    /// A parameter of the key's own copy of the parameters (the fingerprint stays the toy
    /// one, so that `check` sees the difference).
    Param { which: u8 },
    /// The rounding key removed or given odd dimensions.
    RoundKey { present: bool, k: u8, log_n: u8, level: u8 },
}

/// A typed edit of a seeded evaluation key file (`None` if the input is not one).
fn seeded_edit(input: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let (fp, pair, mut k) = framed::decode::<SeededServerKey>(input)?;
    match arb::<SeededEdit>(rng)? {
        SeededEdit::Bodies { which, how } => {
            let v = match which % 4 {
                0 => &mut k.ksk_bodies,
                1 => &mut k.bsk_bodies,
                2 => &mut k.round_bsk_bodies,
                _ => &mut k.result_ksk_bodies,
            };
            match how % 4 {
                0 => v.push(rng.random()),
                1 => {
                    v.pop();
                }
                2 => v.clear(),
                _ => v.extend_from_within(..),
            }
        }
        SeededEdit::Seed { which, value } => match which % 4 {
            0 => k.ksk_seed = value,
            1 => k.bsk_seed = value,
            2 => k.round_bsk_seed = value,
            _ => k.result_ksk_seed = value,
        },
        SeededEdit::Param { which } => {
            edit_param(&mut k.params, which, interesting(rng))?;
        }
        SeededEdit::RoundKey { present, k: kr, log_n, level } => {
            k.params.round_key = present.then_some(RoundKeyParams {
                glwe_dimension: kr as usize % 4,
                polynomial_size: 1usize << (log_n % 12),
                glwe_noise_std: 1e-15,
                // Level 0 (invalid) and no bootstrap key (an input prefix) included.
                bootstrap: (level % 5 != 4).then_some(Decomposition { base_log: 12, level: level as u32 % 4 }),
            });
        }
    }
    // Keep the toy fingerprint most of the time, so that the edit reaches `check`.
    let fp = if rng.random_bool(0.8) { fingerprint(&TOY) } else { fp };
    Some(framed::encode(Kind::SeededServerKey.format().magic, fp, pair, &k))
}
