//! The image and dataset readers of `fhec_runtime::dataset`: IDX files (gzip or raw),
//! PNG and binary PGM images, NumPy `.npy` arrays.
//!
//! Properties beyond "no panic": an accepted dataset has one label per image and
//! `rows x cols` pixels per image; an accepted image has `rows x cols` pixels.

use std::io::{Read, Write};
use std::path::Path;

use arbitrary::Arbitrary;
use fhec_runtime::dataset::{Dataset, DatasetError, decode_image, npy_from_bytes};
use rand::RngExt;

use super::{Outcome, Target, arb, rejected};
use crate::mutate::{Rng, havoc, interesting};

/// The size images are decoded at (the bundled models' input).
const SIDE: usize = 28;

/// `Dataset::from_idx_bytes`: the input as an image file, then as a label file.
pub struct Idx;
/// `dataset::decode_image` of PNG bytes.
pub struct Png;
/// `dataset::decode_image` of binary PGM bytes.
pub struct Pgm;
/// `dataset::npy_from_bytes`.
pub struct Npy;

fn check(ds: &Dataset) -> Result<Outcome, String> {
    if ds.pixels.nrows() != ds.labels.len() || ds.pixels.ncols() != ds.rows * ds.cols {
        return Err(format!(
            "a dataset of {} labels for {} images of {} pixels, {}x{}",
            ds.labels.len(),
            ds.pixels.nrows(),
            ds.pixels.ncols(),
            ds.rows,
            ds.cols
        ));
    }
    Ok(Outcome::Accepted(format!("{}x{} images", ds.rows, ds.cols)))
}

/// A raw IDX file: `magic` and `dims` (big-endian), then `data`.
pub fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Gzip-compressed bytes.
pub fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("in memory");
    e.finish().expect("in memory")
}

/// Decompressed bytes of a gzip input (at most 16 MiB, for editing), or the input.
fn gunzip(b: &[u8]) -> (Vec<u8>, bool) {
    if !b.starts_with(&[0x1f, 0x8b]) {
        return (b.to_vec(), false);
    }
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(b).take(16 << 20).read_to_end(&mut out);
    (out, true)
}

impl Target for Idx {
    fn name(&self) -> &'static str {
        "idx"
    }

    fn about(&self) -> &'static str {
        "Dataset::from_idx_bytes (gzip or raw), the input as images then as labels"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let ds = fhec_runtime::dataset::bundled_sample(fhec_runtime::dataset::DatasetKind::Mnist);
        let images = idx(0x803, &[3, 28, 28], &ds.pixels.as_slice().expect("standard layout")[..3 * 784]);
        let labels = idx(0x801, &[3], &ds.labels[..3]);
        let small = idx(0x803, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        vec![gz(&images), images, gz(&labels), labels, small, idx(0x803, &[0, 28, 28], &[])]
    }

    fn mutate(&self, input: &[u8], _: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        let (mut b, was_gz) = gunzip(input);
        if b.len() < 8 {
            return None;
        }
        match rng.random_range(0..4) {
            // A header word (the magic or a dimension).
            0 | 1 => {
                let words = (b.len().min(16) / 4).max(1);
                let i = 4 * rng.random_range(0..words);
                let w = u32::from_be_bytes(b[i..i + 4].try_into().ok()?);
                let v = match rng.random_range(0..3) {
                    0 => w.wrapping_add(1),
                    1 => w.wrapping_sub(1),
                    _ => interesting(rng) as u32,
                };
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            // The data cut short or extended.
            2 => {
                let n = rng.random_range(1..64);
                if rng.random_bool(0.5) {
                    b.truncate(b.len().saturating_sub(n));
                } else {
                    b.extend(std::iter::repeat_n(7, n));
                }
            }
            _ => b = havoc(&b, &[], rng),
        }
        let rezip = if rng.random_bool(0.1) { !was_gz } else { was_gz };
        Some(if rezip { gz(&b) } else { b })
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        let (im, lb) = (Path::new("images.idx"), Path::new("labels.idx"));
        // As images: with no labels first, then with as many as the mismatch names.
        let as_images = match Dataset::from_idx_bytes(input, im, &idx(0x801, &[0], &[]), lb) {
            Err(DatasetError::Mismatch { n_images, .. }) if n_images <= 1_000_000 => {
                let labels = idx(0x801, &[n_images as u32], &vec![1; n_images]);
                Dataset::from_idx_bytes(input, im, &labels, lb)
            }
            r => r,
        };
        // As labels: with no images first, then with as many 1x1 images as it names.
        let as_labels = match Dataset::from_idx_bytes(&idx(0x803, &[0, 1, 1], &[]), im, input, lb) {
            Err(DatasetError::Mismatch { n_labels, .. }) if n_labels <= 1_000_000 => {
                let images = idx(0x803, &[n_labels as u32, 1, 1], &vec![0; n_labels]);
                Dataset::from_idx_bytes(&images, im, input, lb)
            }
            r => r,
        };
        match (as_images, as_labels) {
            (Ok(ds), _) | (_, Ok(ds)) => check(&ds),
            (Err(e), Err(f)) => {
                rejected(&f)?;
                rejected(e)
            }
        }
    }
}

/// One PNG chunk edit.
#[derive(Arbitrary, Debug)]
enum ChunkEdit {
    /// A byte of a chunk's data set to an interesting value (CRC fixed).
    Data { chunk: u8, at: u16 },
    /// A 4-byte big-endian word of a chunk's data (IHDR's width or height) (CRC fixed).
    Word { chunk: u8, at: u8 },
    /// Byte-level mutations of a chunk's data (CRC fixed).
    Havoc { chunk: u8 },
    /// A chunk removed, duplicated or moved.
    Order { chunk: u8, to: u8, how: u8 },
    /// A chunk's CRC or length field broken.
    Frame { chunk: u8, crc: bool },
}

/// PNG chunks: (type, data), after the 8-byte signature.
fn chunks(b: &[u8]) -> Option<Vec<([u8; 4], Vec<u8>)>> {
    let mut out = vec![];
    let mut i = 8;
    while i + 12 <= b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().ok()?) as usize;
        let ty: [u8; 4] = b[i + 4..i + 8].try_into().ok()?;
        let data = b.get(i + 8..(i + 8).checked_add(len)?)?.to_vec();
        out.push((ty, data));
        i += 12 + len;
    }
    (!out.is_empty() && b.starts_with(b"\x89PNG\r\n\x1a\n")).then_some(out)
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
        }
    }
    !c
}

fn png_bytes(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    for (ty, data) in chunks {
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(ty);
        b.extend_from_slice(data);
        b.extend_from_slice(&crc32(&[ty, data]).to_be_bytes());
    }
    b
}

/// A PNG of `w x h` in `color` at `depth` bits (pixels from a pattern).
pub fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(color);
    e.set_depth(depth);
    if color == png::ColorType::Indexed {
        e.set_palette((0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect::<Vec<u8>>());
    }
    let bits = color.samples() * depth as usize;
    let row = (w as usize * bits).div_ceil(8);
    let data: Vec<u8> = (0..row * h as usize).map(|i| (i * 37 % 251) as u8).collect();
    let mut wr = e.write_header().expect("header");
    wr.write_image_data(&data).expect("data");
    wr.finish().expect("finish");
    out
}

impl Target for Png {
    fn name(&self) -> &'static str {
        "png"
    }

    fn about(&self) -> &'static str {
        "dataset::decode_image of PNG bytes (what --calib and image folders read)"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        use png::{BitDepth as D, ColorType as C};
        let mut v = vec![];
        for (c, d) in [
            (C::Grayscale, D::Eight),
            (C::Grayscale, D::Sixteen),
            (C::Grayscale, D::One),
            (C::Grayscale, D::Four),
            (C::Rgb, D::Eight),
            (C::Rgba, D::Sixteen),
            (C::GrayscaleAlpha, D::Eight),
            (C::Indexed, D::Eight),
            (C::Indexed, D::Two),
        ] {
            v.push(png(SIDE as u32, SIDE as u32, c, d));
        }
        v.push(png(3, 5, C::Rgb, D::Eight));
        v
    }

    fn mutate(&self, input: &[u8], _: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        let mut cs = chunks(input)?;
        let n = cs.len();
        match arb::<ChunkEdit>(rng)? {
            ChunkEdit::Data { chunk, at } => {
                let d = &mut cs[chunk as usize % n].1;
                if !d.is_empty() {
                    let i = at as usize % d.len();
                    d[i] = interesting(rng) as u8;
                }
            }
            ChunkEdit::Word { chunk, at } => {
                let d = &mut cs[chunk as usize % n].1;
                if d.len() >= 4 {
                    let i = at as usize % (d.len() - 3);
                    let v = if rng.random_bool(0.5) { interesting(rng) as u32 } else { rng.random_range(0..64) };
                    d[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            ChunkEdit::Havoc { chunk } => {
                let d = &mut cs[chunk as usize % n].1;
                *d = havoc(d, &[], rng);
            }
            ChunkEdit::Order { chunk, to, how } => {
                let (i, j) = (chunk as usize % n, to as usize % n);
                match how % 3 {
                    0 => {
                        cs.remove(i);
                    }
                    1 => {
                        let c = cs[i].clone();
                        cs.insert(j, c);
                    }
                    _ => cs.swap(i, j),
                }
            }
            ChunkEdit::Frame { chunk, crc } => {
                let mut b = png_bytes(&cs);
                // Find the chunk's offset again and break its CRC or length.
                let mut off = 8;
                for (_, d) in cs.iter().take(chunk as usize % n) {
                    off += 12 + d.len();
                }
                let len = cs[chunk as usize % n].1.len();
                let at = if crc { off + 8 + len } else { off };
                if let Some(x) = b.get_mut(at) {
                    *x ^= 0x40;
                }
                return Some(b);
            }
        }
        Some(png_bytes(&cs))
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        image(input, Path::new("image.png"))
    }
}

fn image(input: &[u8], path: &Path) -> Result<Outcome, String> {
    match decode_image(input, path, SIDE, SIDE) {
        Ok(px) if px.len() == SIDE * SIDE => Ok(Outcome::Accepted("image".into())),
        Ok(px) => Err(format!("{} pixels for a {SIDE}x{SIDE} image", px.len())),
        Err(e) => rejected(e),
    }
}

/// A binary PGM of `w x h` with `maxval`, a comment in the header.
pub fn pgm(w: usize, h: usize, maxval: usize) -> Vec<u8> {
    let mut b = format!("P5\n# fuzz seed\n{w} {h}\n{maxval}\n").into_bytes();
    b.extend((0..w * h).map(|i| (i * 7 % (maxval + 1)) as u8));
    b
}

impl Target for Pgm {
    fn name(&self) -> &'static str {
        "pgm"
    }

    fn about(&self) -> &'static str {
        "dataset::decode_image of binary PGM (P5) bytes"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut tight = format!("P5 {SIDE} {SIDE} 255 ").into_bytes();
        tight.extend(std::iter::repeat_n(9, SIDE * SIDE));
        vec![pgm(SIDE, SIDE, 255), pgm(SIDE, SIDE, 15), pgm(4, 3, 255), tight]
    }

    fn mutate(&self, input: &[u8], _: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        // Rewrite one number of the header (the digits after "P5").
        let text_end = input.len().min(64);
        let head = &input[..text_end];
        let numbers: Vec<(usize, usize)> = {
            let mut v = vec![];
            let mut i = 2;
            while i < head.len() {
                if head[i].is_ascii_digit() {
                    let s = i;
                    while i < head.len() && head[i].is_ascii_digit() {
                        i += 1;
                    }
                    v.push((s, i));
                } else {
                    i += 1;
                }
            }
            v
        };
        let &(s, e) = numbers.get(rng.random_range(0..numbers.len().max(1)))?;
        let v = match rng.random_range(0..4) {
            0 => interesting(rng).to_string(),
            1 => rng.random_range(0..300u32).to_string(),
            2 => "99999999999999999999999".into(),
            _ => String::new(),
        };
        let mut out = input[..s].to_vec();
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(&input[e..]);
        Some(out)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        image(input, Path::new("image.pgm"))
    }
}

/// A `.npy` file: version 1 header `dict` (padded), then `data`.
pub fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

impl Target for Npy {
    fn name(&self) -> &'static str {
        "npy"
    }

    fn about(&self) -> &'static str {
        "dataset::npy_from_bytes (uint8 and float images, every accepted layout)"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let floats: Vec<u8> = (0..2 * 16).flat_map(|i| (i as f32 / 32.0).to_le_bytes()).collect();
        let doubles: Vec<u8> = (0..9).flat_map(|i| (i as f64 * 20.0).to_le_bytes()).collect();
        vec![
            npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3), }", &[5; 18]),
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 4, 4), }", &floats),
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 9), }", &doubles),
            npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2, 1), }", &[1, 2, 3, 4]),
        ]
    }

    fn mutate(&self, input: &[u8], _: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
        let start = input.iter().position(|&c| c == b'{')?;
        let end = start + input[start..].iter().position(|&c| c == b'}')? + 1;
        let dict = std::str::from_utf8(&input[start..end]).ok()?;
        let data = &input[input[end..].iter().position(|&c| c == b'\n').map_or(end, |p| end + p + 1)..];
        let value = |rng: &mut Rng| match rng.random_range(0..3) {
            0 => interesting(rng).to_string(),
            1 => rng.random_range(0..5u32).to_string(),
            _ => "18446744073709551615".to_string(),
        };
        let new = match rng.random_range(0..5) {
            0 => {
                let shape = (0..rng.random_range(0..5)).map(|_| value(rng)).collect::<Vec<_>>().join(", ");
                format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({shape},), }}")
            }
            1 => dict.replace("|u1", ["<f4", "<f8", ">f4", "<i8", "u1", "<u1", "|b1"][rng.random_range(0..7)]),
            2 => dict.replace("False", "True"),
            3 => dict.replace(['(', ')'], ""),
            _ => {
                let mut d = dict.to_string();
                if let Some(i) = d.find(|c: char| c.is_ascii_digit()) {
                    d.insert_str(i, &value(rng));
                }
                d
            }
        };
        let mut data = data.to_vec();
        if rng.random_bool(0.3) {
            data = havoc(&data, &[], rng);
        }
        let mut out = npy(&new, &data);
        if rng.random_bool(0.2) {
            // The format version or the header length.
            let i = rng.random_range(6..10);
            out[i] = interesting(rng) as u8;
        }
        Some(out)
    }

    fn run(&self, input: &[u8]) -> Result<Outcome, String> {
        match npy_from_bytes(input, Path::new("images.npy")) {
            Ok(ds) => check(&ds),
            Err(e) => rejected(e),
        }
    }
}
