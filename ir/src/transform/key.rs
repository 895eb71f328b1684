//! The client's transform key and its file (`transform.key`).
//!
//! A key is 32 bytes, independent of the scheme: every scheme draws from its own domains of
//! the keyed stream ([`super::KeyStream`]), so one key serves `etc`, `skk` and `tanaka`
//! alike. The file is the shared framing ([`crate::framing`]) with the magic `FHECTKEY`,
//! format version 1 and a payload of exactly the 32 key bytes, so a truncated, corrupt or
//! foreign file is an error naming what is wrong.

use crate::framing::{Format, FramingError};

/// File magic of a transform key.
pub const MAGIC: &[u8; 8] = b"FHECTKEY";
/// Format version of a transform key file.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// The key file's framing.
pub const FORMAT: Format =
    Format { magic: *MAGIC, name: "an fhec transform key", version: FORMAT_VERSION, max_payload: KEY_BYTES as u64 };

/// The secret of a keyed image transform: 32 bytes. It is the client's alone, never part of
/// a model or an artifact (a model's metadata names the scheme only). Its `Debug` form does
/// not show the bytes, and it has no serde form.
#[derive(Clone, PartialEq, Eq)]
pub struct TransformKey([u8; KEY_BYTES]);

/// Why bytes are not a transform key file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a frame of a transform key (wrong magic, version, length or checksum).
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// A valid frame whose payload is not 32 bytes.
    #[error("a transform key holds {KEY_BYTES} bytes, this file holds {0}")]
    Size(usize),
}

impl TransformKey {
    /// A key of these bytes (draw them from a cryptographic random generator).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> TransformKey {
        TransformKey(bytes)
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// The key file's bytes.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        FORMAT.frame(&self.0)
    }

    /// Reads a key file's bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<TransformKey, KeyError> {
        let payload = FORMAT.unframe(bytes)?;
        let key: [u8; KEY_BYTES] = payload.try_into().map_err(|_| KeyError::Size(payload.len()))?;
        Ok(TransformKey(key))
    }

    /// Whether `bytes` start with the magic of a key file.
    pub fn sniff(bytes: &[u8]) -> bool {
        FORMAT.sniff(bytes)
    }
}

impl std::fmt::Debug for TransformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransformKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_errors() {
        let k = TransformKey::from_bytes(std::array::from_fn(|i| i as u8));
        let b = k.to_file_bytes();
        assert_eq!(&b[..8], b"FHECTKEY");
        assert_eq!(b.len(), 32 + crate::framing::OVERHEAD);
        assert_eq!(TransformKey::from_file_bytes(&b), Ok(k.clone()));
        assert!(TransformKey::sniff(&b));
        for n in 0..b.len() {
            assert!(TransformKey::from_file_bytes(&b[..n]).is_err());
        }
        let e = TransformKey::from_file_bytes(b"FHECCLNT and more").unwrap_err();
        assert_eq!(e.to_string(), "not an fhec transform key (bad magic bytes)");
        let mut v = b.clone();
        v[8] = 2;
        assert!(TransformKey::from_file_bytes(&v).unwrap_err().to_string().contains("version 2 is not supported"));
        let mut c = b.clone();
        c[30] ^= 1;
        assert_eq!(TransformKey::from_file_bytes(&c), Err(KeyError::Framing(FramingError::Checksum)));
        let short = FORMAT.frame(&[1; 31]);
        assert_eq!(TransformKey::from_file_bytes(&short), Err(KeyError::Size(31)));
        assert_eq!(
            TransformKey::from_file_bytes(&short).unwrap_err().to_string(),
            "a transform key holds 32 bytes, this file holds 31"
        );
        let long = Format { max_payload: 64, ..FORMAT }.frame(&[1; 33]);
        assert!(matches!(TransformKey::from_file_bytes(&long), Err(KeyError::Framing(FramingError::TooLarge { .. }))));
    }

    #[test]
    fn debug_hides_the_bytes() {
        let k = TransformKey::from_bytes([0xab; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
    }
}
