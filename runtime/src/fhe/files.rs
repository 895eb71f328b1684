//! Framed, versioned, checksummed files for keys and ciphertexts.
//!
//! Every file is a frame of the shared format ([`fhec_ir::framing`]): an 8-byte magic
//! naming its [`Kind`], the `u32` format [`VERSION`], the `u64` payload length, the payload
//! and its `u64` FNV-1a checksum. The payload is the `u64` [`fingerprint`] of the
//! parameters it was made for, the `u64` identity of the key pair it belongs to
//! ([`KeyPairId`]; 0 for a ciphertext not bound to one), then the bincode value. Loading checks each field, so a
//! key of other parameters, a ciphertext given as a key, or a truncated or corrupt file is
//! an error that says which.
//!
//! A seeded encrypted image ([`Kind::SeededImage`]) is [`SEEDED_OVERHEAD`] bytes plus 8
//! per dimension of its shape and 8 per value ([`crate::encrypted_image_bytes`]); a seeded
//! evaluation key ([`Kind::SeededServerKey`]) is [`SEEDED_KEY_OVERHEAD`] bytes plus 8 per
//! body ([`crate::evaluation_key_bytes`]).

use bincode::Options;
use fhec_ir::framing::Format;
use fhec_ir::params::TfheParams;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ClientKey, CompactCtTensor, CtTensor, FheError, KeyPairId, SeededCtTensor, SeededServerKey, ServerKey, numel,
};

/// Format version of every kind.
pub const VERSION: u32 = 7;
/// Largest payload accepted (8 GiB).
const MAX: u64 = 8 << 30;

/// Bytes a file adds to its bincode value: the frame and the parameters' fingerprint.
pub const FRAME_BYTES: usize = fhec_ir::wire::FRAME_BYTES;

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Secret client key.
    ClientKey,
    /// Evaluation key (keyswitch key and Fourier bootstrap key, in full).
    ServerKey,
    /// Encrypted tensor (full LWE ciphertexts).
    Ciphertext,
    /// Encrypted tensor in seeded form (one body per value and the masks' seed): what a
    /// client uploads.
    SeededImage,
    /// Encrypted result with truncated coefficients ([`CompactCtTensor`]): what a server
    /// returns.
    CompactResult,
    /// Evaluation key in seeded form (the keys' bodies and their masks' seeds): what a
    /// client sends.
    SeededServerKey,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::ClientKey,
        Kind::ServerKey,
        Kind::Ciphertext,
        Kind::SeededImage,
        Kind::CompactResult,
        Kind::SeededServerKey,
    ];

    /// What a file of this kind holds, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ClientKey => "a client key",
            Kind::ServerKey => "a server key",
            Kind::Ciphertext => "a ciphertext",
            Kind::SeededImage => "a seeded encrypted image",
            Kind::CompactResult => "an encrypted result",
            Kind::SeededServerKey => "a seeded server key",
        }
    }

    /// The framing of this kind (its magic names it).
    pub fn format(self) -> Format {
        let magic = match self {
            Kind::ClientKey => b"FHECCLKY",
            Kind::ServerKey => b"FHECSVKY",
            Kind::Ciphertext => b"FHECCTXT",
            Kind::SeededImage => b"FHECSIMG",
            Kind::CompactResult => b"FHECRSLT",
            Kind::SeededServerKey => b"FHECSSKY",
        };
        Format { magic: *magic, name: self.name(), version: VERSION, max_payload: MAX }
    }
}

/// Bytes of a framed seeded tensor besides 8 per shape dimension and 8 per value: the
/// frame ([`FRAME_BYTES`]), and in the value the shape's and the bodies' lengths (8 each),
/// the encoding bits (4) and the seed (16).
pub const SEEDED_OVERHEAD: usize = FRAME_BYTES + 8 + 4 + 16 + 8;

/// Bytes of a framed seeded evaluation key besides 8 per body, for parameters without a
/// rounding key: the frame ([`FRAME_BYTES`]), and in the value the parameters (56: three
/// dimensions and two deviations of 8 bytes, four decomposition numbers of 4; then 1 for
/// the absent rounding key), and for each of the four keys (keyswitch, bootstrap, rounding
/// bootstrap, result keyswitch) its seed (16) and its bodies' length (8). A rounding key
/// adds [`ROUND_KEY_PARAMS_BYTES`].
pub const SEEDED_KEY_OVERHEAD: usize = FRAME_BYTES + 57 + 4 * (16 + 8);

/// Bytes of a rounding key's parameters when it has a bootstrap key (two dimensions and a
/// deviation of 8 bytes, then 1 for the present decomposition and its two numbers of 4); an
/// input prefix (no bootstrap key) has 8 fewer.
pub const ROUND_KEY_PARAMS_BYTES: usize = 33;

/// The kind of a framed file, by its magic (without checking anything else).
pub fn kind_of(b: &[u8]) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.format().sniff(b))
}

/// Fingerprint of a parameter set.
pub fn fingerprint(p: &TfheParams) -> u64 {
    p.fingerprint()
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(MAX)
}

/// Frames `value` as a file of `kind` made for `p` in key pair `pair`.
fn frame(kind: Kind, p: &TfheParams, pair: KeyPairId, value: &impl Serialize) -> Vec<u8> {
    let mut payload = fingerprint(p).to_le_bytes().to_vec();
    payload.extend_from_slice(&pair.0.to_le_bytes());
    codec().serialize_into(&mut payload, value).expect("keys and ciphertexts always serialize");
    kind.format().frame(&payload)
}

/// The fingerprint a payload starts with.
fn fingerprint_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// The key pair a framed file belongs to (`KeyPairId(0)`: none), without checking the rest.
pub fn pair_of(b: &[u8]) -> Option<KeyPairId> {
    let payload = kind_of(b)?.format().unframe(b).ok()?;
    Some(KeyPairId(u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?)))
}

/// The key pair and the value bytes of a file of `kind` made for `p` (`what` names it in
/// decoding errors), after checking its kind, framing and fingerprint.
fn unframe_value<'a>(
    b: &'a [u8],
    kind: Kind,
    p: &TfheParams,
    what: &'static str,
) -> Result<(KeyPairId, &'a [u8]), FheError> {
    match kind_of(b) {
        None => return Err(FheError::NotAFile),
        Some(found) if found != kind => {
            let theirs = found.format().unframe(b).ok().and_then(fingerprint_of);
            let other_params = theirs.is_some_and(|f| f != fingerprint(p));
            return Err(FheError::WrongKind { found: found.name(), expected: kind.name(), other_params });
        }
        Some(_) => {}
    }
    let payload = kind.format().unframe(b)?;
    match fingerprint_of(payload) {
        None => Err(FheError::Decode { what, message: "no parameter fingerprint".into() }),
        Some(f) if f != fingerprint(p) => {
            Err(FheError::ParamsMismatch("the file was made for other TFHE parameters than this circuit's".into()))
        }
        Some(_) => {
            let pair = payload.get(8..16).ok_or(FheError::Decode { what, message: "no key pair".into() })?;
            let pair = KeyPairId(u64::from_le_bytes(pair.try_into().expect("8 bytes")));
            Ok((pair, &payload[16..]))
        }
    }
}

/// The bincode value `T` of a file's value bytes.
fn decode<T: DeserializeOwned>(value: &[u8], what: &'static str) -> Result<T, FheError> {
    codec().deserialize(value).map_err(|e| FheError::Decode { what, message: e.to_string() })
}

/// The key pair and the value of a file of `kind` made for `p` (`what` names it in
/// decoding errors).
fn unframe<T: DeserializeOwned>(
    b: &[u8],
    kind: Kind,
    p: &TfheParams,
    what: &'static str,
) -> Result<(KeyPairId, T), FheError> {
    let (pair, value) = unframe_value(b, kind, p, what)?;
    Ok((pair, decode(value, what)?))
}

impl ClientKey {
    /// Serializes the secret key.
    pub fn to_bytes(&self) -> Vec<u8> {
        frame(Kind::ClientKey, &self.params, self.pair, self)
    }

    /// Loads a secret key made for `p`.
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<ClientKey, FheError> {
        let (pair, mut k): (_, ClientKey) = unframe(b, Kind::ClientKey, p, "client key")?;
        k.pair = pair;
        if !k.matches(p) {
            return Err(FheError::ParamsMismatch("the client key does not match the circuit's parameters".into()));
        }
        Ok(k)
    }
}

impl ServerKey {
    /// Serializes the evaluation key.
    pub fn to_bytes(&self) -> Vec<u8> {
        frame(Kind::ServerKey, &self.params, self.pair, self)
    }

    /// Loads an evaluation key made for `p`, checking every dimension: the seeded form
    /// ([`Kind::SeededServerKey`], decompressed and converted to the Fourier domain, see
    /// [`SeededServerKey::decompress`]) or the full form ([`Kind::ServerKey`]). Any other
    /// file is refused as not being a server key.
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<ServerKey, FheError> {
        if kind_of(b) == Some(Kind::SeededServerKey) {
            return SeededServerKey::from_bytes(b, p)?.decompress();
        }
        let (pair, value) = unframe_value(b, Kind::ServerKey, p, "server key")?;
        // tfhe-rs's deserializers trust the dimensions they read: check them first.
        super::layout::check_server_key(value, p, codec())?;
        let mut k: ServerKey = decode(value, "server key")?;
        k.pair = pair;
        k.check(p)?;
        Ok(k)
    }
}

impl SeededServerKey {
    /// Serializes the seeded evaluation key (as a client sends it; exactly
    /// [`crate::evaluation_key_bytes`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        frame(Kind::SeededServerKey, &self.params, self.pair, self)
    }

    /// Loads a seeded evaluation key made for `p`, checking its body counts
    /// ([`SeededServerKey::check`]); decompress it with [`SeededServerKey::decompress`].
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<SeededServerKey, FheError> {
        let (pair, mut k): (_, SeededServerKey) = unframe(b, Kind::SeededServerKey, p, "seeded server key")?;
        k.pair = pair;
        k.check(p)?;
        Ok(k)
    }
}

impl CtTensor {
    /// Serializes the ciphertexts.
    pub fn to_bytes(&self, p: &TfheParams) -> Vec<u8> {
        self.to_bytes_bound(p, KeyPairId::default())
    }

    /// Serializes the tensor as a file of key pair `pair` (what the app API sends).
    pub fn to_bytes_bound(&self, p: &TfheParams, pair: KeyPairId) -> Vec<u8> {
        frame(Kind::Ciphertext, p, pair, self)
    }

    /// Loads ciphertexts made under `p`, checking their size.
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<CtTensor, FheError> {
        let (_, t): (_, CtTensor) = unframe(b, Kind::Ciphertext, p, "ciphertext")?;
        let words = numel(&t.shape).and_then(|n| n.checked_mul(p.big_dimension() + 1));
        if words != Some(t.data.len()) || t.bits == 0 || t.bits > 62 {
            return Err(FheError::Shape("the ciphertext's size does not match its shape and parameters".into()));
        }
        Ok(t)
    }
}

impl SeededCtTensor {
    /// Serializes the seeded ciphertexts (an encrypted image, as a client uploads it).
    pub fn to_bytes(&self, p: &TfheParams) -> Vec<u8> {
        self.to_bytes_bound(p, KeyPairId::default())
    }

    /// Serializes the tensor as a file of key pair `pair` (what the app API sends).
    pub fn to_bytes_bound(&self, p: &TfheParams, pair: KeyPairId) -> Vec<u8> {
        frame(Kind::SeededImage, p, pair, self)
    }

    /// Loads seeded ciphertexts made under `p`, checking one body per element and the
    /// encoding (not yet against a circuit: see [`SeededCtTensor::decompress_input`]).
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<SeededCtTensor, FheError> {
        let (_, t): (_, SeededCtTensor) = unframe(b, Kind::SeededImage, p, "seeded ciphertext")?;
        if numel(&t.shape) != Some(t.bodies.len()) || t.bits == 0 || t.bits > 62 {
            return Err(FheError::Shape(format!(
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
        self.to_bytes_bound(p, KeyPairId::default())
    }

    /// Serializes the tensor as a file of key pair `pair` (what the app API sends).
    pub fn to_bytes_bound(&self, p: &TfheParams, pair: KeyPairId) -> Vec<u8> {
        frame(Kind::CompactResult, p, pair, self)
    }

    /// Loads a result made under `p`, checking its size against its shape and `p`.
    pub fn from_bytes(b: &[u8], p: &TfheParams) -> Result<CompactCtTensor, FheError> {
        let (_, t): (_, CompactCtTensor) = unframe(b, Kind::CompactResult, p, "encrypted result")?;
        t.check(p)?;
        Ok(t)
    }
}
