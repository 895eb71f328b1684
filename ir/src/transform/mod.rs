//! Keyed pixel transforms of grayscale images ("learnable image encryption"): the
//! transforms people apply to images before training and inference instead of encrypting
//! them, so that a model trained on transformed images classifies transformed images.
//!
//! **They are not encryption in the cryptographic sense.** Each is a fixed keyed
//! permutation of pixel (or half-pixel) positions with a keyed negation of some of them; the
//! same key transforms every image the same way, and the attacks of arXiv 2004.13263 recover
//! recognisable content from transformed images. fhec provides them to study and compare
//! with TFHE, which does hide the image.
//!
//! # Schemes
//!
//! An image is `h x w` 8-bit pixels, row-major. A transform is deterministic for a key: the
//! same key and the same image size always give the same map, for every image.
//!
//! * [`Transform::Etc`] (`etc:B`): the block scrambling of Encryption-then-Compression
//!   (Chuman, Kurihara and Kiya). The image is cut into `B x B` tiles (`h` and `w` multiples
//!   of `B`), numbered row-major `t = 0..n`. Output tile `t` is input tile `P[t]`, rotated
//!   clockwise by `90° · r[t]`, then mirrored left-right if `f[t]`, then negated
//!   (`p -> 255 - p`) if `g[t]`. Within a tile (`y`, `x` in `0..B`), rotation by 90° is
//!   `R[y][x] = T[B-1-x][y]` (180°: `T[B-1-y][B-1-x]`, 270°: `T[x][B-1-y]`) and the mirror
//!   `M[y][x] = R[y][B-1-x]`. EtC's colour-component shuffle has no grayscale counterpart.
//! * [`Transform::Skk`] (`skk`): the pixel-based scheme of Sirichotedumrong, Kinoshita and
//!   Kiya for one channel: pixel `i = y·w + x` is negated (`p -> 255 - p`) if `g[i]`. Their
//!   shuffle of colour channels does not apply to a single channel, so it is left out.
//! * [`Transform::Tanaka`] (`tanaka:B`): Tanaka's learnable image encryption for one
//!   channel. Each pixel `p` splits into two 4-bit sub-pixels, `p >> 4` (channel 0) and
//!   `p & 15` (channel 1), giving a `2 x h x w` image of values `0..=15`. Within a `B x B`
//!   tile, sub-pixel `j = c·B² + y·B + x` (channel `c`, row `y`, column `x` of the tile), for
//!   `j` in `0..2B²`. Every tile gets the same keyed shuffle and negation: output sub-pixel
//!   `j` of a tile is input sub-pixel `S[j]` of the same tile, negated (`v -> 15 - v`) if
//!   `g[j]`. **The output has two channels**: shape `2 x h x w`
//!   ([`Transform::output_shape`]), channel-major, values `0..=15`.
//!
//! # The keyed stream (what the Python mirror reproduces bit for bit)
//!
//! A key is 32 bytes ([`TransformKey`]). The stream of a key for a domain (an ASCII name) is
//! the concatenation of `SHA-256(key || domain || counter)` for `counter = 0, 1, 2, ...`,
//! the counter as 8 little-endian bytes ([`KeyStream`]). Three readers consume it in order:
//!
//! * `uniform(n)` (`n >= 2`): read 4 bytes as a little-endian `u32` `x`; while
//!   `x >= 2^32 - (2^32 mod n)`, read the next 4; return `x mod n` (no modulo bias).
//! * `permutation(m)`: `a = [0, 1, ..., m-1]`; for `i = m-1` down to `1`: `j = uniform(i+1)`,
//!   swap `a[i]` and `a[j]` (Fisher-Yates). Returns `a`.
//! * `bits(k)`: read `ceil(k / 8)` bytes; bit `i` is `(byte[i / 8] >> (i mod 8)) & 1`.
//!
//! Each quantity has its own domain, read from the start of its stream:
//!
//! | quantity | domain | reader |
//! | --- | --- | --- |
//! | EtC tile order `P` | `fhec/transform/v1/etc/positions` | `permutation(n)` |
//! | EtC rotations `r` | `fhec/transform/v1/etc/rotation` | `uniform(4)` for `t = 0..n` in order |
//! | EtC mirrors `f` | `fhec/transform/v1/etc/flip` | `bits(n)` |
//! | EtC negations `g` | `fhec/transform/v1/etc/negate` | `bits(n)` |
//! | SKK negations `g` | `fhec/transform/v1/skk/negate` | `bits(h·w)` |
//! | Tanaka shuffle `S` | `fhec/transform/v1/tanaka/shuffle` | `permutation(2B²)` |
//! | Tanaka negations `g` | `fhec/transform/v1/tanaka/negate` | `bits(2B²)` |
//!
//! Every scheme is "gather, then negate": [`Transform::plan`] gives the map as a [`Plan`]
//! (output value `i` is source value `src[i]`, subtracted from the maximum if `negate[i]`),
//! the form a model that accepts transformed images can fold into its first layer.
//!
//! A model names the scheme it was trained for in its metadata under
//! [`Transform::METADATA_KEY`] (`fhec.transform`, value `etc:4`, `skk`, `tanaka:4`), never
//! the key: the client applies the transform with its own key file.

mod key;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use key::{FORMAT as KEY_FORMAT, KEY_BYTES, KeyError, TransformKey};
pub use stream::KeyStream;

/// Most pixels of an image a transform takes (4096 x 4096, the readers' largest image).
pub const MAX_PIXELS: usize = 1 << 24;

/// Domain names of the keyed streams (see the module documentation).
pub mod domain {
    /// EtC: the tile order.
    pub const ETC_POSITIONS: &str = "fhec/transform/v1/etc/positions";
    /// EtC: the rotation of each output tile.
    pub const ETC_ROTATION: &str = "fhec/transform/v1/etc/rotation";
    /// EtC: the left-right mirror of each output tile.
    pub const ETC_FLIP: &str = "fhec/transform/v1/etc/flip";
    /// EtC: the negation of each output tile.
    pub const ETC_NEGATE: &str = "fhec/transform/v1/etc/negate";
    /// SKK: the negation of each pixel.
    pub const SKK_NEGATE: &str = "fhec/transform/v1/skk/negate";
    /// Tanaka: the shuffle of the sub-pixels of a tile.
    pub const TANAKA_SHUFFLE: &str = "fhec/transform/v1/tanaka/shuffle";
    /// Tanaka: the negation of each sub-pixel of a tile.
    pub const TANAKA_NEGATE: &str = "fhec/transform/v1/tanaka/negate";
}

/// A keyed pixel transform of grayscale images (see the module documentation for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transform {
    /// EtC block scrambling with `block x block` tiles: tile order, rotation, mirror and
    /// negation (`etc:B`).
    Etc {
        /// Tile side in pixels.
        block: u32,
    },
    /// The pixel-based scheme of Sirichotedumrong, Kinoshita and Kiya: a keyed negation of
    /// every pixel (`skk`).
    Skk,
    /// Tanaka's scheme: 4-bit sub-pixels in two channels, shuffled and negated within every
    /// `block x block` tile (`tanaka:B`). Its output is `2 x h x w`.
    Tanaka {
        /// Tile side in pixels.
        block: u32,
    },
}

/// Why an image cannot be transformed (or a transformed image inverted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// A block size of 0.
    #[error("{scheme}: the block size must be at least 1")]
    ZeroBlock {
        /// The scheme.
        scheme: Transform,
    },
    /// An image without pixels, or with more than [`MAX_PIXELS`].
    #[error("{scheme}: an image of height {h} and width {w} is not supported (1 to {MAX_PIXELS} pixels)")]
    Size {
        /// The scheme.
        scheme: Transform,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// The height or width is not a multiple of the block size.
    #[error(
        "{scheme}: the image's height ({h}) and width ({w}) must be multiples of the block size {block} (crop or pad the images, or choose another block size)"
    )]
    NotBlocks {
        /// The scheme.
        scheme: Transform,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
        /// Block size.
        block: u32,
    },
    /// The pixel buffer does not hold the values its shape calls for.
    #[error("{scheme}: {found} values given for {what} of {expected} values")]
    Length {
        /// The scheme.
        scheme: Transform,
        /// Values given.
        found: usize,
        /// Values the shape calls for.
        expected: usize,
        /// What was expected (`an image`, `a transformed image`).
        what: &'static str,
    },
    /// A model input shape that is not the transform's output shape of any image.
    #[error(
        "{scheme}: the model's input shape {shape:?} is not the output of the transform: {scheme} of an h x w image gives {channels} channel{s} of h x w values, so the input must end in h, w with {channels} value{s} before them (for example [1, {channels}, 28, 28])",
        channels = scheme.channels(),
        s = if scheme.channels() == 1 { "" } else { "s" }
    )]
    InputShape {
        /// The scheme.
        scheme: Transform,
        /// The model's input shape.
        shape: Vec<usize>,
    },
    /// A transformed value above the scheme's maximum (15 for Tanaka's sub-pixels).
    #[error("{scheme}: value {value} at index {index} is not a transformed value (0 to {max})")]
    Value {
        /// The scheme.
        scheme: Transform,
        /// Index of the value.
        index: usize,
        /// The value.
        value: u8,
        /// The largest valid value.
        max: u8,
    },
}

/// Why a model's [`Transform::METADATA_KEY`] entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The value names no transform.
    #[error("model metadata fhec.transform: {0}")]
    Unknown(#[from] UnknownTransform),
    /// The model's input is not the transform's output of an image.
    #[error("model metadata fhec.transform: {0}")]
    Input(#[from] TransformError),
}

/// A transform as a map on values: output value `i` is `v = source[src[i]]`, or `max - v`
/// when `negate[i]`. The source is the image itself (EtC, SKK) or its split into two 4-bit
/// channels (Tanaka: `source[c·h·w + y·w + x]`). `src` is a permutation of the source
/// indices, so the map is a bijection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The output shape: channels, height, width.
    pub shape: [usize; 3],
    /// Source index of each output value.
    pub src: Vec<u32>,
    /// Whether each output value is negated.
    pub negate: Vec<bool>,
    /// The largest value (255 for pixels, 15 for 4-bit sub-pixels).
    pub max: u8,
}

impl Plan {
    /// The output of `source` (`source.len() == src.len()`, checked by the caller).
    fn gather(&self, source: &[u8]) -> Vec<u8> {
        self.src
            .iter()
            .zip(&self.negate)
            .map(|(&s, &n)| {
                let v = source[s as usize];
                if n { self.max - v } else { v }
            })
            .collect()
    }

    /// The source of an output (`out.len() == src.len()`, checked by the caller), or the
    /// index and value of the first value above `max`.
    fn scatter(&self, out: &[u8]) -> Result<Vec<u8>, (usize, u8)> {
        let mut source = vec![0u8; out.len()];
        for (i, ((&s, &n), &v)) in self.src.iter().zip(&self.negate).zip(out).enumerate() {
            if v > self.max {
                return Err((i, v));
            }
            source[s as usize] = if n { self.max - v } else { v };
        }
        Ok(source)
    }
}

impl Transform {
    /// Metadata key naming the transform a model was trained for (in ONNX `metadata_props`),
    /// with its [`Display`](fmt::Display) form as the value. Never the key.
    pub const METADATA_KEY: &'static str = "fhec.transform";

    /// The transform a model's metadata names ([`Transform::METADATA_KEY`]), checked
    /// against the model's input shape ([`Transform::image_size`]); `None` when it names
    /// none.
    pub fn of_metadata(
        metadata: &std::collections::BTreeMap<String, String>,
        input_shape: &[usize],
    ) -> Result<Option<Transform>, MetadataError> {
        let Some(v) = metadata.get(Self::METADATA_KEY) else { return Ok(None) };
        let t: Transform = v.parse()?;
        t.image_size(input_shape)?;
        Ok(Some(t))
    }

    /// The scheme names, for help texts.
    pub const SYNTAX: &'static str = "etc:B, skk or tanaka:B (B: the block size in pixels)";

    /// The block size, for the block-wise schemes.
    pub fn block(self) -> Option<u32> {
        match self {
            Transform::Etc { block } | Transform::Tanaka { block } => Some(block),
            Transform::Skk => None,
        }
    }

    /// Channels of the transform's output (2 for Tanaka, 1 otherwise).
    pub fn channels(self) -> usize {
        match self {
            Transform::Tanaka { .. } => 2,
            Transform::Etc { .. } | Transform::Skk => 1,
        }
    }

    /// The image size (`h`, `w`) whose transform a model with input shape `shape` takes:
    /// the shape's last two dimensions, after checking that the dimensions before them
    /// hold the transform's channels ([`Transform::channels`]) and that the scheme takes
    /// that size. `[1, 1, 28, 28]` is a 28 x 28 image for `etc:4`; `tanaka:4` needs
    /// `[1, 2, 28, 28]`.
    pub fn image_size(self, shape: &[usize]) -> Result<(usize, usize), TransformError> {
        let bad = || TransformError::InputShape { scheme: self, shape: shape.to_vec() };
        let [lead @ .., h, w] = shape else { return Err(bad()) };
        let channels = lead.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(bad)?;
        if channels != self.channels() {
            return Err(bad());
        }
        self.output_shape(*h, *w)?;
        Ok((*h, *w))
    }

    /// The values a model trained on this transform takes for an image, as 8-bit values:
    /// [`Transform::apply_plan`], with Tanaka's 4-bit values `v` widened to `17·v` (`0..=255`,
    /// so `15 - v` becomes `255 - 17·v`). Every scheme's output then spans the pixel range
    /// and goes through the model's preprocessing (`fhec.preprocess`) and input
    /// quantization like pixels. The Python mirror's `model_input` does the same.
    pub fn model_input(self, plan: &Plan, image: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut v = self.apply_plan(plan, image)?;
        if plan.max == 15 {
            v.iter_mut().for_each(|x| *x *= 17);
        }
        Ok(v)
    }

    /// The shape (channels, height, width) of the transform of an `h x w` image, after
    /// checking that the scheme takes that size.
    pub fn output_shape(self, h: usize, w: usize) -> Result<[usize; 3], TransformError> {
        if h == 0 || w == 0 || h.checked_mul(w).is_none_or(|n| n > MAX_PIXELS) {
            return Err(TransformError::Size { scheme: self, h, w });
        }
        if let Some(block) = self.block() {
            if block == 0 {
                return Err(TransformError::ZeroBlock { scheme: self });
            }
            let b = block as usize;
            if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
                return Err(TransformError::NotBlocks { scheme: self, h, w, block });
            }
        }
        Ok([self.channels(), h, w])
    }

    /// The map this transform applies to `h x w` images under `key`.
    pub fn plan(self, key: &TransformKey, h: usize, w: usize) -> Result<Plan, TransformError> {
        let shape = self.output_shape(h, w)?;
        let (src, negate, max) = match self {
            Transform::Etc { block } => etc_plan(key, h, w, block as usize),
            Transform::Skk => {
                let negate = KeyStream::new(key, domain::SKK_NEGATE).bits(h * w);
                ((0..(h * w) as u32).collect(), negate, 255)
            }
            Transform::Tanaka { block } => tanaka_plan(key, h, w, block as usize),
        };
        Ok(Plan { shape, src, negate, max })
    }

    /// The transform of an `h x w` image (row-major pixels) under `key`: `h·w` values, or
    /// `2·h·w` for Tanaka (channel-major, see [`Transform::output_shape`]).
    pub fn apply(self, key: &TransformKey, image: &[u8], h: usize, w: usize) -> Result<Vec<u8>, TransformError> {
        let plan = self.plan(key, h, w)?;
        self.apply_plan(&plan, image)
    }

    /// [`Transform::apply`] with a plan made once (by [`Transform::plan`] of this transform)
    /// for many images of its size.
    pub fn apply_plan(self, plan: &Plan, image: &[u8]) -> Result<Vec<u8>, TransformError> {
        let [_, h, w] = plan.shape;
        if image.len() != h * w {
            return Err(TransformError::Length { scheme: self, found: image.len(), expected: h * w, what: "an image" });
        }
        Ok(match self {
            Transform::Tanaka { .. } => plan.gather(&split(image)),
            Transform::Etc { .. } | Transform::Skk => plan.gather(image),
        })
    }

    /// The image whose transform under `key` is `transformed`, for an original `h x w`
    /// image: the exact inverse of [`Transform::apply`]. Tanaka's values must be at most 15.
    pub fn invert(self, key: &TransformKey, transformed: &[u8], h: usize, w: usize) -> Result<Vec<u8>, TransformError> {
        let plan = self.plan(key, h, w)?;
        if transformed.len() != plan.src.len() {
            let (found, expected) = (transformed.len(), plan.src.len());
            return Err(TransformError::Length { scheme: self, found, expected, what: "a transformed image" });
        }
        let source = plan.scatter(transformed).map_err(|(index, value)| TransformError::Value {
            scheme: self,
            index,
            value,
            max: plan.max,
        })?;
        Ok(match self {
            Transform::Tanaka { .. } => merge(&source),
            Transform::Etc { .. } | Transform::Skk => source,
        })
    }
}

/// EtC's map: output pixel `(T_y + y, T_x + x)` of output tile `t` comes from input tile
/// `P[t]` through the tile's rotation and mirror; its negation is the tile's.
fn etc_plan(key: &TransformKey, h: usize, w: usize, b: usize) -> (Vec<u32>, Vec<bool>, u8) {
    let cols = w / b;
    let n = (h / b) * cols;
    let order = KeyStream::new(key, domain::ETC_POSITIONS).permutation(n as u32);
    let mut rot = KeyStream::new(key, domain::ETC_ROTATION);
    let rotation: Vec<u32> = (0..n).map(|_| rot.uniform(4)).collect();
    let flip = KeyStream::new(key, domain::ETC_FLIP).bits(n);
    let neg = KeyStream::new(key, domain::ETC_NEGATE).bits(n);
    let mut src = vec![0u32; h * w];
    let mut negate = vec![false; h * w];
    for t in 0..n {
        let (oy, ox) = ((t / cols) * b, (t % cols) * b);
        let s = order[t] as usize;
        let (iy, ix) = ((s / cols) * b, (s % cols) * b);
        for y in 0..b {
            for x in 0..b {
                // Undo the mirror, then the rotation, to find the tile pixel shown at (y, x).
                let xm = if flip[t] { b - 1 - x } else { x };
                let (ty, tx) = match rotation[t] {
                    0 => (y, xm),
                    1 => (b - 1 - xm, y),
                    2 => (b - 1 - y, b - 1 - xm),
                    _ => (xm, b - 1 - y),
                };
                let o = (oy + y) * w + ox + x;
                src[o] = ((iy + ty) * w + ix + tx) as u32;
                negate[o] = neg[t];
            }
        }
    }
    (src, negate, 255)
}

/// Tanaka's map on the split image: in every tile, output sub-pixel `j` is input sub-pixel
/// `S[j]` of the same tile, negated if `g[j]`.
fn tanaka_plan(key: &TransformKey, h: usize, w: usize, b: usize) -> (Vec<u32>, Vec<bool>, u8) {
    let per_tile = 2 * b * b;
    let shuffle = KeyStream::new(key, domain::TANAKA_SHUFFLE).permutation(per_tile as u32);
    let neg = KeyStream::new(key, domain::TANAKA_NEGATE).bits(per_tile);
    // Index, in the 2 x h x w array, of sub-pixel j of the tile whose corner is (ty, tx).
    let at = |j: usize, ty: usize, tx: usize| {
        let (c, r) = (j / (b * b), j % (b * b));
        c * h * w + (ty + r / b) * w + tx + r % b
    };
    let mut src = vec![0u32; 2 * h * w];
    let mut negate = vec![false; 2 * h * w];
    for ty in (0..h).step_by(b) {
        for tx in (0..w).step_by(b) {
            for j in 0..per_tile {
                let o = at(j, ty, tx);
                src[o] = at(shuffle[j] as usize, ty, tx) as u32;
                negate[o] = neg[j];
            }
        }
    }
    (src, negate, 15)
}

/// Tanaka's split: channel 0 the upper 4 bits of every pixel, channel 1 the lower 4.
fn split(image: &[u8]) -> Vec<u8> {
    image.iter().map(|p| p >> 4).chain(image.iter().map(|p| p & 15)).collect()
}

/// The inverse of [`split`] (values at most 15, checked by the caller).
fn merge(source: &[u8]) -> Vec<u8> {
    let (hi, lo) = source.split_at(source.len() / 2);
    hi.iter().zip(lo).map(|(h, l)| (h << 4) | l).collect()
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Etc { block } => write!(f, "etc:{block}"),
            Transform::Skk => f.write_str("skk"),
            Transform::Tanaka { block } => write!(f, "tanaka:{block}"),
        }
    }
}

/// A transform name that is not `etc:B`, `skk` or `tanaka:B` with `B >= 1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transform '{0}' (expected etc:B, skk or tanaka:B, with B a block size of at least 1 pixel)")]
pub struct UnknownTransform(pub String);

impl FromStr for Transform {
    type Err = UnknownTransform;
    fn from_str(s: &str) -> Result<Self, UnknownTransform> {
        let bad = || UnknownTransform(s.into());
        // Digits only, no leading zero: one spelling per transform (`u32::parse` takes `+4`).
        let block = |b: &str| match b.parse::<u32>() {
            Ok(n) if n >= 1 && b.bytes().all(|c| c.is_ascii_digit()) && !b.starts_with('0') => Ok(n),
            _ => Err(bad()),
        };
        match s.split_once(':') {
            None if s == "skk" => Ok(Transform::Skk),
            Some(("etc", b)) => Ok(Transform::Etc { block: block(b)? }),
            Some(("tanaka", b)) => Ok(Transform::Tanaka { block: block(b)? }),
            _ => Err(bad()),
        }
    }
}
