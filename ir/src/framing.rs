//! The one file framing of fhec: artifacts ([`crate::artifact`]) and the runtime's keys
//! and ciphertexts share it.
//!
//! Layout: an 8-byte magic naming what the file holds, a little-endian `u32` format
//! version, a `u64` payload length, the payload, and a `u64` FNV-1a checksum of the payload
//! ([`OVERHEAD`] bytes around the payload). [`Format::unframe`] checks every field and a
//! size limit, so a truncated, corrupt, oversized or foreign file is an error naming what is
//! wrong ([`FramingError`]), never a panic.

/// Bytes before the payload: magic 8, version 4, length 8.
pub const HEADER_BYTES: usize = 20;
/// Bytes a frame adds to its payload (header and checksum).
pub const OVERHEAD: usize = HEADER_BYTES + 8;

/// One kind of framed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// The 8 bytes a file of this kind starts with.
    pub magic: [u8; 8],
    /// What the file holds, for messages ("a client key", "an fhec artifact").
    pub name: &'static str,
    /// The format version written and the only one read.
    pub version: u32,
    /// Largest payload accepted.
    pub max_payload: u64,
}

/// Why bytes are not a valid frame of a [`Format`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The bytes do not start with the format's magic.
    #[error("not {expected} (bad magic bytes)")]
    WrongKind {
        /// The expected kind's name.
        expected: &'static str,
    },
    /// Written in a format version this build does not read.
    #[error("{name} format version {found} is not supported (this fhec reads version {supported})")]
    Version {
        /// The kind's name.
        name: &'static str,
        /// Version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Shorter or longer than its header announces.
    #[error("the file is truncated or has trailing data ({len} bytes for {announced})")]
    Truncated {
        /// Bytes given.
        len: usize,
        /// What the header announces, in words.
        announced: String,
    },
    /// The payload's checksum does not match.
    #[error("the file is corrupt (checksum mismatch)")]
    Checksum,
    /// The header announces a payload over the size limit.
    #[error("the payload of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Announced payload bytes.
        len: u64,
        /// The format's limit.
        limit: u64,
    },
}

/// FNV-1a, 64 bits.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

impl Format {
    /// Whether `bytes` start with this format's magic (nothing else is checked).
    pub fn sniff(&self, bytes: &[u8]) -> bool {
        bytes.starts_with(&self.magic)
    }

    /// Frames `payload`.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&checksum(payload).to_le_bytes());
        out
    }

    /// The payload of a frame of this format, after checking the magic, the version, the
    /// length (against the bytes and the limit) and the checksum, in that order.
    pub fn unframe<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], FramingError> {
        if !self.sniff(bytes) {
            return Err(FramingError::WrongKind { expected: self.name });
        }
        if bytes.len() < HEADER_BYTES {
            return Err(FramingError::Truncated { len: bytes.len(), announced: "a header".into() });
        }
        let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if found != self.version {
            return Err(FramingError::Version { name: self.name, found, supported: self.version });
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        if len > self.max_payload {
            return Err(FramingError::TooLarge { len, limit: self.max_payload });
        }
        let end = HEADER_BYTES + len as usize;
        if bytes.len() != end + 8 {
            return Err(FramingError::Truncated { len: bytes.len(), announced: format!("a {len}-byte payload") });
        }
        let payload = &bytes[HEADER_BYTES..end];
        if checksum(payload).to_le_bytes() != bytes[end..] {
            return Err(FramingError::Checksum);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Format = Format { magic: *b"FHECTEST", name: "a test file", version: 3, max_payload: 100 };

    #[test]
    fn round_trip_and_every_error() {
        let b = F.frame(b"hello");
        assert_eq!(b.len(), 5 + OVERHEAD);
        assert_eq!(F.unframe(&b).unwrap(), b"hello");
        assert_eq!(F.unframe(b"FHECTES"), Err(FramingError::WrongKind { expected: "a test file" }));
        let other = Format { magic: *b"FHECOTHR", ..F };
        assert!(matches!(other.unframe(&b), Err(FramingError::WrongKind { .. })));
        for n in 0..b.len() {
            assert!(F.unframe(&b[..n]).is_err());
        }
        let mut v = b.clone();
        v[8] = 9;
        assert!(matches!(F.unframe(&v), Err(FramingError::Version { found: 9, .. })));
        let mut c = b.clone();
        c[21] ^= 1;
        assert_eq!(F.unframe(&c), Err(FramingError::Checksum));
        let big = F.frame(&[0; 101]);
        assert!(matches!(F.unframe(&big), Err(FramingError::TooLarge { len: 101, limit: 100 })));
        let mut long = b.clone();
        long.push(0);
        assert!(F.unframe(&long).unwrap_err().to_string().contains("trailing data"));
    }
}
