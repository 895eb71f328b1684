//! Byte-level mutations (the havoc stage of AFL-style fuzzers): bit flips, interesting
//! integers at any offset in either byte order, arithmetic, truncation, deletion,
//! duplication, insertion and splices with another input. They know nothing of the format:
//! structure-aware mutations live with each target ([`crate::targets`]).

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

/// The campaign's random generator.
pub type Rng = Xoshiro256PlusPlus;

/// Largest input a mutation produces.
pub const MAX_LEN: usize = 4 << 20;

/// Integers that break size and index arithmetic: zero, one, all ones, signed extremes,
/// powers of two around 32 and 64 bits.
pub const INTERESTING: [u64; 18] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 48,
    1 << 62,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

/// An interesting integer, or a small or random one.
pub fn interesting(rng: &mut Rng) -> u64 {
    match rng.random_range(0..4) {
        0 => rng.random_range(0..64),
        1 => rng.random(),
        2 => INTERESTING[rng.random_range(0..INTERESTING.len())].wrapping_neg(),
        _ => INTERESTING[rng.random_range(0..INTERESTING.len())],
    }
}

/// Applies 1 to 4 random byte-level mutations to `input`; `other` is a second input to
/// splice with.
pub fn havoc(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    let n = 1 + rng.random_range(0..4u32).min(rng.random_range(0..4u32));
    for _ in 0..n {
        one(&mut b, other, rng);
    }
    b.truncate(MAX_LEN);
    b
}

/// One byte-level mutation in place.
pub fn one(b: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let len = b.len();
    let pos = |rng: &mut Rng| if len == 0 { 0 } else { rng.random_range(0..len) };
    match rng.random_range(0..13) {
        // Flip one to eight bits in a byte.
        0 | 1 if len > 0 => {
            let i = pos(rng);
            b[i] ^= 1 << rng.random_range(0..8);
        }
        2 if len > 0 => {
            let i = pos(rng);
            b[i] = rng.random();
        }
        // An interesting integer of 1, 2, 4 or 8 bytes, either byte order.
        3 | 4 if len > 0 => {
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let v = interesting(rng);
            // The low `width` bytes of the value, little- or big-endian.
            let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
            let src = if rng.random_bool(0.5) { &le[..width] } else { &be[8 - width..] };
            let i = pos(rng);
            let end = (i + width).min(len);
            b[i..end].copy_from_slice(&src[..end - i]);
        }
        // Add or subtract a small number to a byte or a little-endian word.
        5 if len > 0 => {
            let i = pos(rng);
            let d = rng.random_range(1..=35u8);
            if len - i >= 8 && rng.random_bool(0.5) {
                let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                let w = if rng.random_bool(0.5) { w.wrapping_add(d as u64) } else { w.wrapping_sub(d as u64) };
                b[i..i + 8].copy_from_slice(&w.to_le_bytes());
            } else {
                b[i] = if rng.random_bool(0.5) { b[i].wrapping_add(d) } else { b[i].wrapping_sub(d) };
            }
        }
        // Truncate.
        6 => {
            let at = pos(rng);
            b.truncate(at);
        }
        // Delete a range.
        7 if len > 1 => {
            let i = pos(rng);
            let n = rng.random_range(1..=(len - i).min(64));
            b.drain(i..i + n);
        }
        // Duplicate a range.
        8 if len > 0 => {
            let i = pos(rng);
            let n = rng.random_range(1..=(len - i).min(256));
            let chunk = b[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            b.splice(at..at, chunk);
        }
        // Insert random bytes.
        9 => {
            let n = rng.random_range(1..=16);
            let at = rng.random_range(0..=len);
            let chunk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.splice(at..at, chunk);
        }
        // Splice: a prefix of this input and a suffix of the other.
        10 | 11 if !other.is_empty() => {
            let at = rng.random_range(0..=len);
            let from = rng.random_range(0..other.len());
            b.truncate(at);
            b.extend_from_slice(&other[from..]);
        }
        // Overwrite a range with bytes of the other input.
        12 if len > 0 && !other.is_empty() => {
            let i = pos(rng);
            let j = rng.random_range(0..other.len());
            let n = rng.random_range(1..=(len - i).min(other.len() - j).min(64));
            b[i..i + n].copy_from_slice(&other[j..j + n]);
        }
        _ => {
            if len > 0 {
                let i = pos(rng);
                b[i] ^= 0xff;
            } else {
                b.push(rng.random());
            }
        }
    }
}
