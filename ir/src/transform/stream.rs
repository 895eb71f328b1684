//! The keyed byte stream every transform draws its permutations and bits from, and the
//! integers, permutations and bits read from it. The exact definitions are in the
//! documentation of [`crate::transform`] (the Python mirror `examples/train/transforms.py`
//! follows them bit for bit).

use sha2::{Digest, Sha256};

use super::key::TransformKey;

/// A source of bytes, read in order. [`KeyStream`] is the one the transforms use; the
/// readers below are written over this trait so that tests can feed chosen bytes.
pub(crate) trait ByteSource {
    /// The next byte.
    fn next_byte(&mut self) -> u8;

    /// The next 4 bytes as a little-endian `u32`.
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.next_byte(), self.next_byte(), self.next_byte(), self.next_byte()])
    }

    /// A uniform integer in `0..n` by rejection sampling: draw `x` = [`ByteSource::next_u32`]
    /// until `x < 2^32 - (2^32 mod n)`, then return `x mod n`. For `n <= 1` it returns 0 and
    /// reads nothing.
    fn uniform(&mut self, n: u32) -> u32 {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let limit = (1u64 << 32) - (1u64 << 32) % n;
        loop {
            let x = self.next_u32() as u64;
            if x < limit {
                return (x % n) as u32;
            }
        }
    }

    /// A permutation of `0..m` by Fisher-Yates: start from the identity `a`, and for `i`
    /// from `m - 1` down to 1 swap `a[i]` with `a[uniform(i + 1)]`.
    fn permutation(&mut self, m: u32) -> Vec<u32> {
        let mut a: Vec<u32> = (0..m).collect();
        for i in (1..m).rev() {
            let j = self.uniform(i + 1);
            a.swap(i as usize, j as usize);
        }
        a
    }

    /// `count` bits, least significant bit of each byte first: bit `k` is bit `k mod 8` of
    /// byte `k / 8`. Reads `ceil(count / 8)` bytes.
    fn bits(&mut self, count: usize) -> Vec<bool> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let b = self.next_byte();
            for k in 0..8 {
                if out.len() < count {
                    out.push((b >> k) & 1 == 1);
                }
            }
        }
        out
    }
}

/// The keyed byte stream of one key and one domain: the concatenation of the SHA-256
/// digests of `key || domain || counter` for `counter = 0, 1, 2, ...` (the 32 key bytes, the
/// domain's UTF-8 bytes, the counter as a little-endian `u64`).
pub struct KeyStream {
    prefix: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    pos: usize,
}

impl KeyStream {
    /// The stream of `key` for `domain` (one of the names in [`crate::transform`]).
    pub fn new(key: &TransformKey, domain: &str) -> KeyStream {
        let mut prefix = Vec::with_capacity(32 + domain.len());
        prefix.extend_from_slice(key.bytes());
        prefix.extend_from_slice(domain.as_bytes());
        KeyStream { prefix, counter: 0, block: [0; 32], pos: 32 }
    }

    /// The next byte of the stream.
    pub fn next_byte(&mut self) -> u8 {
        ByteSource::next_byte(self)
    }

    /// A uniform integer in `0..n` (rejection sampling; see the module documentation).
    pub fn uniform(&mut self, n: u32) -> u32 {
        ByteSource::uniform(self, n)
    }

    /// A keyed permutation of `0..m` (Fisher-Yates).
    pub fn permutation(&mut self, m: u32) -> Vec<u32> {
        ByteSource::permutation(self, m)
    }

    /// `count` keyed bits (least significant bit of each byte first).
    pub fn bits(&mut self, count: usize) -> Vec<bool> {
        ByteSource::bits(self, count)
    }
}

impl ByteSource for KeyStream {
    fn next_byte(&mut self) -> u8 {
        if self.pos == 32 {
            let mut h = Sha256::new();
            h.update(&self.prefix);
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.pos = 0;
        }
        let b = self.block[self.pos];
        self.pos += 1;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chosen bytes, then zeros.
    struct Fixed(Vec<u8>, usize);

    impl ByteSource for Fixed {
        fn next_byte(&mut self) -> u8 {
            let b = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            b
        }
    }

    #[test]
    fn uniform_rejects_the_biased_tail() {
        // 2^32 mod 3 = 1: 0xffffffff is the one rejected draw; the next (7) gives 7 mod 3.
        let mut s = Fixed(vec![0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0], 0);
        assert_eq!(s.uniform(3), 1);
        assert_eq!(s.1, 8);
        // 0xfffffffe is accepted: 4294967294 mod 3 = 2.
        let mut s = Fixed(vec![0xfe, 0xff, 0xff, 0xff], 0);
        assert_eq!(s.uniform(3), 2);
        assert_eq!(s.1, 4);
        // A power of two never rejects; n = 1 reads nothing.
        let mut s = Fixed(vec![0xff; 4], 0);
        assert_eq!(s.uniform(4), 3);
        assert_eq!(s.uniform(1), 0);
        assert_eq!(s.1, 4);
    }

    #[test]
    fn bits_are_lsb_first() {
        let mut s = Fixed(vec![0b0000_0110, 0b1000_0000], 0);
        let b = s.bits(16);
        let ones: Vec<usize> = (0..16).filter(|&k| b[k]).collect();
        assert_eq!(ones, [1, 2, 15]);
        let mut s = Fixed(vec![0xff, 0xff], 0);
        assert_eq!(s.bits(3).len(), 3);
        assert_eq!(s.1, 1);
    }

    #[test]
    fn fisher_yates_on_chosen_draws() {
        // m = 3: i = 2 draws uniform(3) = 5 mod 3 = 2 (a[2] stays), i = 1 draws uniform(2) =
        // 1 (a[1] stays): the identity.
        let mut s = Fixed(vec![5, 0, 0, 0, 1, 0, 0, 0], 0);
        assert_eq!(s.permutation(3), [0, 1, 2]);
        // uniform(3) = 3 mod 3 = 0: swap a[2] and a[0] ([2, 1, 0]); uniform(2) = 0: swap a[1]
        // and a[0] ([1, 2, 0]).
        let mut s = Fixed(vec![3, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(s.permutation(3), [1, 2, 0]);
    }

    #[test]
    fn stream_is_sha256_of_key_domain_counter() {
        let key = TransformKey::from_bytes([7; 32]);
        let mut s = KeyStream::new(&key, "d");
        let bytes: Vec<u8> = (0..64).map(|_| s.next_byte()).collect();
        for counter in 0u64..2 {
            let mut h = Sha256::new();
            h.update([7u8; 32]);
            h.update(b"d");
            h.update(counter.to_le_bytes());
            let d: [u8; 32] = h.finalize().into();
            assert_eq!(bytes[32 * counter as usize..][..32], d);
        }
        let other: Vec<u8> = {
            let mut e = KeyStream::new(&key, "e");
            (0..32).map(|_| e.next_byte()).collect()
        };
        assert_ne!(other, bytes[..32], "another domain, another stream");
    }
}
