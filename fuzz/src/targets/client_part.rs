//! `ClientSpec::from_bytes` (the client part a model owner hands to clients: parameters,
//! input encoding, output decoding; no weights), and what a client does with an accepted
//! one: summarise it, generate keys for it (`Client::for_spec`) and encrypt an image of its
//! input size.
//!
//! Structure-aware mutations decode the payload (without the verifier), edit one field, and
//! encode it again with a sound frame, so that edits reach the verifier and what follows it;
//! after an edit of the parameters or the output encoding, the derived fields (key
//! requirements, result form) are sometimes made consistent again, so that the client is
//! reached with unusual but self-consistent parts.
//!
//! Properties beyond "no panic": an accepted client part round-trips (its bytes read back to
//! the same bytes), and a client made from it encrypts an image of its input size.

use arbitrary::Arbitrary;
use fhec_ir::client::{ClientSpec, FORMAT, KeyRequirements, MAX_PAYLOAD};
use fhec_ir::params::result_form_for;
use fhec_runtime::app::Client;
use rand::RngExt;

use super::{Outcome, Target, arb, edit_param, rejected};
use crate::framed;
use crate::mutate::{Rng, interesting};

/// `ClientSpec::from_bytes`.
pub struct ClientPartTarget;

/// Images are encrypted when values times input-key coefficients are at most this.
const MAX_ENCRYPT_WORK: usize = 1 << 22;

impl Target for ClientPartTarget {
    fn name(&self) -> &'static str {
        "client-part"
    }

    fn about(&self) -> &'static str {
        "ClientSpec::from_bytes: round trip, summary, Client::for_spec (key generation) and encrypt"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let art = super::app::artifact();
        let spec = art.client_part().expect("the fuzz artifact has parameters");
        // A near miss: the full artifact where a client part is expected.
        vec![spec.to_bytes(), art.to_bytes()]
    }

    fn mutate(&self, input: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        if rng.random_bool(0.7)
            && let Some(s) = decode(input)
        {
            return edit(s, rng).map(|s| s.to_bytes());
        }
        framed::mutate(input, other, rng)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let spec = match ClientSpec::from_bytes(input) {
            Ok(s) => s,
            Err(e) => return rejected(e),
        };
        let bytes = spec.to_bytes();
        let again = ClientSpec::from_bytes(&bytes).map_err(|e| format!("round trip refused: {e}"))?;
        if again.to_bytes() != bytes {
            return Err("round trip changed the client part".into());
        }
        let _ = spec.summary();
        let values: usize = spec.input.shape.iter().product();
        let work = values.saturating_mul(spec.params.input_dimension());
        let client = Client::for_spec(spec).map_err(|e| format!("a client part that loads makes no client: {e}"))?;
        // Encryption costs a mask coefficient per value and input-key coefficient: only for
        // small images under small parameters.
        if work <= MAX_ENCRYPT_WORK {
            let pixels: Vec<u8> = (0..values).map(|i| i as u8).collect();
            client.encrypt(&pixels).map_err(|e| format!("encrypting an image of the client part's size: {e}"))?;
            return Ok(Outcome::Accepted("client part, image encrypted".into()));
        }
        Ok(Outcome::Accepted("client part".into()))
    }
}

/// The client part in `b` as it decodes, without the verifier.
fn decode(b: &[u8]) -> Option<ClientSpec> {
    framed::decode_ir(b, FORMAT.magic, MAX_PAYLOAD)
}

/// One typed edit of a client part.
#[derive(Arbitrary, Debug)]
enum Edit {
    /// A TFHE parameter; `derive`: the key requirements and result form follow it.
    Param { field: u8, derive: bool },
    /// A key requirement.
    Keys { field: u8 },
    /// The input's shape: a dimension, or one more or fewer.
    InputShape { dim: u8, how: u8 },
    /// The pixel map: a length or a value.
    PixelMap { how: u8 },
    /// The input's bits.
    InputBits,
    /// The output's encoding: shape, bits, read bits or noise; `derive` as for `Param`.
    Output { field: u8, derive: bool },
    /// The output dequantization: a length or a value.
    OutputQuant { how: u8 },
    /// The result form.
    ResultForm { bits: u8 },
}

fn edit(mut s: ClientSpec, rng: &mut Rng) -> Option<ClientSpec> {
    let v = interesting(rng);
    let derive = |s: &mut ClientSpec| {
        s.keys = KeyRequirements::of(&s.params);
        s.output.result_form = result_form_for(&s.params, &s.output.encoding);
    };
    match arb::<Edit>(rng)? {
        Edit::Param { field, derive: d } => {
            edit_param(&mut s.params, field, v)?;
            if d {
                derive(&mut s);
            }
        }
        Edit::Keys { field } => match field % 4 {
            0 => s.keys.fingerprint = v,
            1 => s.keys.input_dimension = v as usize,
            2 => s.keys.rounding_bootstrap_key ^= true,
            _ => s.keys.result_keyswitch_key ^= true,
        },
        Edit::InputShape { dim, how } => {
            let shape = &mut s.input.shape;
            match how % 3 {
                0 => {
                    shape.pop();
                }
                1 => shape.push(v as usize),
                _ => {
                    let n = shape.len();
                    *shape.get_mut(dim as usize % n.max(1))? = v as usize;
                }
            }
        }
        Edit::PixelMap { how } => {
            let map = &mut s.input.quant.pixel_to_q;
            match how % 3 {
                0 => {
                    map.pop();
                }
                1 => map.push(v as i64),
                _ => *map.get_mut(rng.random_range(0..256))? = v as i64,
            }
        }
        Edit::InputBits => s.input.bits = v as u32,
        Edit::Output { field, derive: d } => {
            let out = &mut s.output.encoding;
            match field % 5 {
                0 => out.shape.push(v as usize),
                1 => *out.shape.last_mut()? = v as usize,
                2 => out.bits = v as u32,
                3 => out.read_bits = v as u32,
                _ => out.norm2 = f64::from_bits(v),
            }
            if d {
                derive(&mut s);
            }
        }
        Edit::OutputQuant { how } => {
            let q = &mut s.output.quant;
            match how % 4 {
                0 => {
                    q.scale.pop();
                }
                1 => q.offset.push(0.0),
                2 => *q.scale.first_mut()? = f64::from_bits(v),
                _ => *q.offset.first_mut()? = f64::NAN,
            }
        }
        Edit::ResultForm { bits } => s.output.result_form.word_bits = bits as u32,
    }
    Some(s)
}
