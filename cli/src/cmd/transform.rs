//! The keyed image transforms on files (`fhec_ir::transform`): `fhec transform-key` makes a
//! client's key, `fhec transform` applies a scheme to a PNG / PGM image with it (or inverts
//! one). These transforms hide little (see the README); they exist to study them beside
//! TFHE.
//!
//! File forms: EtC and SKK give an 8-bit image of the input's size. Tanaka's transform of an
//! `h x w` image is two channels of 4-bit values, written as one 4-bit image of `2h x w`
//! (channel 0, the upper halves of the pixels, above channel 1): a PNG of bit depth 4 or a
//! PGM of maxval 15. `--invert` of Tanaka reads that form back.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fhec_driver::files::{self, Replace};
use fhec_ir::transform::{Transform, TransformKey};
use fhec_runtime::image::{self, Depth, GrayImage, ImageFormat};

/// Write a new random transform key.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// The key file to write (secret: keep it with the images' owner).
    #[arg(short, long)]
    out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

/// Apply a keyed transform to an image (or invert it).
#[derive(clap::Args)]
pub struct Args {
    /// The scheme: etc:B (EtC block scrambling), skk (pixel-wise negation) or tanaka:B
    /// (4-bit sub-pixels shuffled within blocks), with B the block size in pixels.
    #[arg(long)]
    scheme: Transform,
    /// The transform key (`fhec transform-key -o FILE` makes one).
    #[arg(long)]
    key: PathBuf,
    /// The image: a grayscale PNG or binary PGM of any size.
    #[arg(long)]
    image: PathBuf,
    /// Output image (`.png` or `.pgm`).
    #[arg(short, long)]
    out: PathBuf,
    /// Undo the transform: the image is a transformed one, the output the original.
    #[arg(long)]
    invert: bool,
    /// Replace the output file if it exists (never one of the inputs).
    #[arg(long)]
    force: bool,
}

/// Runs `fhec transform-key`.
pub fn key(a: KeyArgs) -> Result<()> {
    let replace = Replace::from_flag(a.force);
    files::check_output(&a.out, &[], replace, "-o")?;
    let mut bytes = [0u8; fhec_ir::transform::KEY_BYTES];
    rand::fill(&mut bytes);
    files::write(&a.out, &TransformKey::from_bytes(bytes).to_file_bytes(), replace)?;
    println!("wrote {} (a transform key: secret, keep it)", a.out.display());
    Ok(())
}

/// Runs `fhec transform`.
pub fn run(a: Args) -> Result<()> {
    let replace = Replace::from_flag(a.force);
    files::check_output(&a.out, &[&a.key, &a.image], replace, "-o")?;
    let Some(format) = ImageFormat::of_path(&a.out) else {
        bail!("-o {}: give a file name ending in .png or .pgm", a.out.display());
    };
    let key = TransformKey::from_file_bytes(&files::read(&a.key, "transform key")?)
        .with_context(|| format!("cannot load the transform key {}", a.key.display()))?;
    let img = image::read(&a.image)?;
    let what = a.image.display();
    let (out, depth) = if a.invert {
        let (h, values) = transformed_values(a.scheme, &img).with_context(|| format!("cannot invert {what}"))?;
        let px = a.scheme.invert(&key, &values, h, img.cols).with_context(|| format!("cannot invert {what}"))?;
        (GrayImage { rows: h, cols: img.cols, pixels: px }, Depth::Eight)
    } else {
        let px = a
            .scheme
            .apply(&key, &img.pixels, img.rows, img.cols)
            .with_context(|| format!("cannot transform {what}"))?;
        let [channels, h, w] = a.scheme.output_shape(img.rows, img.cols)?;
        let depth = if channels == 2 { Depth::Four } else { Depth::Eight };
        (GrayImage { rows: channels * h, cols: w, pixels: px }, depth)
    };
    let bytes = image::encode(&out, format, depth).with_context(|| format!("cannot write {}", a.out.display()))?;
    files::write(&a.out, &bytes, replace)?;
    let verb = if a.invert { "inverted" } else { "transformed" };
    println!(
        "{verb} {what} ({}x{}) with {}: wrote {} ({}x{}{})",
        img.cols,
        img.rows,
        a.scheme,
        a.out.display(),
        out.cols,
        out.rows,
        if depth == Depth::Four { ", 4-bit: two channels stacked" } else { "" }
    );
    Ok(())
}

/// The transformed values an image file holds, and the original image's height: the pixels
/// themselves, or for Tanaka the 4-bit values of its two stacked channels.
fn transformed_values(scheme: Transform, img: &GrayImage) -> Result<(usize, Vec<u8>)> {
    if !matches!(scheme, Transform::Tanaka { .. }) {
        return Ok((img.rows, img.pixels.clone()));
    }
    if !img.rows.is_multiple_of(2) {
        bail!("a {scheme} image stacks two channels, so its height is even; this one is {}x{}", img.cols, img.rows);
    }
    // A 4-bit value v reads as 17·v (see fhec_runtime::image).
    let mut values = Vec::with_capacity(img.pixels.len());
    for (i, &p) in img.pixels.iter().enumerate() {
        if p % 17 != 0 {
            bail!(
                "pixel {p} at row {}, column {} is not a 4-bit value: a {scheme} image is written with 4 bits per pixel (as `fhec transform` writes it)",
                i / img.cols,
                i % img.cols
            );
        }
        values.push(p / 17);
    }
    Ok((img.rows / 2, values))
}
