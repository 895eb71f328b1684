//! One grayscale image file: reading PNG and binary PGM (P5) images of any size as 8-bit
//! pixels (what `--image`, image folders and `fhec transform` read), and writing them, with
//! 8 bits per pixel or 4 (values 0 to 15, for the sub-pixels of Tanaka's transform,
//! [`fhec_ir::transform`]).
//!
//! Reading converts to 8 bits: colour PNGs to luma, 16-bit samples keep their high byte, and
//! narrower samples scale to the full range (a 4-bit value `v` reads as `17·v`, from a PNG
//! of bit depth 4 or a PGM of maxval 15 alike).

use std::path::Path;

use crate::dataset::DatasetError;

/// Largest image side read.
pub const MAX_SIDE: usize = 4096;

/// An 8-bit grayscale image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    /// Height.
    pub rows: usize,
    /// Width.
    pub cols: usize,
    /// `rows · cols` pixels.
    pub pixels: Vec<u8>,
}

/// A file format of [`encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG, grayscale.
    Png,
    /// Binary PGM (P5).
    Pgm,
}

impl ImageFormat {
    /// The format a file name's extension names (`.png`, `.pgm`, any case).
    pub fn of_path(path: &Path) -> Option<ImageFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(ImageFormat::Png),
            "pgm" => Some(ImageFormat::Pgm),
            _ => None,
        }
    }
}

/// Bits per pixel of a written image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Values 0 to 255.
    Eight,
    /// Values 0 to 15 (a PNG of bit depth 4, a PGM of maxval 15).
    Four,
}

/// Why an image cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A value too large for 4 bits.
    #[error("value {value} at index {index} does not fit 4 bits (0 to 15)")]
    Value {
        /// Index of the pixel.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// No pixels, a side over [`MAX_SIDE`], or a buffer of another size.
    #[error("cannot write a {cols}x{rows} image of {len} pixels (sides 1 to {MAX_SIDE})")]
    Size {
        /// Height.
        rows: usize,
        /// Width.
        cols: usize,
        /// Pixels given.
        len: usize,
    },
    /// The PNG encoder failed.
    #[error("cannot encode the PNG: {0}")]
    Png(String),
}

/// What `bytes` hold, for messages: `PGM image` when they start with `P5` or the file name
/// ends in `.pgm`, else `PNG image`.
pub fn kind_of(bytes: &[u8], path: &Path) -> &'static str {
    if bytes.starts_with(b"P5") || ImageFormat::of_path(path) == Some(ImageFormat::Pgm) {
        "PGM image"
    } else {
        "PNG image"
    }
}

/// Reads one `.png` or binary `.pgm` image of any size.
pub fn read(path: &Path) -> Result<GrayImage, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::Io { path: path.into(), source: e })?;
    decode(&bytes, path)
}

/// Decodes the bytes of a `.png` or binary `.pgm` image (`path` only names it in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<GrayImage, DatasetError> {
    let what = kind_of(bytes, path);
    let bad = |reason: String| DatasetError::Format { path: path.into(), what, reason };
    let (cols, rows, pixels) =
        if what == "PGM image" { read_pgm(bytes).map_err(bad)? } else { read_png(bytes).map_err(bad)? };
    Ok(GrayImage { rows, cols, pixels })
}

/// The file bytes of `img` in `format` at `depth`.
pub fn encode(img: &GrayImage, format: ImageFormat, depth: Depth) -> Result<Vec<u8>, EncodeError> {
    let (rows, cols, len) = (img.rows, img.cols, img.pixels.len());
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE || len != rows * cols {
        return Err(EncodeError::Size { rows, cols, len });
    }
    if depth == Depth::Four
        && let Some((index, &value)) = img.pixels.iter().enumerate().find(|(_, v)| **v > 15)
    {
        return Err(EncodeError::Value { index, value });
    }
    Ok(match format {
        ImageFormat::Pgm => {
            let max = if depth == Depth::Four { 15 } else { 255 };
            let mut out = format!("P5\n{cols} {rows}\n{max}\n").into_bytes();
            out.extend_from_slice(&img.pixels);
            out
        }
        ImageFormat::Png => {
            let data: Vec<u8> = match depth {
                Depth::Eight => img.pixels.clone(),
                // Two pixels a byte, the first in the high nibble; each row starts a byte.
                Depth::Four => img
                    .pixels
                    .chunks(cols)
                    .flat_map(|row| row.chunks(2).map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0)))
                    .collect(),
            };
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, cols as u32, rows as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(if depth == Depth::Four { png::BitDepth::Four } else { png::BitDepth::Eight });
            let png = |e: png::EncodingError| EncodeError::Png(e.to_string());
            let mut w = enc.write_header().map_err(png)?;
            w.write_image_data(&data).map_err(png)?;
            w.finish().map_err(png)?;
            out
        }
    })
}
fn read_pgm(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    // Header: "P5" whitespace width whitespace height whitespace maxval single-whitespace data
    if !b.starts_with(b"P5") {
        return Err("missing the P5 magic of a binary PGM".into());
    }
    let mut fields = vec![];
    let mut i = 2;
    while fields.len() < 3 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                // A comment runs to the end of its line (the newline is whitespace), or of the file.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let v: usize =
            std::str::from_utf8(&b[start..i]).ok().and_then(|s| s.parse().ok()).ok_or("malformed PGM header")?;
        fields.push(v);
    }
    let (w, h, max) = (fields[0], fields[1], fields[2]);
    if max == 0 || max > 255 || w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("unsupported PGM ({w}x{h}, maxval {max}; 8-bit only)"));
    }
    let data = b.get(i + 1..i + 1 + w * h).ok_or("truncated PGM data")?;
    Ok((w, h, data.iter().map(|&p| ((p as usize * 255) / max) as u8).collect()))
}

fn read_png(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(b));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| format!("not a readable PNG: {e}"))?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("implausible PNG size {w}x{h}"));
    }
    // png 0.17 panics expanding a palette of a length that is not whole RGB entries, or of
    // more than 256 of them (image-rs/image-png#694): refuse those first.
    if reader.info().color_type == png::ColorType::Indexed {
        let n = reader.info().palette.as_ref().map_or(0, |p| p.len());
        if n == 0 || n % 3 != 0 || n > 3 * 256 {
            return Err(format!("invalid palette of {n} bytes (1 to 256 RGB entries of 3 bytes)"));
        }
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("not a readable PNG: {e}"))?;
    let ch = info.color_type.samples();
    let luma = |px: &[u8]| -> u8 {
        match ch {
            1 | 2 => px[0],
            _ => ((299 * px[0] as u32 + 587 * px[1] as u32 + 114 * px[2] as u32) / 1000) as u8,
        }
    };
    Ok((w, h, buf[..w * h * ch].chunks_exact(ch).map(luma).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_both_depths() {
        let p = Path::new("x");
        for (rows, cols) in [(1, 1), (3, 5), (28, 28), (2, 7)] {
            let px8: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 256) as u8).collect();
            let px4: Vec<u8> = px8.iter().map(|v| v & 15).collect();
            for format in [ImageFormat::Png, ImageFormat::Pgm] {
                let img = GrayImage { rows, cols, pixels: px8.clone() };
                assert_eq!(decode(&encode(&img, format, Depth::Eight).unwrap(), p).unwrap(), img);
                let img4 = GrayImage { rows, cols, pixels: px4.clone() };
                let back = decode(&encode(&img4, format, Depth::Four).unwrap(), p).unwrap();
                let scaled: Vec<u8> = px4.iter().map(|v| v * 17).collect();
                assert_eq!(back, GrayImage { rows, cols, pixels: scaled }, "{format:?} {rows}x{cols}");
            }
        }
    }

    #[test]
    fn encode_refuses_what_it_cannot_write() {
        let img = GrayImage { rows: 1, cols: 2, pixels: vec![3, 16] };
        assert_eq!(encode(&img, ImageFormat::Png, Depth::Four), Err(EncodeError::Value { index: 1, value: 16 }));
        let img = GrayImage { rows: 2, cols: 2, pixels: vec![0; 3] };
        assert!(matches!(encode(&img, ImageFormat::Pgm, Depth::Eight), Err(EncodeError::Size { len: 3, .. })));
        assert_eq!(ImageFormat::of_path(Path::new("a.PNG")), Some(ImageFormat::Png));
        assert_eq!(ImageFormat::of_path(Path::new("a.jpg")), None);
    }
}
