//! Structure-aware mutation of fhec's framed files (artifacts, keys, ciphertexts; see
//! `fhec_ir::framing`): byte-level mutations would almost never get past the checksum, so
//! these edit the payload and then fix the length and checksum (reaching the decoders), or
//! edit one header field of an otherwise valid frame (testing the framing itself).

use arbitrary::Arbitrary;
use fhec_ir::framing::{HEADER_BYTES, OVERHEAD, checksum};
use rand::RngExt;

use crate::mutate::{self, Rng};

/// A frame split into its fields (leniently: the length field is not checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The 8-byte magic.
    pub magic: [u8; 8],
    /// The format version.
    pub version: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Every magic of an fhec framed file (artifact, client part, then the runtime's kinds).
pub const MAGICS: [&[u8; 8]; 8] =
    [b"FHECART\0", b"FHECCLNT", b"FHECCLKY", b"FHECSVKY", b"FHECCTXT", b"FHECSIMG", b"FHECRSLT", b"FHECSSKY"];

/// Splits bytes that start with an fhec magic and are long enough to hold a frame; the
/// payload is everything between the header and the last 8 bytes.
pub fn split(b: &[u8]) -> Option<Frame> {
    if b.len() < OVERHEAD || !MAGICS.iter().any(|m| b.starts_with(&m[..])) {
        return None;
    }
    Some(Frame {
        magic: b[..8].try_into().ok()?,
        version: u32::from_le_bytes(b[8..12].try_into().ok()?),
        payload: b[HEADER_BYTES..b.len() - 8].to_vec(),
    })
}

/// The bytes of a frame, with its length and checksum right.
pub fn join(f: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.payload.len() + OVERHEAD);
    out.extend_from_slice(&f.magic);
    out.extend_from_slice(&f.version.to_le_bytes());
    out.extend_from_slice(&(f.payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&f.payload);
    out.extend_from_slice(&checksum(&f.payload).to_le_bytes());
    out
}

/// Whether the frame's length field and checksum are right (nothing else is checked).
pub fn is_sound(b: &[u8]) -> bool {
    split(b).is_some_and(|f| join(&f) == b)
}

/// The key pair identity in a runtime file's payload (bytes 8..16), if it has one.
pub fn pair(f: &Frame) -> Option<u64> {
    Some(u64::from_le_bytes(f.payload.get(8..16)?.try_into().ok()?))
}

/// Replaces the key pair identity of a sound runtime frame (`from` -> `to`), fixing the
/// checksum; anything else is returned unchanged. The app targets store inputs with a
/// placeholder identity and run them with the identity of this run's keys.
pub fn swap_pair(b: &[u8], from: u64, to: u64) -> Vec<u8> {
    match split(b) {
        Some(mut f) if is_sound(b) && pair(&f) == Some(from) => {
            f.payload[8..16].copy_from_slice(&to.to_le_bytes());
            join(&f)
        }
        _ => b.to_vec(),
    }
}

/// One edit of a frame.
#[derive(Arbitrary, Debug)]
pub enum FrameEdit {
    /// Byte-level mutations of the payload; the length and checksum are fixed.
    Payload,
    /// An 8-byte little-endian word of the payload that looks like a length or a count (a
    /// fixed-width bincode length prefix) set to an interesting value; frame fixed.
    LengthWord,
    /// The payload cut short or extended with zeros; frame fixed.
    Resize(u16, bool),
    /// Another format version.
    Version(u32),
    /// The length field set to a value (the checksum is left as it was).
    LengthField(u64),
    /// Another kind's magic, frame fixed.
    Magic(u8),
    /// One bit of the checksum flipped.
    Checksum(u8),
    /// Bytes appended after the frame.
    Trailing(u8),
    /// The header alone, or a prefix of it.
    HeaderOnly(u8),
}

/// A random structure-aware edit of a framed input (`None` if it is not a frame).
pub fn mutate(b: &[u8], other: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut f = split(b)?;
    let edit: FrameEdit = crate::targets::arb(rng)?;
    Some(match edit {
        FrameEdit::Payload => {
            let other = split(other).map(|o| o.payload).unwrap_or_default();
            f.payload = mutate::havoc(&f.payload, &other, rng);
            join(&f)
        }
        FrameEdit::LengthWord => {
            length_word(&mut f.payload, rng);
            join(&f)
        }
        FrameEdit::Resize(n, grow) => {
            if grow {
                f.payload.resize(f.payload.len() + n as usize % 4096, 0);
            } else {
                f.payload.truncate(f.payload.len().saturating_sub(1 + n as usize % 4096));
            }
            join(&f)
        }
        FrameEdit::Version(v) => {
            f.version = if rng.random_bool(0.5) { f.version.wrapping_add(v % 3).wrapping_sub(1) } else { v };
            join(&f)
        }
        FrameEdit::LengthField(v) => {
            let mut out = join(&f);
            let v = if rng.random_bool(0.5) { mutate::interesting(rng) } else { v };
            out[12..20].copy_from_slice(&v.to_le_bytes());
            out
        }
        FrameEdit::Magic(i) => {
            f.magic = *MAGICS[i as usize % MAGICS.len()];
            join(&f)
        }
        FrameEdit::Checksum(bit) => {
            let mut out = join(&f);
            let n = out.len();
            out[n - 8 + (bit as usize / 8) % 8] ^= 1 << (bit % 8);
            out
        }
        FrameEdit::Trailing(n) => {
            let mut out = join(&f);
            out.extend(std::iter::repeat_n(0xA5, 1 + n as usize % 16));
            out
        }
        FrameEdit::HeaderOnly(n) => join(&f)[..(n as usize % (HEADER_BYTES + 1)).max(1)].to_vec(),
    })
}

/// Sets one little-endian `u64` of `payload` whose value is a plausible length (1 to
/// 2^24, at most the payload's size) to an interesting value, or to a near neighbour.
pub fn length_word(payload: &mut [u8], rng: &mut Rng) {
    if payload.len() < 8 {
        return;
    }
    let limit = (payload.len() as u64).min(1 << 24);
    let candidates: Vec<usize> = (0..=payload.len() - 8)
        .filter(|&i| {
            let w = u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
            (1..=limit).contains(&w)
        })
        .take(4096)
        .collect();
    let i = if candidates.is_empty() {
        rng.random_range(0..=payload.len() - 8)
    } else {
        candidates[rng.random_range(0..candidates.len())]
    };
    let w = u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    let v = match rng.random_range(0..4) {
        0 => w.wrapping_add(1),
        1 => w.wrapping_sub(1),
        2 => w.wrapping_mul(2),
        _ => mutate::interesting(rng),
    };
    payload[i..i + 8].copy_from_slice(&v.to_le_bytes());
}

/// The runtime files' value codec (`fhec_runtime::fhe::files`: fixed-width bincode).
fn codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(8 << 30)
}

/// The fingerprint, key pair and value of a runtime file, decoded without any check
/// (`None` if the value does not decode).
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<(u64, u64, T)> {
    use bincode::Options;
    let f = split(b)?;
    let fp = u64::from_le_bytes(f.payload.get(..8)?.try_into().ok()?);
    let pair = pair(&f)?;
    Some((fp, pair, codec().deserialize(&f.payload[16..]).ok()?))
}

/// A sound runtime file of `magic` holding `value` with the given fingerprint and pair.
pub fn encode<T: serde::Serialize>(magic: [u8; 8], fingerprint: u64, pair: u64, value: &T) -> Vec<u8> {
    use bincode::Options;
    let mut payload = fingerprint.to_le_bytes().to_vec();
    payload.extend_from_slice(&pair.to_le_bytes());
    codec().serialize_into(&mut payload, value).expect("serializes");
    join(&Frame { magic, version: fhec_runtime::fhe::files::VERSION, payload })
}

/// The value of an `ir` framed file (artifact, client part: varint bincode) of `magic`,
/// decoded without its verifier (`None` if it is another kind or does not decode).
pub fn decode_ir<T: serde::de::DeserializeOwned>(b: &[u8], magic: [u8; 8], limit: u64) -> Option<T> {
    use bincode::Options;
    let f = split(b)?;
    if f.magic != magic {
        return None;
    }
    bincode::DefaultOptions::new().with_varint_encoding().with_limit(limit).deserialize(&f.payload).ok()
}
